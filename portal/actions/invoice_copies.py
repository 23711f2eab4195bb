"""Invoice-copy recipients: the addresses a billing manager adds so that the bill
group's invoices are emailed to them too (an accounts-payable inbox). They are not
access rules and never admit anyone to the portal.

An added address receives nothing but one confirmation email until its mailbox confirms
by the link in it (portal.confirmations: single-use, expiring, stored as a hash, spent
only by a POST). A bill group has at most MAX_RECIPIENTS, and sends at most
CONFIRMATIONS_PER_DAY confirmation emails a day; one address gets at most
CONFIRMATIONS_PER_ADDRESS_PER_DAY from all bill groups together, and an address removed
and added again within CONTACT_NAMED_INTERVAL_HOURS gets its first link back, not another
email. Each change is audited, in the bill
group's change history, and told to the billing contact and to whoever made it
(portal.notices).
"""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from emails import outbox
from emails.render import render
from portal import access, audit, clock, confirmations, links, notices
from portal.actions import Actor, Conflict, Invalid, NotFound, TooMany
from portal.config import settings
from portal.locks import lock_bill_group
from portal.models import (
    BillGroup,
    ContactConfirmation,
    Invoice,
    InvoiceCopy,
    InvoiceCopyRecipient,
)

MAX_RECIPIENTS = 10
CONFIRMATIONS_PER_DAY = 10
# Confirmation emails one address gets a day, from every bill group together.
CONFIRMATIONS_PER_ADDRESS_PER_DAY = 3
PURPOSE = confirmations.INVOICE_COPY
WHAT = "invoice copies"


def recipients(db: Session, group: BillGroup) -> list[InvoiceCopyRecipient]:
    """The bill group's recipients, oldest first."""
    return list(
        db.scalars(
            select(InvoiceCopyRecipient)
            .where(InvoiceCopyRecipient.bill_group_id == group.id)
            .order_by(InvoiceCopyRecipient.id)
        )
    )


def add_recipient(db: Session, actor: Actor, group: BillGroup, raw: str) -> InvoiceCopyRecipient:
    """Add one address (pending) and email it its confirmation link. Invalid for a
    malformed address or a list of them, Conflict for one already there or over the
    limit, TooMany over the daily number of confirmation emails; nothing written then."""
    try:
        address = access.canonical_email(raw)
    except access.AccessError as exc:
        raise Invalid(exc.message, "email") from None
    lock_bill_group(db, group.id)
    where = InvoiceCopyRecipient.bill_group_id == group.id
    existing = db.scalar(
        select(InvoiceCopyRecipient).where(where, InvoiceCopyRecipient.email == address)
    )
    if existing is not None:
        state = "receives invoice copies" if existing.confirmed_at else "is waiting to confirm"
        raise Conflict(f"{address} has already been added: it {state}.", "email", "duplicate")
    if (db.scalar(select(func.count(InvoiceCopyRecipient.id)).where(where)) or 0) >= MAX_RECIPIENTS:
        raise Conflict(
            f"A bill group can send invoice copies to at most {MAX_RECIPIENTS} addresses. "
            "Remove one first.",
            "email",
            "too_many_recipients",
        )
    # Removed and added again lately: the link already sent works again and nothing
    # is sent, so add, remove, add cannot mail one stranger over and over (as for the
    # billing contact, portal.billing_contact.name_address).
    since = clock.now() - dt.timedelta(hours=settings().CONTACT_NAMED_INTERVAL_HOURS)
    recent = confirmations.latest(db, group, PURPOSE, address, since)
    if recent is not None and (recent.confirmed_at is not None or recent.expires_at <= clock.now()):
        # Its mailbox said yes before, or that link has expired: a new one, within the
        # budgets below.
        recent = None
    if recent is None:
        _room_for_one_more(db, group, address)
    savepoint = db.begin_nested()
    recipient = InvoiceCopyRecipient(
        bill_group_id=group.id, email=address, added_by=actor.label, created_at=clock.now()
    )
    db.add(recipient)
    try:
        db.flush()
    except IntegrityError:  # another add of the same address won (the lock makes it rare)
        savepoint.rollback()
        raise Conflict(f"{address} has already been added.", "email", "duplicate") from None
    savepoint.commit()
    if recent is not None:
        recent.retired_at = None
    else:
        hours = settings().CONTACT_CONFIRM_TTL_HOURS
        token, expires = confirmations.issue(db, group, PURPOSE, address, actor.label, hours)
        email = render(
            "invoice_copy_confirm",
            address,
            entity=group.entity,
            bill_group=group,
            added_by=actor.label,
            link=links.portal_url(group, f"/invoice-copies/confirm/{token}"),
            hours=hours,
        )
        outbox.queue(db, email, discard_after=expires)
    _audit(db, actor, group, "invoice_copy.add", "added", address)
    notices.details_changed(
        db,
        group,
        actor,
        WHAT,
        [("recipient added", None, f"{address} (awaiting confirmation)")],
        notices.recipients(group),
    )
    return recipient


