"""Writing what the billing system sends: one idempotent upsert per record, keyed by the
billing system's external id. Sending the same record twice changes nothing the second
time (not even updated_at). The caller commits; on SyncError nothing has been flushed
that the caller must undo beyond a rollback.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from portal import notices, payments
from portal.actions import Actor, accounts, invoice_copies
from portal.models import (
    Account,
    BillGroup,
    CreditApplication,
    CreditNote,
    Entity,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    Payment,
    PaymentApplication,
    PaymentMethod,
    PaymentSource,
    PaymentStatus,
    Plan,
    Product,
    Subscription,
    SubscriptionItem,
)
from portal.models._base import ExternalIdMixin
from portal.sync import schemas

T = TypeVar("T", bound=ExternalIdMixin)
# The records that belong to one bill group for good.
G = TypeVar("G", Subscription, Invoice, Payment, PaymentMethod, CreditNote)


class SyncError(Exception):
    """A record that cannot be written. `code` says which kind, for the HTTP status:
    "invalid" (422: a reference or value the database refuses), "conflict" (409: it
    clashes with another record)."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


@dataclass(frozen=True)
class Upserted:
    record: Any
    created: bool
    changed: bool


ABSENT = object()


@dataclass(frozen=True)
class Batch:
    """How a bulk import steers the upserts, passed to each one explicitly; the API and
    a single import line pass nothing (NO_BATCH) and every function behaves as it
    always has.

    `lookups`: {(model, external id): record or ABSENT} that find() reads before the
    database, and adds the records it finds to. Its owner empties it whenever a
    savepoint is rolled back, and drops its ABSENT entries before anything can have
    created them. `defer_flush`: the caller flushes (and holds autoflush off) for many
    records at once, and redoes them one by one if that flush or any record fails; the
    unique keys then refuse a clash at that flush instead of a query before it.
    """

    lookups: dict[tuple[type, str], Any] | None = None
    defer_flush: bool = False


NO_BATCH = Batch()


def find(db: Session, model: type[T], external_id: str, batch: Batch = NO_BATCH) -> T | None:
    lookups = batch.lookups
    if lookups is not None:
        hit = lookups.get((model, external_id))
        if hit is not None:
            return None if hit is ABSENT else cast(T, hit)
    record = db.scalar(select(model).where(model.external_id == external_id))
    if lookups is not None and record is not None:
        lookups[(model, external_id)] = record
    return record


def _reference(
    db: Session, model: type[T], external_id: str, field: str, batch: Batch = NO_BATCH
) -> T:
    record = find(db, model, external_id, batch)
    if record is None:
        what = model.__tablename__.removesuffix("s").replace("_", " ")  # type: ignore[attr-defined]
        raise SyncError("invalid", f"There is no {what} with external id {external_id!r}.", field)
    return record


def _assign(record: Any, values: dict[str, Any]) -> bool:
    """Set only what differs, so an unchanged record is not written at all."""
    changed = False
    for key, value in values.items():
        if getattr(record, key) != value:
            setattr(record, key, value)
            changed = True
    return changed


def _get_or_new(
    db: Session, model: type[T], external_id: str, batch: Batch = NO_BATCH
) -> tuple[T, bool]:
    record = find(db, model, external_id, batch)
    if record is not None:
        return record, False
    record = model(external_id=external_id)  # type: ignore[call-arg]
    return record, True


def _finish(
    db: Session, record: Any, created: bool, changed: bool, batch: Batch = NO_BATCH
) -> Upserted:
    if created:
        db.add(record)
    if not batch.defer_flush:
        db.flush()
    return Upserted(record, created, created or changed)


def _upsert(
    db: Session, model: type[Any], external_id: str, values: dict[str, Any], batch: Batch
) -> Upserted:
    """A record that is only its own columns: found or made, assigned, flushed."""
    record, created = _get_or_new(db, model, external_id, batch)
    changed = _assign(record, values)
    return _finish(db, record, created, changed, batch)


# --- the records ----------------------------------------------------------------------


def entity(
    db: Session, external_id: str, body: schemas.EntityIn, *, batch: Batch = NO_BATCH
) -> Upserted:
    return _upsert(db, Entity, external_id, body.model_dump(), batch)


