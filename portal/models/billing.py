"""What a bill group is billed for and what it has paid: products, subscriptions,
invoices with their lines, and payments applied to invoices."""

from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    case,
    false,
)
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.sql import ColumnElement

from portal.db import Base, UTCDateTime
from portal.models._base import (
    BigId,
    ExternalIdMixin,
    IdMixin,
    Minor,
    TimestampMixin,
    currency_column,
    str_enum,
)
from portal.models.account import BillingFrequency
from portal.models.changes import ChangeMixin
from portal.models.dispute import DisputeKind
from portal.models.paying import PaymentSource

if TYPE_CHECKING:
    from portal.models.account import BillGroup
    from portal.models.entity import Entity
    from portal.models.payment_method import PaymentMethod
    from portal.models.subscription_change import Plan


class SubscriptionStatus(enum.StrEnum):
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    PAUSED = "paused"
    CANCELLED = "cancelled"


class InvoiceStatus(enum.StrEnum):
    """Stored status. "Overdue" is not stored: it is an open invoice past its due date."""

    DRAFT = "draft"
    OPEN = "open"
    PAID = "paid"
    VOID = "void"


class DisplayStatus(enum.StrEnum):
    """What a customer sees on an invoice."""

    DRAFT = "draft"
    OPEN = "open"
    OVERDUE = "overdue"
    PAID = "paid"
    VOID = "void"


class PaymentStatus(enum.StrEnum):
    SUCCEEDED = "succeeded"
    PENDING = "pending"
    FAILED = "failed"
    REFUNDED = "refunded"


class Product(IdMixin, TimestampMixin, ChangeMixin, ExternalIdMixin, Base):
    __tablename__ = "products"

    entity_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("entities.id", ondelete="CASCADE"), nullable=False, index=True
    )
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    sku: Mapped[str | None] = mapped_column(String(64))

    entity: Mapped[Entity] = relationship()


def _allowed() -> Mapped[bool]:
    return mapped_column(Boolean, nullable=False, default=False, server_default=false())


class Subscription(IdMixin, TimestampMixin, ChangeMixin, ExternalIdMixin, Base):
    __tablename__ = "subscriptions"
    __table_args__ = (
        CheckConstraint("end_date IS NULL OR end_date >= start_date", name="dates"),
        CheckConstraint("quantity IS NULL OR quantity > 0", name="quantity"),
        CheckConstraint(
            "quantity_min IS NULL OR quantity_max IS NULL OR quantity_min <= quantity_max",
            name="quantity_range",
        ),
        CheckConstraint("quantity_min IS NULL OR quantity_min > 0", name="quantity_min"),
        # The reminder scan (portal.reminders): subscriptions renewing soon.
        Index("ix_subscriptions_status_renewal", "status", "renewal_date"),
    )

    bill_group_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("bill_groups.id", ondelete="CASCADE"), nullable=False, index=True
    )
    status: Mapped[SubscriptionStatus] = mapped_column(
        str_enum(SubscriptionStatus, "subscription_status"), nullable=False
    )
    period: Mapped[BillingFrequency] = mapped_column(
        str_enum(BillingFrequency, "subscription_period"), nullable=False
    )
    start_date: Mapped[dt.date] = mapped_column(Date, nullable=False)
    renewal_date: Mapped[dt.date | None] = mapped_column(Date)
    end_date: Mapped[dt.date | None] = mapped_column(Date)
    # The plan of the seller's catalogue it is on, and how many of it (seats, licences).
    plan_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("plans.id", ondelete="RESTRICT"), index=True
    )
    quantity: Mapped[int | None] = mapped_column(Integer)
    trial_end: Mapped[dt.date | None] = mapped_column(Date)
    # The changes the billing system allows the customer to ask for (portal.subscriptions).
    quantity_min: Mapped[int | None] = mapped_column(Integer)
    quantity_max: Mapped[int | None] = mapped_column(Integer)
    allow_cancel_now: Mapped[bool] = _allowed()
    allow_cancel_at_term_end: Mapped[bool] = _allowed()
    allow_pause: Mapped[bool] = _allowed()
    allow_resume: Mapped[bool] = _allowed()
    allow_convert_trial: Mapped[bool] = _allowed()
    allow_extend_trial: Mapped[bool] = _allowed()

    bill_group: Mapped[BillGroup] = relationship(back_populates="subscriptions")
    items: Mapped[list[SubscriptionItem]] = relationship(
        back_populates="subscription", cascade="all, delete-orphan", order_by="SubscriptionItem.id"
    )
    plan: Mapped[Plan | None] = relationship(foreign_keys=[plan_id])
    allowed_plans: Mapped[list[Plan]] = relationship(
        secondary="subscription_plan_options", order_by="Plan.id"
    )

    @property
    def amount_per_period_minor(self) -> int:
        return sum(item.amount_minor for item in self.items)


