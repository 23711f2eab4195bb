"""A bill group's statement of account for a period: the balance brought forward (as of
the day before the period), every invoice, payment, refund and credit note in it in date
order with a running balance, the closing balance, and the aging of what is open at the
period's end.

The balance is what the customer owes: invoices add to it; succeeded payments and credit
notes take from it; a refund gives back what a payment took (a line of its own, on the
payment's date: the portal is told a payment's refunded amount, not when). Drafts and
void invoices, failed and pending payments, and void credit notes are not on it.

Sums are SQL (the opening balance and the aging are one statement each, however many
invoices a bill group has); the lines are three ordered, indexed queries merged here.
"""

from __future__ import annotations

import datetime as dt
import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from portal import csvexport
from portal.models import (
    BillGroup,
    CreditApplication,
    CreditNote,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentApplication,
    PaymentStatus,
)
from portal.money import to_decimal

# The invoice statuses and payment statuses a statement counts.
BILLED = (InvoiceStatus.OPEN, InvoiceStatus.PAID)
RECEIVED = (PaymentStatus.SUCCEEDED, PaymentStatus.REFUNDED)
# Aging buckets: (label, fewest days past due, most days past due or None).
BUCKETS: tuple[tuple[str, int | None, int | None], ...] = (
    ("Current", None, 0),
    ("1–30 days", 1, 30),
    ("31–60 days", 31, 60),
    ("61–90 days", 61, 90),
    ("Over 90 days", 91, None),
)
# The longest period one statement covers.
MAX_DAYS = 366 * 20


class PeriodError(ValueError):
    """A period a statement cannot be made for; the message is for the customer."""


@dataclass(frozen=True)
class Line:
    day: dt.date
    kind: str  # invoice, payment, refund, credit_note
    reference: str
    description: str
    charge_minor: int  # adds to the balance
    credit_minor: int  # takes from it
    balance_minor: int  # after this line


@dataclass(frozen=True)
class Statement:
    group: BillGroup
    date_from: dt.date
    date_to: dt.date
    opening_minor: int
    lines: list[Line]
    closing_minor: int
    aging: list[tuple[str, int]]
    charges_minor: int = 0
    credits_minor: int = 0
    currency: str = field(default="")

    @property
    def open_minor(self) -> int:
        return sum(amount for _label, amount in self.aging)


def check_period(date_from: dt.date, date_to: dt.date) -> None:
    if date_to < date_from:
        raise PeriodError("The last day must be on or after the first.")
    if date_from.year < 1900 or date_to.year > 2999:
        raise PeriodError("Choose days between the years 1900 and 2999.")
    if (date_to - date_from).days > MAX_DAYS:
        raise PeriodError("A statement covers at most 20 years.")


def _start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)


def _refund() -> Any:
    """What a payment's refund gives back: its refunded amount, or all of a payment
    marked refunded without one."""
    return case(
        (
            and_(Payment.status == PaymentStatus.REFUNDED, Payment.refunded_minor == 0),
            Payment.amount_minor,
        ),
        else_=Payment.refunded_minor,
    )


def opening_balance(db: Session, group: BillGroup, before: dt.date) -> int:
    """The balance at the end of the day before `before`: one statement."""
    invoiced = (
        select(func.coalesce(func.sum(Invoice.total_minor), 0))
        .where(
            Invoice.bill_group_id == group.id,
            Invoice.status.in_(BILLED),
            Invoice.issue_date < before,
        )
        .scalar_subquery()
    )
    paid = (
        select(func.coalesce(func.sum(Payment.amount_minor - _refund()), 0))
        .where(
            Payment.bill_group_id == group.id,
            Payment.status.in_(RECEIVED),
            Payment.received_at < _start(before),
        )
        .scalar_subquery()
    )
    credited = (
        select(func.coalesce(func.sum(CreditNote.amount_minor), 0))
        .where(
            CreditNote.bill_group_id == group.id,
            CreditNote.voided_at.is_(None),
            CreditNote.issue_date < before,
        )
        .scalar_subquery()
    )
    return int(db.scalar(select(invoiced - paid - credited)) or 0)


