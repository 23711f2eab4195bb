"""The staff preview: the customer's own views, read-only, inside the staff session.

The central test renders every portal page for a signed-in customer and for a staff
preview of the same bill group, at the same injected time, and requires the HTML to be
identical once the few things that must differ are normalised away: the preview banner,
CSRF tokens, the signed-in address / sign-out area, the URL prefix, and the `disabled`
that makes the preview's forms inert. Anything else that differs fails the test; a
second test proves the normaliser notices.
"""

from __future__ import annotations

import datetime as dt
import difflib
import io
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pypdf import PdfReader
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.access import add_rule
from portal.db import Base
from portal.models import (
    PERMISSIONS,
    AuditEvent,
    BillGroup,
    ContactKind,
    CustomerRole,
    CustomerSession,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentApplication,
    PaymentStatus,
    StaffRole,
    StaffSession,
    StaffUser,
)
from tests.admin.conftest import make_staff, staff_sign_in
from tests.conftest import Inbox, csrf_token, sign_in
from tests.factories import (
    TODAY,
    make_bill_group,
    make_contact,
    make_invoice,
    make_payment_method,
    make_subscription,
)

ADDRESS = "ap@acme.com"
GROUP_NAME = "Acme Europe"


# One injected time for the customer and the preview alike.
pytestmark = pytest.mark.usefixtures("clock")


@pytest.fixture
def group(db: Session) -> BillGroup:
    """A bill group with something on every page: invoices in each state (one part paid),
    a subscription, both contacts, two payment methods. Admits acme.com as billing
    managers: the preview shows a billing manager's pages."""
    group = make_bill_group(db, name=GROUP_NAME)
    add_rule(db, group, "acme.com", created_by="test", role=CustomerRole.BILLING_MANAGER)
    for kind, name in ((ContactKind.BILLING, "Jo Bloggs"), (ContactKind.SHIPPING, "Goods In")):
        make_contact(db, group, kind=kind, name=name)
    day = dt.timedelta(days=1)
    make_invoice(db, group, number="INV-2026-0042", lines=[("Licences", "3", 4900, 2000)])
    late = make_invoice(
        db, group, number="INV-2026-0007", issue_date=TODAY - 60 * day, due_date=TODAY - day
    )
    payment = Payment(
        bill_group=group,
        amount_minor=5000,
        currency=group.currency,
        status=PaymentStatus.SUCCEEDED,
        received_at=dt.datetime(2026, 11, 15, 9, tzinfo=dt.UTC),
        reference="BACS-1",
    )
    payment.applications.append(PaymentApplication(invoice=late, amount_minor=5000))
    late.amount_paid_minor += 5000
    db.add(payment)
    make_invoice(db, group, number="INV-2026-0001", status=InvoiceStatus.PAID)
    make_invoice(db, group, number="INV-2026-0002", status=InvoiceStatus.VOID)
    for number in range(30):  # enough for a second page of the unfiltered list
        make_invoice(db, group, number=f"OLD-{number:03d}", issue_date=TODAY - (200 + number) * day)
    make_subscription(db, group)
    make_payment_method(db, group, brand="mastercard", last4="4444", is_default=True)
    make_payment_method(db, group, brand="visa", last4="4242")
    db.commit()
    return group


@pytest.fixture
def customer(app: Flask, smtp: Inbox, group: BillGroup) -> FlaskClient:
    client = app.test_client()
    assert sign_in(client, app, smtp, group.public_id, ADDRESS).status_code == 303
    return client


@pytest.fixture
def staff(staff_client) -> FlaskClient:
    """The least-privileged role that may preview."""
    return staff_client(StaffRole.VIEWER)


def customer_url(group: BillGroup, path: str = "") -> str:
    return f"/p/{group.public_id}{path}"


def preview_url(group: BillGroup, path: str = "") -> str:
    return f"/admin/preview/{group.public_id}{path}"


def invoice_id(db: Session, number: str) -> int:
    return db.scalar(select(Invoice.id).where(Invoice.number == number))


# --- the normaliser ----------------------------------------------------------------------

BANNER_RE = re.compile(r'\n[ \t]*<aside class="preview-banner".*?</aside>\n[ \t]*', re.S)
ACCOUNT_RE = re.compile(r'<div class="account">.*?</div>', re.S)
CSRF_RE = re.compile(r'(name="csrf_token" type="hidden" value=")[^"]+"')
POST_FORM_RE = re.compile(r'<form method="post".*?</form>', re.S)
DISABLED_BUTTON_RE = re.compile(r'(<button type="submit" class="[^"]*") disabled>')


