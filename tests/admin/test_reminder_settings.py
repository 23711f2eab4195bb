"""Staff set a seller's reminder schedules: saved normalised and audited once; refused
with a clear message next to the field for anything but a short list of whole days (huge,
negative, fractional, control characters); account managers may, viewers may not."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from portal.actions import Actor, Forbidden
from portal.actions.reminders import set_reminder_settings
from portal.models import AuditEvent, Entity, ReminderKind, StaffRole
from tests.admin.conftest import post_form
from tests.factories import make_bill_group
from tests.portal.pages_helpers import field_errors


@pytest.fixture
def group(db):
    found = make_bill_group(db)
    db.commit()
    return found


def page_of(group) -> str:
    return f"/admin/bill-groups/{group.id}/reminder-settings"


def entity_of(db, group) -> Entity:
    db.expire_all()
    return db.get(Entity, group.entity_id)


def audits(db) -> list[AuditEvent]:
    return list(
        db.scalars(select(AuditEvent).where(AuditEvent.action == "entity.reminder_settings"))
    )


@pytest.mark.parametrize("role", [StaffRole.ADMIN, StaffRole.ACCOUNT_MANAGER])
def test_staff_set_the_schedules(db, staff_client, group, role):
    client = staff_client(role)
    shown = client.get(f"/admin/bill-groups/{group.id}")
    assert "Change the reminder settings" in shown.text
    response = post_form(
        client, page_of(group), upcoming="7", due_soon=" 3, 7 ,3", overdue="14,1,7"
    )
    assert response.status_code == 303
    entity = entity_of(db, group)
    assert (
        entity.remind_upcoming_days,
        entity.remind_due_soon_days,
        entity.remind_overdue_days,
    ) == ("7", "3, 7", "1, 7, 14")
    [row] = audits(db)
    assert "remind_overdue_days" in row.detail and row.actor_type == "staff"
    # The form shows them back; saving the same again writes nothing.
    again = client.get(page_of(group))
    assert 'value="1, 7, 14"' in again.text
    post_form(client, page_of(group), upcoming="7", due_soon="3,7", overdue="1, 7, 14")
    assert len(audits(db)) == 1
    # Emptied: off.
    post_form(client, page_of(group), upcoming="", due_soon="", overdue="")
    assert entity_of(db, group).remind_overdue_days == ""


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("999999", "out of range"),
        ("366", "out of range"),
        ("0", "out of range"),
        ("-1", "not a whole number"),
        ("1.5", "not a whole number"),
        ("1e3", "not a whole number"),
        ("seven", "not a whole number"),
        ("1,2,3,4,5,6", "At most 5"),
        ("7\u202e", "invisible or control characters"),
        ("٣", "whole numbers of days"),
        ("9" * 61, "at most 60 characters"),
    ],
)
def test_a_bad_schedule_is_refused_with_a_clear_message(db, staff_client, group, value, message):
    client = staff_client(StaffRole.ADMIN)
    response = post_form(client, page_of(group), upcoming="", due_soon="", overdue=value)
    assert response.status_code == 400
    assert message in " ".join(field_errors(response.text, "overdue")), response.text
    assert entity_of(db, group).remind_overdue_days == ""
    assert audits(db) == []


def test_control_characters_are_refused_before_the_form(db, staff_client, group):
    client = staff_client(StaffRole.ADMIN)
    response = post_form(client, page_of(group), upcoming="", due_soon="", overdue="7\x00")
    assert response.status_code == 400  # portal.web refuses them for every form
    assert entity_of(db, group).remind_overdue_days == "" and audits(db) == []


def test_a_viewer_may_not(db, staff_client, group):
    client = staff_client(StaffRole.VIEWER)
    assert client.get(page_of(group)).status_code == 403
    assert "Change the reminder settings" not in client.get(f"/admin/bill-groups/{group.id}").text


def test_only_staff_may_through_the_action(app, db, group):
    with app.app_context(), pytest.raises(Forbidden):
        set_reminder_settings(
            db, Actor.customer("ap@acme.com"), group.entity, {ReminderKind.OVERDUE: "1"}
        )