# Accounts and bill groups are the staff forms' records too: found here by external id,
# written by the same actions (portal.actions.accounts), which take the actor.


def account(
    db: Session,
    external_id: str,
    body: schemas.AccountIn,
    *,
    actor: Actor,
    batch: Batch = NO_BATCH,
) -> Upserted:
    record = find(db, Account, external_id, batch)
    if record is None:
        record = accounts.create_account(
            db, actor, name=body.name, external_id=external_id, defer_flush=batch.defer_flush
        )
        return Upserted(record, True, True)
    changed = accounts.update_account(
        db, actor, record, name=body.name, external_id=external_id, defer_flush=batch.defer_flush
    )
    return Upserted(record, False, bool(changed))


def bill_group(
    db: Session,
    external_id: str,
    body: schemas.BillGroupIn,
    *,
    actor: Actor,
    batch: Batch = NO_BATCH,
) -> Upserted:
    owner = _reference(db, Account, body.account, "account", batch)
    seller = _reference(db, Entity, body.entity, "entity", batch)
    values = body.model_dump(exclude={"account", "entity"}) | {"entity_id": seller.id}
    record = find(db, BillGroup, external_id, batch)
    if record is None:
        values["external_id"] = external_id
        created = accounts.create_bill_group(
            db, actor, owner, values, defer_flush=batch.defer_flush
        )
        return Upserted(created, True, True)
    changed = accounts.update_bill_group(db, actor, record, values | {"account_id": owner.id})
    return _finish(db, record, False, bool(changed), batch)


def product(
    db: Session, external_id: str, body: schemas.ProductIn, *, batch: Batch = NO_BATCH
) -> Upserted:
    seller = _reference(db, Entity, body.entity, "entity", batch)
    values = body.model_dump(exclude={"entity"}) | {"entity_id": seller.id}
    return _upsert(db, Product, external_id, values, batch)


def _products(
    db: Session,
    group: BillGroup,
    external_ids: Sequence[str | None],
    field: str,
    batch: Batch = NO_BATCH,
) -> dict[str, Product]:
    """The products named, each checked to belong to the bill group's entity."""
    wanted = {ext for ext in external_ids if ext is not None}
    lookups = batch.lookups
    found: dict[str, Product] = {}
    if lookups is not None:
        found = {
            ext: lookups[(Product, ext)]
            for ext in wanted
            if lookups.get((Product, ext), ABSENT) is not ABSENT
        }
    if wanted - found.keys():
        for p in db.scalars(select(Product).where(Product.external_id.in_(wanted - found.keys()))):
            if p.external_id is not None:
                found[p.external_id] = p
                if lookups is not None:
                    lookups[(Product, p.external_id)] = p
    for index, ext in enumerate(external_ids):
        if ext is None:
            continue
        item = found.get(ext)
        if item is None:
            raise SyncError(
                "invalid",
                f"There is no product with external id {ext!r}.",
                f"{field}.{index}.product",
            )
        if item.entity_id != group.entity_id:
            raise SyncError(
                "invalid",
                f"Product {ext!r} belongs to another seller than the bill group.",
                f"{field}.{index}.product",
            )
    return found


def _in_group(
    db: Session, model: type[G], external_id: str, group: BillGroup, what: str, batch: Batch
) -> tuple[G, bool]:
    """The record with that external id, or a new one (True); an existing record must
    already belong to `group`: records never move between bill groups."""
    record, created = _get_or_new(db, model, external_id, batch)
    if not created and record.bill_group_id != group.id:
        raise SyncError(
            "conflict", f"This {what} belongs to another bill group; it cannot move.", "bill_group"
        )
    return record, created


def _billed_in(group: BillGroup, currency: str | None, what: str) -> None:
    """Money for a bill group is in its currency (None: the record leaves it to the group)."""
    if currency is not None and currency != group.currency:
        raise SyncError(
            "invalid",
            f"The bill group is billed in {group.currency}; the {what} must be too.",
            "currency",
        )


