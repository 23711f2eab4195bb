"""The contacts page: the billing and shipping contacts a customer edits, validated and audited."""

from __future__ import annotations

import json
import re

import pytest

from tests.portal.pages_helpers import (
    BILLING_EMAIL,
    GROUP_NAME,
    PHONE_ERROR,
    audit_rows,
    billing_contact,
    contact_fields,
    field_errors,
    flashes,
    form_data,
    input_value,
    outbox_count,
    plain_text,
    save_contact,
    send_notices,
    shipping_contact,
    url,
)

pytestmark = pytest.mark.usefixtures("clock")  # midday on TODAY, whatever the wall clock says


# --- contacts ---------------------------------------------------------------------------


def test_billing_contact_update_notifies_the_address_it_had_before(app, db, group, customer, smtp):
    page = url(group, "/contacts/billing")
    form = customer.get(page).text
    assert input_value(form, "email") == BILLING_EMAIL
    assert re.search(r'<option selected value="DE">|<option value="DE" selected>', form)

    response = customer.post(
        page,
        data=form_data(
            customer,
            page,
            **contact_fields(name="Jo Bloggs-Smith", email="finance@acme.com", country="AT"),
        ),
    )

    assert response.status_code == 303
    assert response.headers["Location"].endswith(url(group, "/contacts"))
    contact = billing_contact(db, group)
    # The new address waits for its mailbox to confirm it; the rest is saved at once.
    assert (contact.name, contact.email, contact.pending_email, contact.country) == (
        "Jo Bloggs-Smith",
        BILLING_EMAIL,
        "finance@acme.com",
        "AT",
    )
    assert (contact.line1, contact.line2, contact.region) == ("Hauptstraße 1", None, None)
    [row] = audit_rows(db, "contact.billing.update")
    assert json.loads(row.detail) == {
        "name": ["Jo Bloggs", "Jo Bloggs-Smith"],
        "pending_email": [None, "finance@acme.com"],
        "country": ["DE", "AT"],
    }
    listing = customer.get(url(group, "/contacts")).text
    assert flashes(listing) == [
        "The billing contact has been saved.",
        "We have emailed finance@acme.com a link to confirm it. Until it is confirmed, "
        f"notices keep going to {BILLING_EMAIL}.",
    ]
    assert "Jo Bloggs-Smith" in listing and "Austria" in listing
    assert "Awaiting confirmation" in listing

    send_notices(app)
    [notice] = smtp.to(BILLING_EMAIL)
    assert notice["Subject"] == f"Billing contact changed for {GROUP_NAME}"
    assert (
        "changed the billing contact: country, email address (the new one is awaiting "
        "confirmation), name." in " ".join(plain_text(notice).split())
    )
    # The new address gets the one "you were named" email, and no notice.
    [named] = smtp.to("finance@acme.com")
    assert named["Subject"].strip() == f"Confirm you are the billing contact of {GROUP_NAME}"


def test_email_is_stored_in_canonical_form(db, group, customer):
    page = url(group, "/contacts/billing")
    customer.post(
        page, data=form_data(customer, page, **contact_fields(email="  AP.Team@ACME.com "))
    )
    assert billing_contact(db, group).pending_email == "ap.team@acme.com"


EMAIL_ERROR = "Enter an email address like name@company.com, with one @ sign."

BAD_CONTACTS = [
    ({"name": ""}, {"name": "Enter a name."}),
    ({"name": "   "}, {"name": "Enter a name."}),
    ({"name": "Jo\x01Bloggs"}, {"name": "The name contains characters that are not allowed."}),
    ({"name": "J" * 201}, {"name": "Field cannot be longer than 200 characters."}),
    ({"email": "not-an-email"}, {"email": EMAIL_ERROR}),
    ({"phone": "call me"}, {"phone": PHONE_ERROR}),
    ({"country": ""}, {"country": "Choose a country from the list."}),
    ({"country": "XX"}, {"country": "Not a valid choice."}),
    ({"line1": " "}, {"line1": "Enter the first line of the address."}),
    ({"city": ""}, {"city": "Enter the town or city."}),
    (
        {"email": "jo@", "phone": "12", "country": ""},
        {
            "email": "There must be something after the @-sign.",
            "phone": PHONE_ERROR,
            "country": "Choose a country from the list.",
        },
    ),
]


def test_invalid_billing_contact_writes_nothing(db, group, customer):
    before = {key: getattr(billing_contact(db, group), key) for key in contact_fields()}
    queued = outbox_count(db)
    page = url(group, "/contacts/billing")
    for changes, errors in BAD_CONTACTS:
        data = form_data(customer, page, **contact_fields(**changes))

        response = customer.post(page, data=data)

        assert response.status_code == 400, changes
        for field in contact_fields():
            expected = [errors[field]] if field in errors else []
            assert field_errors(response.text, field) == expected, (changes, field)
        if "email" in changes:  # what was typed stays in the form
            assert input_value(response.text, "email") == changes["email"]
        contact = billing_contact(db, group)
        assert {key: getattr(contact, key) for key in contact_fields()} == before, changes
        assert audit_rows(db, "contact.billing.update") == [], changes
        assert outbox_count(db) == queued, changes


def test_shipping_same_as_billing_copies_the_billing_address(app, db, group, customer, smtp):
    page = url(group, "/contacts/shipping")
    form = customer.get(page).text
    assert 'id="same_as_billing"' in form
    assert shipping_contact(db, group) is None

    response = save_contact(
        customer,
        group,
        "shipping",
        name="Goods In",
        email="",
        phone="",
        same_as_billing="y",
        line1="Typed but ignored 9",
        city="",
        country="",
    )

    assert response.status_code == 303
    shipping = shipping_contact(db, group)
    assert shipping is not None
    billing = billing_contact(db, group)
    copied = ("company", "line1", "line2", "city", "region", "postal_code", "country")
    assert {key: getattr(shipping, key) for key in copied} == {
        key: getattr(billing, key) for key in copied
    }
    assert (shipping.name, shipping.email, shipping.phone) == ("Goods In", None, None)
    assert shipping.line1 == "Hauptstraße 1"
    [row] = audit_rows(db, "contact.shipping.update")
    assert json.loads(row.detail)["line1"] == [None, "Hauptstraße 1"]
    send_notices(app)
    [notice] = smtp.to(BILLING_EMAIL)
    assert notice["Subject"] == f"Shipping contact changed for {GROUP_NAME}"


def test_a_new_shipping_contact_can_be_added(db, group, customer):
    assert "Not set." in customer.get(url(group, "/contacts")).text
    response = save_contact(
        customer,
        group,
        "shipping",
        name="Warehouse",
        company="Acme Logistics",
        email="goods-in@acme.com",
        phone="+33 1 23 45 67 89",
        line1="12 rue du Port",
        city="Lyon",
        postal_code="69002",
        country="FR",
    )
    assert response.status_code == 303
    shipping = shipping_contact(db, group)
    assert shipping is not None
    assert (shipping.name, shipping.line1, shipping.city, shipping.country) == (
        "Warehouse",
        "12 rue du Port",
        "Lyon",
        "FR",
    )
    assert billing_contact(db, group).line1 == "Hauptstraße 1"  # untouched
    listing = customer.get(url(group, "/contacts")).text
    assert "12 rue du Port" in listing and "Not set." not in listing
    assert len(audit_rows(db, "contact.shipping.update")) == 1


def test_unknown_contact_kind_is_404(group, customer):
    assert customer.get(url(group, "/contacts/accounts")).status_code == 404
