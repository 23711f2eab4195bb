"""Shared column types and mixins for the models."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import BigInteger, Enum, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from portal.db import UTCDateTime, utcnow

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key.
BigId = BigInteger().with_variant(Integer(), "sqlite")
# Money is always integer minor units (cents, pence, yen) beside an ISO 4217 code.
Minor = BigInteger


def str_enum(enum_class: type[enum.StrEnum], name: str) -> Enum:
    """A portable enum column: VARCHAR plus a CHECK constraint, stored by value."""
    return Enum(
        enum_class,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=24,
        validate_strings=True,
        values_callable=lambda members: [member.value for member in members],
    )


def currency_column() -> Any:
    return mapped_column(String(3), nullable=False)


class IdMixin:
    id: Mapped[int] = mapped_column(BigId, primary_key=True)


class TimestampMixin:
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, nullable=False
    )


class SessionMixin:
    """A signed-in browser, customer or staff: the cookie carries a random id, the row its
    hash, when it lapses, and whether and why it was ended."""

    sid_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_reason: Mapped[str | None] = mapped_column(String(40))
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(200))

    def lapsed(self, now: dt.datetime, idle: dt.timedelta) -> str | None:
        """Why the session has run out by `now`: "expired" past its lifetime, "idle" when
        unused for `idle`; None while it lasts."""
        if now >= self.expires_at:
            return "expired"
        if now - self.last_seen_at >= idle:
            return "idle"
        return None


class ExternalIdMixin:
    """The billing system's own id, used for idempotent upserts through the API."""

    external_id: Mapped[str | None] = mapped_column(String(100), unique=True)
