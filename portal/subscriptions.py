"""Which changes a customer may ask for on a subscription: what the billing system allows
on it, switched on for its seller, and possible in its status; and the reasons a
customer cancels for. Read by the pages (the buttons) and by the action (the rule)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from emails.render import Email, render
from portal import links
from portal.models import (
    BillGroup,
    ChangeKind,
    Entity,
    Plan,
    RequestState,
    Subscription,
    SubscriptionChangeRequest,
    SubscriptionStatus,
)
from portal.money import format_money

# Why a customer cancels: a short list (the webhook carries the code), and free text.
CANCEL_REASONS: dict[str, str] = {
    "too_expensive": "It costs too much",
    "not_using": "We do not use it enough",
    "missing_features": "It lacks something we need",
    "switching": "We are moving to another product",
    "other": "Another reason",
}
COMMENT_MAX = 1000
ANSWER_MAX = 1000

_LIVE = (SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING, SubscriptionStatus.PAST_DUE)
# The statuses each change makes sense in.
_IN_STATUS: dict[ChangeKind, tuple[SubscriptionStatus, ...]] = {
    ChangeKind.PLAN: _LIVE,
    ChangeKind.QUANTITY: _LIVE,
    ChangeKind.PAUSE: (SubscriptionStatus.ACTIVE,),
    ChangeKind.RESUME: (SubscriptionStatus.PAUSED,),
    ChangeKind.CONVERT_TRIAL: (SubscriptionStatus.TRIALING,),
    ChangeKind.EXTEND_TRIAL: (SubscriptionStatus.TRIALING,),
    ChangeKind.CANCEL_AT_TERM_END: _LIVE,
    ChangeKind.CANCEL_NOW: (*_LIVE, SubscriptionStatus.PAUSED),
}


def switched_on(entity: Entity, kind: ChangeKind) -> bool:
    """The staff's switch for this kind of change, for every bill group of the seller."""
    return bool(getattr(entity, f"allow_change_{kind.value}"))


def plan_options(subscription: Subscription) -> list[Plan]:
    """The plans it may move to, without the one it is on."""
    return [plan for plan in subscription.allowed_plans if plan.id != subscription.plan_id]


def offered_by_subscription(subscription: Subscription, kind: ChangeKind) -> bool:
    """What the billing system allows on this subscription (in its current status)."""
    if subscription.status not in _IN_STATUS[kind]:
        return False
    if kind == ChangeKind.PLAN:
        return bool(plan_options(subscription))
    if kind == ChangeKind.QUANTITY:
        return subscription.quantity is not None and (
            subscription.quantity_min is not None or subscription.quantity_max is not None
        )
    return bool(getattr(subscription, f"allow_{kind.value}"))


def allowed(subscription: Subscription, entity: Entity, kind: ChangeKind) -> bool:
    return switched_on(entity, kind) and offered_by_subscription(subscription, kind)


def allowed_kinds(subscription: Subscription, entity: Entity) -> list[ChangeKind]:
    return [kind for kind in ChangeKind if allowed(subscription, entity, kind)]


def quantity_range(subscription: Subscription) -> tuple[int, int | None]:
    return subscription.quantity_min or 1, subscription.quantity_max


def pending(db: Session, subscription_ids: list[int]) -> dict[int, SubscriptionChangeRequest]:
    """The request waiting for an answer, by subscription id."""
    if not subscription_ids:
        return {}
    rows = db.scalars(
        select(SubscriptionChangeRequest)
        .where(
            SubscriptionChangeRequest.subscription_id.in_(subscription_ids),
            SubscriptionChangeRequest.state == RequestState.REQUESTED,
        )
        .options(
            selectinload(SubscriptionChangeRequest.to_plan),
            selectinload(SubscriptionChangeRequest.from_plan),
        )
    )
    return {row.subscription_id: row for row in rows}


# How long the subscriptions page shows the answer to the last request.
ANSWER_SHOWN = dt.timedelta(days=30)


def recent_answers(
    db: Session, subscription_ids: list[int], now: dt.datetime
) -> dict[int, SubscriptionChangeRequest]:
    """The last request answered within ANSWER_SHOWN, by subscription id: the customer
    sees what was decided until the billing system's own record shows the change."""
    if not subscription_ids:
        return {}
    rows = db.scalars(
        select(SubscriptionChangeRequest)
        .where(
            SubscriptionChangeRequest.subscription_id.in_(subscription_ids),
            SubscriptionChangeRequest.state != RequestState.REQUESTED,
            SubscriptionChangeRequest.answered_at >= now - ANSWER_SHOWN,
        )
        .order_by(SubscriptionChangeRequest.answered_at, SubscriptionChangeRequest.id)
        .options(selectinload(SubscriptionChangeRequest.to_plan))
    )
    return {row.subscription_id: row for row in rows}


def requests_of(db: Session, group: BillGroup, limit: int = 100) -> list[SubscriptionChangeRequest]:
    """The bill group's requests, waiting ones first, then newest first."""
    return list(
        db.scalars(
            select(SubscriptionChangeRequest)
            .where(SubscriptionChangeRequest.bill_group_id == group.id)
            .options(
                selectinload(SubscriptionChangeRequest.subscription).selectinload(
                    Subscription.plan
                ),
                selectinload(SubscriptionChangeRequest.to_plan),
            )
            .order_by(
                (SubscriptionChangeRequest.state == RequestState.REQUESTED).desc(),
                SubscriptionChangeRequest.id.desc(),
            )
            .limit(limit)
        )
    )


def describe(request: SubscriptionChangeRequest) -> str:
    """The change in a few words, for pages and emails."""
    kind = request.kind
    if kind == ChangeKind.PLAN and request.to_plan is not None:
        return f"Move to the {request.to_plan.name} plan"
    if kind == ChangeKind.QUANTITY and request.to_quantity is not None:
        return f"Change the quantity from {request.from_quantity} to {request.to_quantity}"
    return kind.label


def answer_email(request: SubscriptionChangeRequest, locale: str) -> Email:
    """The email that tells the customer who asked what the billing system answered."""
    group = request.bill_group
    return render(
        "subscription_change_answered",
        request.requested_by,
        entity=group.entity,
        bill_group=group,
        accepted=request.state == RequestState.ACCEPTED,
        change=describe(request),
        subscription=subscription_name(request.subscription),
        answer_reason=request.answer_reason,
        new_price=(
            None
            if request.to_plan is None
            else price_text(
                request.to_plan.price_minor,
                request.to_plan.currency,
                request.to_quantity or request.subscription.quantity,
                locale,
            )
        ),
        portal_url=links.portal_url(group, "/subscriptions"),
    )


def price_text(price_minor: int, currency: str, quantity: int | None, locale: str) -> str:
    """A plan's listed price as the customer should read it: per unit, with what that
    comes to for their quantity, when the subscription counts units."""
    each = format_money(price_minor, currency, locale)
    if not quantity:
        return each
    total = format_money(price_minor * quantity, currency, locale)
    return f"{each} per unit, {total} for {quantity}"


def subscription_name(subscription: Subscription) -> str:
    """How the customer knows a subscription: its plan, else its products."""
    if subscription.plan is not None:
        return subscription.plan.name
    names = [item.product.name for item in subscription.items]
    return ", ".join(names) or "Subscription"