def normalise(page: str, prefix: str, *, preview: bool) -> str:
    """The page with only what may differ between customer and preview made neutral.
    Structural expectations (one banner in the preview and none for the customer, one
    account area, inert forms in the preview) are asserted on the way."""
    banners = BANNER_RE.findall(page)
    if preview:
        assert len(banners) == 1, "the preview needs exactly one banner"
        assert "as the customer sees it" in banners[0]
    else:
        assert banners == [] and "preview-banner" not in page, "a banner on the customer's page"
    page = BANNER_RE.sub("", page)

    page, accounts = ACCOUNT_RE.subn('<div class="account">…</div>', page)
    assert accounts == 1, "expected exactly one signed-in / sign-out area"
    assert "sign-out" not in page, "a sign-out form outside the account area"

    page = CSRF_RE.sub(r'\1…"', page)

    if preview:
        # Forms show, but every control that could submit them is disabled.
        for form in POST_FORM_RE.findall(page):
            buttons = re.findall(r"<button\b[^>]*>", form)
            assert buttons, f"a POST form without a button: {form[:120]}"
            inert = "<fieldset disabled>" in form or all(" disabled" in b for b in buttons)
            assert inert, f"a POST form that can be submitted in the preview: {form[:200]}"
        page = page.replace("<fieldset disabled>", "<fieldset >")
        page = DISABLED_BUTTON_RE.sub(r"\1>", page)
    else:
        assert " disabled" not in page, "a disabled control on the customer's page"

    assert prefix in page
    return page.replace(prefix, "{portal}")


def assert_same_page(customer_html: str, preview_html: str, group: BillGroup) -> None:
    mine = normalise(customer_html, customer_url(group), preview=False)
    theirs = normalise(preview_html, preview_url(group), preview=True)
    if mine != theirs:
        diff = "\n".join(
            difflib.unified_diff(
                mine.splitlines(), theirs.splitlines(), "customer", "preview", lineterm=""
            )
        )
        pytest.fail(f"the preview differs from the customer's page:\n{diff}")


FILTERED = "/invoices?status=overdue&from=2026-01-01&to=2026-11-30&number=inv-2026"
PAGES = [
    "/overview",
    "/invoices",
    "/invoices?page=2",
    FILTERED,
    "/invoices?status=open&page=1",
    "/invoices?from=2026-12-01&to=2026-01-01",  # invalid: a 400 with the message
    "/invoices/{invoice}",
    "/subscriptions",
    "/billing-details",
    "/billing-details/history",
    "/billing-details/invoice-copies",
    "/contacts",
    "/contacts/billing",
    "/contacts/shipping",
    "/payment-methods",
    "/payment-methods/new",
    "/pay",
    "/pay?invoice={invoice}",
    "/payments",
    "/payments?from=2026-12-01&to=2026-01-01",  # invalid: a 400 with the message
]


# --- exactly what the customer sees -----------------------------------------------------


def test_every_page_is_exactly_what_the_customer_sees(db, group, customer, staff):
    invoice = invoice_id(db, "INV-2026-0007")
    for path in PAGES:
        path = path.format(invoice=invoice)
        mine = customer.get(customer_url(group, path))
        theirs = staff.get(preview_url(group, path))
        assert mine.status_code == theirs.status_code, path
        assert mine.status_code in (200, 400), path
        assert theirs.mimetype == "text/html" and theirs.headers["Cache-Control"] == "no-store"
        assert_same_page(mine.text, theirs.text, group)


def test_the_pages_compared_are_the_rich_ones(db, group, staff):
    """Guard against a vacuous comparison: the preview shows real content and forms."""
    pages = {path: staff.get(preview_url(group, path)).text for path in PAGES}
    assert "€147.00" in pages["/subscriptions"] and "Analytics Pro" in pages["/subscriptions"]
    assert "INV-2026-0007" in pages[FILTERED] and "INV-2026-0042" not in pages[FILTERED]
    assert 'rel="next"' in pages["/invoices"] and 'rel="prev"' in pages["/invoices?page=2"]
    assert "Make default" in pages["/payment-methods"] and "Add a card" in pages["/payment-methods"]
    assert "<fieldset disabled>" in pages["/payment-methods/new"]
    assert "<fieldset disabled>" in pages["/contacts/shipping"]
    assert "Hauptstraße 1" in pages["/contacts"]


