"""Reminders (portal.reminders): each one sent, keyed so it is sent once, and the
addresses that asked not to get the non-essential kinds."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import Date, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from portal.db import Base, UTCDateTime, utcnow
from portal.models._base import BigId, IdMixin, str_enum


class ReminderKind(enum.StrEnum):
    # Before a subscription renews (the invoice to come).
    UPCOMING = "upcoming"
    # Before an open invoice's due date.
    DUE_SOON = "due_soon"
    # After the due date of an invoice still unpaid.
    OVERDUE = "overdue"


class ReminderOutcome(enum.StrEnum):
    QUEUED = "queued"
    # Its address had unsubscribed from the kind: recorded all the same, so the scan
    # never looks at it again.
    UNSUBSCRIBED = "unsubscribed"


class ReminderSent(IdMixin, Base):
    """One reminder, written in the transaction that queues its email: the unique key
    (kind, target, the date it is about, step) is what makes it go once, whatever
    number of workers scan at the same time and however often they restart."""

    __tablename__ = "reminders_sent"
    __table_args__ = (
        # The target is an invoice (due soon, overdue) or a subscription (upcoming), as
        # the kind says; its date (due date, renewal date) is part of the key, so a
        # subscription is reminded again before each renewal and an invoice whose due
        # date the billing system moves is reminded for the new date.
        UniqueConstraint("kind", "target_id", "target_date", "step", name="uq_reminders_sent_key"),
        Index("ix_reminders_sent_bill_group_address", "bill_group_id", "to_address"),
    )

    kind: Mapped[ReminderKind] = mapped_column(
        str_enum(ReminderKind, "reminder_kind"), nullable=False
    )
    target_id: Mapped[int] = mapped_column(BigId, nullable=False)
    target_date: Mapped[dt.date] = mapped_column(Date, nullable=False)
    # Days before (upcoming, due soon) or after (overdue) the target date.
    step: Mapped[int] = mapped_column(Integer, nullable=False)
    bill_group_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("bill_groups.id", ondelete="CASCADE"), nullable=False
    )
    to_address: Mapped[str] = mapped_column(String(254), nullable=False)
    outcome: Mapped[ReminderOutcome] = mapped_column(
        str_enum(ReminderOutcome, "reminder_outcome"), nullable=False
    )
    queued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)


class ReminderUnsubscription(IdMixin, Base):
    """An address that asked for no more reminders of one kind about one bill group."""

    __tablename__ = "reminder_unsubscriptions"
    __table_args__ = (
        UniqueConstraint(
            "bill_group_id", "address", "kind", name="uq_reminder_unsubscriptions_key"
        ),
    )

    bill_group_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("bill_groups.id", ondelete="CASCADE"), nullable=False
    )
    # Lower case, as canonical_email makes it.
    address: Mapped[str] = mapped_column(String(254), nullable=False)
    kind: Mapped[ReminderKind] = mapped_column(
        str_enum(ReminderKind, "reminder_kind"), nullable=False
    )
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    # "email link" (the one-click POST or the page behind the link) or a customer's address.
    created_by: Mapped[str] = mapped_column(String(254), nullable=False)
