"""A bill group's portal access settings: its domain and address rules, the access
checker, and the customers' active sessions.

Anyone with "read" sees the page; every change needs "manage_access", is one
transaction with its audit row, and ends in a 303 back to the page.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from flask import abort, flash, g, redirect, render_template, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from admin.forms import AccessCheckForm, DomainRuleForm, EmailRuleForm, RuleRoleForm
from admin.guard import acting_staff, bp, staff_required
from admin.lookup import get_or_404, one_or_404
from portal import audit, clock, db, sessions, switcher
from portal.access import (
    AccessError,
    OverlappingRules,
    admitting_rule,
    canonical_domain,
    canonical_email,
    display_domain,
    may_access,
    parse_rule,
)
from portal.actions import rules
from portal.actions.customer_sessions import end_session
from portal.actions.rules import Added
from portal.config import settings
from portal.forms import ButtonForm
from portal.models import AccessRule, BillGroup, CustomerRole, CustomerSession, RuleKind
from portal.switcher import Reachable

PAGE = "admin.bill_group_access"


def _back(group: BillGroup, anchor: str) -> Response:
    return redirect(url_for(PAGE, bill_group_id=group.id, _anchor=anchor), code=303)


# --- the page -----------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    """The access checker's answer for one typed address."""

    address: str | None = None
    error: str | None = None
    rule: AccessRule | None = None
    admitted: bool = False
    portal_enabled: bool = True
    contract_active: bool = True
    # The seller's other bill groups whose rules admit the address (the customer's
    # switcher offers those that are available today).
    elsewhere: tuple[Reachable, ...] = ()


def _check(group: BillGroup, raw: str) -> CheckResult:
    """Would this address get in today? Reads only."""
    try:
        address = canonical_email(raw)
    except AccessError as exc:
        return CheckResult(error=exc.message)
    today = clock.today()
    return CheckResult(
        address=address,
        rule=admitting_rule(group.access_rules, address),
        admitted=may_access(group, address, today) is not None,
        portal_enabled=group.portal_enabled,
        contract_active=group.has_active_contract(today),
        elsewhere=tuple(
            switcher.reachable(
                db.session(),
                group.entity_id,
                address,
                today,
                exclude_id=group.id,
                only_available=False,
                switchable_only=False,
            )
        ),
    )


def _active_sessions(group: BillGroup) -> list[CustomerSession]:
    now = clock.now()
    idle = dt.timedelta(minutes=settings().CUSTOMER_SESSION_IDLE_MINUTES)
    return list(
        db.session().scalars(
            select(CustomerSession)
            .where(
                CustomerSession.bill_group_id == group.id,
                CustomerSession.revoked_at.is_(None),
                CustomerSession.expires_at > now,
                CustomerSession.last_seen_at > now - idle,
            )
            .order_by(CustomerSession.created_at.desc(), CustomerSession.id.desc())
        )
    )


def _when(moment: dt.datetime) -> str:
    return f"{moment.day} {moment:%b %Y, %H:%M} UTC"


def _page(
    group: BillGroup,
    domain_form: DomainRuleForm | None = None,
    email_form: EmailRuleForm | None = None,
    overlap: bool = False,
    status: int = 200,
) -> tuple[str, int]:
    check_form = AccessCheckForm(formdata=request.args if "address" in request.args else None)
    check = None
    if "address" in request.args and check_form.validate():
        check = _check(group, check_form.address.data or "")
        if check.error:
            # Not an address at all: the canonicaliser's message, next to the field.
            check_form.address.errors = [check.error]
            check = None
    rules = group.access_rules
    today = clock.today()
    return render_template(
        "admin/access.html",
        group=group,
        domains=[r for r in rules if r.kind == RuleKind.DOMAIN],
        emails=[r for r in rules if r.kind == RuleKind.EMAIL],
        customer_sessions=_active_sessions(group),
        still_admitted=lambda row: may_access(group, row.email, today) is not None,
        domain_form=domain_form or DomainRuleForm(formdata=None),
        email_form=email_form or EmailRuleForm(formdata=None),
        check_form=check_form,
        check=check,
        overlap=overlap,
        button=ButtonForm(formdata=None),
        role_form=RuleRoleForm(formdata=None),
        roles=list(CustomerRole),
        may_change=g.staff.may("manage_access"),
        may_sso=g.staff.may("manage_sso"),
        contract_active=group.has_active_contract(today),
        when=_when,
    ), status


