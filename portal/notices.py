"""Change alerts: when billing details, contacts, payment methods or automatic payment
change, the billing contact and the customer who made the change hear of it (who, what,
old and new where that is safe, when, and a link to the page to review it): a
compensating control for email sign-in (SECURITY.md), so a change made by whoever got
into a mailbox does not go unseen. A change by staff or the billing system is told to the
billing contact only. Every change is also a row of the bill group's change history
(BillGroupChange), which the customer's "Change history" page lists.

A notice is never sent from the request. Each change is recorded for its recipients in
the change's own transaction (so a change that rolls back announces nothing); the worker
(`send_due`) gathers every waiting change of a (bill group, recipient) into one email
once NOTICE_WINDOW_MINUTES have passed since the first of them, and sends at most
NOTICE_LIMIT_PER_DAY such emails in 24 hours. Over the limit, changes wait and are
listed in the next notice the limit allows: a flood of saves becomes a few emails, and
the real billing contact still hears of every change.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload

from emails import outbox
from emails.render import Email, render
from portal import clock, links
from portal.actions import Actor
from portal.config import settings
from portal.models import BillGroup, BillGroupChange, ContactKind, Notice, NoticeChange
from portal.paging import Page, clamp

FIELD_NAMES = {
    "po_number": "PO number",
    "vat_number": "VAT number",
    "registration_number": "registration number",
    "name": "name",
    "company": "company",
    "email": "email address",
    "pending_email": "email address (the new one is awaiting confirmation)",
    "email_confirmed": "email address (the new one has been confirmed)",
    "phone": "phone number",
    "line1": "address line 1",
    "line2": "address line 2",
    "city": "town or city",
    "region": "region",
    "postal_code": "postcode",
    "country": "country",
    "auto_pay": "automatic payment",
    "payment method": "payment method",
    "default payment method": "default payment method",
}

# The page each kind of change is reviewed on, under the bill group's portal link.
PAGES = {
    "billing details": "/billing-details",
    "billing contact": "/contacts",
    "shipping contact": "/contacts",
    "payment methods": "/payment-methods",
    "automatic payment": "/overview",
    "credits": "/credits",
    "invoice copies": "/billing-details/invoice-copies",
}
HISTORY_PAGE = "/billing-details/history"

# One field's change as the history and the email show it: (field, old, new), each value
# already safe to show (a payment method is its brand and last four, never more).
FieldChange = tuple[str, object, object]

DAY = dt.timedelta(days=1)
# An email lists at most this many changes and counts the rest: the audit trail has
# every one, and a notice that scrolls for pages would hide the point.
MAX_LISTED = 50
# (bill group, recipient) pairs one worker pass sends to.
BATCH = 50


def recipients(group: BillGroup) -> list[str]:
    """Who hears about a change: the billing contact's confirmed address, as it is before
    the change. A newly named address hears nothing until its mailbox confirms it
    (portal.billing_contact): notices keep going to the last confirmed one."""
    contact = group.contact(ContactKind.BILLING)
    return [contact.email] if contact and contact.email else []


def who(actor_type: str, actor: str) -> str:
    """How an email and the history page name whoever made a change."""
    if actor_type in ("customer", "staff"):
        return actor if actor_type == "customer" else f"{actor} (staff)"
    if actor_type == "api":
        return f"the billing system ({actor})"
    if actor_type == "import":
        # Not its source: that is a path on the site operator's server.
        return "a data import"
    return "the billing portal"


def shown(field: str, value: object) -> str | None:
    """A value as the history shows it; None for no value."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def details_changed(
    db: Session,
    group: BillGroup,
    actor: Actor,
    what: str,
    fields: Sequence[str] | Sequence[FieldChange],
    to: list[str],
    *,
    tell_actor: bool = True,
) -> BillGroupChange:
    """Record the change in the bill group's history and, for each recipient (`to`, the
    billing contact as it was before the change, plus the customer who made it), in the
    caller's transaction; `send_due` emails it, merged with the other changes of its
    window. `fields` are field names, or (field, old, new) where old and new are safe to
    show. `tell_actor=False`: the actor is not told (an invoice-copy recipient confirming
    its own address has no portal to review the change in)."""
    rows: list[list[str | None]] = []
    for item in fields:
        field, old, new = (item, None, None) if isinstance(item, str) else item
        rows.append([FIELD_NAMES.get(field, field), shown(field, old), shown(field, new)])
    now = clock.now()
    change = BillGroupChange(
        bill_group_id=group.id,
        at=now,
        actor_type=actor.kind,
        # The actor's name, never `audited_as`: for an API key that carries the first
        # characters of the secret, which is for staff's audit trail, not for customers.
        actor=actor.name[:254],
        what=what,
        changes=json.dumps(rows, ensure_ascii=False),
        page=PAGES.get(what, HISTORY_PAGE),
    )
    db.add(change)
    told = list(to)
    if (
        tell_actor
        and actor.kind == "customer"
        and actor.name.casefold() not in {a.casefold() for a in told}
    ):
        told.append(actor.name)
    names = "\n".join(sorted({row[0] or "" for row in rows}))
    for address in told:
        db.add(
            NoticeChange(
                bill_group_id=group.id,
                recipient=address,
                at=now,
                actor=who(actor.kind, change.actor),
                what=what,
                fields=names,
                change=change,
            )
        )
    return change


# Fields that are events rather than a value replaced: shown as "what: value", not old → new.
EVENTS = frozenset(
    {
        "recipient added",
        "recipient confirmed",
        "recipient removed",
        "payment method",
        "credit applied",
    }
)