def plan(
    db: Session, external_id: str, body: schemas.PlanIn, *, batch: Batch = NO_BATCH
) -> Upserted:
    seller = _reference(db, Entity, body.entity, "entity", batch)
    values = body.model_dump(exclude={"entity"}) | {"entity_id": seller.id}
    record = find(db, Plan, external_id, batch)
    if record is not None and record.currency != body.currency and _plan_in_use(db, record):
        raise SyncError(
            "conflict",
            "Subscriptions use this plan in its currency; make a new plan for another currency.",
            "currency",
        )
    return _upsert(db, Plan, external_id, values, batch)


def _plan_in_use(db: Session, record: Plan) -> bool:
    return (
        db.scalar(select(func.count(Subscription.id)).where(Subscription.plan_id == record.id)) or 0
    ) > 0


def _plan(db: Session, group: BillGroup, external_id: str, field: str, batch: Batch) -> Plan:
    """A plan the subscription may name: one of its bill group's seller, in its currency."""
    found = _reference(db, Plan, external_id, field, batch)
    if found.entity_id != group.entity_id:
        raise SyncError(
            "invalid", f"Plan {external_id!r} belongs to another seller than the bill group.", field
        )
    if found.currency != group.currency:
        raise SyncError(
            "invalid",
            f"Plan {external_id!r} is priced in {found.currency}; "
            f"the bill group is billed in {group.currency}.",
            field,
        )
    return found


def _allowed_values(body: schemas.AllowedChangesIn) -> dict[str, Any]:
    return {
        "quantity_min": body.quantity_min,
        "quantity_max": body.quantity_max,
        "allow_cancel_now": body.cancel_now,
        "allow_cancel_at_term_end": body.cancel_at_term_end,
        "allow_pause": body.pause,
        "allow_resume": body.resume,
        "allow_convert_trial": body.convert_trial,
        "allow_extend_trial": body.extend_trial,
    }


def subscription(
    db: Session, external_id: str, body: schemas.SubscriptionIn, *, batch: Batch = NO_BATCH
) -> Upserted:
    group = _reference(db, BillGroup, body.bill_group, "bill_group", batch)
    record, created = _in_group(db, Subscription, external_id, group, "subscription", batch)
    found = _products(db, group, [item.product for item in body.items], "items", batch)
    on_plan = None if body.plan is None else _plan(db, group, body.plan, "plan", batch)
    options = [
        _plan(db, group, ext, f"allowed_changes.plans.{index}", batch)
        for index, ext in enumerate(body.allowed_changes.plans)
    ]
    values = body.model_dump(exclude={"bill_group", "items", "plan", "allowed_changes"}) | {
        "bill_group_id": group.id,
        **_allowed_values(body.allowed_changes),
    }
    changed = _assign(record, values)
    if created or record.plan_id != (None if on_plan is None else on_plan.id):
        record.plan = on_plan
        changed = True
    if sorted(p.id for p in record.allowed_plans) != sorted(p.id for p in options):
        record.allowed_plans = sorted(options, key=lambda p: p.id)
        changed = True
        _touch(record)
    wanted = [(found[i.product].id, i.quantity, i.unit_price_minor) for i in body.items]
    current = [(i.product_id, i.quantity, i.unit_price_minor) for i in record.items]
    if wanted != current:
        _replace(db, record.items, created)
        for product_id, quantity, unit_price in wanted:
            record.items.append(
                SubscriptionItem(
                    product_id=product_id, quantity=quantity, unit_price_minor=unit_price
                )
            )
        changed = True
        _touch(record)
    return _finish(db, record, created, changed, batch)


def _replace(db: Session, children: list[Any], created: bool) -> None:
    """Remove the old children and flush, so their unique keys are free for the new."""
    children.clear()
    if not created:
        db.flush()


def _touch(record: Any) -> None:
    # A change to the children only is still a change to the record.
    record.updated_at = dt.datetime.now(dt.UTC)


