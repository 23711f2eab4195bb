"""A bill group's billing and shipping contacts, whoever changes them: its customer on
the contacts page, the billing system through the API or an import line. One set of
field rules (portal.details.CONTACT) for all of them; what differs is who is trusted
with the billing contact's address (portal.billing_contact)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import billing_contact, details, events, notices
from portal.actions import Actor, TooMany
from portal.actions.details import record_change
from portal.models import BillGroup, Contact, ContactKind


@dataclass(frozen=True)
class Saved:
    """The contact as saved; `created` if it is new, `changed` the fields that changed
    (empty: nothing was written), `named` how a newly named billing contact address was
    emailed its confirmation link (None: no address was named)."""

    contact: Contact
    created: bool
    changed: tuple[str, ...]
    named: billing_contact.Named | None = None


def update_contact(
    db: Session,
    actor: Actor,
    group: BillGroup,
    kind: ContactKind,
    values: Mapping[str, Any],
    *,
    same_as_billing: bool = False,
    defer_flush: bool = False,
) -> Saved:
    """Check every field by its rule (InvalidFields names each wrong one; nothing is
    written) and save the contact. `same_as_billing` (a shipping contact) takes the
    address from the billing contact, if there is one.

    A customer's save is audited, announced to the billing contact and evented, and a
    new billing contact address waits for its mailbox to confirm it (TooMany over the
    daily limit of named addresses). The billing system is trusted: its values are
    stored as sent, the address as confirmed; the API audits its writes itself and the
    import audits its run, and neither is evented back to the billing system."""
    values = dict(values)
    if kind == ContactKind.SHIPPING and same_as_billing:
        billing = group.contact(ContactKind.BILLING)
        if billing is not None:
            values |= {field: getattr(billing, field) for field in details.ADDRESS_FIELDS}
    new = details.checked(details.CONTACT, values)
    if actor.kind != "customer":
        return _set(db, actor, group, kind, new, defer_flush)
    if kind == ContactKind.BILLING:
        return _save_billing(db, actor, group, new)
    return _save_shipping(db, actor, group, new)


def _set(
    db: Session,
    actor: Actor,
    group: BillGroup,
    kind: ContactKind,
    new: dict[str, Any],
    defer_flush: bool,
) -> Saved:
    """The billing system's write: idempotent (the same values twice change nothing,
    not even updated_at), flushed unless the import defers its flushes (`defer_flush`:
    it flushes many records at once, see portal.sync.upsert.Batch)."""
    record = db.scalar(
        select(Contact).where(Contact.bill_group_id == group.id, Contact.kind == kind)
    )
    created = record is None
    if record is None:
        record = Contact(bill_group=group, kind=kind)
    changed = tuple(key for key, value in new.items() if getattr(record, key) != value)
    before = {key: getattr(record, key) for key in new} if not created else {}
    for key in changed:
        setattr(record, key, new[key])
    if created:
        db.add(record)
    if not defer_flush:
        db.flush()
    if changed and not created:
        # The billing system changed a contact the customer knows: in the change history,
        # and told to the billing contact (the address as it was before).
        notices.details_changed(
            db,
            group,
            actor,
            f"{kind.value} contact",
            [(key, before[key], new[key]) for key in changed],
            [before["email"]]
            if kind == ContactKind.BILLING and before["email"]
            else notices.recipients(group),
        )
    return Saved(record, created, changed)


def _save_shipping(db: Session, actor: Actor, group: BillGroup, new: dict[str, Any]) -> Saved:
    to = notices.recipients(group)
    existing = group.contact(ContactKind.SHIPPING)
    contact = existing or Contact(bill_group=group, kind=ContactKind.SHIPPING, name=new["name"])
    before = {key: getattr(existing, key) for key in new} if existing else {}
    for key, value in new.items():
        setattr(contact, key, value)
    db.add(contact)
    changed = record_change(db, actor, group, "contact.shipping.update", before, new)
    if changed:
        notices.details_changed(
            db,
            group,
            actor,
            "shipping contact",
            [(key, before.get(key), new[key]) for key in changed],
            to,
        )
        events.contact_updated(db, group, contact, actor.event(), changed)
    return Saved(contact, existing is None, tuple(changed))


def _save_billing(db: Session, actor: Actor, group: BillGroup, new: dict[str, Any]) -> Saved:
    """Its address changes at once only to the confirmed one or to none; a new address
    waits, as pending_email, for its mailbox to confirm it, and meanwhile the notices go
    to the confirmed one (portal.billing_contact)."""
    existing = billing_contact.lock(db, group)
    to = [existing.email] if existing and existing.email else []
    stored = ("pending_email", *new)
    before = {key: getattr(existing, key) for key in stored} if existing else {}
    asked = new.pop("email")
    savepoint = db.begin_nested()
    contact = existing or Contact(bill_group=group, kind=ContactKind.BILLING, name=new["name"])
    for key, value in new.items():
        setattr(contact, key, value)
    db.add(contact)
    named: billing_contact.Named | None = None
    if asked is None or asked == contact.email:
        contact.email, contact.pending_email = asked, None
        billing_contact.retire(db, group)
    elif asked != contact.pending_email:
        try:
            named = billing_contact.name_address(db, group, contact, asked, actor.name)
        except billing_contact.TooManyNamed as exc:
            savepoint.rollback()
            raise TooMany(exc.message, field="email", retry_after=exc.retry_after) from None
    after = {key: getattr(contact, key) for key in stored}
    changed = record_change(db, actor, group, "contact.billing.update", before, after)
    if not changed:
        savepoint.rollback()
        return Saved(contact, False, ())
    savepoint.commit()
    notices.details_changed(
        db,
        group,
        actor,
        "billing contact",
        [(key, before.get(key), after[key]) for key in changed],
        to,
    )
    # The billing system hears of a new address when it is confirmed, not before.
    shown = [key for key in changed if key != "pending_email"]
    if shown:
        events.contact_updated(db, group, contact, actor.event(), shown)
    return Saved(contact, existing is None, tuple(changed), named)
