"""Customer accounts, their bill groups (the unit of portal access) and contacts."""

from __future__ import annotations

import datetime as dt
import enum
import secrets
from typing import TYPE_CHECKING

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    String,
    UniqueConstraint,
    and_,
    or_,
)
from sqlalchemy.ext.hybrid import hybrid_method
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.sql import ColumnElement

from portal.db import Base
from portal.models._base import (
    BigId,
    ExternalIdMixin,
    IdMixin,
    TimestampMixin,
    currency_column,
    str_enum,
)
from portal.models.changes import ChangeMixin

if TYPE_CHECKING:
    from portal.models.access import AccessRule
    from portal.models.billing import Invoice, Payment, Subscription
    from portal.models.entity import Entity
    from portal.models.payment_method import PaymentMethod


class BillingFrequency(enum.StrEnum):
    MONTHLY = "monthly"
    QUARTERLY = "quarterly"
    SEMIANNUAL = "semiannual"
    ANNUAL = "annual"

    @property
    def label(self) -> str:
        return {"semiannual": "Every six months"}.get(self.value, self.value.capitalize())


class ContactKind(enum.StrEnum):
    BILLING = "billing"
    SHIPPING = "shipping"


def new_public_id() -> str:
    """128 random bits, URL-safe: the portal link must not be guessable or enumerable."""
    return secrets.token_urlsafe(16)


class Account(IdMixin, TimestampMixin, ChangeMixin, ExternalIdMixin, Base):
    __tablename__ = "accounts"

    name: Mapped[str] = mapped_column(String(200), nullable=False, index=True)

    bill_groups: Mapped[list[BillGroup]] = relationship(
        back_populates="account", order_by="BillGroup.name"
    )

    def __repr__(self) -> str:
        return f"<Account {self.id} {self.name!r}>"


# The SQL halves of BillGroup's hybrids (see there).
def _has_active_contract_sql(cls: type[BillGroup], today: dt.date) -> ColumnElement[bool]:
    return and_(
        cls.contract_start <= today,
        or_(cls.contract_end.is_(None), cls.contract_end >= today),
    )


def _portal_available_sql(cls: type[BillGroup], today: dt.date) -> ColumnElement[bool]:
    return and_(cls.portal_enabled.is_(True), cls.has_active_contract(today))


