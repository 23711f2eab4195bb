"""A bill group's payment methods as its customer adds them and chooses the default.
Only the gateway's token and display details are stored (portal.payments); the
billing system writes its own through portal.sync.upsert.payment_method, which takes
the same default under the same lock (payments.set_default)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session

from portal import audit, events, locks, notices, payments
from portal.actions import Actor, NotFound
from portal.models import BillGroup, PaymentMethod
from portal.payments import method_label


def add_payment_method(
    db: Session,
    actor: Actor,
    group: BillGroup,
    attached: payments.PaymentMethodDetails,
    *,
    make_default: bool,
) -> PaymentMethod:
    """Store what the gateway attached (the default if asked, or if it is the first),
    audit it, queue `payment_method.added` and the notice to the billing contact."""
    to = notices.recipients(group)
    before = group.default_payment_method
    method = payments.add_payment_method(db, group, attached, make_default=make_default)
    _audit(db, actor, group, "payment_method.add", method)
    told: list[notices.FieldChange] = [("payment method", None, f"added: {method_label(method)}")]
    if method.is_default and before is not None and before is not method:
        told.append(("default payment method", _label(before), method_label(method)))
    notices.details_changed(db, group, actor, "payment methods", told, to)
    events.payment_method_added(db, group, method, actor.event())
    return method


def gateway_customer(db: Session, group: BillGroup, create: Callable[[], str]) -> str:
    """The bill group's customer at the gateway (BillGroup.gateway_customer_ref), made
    with `create` on first use. Under the bill group's lock, read again after taking it:
    of two first requests at once, the second waits and finds the first one's customer
    (and Stripe's idempotency key for the bill group makes the gateway's side agree).
    The caller commits. Not audited: no one's data changes, only our reference."""
    locks.lock_bill_group(db, group.id)
    db.refresh(group, ["gateway_customer_ref"])
    if group.gateway_customer_ref:
        return group.gateway_customer_ref
    group.gateway_customer_ref = create()
    db.flush()
    return group.gateway_customer_ref


def set_default(db: Session, actor: Actor, group: BillGroup, method_id: int) -> PaymentMethod:
    """Make one of the bill group's payment methods its default (NotFound if it has no
    such method), audited, evented and announced."""
    to = notices.recipients(group)
    before = _label(group.default_payment_method)
    try:
        method = payments.set_default(db, group, method_id)
    except LookupError as exc:
        raise NotFound(str(exc)) from None
    _audit(db, actor, group, "payment_method.default", method)
    notices.details_changed(
        db,
        group,
        actor,
        "payment methods",
        [("default payment method", before, method_label(method))],
        to,
    )
    events.payment_method_default_changed(db, group, method, actor.event())
    return method


def _label(method: PaymentMethod | None) -> str | None:
    """A method as the change alert shows it: brand and last four, never more."""
    return None if method is None else method_label(method)


def _audit(db: Session, actor: Actor, group: BillGroup, action: str, method: PaymentMethod) -> None:
    audit.record(
        db,
        action,
        "changed",
        **actor.audit(),
        bill_group_id=group.id,
        detail=f"{method.type.value} {method.brand or ''} ending {method.last4} (id {method.id})",
    )
