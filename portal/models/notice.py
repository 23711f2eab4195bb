"""Notices to the billing contact, held back and merged (portal.notices), and the
confirmation of a billing contact address the customer named (portal.billing_contact).
Only hashes of secrets are stored."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from portal.db import Base, UTCDateTime, utcnow
from portal.models._base import BigId, IdMixin


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
    """A "you were named billing contact" email: the address gets nothing else from the
    portal until its mailbox confirms, by a POST, with this single-use token."""

    __tablename__ = "contact_confirmations"
    __table_args__ = (
        Index("ix_contact_confirmations_address", "bill_group_id", "email", "created_at"),
    )

    bill_group_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("bill_groups.id", ondelete="CASCADE"), nullable=False
    )
    email: Mapped[str] = mapped_column(String(254), nullable=False)
    # SHA-256 of the 256-bit token in the link.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    named_by: Mapped[str] = mapped_column(String(254), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    confirmed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Another address was named, or the change was undone, before this one confirmed.
    retired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