def invoice(
    db: Session, external_id: str, body: schemas.InvoiceIn, *, batch: Batch = NO_BATCH
) -> Upserted:
    group = _reference(db, BillGroup, body.bill_group, "bill_group", batch)
    _billed_in(group, body.currency, "invoice")
    record, created = _in_group(db, Invoice, external_id, group, "invoice", batch)
    same_number = select(Invoice.id).where(
        Invoice.entity_id == group.entity_id, Invoice.number == body.number
    )
    if not created:
        same_number = same_number.where(Invoice.id != record.id)
    # Deferred, the unique key (entity_id, number) refuses a clash at the flush, and the
    # caller redoes the record alone, here.
    if not batch.defer_flush and db.scalar(same_number.limit(1)) is not None:
        raise SyncError(
            "conflict",
            f"Invoice number {body.number} is already used by another invoice of this seller.",
            "number",
        )
    found = _products(db, group, [line.product for line in body.lines], "lines", batch)
    values = body.model_dump(exclude={"bill_group", "lines", "currency", "total_minor"})
    values |= {"bill_group_id": group.id, "entity_id": group.entity_id, "currency": group.currency}
    wanted = [
        (
            position,
            line.description,
            line.quantity,
            line.unit_price_minor,
            line.amount_minor,
            line.tax_rate_bp,
            line.tax_minor,
            found[line.product].id if line.product else None,
            line.period_start,
            line.period_end,
        )
        for position, line in enumerate(body.lines, start=1)
    ]
    current = [
        (
            line.position,
            line.description,
            line.quantity,
            line.unit_price_minor,
            line.amount_minor,
            line.tax_rate_bp,
            line.tax_minor,
            line.product_id,
            line.period_start,
            line.period_end,
        )
        for line in record.lines
    ]
    lines_changed = wanted != current
    if lines_changed:
        _replace(db, record.lines, created)
        for row in wanted:
            record.lines.append(
                InvoiceLine(
                    position=row[0],
                    description=row[1],
                    quantity=row[2],
                    unit_price_minor=row[3],
                    amount_minor=row[4],
                    tax_rate_bp=row[5],
                    tax_minor=row[6],
                    product_id=row[7],
                    period_start=row[8],
                    period_end=row[9],
                )
            )
    subtotal = sum(line.amount_minor for line in body.lines)
    tax = sum(line.tax_minor for line in body.lines)
    values |= {"subtotal_minor": subtotal, "tax_minor": tax, "total_minor": subtotal + tax}
    if body.status.value == "void" and record.voided_at is None:
        values["voided_at"] = dt.datetime.now(dt.UTC)
    elif body.status.value != "void":
        values["voided_at"] = None
    if not created:
        _keep_paid_in_portal(db, record, values)
    was_void = not created and record.voided_at is not None
    changed = _assign(record, values)
    if lines_changed and not changed and not created:
        _touch(record)
    if created or (was_void and record.voided_at is None):
        # A new invoice (or one the billing system took back from void): its copies to
        # the confirmed invoice-copy recipients, in this same transaction.
        invoice_copies.queue_for_invoice(db, record, group)
    return _finish(db, record, created, changed or lines_changed, batch)


def _keep_paid_in_portal(db: Session, record: Invoice, values: dict[str, Any]) -> None:
    """What was paid in the portal stays paid when the billing system has not heard yet.

    A customer pays an invoice by card (or applies an unapplied payment to it) and the
    billing system, before it has read the `payment.succeeded` webhook, sends the invoice
    again with nothing paid: taken as sent, the invoice would be open again and could be
    paid twice. So `amount_paid_minor` is never below what succeeded portal payments and
    portal-applied credit put on the invoice (the billing system's figure, once it has
    recorded them, includes them), and an invoice that leaves nothing to pay is PAID.
    The billing system still voids an invoice, and a refund is its to apply."""
    if values["status"] == InvoiceStatus.VOID:
        return
    paid_here = db.scalar(
        select(func.coalesce(func.sum(PaymentApplication.amount_minor), 0))
        .join(Payment, Payment.id == PaymentApplication.payment_id)
        .where(
            PaymentApplication.invoice_id == record.id,
            Payment.status == PaymentStatus.SUCCEEDED,
            or_(Payment.source == PaymentSource.PORTAL, PaymentApplication.applied_by.is_not(None)),
        )
    )
    room = values["total_minor"] - record.amount_credited_minor
    floor = min(int(paid_here or 0), room)
    if values["amount_paid_minor"] >= floor:
        return
    values["amount_paid_minor"] = floor
    if floor == room and values["status"] == InvoiceStatus.OPEN:
        values["status"] = InvoiceStatus.PAID


