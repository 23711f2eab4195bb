"""Company single sign-on: a domain rule's OpenID Connect provider, and the sign-ins
started against one (each `state` spent once). Logic lives in portal.sso."""

from __future__ import annotations

import datetime as dt
import enum
from typing import TYPE_CHECKING

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.db import Base, UTCDateTime, utcnow
from portal.models._base import BigId, IdMixin, str_enum

if TYPE_CHECKING:
    from portal.models.access import AccessRule


class SsoMode(enum.StrEnum):
    # The sign-in page offers the company's sign-in beside the emailed link.
    OFFERED = "offered"
    # The emailed link is refused for the domain: the company's sign-in only.
    REQUIRED = "required"


class SsoProvider(IdMixin, Base):
    """One domain rule's OpenID Connect provider. The client secret is sealed
    (portal.crypto, purpose "sso-client-secret"): a database dump alone does not give it."""

    __tablename__ = "sso_providers"

    rule_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("access_rules.id", ondelete="CASCADE"), unique=True, nullable=False
    )
    # What the button says: "Continue with <company_name> sign-in".
    company_name: Mapped[str] = mapped_column(String(80), nullable=False)
    issuer: Mapped[str] = mapped_column(String(500), nullable=False)
    client_id: Mapped[str] = mapped_column(String(255), nullable=False)
    client_secret_sealed: Mapped[str] = mapped_column(Text, nullable=False)
    mode: Mapped[SsoMode] = mapped_column(str_enum(SsoMode, "sso_mode"), nullable=False)
    updated_by: Mapped[str] = mapped_column(String(254), nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, nullable=False
    )

    rule: Mapped[AccessRule] = relationship(back_populates="sso")

    def __repr__(self) -> str:
        return f"<SsoProvider {self.issuer!r} {self.mode}>"


class SsoAttempt(IdMixin, Base):
    """A sign-in sent to a provider: the hash of its `state`, spent by one conditional
    UPDATE at the callback, so a replayed callback (even with the old cookie) is refused.
    The PKCE verifier and the nonce stay in the browser's signed session (authlib's)."""

    __tablename__ = "sso_attempts"

    state_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    bill_group_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("bill_groups.id", ondelete="CASCADE"), nullable=False
    )
    provider_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("sso_providers.id", ondelete="CASCADE"), nullable=False
    )
    next_path: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    spent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
