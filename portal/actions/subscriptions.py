"""Changes to a subscription, which the portal does not make itself: the customer asks
(`request_change`), the billing system (or staff, by hand) answers (`answer_change`),
and staff switch each kind of change on or off for a seller (`set_subscription_settings`).

A request is stored, audited and sent as `subscription.change_requested`; an answer is
written once (a conditional UPDATE, so two answers at once make one), audited, and
emailed to the customer who asked. One request waits per subscription: the bill group's
lock orders concurrent asks, and a partial unique index refuses a second pending row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from emails import outbox
from portal import audit, clock, details, events
from portal import subscriptions as rules
from portal.actions import Actor, Conflict, Forbidden, Invalid, NotFound, seller_settings
from portal.config import settings
from portal.db import rowcount
from portal.locks import lock_bill_group
from portal.models import (
    BillGroup,
    ChangeKind,
    Entity,
    Plan,
    RequestState,
    Subscription,
    SubscriptionChangeRequest,
)

PENDING = (
    "A change to this subscription is already waiting for the billing system's answer. "
    "You can ask for another once it has answered."
)


@dataclass(frozen=True)
class Change:
    """A change as checked, ready to be asked for (or shown on the review page)."""

    subscription: Subscription
    kind: ChangeKind
    to_plan: Plan | None = None
    to_quantity: int | None = None
    reason: str | None = None
    comment: str | None = None


def check_change(
    db: Session,
    group: BillGroup,
    subscription_id: int,
    kind: ChangeKind | str,
    *,
    plan_id: int | None = None,
    quantity: int | None = None,
    reason: str | None = None,
    comment: str | None = None,
) -> Change:
    """The rules of a change, without writing: another group's subscription, a kind not
    offered or switched off, a plan not offered, a quantity out of range, a cancellation
    without a reason, a request already waiting are refused."""
    try:
        kind = ChangeKind(kind)
    except ValueError:
        raise Invalid("Choose a change.", "kind") from None
    subscription = db.scalar(
        select(Subscription).where(
            Subscription.id == subscription_id, Subscription.bill_group_id == group.id
        )
    )
    if subscription is None:
        raise NotFound("There is no such subscription in this account.")
    if not rules.switched_on(group.entity, kind):
        raise Forbidden(f"{kind.label}: {group.entity.name} does not take this change here.")
    if not rules.offered_by_subscription(subscription, kind):
        raise Forbidden(f"{kind.label}: this subscription does not offer this change.")
    if rules.pending(db, [subscription.id]):
        raise Conflict(PENDING)
    change: dict[str, Any] = {}
    if kind == ChangeKind.PLAN:
        options = {plan.id: plan for plan in rules.plan_options(subscription)}
        if plan_id is None or plan_id not in options:
            raise Invalid("Choose one of the plans offered.", "plan")
        change["to_plan"] = options[plan_id]
    elif kind == ChangeKind.QUANTITY:
        low, high = rules.quantity_range(subscription)
        if isinstance(quantity, bool) or not isinstance(quantity, int):
            raise Invalid("Enter a whole number.", "quantity")
        if quantity < low or (high is not None and quantity > high):
            limit = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise Invalid(f"Enter a quantity {limit}.", "quantity")
        if quantity == subscription.quantity:
            raise Invalid("That is the quantity you have now.", "quantity")
        change["to_quantity"] = quantity
    if kind in (ChangeKind.CANCEL_NOW, ChangeKind.CANCEL_AT_TERM_END):
        if reason not in rules.CANCEL_REASONS:
            raise Invalid("Choose why you are cancelling.", "reason")
        change["reason"] = reason
    try:
        change["comment"] = details.clean_text(
            comment, max_length=rules.COMMENT_MAX, what="comment"
        )
    except details.DetailError as exc:
        raise Invalid(exc.message, "comment") from None
    return Change(subscription, kind, **change)


def request_change(
    db: Session,
    actor: Actor,
    group: BillGroup,
    subscription_id: int,
    kind: ChangeKind | str,
    *,
    plan_id: int | None = None,
    quantity: int | None = None,
    reason: str | None = None,
    comment: str | None = None,
) -> SubscriptionChangeRequest:
    """Ask the billing system for a change to one of `group`'s subscriptions, as the
    customer `actor`: checked by check_change under the bill group's lock, stored,
    audited and sent as `subscription.change_requested`. Refused, nothing written, as
    check_change refuses, and when another request got in first (Conflict)."""
    if actor.kind != "customer":
        raise Forbidden("Only a customer asks for a change to a subscription.")
    lock_bill_group(db, group.id)
    change = check_change(
        db,
        group,
        subscription_id,
        kind,
        plan_id=plan_id,
        quantity=quantity,
        reason=reason,
        comment=comment,
    )
    subscription = change.subscription
    request = SubscriptionChangeRequest(
        subscription=subscription,
        bill_group_id=group.id,
        kind=change.kind,
        state=RequestState.REQUESTED,
        from_plan_id=subscription.plan_id,
        from_quantity=subscription.quantity,
        to_plan_id=None if change.to_plan is None else change.to_plan.id,
        to_quantity=change.to_quantity,
        reason=change.reason,
        comment=change.comment,
        requested_by=actor.name,
    )
    try:
        with db.begin_nested():
            db.add(request)
            db.flush()
    except IntegrityError:
        # Another request got in first (the lock makes this rare; the index makes it safe).
        raise Conflict(PENDING) from None
    audit.record(
        db,
        "subscription.change_request",
        "requested",
        **actor.audit(),
        bill_group_id=group.id,
        detail=json.dumps(
            {"request": request.id, "subscription": subscription.id, "kind": change.kind.value}
        ),
    )
    events.subscription_change_requested(db, group, request, actor.event())
    return request


def answer_change(
    db: Session,
    actor: Actor,
    request_id: int,
    *,
    accept: bool,
    reason: str | None = None,
    group: BillGroup | None = None,
) -> SubscriptionChangeRequest:
    """Accept or refuse a request, once (the billing system through the API, or staff by
    hand). `group`: the bill group the face reached it through, if any. A refusal needs
    a reason; a second answer is a Conflict and writes nothing."""
    if actor.kind not in ("api", "staff"):
        raise Forbidden("Only the billing system or staff answer a change request.")
    try:
        answer = details.clean_text(reason, max_length=rules.ANSWER_MAX, what="reason")
    except details.DetailError as exc:
        raise Invalid(exc.message, "reason") from None
    if not accept and answer is None:
        raise Invalid("Say why the change is refused: the customer is told.", "reason")
    request = db.get(SubscriptionChangeRequest, request_id)
    if request is None or (group is not None and request.bill_group_id != group.id):
        raise NotFound("There is no change request with that id.")
    state = RequestState.ACCEPTED if accept else RequestState.REFUSED
    now = clock.now()
    # Conditional: of two answers at once, one finds the request still waiting.
    done = db.execute(
        update(SubscriptionChangeRequest)
        .where(
            SubscriptionChangeRequest.id == request.id,
            SubscriptionChangeRequest.state == RequestState.REQUESTED,
        )
        .values(
            state=state,
            answered_by=actor.label,
            answer_reason=answer,
            answered_at=now,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if rowcount(done) != 1:
        db.refresh(request)
        raise Conflict(
            f"This request was answered already ({request.state.value}"
            f" by {request.answered_by}); an answer cannot be changed.",
            code="already_answered",
        )
    db.refresh(request)
    audit.record(
        db,
        "subscription.change_answer",
        state.value,
        **actor.audit(),
        bill_group_id=request.bill_group_id,
        detail=json.dumps({"request": request.id, "reason": answer})[:500],
    )
    outbox.queue(db, rules.answer_email(request, settings().LOCALE))
    return request


def set_subscription_settings(
    db: Session, actor: Actor, entity: Entity, switches: dict[ChangeKind, bool]
) -> dict[str, list[bool]]:
    """Staff switch each kind of change on or off for a seller; the changes, audited."""
    if actor.kind != "staff":
        raise Forbidden("Only staff change a seller's subscription settings.")
    unknown = set(switches) - set(ChangeKind)
    if unknown:
        raise Invalid("Unknown kind of change.", "kind")
    wanted = {f"allow_change_{kind.value}": bool(on) for kind, on in switches.items()}
    return seller_settings.change(db, actor, entity, "entity.subscription_settings", wanted)