MUTATIONS = {
    "an amount": lambda page, group: page.replace("€147.00", "€147.01", 1),
    "a link out to the customer face": lambda page, group: page.replace(
        preview_url(group, "/invoices"), customer_url(group, "/invoices"), 1
    ),
    "a link out to the staff pages": lambda page, group: page.replace(
        preview_url(group, "/invoices"), "/admin/accounts", 1
    ),
    "an extra element": lambda page, group: page.replace(
        "<h1>", '<p class="notice">Staff note</p><h1>', 1
    ),
    "whitespace in the text": lambda page, group: page.replace("Analytics Pro", "Analytics  Pro"),
    "no banner": lambda page, group: BANNER_RE.sub("\n  ", page),
    "two banners": lambda page, group: page.replace(
        "<main", BANNER_RE.search(page)[0].strip() + "<main", 1
    ),
    "an enabled form": lambda page, group: page.replace("<fieldset disabled>", "<fieldset >", 1),
    "an enabled button": lambda page, group: DISABLED_BUTTON_RE.sub(r"\1>", page, 1),
    "a sign-out button": lambda page, group: page.replace(
        "</main>", f'<form method="post" action="/p/{group.public_id}/sign-out"></form></main>'
    ),
}


# Where each mutation applies: the content ones need content, the form ones forms.
ONLY_ON = {
    "an amount": "/subscriptions",
    "whitespace in the text": "/subscriptions",
    "an enabled form": "/billing-details",
    "an enabled button": "/payment-methods",
}


@pytest.mark.parametrize(
    ("path", "mutation"),
    [
        (path, mutation)
        for mutation in MUTATIONS
        for path in ("/subscriptions", "/billing-details", "/payment-methods")
        if ONLY_ON.get(mutation, path) == path
    ],
)
def test_the_comparison_notices_a_difference(group, customer, staff, path, mutation):
    mine = customer.get(customer_url(group, path)).text
    theirs = staff.get(preview_url(group, path)).text
    assert_same_page(mine, theirs, group)  # the unchanged pages compare equal
    changed = MUTATIONS[mutation](theirs, group)
    assert changed != theirs, "the mutation must change the page"
    with pytest.raises((AssertionError, pytest.fail.Exception)):
        assert_same_page(mine, changed, group)


def test_links_stay_inside_the_preview(db, group, staff):
    invoice = invoice_id(db, "INV-2026-0042")
    allowed = (preview_url(group, "/"), "/static/", f"/brand/{group.entity_id}/")
    for path in PAGES:
        page = staff.get(preview_url(group, path.format(invoice=invoice))).text
        page = BANNER_RE.sub("", page)
        targets = re.findall(r'(?:href|action|src)="([^"]*)"', page)
        outside = [t for t in targets if not t.startswith(allowed) and t != "#main"]
        assert outside == [], (path, outside)


def test_the_banner_names_the_bill_group_and_links_back(group, staff):
    page = staff.get(preview_url(group, "/overview")).text
    [banner] = BANNER_RE.findall(page)
    assert f"Preview of {GROUP_NAME} as the customer sees it" in banner
    assert f'href="/admin/bill-groups/{group.id}"' in banner
    assert "Sign out" not in page.replace(BANNER_RE.search(page)[0], "").split("<main")[0]


# --- read-only ---------------------------------------------------------------------------


def every_row(db: Session) -> dict[str, list[tuple[Any, ...]]]:
    db.expire_all()
    return {
        table.name: sorted(map(tuple, db.execute(select(table)).all()), key=repr)
        for table in Base.metadata.sorted_tables
    }


def contact_form(**changes: str) -> dict[str, str]:
    return {
        "name": "Mallory",
        "company": "Evil Ltd",
        "email": "mallory@evil.example",
        "phone": "+49 30 7654321",
        "line1": "Elsewhere 1",
        "line2": "",
        "city": "Berlin",
        "region": "",
        "postal_code": "10115",
        "country": "DE",
    } | changes


def posts(db: Session, group: BillGroup) -> dict[str, tuple[str, str, dict[str, str]]]:
    """Each change a customer can make: (page holding the form, POST path, fields)."""
    method = make_payment_method(db, group, brand="amex", last4="0005")
    db.commit()
    card = {
        "holder_name": "Mallory",
        "number": "4242 4242 4242 4242",
        "exp_month": "12",
        "exp_year": "2030",
        "cvc": "123",
        "make_default": "y",
    }
    return {
        "billing details": (
            "/billing-details",
            "/billing-details",
            {"po_number": "PO-EVIL", "vat_number": "DE136695976"},
        ),
        "billing contact": ("/contacts/billing", "/contacts/billing", contact_form()),
        "add an invoice-copy recipient": (
            "/billing-details/invoice-copies",
            "/billing-details/invoice-copies",
            {"email": "ap-inbox@acme.com"},
        ),
        "shipping contact": ("/contacts/shipping", "/contacts/shipping", contact_form()),
        "add card": ("/payment-methods/new", "/payment-methods/new", card),
        "make default": (
            "/payment-methods",
            f"/payment-methods/{method.id}/default",
            {},
        ),
        # Refused before the id is even looked at.
        "an unknown method": ("/payment-methods", "/payment-methods/999999/default", {}),
        "pay": ("/pay", "/pay", {"method": str(method.id), "currency": group.currency}),
        "confirm a payment": ("/pay", "/pay/confirm", {"key": "k" * 43, "amount_minor": "100"}),
    }