@bp.get("/bill-groups/<int:bill_group_id>/access")
@staff_required("read")
def bill_group_access(bill_group_id: int) -> tuple[str, int]:
    return _page(get_or_404(BillGroup, bill_group_id))


# --- rules --------------------------------------------------------------------------


def _not_a_domain(raw: str) -> str | None:
    """Why the domain form cannot take this (an address typed into it), or None."""
    if "@" not in raw:
        return None
    try:
        spec = parse_rule(raw)
    except AccessError as exc:
        return exc.message  # a list, a malformed address: the domain layer says which
    domain = display_domain(spec.value.rpartition("@")[2])
    return (
        f"{spec.label} is an email address. Add it under Individual email addresses, "
        f"or enter just the domain, {domain}."
    )


def _not_an_address(raw: str) -> str | None:
    """Why the address form cannot take this (a domain typed into it), or None."""
    if "@" in raw:
        return None
    try:
        domain = display_domain(canonical_domain(raw))
    except AccessError as exc:
        return exc.message
    return (
        f"{domain} is a domain, not an email address. To let everyone at {domain} in, "
        f"add it under Domains; here, enter one address like name@{domain}."
    )


def _anchor(rule: dict[str, object]) -> str:
    """The page section a (serialised) rule is listed in."""
    return "domains" if rule["kind"] == RuleKind.DOMAIN.value else "emails"


def _add(
    group: BillGroup,
    raw: str,
    role: str | None,
    *,
    include_subdomains: bool = False,
    fold_in: bool = False,
) -> Added:
    """Add the rule through the one action and commit; AccessError leaves nothing behind."""
    database = db.session()
    added = rules.add_rule(
        database,
        acting_staff(),
        group,
        raw,
        role=role,
        include_subdomains=include_subdomains,
        fold_in=fold_in,
        extra_providers=settings().PUBLIC_MAIL_PROVIDERS_EXTRA,
    )
    database.commit()
    return added


@bp.post("/bill-groups/<int:bill_group_id>/access/domains")
@staff_required("manage_access")
def add_access_domain(bill_group_id: int) -> Response | tuple[str, int]:
    group = get_or_404(BillGroup, bill_group_id)
    form = DomainRuleForm()
    if form.validate_on_submit():
        raw = form.domain.data or ""
        problem = _not_a_domain(raw)
        if problem is None:
            try:
                added = _add(
                    group,
                    raw,
                    form.role.data,
                    include_subdomains=form.include_subdomains.data,
                    fold_in=form.fold_in.data,
                )
            except OverlappingRules as exc:
                form.domain.errors = [exc.message]
                return _page(group, domain_form=form, overlap=True, status=400)
            except AccessError as exc:
                if exc.field == "role":
                    form.role.errors = [exc.message]
                    return _page(group, domain_form=form, status=400)
                problem = exc.message
            else:
                message = (
                    f"Added {added.rule.label}: everyone with an address there can now sign in."
                )
                if added.folded:
                    names = ", ".join(old["label"] for old in added.folded)
                    message += f" Removed the address rules it covers: {names}."
                flash(f"{message} {_role_sentence(added.rule.role)}")
                return _back(group, "domains")
        form.domain.errors = [problem]
    return _page(group, domain_form=form, status=400)


@bp.post("/bill-groups/<int:bill_group_id>/access/emails")
@staff_required("manage_access")
def add_access_email(bill_group_id: int) -> Response | tuple[str, int]:
    group = get_or_404(BillGroup, bill_group_id)
    form = EmailRuleForm()
    if form.validate_on_submit():
        raw = form.email.data or ""
        problem = _not_an_address(raw)
        if problem is None:
            try:
                added = _add(group, raw, form.role.data)
            except AccessError as exc:
                if exc.field == "role":
                    form.role.errors = [exc.message]
                    return _page(group, email_form=form, status=400)
                problem = exc.message
            else:
                flash(
                    f"Added {added.rule.label}: they can now sign in. "
                    f"{_role_sentence(added.rule.role)}"
                )
                return _back(group, "emails")
        form.email.errors = [problem]
    return _page(group, email_form=form, status=400)


