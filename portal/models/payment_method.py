"""Payment methods: gateway tokens and display details, never a card number."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.db import Base
from portal.models._base import BigId, ExternalIdMixin, IdMixin, TimestampMixin, str_enum
from portal.models.changes import ChangeMixin

if TYPE_CHECKING:
    from portal.models.account import BillGroup


class PaymentMethodType(enum.StrEnum):
    CARD = "card"
    SEPA_DEBIT = "sepa_debit"
    US_BANK_ACCOUNT = "us_bank_account"

    @property
    def label(self) -> str:
        return {"card": "Card", "sepa_debit": "SEPA Direct Debit", "us_bank_account": "ACH"}[
            self.value
        ]


class PaymentMethod(IdMixin, TimestampMixin, ChangeMixin, ExternalIdMixin, Base):
    __tablename__ = "payment_methods"
    __table_args__ = (
        UniqueConstraint("gateway", "gateway_token"),
        # At most one default per bill group: a partial unique index on both backends.
        Index(
            "uq_payment_methods_one_default",
            "bill_group_id",
            unique=True,
            sqlite_where=text("is_default"),
            postgresql_where=text("is_default"),
        ),
        # Four characters and nothing longer: a full number cannot fit.
        CheckConstraint("length(last4) = 4", name="last4"),
        CheckConstraint(
            # Both or neither: a NULL inside BETWEEN would make the check pass, not fail.
            "(exp_month IS NULL AND exp_year IS NULL) OR "
            "(exp_month IS NOT NULL AND exp_year IS NOT NULL "
            "AND exp_month BETWEEN 1 AND 12 AND exp_year BETWEEN 2000 AND 2200)",
            name="expiry",
        ),
    )

    bill_group_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("bill_groups.id", ondelete="CASCADE"), nullable=False, index=True
    )
    type: Mapped[PaymentMethodType] = mapped_column(
        str_enum(PaymentMethodType, "payment_method_type"), nullable=False
    )
    # "visa", "mastercard", "amex"; the bank name for debits.
    brand: Mapped[str | None] = mapped_column(String(40))
    last4: Mapped[str] = mapped_column(String(4), nullable=False)
    exp_month: Mapped[int | None] = mapped_column(Integer)
    exp_year: Mapped[int | None] = mapped_column(Integer)
    holder_name: Mapped[str | None] = mapped_column(String(200))
    gateway: Mapped[str] = mapped_column(String(40), nullable=False)
    gateway_token: Mapped[str] = mapped_column(String(255), nullable=False)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)

    bill_group: Mapped[BillGroup] = relationship(back_populates="payment_methods")

    @property
    def expiry(self) -> str | None:
        if self.exp_month is None or self.exp_year is None:
            return None
        return f"{self.exp_month:02d}/{self.exp_year % 100:02d}"
