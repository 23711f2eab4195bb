"""The statement of account: opening balance, lines in date order with a running balance,
closing balance and aging, on the page, in the PDF (read back with pypdf) and the CSV;
bad periods refused; another group's records never on it. And the credits page."""

from __future__ import annotations

import datetime as dt
from io import BytesIO

import pytest
from pypdf import PdfReader
from sqlalchemy import select

from portal import statement as statements
from portal.models import (
    CreditApplication,
    CreditNote,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentStatus,
)
from tests.factories import (
    TODAY,
    add_payment,
    add_unapplied_payment,
    make_bill_group,
    make_credit_note,
    make_invoice,
)
from tests.portal.pages_helpers import csrf_token, csv_rows, field_errors, flashes, url

pytestmark = pytest.mark.usefixtures("clock")

DAY = dt.timedelta(days=1)


def _note(db, group, number, day, amount, **extra) -> CreditNote:
    return make_credit_note(db, group, amount, number=number, issue_date=day, **extra)


def _payment(db, group, day: dt.date, amount: int, **extra) -> Payment:
    received = dt.datetime.combine(day, dt.time(9), tzinfo=dt.UTC)
    values = {"received_at": received, "reference": f"WIRE-{amount}"}
    return add_unapplied_payment(db, group, amount, **(values | extra))


def _apply_on_page(customer, group, source: str, invoice: Invoice, amount: str):
    """The credits page's form, posted as the browser would."""
    page = customer.get(url(group, "/credits"))
    return customer.post(
        url(group, "/credits"),
        data={
            "csrf_token": csrf_token(page.text),
            "source": source,
            "invoice": str(invoice.id),
            "amount": amount,
        },
    )


@pytest.fixture
def ledger(db, group):
    """Before the period: an invoice of 120.00 and a payment of 50.00 (opening 70.00).
    In it (1-30 Nov 2026): an invoice of 120.00 on 5 Nov, a credit note of 20.00 on
    10 Nov, a payment of 100.00 on 12 Nov refunded 30.00. Not on it: a void invoice, a
    draft, a failed payment, a void credit note, another group's invoice."""
    old = make_invoice(
        db, group, number="OLD-1", issue_date=dt.date(2026, 9, 1), due_date=dt.date(2026, 9, 15)
    )
    add_payment(db, old, 5000, received_at=dt.datetime(2026, 9, 20, 10, tzinfo=dt.UTC))
    make_invoice(
        db, group, number="NOV-1", issue_date=dt.date(2026, 11, 5), due_date=dt.date(2026, 11, 20)
    )
    _note(db, group, "CN-1", dt.date(2026, 11, 10), 2000, reason='=HYPERLINK("x")')
    _payment(db, group, dt.date(2026, 11, 12), 10000, refunded_minor=3000)
    make_invoice(
        db, group, number="VOID-1", status=InvoiceStatus.VOID, issue_date=dt.date(2026, 11, 6)
    )
    make_invoice(
        db, group, number="DRAFT-1", status=InvoiceStatus.DRAFT, issue_date=dt.date(2026, 11, 6)
    )
    _payment(db, group, dt.date(2026, 11, 13), 777, status=PaymentStatus.FAILED)
    _note(
        db,
        group,
        "CN-VOID",
        dt.date(2026, 11, 14),
        999,
        voided_at=dt.datetime(2026, 11, 15, tzinfo=dt.UTC),
    )
    make_invoice(db, make_bill_group(db), number="THEIRS-1", issue_date=dt.date(2026, 11, 7))
    db.commit()
    return group


