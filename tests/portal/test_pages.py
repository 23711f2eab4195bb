"""The customer portal pages (PRODUCT.md journey 5): overview, invoices (filter, paginate,
CSV, detail, PDF), subscriptions, billing details, contacts and payment methods, as a
signed-in customer sees them; isolation between bill groups and CSRF on every change.

Sign-in itself is covered in test_signin_*.py; here it is only the way in.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pypdf import PdfReader
from sqlalchemy import String, Text, event, func, select
from sqlalchemy.orm import Session

from portal.access import add_rule
from portal.db import Base
from portal.models import (
    AuditEvent,
    BillGroup,
    BillingFrequency,
    Contact,
    ContactKind,
    Invoice,
    InvoiceStatus,
    OutboxMessage,
    Payment,
    PaymentApplication,
    PaymentMethod,
    PaymentStatus,
    Product,
    Subscription,
    SubscriptionItem,
    SubscriptionStatus,
)
from tests.conftest import Inbox, csrf_token, run_worker, sign_in
from tests.factories import TODAY, make_bill_group, make_invoice, make_payment_method

ADDRESS = "ap@acme.com"
BILLING_EMAIL = "billing@acme.com"
GROUP_NAME = "Acme Europe"
CARD = "4242 4242 4242 4242"
DECLINED = "4000000000000002"


# --- helpers ----------------------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("clock")  # midday on TODAY, whatever the wall clock says


def portal_group(db: Session, name: str = GROUP_NAME, **overrides: Any) -> BillGroup:
    """A bill group that admits acme.com, with a billing contact; committed."""
    group = make_bill_group(db, name=name, **overrides)
    add_rule(db, group, "acme.com", created_by="test")
    db.add(
        Contact(
            bill_group=group,
            kind=ContactKind.BILLING,
            name="Jo Bloggs",
            company="Acme GmbH",
            email=BILLING_EMAIL,
            phone="+49 30 1234567",
            line1="Hauptstraße 1",
            city="Berlin",
            postal_code="10115",
            country="DE",
        )
    )
    db.commit()
    return group


@pytest.fixture
def group(db: Session) -> BillGroup:
    return portal_group(db)


@pytest.fixture
def customer(app: Flask, client: FlaskClient, smtp: Inbox, group: BillGroup) -> FlaskClient:
    """The test client, signed in to `group` as ap@acme.com; the inbox emptied after."""
    response = sign_in(client, app, smtp, group.public_id, ADDRESS)
    assert response.status_code == 303, response.text
    smtp.clear()
    return client


def url(group: BillGroup, path: str = "") -> str:
    return f"/p/{group.public_id}{path}"


def form_data(client: FlaskClient, page: str, **fields: Any) -> dict[str, Any]:
    """The CSRF token of `page` (as the browser would have it) and the fields to post."""
    response = client.get(page)
    assert response.status_code == 200, response.status_code
    return {"csrf_token": csrf_token(response.text), **fields}


ROW_RE = re.compile(r'<a href="/p/[\w-]+/invoices/\d+">([^<]*)</a>')


def listed(page_html: str) -> list[str]:
    """The invoice numbers in a page's invoice table, in order."""
    return [html.unescape(number) for number in ROW_RE.findall(page_html)]


# The CSV export is streamed: tests fetch it with buffered=True, which reads and closes
# the response as a WSGI server does, so the request's database session is released (an
# open one would hold its transaction, and on PostgreSQL block the next test's TRUNCATE).
def csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def field_errors(page_html: str, field_id: str) -> list[str]:
    """The error messages rendered inside the form field whose label is for `field_id`."""
    match = re.search(
        rf'<div class="field[^"]*">\s*<label for="{field_id}">.*?</div>', page_html, re.S
    )
    assert match, f"no field {field_id!r} on the page"
    return [html.unescape(m) for m in re.findall(r'class="error-message"[^>]*>([^<]*)<', match[0])]


def input_value(page_html: str, field_id: str) -> str | None:
    match = re.search(rf'<input[^>]*\bid="{field_id}"[^>]*>', page_html)
    assert match, f"no input {field_id!r}"
    value = re.search(r'\bvalue="([^"]*)"', match[0])
    return html.unescape(value[1]) if value else None


