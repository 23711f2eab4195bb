"""The staff bill group page's payments and credit notes, and the seller's payment
settings form."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from portal.models import (
    AuditEvent,
    Entity,
    PaymentStatus,
    StaffRole,
)
from tests.admin.conftest import post_form
from tests.factories import (
    TODAY,
    add_payment,
    add_portal_payment,
    make_bill_group,
    make_credit_note,
    make_invoice,
)
from tests.portal.pages_helpers import field_errors


@pytest.fixture
def group(db):
    group = make_bill_group(db)
    invoice = make_invoice(db, group)
    add_payment(db, invoice, 5000, reference="BACS-1")
    add_portal_payment(
        db,
        group,
        3000,
        status=PaymentStatus.FAILED,
        received_at=dt.datetime(2026, 11, 19, 9, tzinfo=dt.UTC),
        gateway_reference="ch_declined_1",
        failure_message="Your card was declined.",
    )
    add_portal_payment(db, group, 9000, gateway_reference="ch_ok_2", refunded_minor=1000)
    make_credit_note(db, group, 2500, number="CN-77", issue_date=TODAY, reason="Goodwill")
    other = make_bill_group(db)
    add_payment(db, make_invoice(db, other), 4444, reference="THEIRS")
    db.commit()
    return group


def test_the_bill_group_page_lists_payments_and_credit_notes(staff_client, group):
    page = staff_client(StaffRole.VIEWER).get(f"/admin/bill-groups/{group.id}").text
    for shown in (
        "BACS-1",
        "billing system",
        "sandbox ch_declined_1",
        "Your card was declined.",
        "portal (ap@acme.com)",
        "€90.00",
        "€10.00",  # refunded
        "€80.00",  # unapplied: 90.00 less 10.00 refunded
        "CN-77",
        "Goodwill",
        "€25.00",
    ):
        assert shown in page, shown
    assert "THEIRS" not in page and "44.44" not in page
    # A viewer may read, not change the settings.
    assert "Change the payment settings" not in page


def test_staff_change_the_sellers_payment_settings(db, staff_client, group):
    client = staff_client(StaffRole.ADMIN)
    page = f"/admin/bill-groups/{group.id}/payment-settings"
    assert client.get(page).status_code == 200
    response = post_form(client, page, min_partial_payment="25.50", allow_partial_payments="y")
    assert response.status_code == 303
    db.expire_all()
    entity = db.get(Entity, group.entity_id)
    assert (
        entity.allow_partial_payments,
        entity.min_partial_payment_minor,
        entity.allow_credit_application,
    ) == (True, 2550, False)
    (row,) = db.scalars(select(AuditEvent).where(AuditEvent.action == "entity.payment_settings"))
    assert row.actor.startswith("admin-") and "allow_credit_application" in row.detail
    again = post_form(client, page, min_partial_payment="25.50", allow_partial_payments="y")
    assert again.status_code == 303
    assert (
        len(
            db.scalars(
                select(AuditEvent).where(AuditEvent.action == "entity.payment_settings")
            ).all()
        )
        == 1
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "Enter the smallest part payment"),
        ("-1", "0 or more"),
        ("1.234", "such as 10.00"),
        ("abc", "such as 10.00"),
        ("9" * 25, "such as 10.00"),
        ("99999999999999999999", "0 or more"),
    ],
)
def test_a_bad_minimum_is_refused(db, staff_client, group, value, message):
    client = staff_client(StaffRole.ADMIN)
    page = f"/admin/bill-groups/{group.id}/payment-settings"
    response = post_form(client, page, min_partial_payment=value)
    assert response.status_code == 400
    assert message in " ".join(field_errors(response.text, "min_partial_payment"))
    db.expire_all()
    assert db.get(Entity, group.entity_id).min_partial_payment_minor == 100