@pytest.mark.db
def test_the_statement_adds_up(db, ledger):
    found = statements.statement(db, ledger, dt.date(2026, 11, 1), dt.date(2026, 11, 30))
    assert found.opening_minor == 12000 - 5000
    assert [
        (x.day.day, x.kind, x.reference, x.charge_minor, x.credit_minor, x.balance_minor)
        for x in found.lines
    ] == [
        (5, "invoice", "NOV-1", 12000, 0, 19000),
        (10, "credit_note", "CN-1", 0, 2000, 17000),
        (12, "payment", "WIRE-10000", 0, 10000, 7000),
        (12, "refund", "WIRE-10000", 3000, 0, 10000),
    ]
    assert found.closing_minor == 10000
    # Open at 30 Nov: OLD-1 (70.00 left, due 15 Sep: 76 days late), NOV-1 (due 20 Nov).
    assert found.aging == [
        ("Current", 0),
        ("1–30 days", 12000),
        ("31–60 days", 0),
        ("61–90 days", 7000),
        ("Over 90 days", 0),
    ]
    # The next period opens where this one closed.
    after = statements.statement(db, ledger, dt.date(2026, 12, 1), dt.date(2026, 12, 31))
    assert after.opening_minor == found.closing_minor and after.lines == []


@pytest.mark.db
def test_a_past_period_ages_what_was_owed_then(db, group):
    """At 31 Oct, A (due 1 Oct) was owed in full and B (due 20 Oct) in part: paid and
    credited in November, both are aged as they stood on 31 Oct; today they owe nothing.
    What was paid before the day stays paid."""
    a = make_invoice(db, group, issue_date=dt.date(2026, 9, 20), due_date=dt.date(2026, 10, 1))
    b = make_invoice(db, group, issue_date=dt.date(2026, 10, 5), due_date=dt.date(2026, 10, 20))
    add_payment(db, b, 2000, received_at=dt.datetime(2026, 10, 25, 12, tzinfo=dt.UTC))
    add_payment(db, a, 12000, received_at=dt.datetime(2026, 11, 1, 0, tzinfo=dt.UTC))
    note = make_credit_note(db, group, 10000)
    db.add(
        CreditApplication(
            credit_note_id=note.id,
            invoice_id=b.id,
            amount_minor=10000,
            applied_at=dt.datetime(2026, 11, 2, tzinfo=dt.UTC),
            applied_by="ap@acme.com",
        )
    )
    b.amount_credited_minor = 10000
    a.status = b.status = InvoiceStatus.PAID
    db.commit()
    october = dict(statements.aging(db, group, dt.date(2026, 10, 31), today=TODAY))
    assert (october["1–30 days"], october["Current"]) == (12000 + 10000, 0)
    assert sum(october.values()) == 22000
    assert sum(dict(statements.aging(db, group, TODAY, today=TODAY)).values()) == 0
    assert statements.aging(db, group, TODAY, today=TODAY) == statements.aging(db, group, TODAY)


@pytest.mark.db
def test_aging_bucket_edges(db, group):
    at = dt.date(2026, 11, 30)
    for late in (0, 1, 30, 31, 60, 61, 90, 91, 400):
        due = at - late * DAY
        make_invoice(
            db, group, issue_date=due - 400 * DAY, due_date=due, lines=[("x", "1", 100 + late, 0)]
        )
    db.commit()
    buckets = dict(statements.aging(db, group, at))
    assert buckets == {
        "Current": 100,
        "1–30 days": 101 + 130,
        "31–60 days": 131 + 160,
        "61–90 days": 161 + 190,
        "Over 90 days": 191 + 500,
    }


def test_the_page_shows_it(customer, ledger):
    page = customer.get(url(ledger, "/statement?from=2026-11-01&to=2026-11-30"))
    assert page.status_code == 200
    text = page.text
    for shown in (
        "Opening balance",
        "€70.00",
        "NOV-1",
        "CN-1",
        "Refund",
        "€100.00",
        "Closing balance",
    ):
        assert shown in text, shown
    for hidden in ("VOID-1", "DRAFT-1", "CN-VOID", "THEIRS-1", "7.77"):
        assert hidden not in text, hidden
    # Without a period: the last 90 days.
    assert customer.get(url(ledger, "/statement")).status_code == 200


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("from=2026-11-30&to=2026-11-01", "on or after the first"),
        ("from=2026-13-01&to=2026-11-30", "Not a valid date"),
        ("from=&to=2026-11-30", "Enter the first day"),
        ("from=0001-01-01&to=2026-11-30", "between the years"),
        ("from=2026-01-01&to=9999-12-31", "between the years"),
        ("from=1900-01-01&to=2026-11-30", "at most 20 years"),
    ],
)
def test_a_bad_period_is_400_with_its_reason(customer, group, query, message):
    page = customer.get(url(group, f"/statement?{query}"))
    assert page.status_code == 400
    errors = field_errors(page.text, "from") + field_errors(page.text, "to")
    assert errors and message in " ".join(errors)
    assert customer.get(url(group, f"/statement.pdf?{query}")).status_code == 400
    assert customer.get(url(group, f"/statement.csv?{query}")).status_code == 400


