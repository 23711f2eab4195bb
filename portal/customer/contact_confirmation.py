"""The page a newly named billing contact reaches from its "you were named" email:
/p/<public id>/billing-contact/...

As with sign-in links (SECURITY.md), a GET never confirms and the token leaves the
address bar at once: the link only leads to a one-click page, and the POST from it
(CSRF protected) spends the token, so a mail scanner that fetches the link confirms
nothing.
"""

from __future__ import annotations

from flask import Blueprint, render_template, request, session
from werkzeug.wrappers import Response as BaseResponse

from portal import billing_contact, db, throttle
from portal.customer.signin import available_bill_group, see_other
from portal.forms import ButtonForm
from portal.models import BillGroup, ContactConfirmation

bp = Blueprint("contact_confirmation", __name__, url_prefix="/p/<public_id>/billing-contact")

# The Flask session holds the confirmation's id between the link and the POST, never
# the token itself.
SESSION_KEY = "contact_confirmation"


@bp.route("/confirm/<token>", methods=["GET", "HEAD"])
@throttle.secret_limit
def open_link(public_id: str, token: str) -> BaseResponse | tuple[str, int]:
    if request.method == "HEAD":  # link checkers: answer without touching anything
        return "", 200
    group = available_bill_group(public_id)
    found = billing_contact.open_link(db.session(), group, token)
    if found is None:
        session.pop(SESSION_KEY, None)
        return see_other("contact_confirmation.invalid", public_id=public_id)
    session[SESSION_KEY] = found.id
    return see_other("contact_confirmation.confirm", public_id=public_id)


@bp.get("/confirm")
def confirm(public_id: str) -> str | BaseResponse:
    group = available_bill_group(public_id)
    found = _from_session(group)
    if found is None:
        return see_other("contact_confirmation.invalid", public_id=public_id)
    return render_template(
        "portal/contact_confirmation/confirm.html",
        group=group,
        email=found.email,
        form=ButtonForm(),
    )


@bp.post("/confirm")
@throttle.secret_limit
def confirm_post(public_id: str) -> str | BaseResponse:
    group = available_bill_group(public_id)
    confirmation_id = session.get(SESSION_KEY)
    if not ButtonForm().validate_on_submit() or not isinstance(confirmation_id, int):
        return see_other("contact_confirmation.invalid", public_id=public_id)
    confirmed = billing_contact.confirm(db.session(), group, confirmation_id)
    session.pop(SESSION_KEY, None)
    if confirmed is None:
        return see_other("contact_confirmation.invalid", public_id=public_id)
    return render_template(
        "portal/contact_confirmation/confirmed.html", group=group, email=confirmed
    )


@bp.get("/invalid")
def invalid(public_id: str) -> str:
    group = available_bill_group(public_id)
    return render_template("portal/contact_confirmation/invalid.html", group=group)


def _from_session(group: BillGroup) -> ContactConfirmation | None:
    confirmation_id = session.get(SESSION_KEY)
    if not isinstance(confirmation_id, int):
        return None
    return billing_contact.pending(db.session(), group, confirmation_id)
