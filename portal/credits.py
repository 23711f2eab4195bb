"""A bill group's credit: what is left of its credit notes, and the unapplied part of
its payments (a succeeded payment whose applications add up to less than its amount,
less what was refunded). Both count against the balance and, where the entity allows
it, can be applied to open invoices (portal.actions.credits).

Every query takes the bill group and filters by it; each is one statement.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from sqlalchemy import Select, bindparam, case, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from portal.models import (
    BillGroup,
    CreditNote,
    Payment,
    PaymentApplication,
    PaymentStatus,
)

SourceKind = Literal["credit_note", "payment"]


def note_remaining() -> ColumnElement[int]:
    """What is left of a credit note: nothing once it is void."""
    return case(
        (CreditNote.voided_at.is_not(None), 0),
        else_=CreditNote.amount_minor - CreditNote.amount_applied_minor,
    )


def _payment_remainders(group_id: Any) -> Any:
    """(payment id, unapplied remainder) of each succeeded payment of the group."""
    applied = (
        select(func.coalesce(func.sum(PaymentApplication.amount_minor), 0))
        .where(PaymentApplication.payment_id == Payment.id)
        .correlate(Payment)
        .scalar_subquery()
    )
    remainder = Payment.amount_minor - Payment.refunded_minor - applied
    return (
        select(Payment.id.label("id"), remainder.label("remaining"))
        .where(Payment.bill_group_id == group_id, Payment.status == PaymentStatus.SUCCEEDED)
        .subquery()
    )


def unapplied_payments_total(group_id: Any) -> ColumnElement[int]:
    """A scalar subquery: the group's unapplied payments, summed (never below zero each)."""
    rows = _payment_remainders(group_id)
    return (
        select(
            func.coalesce(
                func.sum(case((rows.c.remaining > 0, rows.c.remaining), else_=0)),
                0,
            )
        )
        .select_from(rows)
        .scalar_subquery()
    )


def credit_notes_total(group_id: Any) -> ColumnElement[int]:
    """A scalar subquery: what is left of the group's credit notes, summed."""
    return (
        select(func.coalesce(func.sum(note_remaining()), 0))
        .where(CreditNote.bill_group_id == group_id)
        .scalar_subquery()
    )


@dataclass(frozen=True)
class Credit:
    """One source of credit the customer may see and apply."""

    kind: SourceKind
    id: int
    label: str  # "Credit note CN-7", "Payment of 3 Nov 2026 (ref …)"
    date: Any  # dt.date for both
    amount_minor: int
    remaining_minor: int
    reason: str | None = None
    voided: bool = False

    @property
    def token(self) -> str:
        """How a form names it: credit_note:12, payment:5."""
        return f"{self.kind}:{self.id}"


@cache
def _notes_statement() -> Select[Any]:
    return (
        select(CreditNote)
        .where(CreditNote.bill_group_id == bindparam("group_id"))
        .order_by(CreditNote.issue_date, CreditNote.id)
    )


@cache
def _unapplied_statement() -> Select[Any]:
    rows = _payment_remainders(bindparam("group_id"))
    return (
        select(Payment, rows.c.remaining)
        .join(rows, rows.c.id == Payment.id)
        .where(rows.c.remaining > 0)
        .order_by(Payment.received_at, Payment.id)
    )


def credit_notes(db: Session, group: BillGroup) -> list[CreditNote]:
    return list(db.scalars(_notes_statement(), {"group_id": group.id}))


def unapplied_payments(db: Session, group: BillGroup) -> list[tuple[Payment, int]]:
    """Each succeeded payment with something left to apply, and how much, oldest first."""
    return [
        (row[0], int(row[1])) for row in db.execute(_unapplied_statement(), {"group_id": group.id})
    ]


def available(db: Session, group: BillGroup) -> list[Credit]:
    """Every credit with something left, oldest first: credit notes, then payments."""
    found = [
        Credit(
            "credit_note",
            note.id,
            f"Credit note {note.number}",
            note.issue_date,
            note.amount_minor,
            note.remaining_minor,
            note.reason,
        )
        for note in credit_notes(db, group)
        if note.remaining_minor > 0
    ]
    for payment, remaining in unapplied_payments(db, group):
        found.append(
            Credit(
                "payment",
                payment.id,
                payment_label(payment),
                payment.received_at.date(),
                payment.amount_minor,
                remaining,
            )
        )
    return found


def payment_label(payment: Payment) -> str:
    reference = f" (ref {payment.reference})" if payment.reference else ""
    return f"Payment of {payment.received_at.date().isoformat()}{reference}"
