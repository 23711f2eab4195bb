"""The webhook events, one function each: what happened and the record it happened to,
as the API serialises it. Each queues in the caller's transaction (portal.webhooks)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from portal import webhooks
from portal.models import AccessRule, BillGroup, Contact, PaymentMethod
from portal.sync import serialize


def customer(email: str) -> dict[str, Any]:
    return {"type": "customer", "email": email}


def staff(email: str) -> dict[str, Any]:
    return {"type": "staff", "email": email}


def api_key(name: str) -> dict[str, Any]:
    return {"type": "api", "key": name}


def signed_in(db: Session, group: BillGroup, email: str) -> None:
    webhooks.emit(db, "portal.signed_in", group, None, actor=customer(email))


def contact_updated(
    db: Session, group: BillGroup, contact: Contact, actor: dict[str, Any], changed: list[str]
) -> None:
    db.flush()  # timestamps and ids, as the API would show them
    webhooks.emit(
        db, "contact.updated", group, serialize.contact(contact), actor=actor, changed=changed
    )


def billing_details_updated(
    db: Session, group: BillGroup, actor: dict[str, Any], changed: list[str]
) -> None:
    obj = {key: getattr(group, key) for key in ("po_number", "vat_number", "registration_number")}
    webhooks.emit(db, "billing_details.updated", group, obj, actor=actor, changed=changed)


def payment_method_added(
    db: Session, group: BillGroup, method: PaymentMethod, actor: dict[str, Any]
) -> None:
    db.flush()
    webhooks.emit(db, "payment_method.added", group, serialize.payment_method(method), actor=actor)


def payment_method_default_changed(
    db: Session, group: BillGroup, method: PaymentMethod, actor: dict[str, Any]
) -> None:
    db.flush()
    webhooks.emit(
        db,
        "payment_method.default_changed",
        group,
        serialize.payment_method(method),
        actor=actor,
    )


def access_rule_created(
    db: Session, group: BillGroup, rule: AccessRule, actor: dict[str, Any]
) -> None:
    db.flush()
    webhooks.emit(db, "access_rule.created", group, serialize.access_rule(rule), actor=actor)


def access_rule_deleted(
    db: Session, group: BillGroup, rule: dict[str, Any], actor: dict[str, Any]
) -> None:
    """`rule` as serialised before the delete: the row is gone by now."""
    webhooks.emit(db, "access_rule.deleted", group, rule, actor=actor)
