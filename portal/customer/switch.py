"""The bill-group switcher: /p/<public id>/switch, and the header's list of the seller's
other bill groups that the signed-in address reaches.

GET shows a one-click "Switch to <group>" page (a deep link from an email for another
bill group lands here); POST (CSRF) moves the session (portal.actions.customer_sessions).
Whoever is not signed in with this seller, or whose address this group does not admit,
gets the group's normal sign-in page: nothing here tells a stranger who has access.
"""

from __future__ import annotations

from flask import Blueprint, Flask, abort, g, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.wrappers import Response as BaseResponse

from portal import db, sessions, signin, switcher
from portal.actions import NotFound
from portal.actions.customer_sessions import SwitchRefused, switch_bill_group
from portal.clock import today
from portal.customer.forms import SwitchForm
from portal.customer.signin import available_bill_group
from portal.models import BillGroup
from portal.staffauth import Staff

bp = Blueprint("switch", __name__, url_prefix="/p/<public_id>")


def _sign_in_instead(group: BillGroup, next_path: str | None) -> BaseResponse:
    return redirect(url_for("signin.start", public_id=group.public_id, next=next_path), code=303)


def _landing(group: BillGroup, next_path: str | None) -> str:
    return next_path or url_for("customer.overview", public_id=group.public_id)


@bp.get("/switch")
def confirm(public_id: str) -> str | BaseResponse:
    group = available_bill_group(public_id)
    next_path = signin.safe_next(request.args.get("next"), public_id)
    customer = sessions.current_customer()
    if customer is not None and customer.bill_group.id == group.id:
        return redirect(_landing(group, next_path), code=303)
    if customer is None or not switcher.may_switch(
        customer.bill_group, group, customer.email, today()
    ):
        return _sign_in_instead(group, next_path)
    return render_template(
        "portal/switch_confirm.html",
        group=group,
        current=customer.bill_group,
        email=customer.email,
        form=SwitchForm(data={"next": next_path or ""}),
    )


@bp.post("/switch")
def switch(public_id: str) -> BaseResponse:
    group = available_bill_group(public_id)
    form = SwitchForm()
    if not form.validate_on_submit():
        abort(400)
    if isinstance(current_user._get_current_object(), Staff):
        # A preview is read-only and never a customer session, so there is nothing to move.
        abort(403)
    next_path = signin.safe_next(form.next.data, public_id)
    customer = sessions.current_customer()
    if customer is None:
        return _sign_in_instead(group, next_path)
    session = db.session()
    try:
        switch_bill_group(session, customer.row, group)
    except NotFound:
        session.rollback()
        abort(404)
    except SwitchRefused as refused:
        session.commit()  # the audit row, and nothing else
        if refused.code == "signed_out_by_staff":
            # Staff signed everyone out of this group: a new sign-in is what they meant.
            return _sign_in_instead(group, next_path)
        abort(403)
    session.commit()
    return redirect(_landing(group, next_path), code=303)


def switchable_groups() -> list[switcher.Reachable]:
    """For the header: the seller's other bill groups that the signed-in customer may
    switch to today. One small statement, run only when a page draws the header, once
    per request; nothing for a preview (staff are not customers)."""
    viewer = g.get("viewer")
    if viewer is None or viewer.preview:
        return []
    if "switchable" not in g:
        group = viewer.bill_group
        g.switchable = switcher.reachable(
            db.session(), group.entity_id, viewer.email, today(), exclude_id=group.id
        )
    found: list[switcher.Reachable] = g.switchable
    return found


def switch_target(public_id: str) -> str:
    """Where the header's switch lands: the same section of the other bill group when
    this page is a section (its URL has no other parts), else its overview."""
    args = request.view_args or {}
    endpoint = request.endpoint or ""
    if endpoint.startswith("customer.") and set(args) == {"public_id"}:
        return url_for(endpoint, public_id=public_id)
    return url_for("customer.overview", public_id=public_id)


def init_app(app: Flask) -> None:
    app.jinja_env.globals.update(
        switchable_groups=switchable_groups, switch_target=switch_target, switch_form=SwitchForm
    )