def test_a_control_character_in_the_period_is_400(customer, group):
    for page in ("/statement", "/statement.pdf", "/statement.csv"):
        assert (
            customer.get(url(group, f"{page}?from=2026-11-01%00&to=2026-11-30")).status_code == 400
        )


def _pages(pdf: bytes) -> list[str]:
    return [" ".join(page.extract_text().split()) for page in PdfReader(BytesIO(pdf)).pages]


@pytest.mark.db
def test_the_pdf_has_the_figures(customer, ledger):
    response = customer.get(url(ledger, "/statement.pdf?from=2026-11-01&to=2026-11-30"))
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    assert "statement-2026-11-01-2026-11-30.pdf" in response.headers["Content-Disposition"]
    (text,) = _pages(response.data)
    for shown in (
        "Statement of account",
        "Opening balance",
        "€70.00",
        "NOV-1",
        "€190.00",
        "Closing balance",
        "€100.00",
        "61–90 days",
        "Page 1 of 1",
    ):
        assert shown in text, shown
    assert "THEIRS-1" not in text and "VOID-1" not in text


def test_a_thousand_lines_paginate_with_the_header_on_every_page(db, customer, group):
    start = dt.date(2024, 1, 1)
    for n in range(1000):
        db.add(
            Invoice(
                bill_group_id=group.id,
                entity_id=group.entity_id,
                currency=group.currency,
                number=f"BULK-{n:04d}",
                status=InvoiceStatus.PAID,
                issue_date=start + n * DAY,
                due_date=start + n * DAY,
                subtotal_minor=100,
                tax_minor=0,
                total_minor=100,
                amount_paid_minor=100,
            )
        )
    db.commit()
    response = customer.get(url(group, "/statement.pdf?from=2024-01-01&to=2026-11-30"))
    assert response.status_code == 200
    pages = _pages(response.data)
    assert len(pages) > 10
    assert all("Date Type Details Charges Credits Balance" in page for page in pages)
    assert f"Page {len(pages)} of {len(pages)}" in pages[-1]
    text = " ".join(pages)
    assert "BULK-0000" in text and "BULK-0999" in text
    assert "€1,000.00" in pages[-1]  # the closing balance: 1,000 × 1.00 charged


def test_the_csv_is_formula_safe_and_adds_up(customer, ledger):
    response = customer.get(url(ledger, "/statement.csv?from=2026-11-01&to=2026-11-30"))
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = csv_rows(response.text)
    assert rows[0] == statements.CSV_COLUMNS
    assert rows[1] == ["2026-10-31", "Opening balance", "", "", "", "", "70.00"]
    note = next(row for row in rows if row[2] == "CN-1")
    assert note[3] == '\'=HYPERLINK("x")'
    assert ["2026-11-30", "Closing balance", "", "", "", "", "100.00"] in rows
    assert rows[-1][1:3] == ["Aging", "Over 90 days"]


def test_the_preview_shows_the_statement(db, ledger, staff_client):
    page = staff_client().get(
        f"/admin/preview/{ledger.public_id}/statement?from=2026-11-01&to=2026-11-30"
    )
    assert page.status_code == 200 and "NOV-1" in page.text


# --- the credits page -----------------------------------------------------------------


