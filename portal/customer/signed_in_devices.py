"""Signed-in devices: the customer's own live sessions with this seller (across its bill
groups, since a session can move between them), and signing out one or all others.

Only the customer's own sessions are listed or ended: anything else is a 404 with
nothing written. Ending goes through the same action as the staff access page
(portal.actions.customer_sessions.end_session). In the staff preview the page explains
itself instead: a preview has no session, and staff end sessions on the access page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flask import abort, flash, redirect
from werkzeug.wrappers import Response as BaseResponse

from portal import db, device_labels, sessions
from portal.actions.customer_sessions import (
    NoSuchSession,
    end_other_sessions,
    end_own_session,
    own_sessions,
)
from portal.customer.viewer import Viewer, bp, portal_page, portal_url, render_page
from portal.forms import ButtonForm
from portal.models import CustomerSession


@dataclass(frozen=True)
class Device:
    """One session as its owner sees it."""

    id: int
    browser: str
    place: str
    bill_group: str
    started: str
    last_seen: str
    this_device: bool


def _when(moment: datetime) -> str:
    return f"{moment.day} {moment:%b %Y, %H:%M} UTC"


def _device(row: CustomerSession, current: CustomerSession) -> Device:
    return Device(
        id=row.id,
        browser=device_labels.browser(row.user_agent),
        place=device_labels.place(row.ip),
        bill_group=f"{row.bill_group.name} ({row.bill_group.currency})",
        started=_when(row.created_at),
        last_seen=_when(row.last_seen_at),
        this_device=row.id == current.id,
    )


def _current() -> CustomerSession:
    customer = sessions.current_customer()
    if customer is None:  # portal_page let a customer in: cannot happen, but never guess
        abort(403)
    return customer.row


@bp.get("/devices")
@portal_page
def devices(viewer: Viewer) -> str:
    listed: list[Device] = []
    if not viewer.preview:
        current = _current()
        listed = [_device(row, current) for row in own_sessions(db.session(), current)]
        listed.sort(key=lambda d: not d.this_device)
    return render_page("portal/devices.html", devices=listed, button=ButtonForm())


@bp.post("/devices/<int:session_id>/sign-out")
@portal_page(viewers_may_post=True)
def sign_out_device(viewer: Viewer, session_id: int) -> BaseResponse:
    if not ButtonForm().validate_on_submit():
        abort(400)
    session = db.session()
    try:
        ended = end_own_session(session, _current(), session_id)
    except NoSuchSession:
        session.rollback()
        abort(404)
    session.commit()
    flash(f"Signed out {device_labels.browser(ended.user_agent)}.")
    return redirect(portal_url("devices"), code=303)


@bp.post("/devices/sign-out-others")
@portal_page(viewers_may_post=True)
def sign_out_other_devices(viewer: Viewer) -> BaseResponse:
    if not ButtonForm().validate_on_submit():
        abort(400)
    session = db.session()
    ended = end_other_sessions(session, _current())
    session.commit()
    flash("Signed out every other device." if ended else "No other device was signed in.")
    return redirect(portal_url("devices"), code=303)
