"""Confirming an address by a link sent to it: a billing contact a customer named
(portal.billing_contact), an invoice-copy recipient a billing manager added
(portal.invoice_copies). One pattern for both, in one table (ContactConfirmation, told
apart by `purpose`):

- the link carries a 256-bit token; only its SHA-256 is stored;
- it works once, expires, and is retired when it no longer stands for what is awaited;
- a GET never spends it (mail scanners fetch links): the faces show a one-click page
  whose POST calls `spend`, one conditional UPDATE, so of twenty racing POSTs one wins;
- the number of addresses emailed per bill group and purpose in a day is bounded
  (`room`), so the portal cannot be used to mail strangers in bulk.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import secrets

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from portal import clock
from portal.models import BillGroup, ContactConfirmation

DAY = dt.timedelta(days=1)
BILLING_CONTACT = "billing_contact"
INVOICE_COPY = "invoice_copy"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def latest(
    db: Session, group: BillGroup, purpose: str, email: str, since: dt.datetime
) -> ContactConfirmation | None:
    """The newest confirmation for `email` made after `since`."""
    return db.scalar(
        select(ContactConfirmation)
        .where(
            ContactConfirmation.bill_group_id == group.id,
            ContactConfirmation.purpose == purpose,
            ContactConfirmation.email == email,
            ContactConfirmation.created_at > since,
        )
        .order_by(ContactConfirmation.id.desc())
        .limit(1)
    )


def wait_for_room(db: Session, group: BillGroup, purpose: str, limit: int) -> int:
    """0 if the bill group may email another address for `purpose` today; else the
    seconds until enough of today's emails are a day old."""
    now = clock.now()
    today = (
        ContactConfirmation.bill_group_id == group.id,
        ContactConfirmation.purpose == purpose,
        ContactConfirmation.created_at > now - DAY,
    )
    sent_today = db.scalar(select(func.count(ContactConfirmation.id)).where(*today)) or 0
    if sent_today < limit:
        return 0
    freeing = db.scalar(
        select(ContactConfirmation.created_at)
        .where(*today)
        .order_by(ContactConfirmation.created_at)
        .offset(sent_today - limit)
        .limit(1)
    )
    wait = (freeing + DAY - now).total_seconds() if freeing is not None else 0
    return max(1, math.ceil(wait))


def issue(
    db: Session, group: BillGroup, purpose: str, email: str, named_by: str, hours: int
) -> tuple[str, dt.datetime]:
    """A new confirmation in the caller's transaction: (the token for the link, when it
    expires). The token itself is never stored."""
    token = secrets.token_urlsafe(32)
    now = clock.now()
    expires = now + dt.timedelta(hours=hours)
    db.add(
        ContactConfirmation(
            bill_group_id=group.id,
            email=email,
            purpose=purpose,
            token_hash=token_hash(token),
            named_by=named_by[:254],
            created_at=now,
            expires_at=expires,
        )
    )
    return token, expires


def retire(
    db: Session, group: BillGroup, purpose: str, *, keep: str | None = None, only: str | None = None
) -> None:
    """Retire the bill group's open links for `purpose`: all but those for `keep`, or
    only those for `only`."""
    condition = [
        ContactConfirmation.bill_group_id == group.id,
        ContactConfirmation.purpose == purpose,
        ContactConfirmation.confirmed_at.is_(None),
        ContactConfirmation.retired_at.is_(None),
    ]
    if keep is not None:
        condition.append(ContactConfirmation.email != keep)
    if only is not None:
        condition.append(ContactConfirmation.email == only)
    db.execute(
        update(ContactConfirmation)
        .where(*condition)
        .values(retired_at=clock.now())
        .execution_options(synchronize_session=False)
    )


def open_link(
    db: Session, group: BillGroup, purpose: str, token: str
) -> ContactConfirmation | None:
    """The confirmation a link stands for, if it can still be used; spends nothing. A
    token of another bill group or purpose stands for nothing here."""
    if not token or len(token) > 100:
        return None
    found = db.scalar(
        select(ContactConfirmation).where(
            ContactConfirmation.token_hash == token_hash(token),
            ContactConfirmation.bill_group_id == group.id,
            ContactConfirmation.purpose == purpose,
        )
    )
    return found if found is not None and usable(found) else None


def pending(
    db: Session, group: BillGroup, purpose: str, confirmation_id: int
) -> ContactConfirmation | None:
    found = db.get(ContactConfirmation, confirmation_id)
    if (
        found is None
        or found.bill_group_id != group.id
        or found.purpose != purpose
        or not usable(found)
    ):
        return None
    return found


def usable(confirmation: ContactConfirmation) -> bool:
    return (
        confirmation.confirmed_at is None
        and confirmation.retired_at is None
        and confirmation.expires_at > clock.now()
    )


def spend(db: Session, group: BillGroup, purpose: str, confirmation_id: int) -> str | None:
    """Spend the confirmation with one conditional UPDATE, in the caller's transaction:
    its address, or None if it is spent, retired, expired or not this group's."""
    now = clock.now()
    spent: str | None = db.scalar(
        update(ContactConfirmation)
        .where(
            ContactConfirmation.id == confirmation_id,
            ContactConfirmation.bill_group_id == group.id,
            ContactConfirmation.purpose == purpose,
            ContactConfirmation.confirmed_at.is_(None),
            ContactConfirmation.retired_at.is_(None),
            ContactConfirmation.expires_at > now,
        )
        .values(confirmed_at=now)
        .returning(ContactConfirmation.email)
        .execution_options(synchronize_session=False)
    )
    return spent