class BillGroup(IdMixin, TimestampMixin, ChangeMixin, ExternalIdMixin, Base):
    """Subscriptions and invoices of one account billed together; each has its own portal."""

    __tablename__ = "bill_groups"
    __table_args__ = (
        # Targets of the composite foreign keys that keep invoices in the group's entity
        # and currency.
        UniqueConstraint("id", "entity_id", "currency", name="uq_bill_groups_id_entity_currency"),
        CheckConstraint(
            "contract_end IS NULL OR contract_end >= contract_start", name="contract_dates"
        ),
        CheckConstraint("length(currency) = 3 AND upper(currency) = currency", name="currency"),
        Index("ix_bill_groups_account_id", "account_id"),
        Index("ix_bill_groups_updated", "updated_at", "id"),
    )

    public_id: Mapped[str] = mapped_column(
        String(32), unique=True, nullable=False, default=new_public_id
    )
    account_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False
    )
    entity_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("entities.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    currency: Mapped[str] = currency_column()
    billing_frequency: Mapped[BillingFrequency] = mapped_column(
        str_enum(BillingFrequency, "billing_frequency"), nullable=False
    )
    next_billing_date: Mapped[dt.date | None] = mapped_column(Date)
    auto_pay: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    po_number: Mapped[str | None] = mapped_column(String(64))
    vat_number: Mapped[str | None] = mapped_column(String(20))
    registration_number: Mapped[str | None] = mapped_column(String(64))
    contract_start: Mapped[dt.date] = mapped_column(Date, nullable=False)
    contract_end: Mapped[dt.date | None] = mapped_column(Date)
    portal_enabled: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    # The payment gateway's customer for this bill group (a Stripe customer id).
    gateway_customer_ref: Mapped[str | None] = mapped_column(String(100))

    account: Mapped[Account] = relationship(back_populates="bill_groups")
    entity: Mapped[Entity] = relationship(back_populates="bill_groups")
    contacts: Mapped[list[Contact]] = relationship(
        back_populates="bill_group", cascade="all, delete-orphan"
    )
    access_rules: Mapped[list[AccessRule]] = relationship(
        back_populates="bill_group", cascade="all, delete-orphan", order_by="AccessRule.id"
    )
    subscriptions: Mapped[list[Subscription]] = relationship(
        back_populates="bill_group", cascade="all, delete-orphan"
    )
    invoices: Mapped[list[Invoice]] = relationship(
        back_populates="bill_group", cascade="all, delete-orphan", overlaps="invoices"
    )
    payments: Mapped[list[Payment]] = relationship(
        back_populates="bill_group", cascade="all, delete-orphan"
    )
    payment_methods: Mapped[list[PaymentMethod]] = relationship(
        back_populates="bill_group",
        cascade="all, delete-orphan",
        order_by="PaymentMethod.id",
    )
    # Derived from the one flagged payment method; the flag is the single source of truth.
    default_payment_method: Mapped[PaymentMethod | None] = relationship(
        primaryjoin="and_(PaymentMethod.bill_group_id == BillGroup.id, PaymentMethod.is_default)",
        viewonly=True,
        uselist=False,
    )

    # Hybrids written as hybrid_method(python, sql), the SQL halves above the class: the
    # decorator form's `.expression` is not visible to a type checker in the class body.
    def _has_active_contract(self, today: dt.date) -> bool:
        return self.contract_start <= today and (
            self.contract_end is None or today <= self.contract_end
        )

    has_active_contract = hybrid_method(_has_active_contract, _has_active_contract_sql)

    def _portal_available(self, today: dt.date) -> bool:
        """Whether the portal link leads anywhere today."""
        return self.portal_enabled and self.has_active_contract(today)

    portal_available = hybrid_method(_portal_available, _portal_available_sql)

    def contact(self, kind: ContactKind) -> Contact | None:
        return next((c for c in self.contacts if c.kind == kind), None)

    def __repr__(self) -> str:
        return f"<BillGroup {self.id} {self.name!r}>"


class Contact(IdMixin, TimestampMixin, ChangeMixin, Base):
    __tablename__ = "contacts"
    __table_args__ = (
        UniqueConstraint("bill_group_id", "kind"),
        Index("ix_contacts_updated", "updated_at", "id"),
    )

    bill_group_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("bill_groups.id", ondelete="CASCADE"), nullable=False
    )
    kind: Mapped[ContactKind] = mapped_column(str_enum(ContactKind, "contact_kind"), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    company: Mapped[str | None] = mapped_column(String(200))
    # The confirmed address: the one notices go to. The API and import set it directly
    # (the billing system is trusted); a customer's new address waits in pending_email.
    email: Mapped[str | None] = mapped_column(String(254))
    # A billing contact address a customer named and its mailbox has not yet confirmed
    # (portal.billing_contact): it gets only the one "you were named" email.
    pending_email: Mapped[str | None] = mapped_column(String(254))
    phone: Mapped[str | None] = mapped_column(String(40))
    line1: Mapped[str | None] = mapped_column(String(200))
    line2: Mapped[str | None] = mapped_column(String(200))
    city: Mapped[str | None] = mapped_column(String(100))
    region: Mapped[str | None] = mapped_column(String(100))
    postal_code: Mapped[str | None] = mapped_column(String(20))
    # ISO 3166-1 alpha-2.
    country: Mapped[str | None] = mapped_column(String(2))

    bill_group: Mapped[BillGroup] = relationship(back_populates="contacts")

    @property
    def address_lines(self) -> list[str]:
        locality = " ".join(p for p in (self.postal_code, self.city) if p)
        parts = [self.line1, self.line2, locality, self.region, self.country]
        return [p for p in parts if p]
