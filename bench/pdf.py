"""How long an invoice PDF and a statement of account PDF take, against a bare
reportlab table of the same rows.

    .venv/bin/python bench/pdf.py [repetitions]

Builds a 20-line and a 500-line invoice in an in-memory SQLite database (no app needed),
then prints the median time of portal.invoice_pdf.render and of a bare document: the
same rows in a plain Table with repeatRows, no logo, header, totals or page numbers.
Then the same for a 1,000-line statement (portal.statement_pdf.render of a statement
already computed, against a bare table of its rows), as a ratio.
"""

from __future__ import annotations

import datetime as dt
import statistics
import sys
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

from pypdf import PdfReader
from reportlab.lib.pagesizes import A4
from reportlab.platypus import SimpleDocTemplate, Table
from sqlalchemy.orm import Session

# The bench builds its invoices with the test suite's factories.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from portal import statement, statement_pdf  # noqa: E402
from portal.db import Base, make_engine  # noqa: E402
from portal.demo import seller  # noqa: E402
from portal.invoice_pdf import render  # noqa: E402
from portal.models import Entity, Invoice, InvoiceStatus, Payment, PaymentStatus  # noqa: E402
from portal.money import format_money, format_rate  # noqa: E402
from tests.factories import (  # noqa: E402
    TODAY,
    add_payment,
    make_account,
    make_bill_group,
    make_contact,
    make_invoice,
)

SIZES = (20, 500)
STATEMENT_LINES = 1000


def build_invoice(session: Session, entity: Entity, lines: int) -> Invoice:
    group = make_bill_group(
        session,
        account=make_account(session, name=f"Acme {lines}"),
        entity=entity,
        name="Acme UK operations",
        currency="GBP",
        contract_start=dt.date(2025, 1, 1),
        po_number="PO-4471-UK",
        vat_number="GB123456789",
    )
    make_contact(
        session,
        group,
        name="Accounts Payable",
        company="Acme Corporation",
        email=None,
        line1="1 Finance Way",
        city="London",
        postal_code="EC2A 4NE",
        country="GB",
    )
    invoice = make_invoice(
        session,
        group,
        number=f"NW-2026-{lines:05d}",
        issue_date=TODAY - dt.timedelta(days=10),
        due_date=TODAY + dt.timedelta(days=20),
        period_start=dt.date(2026, 11, 1),
        period_end=dt.date(2026, 11, 30),
        lines=[
            (f"API calls, per 10,000 — usage day {position}", str(position % 90 + 1), 150, 2000)
            for position in range(1, lines + 1)
        ],
    )
    add_payment(session, invoice, invoice.total_minor // 2)
    return invoice


def bare(invoice: Invoice) -> bytes:
    """The same rows in a plain table: what reportlab costs before any of our layout."""
    rows = [["Description", "Qty", "Unit price", "Tax", "Amount"]]
    for line in invoice.lines:
        rows.append(
            [
                line.description,
                str(line.quantity.normalize()),
                format_money(line.unit_price_minor, invoice.currency),
                format_rate(line.tax_rate_bp),
                format_money(line.amount_minor, invoice.currency),
            ]
        )
    buffer = BytesIO()
    SimpleDocTemplate(buffer, pagesize=A4, invariant=1).build([Table(rows, repeatRows=1)])
    return buffer.getvalue()


def build_statement(session: Session, entity: Entity, lines: int) -> statement.Statement:
    """A bill group with `lines` statement lines: an invoice a day, and every fourth day
    a payment of it, over the period; computed once, so only rendering is timed."""
    group = build_invoice(session, entity, 1).bill_group
    start = dt.date(2023, 1, 1)
    made = 0
    day = 0
    while made < lines:
        issued = start + dt.timedelta(days=day)
        invoice = Invoice(
            entity=entity,
            bill_group=group,
            number=f"ST-{day:05d}",
            currency="GBP",
            status=InvoiceStatus.PAID if day % 4 == 0 else InvoiceStatus.OPEN,
            issue_date=issued,
            due_date=issued + dt.timedelta(days=30),
            subtotal_minor=10000,
            tax_minor=2000,
            total_minor=12000,
            amount_paid_minor=12000 if day % 4 == 0 else 0,
        )
        session.add(invoice)
        made += 1
        if day % 4 == 0 and made < lines:
            session.add(
                Payment(
                    bill_group=group,
                    amount_minor=12000,
                    currency="GBP",
                    status=PaymentStatus.SUCCEEDED,
                    received_at=dt.datetime.combine(issued, dt.time(12), tzinfo=dt.UTC),
                    reference=f"BACS-{day:05d}",
                )
            )
            made += 1
        day += 1
    session.flush()
    end = start + dt.timedelta(days=day)
    return statement.statement(session, group, start, end)


def bare_statement(found: statement.Statement) -> bytes:
    """The statement's rows in a plain table."""
    rows = [["Date", "Type", "Details", "Charges", "Credits", "Balance"]]
    for line in found.lines:
        rows.append(
            [
                line.day.isoformat(),
                statement.KIND_LABELS[line.kind],
                f"{line.reference} · {line.description}",
                format_money(line.charge_minor, found.currency) if line.charge_minor else "",
                format_money(line.credit_minor, found.currency) if line.credit_minor else "",
                format_money(line.balance_minor, found.currency),
            ]
        )
    buffer = BytesIO()
    SimpleDocTemplate(buffer, pagesize=A4, invariant=1).build([Table(rows, repeatRows=1)])
    return buffer.getvalue()


def statement_line(session: Session, entity: Entity, repetitions: int) -> str:
    found = build_statement(session, entity, STATEMENT_LINES)
    ours, pdf = median_ms(lambda: statement_pdf.render(found), repetitions)
    plain, bare_pdf = median_ms(lambda: bare_statement(found), repetitions)
    return (
        f"statement pdf {len(found.lines)} lines: {ours:.1f} ms (bare {plain:.1f} ms, "
        f"ratio {ours / plain:.2f}), {pages(pdf)} pages (bare {pages(bare_pdf)}), "
        f"{len(pdf):,} bytes"
    )


def median_ms(make: Callable[[], bytes], repetitions: int) -> tuple[float, bytes]:
    pdf = make()  # warm up: lazy loads, font metrics, imports
    times = []
    for _ in range(repetitions):
        start = time.perf_counter()
        pdf = make()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, pdf


def pages(pdf: bytes) -> int:
    return len(PdfReader(BytesIO(pdf)).pages)


def main(repetitions: int = 9) -> None:
    engine = make_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        entity = seller()
        for size in SIZES:
            invoice = build_invoice(session, entity, size)
            ours, pdf = median_ms(lambda invoice=invoice: render(invoice, today=TODAY), repetitions)
            plain, bare_pdf = median_ms(lambda invoice=invoice: bare(invoice), repetitions)
            count, bare_count = pages(pdf), pages(bare_pdf)
            print(
                f"pdf {size} lines: {ours:.1f} ms (bare {plain:.1f} ms, ratio {ours / plain:.2f}), "
                f"{count} page{'s' if count != 1 else ''} (bare {bare_count}), {len(pdf):,} bytes"
            )
        print(statement_line(session, entity, repetitions))
    engine.dispose()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 9)
