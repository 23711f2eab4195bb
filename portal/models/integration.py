"""The billing system's side of the portal: API keys, webhook endpoints, and the durable
queue of webhook events and their deliveries. Logic lives in portal.apikeys and
portal.webhooks."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.db import Base, UTCDateTime, utcnow
from portal.models._base import BigId, IdMixin, str_enum


class ApiKey(IdMixin, Base):
    """A key the billing system sends as a bearer token. Only its SHA-256 is stored; the
    key itself is shown once, when an admin creates it."""

    __tablename__ = "api_keys"

    name: Mapped[str] = mapped_column(String(100), nullable=False)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    # The first characters of the key, so people can tell keys apart ("bp_7Hq2…").
    hint: Mapped[str] = mapped_column(String(16), nullable=False)
    # Space-separated: "read", "write" or "read write".
    scopes: Mapped[str] = mapped_column(String(40), nullable=False)
    created_by: Mapped[str] = mapped_column(String(254), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_by: Mapped[str | None] = mapped_column(String(254))

    @property
    def scope_set(self) -> frozenset[str]:
        return frozenset(self.scopes.split())

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class WebhookEndpoint(IdMixin, Base):
    """A URL of the billing system's that hears about changes, and the secret it checks
    signatures with (sealed: we must read it back to sign)."""

    __tablename__ = "webhook_endpoints"

    url: Mapped[str] = mapped_column(String(2000), nullable=False)
    description: Mapped[str | None] = mapped_column(String(200))
    secret_sealed: Mapped[str] = mapped_column(Text, nullable=False)
    # Space-separated event types this endpoint receives.
    events: Mapped[str] = mapped_column(Text, nullable=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    created_by: Mapped[str] = mapped_column(String(254), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, nullable=False
    )

    @property
    def event_set(self) -> frozenset[str]:
        return frozenset(self.events.split())


class WebhookEvent(IdMixin, Base):
    """Something a customer (or staff) changed, as the JSON every endpoint receives.
    Written in the same transaction as the change, so no change goes unannounced."""

    __tablename__ = "webhook_events"
    __table_args__ = (Index("ix_webhook_events_created", "created_at", "id"),)

    # "evt_…": receivers deduplicate by it; retries and resends carry the same id.
    public_id: Mapped[str] = mapped_column(String(40), unique=True, nullable=False)
    type: Mapped[str] = mapped_column(String(60), nullable=False)
    # No foreign key: the event outlives what it describes, like the audit trail.
    bill_group_id: Mapped[int | None] = mapped_column(BigId)
    payload: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookDelivery(IdMixin, Base):
    """One event on its way to one endpoint: retried with backoff until it is accepted
    or runs out of attempts; claimed with a lease so two workers never send it at once."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "endpoint_id"),
        # The sender's query: pending, due, oldest first.
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at", "id"),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
    )

    event_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("webhook_events.id", ondelete="CASCADE"), nullable=False
    )
    endpoint_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False
    )
    status: Mapped[DeliveryStatus] = mapped_column(
        str_enum(DeliveryStatus, "delivery_status"), default=DeliveryStatus.PENDING, nullable=False
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(
        UTCDateTime, default=utcnow, nullable=False
    )
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # The staff member whose Resend the next attempt answers; cleared by that attempt.
    resend_requested_by: Mapped[str | None] = mapped_column(String(254))
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)

    event: Mapped[WebhookEvent] = relationship()
    endpoint: Mapped[WebhookEndpoint] = relationship()


class WebhookAttempt(IdMixin, Base):
    """The delivery log: one row per HTTP attempt, what came back and how long it took."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_delivery", "delivery_id", "id"),)

    delivery_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False
    )
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))
    duration_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    # Who asked for it: "worker", or the staff member who pressed Resend.
    trigger: Mapped[str] = mapped_column(String(254), nullable=False, default="worker")
