"""What the portal shows of a bill group: summary figures and invoice queries.

Every query takes the bill group and filters by it; nothing here reads another group.
Drafts are the seller's business and never shown. Page queries are a fixed number of
statements whatever the number of invoices (the list is one indexed, limited query).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

from sqlalchemy import Select, and_, bindparam, func, select
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.sql import ColumnElement

from portal import credits, csvexport
from portal.models import (
    BillGroup,
    DisplayStatus,
    Dispute,
    DisputeState,
    Invoice,
    InvoiceStatus,
    PaymentApplication,
    Subscription,
    SubscriptionItem,
)
from portal.money import to_decimal
from portal.paging import Page, clamp

PER_PAGE = 25


@dataclass(frozen=True)
class Summary:
    outstanding_minor: int  # what the open invoices still owe
    overdue_minor: int
    overdue_count: int
    recent: list[Invoice]
    # What is left of credit notes plus unapplied payments (portal.credits).
    credit_minor: int = 0
    # Questions and disputes waiting for the billing team's answer (portal.disputes).
    open_disputes: int = 0

    @property
    def balance_minor(self) -> int:
        """What the customer owes, credit taken off (negative: in credit)."""
        return self.outstanding_minor - self.credit_minor


def summary(db: Session, group: BillGroup, today: dt.date, recent: int = 5) -> Summary:
    outstanding, overdue, overdue_count, notes, payments, disputed = db.execute(
        _totals_statement(), {"group_id": group.id, "today": today}
    ).one()
    latest = db.scalars(
        _filtered_statement(InvoiceShape()).limit(recent), {"group_id": group.id}
    ).all()
    return Summary(
        int(outstanding),
        int(overdue),
        int(overdue_count),
        list(latest),
        int(notes) + int(payments),
        int(disputed),
    )


# Statements every page view runs are built once, with their values as bound parameters:
# putting a select together (and the balance's CASE expression) costs more than
# compiling it, which SQLAlchemy caches anyway.
@cache
def _totals_statement() -> Select[int, int, int, int, int, int]:
    """One statement: the open invoices' balance and overdue part, and (as scalar
    subqueries on their own indexes) the credit left on credit notes and payments and
    the questions and disputes still open."""
    overdue = Invoice.due_date < bindparam("today")
    group_id: Any = bindparam("group_id")
    return select(
        func.coalesce(func.sum(Invoice.balance_minor), 0),
        func.coalesce(func.sum(Invoice.balance_minor).filter(overdue), 0),
        func.count().filter(overdue),
        credits.credit_notes_total(group_id),
        credits.unapplied_payments_total(group_id),
        select(func.count())
        .select_from(Dispute)
        .where(Dispute.bill_group_id == group_id, Dispute.state == DisputeState.OPEN)
        .scalar_subquery(),
    ).where(Invoice.bill_group_id == bindparam("group_id"), Invoice.status == InvoiceStatus.OPEN)


@dataclass(frozen=True)
class InvoiceFilter:
    status: DisplayStatus | None = None
    issued_from: dt.date | None = None
    issued_to: dt.date | None = None
    number: str | None = None

    def query_args(self) -> dict[str, str]:
        """The filter as URL query arguments (for pagination and CSV links)."""
        args = {
            "status": self.status.value if self.status else "",
            "from": self.issued_from.isoformat() if self.issued_from else "",
            "to": self.issued_to.isoformat() if self.issued_to else "",
            "number": self.number or "",
        }
        return {key: value for key, value in args.items() if value}

    def shape(self) -> InvoiceShape:
        return InvoiceShape(
            self.status, self.issued_from is not None, self.issued_to is not None, bool(self.number)
        )

    def params(self, group: BillGroup, today: dt.date) -> dict[str, object]:
        """The values for the bound parameters of `_filtered_statement(self.shape())`."""
        values: dict[str, object] = {"group_id": group.id, "today": today}
        values |= {"issued_from": self.issued_from, "issued_to": self.issued_to}
        if self.number:
            escaped = self.number.lower()
            for special in ("/", "%", "_"):
                escaped = escaped.replace(special, "/" + special)
            values["number"] = f"%{escaped}%"
        return values


@dataclass(frozen=True)
class InvoiceShape:
    """Which filters are set (not their values): one statement is built per shape."""

    status: DisplayStatus | None = None
    issued_from: bool = False
    issued_to: bool = False
    number: bool = False


def _status_condition(status: DisplayStatus) -> ColumnElement[bool]:
    if status == DisplayStatus.OVERDUE:
        return and_(Invoice.status == InvoiceStatus.OPEN, Invoice.due_date < bindparam("today"))
    if status == DisplayStatus.OPEN:
        return and_(Invoice.status == InvoiceStatus.OPEN, Invoice.due_date >= bindparam("today"))
    return Invoice.status == InvoiceStatus(status.value)


@lru_cache(maxsize=64)
def _filtered_statement(shape: InvoiceShape) -> Select[Invoice]:
    """A bill group's visible invoices with this shape of filter, newest first. Bound
    parameters: group_id, and today, issued_from, issued_to, number as the shape needs
    (`InvoiceFilter.params`)."""
    query = select(Invoice).where(
        Invoice.bill_group_id == bindparam("group_id"), Invoice.status != InvoiceStatus.DRAFT
    )
    if shape.status:
        query = query.where(_status_condition(shape.status))
    if shape.issued_from:
        query = query.where(Invoice.issue_date >= bindparam("issued_from"))
    if shape.issued_to:
        query = query.where(Invoice.issue_date <= bindparam("issued_to"))
    if shape.number:
        query = query.where(func.lower(Invoice.number).like(bindparam("number"), escape="/"))
    return query.order_by(Invoice.issue_date.desc(), Invoice.id.desc())


@lru_cache(maxsize=64)
def _count_statement(shape: InvoiceShape) -> Select[int]:
    listed = _filtered_statement(shape).order_by(None).subquery()
    return select(func.count()).select_from(listed)


def invoice_page(
    db: Session,
    group: BillGroup,
    flt: InvoiceFilter,
    today: dt.date,
    page: int = 1,
    per_page: int = PER_PAGE,
) -> Page[Invoice]:
    """One page of the filtered list, newest first: two statements, always."""
    shape, params = flt.shape(), flt.params(group, today)
    total = db.scalar(_count_statement(shape), params) or 0
    page = clamp(page, total, per_page)
    listed = _filtered_statement(shape).limit(per_page).offset((page - 1) * per_page)
    invoices = db.scalars(listed, params).all()
    return Page(list(invoices), total, page, per_page)


def find_invoice(db: Session, group: BillGroup, invoice_id: int) -> Invoice | None:
    """One invoice of this bill group with its lines and payments, or None."""
    return db.scalar(
        _filtered_statement(InvoiceShape())
        .where(Invoice.id == invoice_id)
        .options(
            selectinload(Invoice.lines),
            selectinload(Invoice.applications).selectinload(PaymentApplication.payment),
        ),
        {"group_id": group.id},
    )


CSV_COLUMNS = ["Invoice", "Issued", "Due", "Status", "Currency", "Total", "Paid", "Balance"]


def invoices_csv(
    db: Session, group: BillGroup, flt: InvoiceFilter, today: dt.date
) -> Iterator[str]:
    """The whole filtered list as CSV, streamed in batches."""
    query = _filtered_statement(flt.shape()).execution_options(yield_per=500)
    params = flt.params(group, today)

    def rows() -> Iterator[list[object]]:
        # Closed even when the download is dropped half-way (a server-side cursor otherwise).
        with db.scalars(query, params) as invoices:
            for invoice in invoices:
                currency = invoice.currency
                yield [
                    invoice.number,
                    invoice.issue_date.isoformat(),
                    invoice.due_date.isoformat(),
                    invoice.display_status(today).value,
                    currency,
                    to_decimal(invoice.total_minor, currency),
                    to_decimal(invoice.amount_paid_minor, currency),
                    to_decimal(invoice.balance_minor, currency),
                ]

    return csvexport.stream(CSV_COLUMNS, rows())


def subscriptions(db: Session, group: BillGroup) -> list[Subscription]:
    return list(
        db.scalars(
            select(Subscription)
            .where(Subscription.bill_group_id == group.id)
            .options(
                selectinload(Subscription.items).selectinload(SubscriptionItem.product),
                selectinload(Subscription.plan),
                selectinload(Subscription.allowed_plans),
            )
            .order_by(Subscription.status, Subscription.start_date.desc())
        )
    )
