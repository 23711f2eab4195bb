"""Questions and disputes a customer raises on an invoice: the thread of messages with
staff (or the billing system), and the files attached to it, stored in the database so
that every web host serves the same bytes."""

from __future__ import annotations

import datetime as dt
import enum
from typing import TYPE_CHECKING

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, deferred, mapped_column, relationship

from portal.db import Base, UTCDateTime
from portal.models._base import BigId, IdMixin, TimestampMixin, str_enum
from portal.models.changes import ChangeMixin

if TYPE_CHECKING:
    from portal.models.account import BillGroup
    from portal.models.billing import Invoice


class DisputeKind(enum.StrEnum):
    QUESTION = "question"
    DISPUTE = "dispute"

    @property
    def label(self) -> str:
        return "Question" if self == DisputeKind.QUESTION else "Dispute"


class DisputeState(enum.StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class Dispute(IdMixin, TimestampMixin, ChangeMixin, Base):
    """A question or dispute on one invoice; at most one is open per invoice (the partial
    unique index), so twenty identical submits make one."""

    __tablename__ = "disputes"
    __table_args__ = (
        Index(
            "uq_disputes_open",
            "invoice_id",
            unique=True,
            sqlite_where=text("state = 'open'"),
            postgresql_where=text("state = 'open'"),
        ),
        Index("ix_disputes_group", "bill_group_id", "state"),
        Index("ix_disputes_state", "state", "id"),
        CheckConstraint("kind = 'question' OR reason IS NOT NULL", name="reason"),
        CheckConstraint("(state = 'open') = (resolved_at IS NULL)", name="resolved_when_resolved"),
    )

    bill_group_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("bill_groups.id", ondelete="CASCADE"), nullable=False
    )
    invoice_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("invoices.id", ondelete="CASCADE"), nullable=False, index=True
    )
    kind: Mapped[DisputeKind] = mapped_column(str_enum(DisputeKind, "dispute_kind"), nullable=False)
    # A dispute's reason, from the short list (portal.disputes.REASONS); none for a question.
    reason: Mapped[str | None] = mapped_column(String(40))
    state: Mapped[DisputeState] = mapped_column(
        str_enum(DisputeState, "dispute_state"), nullable=False, default=DisputeState.OPEN
    )
    raised_by: Mapped[str] = mapped_column(String(254), nullable=False)
    resolved_by: Mapped[str | None] = mapped_column(String(254))
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    bill_group: Mapped[BillGroup] = relationship()
    invoice: Mapped[Invoice] = relationship()
    messages: Mapped[list[DisputeMessage]] = relationship(
        back_populates="dispute", order_by="DisputeMessage.id", cascade="all, delete-orphan"
    )


class DisputeMessage(IdMixin, Base):
    """One message of the thread: the customer's, staff's or the billing system's."""

    __tablename__ = "dispute_messages"
    __table_args__ = (
        CheckConstraint("author_type IN ('customer', 'staff', 'api')", name="author_type"),
    )

    dispute_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("disputes.id", ondelete="CASCADE"), nullable=False, index=True
    )
    author_type: Mapped[str] = mapped_column(String(16), nullable=False)
    author: Mapped[str] = mapped_column(String(254), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)

    dispute: Mapped[Dispute] = relationship(back_populates="messages")
    attachment: Mapped[DisputeAttachment | None] = relationship(
        back_populates="message", uselist=False, cascade="all, delete-orphan"
    )


class DisputeAttachment(IdMixin, Base):
    """A file sent with a message, checked by its content (portal.attachments); the bytes
    are deferred, so listing a thread never loads them."""

    __tablename__ = "dispute_attachments"
    __table_args__ = (CheckConstraint("size > 0", name="size"),)

    message_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("dispute_messages.id", ondelete="CASCADE"), nullable=False, unique=True
    )
    filename: Mapped[str] = mapped_column(String(200), nullable=False)
    content_type: Mapped[str] = mapped_column(String(40), nullable=False)
    size: Mapped[int] = mapped_column(Integer, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    data: Mapped[bytes] = deferred(mapped_column(LargeBinary, nullable=False))

    message: Mapped[DisputeMessage] = relationship(back_populates="attachment")