class SubscriptionItem(IdMixin, Base):
    __tablename__ = "subscription_items"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity"),
        CheckConstraint("unit_price_minor >= 0", name="unit_price"),
    )

    subscription_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("subscriptions.id", ondelete="CASCADE"), nullable=False, index=True
    )
    product_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("products.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    quantity: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    unit_price_minor: Mapped[int] = mapped_column(Minor, nullable=False)

    subscription: Mapped[Subscription] = relationship(back_populates="items")
    product: Mapped[Product] = relationship()

    @property
    def amount_minor(self) -> int:
        return self.quantity * self.unit_price_minor


class Invoice(IdMixin, TimestampMixin, ChangeMixin, ExternalIdMixin, Base):
    __tablename__ = "invoices"
    __table_args__ = (
        UniqueConstraint("entity_id", "number"),
        # The invoice belongs to its bill group's entity and is in its currency.
        ForeignKeyConstraint(
            ["bill_group_id", "entity_id", "currency"],
            ["bill_groups.id", "bill_groups.entity_id", "bill_groups.currency"],
            name="fk_invoices_bill_group",
            ondelete="CASCADE",
        ),
        # The portal's invoice list: one bill group, newest first, stable order.
        Index("ix_invoices_bill_group_issued", "bill_group_id", "issue_date", "id"),
        # Outstanding balance and overdue alerts: open invoices by due date.
        Index("ix_invoices_bill_group_status_due", "bill_group_id", "status", "due_date"),
        # The API feed's ?updated_since= (the feed itself is in change_seq order).
        Index("ix_invoices_updated", "updated_at", "id"),
        # The reminder scan (portal.reminders): one seller's open invoices by due date.
        Index("ix_invoices_entity_status_due", "entity_id", "status", "due_date"),
        CheckConstraint("due_date >= issue_date", name="dates"),
        CheckConstraint("subtotal_minor >= 0 AND tax_minor >= 0", name="amounts"),
        CheckConstraint("total_minor = subtotal_minor + tax_minor", name="total"),
        CheckConstraint("amount_paid_minor >= 0 AND amount_paid_minor <= total_minor", name="paid"),
        CheckConstraint(
            # Only where there is credit: an overpayment alone is ck_invoices_paid's to name.
            "amount_credited_minor = 0"
            " OR (amount_credited_minor > 0"
            " AND amount_paid_minor + amount_credited_minor <= total_minor)",
            name="credited",
        ),
        CheckConstraint(
            "status <> 'paid' OR amount_paid_minor + amount_credited_minor = total_minor",
            name="paid_in_full",
        ),
    )

    entity_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("entities.id", ondelete="RESTRICT"), nullable=False
    )
    bill_group_id: Mapped[int] = mapped_column(BigId, nullable=False)
    number: Mapped[str] = mapped_column(String(40), nullable=False)
    currency: Mapped[str] = currency_column()
    status: Mapped[InvoiceStatus] = mapped_column(
        str_enum(InvoiceStatus, "invoice_status"), nullable=False
    )
    issue_date: Mapped[dt.date] = mapped_column(Date, nullable=False)
    due_date: Mapped[dt.date] = mapped_column(Date, nullable=False)
    period_start: Mapped[dt.date | None] = mapped_column(Date)
    period_end: Mapped[dt.date | None] = mapped_column(Date)
    subtotal_minor: Mapped[int] = mapped_column(Minor, nullable=False, default=0)
    tax_minor: Mapped[int] = mapped_column(Minor, nullable=False, default=0)
    total_minor: Mapped[int] = mapped_column(Minor, nullable=False, default=0)
    amount_paid_minor: Mapped[int] = mapped_column(Minor, nullable=False, default=0)
    # Credit notes applied to the invoice (the sum of its credit applications).
    amount_credited_minor: Mapped[int] = mapped_column(
        Minor, nullable=False, default=0, server_default="0"
    )
    # Snapshot of the PO number the invoice was issued against.
    po_number: Mapped[str | None] = mapped_column(String(64))
    memo: Mapped[str | None] = mapped_column(Text)
    voided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # The kind of the question or dispute open on it, if one is: written with the
    # dispute in one transaction (portal.actions.disputes), so the invoice list and
    # overview show the badge without another query.
    open_dispute_kind: Mapped[DisputeKind | None] = mapped_column(
        str_enum(DisputeKind, "invoice_open_dispute_kind")
    )

    entity: Mapped[Entity] = relationship(overlaps="invoices")
    bill_group: Mapped[BillGroup] = relationship(back_populates="invoices", overlaps="entity")
    lines: Mapped[list[InvoiceLine]] = relationship(
        back_populates="invoice", cascade="all, delete-orphan", order_by="InvoiceLine.position"
    )
    applications: Mapped[list[PaymentApplication]] = relationship(
        back_populates="invoice", cascade="all, delete-orphan"
    )

    @hybrid_property
    def balance_minor(self) -> int:
        """What is still owed; nothing is owed on a draft or a void invoice."""
        if self.status in (InvoiceStatus.DRAFT, InvoiceStatus.VOID):
            return 0
        return self.total_minor - self.amount_paid_minor - self.amount_credited_minor

    @balance_minor.inplace.expression
    @classmethod
    def _balance_minor(cls) -> ColumnElement[int]:
        return case(
            (cls.status.in_([InvoiceStatus.DRAFT, InvoiceStatus.VOID]), 0),
            else_=cls.total_minor - cls.amount_paid_minor - cls.amount_credited_minor,
        )

    def display_status(self, today: dt.date) -> DisplayStatus:
        if self.status == InvoiceStatus.OPEN and self.due_date < today:
            return DisplayStatus.OVERDUE
        return DisplayStatus(self.status.value)

    def recalculate(self) -> None:
        """Totals from the lines; the CHECK constraints refuse anything inconsistent."""
        self.subtotal_minor = sum(line.amount_minor for line in self.lines)
        self.tax_minor = sum(line.tax_minor for line in self.lines)
        self.total_minor = self.subtotal_minor + self.tax_minor

    def __repr__(self) -> str:
        return f"<Invoice {self.number} {self.status}>"