def aging(
    db: Session, group: BillGroup, at: dt.date, today: dt.date | None = None
) -> list[tuple[str, int]]:
    """What the invoices issued by `at` still owed at the end of `at`, by days past due
    at `at`: one statement (the buckets are due-date ranges, so no dialect's date
    arithmetic).

    What an invoice owed then is what it owes now plus what was applied to it after
    `at`: payments received and credit applied later are added back, so last quarter's
    statement ages last quarter's debts, not today's. (An amount the billing system
    marked paid on the invoice with no payment to date it is taken as paid by then.)
    For a day on or after `today` that is today's balance, without the look-back."""
    owed: Any = Invoice.balance_minor
    billed: Any = Invoice.status == InvoiceStatus.OPEN
    if today is None or at < today:
        after = _start(at + dt.timedelta(days=1))
        paid_after = (
            select(func.coalesce(func.sum(PaymentApplication.amount_minor), 0))
            .join(Payment, Payment.id == PaymentApplication.payment_id)
            .where(
                PaymentApplication.invoice_id == Invoice.id,
                Payment.status.in_(RECEIVED),
                Payment.received_at >= after,
            )
            .correlate(Invoice)
            .scalar_subquery()
        )
        credited_after = (
            select(func.coalesce(func.sum(CreditApplication.amount_minor), 0))
            .where(
                CreditApplication.invoice_id == Invoice.id, CreditApplication.applied_at >= after
            )
            .correlate(Invoice)
            .scalar_subquery()
        )
        owed = Invoice.balance_minor + paid_after + credited_after
        billed = Invoice.status.in_(BILLED)
    columns = []
    for _label, fewest, most in BUCKETS:
        conditions = []
        if fewest is not None:  # at least `fewest` days late: due on or before at - fewest
            conditions.append(Invoice.due_date <= at - dt.timedelta(days=fewest))
        if most is not None:
            conditions.append(Invoice.due_date >= at - dt.timedelta(days=most))
        columns.append(func.coalesce(func.sum(owed).filter(and_(*conditions)), 0))
    row = db.execute(
        select(*columns).where(
            Invoice.bill_group_id == group.id,
            billed,
            Invoice.issue_date <= at,
        )
    ).one()
    return [(label, int(amount)) for (label, _f, _m), amount in zip(BUCKETS, row, strict=True)]


# (day, place within the day, id, line fields)
_Entry = tuple[dt.date, int, int, str, str, str, int, int]


def _invoices(db: Session, group: BillGroup, start: dt.date, end: dt.date) -> Iterator[_Entry]:
    query = (
        select(
            Invoice.id, Invoice.issue_date, Invoice.number, Invoice.due_date, Invoice.total_minor
        )
        .where(
            Invoice.bill_group_id == group.id,
            Invoice.status.in_(BILLED),
            Invoice.issue_date >= start,
            Invoice.issue_date <= end,
        )
        .order_by(Invoice.issue_date, Invoice.id)
    )
    for id_, day, number, due, total in db.execute(query):
        yield (day, 0, id_, "invoice", number, f"Invoice, due {due.isoformat()}", total, 0)


def _payments(db: Session, group: BillGroup, start: dt.date, end: dt.date) -> Iterator[_Entry]:
    query = (
        select(
            Payment.id,
            Payment.received_at,
            Payment.reference,
            Payment.method_description,
            Payment.amount_minor,
            _refund(),
        )
        .where(
            Payment.bill_group_id == group.id,
            Payment.status.in_(RECEIVED),
            Payment.received_at >= _start(start),
            Payment.received_at < _start(end + dt.timedelta(days=1)),
        )
        .order_by(Payment.received_at, Payment.id)
    )
    for id_, received, reference, method, amount, refunded in db.execute(query):
        day = received.astimezone(dt.UTC).date()
        ref = reference or f"Payment {id_}"
        yield (day, 2, id_, "payment", ref, method or "Payment received", 0, amount)
        if refunded:
            yield (day, 2, id_, "refund", ref, "Refund of the payment", refunded, 0)


