"""Portal sessions made through the API: one-time sign-in links the seller's own app asks
for, and the return origins staff allow for its "Back to" link. Only the SHA-256 of a
link's token is stored; the logic is in portal.actions.portal_sessions."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.db import Base, UTCDateTime, utcnow
from portal.models._base import BigId, IdMixin

if TYPE_CHECKING:
    from portal.models.account import BillGroup
    from portal.models.entity import Entity


class PortalSessionToken(IdMixin, Base):
    """A link that signs one browser in to one bill group as one address, once, for a
    few minutes; made by an API key for an address the rules admitted at the time."""

    __tablename__ = "portal_session_tokens"
    __table_args__ = (Index("ix_portal_session_tokens_bill_group", "bill_group_id", "email"),)

    bill_group_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("bill_groups.id", ondelete="CASCADE"), nullable=False
    )
    email: Mapped[str] = mapped_column(String(254), nullable=False)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    # Where the browser lands: a portal path of this bill group, checked when made.
    next_path: Mapped[str | None] = mapped_column(String(500))
    # The seller's page for "Back to <seller>", of an origin staff allowed.
    return_url: Mapped[str | None] = mapped_column(String(2000))
    # No foreign key: the key may be deleted, the record of who made the link may not.
    api_key_id: Mapped[int] = mapped_column(BigId, nullable=False)
    made_by: Mapped[str] = mapped_column(String(254), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    spent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    bill_group: Mapped[BillGroup] = relationship()


class ReturnOrigin(IdMixin, Base):
    """An origin (scheme, host and port) of the seller's own app that a portal session's
    return_url may point to. Set by admins, per seller (entity)."""

    __tablename__ = "return_origins"
    __table_args__ = (UniqueConstraint("entity_id", "origin"),)

    entity_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("entities.id", ondelete="CASCADE"), nullable=False
    )
    origin: Mapped[str] = mapped_column(String(300), nullable=False)
    created_by: Mapped[str] = mapped_column(String(254), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)

    entity: Mapped[Entity] = relationship()
