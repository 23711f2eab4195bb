"""Invoice-copy recipients: extra addresses (an accounts-payable inbox) a billing manager
adds to a bill group so that they receive its invoices by email. They are not access
rules and never admit anyone to the portal (portal.invoice_copies)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.db import Base, UTCDateTime, utcnow
from portal.models._base import BigId, IdMixin
from portal.models.billing import Invoice


class InvoiceCopyRecipient(IdMixin, Base):
    """An address that gets a copy of each new invoice once its mailbox has confirmed
    (confirmed_at); one row per (bill group, address), so twenty racing adds make one."""

    __tablename__ = "invoice_copy_recipients"
    __table_args__ = (UniqueConstraint("bill_group_id", "email"),)

    bill_group_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("bill_groups.id", ondelete="CASCADE"), nullable=False
    )
    email: Mapped[str] = mapped_column(String(254), nullable=False)
    added_by: Mapped[str] = mapped_column(String(254), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    confirmed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    @property
    def status(self) -> str:
        return "confirmed" if self.confirmed_at is not None else "pending"


class InvoiceCopy(IdMixin, Base):
    """One invoice's copy for one address: written with the invoice (so a sync that
    sends the invoice again finds it and adds none: the unique key), turned into an
    email by the worker (sent_at), which also stores the hash of the copy's one-click
    "stop sending me copies" token."""

    __tablename__ = "invoice_copies"
    __table_args__ = (
        UniqueConstraint("invoice_id", "email"),
        Index("ix_invoice_copies_due", "sent_at", "id"),
    )

    invoice_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("invoices.id", ondelete="CASCADE"), nullable=False
    )
    # Emptied when the recipient is removed: a copy still waiting is then not sent.
    recipient_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("invoice_copy_recipients.id", ondelete="SET NULL")
    )
    email: Mapped[str] = mapped_column(String(254), nullable=False)
    queued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    # When the worker queued the email (or decided not to send it: skipped).
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    skipped: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    stop_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)

    invoice: Mapped[Invoice] = relationship()
    recipient: Mapped[InvoiceCopyRecipient | None] = relationship()
