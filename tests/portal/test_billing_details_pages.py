"""The billing details page: PO, VAT and registration numbers, validated and audited."""

from __future__ import annotations

import json

import pytest

from tests.portal.pages_helpers import (
    ADDRESS,
    BILLING_EMAIL,
    DETAIL_RULES,
    DETAILS_FIELDS,
    GROUP_NAME,
    audit_rows,
    details_of,
    field_errors,
    flashes,
    form_data,
    input_value,
    outbox_count,
    plain_text,
    send_notices,
    url,
)

pytestmark = pytest.mark.usefixtures("clock")  # midday on TODAY, whatever the wall clock says


# --- billing details -------------------------------------------------------------------------


def test_billing_details_update_is_stored_audited_and_notified(app, db, group, customer, smtp):
    group.po_number, group.registration_number = "PO-1", "HRB 12345"
    db.commit()
    page = url(group, "/billing-details")
    response = customer.post(
        page,
        data=form_data(
            customer,
            page,
            po_number=" PO-2 ",
            vat_number="de 136 695 976",
            registration_number="HRB 12345",
        ),
    )

    assert response.status_code == 303
    assert response.headers["Location"].endswith(page)
    assert details_of(db, group) == ("PO-2", "DE136695976", "HRB 12345")
    [row] = audit_rows(db, "billing_details.update")
    assert json.loads(row.detail) == {
        "po_number": ["PO-1", "PO-2"],
        "vat_number": [None, "DE136695976"],
    }
    assert (row.actor_type, row.actor, row.bill_group_id) == ("customer", ADDRESS, group.id)
    shown = customer.get(page).text
    assert flashes(shown) == ["Your billing details have been saved."]
    assert input_value(shown, "vat_number") == "DE136695976"

    send_notices(app)
    [notice] = smtp.to(BILLING_EMAIL)
    assert notice["Subject"] == f"Billing details changed for {GROUP_NAME}"
    text = plain_text(notice)
    assert f"UTC: {ADDRESS} changed the billing details: PO number, VAT number." in text
    assert ADDRESS in text
    # Old and new, and a link straight to the page to review it.
    assert "PO number: PO-1 -> PO-2" in text
    assert "VAT number: (none) -> DE136695976" in text
    assert f"https://portal.example.test/p/{group.public_id}/billing-details\r\n" in text
    assert "because you are the billing contact" in text
    # The customer who made the change hears of it too, as the one who made it.
    [own] = smtp.to(ADDRESS)
    assert "because you made this change" in plain_text(own)
    assert len(smtp.messages) == 2

    # The same values again: nothing to record, nobody to tell.
    queued = outbox_count(db)
    again = customer.post(
        page,
        data=form_data(
            customer,
            page,
            po_number="PO-2",
            vat_number="DE136695976",
            registration_number="HRB 12345",
        ),
    )
    assert again.status_code == 303
    assert flashes(customer.get(page).text) == ["Nothing changed."]
    assert len(audit_rows(db, "billing_details.update")) == 1
    assert outbox_count(db) == queued


def test_clearing_a_billing_detail_is_a_change(db, group, customer):
    group.po_number = "PO-1"
    db.commit()
    page = url(group, "/billing-details")
    customer.post(page, data=form_data(customer, page, po_number="   "))
    assert details_of(db, group) == (None, None, None)
    [row] = audit_rows(db, "billing_details.update")
    assert json.loads(row.detail) == {"po_number": ["PO-1", None]}


BAD_DETAILS = [
    *DETAIL_RULES,
    ("vat_number", "DE" + "1" * 29, "Field cannot be longer than 30 characters."),
    ("po_number", "PO\u202e1", "The PO number contains characters that are not allowed."),
    ("po_number", "P" * 65, "Field cannot be longer than 64 characters."),
    (
        "po_number",
        "PO<1>",
        "The PO number can contain letters, digits, spaces and . / - _ # ( ) only.",
    ),
    (
        "registration_number",
        "HRB;12345",
        "The registration number can contain letters, digits, spaces and . / - _ # ( ) only.",
    ),
]


def test_invalid_billing_details_write_nothing(db, group, customer):
    group.po_number = "PO-1"
    db.commit()
    page = url(group, "/billing-details")
    queued = outbox_count(db)
    for field, value, message in BAD_DETAILS:
        typed = {"po_number": "PO-NEW", "vat_number": "", "registration_number": "REG-NEW"}
        typed[field] = value

        response = customer.post(page, data=form_data(customer, page, **typed))

        assert response.status_code == 400, value
        assert field_errors(response.text, field) == [message], value
        others = [name for name in DETAILS_FIELDS if name != field]
        assert all(field_errors(response.text, name) == [] for name in others), value
        for name in DETAILS_FIELDS:  # what was typed stays in the form
            assert (input_value(response.text, name) or "") == typed[name], (value, name)
        assert details_of(db, group) == ("PO-1", None, None), value
        assert audit_rows(db, "billing_details.update") == [], value
        assert outbox_count(db) == queued, value
