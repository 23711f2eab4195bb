"""Applying credit to an open invoice: what is left of a credit note (a
CreditApplication, counted in Invoice.amount_credited_minor) or the unapplied part of a
payment (a PaymentApplication, counted in Invoice.amount_paid_minor).

Everything is checked again under the bill group's lock, on rows read after it was
taken: however many identical requests race, the credit and the invoice's balance are
each spent once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal import audit, clock, credits, events, notices
from portal.actions import Actor, Forbidden, Invalid, NotFound, seller_settings
from portal.locks import lock_bill_group
from portal.models import (
    BillGroup,
    CreditApplication,
    CreditNote,
    Entity,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentApplication,
    PaymentStatus,
)
from portal.money import format_money
from portal.sync.schemas import MAX_MINOR


@dataclass(frozen=True)
class Source:
    """Where the credit comes from: a credit note or a payment, by id."""

    kind: credits.SourceKind
    id: int

    @classmethod
    def parse(cls, token: str) -> Source:
        """`credit_note:12` or `payment:5`, as the customer's form sends it."""
        kind, _, number = (token or "").partition(":")
        if kind not in ("credit_note", "payment") or not number.isdigit() or len(number) > 18:
            raise Invalid("Choose a credit to apply.", "source")
        return cls(kind, int(number))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Applied:
    invoice: Invoice
    amount_minor: int
    credit_note: CreditNote | None
    payment: Payment | None


def apply_credit(
    db: Session,
    actor: Actor,
    group: BillGroup,
    *,
    source: Source,
    invoice_id: int | None,
    amount_minor: int,
) -> Applied:
    """Apply `amount_minor` of the credit `source` to the bill group's open invoice
    `invoice_id` (None: the oldest open one). Refused unless the entity allows customers
    to apply credit, the credit and the invoice are this group's, the invoice is open,
    and the amount is at most both what is left of the credit and the invoice's balance."""
    if actor.kind == "customer" and not group.entity.allow_credit_application:
        raise Forbidden("Credit can't be applied in the portal for this account.")
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        raise Invalid("Enter an amount.", "amount")
    if amount_minor <= 0:
        raise Invalid("Enter an amount greater than zero.", "amount")
    if amount_minor > MAX_MINOR:
        raise Invalid("That amount is more than any credit.", "amount")
    lock_bill_group(db, group.id)
    fresh: dict[str, Any] = {"populate_existing": True}
    note: CreditNote | None = None
    payment: Payment | None = None
    if source.kind == "credit_note":
        note = db.scalar(
            select(CreditNote)
            .where(CreditNote.id == source.id, CreditNote.bill_group_id == group.id)
            .execution_options(**fresh)
        )
        if note is None:
            raise NotFound("That credit note is not one of this account's.", "source")
        remaining = note.remaining_minor
        currency = note.currency
        what = f"credit note {note.number}"
    else:
        payment = db.scalar(
            select(Payment)
            .where(Payment.id == source.id, Payment.bill_group_id == group.id)
            .execution_options(**fresh)
        )
        if payment is None:
            raise NotFound("That payment is not one of this account's.", "source")
        applied = db.scalar(
            select(func.coalesce(func.sum(PaymentApplication.amount_minor), 0)).where(
                PaymentApplication.payment_id == payment.id
            )
        )
        remaining = 0
        if payment.status == PaymentStatus.SUCCEEDED:
            remaining = payment.amount_minor - payment.refunded_minor - int(applied or 0)
        currency = payment.currency
        what = credits.payment_label(payment).lower()
    if remaining <= 0:
        raise Invalid(f"Nothing is left to apply of {what}.", "source")
    query = select(Invoice).where(
        Invoice.bill_group_id == group.id, Invoice.status == InvoiceStatus.OPEN
    )
    if invoice_id is None:
        query = query.order_by(Invoice.due_date, Invoice.issue_date, Invoice.id).limit(1)
    else:
        query = query.where(Invoice.id == invoice_id)
    invoice = db.scalar(query.execution_options(**fresh))
    if invoice is None:
        raise Invalid(
            "That invoice is not open." if invoice_id is not None else "No invoice is open.",
            "invoice",
        )
    if currency != invoice.currency:
        raise Invalid(
            f"The credit is in {currency} and the invoice in {invoice.currency}.", "source"
        )
    if amount_minor > remaining:
        raise Invalid(f"Only {format_money(remaining, currency)} is left of {what}.", "amount")
    if amount_minor > invoice.balance_minor:
        raise Invalid(
            f"Invoice {invoice.number} has {format_money(invoice.balance_minor, currency)} "
            "left to pay.",
            "amount",
        )
    if note is not None:
        db.add(
            CreditApplication(
                credit_note_id=note.id,
                invoice_id=invoice.id,
                amount_minor=amount_minor,
                applied_by=actor.label,
                applied_at=clock.now(),
            )
        )
        note.amount_applied_minor += amount_minor
        invoice.amount_credited_minor += amount_minor
    else:
        assert payment is not None
        existing = db.scalar(
            select(PaymentApplication).where(
                PaymentApplication.payment_id == payment.id,
                PaymentApplication.invoice_id == invoice.id,
            )
        )
        if existing is None:
            db.add(
                PaymentApplication(
                    payment_id=payment.id,
                    invoice_id=invoice.id,
                    amount_minor=amount_minor,
                    applied_by=actor.label,
                )
            )
        else:
            existing.amount_minor += amount_minor
            existing.applied_by = actor.label
        payment.updated_at = clock.now()  # its applications changed: in the feed again
        invoice.amount_paid_minor += amount_minor
    if invoice.balance_minor == 0:
        invoice.status = InvoiceStatus.PAID
    db.flush()
    audit.record(
        db,
        "credit.apply",
        "applied",
        **actor.audit(),
        bill_group_id=group.id,
        detail=(
            f"{format_money(amount_minor, currency)} of {what} to invoice {invoice.number}"
            f" (invoice id {invoice.id})"
        )[:500],
    )
    events.credit_applied(
        db,
        group,
        credit_note=note,
        payment=payment,
        invoice=invoice,
        amount_minor=amount_minor,
        today=clock.today(),
        actor=actor.event(),
    )
    if actor.kind == "customer":
        notices.details_changed(
            db,
            group,
            actor,
            "credits",
            [
                (
                    "credit applied",
                    None,
                    f"{format_money(amount_minor, currency)} to {invoice.number}",
                )
            ],
            notices.recipients(group),
        )
    return Applied(invoice, amount_minor, note, payment)


def set_payment_settings(
    db: Session,
    actor: Actor,
    entity: Entity,
    *,
    allow_partial_payments: bool,
    min_partial_payment_minor: int,
    allow_credit_application: bool,
) -> dict[str, list[Any]]:
    """A seller's settings for paying in the portal (staff); the changes made, audited."""
    if (
        isinstance(min_partial_payment_minor, bool)
        or not 0 <= min_partial_payment_minor <= MAX_MINOR
    ):
        raise Invalid("Enter an amount of 0 or more.", "min_partial_payment")
    wanted = {
        "allow_partial_payments": bool(allow_partial_payments),
        "min_partial_payment_minor": min_partial_payment_minor,
        "allow_credit_application": bool(allow_credit_application),
    }
    return seller_settings.change(db, actor, entity, "entity.payment_settings", wanted)
