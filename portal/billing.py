"""What the portal shows of a bill group: summary figures and invoice queries.

Every query takes the bill group and filters by it; nothing here reads another group.
Drafts are the seller's business and never shown. Page queries are a fixed number of
statements whatever the number of invoices (the list is one indexed, limited query).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import Select, and_, func, select
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.sql import ColumnElement

from portal import csvexport
from portal.models import (
    BillGroup,
    DisplayStatus,
    Invoice,
    InvoiceStatus,
    PaymentApplication,
    Subscription,
    SubscriptionItem,
)
from portal.money import to_decimal

PER_PAGE = 25


@dataclass(frozen=True)
class Summary:
    outstanding_minor: int
    overdue_minor: int
    overdue_count: int
    recent: list[Invoice]


def summary(db: Session, group: BillGroup, today: dt.date, recent: int = 5) -> Summary:
    overdue = Invoice.due_date < today
    row = db.execute(
        select(
            func.coalesce(func.sum(Invoice.balance_minor), 0),
            func.coalesce(func.sum(Invoice.balance_minor).filter(overdue), 0),
            func.count().filter(overdue),
        ).where(Invoice.bill_group_id == group.id, Invoice.status == InvoiceStatus.OPEN)
    ).one()
    latest = db.scalars(
        _visible(group).order_by(Invoice.issue_date.desc(), Invoice.id.desc()).limit(recent)
    ).all()
    return Summary(int(row[0]), int(row[1]), int(row[2]), list(latest))


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


def _status_condition(status: DisplayStatus, today: dt.date) -> ColumnElement[bool]:
    if status == DisplayStatus.OVERDUE:
        return and_(Invoice.status == InvoiceStatus.OPEN, Invoice.due_date < today)
    if status == DisplayStatus.OPEN:
        return and_(Invoice.status == InvoiceStatus.OPEN, Invoice.due_date >= today)
    return Invoice.status == InvoiceStatus(status.value)


def _visible(group: BillGroup) -> Select[tuple[Invoice]]:
    return select(Invoice).where(
        Invoice.bill_group_id == group.id, Invoice.status != InvoiceStatus.DRAFT
    )


def _filtered(group: BillGroup, flt: InvoiceFilter, today: dt.date) -> Select[tuple[Invoice]]:
    query = _visible(group)
    if flt.status:
        query = query.where(_status_condition(flt.status, today))
    if flt.issued_from:
        query = query.where(Invoice.issue_date >= flt.issued_from)
    if flt.issued_to:
        query = query.where(Invoice.issue_date <= flt.issued_to)
    if flt.number:
        query = query.where(
            func.lower(Invoice.number).contains(flt.number.lower(), autoescape=True)
        )
    return query


@dataclass(frozen=True)
class Page:
    invoices: list[Invoice]
    total: int
    number: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def first_item(self) -> int:
        return 0 if not self.total else (self.number - 1) * self.per_page + 1

    @property
    def last_item(self) -> int:
        return min(self.total, self.number * self.per_page)


def invoice_page(
    db: Session,
    group: BillGroup,
    flt: InvoiceFilter,
    today: dt.date,
    page: int = 1,
    per_page: int = PER_PAGE,
) -> Page:
    """One page of the filtered list, newest first: two statements, always."""
    query = _filtered(group, flt, today)
    total = db.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    page = min(max(page, 1), max(1, -(-total // per_page)))
    invoices = db.scalars(
        query.order_by(Invoice.issue_date.desc(), Invoice.id.desc())
        .limit(per_page)
        .offset((page - 1) * per_page)
    ).all()
    return Page(list(invoices), total, page, per_page)


def find_invoice(db: Session, group: BillGroup, invoice_id: int) -> Invoice | None:
    """One invoice of this bill group with its lines and payments, or None."""
    return db.scalar(
        _visible(group)
        .where(Invoice.id == invoice_id)
        .options(
            selectinload(Invoice.lines),
            selectinload(Invoice.applications).selectinload(PaymentApplication.payment),
        )
    )


CSV_COLUMNS = ["Invoice", "Issued", "Due", "Status", "Currency", "Total", "Paid", "Balance"]


def invoices_csv(
    db: Session, group: BillGroup, flt: InvoiceFilter, today: dt.date
) -> Iterator[str]:
    """The whole filtered list as CSV, streamed in batches."""
    query = _filtered(group, flt, today).order_by(Invoice.issue_date.desc(), Invoice.id.desc())

    def rows() -> Iterator[list[object]]:
        # Closed even when the download is dropped half-way (a server-side cursor otherwise).
        with db.scalars(query.execution_options(yield_per=500)) as invoices:
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
            .options(selectinload(Subscription.items).selectinload(SubscriptionItem.product))
            .order_by(Subscription.status, Subscription.start_date.desc())
        )
    )
