"""The webhook events, one function each: what happened and the record it happened to,
as the API serialises it. Each queues in the caller's transaction (portal.webhooks)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from portal import webhooks
from portal.models import (
    AccessRule,
    BillGroup,
    Contact,
    CreditNote,
    Dispute,
    Invoice,
    Payment,
    PaymentMethod,
    SubscriptionChangeRequest,
)
from portal.sync import serialize

# Who made a change, as an event names them.
Who = dict[str, Any]
R = TypeVar("R")


def customer(email: str) -> Who:
    return {"type": "customer", "email": email}


def staff(email: str) -> Who:
    return {"type": "staff", "email": email}


def api_key(name: str) -> Who:
    return {"type": "api", "key": name}


def system(name: str = "portal") -> Who:
    return {"type": "system", "name": name}


def _written(
    db: Session,
    event: str,
    group: BillGroup,
    row: R,
    serialise: Callable[[R], dict[str, Any]],
    actor: Who,
    **extra: Any,
) -> None:
    """Queue `event` about a row this transaction wrote, flushed first: its ids and
    timestamps as the API will show them."""
    db.flush()
    webhooks.emit(db, event, group, serialise(row), actor=actor, **extra)


def signed_in(db: Session, group: BillGroup, email: str) -> None:
    webhooks.emit(db, "portal.signed_in", group, None, actor=customer(email))


def contact_updated(
    db: Session, group: BillGroup, contact: Contact, actor: Who, changed: list[str]
) -> None:
    _written(db, "contact.updated", group, contact, serialize.contact, actor, changed=changed)


def billing_details_updated(db: Session, group: BillGroup, actor: Who, changed: list[str]) -> None:
    obj = {key: getattr(group, key) for key in ("po_number", "vat_number", "registration_number")}
    webhooks.emit(db, "billing_details.updated", group, obj, actor=actor, changed=changed)


def payment_method_added(db: Session, group: BillGroup, method: PaymentMethod, actor: Who) -> None:
    _written(db, "payment_method.added", group, method, serialize.payment_method, actor)


def payment_method_default_changed(
    db: Session, group: BillGroup, method: PaymentMethod, actor: Who
) -> None:
    _written(db, "payment_method.default_changed", group, method, serialize.payment_method, actor)


def access_rule_created(db: Session, group: BillGroup, rule: AccessRule, actor: Who) -> None:
    _written(db, "access_rule.created", group, rule, serialize.access_rule, actor)


def access_rule_updated(
    db: Session, group: BillGroup, rule: AccessRule, actor: Who, changed: list[str]
) -> None:
    """A rule's customer role changed (`changed` is ["role"])."""
    _written(db, "access_rule.updated", group, rule, serialize.access_rule, actor, changed=changed)


def access_rule_deleted(db: Session, group: BillGroup, rule: dict[str, Any], actor: Who) -> None:
    """`rule` as serialised before the delete: the row is gone by now."""
    webhooks.emit(db, "access_rule.deleted", group, rule, actor=actor)


def payment_succeeded(db: Session, group: BillGroup, payment: Payment, actor: Who) -> None:
    _written(db, "payment.succeeded", group, payment, serialize.payment, actor)


def payment_failed(db: Session, group: BillGroup, payment: Payment, actor: Who) -> None:
    _written(db, "payment.failed", group, payment, serialize.payment, actor)


def autopay_changed(db: Session, group: BillGroup, actor: Who) -> None:
    """Automatic payment was turned on or off; the default method it charges, if any."""
    method = group.default_payment_method
    obj = {
        "auto_pay": group.auto_pay,
        "next_billing_date": serialize.iso(group.next_billing_date),
        "payment_method": None if method is None else serialize.payment_method(method),
    }
    webhooks.emit(db, "autopay.changed", group, obj, actor=actor, changed=["auto_pay"])


def credit_applied(
    db: Session,
    group: BillGroup,
    *,
    credit_note: CreditNote | None,
    payment: Payment | None,
    invoice: Invoice,
    amount_minor: int,
    today: dt.date,
    actor: Who,
) -> None:
    """Credit (what was left of a credit note, or an unapplied payment) went to an invoice."""
    db.flush()
    obj = {
        "source": "credit_note" if credit_note is not None else "payment",
        "amount_minor": amount_minor,
        "currency": invoice.currency,
        "credit_note": None if credit_note is None else serialize.credit_note(credit_note),
        "payment": None if payment is None else serialize.payment(payment),
        "invoice": serialize.invoice(invoice, today),
    }
    webhooks.emit(db, "credit.applied", group, obj, actor=actor)


def subscription_change_requested(
    db: Session, group: BillGroup, request: SubscriptionChangeRequest, actor: Who
) -> None:
    """A customer asked for a change to a subscription: accept or refuse it through the API."""
    _written(
        db,
        "subscription.change_requested",
        group,
        request,
        serialize.subscription_change_request,
        actor,
    )


def dispute_event(db: Session, event: str, dispute: Dispute, actor: Who) -> None:
    """dispute.opened, .replied (the customer wrote again), .answered (staff or the
    billing system wrote) or .resolved: the dispute with its whole thread."""
    db.flush()
    db.refresh(dispute, ["messages"])
    _written(db, event, dispute.bill_group, dispute, serialize.dispute, actor)
