"""Sign-in state: challenges (an emailed link and code), customer sessions, and the
append-only audit trail. Only hashes of secrets are stored; the logic is in
portal.signin and portal.sessions."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from sqlalchemy import (
    DDL,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    event,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.db import Base, UTCDateTime, utcnow
from portal.models._base import BigId, IdMixin, SessionMixin

if TYPE_CHECKING:
    from portal.models.account import BillGroup


class SignInChallenge(IdMixin, Base):
    """One request for a sign-in link, from one browser, for one bill group.

    The request is stored as it arrives (pending); a worker evaluates it off the request
    path, so admitted and unknown addresses cost the request the same. If the address is
    admitted, the worker adds the token and code hashes and queues the email.
    """

    __tablename__ = "signin_challenges"
    __table_args__ = (
        Index("ix_signin_challenges_pending", "evaluated_at", "id"),
        Index("ix_signin_challenges_browser", "bill_group_id", "nonce_hash"),
        Index("ix_signin_challenges_email", "bill_group_id", "email"),
    )

    bill_group_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("bill_groups.id", ondelete="CASCADE"), nullable=False
    )
    email: Mapped[str] = mapped_column(String(254), nullable=False)
    # SHA-256 of the browser's nonce: the link and code work only in that browser.
    nonce_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    # Where to go after sign-in, checked when the request was made.
    next_path: Mapped[str | None] = mapped_column(String(500))
    ip: Mapped[str | None] = mapped_column(String(45))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    evaluated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # SHA-256 of the 256-bit link token; set only for admitted addresses.
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    # HMAC-SHA-256 of the code under a key derived from SECRET_KEY.
    code_hash: Mapped[str | None] = mapped_column(String(64))
    code_attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    # Asked for from a second browser ("email me a link for this browser"): the email
    # carries only the code, so a mail scanner that keeps cookies cannot chain its way in.
    code_only: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    spent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    retired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    bill_group: Mapped[BillGroup] = relationship()


class CustomerSession(IdMixin, SessionMixin, Base):
    """A signed-in customer of one bill group."""

    __tablename__ = "customer_sessions"
    __table_args__ = (
        Index("ix_customer_sessions_bill_group", "bill_group_id", "revoked_at"),
        # Signed-in devices: an address's live sessions with a seller, across its groups.
        Index("ix_customer_sessions_email", "email", "revoked_at"),
    )

    bill_group_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("bill_groups.id", ondelete="CASCADE"), nullable=False
    )
    email: Mapped[str] = mapped_column(String(254), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    # Signed in through a portal session the seller's app made: its page for the header's
    # "Back to <seller>" link (of an origin staff allowed), for this session only.
    return_url: Mapped[str | None] = mapped_column(String(2000))

    bill_group: Mapped[BillGroup] = relationship()


class AuditEvent(Base):
    """Who did what, when, from where. Never a secret. Rows are never changed or
    deleted: triggers refuse UPDATE and DELETE on both backends."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_bill_group", "bill_group_id", "id"),
        Index("ix_audit_events_at", "at"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True
    )
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    # "customer", "staff", "system" or "anonymous".
    actor_type: Mapped[str] = mapped_column(String(20), nullable=False)
    actor: Mapped[str | None] = mapped_column(String(254))
    action: Mapped[str] = mapped_column(String(60), nullable=False)
    outcome: Mapped[str] = mapped_column(String(40), nullable=False)
    # No foreign key: the trail outlives what it describes.
    bill_group_id: Mapped[int | None] = mapped_column(BigId)
    ip: Mapped[str | None] = mapped_column(String(45))
    detail: Mapped[str | None] = mapped_column(Text)


# Append-only, enforced by the database itself. The same statements are in the migration.
AUDIT_TRIGGERS = {
    "sqlite": [
        "CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events "
        "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END",
        "CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events "
        "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END",
    ],
    "postgresql": [
        "CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'audit_events is append-only'; END $$",
        "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events "
        "FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()",
        "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()",
    ],
}
AUDIT_TRIGGERS_DROP = {
    "sqlite": [
        "DROP TRIGGER IF EXISTS audit_events_no_update",
        "DROP TRIGGER IF EXISTS audit_events_no_delete",
    ],
    "postgresql": ["DROP FUNCTION IF EXISTS audit_events_append_only() CASCADE"],
}

for _dialect, _statements in AUDIT_TRIGGERS.items():
    for _statement in _statements:
        event.listen(
            AuditEvent.__table__, "after_create", DDL(_statement).execute_if(dialect=_dialect)
        )
for _dialect, _statements in AUDIT_TRIGGERS_DROP.items():
    for _statement in _statements:
        event.listen(
            AuditEvent.__table__, "before_drop", DDL(_statement).execute_if(dialect=_dialect)
        )
