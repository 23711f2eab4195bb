"""Notices to the billing contact, held back and merged (portal.notices), the bill
group's change history they are drawn from, and the confirmation of an address a customer
named (portal.confirmations: a billing contact, an invoice-copy recipient). Only hashes of
secrets are stored."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.db import Base, UTCDateTime, utcnow
from portal.models._base import BigId, IdMixin


class BillGroupChange(IdMixin, Base):
    """One change to a bill group, as its change-history page lists it: who (customer,
    staff, API key, import, the portal), what, each field's old and new value where it is
    safe to show (never a payment detail beyond brand and last four), when. Written in
    the change's own transaction, by portal.notices; never updated."""

    __tablename__ = "bill_group_changes"
    __table_args__ = (Index("ix_bill_group_changes_group", "bill_group_id", "id"),)

    bill_group_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("bill_groups.id", ondelete="CASCADE"), nullable=False
    )
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    # "customer", "staff", "api", "import" or "system", and who (an address, a key's name).
    actor_type: Mapped[str] = mapped_column(String(20), nullable=False)
    actor: Mapped[str] = mapped_column(String(254), nullable=False)
    # "billing details", "billing contact", "payment methods" ...
    what: Mapped[str] = mapped_column(String(60), nullable=False)
    # JSON: [[field label, old or null, new or null], ...], in the form's order.
    changes: Mapped[str] = mapped_column(Text, nullable=False)
    # The portal page to review it on ("/billing-details"), for the email's link.
    page: Mapped[str] = mapped_column(String(100), nullable=False, default="")


class NoticeChange(IdMixin, Base):
    """One change a recipient must hear about. Written with the change itself; the
    worker gathers every change of a (bill group, recipient) into one Notice, so a
    burst of saves is one email and no change is ever dropped."""

    __tablename__ = "notice_changes"
    __table_args__ = (
        Index("ix_notice_changes_pending", "notice_id", "bill_group_id", "recipient", "at"),
    )

    bill_group_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("bill_groups.id", ondelete="CASCADE"), nullable=False
    )
    # The confirmed billing contact as it was before the change.
    recipient: Mapped[str] = mapped_column(String(254), nullable=False)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    actor: Mapped[str] = mapped_column(String(254), nullable=False)
    # "billing details", "billing contact", "payment methods" ...
    what: Mapped[str] = mapped_column(String(60), nullable=False)
    # The names of the fields that changed, as shown in the email, one per line.
    fields: Mapped[str] = mapped_column(Text, nullable=False)
    # The history row with its old and new values (empty for rows written before it).
    change_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("bill_group_changes.id", ondelete="CASCADE")
    )
    change: Mapped[BillGroupChange | None] = relationship()
    # The notice that told the recipient; empty while the change waits for one.
    notice_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("notices.id", ondelete="CASCADE")
    )


class Notice(IdMixin, Base):
    """One email that told a recipient about one or more changes.

    `seq` counts a (bill group, recipient)'s notices: two workers that both decide to
    send the next one insert the same seq, and the unique constraint lets only one of
    them commit, so neither the daily cap nor the merge can be raced past."""

    __tablename__ = "notices"
    __table_args__ = (
        UniqueConstraint("bill_group_id", "recipient", "seq"),
        Index("ix_notices_recent", "bill_group_id", "recipient", "queued_at"),
    )

    bill_group_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("bill_groups.id", ondelete="CASCADE"), nullable=False
    )
    recipient: Mapped[str] = mapped_column(String(254), nullable=False)
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    queued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    change_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class ContactConfirmation(IdMixin, Base):
    """A "you were named" email: the address gets nothing else from the portal until its
    mailbox confirms, by a POST, with this single-use token. `purpose` says what it was
    named as: the billing contact, or an invoice-copy recipient (portal.confirmations)."""

    __tablename__ = "contact_confirmations"
    __table_args__ = (
        Index("ix_contact_confirmations_address", "bill_group_id", "email", "created_at"),
    )

    bill_group_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("bill_groups.id", ondelete="CASCADE"), nullable=False
    )
    email: Mapped[str] = mapped_column(String(254), nullable=False)
    purpose: Mapped[str] = mapped_column(
        String(20), nullable=False, default="billing_contact", server_default="billing_contact"
    )
    # SHA-256 of the 256-bit token in the link.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    named_by: Mapped[str] = mapped_column(String(254), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    confirmed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Another address was named, or the change was undone, before this one confirmed.
    retired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
