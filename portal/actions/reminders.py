"""Reminders: staff set a seller's schedules (`set_reminder_settings`); an address stops
the non-essential kinds for a bill group from the link in a reminder (`unsubscribe`), and
a customer of the bill group turns them back on in the portal (`resubscribe`)."""

from __future__ import annotations

import json

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portal import audit, clock, reminders
from portal.actions import Actor, Forbidden, Invalid, NotFound, seller_settings
from portal.models import BillGroup, Entity, ReminderKind, ReminderUnsubscription


def set_reminder_settings(
    db: Session, actor: Actor, entity: Entity, wanted: dict[ReminderKind, str]
) -> dict[str, list[str]]:
    """Staff set the seller's schedules ("1, 7, 14"; "" for off); each is checked
    (whole days, 1 to 365, at most five) and stored normalised. The changes, audited."""
    if actor.kind != "staff":
        raise Forbidden("Only staff change a seller's reminder settings.")
    values: dict[str, str] = {}
    for kind, raw in wanted.items():
        if kind not in reminders.COLUMNS:
            raise Invalid("Unknown kind of reminder.", "kind")
        try:
            days = reminders.parse_schedule(raw)
        except reminders.BadSchedule as exc:
            raise Invalid(str(exc), kind.value) from None
        values[reminders.COLUMNS[kind]] = reminders.format_schedule(days)
    return seller_settings.change(db, actor, entity, "entity.reminder_settings", values)


def unsubscribe(
    db: Session,
    actor: Actor,
    group: BillGroup,
    address: str,
    kinds: tuple[ReminderKind, ...],
    *,
    ip: str | None = None,
) -> list[ReminderKind]:
    """Stop `kinds` of reminder to `address` about `group`; the kinds newly stopped
    (none when they already were: twenty racing clicks write one row each, once)."""
    if any(kind not in reminders.NON_ESSENTIAL for kind in kinds):
        raise Invalid("Reminders about overdue invoices cannot be stopped by email link.")
    address = address.lower()
    if not reminders.was_reminded(db, group.id, address):
        raise NotFound("This address has not had reminders from this bill group.")
    stopped: list[ReminderKind] = []
    for kind in kinds:
        try:
            with db.begin_nested():
                db.add(
                    ReminderUnsubscription(
                        bill_group_id=group.id,
                        address=address,
                        kind=kind,
                        created_at=clock.now(),
                        created_by=actor.label,
                    )
                )
        except IntegrityError:  # already stopped, perhaps by a click a moment ago
            continue
        stopped.append(kind)
    if stopped:
        audit.record(
            db,
            "reminders.unsubscribe",
            "stopped",
            **actor.audit(),
            bill_group_id=group.id,
            ip=ip,
            detail=json.dumps({"address": address, "kinds": [k.value for k in stopped]}),
        )
    return stopped


def resubscribe(
    db: Session, actor: Actor, group: BillGroup, unsubscription_id: int
) -> ReminderUnsubscription:
    """A customer of the bill group turns one stopped kind back on."""
    if actor.kind != "customer":
        raise Forbidden("Only the bill group's customers turn its reminders back on.")
    found = db.scalar(
        select(ReminderUnsubscription).where(
            ReminderUnsubscription.id == unsubscription_id,
            ReminderUnsubscription.bill_group_id == group.id,
        )
    )
    if found is None:
        raise NotFound("These reminders are already on.")
    db.execute(delete(ReminderUnsubscription).where(ReminderUnsubscription.id == found.id))
    audit.record(
        db,
        "reminders.resubscribe",
        "started",
        **actor.audit(),
        bill_group_id=group.id,
        detail=json.dumps({"address": found.address, "kind": found.kind.value}),
    )
    return found
