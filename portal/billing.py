"""What the portal shows of a bill group: summary figures and invoice queries.

Every query takes the bill group and filters by it; nothing here reads another group.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.models import BillGroup, Invoice, InvoiceStatus


@dataclass(frozen=True)
class Summary:
    outstanding_minor: int
    overdue_minor: int
    overdue_count: int
    recent: list[Invoice]


def summary(db: Session, group: BillGroup, today: dt.date, recent: int = 5) -> Summary:
    open_invoices = (Invoice.bill_group_id == group.id, Invoice.status == InvoiceStatus.OPEN)
    overdue = Invoice.due_date < today
    row = db.execute(
        select(
            func.coalesce(func.sum(Invoice.balance_minor), 0),
            func.coalesce(func.sum(Invoice.balance_minor).filter(overdue), 0),
            func.count().filter(overdue),
        ).where(*open_invoices)
    ).one()
    latest = db.scalars(
        select(Invoice)
        .where(Invoice.bill_group_id == group.id, Invoice.status != InvoiceStatus.DRAFT)
        .order_by(Invoice.issue_date.desc(), Invoice.id.desc())
        .limit(recent)
    ).all()
    return Summary(int(row[0]), int(row[1]), int(row[2]), list(latest))
