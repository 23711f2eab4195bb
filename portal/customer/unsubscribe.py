"""Stopping reminders from the link in one: /p/<public id>/unsubscribe/<token>.

RFC 8058 one-click: the mail client POSTs "List-Unsubscribe=One-Click" to the URL of the
List-Unsubscribe header, with no cookie, no session and no page of ours first, so that
POST cannot carry a CSRF token nor a sign-in. The signed token is the authority: it names
the address, the bill group and the kinds, and only stops reminders (the worst a forged
request could do, were the token guessable, is silence a reminder). A GET only shows a
page whose button posts a CSRF-protected form: mail scanners fetch links, and a GET
never unsubscribes.
"""

from __future__ import annotations

from flask import Blueprint, render_template, request
from sqlalchemy import select
from sqlalchemy.orm import joinedload
from werkzeug.wrappers import Response as BaseResponse

from portal import db, reminders, throttle, web
from portal.actions import ActionError, Actor
from portal.actions.reminders import unsubscribe
from portal.forms import ButtonForm
from portal.models import BillGroup

bp = Blueprint("unsubscribe", __name__, url_prefix="/p/<public_id>/unsubscribe")

ONE_CLICK = "One-Click"
ACTOR = Actor.system("unsubscribe link")

View = str | tuple[str, int] | BaseResponse


def _group(public_id: str) -> BillGroup | None:
    """The bill group of the link, whether or not its portal is open today: an address
    may stop reminders it got while it was."""
    if not 10 <= len(public_id) <= 32:
        return None
    return db.session().scalar(
        select(BillGroup)
        .where(BillGroup.public_id == public_id)
        .options(joinedload(BillGroup.entity))
    )


def _read(public_id: str, token: str) -> tuple[BillGroup, reminders.Unsubscribe] | None:
    """The bill group and what the token names, if the token is good for this very bill
    group and for an address it has sent reminders to."""
    group = _group(public_id)
    found = reminders.read_unsubscribe_token(token)
    if group is None or found is None or found.bill_group_id != group.id:
        return None
    if not reminders.was_reminded(db.session(), group.id, found.address):
        return None
    return group, found


def _refused(public_id: str) -> tuple[str, int]:
    return render_template("portal/unsubscribe/invalid.html", group=_group(public_id)), 400


def _names(found: reminders.Unsubscribe) -> str:
    return " and ".join(reminders.NAMES[kind] for kind in found.kinds)


@bp.get("/<token>")
@throttle.secret_limit
def page(public_id: str, token: str) -> View:
    read = _read(public_id, token)
    if read is None:
        return _refused(public_id)
    group, found = read
    return render_template(
        "portal/unsubscribe/confirm.html",
        group=group,
        address=found.address,
        names=_names(found),
        token=token,
        form=ButtonForm(),
    )


@bp.post("/<token>/confirm")
@throttle.secret_limit
def confirm(public_id: str, token: str) -> View:
    """The button of the page: an ordinary form, CSRF protected."""
    if not ButtonForm().validate_on_submit():
        return _refused(public_id)
    return _stop(public_id, token)


@bp.post("/<token>")
@web.csrf.exempt  # RFC 8058: see the module docstring; only this one view is exempt
@throttle.secret_limit
def one_click(public_id: str, token: str) -> View:
    if request.form.get("List-Unsubscribe") != ONE_CLICK:
        return _refused(public_id)
    return _stop(public_id, token)


def _stop(public_id: str, token: str) -> View:
    read = _read(public_id, token)
    if read is None:
        return _refused(public_id)
    group, found = read
    session = db.session()
    try:
        unsubscribe(session, ACTOR, group, found.address, found.kinds, ip=request.remote_addr)
    except ActionError:
        session.rollback()
        return _refused(public_id)
    session.commit()
    return render_template(
        "portal/unsubscribe/done.html", group=group, address=found.address, names=_names(found)
    )
