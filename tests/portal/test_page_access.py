"""Every portal page signed in or not, isolation between bill groups, and CSRF on every change."""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.models import (
    AuditEvent,
    BillGroup,
    InvoiceStatus,
    PaymentMethod,
)
from tests.factories import make_invoice, make_payment_method, make_subscription
from tests.portal.pages_helpers import (
    GROUP_NAME,
    audit_rows,
    billing_contact,
    card_fields,
    contact_fields,
    details_of,
    form_data,
    listed,
    methods_of,
    outbox_count,
    portal_group,
    shipping_contact,
    url,
)

pytestmark = pytest.mark.usefixtures("clock")  # midday on TODAY, whatever the wall clock says


# --- every page, signed in or not ---------------------------------------------------------

PAGES = [
    ("/overview", "Overview"),
    ("/invoices", "Invoices"),
    ("/invoices/{invoice}", "Invoice INV-2026-0042"),
    ("/subscriptions", "Subscriptions"),
    ("/billing-details", "Billing details"),
    ("/contacts", "Contacts"),
    ("/contacts/billing", "Billing contact"),
    ("/contacts/shipping", "Shipping contact"),
    ("/payment-methods", "Payment methods"),
    ("/payment-methods/new", "Add a card"),
]


def test_every_page_renders_for_the_signed_in_customer(db, group, customer):
    invoice = make_invoice(db, group, number="INV-2026-0042")
    make_subscription(db, group)
    db.commit()

    for path, title in PAGES:
        response = customer.get(url(group, path.format(invoice=invoice.id)))
        assert response.status_code == 200, path
        assert response.mimetype == "text/html", path
        page_title = html.unescape(re.search(r"<title>(.*?)</title>", response.text)[1])
        assert page_title == f"{title} – {GROUP_NAME}", path
        assert f'<span class="bill-group">{GROUP_NAME}</span>' in response.text, path
        assert f"<h1>{title}" in response.text, path
    subscriptions = customer.get(url(group, "/subscriptions")).text
    assert "Analytics Pro" in subscriptions and "€147.00" in subscriptions


def test_every_page_sends_a_stranger_to_sign_in_and_back(db, group, client):
    invoice = make_invoice(db, group, number="INV-1")
    db.commit()
    paths = [path.format(invoice=invoice.id) for path, _title in PAGES]
    for path in [*paths, "/invoices.csv", f"/invoices/{invoice.id}.pdf"]:
        response = client.get(url(group, path))
        assert response.status_code == 302, path
        location = urlsplit(response.headers["Location"])
        assert location.path == url(group), path
        assert parse_qs(location.query) == {"next": [url(group, path)]}, path


def test_a_session_for_one_bill_group_does_not_open_another(db, group, customer):
    other = portal_group(db, name="Acme Asia")
    response = customer.get(url(other, "/overview"))
    assert response.status_code == 302
    assert urlsplit(response.headers["Location"]).path == url(other)


# --- isolation between bill groups ----------------------------------------------------------


def test_a_customer_sees_and_changes_only_their_own_bill_group(db, group, customer):
    mine = make_invoice(db, group, number="A-INV-1")
    other = portal_group(db, name="Other Co")
    theirs = make_invoice(db, other, number="B-SECRET-1")
    make_invoice(db, other, number="B-SECRET-2", status=InvoiceStatus.PAID)
    make_payment_method(db, other, is_default=True)
    their_method = make_payment_method(db, other, last4="1881")
    db.commit()

    assert customer.get(url(group, f"/invoices/{theirs.id}")).status_code == 404
    assert customer.get(url(group, f"/invoices/{theirs.id}.pdf")).status_code == 404
    assert customer.get(url(group, f"/invoices/{mine.id}")).status_code == 200

    for query in ("", "?status=paid", "?number=B-SECRET"):
        page = customer.get(url(group, f"/invoices{query}")).text
        exported = customer.get(url(group, f"/invoices.csv{query}"), buffered=True).text
        assert not any(number.startswith("B-") for number in listed(page)), query
        assert "B-SECRET" not in exported, query
        if "number" not in query:  # (the search box shows what was searched for)
            assert "B-SECRET" not in page, query
    assert listed(customer.get(url(group, "/invoices")).text) == ["A-INV-1"]
    assert "B-SECRET" not in customer.get(url(group, "/overview")).text

    data = form_data(customer, url(group, "/payment-methods"))
    response = customer.post(url(group, f"/payment-methods/{their_method.id}/default"), data=data)
    assert response.status_code == 404
    assert not db.get(PaymentMethod, their_method.id, populate_existing=True).is_default
    assert audit_rows(db, "payment_method.default") == []

    page = url(group, "/contacts/billing")
    customer.post(page, data=form_data(customer, page, **contact_fields(name="Changed Name")))
    assert billing_contact(db, group).name == "Changed Name"
    assert billing_contact(db, other).name == "Jo Bloggs"


# --- CSRF -----------------------------------------------------------------------------------

MUTATIONS = {
    "billing details": ("/billing-details", {"po_number": "PO-X", "vat_number": "DE136695976"}),
    "billing contact": ("/contacts/billing", contact_fields(name="Mallory")),
    "shipping contact": ("/contacts/shipping", contact_fields(name="Mallory")),
    "add card": ("/payment-methods/new", card_fields()),
    "make default": ("/payment-methods/{method}/default", {}),
    "sign out": ("/sign-out", {}),
}


def snapshot(db: Session, group: BillGroup) -> dict[str, Any]:
    return {
        "details": details_of(db, group),
        "billing": billing_contact(db, group).name,
        "shipping": shipping_contact(db, group),
        "methods": [(m.id, m.is_default) for m in methods_of(db, group)],
        "audit": db.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.actor_type == "customer")
        ),
        "outbox": outbox_count(db),
    }


def test_every_change_needs_the_csrf_token(db, group, customer):
    make_payment_method(db, group, is_default=True)
    other = make_payment_method(db, group, last4="4444")
    db.commit()
    for mutation, (path, fields) in MUTATIONS.items():
        for token in (None, "IjEyMyI.forged.token"):
            before = snapshot(db, group)
            data = dict(fields) | ({"csrf_token": token} if token else {})

            response = customer.post(url(group, path.format(method=other.id)), data=data)

            assert response.status_code == 400, (mutation, token)
            assert "This form has expired" in response.text
            assert snapshot(db, group) == before, (mutation, token)
            # Still signed in (the sign-out form needs its token too).
            assert customer.get(url(group, "/overview")).status_code == 200, mutation