def history_rows(change: BillGroupChange) -> list[dict[str, str | None]]:
    """A history row's fields: [{"field", "old", "new", "event"}], in the form's order;
    `event` is the one value to show for an event (a recipient added), else None."""
    return [
        {"field": field, "old": old, "new": new, "event": (new or old) if field in EVENTS else None}
        for field, old, new in json.loads(change.changes or "[]")
    ]


def send_due(db: Session, limit: int = BATCH) -> int:
    """Queue one notice email in the outbox for each (bill group, recipient) whose
    window has closed and whose daily limit allows one; returns how many."""
    now = clock.now()
    window = dt.timedelta(minutes=settings().NOTICE_WINDOW_MINUTES)
    cap = settings().NOTICE_LIMIT_PER_DAY
    sent_lately = (
        select(func.count(Notice.id))
        .where(
            Notice.bill_group_id == NoticeChange.bill_group_id,
            Notice.recipient == NoticeChange.recipient,
            Notice.queued_at > now - DAY,
        )
        .correlate(NoticeChange)
        .scalar_subquery()
    )
    # Pairs over their limit are left out here, so they cannot crowd out the others.
    due = db.execute(
        select(NoticeChange.bill_group_id, NoticeChange.recipient)
        .where(NoticeChange.notice_id.is_(None), sent_lately < cap)
        .group_by(NoticeChange.bill_group_id, NoticeChange.recipient)
        .having(func.min(NoticeChange.at) <= now - window)
        .order_by(func.min(NoticeChange.at))
        .limit(limit)
    ).all()
    db.rollback()
    return sum(_send_one(db, group_id, recipient, now, cap) for group_id, recipient in due)


def _send_one(db: Session, group_id: int, recipient: str, now: dt.datetime, cap: int) -> bool:
    """One notice for every waiting change of the pair, in one transaction."""
    pair = (Notice.bill_group_id == group_id, Notice.recipient == recipient)
    if (
        db.scalar(select(func.count(Notice.id)).where(*pair, Notice.queued_at > now - DAY)) or 0
    ) >= cap:
        db.rollback()
        return False
    last = db.scalar(select(func.max(Notice.seq)).where(*pair)) or 0
    notice = Notice(bill_group_id=group_id, recipient=recipient, seq=last + 1, queued_at=now)
    db.add(notice)
    try:
        db.flush()
    except IntegrityError:  # another worker is sending this very notice
        db.rollback()
        return False
    claimed = db.scalars(
        update(NoticeChange)
        .where(
            NoticeChange.bill_group_id == group_id,
            NoticeChange.recipient == recipient,
            NoticeChange.notice_id.is_(None),
            NoticeChange.at <= now,
        )
        .values(notice_id=notice.id)
        .returning(NoticeChange.id)
        .execution_options(synchronize_session=False)
    ).all()
    if not claimed:
        db.rollback()
        return False
    changes = db.scalars(
        select(NoticeChange)
        .where(NoticeChange.notice_id == notice.id)
        .options(joinedload(NoticeChange.change))
        .order_by(NoticeChange.at, NoticeChange.id)
    ).all()
    notice.change_count = len(changes)
    group = db.scalars(
        select(BillGroup).where(BillGroup.id == group_id).options(joinedload(BillGroup.entity))
    ).one()
    outbox.queue(db, notice_email(group, recipient, changes))
    db.commit()
    return True


def notice_email(group: BillGroup, recipient: str, changes: Sequence[NoticeChange]) -> Email:
    """The email: what changed, who changed it, old and new where safe, and when, oldest
    first, with a link straight to the page to review it on (the change history when
    several kinds of change are told at once)."""
    whats = list(dict.fromkeys(change.what for change in changes))
    listed = changes[:MAX_LISTED]
    pages = {c.change.page if c.change is not None else PAGES.get(c.what, "") for c in changes}
    page = pages.pop() if len(pages) == 1 else HISTORY_PAGE
    billing = group.contact(ContactKind.BILLING)
    is_contact = billing is not None and (billing.email or "").casefold() == recipient.casefold()
    return render(
        "details_changed",
        recipient,
        entity=group.entity,
        bill_group=group,
        what=_join(whats),
        changes=[
            {
                "when": c.at,
                "actor": c.actor,
                "what": c.what,
                "fields": c.fields.split("\n"),
                "values": [
                    row
                    for row in (history_rows(c.change) if c.change else [])
                    if row["old"] or row["new"]
                ],
            }
            for c in listed
        ],
        more=len(changes) - len(listed),
        first=changes[0].at,
        last=changes[-1].at,
        review_url=links.portal_url(group, page),
        history_url=links.portal_url(group, HISTORY_PAGE),
        reason="billing contact" if is_contact else "changer",
    )


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


HISTORY_PER_PAGE = 25


def history_page(db: Session, group: BillGroup, page: int) -> Page[BillGroupChange]:
    """One page of the bill group's change history, newest first."""
    total = (
        db.scalar(
            select(func.count(BillGroupChange.id)).where(BillGroupChange.bill_group_id == group.id)
        )
        or 0
    )
    page = clamp(page, total, HISTORY_PER_PAGE)
    rows = db.scalars(
        select(BillGroupChange)
        .where(BillGroupChange.bill_group_id == group.id)
        .order_by(BillGroupChange.id.desc())
        .limit(HISTORY_PER_PAGE)
        .offset((page - 1) * HISTORY_PER_PAGE)
    ).all()
    return Page(list(rows), total, page, HISTORY_PER_PAGE)
