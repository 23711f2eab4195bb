"""The payment methods page: adding, declining, choosing the default and removing cards."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from sqlalchemy import String, Text, select
from sqlalchemy.orm import Session

from portal.db import Base
from tests.factories import make_payment_method
from tests.portal.pages_helpers import (
    ADDRESS,
    BILLING_EMAIL,
    CARD,
    DECLINED,
    GROUP_NAME,
    audit_rows,
    card_fields,
    field_errors,
    flashes,
    form_data,
    input_value,
    methods_of,
    outbox_count,
    plain_text,
    send_notices,
    url,
)
from tests.settings import change_settings

pytestmark = pytest.mark.usefixtures("clock")  # midday on TODAY, whatever the wall clock says


# --- payment methods ---------------------------------------------------------------------


def every_stored_string(db: Session) -> Iterator[tuple[str, str, str]]:
    """(table, column, value) for every text value in every table."""
    db.expire_all()
    for table in Base.metadata.sorted_tables:
        columns = [c for c in table.columns if isinstance(c.type, String | Text)]
        if not columns:
            continue
        for row in db.execute(select(*columns)):
            for column, value in zip(columns, row, strict=True):
                if isinstance(value, str):
                    yield table.name, column.name, value


def test_adding_a_card_stores_a_token_and_never_the_number(app, db, group, customer, smtp):
    page = url(group, "/payment-methods/new")
    response = customer.post(page, data=form_data(customer, page, **card_fields()))

    assert response.status_code == 303
    assert response.headers["Location"].endswith(url(group, "/payment-methods"))
    [method] = methods_of(db, group)
    assert (method.last4, method.brand, method.gateway) == ("4242", "visa", "sandbox")
    assert (method.exp_month, method.exp_year, method.holder_name) == (12, 2030, "Ada Lovelace")
    assert method.is_default  # the first one is the default
    assert "42424242" not in method.gateway_token
    full = {"4242424242424242", CARD, "4242-4242-4242-4242"}
    leaks = [(t, c) for t, c, value in every_stored_string(db) if any(n in value for n in full)]
    assert leaks == []

    listing = customer.get(url(group, "/payment-methods")).text
    assert flashes(listing) == ["Visa ending 4242 has been added."]
    assert "Visa ending 4242" in listing and "12/30" in listing and "badge-default" in listing
    [row] = audit_rows(db, "payment_method.add")
    assert (row.actor, row.bill_group_id) == (ADDRESS, group.id)
    assert "ending 4242" in row.detail and "4242424242424242" not in row.detail

    send_notices(app)
    [notice] = smtp.to(BILLING_EMAIL)
    assert notice["Subject"] == f"Payment methods changed for {GROUP_NAME}"
    assert "changed the payment methods: payment method." in plain_text(notice)


def test_a_declined_card_is_refused_and_not_echoed(db, group, customer):
    page = url(group, "/payment-methods/new")
    queued = outbox_count(db)
    for typed in (DECLINED, "4000 0000 0000 0002"):
        data = form_data(customer, page, **card_fields(number=typed, cvc="918"))

        response = customer.post(page, data=data)

        assert response.status_code == 400, typed
        assert "declined" in response.text
        assert field_errors(response.text, "number") == ["Your card was declined."]
        # The sandbox note lists the test numbers; anywhere else would be an echo.
        shown = re.sub(r'<div class="sandbox".*?</div>', "", response.text, flags=re.S)
        assert DECLINED not in shown and "4000 0000 0000 0002" not in shown, typed
        assert input_value(response.text, "number") in (None, "")
        assert input_value(response.text, "cvc") in (None, "")
        assert 'value="918"' not in response.text
        assert input_value(response.text, "holder_name") == "Ada Lovelace"
        assert methods_of(db, group) == []
        assert audit_rows(db, "payment_method.add") == []
        assert outbox_count(db) == queued
    assert [(t, c) for t, c, value in every_stored_string(db) if DECLINED[-8:] in value] == []


def test_an_invalid_card_number_is_refused_beside_the_field(db, group, customer):
    page = url(group, "/payment-methods/new")
    response = customer.post(
        page, data=form_data(customer, page, **card_fields(number="4242 4242 4242 4241"))
    )
    assert response.status_code == 400
    assert field_errors(response.text, "number") == ["Enter a valid card number."]
    assert "4242 4242 4242 4241" not in response.text
    assert methods_of(db, group) == []


def test_make_default_switches_exactly_one(app, db, group, customer, smtp):
    first = make_payment_method(db, group, last4="4242", is_default=True)
    second = make_payment_method(db, group, brand="mastercard", last4="4444")
    db.commit()
    listing_url = url(group, "/payment-methods")
    data = form_data(customer, listing_url)

    response = customer.post(url(group, f"/payment-methods/{second.id}/default"), data=data)

    assert response.status_code == 303
    assert [(m.id, m.is_default) for m in methods_of(db, group)] == [
        (first.id, False),
        (second.id, True),
    ]
    listing = customer.get(listing_url).text
    assert flashes(listing) == ["Mastercard ending 4444 is now your default payment method."]
    overview = customer.get(url(group, "/overview")).text
    assert "<dt>Default payment method</dt><dd>Mastercard ending 4444</dd>" in overview
    [row] = audit_rows(db, "payment_method.default")
    assert f"(id {second.id})" in row.detail
    send_notices(app)
    [notice] = smtp.to(BILLING_EMAIL)
    assert "changed the payment methods: default payment method." in plain_text(notice)

    # Again on the one that already is the default: still exactly one.
    again = customer.post(url(group, f"/payment-methods/{second.id}/default"), data=data)
    assert again.status_code == 303
    assert [m.id for m in methods_of(db, group) if m.is_default] == [second.id]


def test_without_a_gateway_customers_are_told_to_contact_support(app, db, group, customer):
    make_payment_method(db, group, is_default=True)
    db.commit()
    change_settings(app, PAYMENT_GATEWAY="none")  # read on every request
    assert customer.get(url(group, "/payment-methods/new")).status_code == 404
    listing = customer.get(url(group, "/payment-methods"))
    assert listing.status_code == 200
    assert "To add or change a payment method, contact billing@seller.example.com." in (
        listing.text
    )
    assert "Add a card" not in listing.text and "Sandbox" not in listing.text
    assert "Visa ending 4242" in listing.text