def _room_for_one_more(db: Session, group: BillGroup, address: str) -> None:
    """TooMany over the bill group's daily number of confirmation emails, or over the
    number one address gets a day from all bill groups together (one person signed in
    to many bill groups, or to many sellers' portals, must not mail one stranger
    without end)."""
    wait = confirmations.wait_for_room(db, group, PURPOSE, CONFIRMATIONS_PER_DAY)
    if wait:
        raise TooMany(
            "Too many confirmation emails have been sent for this bill group today. "
            "Try again tomorrow.",
            "email",
            retry_after=wait,
        )
    to_address = db.scalar(
        select(func.count(ContactConfirmation.id)).where(
            ContactConfirmation.purpose == PURPOSE,
            ContactConfirmation.email == address,
            ContactConfirmation.created_at > clock.now() - confirmations.DAY,
        )
    )
    if (to_address or 0) >= CONFIRMATIONS_PER_ADDRESS_PER_DAY:
        raise TooMany(
            f"Too many confirmation emails have been sent to {address} today. Try again tomorrow.",
            "email",
            retry_after=int(confirmations.DAY.total_seconds()),
        )


def confirm_recipient(db: Session, group: BillGroup, confirmation_id: int) -> str | None:
    """Spend the confirmation (of twenty racing POSTs one wins) and mark the recipient
    confirmed; its address, or None (link spent, expired, retired, or the recipient
    removed meanwhile: nothing written). The recipient is the actor."""
    lock_bill_group(db, group.id)
    spent = confirmations.spend(db, group, PURPOSE, confirmation_id)
    recipient = (
        None
        if spent is None
        else db.scalar(
            select(InvoiceCopyRecipient).where(
                InvoiceCopyRecipient.bill_group_id == group.id,
                InvoiceCopyRecipient.email == spent,
                InvoiceCopyRecipient.confirmed_at.is_(None),
            )
        )
    )
    if spent is None or recipient is None:
        db.rollback()
        return None
    recipient.confirmed_at = clock.now()
    actor = Actor.customer(spent)
    _audit(db, actor, group, "invoice_copy.confirm", "confirmed", spent)
    notices.details_changed(
        db,
        group,
        actor,
        WHAT,
        [("recipient confirmed", None, spent)],
        notices.recipients(group),
        tell_actor=False,
    )
    return spent


def remove_recipient(db: Session, actor: Actor, group: BillGroup, recipient_id: int) -> str:
    """Remove one of the bill group's recipients (NotFound for another group's); copies
    still waiting for it are not sent. The removed address."""
    lock_bill_group(db, group.id)
    recipient = db.get(InvoiceCopyRecipient, recipient_id) if 0 < recipient_id < 2**63 else None
    if recipient is None or recipient.bill_group_id != group.id:
        raise NotFound("That address does not receive invoice copies of this bill group.")
    return _remove(db, actor, group, recipient, tell_actor=True)


def find_stop(db: Session, group: BillGroup, token: str) -> InvoiceCopy | None:
    """The copy whose "stop sending me copies" link this is, if its recipient is still
    there; None for a forged token, another bill group's, or one already used."""
    if not token or len(token) > 100:
        return None
    copy = db.scalar(
        select(InvoiceCopy)
        .join(Invoice, Invoice.id == InvoiceCopy.invoice_id)
        .where(
            InvoiceCopy.stop_token_hash == confirmations.token_hash(token),
            Invoice.bill_group_id == group.id,
        )
    )
    return copy if copy is not None and copy.recipient_id is not None else None


def stop_copies(db: Session, group: BillGroup, copy_id: int) -> str | None:
    """The POST behind a copy's stop link: remove its recipient. The removed address, or
    None (another bill group's copy, or already removed: nothing written)."""
    lock_bill_group(db, group.id)
    copy = db.get(InvoiceCopy, copy_id)
    if copy is None or copy.recipient_id is None:
        return None
    recipient = db.get(InvoiceCopyRecipient, copy.recipient_id)
    if recipient is None or recipient.bill_group_id != group.id:
        return None
    # The recipient themself, by the link in a copy they received.
    return _remove(db, Actor.customer(recipient.email), group, recipient, tell_actor=False)


def _remove(
    db: Session,
    actor: Actor,
    group: BillGroup,
    recipient: InvoiceCopyRecipient,
    *,
    tell_actor: bool,
) -> str:
    address = recipient.email
    confirmations.retire(db, group, PURPOSE, only=address)
    db.delete(recipient)
    db.flush()
    _audit(db, actor, group, "invoice_copy.remove", "removed", address)
    notices.details_changed(
        db,
        group,
        actor,
        WHAT,
        [("recipient removed", address, None)],
        notices.recipients(group),
        tell_actor=tell_actor,
    )
    return address


def queue_for_invoice(db: Session, invoice: Invoice, group: BillGroup) -> int:
    """In the invoice write's own transaction: a copy for each confirmed recipient that
    has none of this invoice yet (the unique key (invoice, address) backs this, so a
    sync that sends the invoice again queues nothing). How many were queued."""
    if invoice.voided_at is not None:
        return 0
    # No autoflush: an import defers its flushes (portal.sync.upsert.Batch), and a query
    # here must not flush the batch early.
    with db.no_autoflush:
        confirmed = [r for r in recipients(db, group) if r.confirmed_at is not None]
        if not confirmed:
            return 0
        had: set[str] = set()
        if invoice.id is not None:
            had = set(
                db.scalars(select(InvoiceCopy.email).where(InvoiceCopy.invoice_id == invoice.id))
            )
    queued = 0
    for recipient in confirmed:
        if recipient.email in had:
            continue
        db.add(InvoiceCopy(invoice=invoice, recipient_id=recipient.id, email=recipient.email))
        queued += 1
    return queued


def _audit(
    db: Session, actor: Actor, group: BillGroup, action: str, outcome: str, address: str
) -> None:
    audit.record(
        db,
        action,
        outcome,
        **actor.audit(),
        bill_group_id=group.id,
        detail=json.dumps({"email": address}, ensure_ascii=False),
    )