def _notes(db: Session, group: BillGroup, start: dt.date, end: dt.date) -> Iterator[_Entry]:
    query = (
        select(
            CreditNote.id,
            CreditNote.issue_date,
            CreditNote.number,
            CreditNote.reason,
            CreditNote.amount_minor,
        )
        .where(
            CreditNote.bill_group_id == group.id,
            CreditNote.voided_at.is_(None),
            CreditNote.issue_date >= start,
            CreditNote.issue_date <= end,
        )
        .order_by(CreditNote.issue_date, CreditNote.id)
    )
    for id_, day, number, reason, amount in db.execute(query):
        first_line = (reason or "").strip().splitlines()[:1]
        yield (
            day,
            1,
            id_,
            "credit_note",
            number,
            first_line[0] if first_line else "Credit note",
            0,
            amount,
        )


def statement(
    db: Session,
    group: BillGroup,
    date_from: dt.date,
    date_to: dt.date,
    today: dt.date | None = None,
) -> Statement:
    """The statement for the days date_from to date_to, both included (`today`: the
    portal's today, which spares the aging its look-back for a period that ends now)."""
    check_period(date_from, date_to)
    opening = opening_balance(db, group, date_from)
    balance = opening
    lines: list[Line] = []
    charges = credits = 0
    merged = heapq.merge(
        _invoices(db, group, date_from, date_to),
        _notes(db, group, date_from, date_to),
        _payments(db, group, date_from, date_to),
        # Each query is in order already; by day, then invoices, credit notes, payments
        # (merge is stable: a refund stays right after its payment).
        key=lambda entry: entry[:2],
    )
    for day, _order, _id, kind, reference, description, charge, credit in merged:
        balance += charge - credit
        charges += charge
        credits += credit
        lines.append(Line(day, kind, reference, description, charge, credit, balance))
    return Statement(
        group,
        date_from,
        date_to,
        opening,
        lines,
        balance,
        aging(db, group, date_to, today),
        charges,
        credits,
        group.currency,
    )


KIND_LABELS = {
    "invoice": "Invoice",
    "payment": "Payment",
    "refund": "Refund",
    "credit_note": "Credit note",
}
CSV_COLUMNS = ["Date", "Type", "Reference", "Description", "Charges", "Credits", "Balance"]


def csv_rows(found: Statement) -> Iterator[str]:
    """The statement as CSV: the opening balance, each line, the closing balance, then
    the aging buckets; every text cell formula-safe (portal.csvexport)."""
    currency = found.currency

    def money(minor: int) -> Any:
        return to_decimal(minor, currency)

    def rows() -> Iterator[list[object]]:
        before = found.date_from - dt.timedelta(days=1)
        yield [before.isoformat(), "Opening balance", "", "", "", "", money(found.opening_minor)]
        for line in found.lines:
            yield [
                line.day.isoformat(),
                KIND_LABELS[line.kind],
                line.reference,
                line.description,
                money(line.charge_minor) if line.charge_minor else "",
                money(line.credit_minor) if line.credit_minor else "",
                money(line.balance_minor),
            ]
        yield [
            found.date_to.isoformat(),
            "Closing balance",
            "",
            "",
            "",
            "",
            money(found.closing_minor),
        ]
        for label, amount in found.aging:
            yield [
                found.date_to.isoformat(),
                "Aging",
                label,
                "Open invoices",
                "",
                "",
                money(amount),
            ]

    return csvexport.stream(CSV_COLUMNS, rows())