def payment(
    db: Session, external_id: str, body: schemas.PaymentIn, *, batch: Batch = NO_BATCH
) -> Upserted:
    group = _reference(db, BillGroup, body.bill_group, "bill_group", batch)
    _billed_in(group, body.currency, "payment")
    record, created = _in_group(db, Payment, external_id, group, "payment", batch)
    method_id = None
    if body.payment_method is not None:
        method = _reference(db, PaymentMethod, body.payment_method, "payment_method", batch)
        if method.bill_group_id != group.id:
            raise SyncError(
                "invalid", "That payment method belongs to another bill group.", "payment_method"
            )
        method_id = method.id
    invoices = {
        inv.external_id: inv
        for inv in db.scalars(
            select(Invoice).where(Invoice.external_id.in_([a.invoice for a in body.applications]))
        )
    }
    wanted = []
    for index, application in enumerate(body.applications):
        target = invoices.get(application.invoice)
        field = f"applications.{index}.invoice"
        if target is None:
            raise SyncError(
                "invalid", f"There is no invoice with external id {application.invoice!r}.", field
            )
        if target.bill_group_id != group.id:
            raise SyncError("invalid", "That invoice belongs to another bill group.", field)
        wanted.append((target.id, application.amount_minor))
    rows = _with_portal_applications(record, wanted, body.amount_minor)
    values = body.model_dump(exclude={"bill_group", "payment_method", "applications"})
    values |= {"bill_group_id": group.id, "payment_method_id": method_id}
    changed = _assign(record, values)
    current = sorted((a.invoice_id, a.amount_minor, a.applied_by) for a in record.applications)
    if rows != current:
        _replace(db, record.applications, created)
        for invoice_id, amount, applied_by in rows:
            record.applications.append(
                PaymentApplication(
                    invoice_id=invoice_id, amount_minor=amount, applied_by=applied_by
                )
            )
        if not changed and not created:
            _touch(record)
        changed = True
    return _finish(db, record, created, changed, batch)


def _with_portal_applications(
    record: Payment, wanted: list[tuple[int, int]], amount_minor: int
) -> list[tuple[int, int, str | None]]:
    """The billing system's applications of a payment, and those a customer made in the
    portal that it has not reported yet: a portal application stays until the billing
    system sends one at least as large to the same invoice (otherwise the payment would
    look unapplied again, and its credit could be applied twice). Refused when the two
    together come to more than the payment."""
    rows: dict[int, tuple[int, str | None]] = {}
    for invoice_id, amount in wanted:
        before = rows.get(invoice_id, (0, None))[0]
        rows[invoice_id] = (before + amount, None)
    for application in record.applications:
        reported = rows.get(application.invoice_id, (0, None))[0]
        if application.applied_by and application.amount_minor > reported:
            rows[application.invoice_id] = (application.amount_minor, application.applied_by)
    if sum(amount for amount, _by in rows.values()) > amount_minor:
        raise SyncError(
            "conflict",
            "The applications come to more than the payment, counting what customers "
            "applied in the portal (credit.applied webhooks).",
            "applications",
        )
    return sorted((invoice_id, amount, by) for invoice_id, (amount, by) in rows.items())


def payment_method(
    db: Session,
    external_id: str,
    body: schemas.PaymentMethodIn,
    *,
    actor: Actor | None = None,
    batch: Batch = NO_BATCH,
) -> Upserted:
    group = _reference(db, BillGroup, body.bill_group, "bill_group", batch)
    record, created = _in_group(db, PaymentMethod, external_id, group, "payment method", batch)
    clash = db.scalar(
        select(PaymentMethod.id).where(
            PaymentMethod.gateway == body.gateway,
            PaymentMethod.gateway_token == body.gateway_token,
        )
    )
    if clash is not None and (created or clash != record.id):
        raise SyncError(
            "conflict", "Another payment method already has that gateway token.", "gateway_token"
        )
    values = body.model_dump(exclude={"bill_group", "is_default"}) | {"bill_group_id": group.id}
    becomes_default = body.is_default and not record.is_default
    before = group.default_payment_method if becomes_default else None
    changed = _assign(record, values)
    if created:
        record.is_default = False
        db.add(record)
        db.flush()
    if body.is_default and not record.is_default:
        # The same path as the customer's "make default": one default, under a lock.
        payments.set_default(db, group, record.id)
        changed = True
    elif not body.is_default and record.is_default:
        record.is_default = False
        changed = True
    db.flush()
    if actor is not None:
        _payment_method_history(db, actor, group, record, created, becomes_default, before)
    return Upserted(record, created, created or changed)