class InvoiceLine(IdMixin, Base):
    __tablename__ = "invoice_lines"
    __table_args__ = (
        UniqueConstraint("invoice_id", "position"),
        CheckConstraint("tax_rate_bp >= 0 AND tax_rate_bp <= 10000", name="tax_rate"),
        CheckConstraint("tax_minor >= 0", name="tax"),
    )

    invoice_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("invoices.id", ondelete="CASCADE"), nullable=False
    )
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    product_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("products.id", ondelete="SET NULL"), index=True
    )
    description: Mapped[str] = mapped_column(String(500), nullable=False)
    # Quantities may be fractional (hours, GB); money never is.
    quantity: Mapped[Decimal] = mapped_column(Numeric(18, 4), nullable=False)
    unit_price_minor: Mapped[int] = mapped_column(Minor, nullable=False)
    amount_minor: Mapped[int] = mapped_column(Minor, nullable=False)
    # Tax rate in basis points: 2000 is 20 %.
    tax_rate_bp: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    tax_minor: Mapped[int] = mapped_column(Minor, nullable=False, default=0)
    period_start: Mapped[dt.date | None] = mapped_column(Date)
    period_end: Mapped[dt.date | None] = mapped_column(Date)

    invoice: Mapped[Invoice] = relationship(back_populates="lines")
    product: Mapped[Product | None] = relationship()