def test_the_credits_page_lists_credit_and_the_overview_counts_it(db, customer, ledger):
    page = customer.get(url(ledger, "/credits"))
    assert page.status_code == 200
    assert "CN-1" in page.text and "CN-VOID" in page.text  # void notes listed, as void
    assert "WIRE-10000" in page.text  # 100.00 received, 30.00 refunded, none applied: 70.00
    overview = customer.get(url(ledger, "/overview")).text
    assert "Credit available" in overview
    # Open: 70.00 + 120.00 = 190.00; credit 20.00 + 70.00 = 90.00; balance 100.00.
    assert "€90.00" in overview and "€100.00" in overview


@pytest.mark.db
def test_applying_a_credit_from_the_page(db, customer, ledger):
    note = db.scalar(select(CreditNote).where(CreditNote.number == "CN-1"))
    invoice = db.scalar(select(Invoice).where(Invoice.number == "NOV-1"))
    response = _apply_on_page(customer, ledger, f"credit_note:{note.id}", invoice, "15.00")
    assert response.status_code == 303
    assert flashes(customer.get(url(ledger, "/credits")).text) == [
        "€15.00 applied to invoice NOV-1."
    ]
    db.expire_all()
    assert db.get(Invoice, invoice.id).amount_credited_minor == 1500


@pytest.mark.parametrize(
    ("amount", "field", "message"),
    [
        ("20.01", "amount", "Only €20.00 is left"),
        ("0", "amount", "greater than zero"),
        ("-5", "amount", "greater than zero"),
        ("1.001", "amount", "such as 25.00"),
        ("9" * 30, "amount", "Field cannot be longer"),
        ("99999999999999999999", "amount", "more than any credit"),
        ("abc", "amount", "such as 25.00"),
    ],
)
def test_a_bad_amount_is_refused_on_the_page(db, customer, ledger, amount, field, message):
    note = db.scalar(select(CreditNote).where(CreditNote.number == "CN-1"))
    invoice = db.scalar(select(Invoice).where(Invoice.number == "NOV-1"))
    response = _apply_on_page(customer, ledger, f"credit_note:{note.id}", invoice, amount)
    assert response.status_code == 400
    assert message in " ".join(field_errors(response.text, field))
    db.expire_all()
    assert db.get(Invoice, invoice.id).amount_credited_minor == 0


def test_another_groups_credit_cannot_be_posted(db, customer, ledger):
    other = make_bill_group(db)
    theirs = _note(db, other, "CN-THEIRS", TODAY, 5000)
    db.commit()
    invoice = db.scalar(select(Invoice).where(Invoice.number == "NOV-1"))
    response = _apply_on_page(customer, ledger, f"credit_note:{theirs.id}", invoice, "1.00")
    assert response.status_code == 400
    db.expire_all()
    assert db.get(CreditNote, theirs.id).amount_applied_minor == 0


def test_when_the_entity_does_not_allow_it_there_is_no_form(db, customer, ledger):
    ledger.entity.allow_credit_application = False
    db.commit()
    page = customer.get(url(ledger, "/credits")).text
    assert "Apply credit</button>" not in page and "contact" in page


def test_the_preview_shows_the_form_disabled(db, ledger, staff_client):
    page = staff_client().get(f"/admin/preview/{ledger.public_id}/credits")
    assert page.status_code == 200
    assert "<fieldset disabled>" in page.text and "Apply credit</button>" in page.text


@pytest.mark.db
def test_the_overview_balance_with_credit_is_still_one_statement(app, db, ledger):
    """The totals and the credit come back together: one statement, whatever the number
    of credit notes and payments (and one more for the recent invoices)."""
    from portal import billing
    from tests.conftest import statements as sql

    for n in range(30):
        _note(db, ledger, f"CN-MANY-{n}", TODAY, 100)
        _payment(db, ledger, TODAY, 10 + n)
    db.commit()
    with sql(app) as seen:
        figures = billing.summary(db, ledger, TODAY)
    assert len([s for s in seen if s.lstrip().upper().startswith("SELECT")]) == 2
    assert figures.credit_minor == 2000 + 7000 + 30 * 100 + sum(10 + n for n in range(30))
