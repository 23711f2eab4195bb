"""Reminder schedules on the staff side: per seller, which reminders go to its
customers' billing contacts and when. Account managers set them, as they set the
payment settings: dunning is part of running the accounts. The write is
portal.actions.reminders.set_reminder_settings."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from admin.forms import ReminderSettingsForm
from admin.guard import acting_staff, bp, staff_required
from admin.lookup import get_or_404
from portal import db, reminders
from portal.actions import ActionError
from portal.actions.reminders import set_reminder_settings
from portal.forms import status_of
from portal.models import BillGroup, ReminderKind

View = str | tuple[str, int] | BaseResponse


@bp.route("/bill-groups/<int:bill_group_id>/reminder-settings", methods=["GET", "POST"])
@staff_required("manage_accounts")
def reminder_settings(bill_group_id: int) -> View:
    """The bill group's seller's reminder schedules."""
    group = get_or_404(BillGroup, bill_group_id)
    entity = group.entity
    current = {
        kind.value: reminders.format_schedule(reminders.schedule(entity, kind))
        for kind in ReminderKind
    }
    form = ReminderSettingsForm(data=None if request.method == "POST" else current)
    if form.validate_on_submit():
        wanted = {kind: form[kind.value].data or "" for kind in ReminderKind}
        session = db.session()
        try:
            changed = set_reminder_settings(session, acting_staff(), entity, wanted)
        except ActionError as exc:
            session.rollback()
            form[exc.field or ReminderKind.UPCOMING.value].errors.append(exc.message)
        else:
            session.commit()
            flash("Reminder settings saved." if changed else "Nothing changed.")
            return redirect(url_for("admin.bill_group", bill_group_id=group.id), code=303)
    return render_template(
        "admin/reminder_settings.html", form=form, group=group, entity=entity
    ), status_of(form)
