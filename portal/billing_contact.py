"""The billing contact's address: a customer may name a new one, but the portal sends it
nothing except one "you were named" email until its mailbox confirms, by a POST from a
one-click page (a GET never confirms: mail scanners fetch links). Until then notices
keep going to the last confirmed address (Contact.email), so whoever got into the portal
cannot silence the real billing contact or use the portal to mail a stranger.

Addresses the billing system sets through the API or an import go straight to
Contact.email: the billing system is trusted, so they count as confirmed.
"""

from __future__ import annotations

import datetime as dt
import enum
import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from emails import outbox
from emails.render import render
from portal import audit, clock, confirmations, events, links, notices
from portal.actions import Actor
from portal.config import settings
from portal.locks import lock_bill_group
from portal.models import BillGroup, Contact, ContactConfirmation, ContactKind

DAY = dt.timedelta(days=1)


class Named(enum.StrEnum):
    SENT = "sent"
    # The address was emailed within CONTACT_NAMED_INTERVAL_HOURS: that link still works.
    ALREADY_SENT = "already_sent"


class TooManyNamed(Exception):
    """The bill group has named CONTACT_NAMED_LIMIT_PER_DAY addresses today; the next
    may be named in `retry_after` seconds."""

    message = (
        "Too many new billing contact addresses have been named for this bill group today. "
        "Try again tomorrow, or keep the current address."
    )

    def __init__(self, retry_after: int) -> None:
        super().__init__(self.message)
        self.retry_after = retry_after


token_hash = confirmations.token_hash
PURPOSE = confirmations.BILLING_CONTACT


def lock(db: Session, group: BillGroup) -> Contact | None:
    """Serialise billing contact changes per bill group, then read the contact afresh:
    twenty concurrent saves then name an address once, not twenty times."""
    lock_bill_group(db, group.id)
    return db.scalar(
        select(Contact)
        .where(Contact.bill_group_id == group.id, Contact.kind == ContactKind.BILLING)
        .execution_options(populate_existing=True)
    )


def retire(db: Session, group: BillGroup, keep: str | None = None) -> None:
    """Retire the bill group's open confirmation links (but those for `keep`)."""
    confirmations.retire(db, group, PURPOSE, keep=keep)


def name_address(
    db: Session, group: BillGroup, contact: Contact, address: str, actor: str
) -> Named:
    """Make `address` the contact's pending address and email it a confirmation link,
    unless it was emailed lately (then that link works again). The caller holds `lock`
    and commits; raises TooManyNamed, having written nothing, over the daily limit."""
    config = settings()
    now = clock.now()
    since = now - dt.timedelta(hours=config.CONTACT_NAMED_INTERVAL_HOURS)
    recent = confirmations.latest(db, group, PURPOSE, address, since)
    if recent is None:
        wait = confirmations.wait_for_room(db, group, PURPOSE, config.CONTACT_NAMED_LIMIT_PER_DAY)
        if wait:
            raise TooManyNamed(wait)
    retire(db, group, keep=address)
    contact.pending_email = address
    if recent is not None:
        if recent.confirmed_at is None:
            recent.retired_at = None  # A, then B, then A again: A's link works again
        return Named.ALREADY_SENT
    hours = config.CONTACT_CONFIRM_TTL_HOURS
    token, expires = confirmations.issue(db, group, PURPOSE, address, actor, hours)
    link = links.portal_url(group, f"/billing-contact/confirm/{token}")
    email = render(
        "contact_named",
        address,
        entity=group.entity,
        bill_group=group,
        link=link,
        hours=hours,
    )
    outbox.queue(db, email, discard_after=expires)
    return Named.SENT


def open_link(db: Session, group: BillGroup, token: str) -> ContactConfirmation | None:
    """The confirmation a link stands for, if it can still be used; spends nothing."""
    return confirmations.open_link(db, group, PURPOSE, token)


def pending(db: Session, group: BillGroup, confirmation_id: int) -> ContactConfirmation | None:
    return confirmations.pending(db, group, PURPOSE, confirmation_id)


def confirm(db: Session, group: BillGroup, confirmation_id: int) -> str | None:
    """Spend the confirmation with one conditional UPDATE (of twenty racing POSTs, one
    wins) and make its address the billing contact's; the confirmed address, or None
    if the link is spent, retired, expired, or no longer what the contact awaits.
    Commits or rolls back."""
    # The bill group first, as a contact edit takes it: the same order, no deadlock.
    contact = lock(db, group)
    spent = confirmations.spend(db, group, PURPOSE, confirmation_id)
    if spent is None or contact is None or contact.pending_email != spent:
        db.rollback()
        return None
    before = contact.email
    contact.email, contact.pending_email = spent, None
    audit.record(
        db,
        "contact.billing.confirm",
        "changed",
        actor_type="customer",
        actor=spent,
        bill_group_id=group.id,
        detail=json.dumps({"email": [before, spent]}, ensure_ascii=False),
    )
    # The address it replaces hears that it no longer gets the notices.
    if before:
        notices.details_changed(
            db,
            group,
            Actor.customer(spent),
            "billing contact",
            [("email_confirmed", before, spent)],
            [before],
        )
    events.contact_updated(db, group, contact, events.customer(spent), ["email"])
    db.commit()
    return spent