def test_every_post_in_the_preview_is_403_and_writes_nothing(app, db, group, staff, smtp):
    changes = posts(db, group)
    before = every_row(db)
    for name, (page, path, fields) in changes.items():
        form_page = staff.get(preview_url(group, page))
        assert form_page.status_code == 200, name
        data = {"csrf_token": csrf_token(form_page.text), **fields}
        response = staff.post(preview_url(group, path), data=data)
        assert response.status_code == 403, name
        assert "You cannot do that" in response.text
    after = every_row(db)
    # Only the page views that fetched the forms were recorded; nothing else changed.
    audited = {row[0] for row in before.pop("audit_events")}
    added = [row for row in after.pop("audit_events") if row[0] not in audited]
    assert after == before
    assert smtp.messages == []
    actions = db.scalars(
        select(AuditEvent.action).where(AuditEvent.id.in_([row[0] for row in added]))
    ).all()
    assert actions == ["preview.view"] * len(changes)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_non_get_is_refused_before_anything_else(app, db, group, staff, method):
    """No CSRF token needed to be refused, no sign-in redirect, no audit row."""
    app.config["WTF_CSRF_ENABLED"] = False
    before = every_row(db)
    for who in (staff, app.test_client()):
        response = who.open(preview_url(group, "/billing-details"), method=method)
        assert response.status_code in (403, 405)
        assert "Location" not in response.headers
    assert staff.post(preview_url(group, "/billing-details")).status_code == 403
    assert every_row(db) == before


def test_a_post_without_its_csrf_token_changes_nothing_either(db, group, staff):
    before = every_row(db)
    response = staff.post(preview_url(group, "/billing-details"), data={"po_number": "X"})
    assert response.status_code in (400, 403)
    assert every_row(db) == before


# --- sessions ----------------------------------------------------------------------------


def test_a_preview_never_creates_or_touches_a_customer_session(app, db, group, staff, customer):
    db.expire_all()
    customer_rows = [
        (row.id, row.last_seen_at, row.revoked_at)
        for row in db.scalars(select(CustomerSession).order_by(CustomerSession.id))
    ]
    assert len(customer_rows) == 1  # the real customer's, signed in beside the staff member
    with staff.session_transaction() as flask_session:
        before = dict(flask_session)
    assert before["_user_id"].startswith("s:")
    staff_rows = db.scalar(select(func.count()).select_from(StaffSession))

    invoice = invoice_id(db, "INV-2026-0042")
    for path in [*PAGES, "/invoices.csv", "/invoices/{invoice}.pdf"]:
        assert staff.get(preview_url(group, path.format(invoice=invoice))).status_code in (200, 400)

    db.expire_all()
    assert [
        (row.id, row.last_seen_at, row.revoked_at)
        for row in db.scalars(select(CustomerSession).order_by(CustomerSession.id))
    ] == customer_rows
    with staff.session_transaction() as flask_session:
        after = dict(flask_session)
    # The same staff session; rendering forms only gave it a CSRF secret.
    after.pop("csrf_token", None)
    before.pop("csrf_token", None)
    assert after == before
    assert db.scalar(select(func.count()).select_from(StaffSession)) == staff_rows
    # ...and the staff member is still not a customer of this bill group.
    response = staff.get(customer_url(group, "/overview"))
    assert response.status_code == 302 and "/admin" not in response.headers["Location"]
    assert customer.get(customer_url(group, "/overview")).status_code == 200


def test_previewing_alone_creates_no_customer_session(app, db, group, staff):
    for path in ("/overview", "/invoices", "/payment-methods"):
        staff.get(preview_url(group, path))
    assert db.scalar(select(func.count()).select_from(CustomerSession)) == 0


# --- who may preview ---------------------------------------------------------------------


@pytest.mark.parametrize("role", list(StaffRole))
def test_every_role_with_preview_may_preview(group, staff_client, role):
    assert "preview" in PERMISSIONS[role]
    assert staff_client(role).get(preview_url(group, "/overview")).status_code == 200