def _payment_method_history(
    db: Session,
    actor: Actor,
    group: BillGroup,
    record: PaymentMethod,
    created: bool,
    becomes_default: bool,
    before: PaymentMethod | None,
) -> None:
    """A method the billing system added, or made the default: in the change history,
    and told to the billing contact, except in an import (a bulk load, not a change the
    customer must hear of one by one)."""
    told: list[notices.FieldChange] = []
    if created:
        told.append(("payment method", None, f"added: {payments.method_label(record)}"))
    if becomes_default and before is not record and not (created and before is None):
        old = payments.method_label(before) if before is not None else None
        told.append(("default payment method", old, payments.method_label(record)))
    if told:
        to = [] if actor.kind == "import" else notices.recipients(group)
        notices.details_changed(db, group, actor, "payment methods", told, to)


def credit_note(
    db: Session, external_id: str, body: schemas.CreditNoteIn, *, batch: Batch = NO_BATCH
) -> Upserted:
    """A credit note as the billing system issues it. What customers applied in the
    portal stays applied: the stored amount_applied_minor is never below it (the larger
    of that and what the billing system reports), and the amount never drops under it."""
    group = _reference(db, BillGroup, body.bill_group, "bill_group", batch)
    _billed_in(group, body.currency, "credit note")
    record, created = _in_group(db, CreditNote, external_id, group, "credit note", batch)
    same_number = select(CreditNote.id).where(
        CreditNote.bill_group_id == group.id, CreditNote.number == body.number
    )
    if not created:
        same_number = same_number.where(CreditNote.id != record.id)
    if not batch.defer_flush and db.scalar(same_number.limit(1)) is not None:
        raise SyncError(
            "conflict",
            f"Credit note number {body.number} is already used in this bill group.",
            "number",
        )
    applied_here = 0
    if not created:
        applied_here = (
            db.scalar(
                select(func.coalesce(func.sum(CreditApplication.amount_minor), 0)).where(
                    CreditApplication.credit_note_id == record.id
                )
            )
            or 0
        )
    if body.amount_minor < applied_here:
        raise SyncError(
            "conflict",
            f"{applied_here} of this credit note has been applied in the portal; its amount "
            "cannot be less.",
            "amount_minor",
        )
    values = body.model_dump(exclude={"bill_group", "voided", "amount_applied_minor"})
    values |= {
        "bill_group_id": group.id,
        "amount_applied_minor": max(body.amount_applied_minor, applied_here),
    }
    if body.voided and record.voided_at is None:
        values["voided_at"] = dt.datetime.now(dt.UTC)
    elif not body.voided:
        values["voided_at"] = None
    changed = _assign(record, values)
    return _finish(db, record, created, changed, batch)


# What each resource name upserts with; contacts are keyed by bill group and kind instead,
# and written by portal.actions.contacts.update_contact.
# Each takes (db, external id, its resource's body, *, batch) and returns Upserted; those
# in BY_ACTION also take the actor (call them through put()).
UPSERTS: dict[str, Callable[..., Upserted]] = {
    "entities": entity,
    "accounts": account,
    "bill-groups": bill_group,
    "products": product,
    "plans": plan,
    "subscriptions": subscription,
    "invoices": invoice,
    "payments": payment,
    "payment-methods": payment_method,
    "credit-notes": credit_note,
}
# The resources whose upserts are actions the staff forms make too.
BY_ACTION = frozenset({"accounts", "bill-groups", "payment-methods"})


def put(
    db: Session,
    actor: Actor,
    resource: str,
    external_id: str,
    body: schemas.Body,
    *,
    batch: Batch = NO_BATCH,
) -> Upserted:
    """Write one record as the API or an import line sends it, as `actor`."""
    write = UPSERTS[resource]
    if resource in BY_ACTION:
        return write(db, external_id, body, actor=actor, batch=batch)
    return write(db, external_id, body, batch=batch)
