"""A domain rule's company single sign-on (portal.sso): the settings page, saved and
removed through portal.actions.sso. Admins only ("manage_sso"): it decides which other
party the portal believes about who someone is. The client secret is never shown back."""

from __future__ import annotations

from flask import abort, current_app, flash, redirect, render_template, url_for
from werkzeug.wrappers import Response

from admin.forms import SsoForm
from admin.guard import acting_staff, bp, staff_required
from admin.lookup import get_or_404
from portal import db, sso
from portal.actions import Invalid
from portal.actions import sso as sso_actions
from portal.config import is_local
from portal.forms import ButtonForm
from portal.models import AccessRule, BillGroup, RuleKind, SsoMode


def _domain_rule(group: BillGroup, rule_id: int) -> AccessRule:
    rule = next((r for r in group.access_rules if r.id == rule_id), None)
    if rule is None or rule.kind != RuleKind.DOMAIN:
        abort(404)
    return rule


def _page(group: BillGroup, rule: AccessRule, form: SsoForm, status: int = 200) -> tuple[str, int]:
    return render_template(
        "admin/sso.html",
        group=group,
        rule=rule,
        form=form,
        button=ButtonForm(formdata=None),
        redirect_uri=sso.redirect_uri(),
    ), status


@bp.get("/bill-groups/<int:bill_group_id>/access/rules/<int:rule_id>/sso")
@staff_required("manage_sso")
def rule_sso(bill_group_id: int, rule_id: int) -> tuple[str, int]:
    group = get_or_404(BillGroup, bill_group_id)
    rule = _domain_rule(group, rule_id)
    form = SsoForm(formdata=None, obj=rule.sso)
    if rule.sso is None:
        form.company_name.data = rule.label.split(".")[0].capitalize()
    else:
        form.mode.data = rule.sso.mode.value
    return _page(group, rule, form)


@bp.post("/bill-groups/<int:bill_group_id>/access/rules/<int:rule_id>/sso")
@staff_required("manage_sso")
def save_rule_sso(bill_group_id: int, rule_id: int) -> Response | tuple[str, int]:
    group = get_or_404(BillGroup, bill_group_id)
    rule = _domain_rule(group, rule_id)
    form = SsoForm()
    if not form.validate_on_submit():
        return _page(group, rule, form, 400)
    wanted = sso_actions.SsoSettings(
        company_name=form.company_name.data or "",
        issuer=form.issuer.data or "",
        client_id=form.client_id.data or "",
        client_secret=form.client_secret.data or "",
        mode=SsoMode(form.mode.data),
    )
    database = db.session()
    try:
        provider = sso_actions.set_sso(
            database, acting_staff(), group, rule.id, wanted, allow_http=is_local(current_app)
        )
    except Invalid as exc:
        database.rollback()
        field = getattr(form, exc.field or "issuer")
        field.errors = [*field.errors, exc.message]
        return _page(group, rule, form, 400)
    database.commit()
    flash(
        f"Saved: people at {rule.label} {'may' if provider.mode is SsoMode.OFFERED else 'must'} "
        f"sign in with {provider.company_name} sign-in."
    )
    return redirect(url_for("admin.bill_group_access", bill_group_id=group.id, _anchor="sso"), 303)


@bp.post("/bill-groups/<int:bill_group_id>/access/rules/<int:rule_id>/sso/delete")
@staff_required("manage_sso")
def remove_rule_sso(bill_group_id: int, rule_id: int) -> Response:
    group = get_or_404(BillGroup, bill_group_id)
    rule = _domain_rule(group, rule_id)
    if not ButtonForm().validate_on_submit():
        abort(400)
    database = db.session()
    removed = sso_actions.remove_sso(database, acting_staff(), group, rule.id)
    database.commit()
    flash(
        f"Removed company sign-in from {rule.label}: its people sign in with the emailed link."
        if removed
        else f"{rule.label} had no company sign-in."
    )
    return redirect(url_for("admin.bill_group_access", bill_group_id=group.id, _anchor="sso"), 303)
