"""Paying from the portal: a payment attempt (what the review page offered, keyed for
idempotency), and credit notes the billing system issues and how they were applied.

A customer's payment goes through three rows. The review page makes a `PaymentAttempt`
in state REVIEW with the amount, the payment method and its `PaymentAttemptLine`s (what
goes to which invoice), and puts the attempt's random `key` in the form. The confirm
claims the attempt (REVIEW -> CHARGING, one winner however many confirms race), charges
the gateway with that key as its idempotency key, and records the outcome on the attempt
and as a `Payment` (source PORTAL) whose applications update the invoices when it
succeeds. A retried confirm finds the attempt already claimed and shows its outcome.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import TYPE_CHECKING

from sqlalchemy import (
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.db import Base, UTCDateTime, utcnow
from portal.models._base import (
    BigId,
    ExternalIdMixin,
    IdMixin,
    Minor,
    TimestampMixin,
    currency_column,
    str_enum,
)
from portal.models.changes import ChangeMixin

if TYPE_CHECKING:
    from portal.models.account import BillGroup
    from portal.models.billing import Invoice, Payment
    from portal.models.payment_method import PaymentMethod


class AttemptState(enum.StrEnum):
    REVIEW = "review"  # shown on the review page, not yet confirmed
    CHARGING = "charging"  # claimed by one confirm; the gateway is being asked
    REQUIRES_ACTION = "requires_action"  # the card's 3-D Secure step is pending
    PROCESSING = "processing"  # the gateway accepted it and will confirm later
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # declined or refused: nothing applied
    EXPIRED = "expired"  # the review page went stale before it was confirmed


# States an attempt never leaves.
FINAL_STATES = frozenset({AttemptState.SUCCEEDED, AttemptState.FAILED, AttemptState.EXPIRED})


class PaymentSource(enum.StrEnum):
    BILLING_SYSTEM = "billing_system"  # recorded by the billing system (API, import)
    PORTAL = "portal"  # paid by the customer in the portal
    AUTOPAY = "autopay"  # charged automatically to the default method


class PaymentAttempt(IdMixin, TimestampMixin, Base):
    __tablename__ = "payment_attempts"
    __table_args__ = (
        CheckConstraint("amount_minor > 0", name="amount"),
        Index("ix_payment_attempts_bill_group_created", "bill_group_id", "created_at"),
        Index("ix_payment_attempts_state", "state", "updated_at"),
    )

    bill_group_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("bill_groups.id", ondelete="CASCADE"), nullable=False
    )
    # Random (secrets.token_urlsafe(32)), in the review form and sent to the gateway as
    # the idempotency key: the same key always means the same charge.
    key: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    state: Mapped[AttemptState] = mapped_column(
        str_enum(AttemptState, "payment_attempt_state"), nullable=False, default=AttemptState.REVIEW
    )
    amount_minor: Mapped[int] = mapped_column(Minor, nullable=False)
    currency: Mapped[str] = currency_column()
    payment_method_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("payment_methods.id", ondelete="SET NULL"), index=True
    )
    # The verified address of the customer who opened the review page.
    created_by: Mapped[str] = mapped_column(String(254), nullable=False)
    # The review page is stale after this; confirming then charges nothing.
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    claimed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    gateway: Mapped[str | None] = mapped_column(String(40))
    # The gateway's id for the charge (a PaymentIntent id, a sandbox charge id).
    gateway_reference: Mapped[str | None] = mapped_column(String(100))
    # In plain words for the customer: why it was declined or refused.
    failure_message: Mapped[str | None] = mapped_column(String(300))
    # The payment recorded for this attempt once the gateway has answered.
    payment_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("payments.id", ondelete="SET NULL"), unique=True
    )

    bill_group: Mapped[BillGroup] = relationship()
    payment_method: Mapped[PaymentMethod | None] = relationship()
    payment: Mapped[Payment | None] = relationship()
    lines: Mapped[list[PaymentAttemptLine]] = relationship(
        back_populates="attempt", cascade="all, delete-orphan", order_by="PaymentAttemptLine.id"
    )

    def stale(self, now: dt.datetime | None = None) -> bool:
        return self.state == AttemptState.REVIEW and (now or utcnow()) >= self.expires_at


class PaymentAttemptLine(IdMixin, Base):
    """The part of an attempt's amount meant for one invoice."""

    __tablename__ = "payment_attempt_lines"
    __table_args__ = (
        UniqueConstraint("attempt_id", "invoice_id"),
        CheckConstraint("amount_minor > 0", name="amount"),
    )

    attempt_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("payment_attempts.id", ondelete="CASCADE"), nullable=False
    )
    invoice_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("invoices.id", ondelete="CASCADE"), nullable=False, index=True
    )
    amount_minor: Mapped[int] = mapped_column(Minor, nullable=False)

    attempt: Mapped[PaymentAttempt] = relationship(back_populates="lines")
    invoice: Mapped[Invoice] = relationship()


