"""The durable outbox: every email is a row first, sent by a worker after commit."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from portal.db import Base, UTCDateTime, utcnow
from portal.models._base import IdMixin


class OutboxMessage(IdMixin, Base):
    __tablename__ = "outbox_messages"
    __table_args__ = (
        # The sender's query: unsent, due, oldest first.
        Index("ix_outbox_messages_due", "sent_at", "next_attempt_at", "id"),
    )

    # Which template built it ("signin_link"), for the dev mailbox and the logs.
    kind: Mapped[str] = mapped_column(String(40), nullable=False)
    to_address: Mapped[str] = mapped_column(String(254), nullable=False)
    # The seller's contact address, where a reply should go (none for staff email).
    reply_to: Mapped[str | None] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(200), nullable=False)
    text_body: Mapped[str] = mapped_column(Text, nullable=False)
    html_body: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(
        UTCDateTime, default=utcnow, nullable=False
    )
    # A message not sent by then is dropped (a sign-in link that has expired).
    discard_after: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    # A worker's lease: nobody else sends the message until it runs out.
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    discarded_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(500))
    # Files sent with it (a receipt PDF), sealed like the bodies: JSON of
    # [{"filename", "content_type", "data" (base64)}]; None for none.
    attachments: Mapped[str | None] = mapped_column(Text)
    # Extra headers (List-Unsubscribe of a reminder), sealed like the bodies: JSON of
    # [[name, value], ...]; None for none.
    headers: Mapped[str | None] = mapped_column(Text)
