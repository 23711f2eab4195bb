"""The seller's catalogue of plans, and the changes a customer asks for on a
subscription: stored as requests that the billing system accepts or refuses."""

from __future__ import annotations

import datetime as dt
import enum
from typing import TYPE_CHECKING

from sqlalchemy import (
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.db import Base, UTCDateTime
from portal.models._base import (
    BigId,
    ExternalIdMixin,
    IdMixin,
    Minor,
    TimestampMixin,
    currency_column,
    str_enum,
)
from portal.models.account import BillingFrequency
from portal.models.changes import ChangeMixin

if TYPE_CHECKING:
    from portal.models.account import BillGroup
    from portal.models.billing import Subscription
    from portal.models.entity import Entity


class ChangeKind(enum.StrEnum):
    """What a customer may ask for. The order is the order the buttons are shown in."""

    PLAN = "plan"
    QUANTITY = "quantity"
    PAUSE = "pause"
    RESUME = "resume"
    CONVERT_TRIAL = "convert_trial"
    EXTEND_TRIAL = "extend_trial"
    CANCEL_AT_TERM_END = "cancel_at_term_end"
    CANCEL_NOW = "cancel_now"

    @property
    def label(self) -> str:
        return CHANGE_LABELS[self]


CHANGE_LABELS: dict[ChangeKind, str] = {
    ChangeKind.PLAN: "Change plan",
    ChangeKind.QUANTITY: "Change quantity",
    ChangeKind.PAUSE: "Pause",
    ChangeKind.RESUME: "Resume",
    ChangeKind.CONVERT_TRIAL: "Convert the trial to a paid subscription",
    ChangeKind.EXTEND_TRIAL: "Extend the trial",
    ChangeKind.CANCEL_AT_TERM_END: "Cancel at the end of the term",
    ChangeKind.CANCEL_NOW: "Cancel now",
}


class RequestState(enum.StrEnum):
    REQUESTED = "requested"
    ACCEPTED = "accepted"
    REFUSED = "refused"


class Plan(IdMixin, TimestampMixin, ChangeMixin, ExternalIdMixin, Base):
    """One plan of a seller's catalogue, with its price per period as the billing system
    gives it (the final amount of a change is the billing system's to confirm)."""

    __tablename__ = "plans"
    __table_args__ = (CheckConstraint("price_minor >= 0", name="price"),)

    entity_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("entities.id", ondelete="CASCADE"), nullable=False, index=True
    )
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    price_minor: Mapped[int] = mapped_column(Minor, nullable=False)
    currency: Mapped[str] = currency_column()
    period: Mapped[BillingFrequency] = mapped_column(
        str_enum(BillingFrequency, "plan_period"), nullable=False
    )

    entity: Mapped[Entity] = relationship()


# The plans a subscription may move to, as the billing system lists them.
subscription_plan_options = Table(
    "subscription_plan_options",
    Base.metadata,
    Column(
        "subscription_id",
        BigId,
        ForeignKey("subscriptions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column(
        "plan_id",
        BigId,
        ForeignKey("plans.id", ondelete="CASCADE"),
        primary_key=True,
        index=True,
    ),
)


class SubscriptionChangeRequest(IdMixin, TimestampMixin, ChangeMixin, Base):
    """A change a customer asked for; at most one is pending per subscription (the
    partial unique index), so a double submit makes one request."""

    __tablename__ = "subscription_change_requests"
    __table_args__ = (
        Index(
            "uq_subscription_change_requests_pending",
            "subscription_id",
            unique=True,
            sqlite_where=text("state = 'requested'"),
            postgresql_where=text("state = 'requested'"),
        ),
        Index("ix_subscription_change_requests_group", "bill_group_id", "state"),
        CheckConstraint("to_quantity IS NULL OR to_quantity > 0", name="to_quantity"),
        CheckConstraint(
            "(state = 'requested') = (answered_at IS NULL)", name="answered_when_answered"
        ),
    )

    subscription_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("subscriptions.id", ondelete="CASCADE"), nullable=False
    )
    bill_group_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("bill_groups.id", ondelete="CASCADE"), nullable=False
    )
    kind: Mapped[ChangeKind] = mapped_column(
        str_enum(ChangeKind, "subscription_change_kind"), nullable=False
    )
    state: Mapped[RequestState] = mapped_column(
        str_enum(RequestState, "subscription_change_state"),
        nullable=False,
        default=RequestState.REQUESTED,
    )
    # What the subscription was when asked, and what the customer asked for.
    from_plan_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("plans.id", ondelete="SET NULL"), index=True
    )
    to_plan_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("plans.id", ondelete="SET NULL"), index=True
    )
    from_quantity: Mapped[int | None] = mapped_column(Integer)
    to_quantity: Mapped[int | None] = mapped_column(Integer)
    # Cancelling: a reason from the short list, and the customer's own words.
    reason: Mapped[str | None] = mapped_column(String(40))
    comment: Mapped[str | None] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(String(254), nullable=False)
    answered_by: Mapped[str | None] = mapped_column(String(254))
    answer_reason: Mapped[str | None] = mapped_column(Text)
    answered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    subscription: Mapped[Subscription] = relationship()
    bill_group: Mapped[BillGroup] = relationship()
    from_plan: Mapped[Plan | None] = relationship(foreign_keys=[from_plan_id])
    to_plan: Mapped[Plan | None] = relationship(foreign_keys=[to_plan_id])