class Payment(IdMixin, TimestampMixin, ChangeMixin, ExternalIdMixin, Base):
    __tablename__ = "payments"
    __table_args__ = (
        Index("ix_payments_bill_group_received", "bill_group_id", "received_at"),
        Index("ix_payments_updated", "updated_at", "id"),
        CheckConstraint("amount_minor > 0", name="amount"),
        CheckConstraint("refunded_minor >= 0 AND refunded_minor <= amount_minor", name="refunded"),
        UniqueConstraint("gateway", "gateway_reference"),
    )

    bill_group_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("bill_groups.id", ondelete="CASCADE"), nullable=False
    )
    payment_method_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("payment_methods.id", ondelete="SET NULL"), index=True
    )
    amount_minor: Mapped[int] = mapped_column(Minor, nullable=False)
    currency: Mapped[str] = currency_column()
    status: Mapped[PaymentStatus] = mapped_column(
        str_enum(PaymentStatus, "payment_status"), nullable=False
    )
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    # How the customer paid, for display when no stored method was used ("Bank transfer").
    method_description: Mapped[str | None] = mapped_column(String(100))
    reference: Mapped[str | None] = mapped_column(String(100))
    # Who recorded it: the billing system, or the customer paying in the portal.
    source: Mapped[PaymentSource] = mapped_column(
        str_enum(PaymentSource, "payment_source"),
        nullable=False,
        default=PaymentSource.BILLING_SYSTEM,
        server_default=PaymentSource.BILLING_SYSTEM.value,
    )
    # For a payment made through a gateway: its name and its id for the charge.
    gateway: Mapped[str | None] = mapped_column(String(40))
    gateway_reference: Mapped[str | None] = mapped_column(String(100))
    # Why it failed, in plain words for the customer.
    failure_message: Mapped[str | None] = mapped_column(String(300))
    # How much of it the gateway has reported refunded.
    refunded_minor: Mapped[int] = mapped_column(
        Minor, nullable=False, default=0, server_default="0"
    )
    # The verified address of the customer who paid in the portal.
    created_by: Mapped[str | None] = mapped_column(String(254))

    bill_group: Mapped[BillGroup] = relationship(back_populates="payments")
    payment_method: Mapped[PaymentMethod | None] = relationship()
    applications: Mapped[list[PaymentApplication]] = relationship(
        back_populates="payment", cascade="all, delete-orphan"
    )


class PaymentApplication(IdMixin, Base):
    """The part of a payment applied to one invoice."""

    __tablename__ = "payment_applications"
    __table_args__ = (
        UniqueConstraint("payment_id", "invoice_id"),
        CheckConstraint("amount_minor > 0", name="amount"),
    )

    payment_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("payments.id", ondelete="CASCADE"), nullable=False
    )
    invoice_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("invoices.id", ondelete="CASCADE"), nullable=False, index=True
    )
    amount_minor: Mapped[int] = mapped_column(Minor, nullable=False)
    # Set when a customer (or staff) applied the payment as credit in the portal: such an
    # application stays until the billing system reports one at least as large.
    applied_by: Mapped[str | None] = mapped_column(String(254))

    payment: Mapped[Payment] = relationship(back_populates="applications")
    invoice: Mapped[Invoice] = relationship(back_populates="applications")