@bp.post("/bill-groups/<int:bill_group_id>/access/rules/<int:rule_id>/delete")
@staff_required("manage_access")
def remove_access_rule(bill_group_id: int, rule_id: int) -> Response:
    group = get_or_404(BillGroup, bill_group_id)
    if not ButtonForm().validate_on_submit():
        abort(400)
    database = db.session()
    try:
        removed = rules.remove_rule(database, acting_staff(), group, rule_id)
    except rules.NoSuchRule:
        abort(404)
    except rules.AlreadyRemoved as exc:
        flash(f"{exc.rule['label']} had already been removed.")
        return _back(group, _anchor(exc.rule))
    database.commit()
    flash(f"Removed {removed.label}. Anyone it let in is signed out at their next click.")
    return _back(group, _anchor(removed.rule))


def _role_words(role: CustomerRole) -> str:
    return "viewers (read only)" if role is CustomerRole.VIEWER else "billing managers"


def _role_sentence(role: CustomerRole) -> str:
    return f"Customer role: {role.label.lower()}."


@bp.post("/bill-groups/<int:bill_group_id>/access/rules/<int:rule_id>/role")
@staff_required("manage_access")
def change_access_rule_role(bill_group_id: int, rule_id: int) -> Response | tuple[str, int]:
    """Another customer role for one rule; the people it admits have it at their next click."""
    group = get_or_404(BillGroup, bill_group_id)
    form = RuleRoleForm()
    if not form.validate_on_submit():
        abort(400)
    database = db.session()
    try:
        changed = rules.change_role(database, acting_staff(), group, rule_id, form.role.data or "")
    except rules.NoSuchRule:
        abort(404)
    except AccessError as exc:
        database.rollback()
        flash(exc.message)
        return _page(group, status=400)
    database.commit()
    rule = changed.rule
    if changed.changed:
        flash(
            f"{rule.label} now admits {_role_words(rule.role)}; "
            "anyone signed in through it has the new role at their next click."
        )
    else:
        flash(f"{rule.label} already admits {_role_words(rule.role)}: nothing changed.")
    return _back(group, "domains" if rule.kind == RuleKind.DOMAIN else "emails")


# --- customer sessions --------------------------------------------------------------


@bp.post("/bill-groups/<int:bill_group_id>/access/sessions/<int:session_id>/revoke")
@staff_required("manage_access")
def revoke_customer_session(bill_group_id: int, session_id: int) -> Response:
    group = get_or_404(BillGroup, bill_group_id)
    if not ButtonForm().validate_on_submit():
        abort(400)
    database = db.session()
    row = one_or_404(
        select(CustomerSession).where(
            CustomerSession.id == session_id, CustomerSession.bill_group_id == group.id
        )
    )
    if row.revoked_at is not None:
        flash(f"{row.email} was already signed out.")
        return _back(group, "sessions")
    end_session(database, acting_staff(), row, "revoked_by_staff")
    database.commit()
    flash(f"Signed out {row.email}.")
    return _back(group, "sessions")


@bp.post("/bill-groups/<int:bill_group_id>/access/sessions/revoke-all")
@staff_required("manage_access")
def revoke_all_customer_sessions(bill_group_id: int) -> Response:
    group = get_or_404(BillGroup, bill_group_id)
    if not ButtonForm().validate_on_submit():
        abort(400)
    database = db.session()
    ended = sessions.revoke_all(database, group.id, "revoked_by_staff")
    audit.record(
        database,
        "session.revoke_all",
        "revoked_by_staff",
        **acting_staff().audit(),
        bill_group_id=group.id,
        detail=f"{ended} sessions ended",
    )
    database.commit()
    flash("Signed out everyone: they must sign in again to see this bill group.")
    return _back(group, "sessions")
