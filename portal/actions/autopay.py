"""Automatic payment for a bill group: the customer turns it on (only with a default
payment method) or off; the billing system can set it too, through the bill group's
upsert, which calls this same action. Either way it is audited (who, on or off), the
billing system hears `autopay.changed`, and the change alert goes to the billing contact
(and to the customer who turned it, portal.notices)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from portal import audit, events, notices
from portal.actions import Actor, Invalid
from portal.locks import lock_bill_group
from portal.models import BillGroup, PaymentMethod


def set_autopay(db: Session, actor: Actor, group: BillGroup, enabled: bool) -> bool:
    """Turn automatic payment on or off; whether it changed (False: nothing written).
    A customer can turn it on only with a default payment method."""
    if not isinstance(enabled, bool):
        raise Invalid("Choose on or off.", "enabled")
    lock_bill_group(db, group.id)
    db.refresh(group, ["auto_pay"])
    if group.auto_pay == enabled:
        return False
    if enabled and actor.kind == "customer" and group.default_payment_method is None:
        raise Invalid(
            "Add a payment method and make it the default before turning on automatic payment.",
            "enabled",
        )
    to = notices.recipients(group)
    group.auto_pay = enabled
    db.flush()
    state = "on" if enabled else "off"
    audit.record(
        db,
        "autopay.change",
        "changed",
        **actor.audit(),
        bill_group_id=group.id,
        detail=f"automatic payment turned {state}",
    )
    notices.details_changed(
        db, group, actor, "automatic payment", [("auto_pay", not enabled, enabled)], to
    )
    events.autopay_changed(db, group, actor.event())
    return True


def expiry_warning(group: BillGroup, today: dt.date) -> str | None:
    """A warning when the default card expires before the next billing date (or has
    expired already): automatic payment would then fail."""
    method = group.default_payment_method
    if method is None:
        return None
    ends = expires_on(method)
    if ends is None:
        return None
    due = group.next_billing_date
    if ends < today:
        return f"Your default card expired in {method.expiry}. Add a new card."
    if due is not None and ends < due:
        return (
            f"Your default card expires ({method.expiry}) before the next billing date; "
            "automatic payment will fail unless you add a new card."
        )
    return None


def expires_on(method: PaymentMethod) -> dt.date | None:
    """The last day a card can be charged: the end of its expiry month."""
    if method.exp_month is None or method.exp_year is None:
        return None
    first_of_next = dt.date(method.exp_year + method.exp_month // 12, method.exp_month % 12 + 1, 1)
    return first_of_next - dt.timedelta(days=1)