def test_a_role_without_preview_gets_403(monkeypatch, db, group, staff):
    monkeypatch.setitem(PERMISSIONS, StaffRole.VIEWER, frozenset({"read"}))
    before = db.scalar(select(func.count()).select_from(AuditEvent))
    for path in ("/overview", "/invoices", f"/invoices/{invoice_id(db, 'INV-2026-0042')}.pdf"):
        response = staff.get(preview_url(group, path))
        assert response.status_code == 403, path
        assert GROUP_NAME not in response.text
    assert db.scalar(select(func.count()).select_from(AuditEvent)) == before
    assert staff.get("/admin/").status_code == 200  # still signed in, still "read"


def test_strangers_and_customers_are_sent_to_staff_sign_in(app, group, customer):
    path = preview_url(group, "/invoices?status=open")
    for who in (app.test_client(), customer):
        response = who.get(path)
        assert response.status_code == 302
        location = urlsplit(response.headers["Location"])
        assert location.path == "/admin/sign-in"
        assert parse_qs(location.query) == {"next": [path]}
        assert GROUP_NAME not in response.text


def test_staff_sign_in_returns_to_the_preview_page(app, db, group):
    user = make_staff(db, StaffRole.VIEWER)
    client = app.test_client()
    target = preview_url(group, "/invoices?status=open")
    sign_in_page = client.get(client.get(target).headers["Location"])
    assert sign_in_page.status_code == 200
    response = staff_sign_in(client, user.email, next=target)
    assert response.status_code == 303
    assert response.headers["Location"] == target
    assert client.get(target).status_code == 200


def test_an_unknown_bill_group_is_404(staff):
    for public_id in ("x" * 16, "short", "y" * 40):
        assert staff.get(f"/admin/preview/{public_id}/overview").status_code == 404


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"portal_enabled": False}, "the portal is disabled"),
        ({"contract_end": TODAY - dt.timedelta(days=1)}, "the contract is not active today"),
    ],
)
def test_staff_may_preview_a_portal_customers_cannot_reach(db, group, staff, change, reason):
    for key, value in change.items():
        setattr(group, key, value)
    db.commit()
    page = staff.get(preview_url(group, "/overview"))
    assert page.status_code == 200
    assert f"Customers cannot sign in at the moment: {reason}." in BANNER_RE.search(page.text)[0]
    # The customer's link stays closed.
    assert staff.application.test_client().get(customer_url(group)).status_code == 404


# --- downloads and audit -----------------------------------------------------------------


def test_the_pdf_and_csv_download_in_the_preview(db, group, customer, staff):
    invoice = invoice_id(db, "INV-2026-0042")
    mine = customer.get(customer_url(group, f"/invoices/{invoice}.pdf"))
    theirs = staff.get(preview_url(group, f"/invoices/{invoice}.pdf"))
    assert theirs.status_code == 200 and theirs.mimetype == "application/pdf"
    assert theirs.headers["Content-Disposition"] == 'attachment; filename="INV-2026-0042.pdf"'

    def text(data: bytes) -> str:
        return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)

    assert "INV-2026-0042" in text(theirs.data)
    assert text(theirs.data) == text(mine.data)

    query = "/invoices.csv?status=overdue"
    # Read the customer's streamed body before the next request is made.
    mine_csv = customer.get(customer_url(group, query)).data
    theirs_csv = staff.get(preview_url(group, query))
    assert theirs_csv.status_code == 200 and theirs_csv.mimetype == "text/csv"
    assert theirs_csv.data == mine_csv and b"INV-2026-0007" in mine_csv


def test_each_page_view_is_audited_as_the_staff_member(db, group, staff):
    invoice = invoice_id(db, "INV-2026-0042")
    staff.get(preview_url(group, "/overview"))
    staff.get(preview_url(group, "/invoices?status=open"))
    staff.get(preview_url(group, f"/invoices/{invoice}.pdf"))
    db.expire_all()
    rows = list(
        db.scalars(
            select(AuditEvent).where(AuditEvent.action == "preview.view").order_by(AuditEvent.id)
        )
    )
    assert [row.detail for row in rows] == [
        "/overview",
        "/invoices?status=open",
        f"/invoices/{invoice}.pdf",
    ]
    email = db.scalar(select(StaffUser.email).where(StaffUser.role == StaffRole.VIEWER))
    assert {(r.actor_type, r.actor, r.bill_group_id, r.outcome) for r in rows} == {
        ("staff", email, group.id, "viewed")
    }
    assert {row.ip for row in rows} == {"127.0.0.1"}
