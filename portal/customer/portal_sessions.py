"""Opening a portal session the seller's app made through the API: /p/<public id>/session/...

The same shape as the emailed link (portal.customer.signin): HEAD answers without
touching anything; GET spends nothing, keeps which session this browser opened in its
cookie session and moves the token out of the address bar at once; the "Continue" POST
(CSRF) spends it, and the sign-in ends as every sign-in does (`finish_sign_in`).
"""

from __future__ import annotations

from flask import Blueprint, render_template, request, session
from werkzeug.wrappers import Response as BaseResponse

from portal import clock, db, throttle
from portal.actions import portal_sessions
from portal.actions.signin import SignInRefused
from portal.customer.signin import available_bill_group, finish_sign_in, refuse, see_other
from portal.forms import ButtonForm
from portal.models import BillGroup, PortalSessionToken

bp = Blueprint("portal_session", __name__, url_prefix="/p/<public_id>/session")

# The key, in the browser's cookie session, of the portal session it opened.
OPENED = "portal_session"


@bp.route("/<token>", methods=["GET", "HEAD"])
@throttle.secret_limit
def open_link(public_id: str, token: str) -> BaseResponse | tuple[str, int]:
    if request.method == "HEAD":
        return "", 200
    group = available_bill_group(public_id)
    found = portal_sessions.find_open(db.session(), group, token)
    if found is None:
        return see_other("signin.link_invalid", public_id=public_id, kind="session")
    session[OPENED] = found.id
    return see_other("portal_session.confirm", public_id=public_id)


@bp.get("")
def confirm(public_id: str) -> str | BaseResponse:
    group = available_bill_group(public_id)
    opened = _opened(group)
    if opened is None:
        return see_other("signin.link_invalid", public_id=public_id, kind="session")
    return render_template(
        "portal/signin/portal_session_confirm.html",
        group=group,
        email=opened.email,
        form=ButtonForm(),
    )


@bp.post("")
@throttle.secret_limit
def confirm_post(public_id: str) -> BaseResponse:
    group = available_bill_group(public_id)
    form = ButtonForm()
    token_id = session.get(OPENED)
    if not form.validate_on_submit() or not isinstance(token_id, int):
        return see_other("signin.link_invalid", public_id=public_id, kind="session")
    if not portal_sessions.spend(db.session(), token_id, group):
        db.session().rollback()
        row = db.session().get(PortalSessionToken, token_id)
        actor = row.email if row and row.bill_group_id == group.id else None
        return refuse(group, SignInRefused("link_not_usable", actor), "session")
    return finish_sign_in(
        group,
        lambda replacing: portal_sessions.sign_in_with(
            db.session(), group, token_id, replacing=replacing
        ),
        "session",
    )


def _opened(group: BillGroup) -> PortalSessionToken | None:
    """The portal session this browser opened, if still usable."""
    token_id = session.get(OPENED)
    if not isinstance(token_id, int):
        return None
    row = db.session().get(PortalSessionToken, token_id)
    if (
        row is None
        or row.bill_group_id != group.id
        or row.spent_at is not None
        or row.expires_at <= clock.now()
    ):
        return None
    return row
