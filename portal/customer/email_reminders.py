"""The "Email reminders" page of the portal: which reminders the seller sends, and which
addresses of this bill group have stopped some of them, each with a button to turn them
back on (for a customer who may manage billing; the preview only looks)."""

from __future__ import annotations

from flask import abort, flash, redirect
from sqlalchemy import select
from werkzeug.wrappers import Response as BaseResponse

from portal import db, reminders
from portal.actions import ActionError, Actor
from portal.actions.reminders import resubscribe
from portal.customer.viewer import (
    Viewer,
    bp,
    may_manage_billing,
    portal_page,
    portal_url,
    render_page,
)
from portal.forms import ButtonForm
from portal.models import ReminderKind, ReminderUnsubscription


@bp.get("/email-reminders")
@portal_page
def email_reminders(viewer: Viewer) -> str:
    group = viewer.bill_group
    sent = [
        (reminders.NAMES[kind], reminders.schedule(group.entity, kind), kind)
        for kind in ReminderKind
    ]
    stopped = (
        db.session()
        .scalars(
            select(ReminderUnsubscription)
            .where(ReminderUnsubscription.bill_group_id == group.id)
            .order_by(ReminderUnsubscription.address, ReminderUnsubscription.kind)
        )
        .all()
    )
    return render_page(
        "portal/email_reminders.html",
        sent=sent,
        stopped=stopped,
        names=reminders.NAMES,
        may_manage=may_manage_billing(viewer),
        form=ButtonForm(),
        overdue=ReminderKind.OVERDUE,
    )


@bp.post("/email-reminders/<int:unsubscription_id>/resubscribe")
@portal_page
def email_reminders_resubscribe(viewer: Viewer, unsubscription_id: int) -> BaseResponse:
    session = db.session()
    group = viewer.bill_group
    if not ButtonForm().validate_on_submit():
        abort(400)
    try:
        found = resubscribe(session, Actor.customer(viewer.email), group, unsubscription_id)
    except ActionError as exc:
        session.rollback()
        flash(exc.message)
    else:
        session.commit()
        flash(f"Reminders about {reminders.NAMES[found.kind]} go to {found.address} again.")
    return redirect(portal_url("email_reminders"), code=303)
