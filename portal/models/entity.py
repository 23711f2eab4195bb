"""The seller: the business whose customers use the portal, and its branding."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import BigInteger, Boolean, CheckConstraint, LargeBinary, String, Text, true
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.db import Base
from portal.models._base import ExternalIdMixin, IdMixin, TimestampMixin
from portal.models.changes import ChangeMixin

if TYPE_CHECKING:
    from portal.models.account import BillGroup

LOGO_MAX_BYTES = 256 * 1024
LOGO_TYPES = ("image/png", "image/jpeg")


def _switch() -> Mapped[bool]:
    return mapped_column(Boolean, nullable=False, default=True, server_default=true())


def _schedule() -> Mapped[str]:
    return mapped_column(String(40), nullable=False, default="", server_default="")


class Entity(IdMixin, TimestampMixin, ChangeMixin, ExternalIdMixin, Base):
    __tablename__ = "entities"
    __table_args__ = (
        # #rrggbb only: it goes into a style attribute and a PDF.
        CheckConstraint(
            "length(brand_colour) = 7 AND substr(brand_colour, 1, 1) = '#' "
            "AND ltrim(substr(brand_colour, 2), '0123456789abcdefABCDEF') = ''",
            name="brand_colour",
        ),
        CheckConstraint("logo_type IN ('image/png', 'image/jpeg')", name="logo_type"),
        CheckConstraint("min_partial_payment_minor >= 0", name="min_partial_payment"),
        CheckConstraint(
            "bank_reference_format IN ('invoice_number', 'group_and_invoice')",
            name="bank_reference_format",
        ),
    )

    name: Mapped[str] = mapped_column(String(200), nullable=False)
    legal_name: Mapped[str | None] = mapped_column(String(200))
    support_email: Mapped[str] = mapped_column(String(254), nullable=False)
    brand_colour: Mapped[str] = mapped_column(String(7), default="#2f5bea", nullable=False)
    logo: Mapped[bytes | None] = mapped_column(LargeBinary)
    logo_type: Mapped[str | None] = mapped_column(String(20))
    address: Mapped[str | None] = mapped_column(Text)
    country: Mapped[str | None] = mapped_column(String(2))
    vat_number: Mapped[str | None] = mapped_column(String(20))
    # Paying in the portal: may a customer pay part of an invoice, and at least how much
    # (minor units of the bill group's currency); may they apply credits to invoices.
    allow_partial_payments: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=True, server_default=true()
    )
    min_partial_payment_minor: Mapped[int] = mapped_column(
        BigInteger, nullable=False, default=100, server_default="100"
    )
    allow_credit_application: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=True, server_default=true()
    )
    # Paying by bank transfer (portal.bank, set by portal.actions.bank): an IBAN (and
    # maybe a BIC), or a US account and routing number; how the payment reference is made.
    bank_account_holder: Mapped[str | None] = mapped_column(String(70))
    bank_name: Mapped[str | None] = mapped_column(String(70))
    bank_iban: Mapped[str | None] = mapped_column(String(34))
    bank_bic: Mapped[str | None] = mapped_column(String(11))
    bank_account_number: Mapped[str | None] = mapped_column(String(17))
    bank_routing_number: Mapped[str | None] = mapped_column(String(9))
    bank_reference_format: Mapped[str] = mapped_column(
        String(20), nullable=False, default="invoice_number", server_default="invoice_number"
    )

    # Which changes to a subscription its customers may ask for (portal.subscriptions):
    # the staff's switch, on top of what each subscription allows.
    allow_change_plan: Mapped[bool] = _switch()
    allow_change_quantity: Mapped[bool] = _switch()
    allow_change_pause: Mapped[bool] = _switch()
    allow_change_resume: Mapped[bool] = _switch()
    allow_change_convert_trial: Mapped[bool] = _switch()
    allow_change_extend_trial: Mapped[bool] = _switch()
    allow_change_cancel_at_term_end: Mapped[bool] = _switch()
    allow_change_cancel_now: Mapped[bool] = _switch()

    # Reminder schedules (portal.reminders), as staff set them: days before a renewal,
    # before a due date, after a due date, as a comma-separated list ("1,7,14"); empty:
    # that kind of reminder is off.
    remind_upcoming_days: Mapped[str] = _schedule()
    remind_due_soon_days: Mapped[str] = _schedule()
    remind_overdue_days: Mapped[str] = _schedule()

    bill_groups: Mapped[list[BillGroup]] = relationship(back_populates="entity")

    def __repr__(self) -> str:
        return f"<Entity {self.id} {self.name!r}>"
