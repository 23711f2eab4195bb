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
import hashlib
import json
import math
import secrets

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from emails import outbox
from emails.render import render
from portal import audit, clock, events, links, notices
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


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


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
    condition = [
        ContactConfirmation.bill_group_id == group.id,
        ContactConfirmation.confirmed_at.is_(None),
        ContactConfirmation.retired_at.is_(None),
    ]
    if keep is not None:
        condition.append(ContactConfirmation.email != keep)
    db.execute(
        update(ContactConfirmation)
        .where(*condition)
        .values(retired_at=clock.now())
        .execution_options(synchronize_session=False)
    )


def name_address(
    db: Session, group: BillGroup, contact: Contact, address: str, actor: str
) -> Named:
    """Make `address` the contact's pending address and email it a confirmation link,
    unless it was emailed lately (then that link works again). The caller holds `lock`
    and commits; raises TooManyNamed, having written nothing, over the daily limit."""
    config = settings()
    now = clock.now()
    recent = db.scalar(
        select(ContactConfirmation)
        .where(
            ContactConfirmation.bill_group_id == group.id,
            ContactConfirmation.email == address,
            ContactConfirmation.created_at
            > now - dt.timedelta(hours=config.CONTACT_NAMED_INTERVAL_HOURS),
        )
        .order_by(ContactConfirmation.id.desc())
        .limit(1)
    )
    if recent is None:
        today = (
            ContactConfirmation.bill_group_id == group.id,
            ContactConfirmation.created_at > now - DAY,
        )
        named_today = db.scalar(select(func.count(ContactConfirmation.id)).where(*today)) or 0
        limit = config.CONTACT_NAMED_LIMIT_PER_DAY
        if named_today >= limit:
            # Room comes back when enough of today's names are a day old.
            freeing = db.scalar(
                select(ContactConfirmation.created_at)
                .where(*today)
                .order_by(ContactConfirmation.created_at)
                .offset(named_today - limit)
                .limit(1)
            )
            wait = (freeing + DAY - now).total_seconds() if freeing is not None else 0
            raise TooManyNamed(max(1, math.ceil(wait)))
    retire(db, group, keep=address)
    contact.pending_email = address
    if recent is not None:
        if recent.confirmed_at is None:
            recent.retired_at = None  # A, then B, then A again: A's link works again
        return Named.ALREADY_SENT
    token = secrets.token_urlsafe(32)
    hours = config.CONTACT_CONFIRM_TTL_HOURS
    expires = now + dt.timedelta(hours=hours)
    db.add(
        ContactConfirmation(
            bill_group_id=group.id,
            email=address,
            token_hash=token_hash(token),
            named_by=actor,
            created_at=now,
            expires_at=expires,
        )
    )
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
    found = db.scalar(
        select(ContactConfirmation).where(
            ContactConfirmation.token_hash == token_hash(token),
            ContactConfirmation.bill_group_id == group.id,
        )
    )
    return found if found is not None and _usable(found) else None


def pending(db: Session, group: BillGroup, confirmation_id: int) -> ContactConfirmation | None:
    found = db.get(ContactConfirmation, confirmation_id)
    if found is None or found.bill_group_id != group.id or not _usable(found):
        return None
    return found


def _usable(confirmation: ContactConfirmation) -> bool:
    return (
        confirmation.confirmed_at is None
        and confirmation.retired_at is None
        and confirmation.expires_at > clock.now()
    )


def confirm(db: Session, group: BillGroup, confirmation_id: int) -> str | None:
    """Spend the confirmation with one conditional UPDATE (of twenty racing POSTs, one
    wins) and make its address the billing contact's; the confirmed address, or None
    if the link is spent, retired, expired, or no longer what the contact awaits.
    Commits or rolls back."""
    now = clock.now()
    # The bill group first, as a contact edit takes it: the same order, no deadlock.
    contact = lock(db, group)
    spent = db.scalar(
        update(ContactConfirmation)
        .where(
            ContactConfirmation.id == confirmation_id,
            ContactConfirmation.bill_group_id == group.id,
            ContactConfirmation.confirmed_at.is_(None),
            ContactConfirmation.retired_at.is_(None),
            ContactConfirmation.expires_at > now,
        )
        .values(confirmed_at=now)
        .returning(ContactConfirmation.email)
        .execution_options(synchronize_session=False)
    )
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