def flashes(page_html: str) -> list[str]:
    return [
        html.unescape(m)
        for m in re.findall(r'<div class="notice" role="status">([^<]*)<', page_html)
    ]


def audit_rows(db: Session, action: str) -> list[AuditEvent]:
    db.expire_all()
    return list(db.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def send_notices(app: Flask) -> None:
    """Let the notice window close, then run the worker: notices are merged, not sent
    from the request (portal.notices)."""
    app.extensions["portal.clock"].advance(minutes=app.config["NOTICE_WINDOW_MINUTES"])
    run_worker(app)


def outbox_count(db: Session) -> int:
    return db.scalar(select(func.count()).select_from(OutboxMessage)) or 0


def plain_text(message: Any) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


def add_payment(db: Session, invoice: Invoice, amount_minor: int, reference: str) -> Payment:
    payment = Payment(
        bill_group=invoice.bill_group,
        amount_minor=amount_minor,
        currency=invoice.currency,
        status=PaymentStatus.SUCCEEDED,
        received_at=dt.datetime(2026, 11, 15, 9, tzinfo=dt.UTC),
        reference=reference,
    )
    payment.applications.append(PaymentApplication(invoice=invoice, amount_minor=amount_minor))
    invoice.amount_paid_minor += amount_minor
    db.add(payment)
    db.flush()
    return payment


@contextmanager
def statements(app: Flask) -> Iterator[list[str]]:
    """Every SQL statement the app's engine sends while the block runs."""
    engine = app.extensions["portal.db"].kw["bind"]
    seen: list[str] = []

    def before(_conn, _cursor, statement, _params, _context, _many) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", before)


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
    product = Product(entity=group.entity, name="Analytics Pro")
    db.add(
        Subscription(
            bill_group=group,
            status=SubscriptionStatus.ACTIVE,
            period=BillingFrequency.MONTHLY,
            start_date=TODAY - dt.timedelta(days=100),
            renewal_date=TODAY + dt.timedelta(days=9),
            items=[SubscriptionItem(product=product, quantity=3, unit_price_minor=4900)],
        )
    )
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


# --- overview -------------------------------------------------------------------------------


def test_overview_figures(db, group, customer):
    day = dt.timedelta(days=1)
    # 120.00 open, 60.00 overdue, 240.00 overdue of which 100.00 paid: 320.00 outstanding,
    # two overdue for 200.00. Paid, void and draft invoices owe nothing.
    make_invoice(db, group, number="OPEN-1", issue_date=TODAY - 5 * day)
    make_invoice(
        db,
        group,
        number="LATE-1",
        issue_date=TODAY - 40 * day,
        due_date=TODAY - day,
        lines=[("Support", "1", 5000, 2000)],
    )
    part_paid = make_invoice(
        db,
        group,
        number="LATE-2",
        issue_date=TODAY - 70 * day,
        due_date=TODAY - 40 * day,
        lines=[("Licences", "2", 10000, 2000)],
    )
    add_payment(db, part_paid, 10000, "BACS-1")
    make_invoice(db, group, number="PAID-1", status=InvoiceStatus.PAID)
    make_invoice(db, group, number="VOID-1", status=InvoiceStatus.VOID)
    make_invoice(
        db,
        group,
        number="DRAFT-1",
        status=InvoiceStatus.DRAFT,
        issue_date=TODAY,
        lines=[("Not yet", "1", 999900, 0)],
    )
    make_payment_method(db, group, brand="visa", last4="4242")
    make_payment_method(db, group, brand="mastercard", last4="4444", is_default=True)
    db.commit()

    page = customer.get(url(group, "/overview")).text

    assert re.search(r"<dt>Outstanding balance</dt><dd>€320\.00</dd>", page)
    alert = re.search(r'<div class="alert" role="alert">(.*?)</div>', page, re.S)[1]
    assert "2 invoices are overdue" in alert and "€200.00 in total" in alert
    assert "status=overdue" in alert
    assert "<dt>Default payment method</dt><dd>Mastercard ending 4444</dd>" in page
    assert "Visa ending 4242" not in page
    assert "DRAFT-1" not in page
    assert set(listed(page)) == {"OPEN-1", "LATE-1", "LATE-2", "PAID-1", "VOID-1"}


def test_overview_without_overdue_invoices_has_no_alert(db, group, customer):
    make_invoice(db, group, number="OPEN-1", issue_date=TODAY)
    db.commit()
    page = customer.get(url(group, "/overview")).text
    assert 'role="alert"' not in page
    assert "<dt>Outstanding balance</dt><dd>€120.00</dd>" in page
    assert "<dt>Default payment method</dt><dd>None</dd>" in page


def test_drafts_are_never_shown(db, group, customer):
    draft = make_invoice(db, group, number="DRAFT-7", status=InvoiceStatus.DRAFT)
    make_invoice(db, group, number="OPEN-7")
    db.commit()

    assert listed(customer.get(url(group, "/invoices")).text) == ["OPEN-7"]
    assert listed(customer.get(url(group, "/invoices?number=draft")).text) == []
    exported = customer.get(url(group, "/invoices.csv"), buffered=True).text
    assert [row[0] for row in csv_rows(exported)[1:]] == ["OPEN-7"]
    assert customer.get(url(group, f"/invoices/{draft.id}")).status_code == 404
    assert customer.get(url(group, f"/invoices/{draft.id}.pdf")).status_code == 404
    assert "DRAFT-7" not in customer.get(url(group, "/overview")).text


# --- invoice list -------------------------------------------------------------------------


def status_mix(db: Session, group: BillGroup) -> None:
    day = dt.timedelta(days=1)
    make_invoice(db, group, number="OPEN-100", issue_date=TODAY - 10 * day)
    # Due today: still open until the (injected) day is over.
    make_invoice(db, group, number="OPEN-101", issue_date=TODAY - 30 * day, due_date=TODAY)
    make_invoice(db, group, number="LATE-200", issue_date=TODAY - 60 * day, due_date=TODAY - day)
    make_invoice(db, group, number="PAID-300", status=InvoiceStatus.PAID)
    make_invoice(db, group, number="VOID-400", status=InvoiceStatus.VOID)
    make_invoice(db, group, number="DRAFT-500", status=InvoiceStatus.DRAFT)
    db.commit()


STATUS_FILTERS = {
    "": {"OPEN-100", "OPEN-101", "LATE-200", "PAID-300", "VOID-400"},
    "open": {"OPEN-100", "OPEN-101"},
    "overdue": {"LATE-200"},
    "paid": {"PAID-300"},
    "void": {"VOID-400"},
}


def test_status_filter(db, group, customer):
    status_mix(db, group)
    for status, numbers in STATUS_FILTERS.items():
        response = customer.get(url(group, f"/invoices?status={status}"))
        assert response.status_code == 200, status
        assert set(listed(response.text)) == numbers, status
        exported = customer.get(url(group, f"/invoices.csv?status={status}"), buffered=True)
        rows = csv_rows(exported.text)[1:]
        assert {row[0] for row in rows} == numbers, status
        if status:
            assert {row[3] for row in rows} == {status}


def test_overdue_follows_the_injected_clock_not_the_wall_clock(app, db, group, client, smtp, clock):
    status_mix(db, group)
    clock.now = dt.datetime.combine(TODAY, dt.time(23, 50), tzinfo=dt.UTC)
    sign_in(client, app, smtp, group.public_id, ADDRESS)
    assert set(listed(client.get(url(group, "/invoices?status=overdue")).text)) == {"LATE-200"}

    clock.now += dt.timedelta(minutes=20)  # past midnight: OPEN-101 was due yesterday
    assert set(listed(client.get(url(group, "/invoices?status=overdue")).text)) == {
        "LATE-200",
        "OPEN-101",
    }
    assert listed(client.get(url(group, "/invoices?status=open")).text) == ["OPEN-100"]
    overview = client.get(url(group, "/overview")).text
    assert "2 invoices are overdue" in overview


def test_date_range_is_inclusive(db, group, customer):
    for day in (1, 2, 3, 4, 5):
        make_invoice(db, group, number=f"NOV-{day}", issue_date=dt.date(2026, 11, day))
    db.commit()
    page = customer.get(url(group, "/invoices?from=2026-11-02&to=2026-11-04")).text
    assert listed(page) == ["NOV-4", "NOV-3", "NOV-2"]
    assert listed(customer.get(url(group, "/invoices?from=2026-11-04")).text) == ["NOV-5", "NOV-4"]
    assert listed(customer.get(url(group, "/invoices?to=2026-11-01")).text) == ["NOV-1"]
    same_day = customer.get(url(group, "/invoices?from=2026-11-03&to=2026-11-03")).text
    assert listed(same_day) == ["NOV-3"]
    exported = csv_rows(
        customer.get(url(group, "/invoices.csv?from=2026-11-02&to=2026-11-04"), buffered=True).text
    )
    assert [row[0] for row in exported[1:]] == ["NOV-4", "NOV-3", "NOV-2"]


NUMBER_SEARCHES = {
    "inv-ab": {"INV-ABC-1", "inv-abd-2"},
    "ABC": {"INV-ABC-1"},
    "%": {"PO%50"},  # not "any text"
    "_": {"X_1"},  # not "any character"
    "o%5": {"PO%50"},
    "  x_1  ": {"X_1"},
    "nothing": set(),
}


def test_number_search_is_a_literal_case_insensitive_substring(db, group, customer):
    for number in ("INV-ABC-1", "inv-abd-2", "PO%50", "PO550", "X_1", "XY1"):
        make_invoice(db, group, number=number)
    db.commit()
    for search, numbers in NUMBER_SEARCHES.items():
        response = customer.get(url(group, "/invoices"), query_string={"number": search})
        assert response.status_code == 200, search
        assert set(listed(response.text)) == numbers, search
        exported = customer.get(
            url(group, "/invoices.csv"), query_string={"number": search}, buffered=True
        )
        assert {row[0] for row in csv_rows(exported.text)[1:]} == numbers, search


def test_pagination(db, group, customer):
    for index in range(30):
        make_invoice(db, group, number=f"N-{index:02d}", issue_date=TODAY - dt.timedelta(index))
    db.commit()
    newest_first = [f"N-{index:02d}" for index in range(30)]

    first = customer.get(url(group, "/invoices")).text
    assert listed(first) == newest_first[:25]
    assert "Showing 1–25 of 30 invoices." in first and "Page 1 of 2" in first
    assert 'rel="next"' in first and 'rel="prev"' not in first

    second = customer.get(url(group, "/invoices?page=2")).text
    assert listed(second) == newest_first[25:]
    assert "Showing 26–30 of 30 invoices." in second and "Page 2 of 2" in second

    for beyond in ("3", "999999999999999999999", "9" * 5000):
        response = customer.get(url(group, f"/invoices?page={beyond}"))
        assert response.status_code == 200
        assert listed(response.text) == newest_first[25:], beyond
    for junk in ("abc", "-1", "0", "", "1.5", "²"):
        response = customer.get(url(group, "/invoices"), query_string={"page": junk})
        assert response.status_code == 200
        assert listed(response.text) == newest_first[:25], junk

    # Page links keep the filters.
    filtered = customer.get(url(group, "/invoices?number=n-&status=open")).text
    assert re.search(r'href="[^"]*page=2[^"]*"', filtered)
    next_link = html.unescape(re.search(r'href="([^"]*)" rel="next"', filtered)[1])
    assert parse_qs(urlsplit(next_link).query) == {
        "page": ["2"],
        "status": ["open"],
        "number": ["n-"],
    }


BAD_DATES = [
    ("from=2026-13-01", "from", "Not a valid date value."),
    ("from=yesterday", "from", "Not a valid date value."),
    ("to=2026-02-30", "to", "Not a valid date value."),
    ("from=2026-11-05&to=2026-11-04", "to", "The end date must be on or after the start date."),
]


def test_bad_dates_are_a_400_with_the_message_by_the_field(db, group, customer):
    make_invoice(db, group, number="INV-1", issue_date=dt.date(2026, 11, 4))
    db.commit()
    for query, field, message in BAD_DATES:
        response = customer.get(url(group, f"/invoices?{query}"))
        assert response.status_code == 400, query
        assert field_errors(response.text, field) == [message], query
        other = "to" if field == "from" else "from"
        assert field_errors(response.text, other) == [], query
        assert listed(response.text) == [], query
        exported = customer.get(url(group, f"/invoices.csv?{query}"), buffered=True)
        assert exported.status_code == 400, query


def test_csv_export(db, group, customer):
    day = dt.timedelta(days=1)
    part_paid = make_invoice(
        db,
        group,
        number="INV-1",
        issue_date=dt.date(2026, 10, 1),
        due_date=dt.date(2026, 10, 31),
        lines=[("Licences", "3", 4115, 2000)],  # 123.45 + 24.69 tax
    )
    add_payment(db, part_paid, 4815, "BACS-1")
    make_invoice(db, group, number="INV-2", status=InvoiceStatus.PAID, issue_date=TODAY - day)
    formulas = ['=HYPERLINK("https://evil.test","x")', "+1+2", "-3", "@SUM(A1)"]
    for number in formulas:
        make_invoice(db, group, number=number, issue_date=TODAY - 5 * day)
    db.commit()

    response = customer.get(url(group, "/invoices.csv"), buffered=True)
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == 'attachment; filename="invoices.csv"'
    rows = csv_rows(response.text)
    assert rows[0] == ["Invoice", "Issued", "Due", "Status", "Currency", "Total", "Paid", "Balance"]
    by_number = {row[0]: row for row in rows[1:]}
    assert by_number["INV-1"] == [
        "INV-1",
        "2026-10-01",
        "2026-10-31",
        "overdue",
        "EUR",
        "148.14",
        "48.15",
        "99.99",
    ]
    assert by_number["INV-2"][3:] == ["paid", "EUR", "120.00", "120.00", "0.00"]
    for number in formulas:
        assert by_number["'" + number][5:] == ["120.00", "0.00", "120.00"]
    assert all(not row[0].startswith(("=", "+", "-", "@")) for row in rows[1:])
    assert len(rows) == 1 + 2 + len(formulas)

    # The export honours the filters.
    overdue = csv_rows(customer.get(url(group, "/invoices.csv?status=overdue"), buffered=True).text)
    assert [row[0] for row in overdue] == ["Invoice", "INV-1"]
    empty = csv_rows(customer.get(url(group, "/invoices.csv?number=zzz"), buffered=True).text)
    assert empty == [rows[0]]


def test_the_csv_download_gives_its_database_connection_back(app, db, group, customer):
    """Read to the end or dropped half-way, the stream holds no connection afterwards
    (a leaked one sits "idle in transaction", holding locks, until garbage collection)."""
    for index in range(3):
        make_invoice(db, group, number=f"INV-{index}")
    db.commit()
    db.close()
    pool = app.extensions["portal.db"].kw["bind"].pool

    whole = customer.get(url(group, "/invoices.csv"), buffered=True)
    assert len(csv_rows(whole.text)) == 4
    assert pool.checkedout() == 0

    dropped = customer.get(url(group, "/invoices.csv"))
    chunks = iter(dropped.response)
    assert next(chunks).startswith(b"Invoice,")
    next(chunks)  # the first invoice: the query is running
    dropped.close()  # the browser went away
    assert pool.checkedout() == 0


def test_csv_amounts_in_yen_have_no_decimals(db, customer, app, client, smtp):
    yen = portal_group(db, name="Acme Japan", currency="JPY")
    make_invoice(db, yen, number="JP-1", lines=[("Seats", "3", 1500, 1000)])  # 4500 + 450
    db.commit()
    sign_in(client, app, smtp, yen.public_id, ADDRESS)
    rows = csv_rows(client.get(url(yen, "/invoices.csv"), buffered=True).text)
    assert rows[1][4:] == ["JPY", "4950", "0", "4950"]
    assert "¥4,950" in client.get(url(yen, "/invoices")).text


def test_list_and_overview_use_a_fixed_number_of_statements(app, db, group, customer):
    make_payment_method(db, group, is_default=True)
    db.commit()
    customer.get(url(group, "/overview"))  # anything a first request does once

    def count(path: str) -> int:
        with statements(app) as seen:
            response = customer.get(url(group, path))
        assert response.status_code == 200
        return len(seen)

    counts = []
    # 3 (fewer rows than the overview's five recent), 10 (a page of its own), 300.
    for total, batch in ((3, 3), (10, 7), (300, 290)):
        for _ in range(batch):
            make_invoice(db, group, issue_date=TODAY - dt.timedelta(days=2))
        db.commit()
        counts.append({path: count(path) for path in ("/invoices", "/overview")})
        shown = customer.get(url(group, "/invoices")).text
        assert f"of {total} invoices." in shown

    assert counts[0] == counts[1] == counts[2]
    # The session with its group, seller, rules and default payment method in one; then
    # the list's count and page, or the overview's totals and recent invoices.
    assert counts[0] == {"/invoices": 3, "/overview": 3}


# --- invoice detail and PDF -----------------------------------------------------------------


def test_invoice_detail_shows_lines_totals_and_payments(db, group, customer):
    invoice = make_invoice(
        db,
        group,
        number="INV-2026-0042",
        issue_date=dt.date(2026, 11, 1),
        lines=[("Analytics Pro seats", "3", 4900, 2000), ("Consulting hours", "2.5", 12000, 700)],
        po_number="PO-778",
    )
    add_payment(db, invoice, 10000, "BACS-20261115")
    db.commit()
    # 147.00 + 29.40 tax; 300.00 + 21.00 tax: 447.00 + 50.40 = 497.40, 100.00 paid.
    page = customer.get(url(group, f"/invoices/{invoice.id}")).text

    assert "Invoice INV-2026-0042" in page and "badge-open" in page
    assert "Analytics Pro seats" in page and "Consulting hours" in page
    assert ">2.5<" in page and "€49.00" in page and "€120.00" in page and "7%" in page
    totals = dict(
        re.findall(
            r"<dt>([^<]+)</dt><dd>([^<]+)</dd>", re.search(r'class="totals".*?</dl>', page, re.S)[0]
        )
    )
    assert totals == {
        "Subtotal": "€447.00",
        "Tax": "€50.40",
        "Total": "€497.40",
        "Paid": "€100.00",
        "Balance due": "€397.40",
    }
    assert "BACS-20261115" in page and "15 Nov 2026" in page
    assert "PO-778" in page
    assert f'href="{url(group, f"/invoices/{invoice.id}.pdf")}"' in page


def test_invoice_without_payments_says_so(db, group, customer):
    invoice = make_invoice(db, group, number="INV-9")
    db.commit()
    assert "No payments yet." in customer.get(url(group, f"/invoices/{invoice.id}")).text
    assert customer.get(url(group, "/invoices/999999")).status_code == 404


# The number, and the Content-Disposition: an ASCII fallback, and the real name in UTF-8
# (RFC 6266) when it differs.
PDF_NAMES = [
    ("INV-2026-0042", 'attachment; filename="INV-2026-0042.pdf"'),
    (
        'A/B\\"C; x=y\r\n.pdf',
        'attachment; filename="A_B__C__x_y__.pdf.pdf"; '
        "filename*=UTF-8''A%2FB%5C%22C%3B%20x%3Dy%0D%0A.pdf.pdf",
    ),
    (
        "Rechnung Nº 5",
        "attachment; filename=\"Rechnung_N__5.pdf\"; filename*=UTF-8''Rechnung%20N%C2%BA%205.pdf",
    ),
    (
        "請求書-7",
        "attachment; filename=\"___-7.pdf\"; filename*=UTF-8''%E8%AB%8B%E6%B1%82%E6%9B%B8-7.pdf",
    ),
]


def test_pdf_download(db, group, customer):
    for number, expected in PDF_NAMES:
        invoice = make_invoice(db, group, number=number)
        db.commit()
        response = customer.get(url(group, f"/invoices/{invoice.id}.pdf"))
        assert response.status_code == 200, number
        assert response.headers["Content-Type"] == "application/pdf"
        disposition = response.headers["Content-Disposition"]
        assert disposition == expected, number
        disposition.encode("ascii")  # a WSGI server sends headers as Latin-1: keep to ASCII
        assert response.data.startswith(b"%PDF"), number
        if number.isascii() or "Nº" in number:  # (the PDF font has no CJK glyphs)
            pages = PdfReader(io.BytesIO(response.data)).pages
            text = " ".join(" ".join(page.extract_text() for page in pages).split())
            assert " ".join(number.split()) in text, number


# --- billing details -------------------------------------------------------------------------

DETAILS_FIELDS = ("po_number", "vat_number", "registration_number")


def details_of(db: Session, group: BillGroup) -> tuple[str | None, ...]:
    db.refresh(group)
    return tuple(getattr(group, key) for key in DETAILS_FIELDS)


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
    assert len(smtp.messages) == 1

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
    (
        "vat_number",
        "DE136695977",
        "That is not a valid VAT number for Germany. Check it against your VAT "
        "registration certificate.",
    ),
    ("vat_number", "136695976", "Start the VAT number with its country code, like DE123456789."),
    ("vat_number", "DE136\x07695976", "The VAT number contains characters that are not allowed."),
    ("vat_number", "DE" + "1" * 29, "Field cannot be longer than 30 characters."),
    ("po_number", "PO-1\nPO-2", "The PO number contains characters that are not allowed."),
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


# --- contacts ---------------------------------------------------------------------------


def billing_contact(db: Session, group: BillGroup) -> Contact:
    db.expire_all()
    contact = db.scalar(
        select(Contact).where(Contact.bill_group_id == group.id, Contact.kind == "billing")
    )
    assert contact is not None
    return contact


def shipping_contact(db: Session, group: BillGroup) -> Contact | None:
    db.expire_all()
    return db.scalar(
        select(Contact).where(Contact.bill_group_id == group.id, Contact.kind == "shipping")
    )


def contact_fields(**overrides: str) -> dict[str, str]:
    """The billing contact as the form shows it, with changes."""
    return {
        "name": "Jo Bloggs",
        "company": "Acme GmbH",
        "email": BILLING_EMAIL,
        "phone": "+49 30 1234567",
        "line1": "Hauptstraße 1",
        "line2": "",
        "city": "Berlin",
        "region": "",
        "postal_code": "10115",
        "country": "DE",
    } | overrides


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


PHONE_ERROR = "Enter a phone number using digits, spaces, + ( ) and -."
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

    response = customer.post(
        page,
        data=form_data(
            customer,
            page,
            name="Goods In",
            email="",
            phone="",
            same_as_billing="y",
            line1="Typed but ignored 9",
            city="",
            country="",
        ),
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
    page = url(group, "/contacts/shipping")
    response = customer.post(
        page,
        data=form_data(
            customer,
            page,
            name="Warehouse",
            company="Acme Logistics",
            email="goods-in@acme.com",
            phone="+33 1 23 45 67 89",
            line1="12 rue du Port",
            city="Lyon",
            postal_code="69002",
            country="FR",
        ),
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


# --- payment methods ---------------------------------------------------------------------


def card_fields(**overrides: str) -> dict[str, str]:
    return {
        "holder_name": "Ada Lovelace",
        "number": CARD,
        "exp_month": "12",
        "exp_year": "2030",
        "cvc": "123",
    } | overrides


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


def methods_of(db: Session, group: BillGroup) -> list[PaymentMethod]:
    db.expire_all()
    return list(
        db.scalars(
            select(PaymentMethod)
            .where(PaymentMethod.bill_group_id == group.id)
            .order_by(PaymentMethod.id)
        )
    )


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
    app.config["PAYMENT_GATEWAY"] = "none"  # read on every request
    assert customer.get(url(group, "/payment-methods/new")).status_code == 404
    listing = customer.get(url(group, "/payment-methods"))
    assert listing.status_code == 200
    assert "To add or change a payment method, contact billing@seller.example.com." in (
        listing.text
    )
    assert "Add a card" not in listing.text and "Sandbox" not in listing.text
    assert "Visa ending 4242" in listing.text


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