class CreditNote(IdMixin, TimestampMixin, ChangeMixin, ExternalIdMixin, Base):
    """A credit the billing system issued to the bill group; what is left of it counts
    against the balance and may be applied to open invoices."""

    __tablename__ = "credit_notes"
    __table_args__ = (
        UniqueConstraint("bill_group_id", "number"),
        CheckConstraint("amount_minor > 0", name="amount"),
        CheckConstraint(
            "amount_applied_minor >= 0 AND amount_applied_minor <= amount_minor", name="applied"
        ),
        Index("ix_credit_notes_bill_group_issued", "bill_group_id", "issue_date", "id"),
        Index("ix_credit_notes_updated", "updated_at", "id"),
    )

    bill_group_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("bill_groups.id", ondelete="CASCADE"), nullable=False
    )
    number: Mapped[str] = mapped_column(String(40), nullable=False)
    currency: Mapped[str] = currency_column()
    issue_date: Mapped[dt.date] = mapped_column(Date, nullable=False)
    amount_minor: Mapped[int] = mapped_column(Minor, nullable=False)
    amount_applied_minor: Mapped[int] = mapped_column(Minor, nullable=False, default=0)
    reason: Mapped[str | None] = mapped_column(Text)
    voided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    bill_group: Mapped[BillGroup] = relationship()
    applications: Mapped[list[CreditApplication]] = relationship(
        back_populates="credit_note", cascade="all, delete-orphan", order_by="CreditApplication.id"
    )

    @property
    def remaining_minor(self) -> int:
        return 0 if self.voided_at is not None else self.amount_minor - self.amount_applied_minor


class CreditApplication(IdMixin, Base):
    """The part of a credit note applied to one invoice (Invoice.amount_credited_minor
    is the sum of these)."""

    __tablename__ = "credit_applications"
    __table_args__ = (CheckConstraint("amount_minor > 0", name="amount"),)

    credit_note_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("credit_notes.id", ondelete="CASCADE"), nullable=False, index=True
    )
    invoice_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("invoices.id", ondelete="CASCADE"), nullable=False, index=True
    )
    amount_minor: Mapped[int] = mapped_column(Minor, nullable=False)
    applied_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    # Who applied it: a customer's address, or "api:<key>" / "import:<label>".
    applied_by: Mapped[str] = mapped_column(String(254), nullable=False)

    credit_note: Mapped[CreditNote] = relationship(back_populates="applications")
    invoice: Mapped[Invoice] = relationship()


class SandboxCharge(IdMixin, Base):
    """The sandbox gateway's own record of a charge, as a processor keeps one: what lets
    it answer a repeated idempotency key with the first outcome, finish a 3-D Secure
    step, settle a processing charge later and report refunds. Not used by real
    gateways."""

    __tablename__ = "sandbox_charges"
    __table_args__ = (CheckConstraint("amount_minor > 0", name="amount"),)

    reference: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    # succeeded, declined, requires_action, processing (portal.payments.ChargeStatus)
    status: Mapped[str] = mapped_column(String(24), nullable=False)
    amount_minor: Mapped[int] = mapped_column(Minor, nullable=False)
    currency: Mapped[str] = currency_column()
    failure_message: Mapped[str | None] = mapped_column(String(300))
    failure_code: Mapped[str | None] = mapped_column(String(40))
    refunded_minor: Mapped[int] = mapped_column(Minor, nullable=False, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    # A processing charge succeeds when it is looked at after this.
    settles_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class GatewayEventSeen(IdMixin, Base):
    """A gateway webhook already applied: the same event id is never applied twice."""

    __tablename__ = "gateway_events"
    __table_args__ = (UniqueConstraint("gateway", "event_id"),)

    gateway: Mapped[str] = mapped_column(String(40), nullable=False)
    event_id: Mapped[str] = mapped_column(String(100), nullable=False)
    kind: Mapped[str] = mapped_column(String(60), nullable=False)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class ReceiptDue(Base):
    """A succeeded payment whose receipt email is still to be made: the worker renders the
    PDF and queues the emails (portal.receipts.send_due), so the customer's confirm does
    not wait for reportlab, and a receipt that cannot be rendered never undoes a charge."""

    __tablename__ = "receipts_due"

    payment_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("payments.id", ondelete="CASCADE"), primary_key=True
    )
    queued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


__all__ = [
    "GatewayEventSeen",
    "ReceiptDue",
    "SandboxCharge",
    "FINAL_STATES",
    "AttemptState",
    "CreditApplication",
    "CreditNote",
    "PaymentAttempt",
    "PaymentAttemptLine",
    "PaymentSource",
]
