"""Reminders to the billing contact: an invoice to come (before a subscription renews),
an invoice due soon, an invoice overdue, on each seller's schedule (set by staff through
portal.actions.reminders).

The worker scans (`send_due`) every REMINDER_SCAN_SECONDS. For each kind and each step of
the schedule, one indexed query finds the targets whose *current* step it is (the nearest
step already reached: a worker that was down for a week sends the latest reminder, not
every one it missed) and that have no reminder row for that step. Each reminder is then
queued in a transaction of its own, which re-reads the invoice under a row lock, checks
it is still owed, writes the `ReminderSent` row (unique on kind, target, date and step)
and the outbox row together: two workers racing, or a worker that dies between the two
and restarts, never send one twice, and an invoice paid in between is not reminded.

Upcoming and due-soon reminders are non-essential: they carry a one-click unsubscribe
(RFC 8058) whose signed token names the address, the bill group and the kinds. Overdue
reminders are treated as essential, like the invoice itself: they say money is owed
and late, which a customer may not opt out of by a click in a mail client (a seller
who does not want them leaves that schedule empty).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import ColumnElement, and_, exists, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload

from emails import outbox
from emails.render import Email, render
from portal import clock, links
from portal.config import settings
from portal.models import (
    BillGroup,
    Contact,
    ContactKind,
    Entity,
    Invoice,
    InvoiceStatus,
    ReminderKind,
    ReminderOutcome,
    ReminderSent,
    ReminderUnsubscription,
    Subscription,
    SubscriptionStatus,
)
from portal.money import format_day, format_money
from portal.subscriptions import subscription_name

log = logging.getLogger(__name__)

# Reminders one worker pass queues (all kinds together).
BATCH = 50
# A schedule: at most this many steps, each between 1 and MAX_DAYS days.
MAX_STEPS = 5
MAX_DAYS = 365
# Overdue invoices older than their last step by more than this are left alone: turning
# the schedule on must not mail every customer about invoices years old.
OVERDUE_LOOKBACK = dt.timedelta(days=30)
# Unsubscribe links are refused after this long. RFC 8058 links should keep working as
# long as anybody may click them in an old email; a year bounds how long a leaked one
# is worth anything.
UNSUBSCRIBE_MAX_AGE = dt.timedelta(days=365)
UNSUBSCRIBE_SALT = "portal reminder unsubscribe"
# Tokens longer than this are not even looked at.
MAX_TOKEN_LENGTH = 600

NON_ESSENTIAL = (ReminderKind.UPCOMING, ReminderKind.DUE_SOON)
COLUMNS = {
    ReminderKind.UPCOMING: "remind_upcoming_days",
    ReminderKind.DUE_SOON: "remind_due_soon_days",
    ReminderKind.OVERDUE: "remind_overdue_days",
}
LABELS = {
    ReminderKind.UPCOMING: "Upcoming invoice (days before a subscription renews)",
    ReminderKind.DUE_SOON: "Invoice due soon (days before the due date)",
    ReminderKind.OVERDUE: "Invoice overdue (days after the due date)",
}
# How the customer pages and the unsubscribe page name each kind.
NAMES = {
    ReminderKind.UPCOMING: "upcoming invoices",
    ReminderKind.DUE_SOON: "invoices due soon",
    ReminderKind.OVERDUE: "overdue invoices",
}
TEMPLATES = {
    ReminderKind.UPCOMING: "reminder_upcoming",
    ReminderKind.DUE_SOON: "reminder_due_soon",
    ReminderKind.OVERDUE: "reminder_overdue",
}
LIVE_SUBSCRIPTIONS = (SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING)


class BadSchedule(ValueError):
    """A schedule that is not a short list of whole days; the message says why."""


def parse_schedule(raw: str) -> tuple[int, ...]:
    """ "1, 7,14" -> (1, 7, 14): whole days between 1 and MAX_DAYS, at most MAX_STEPS,
    sorted, without repeats; "" -> () (off). Anything else raises BadSchedule."""
    text = raw.strip()
    if not text:
        return ()
    if len(text) > 60 or not text.isascii():
        raise BadSchedule(f"Use whole numbers of days from 1 to {MAX_DAYS}, such as 1, 7, 14.")
    parts = [part.strip() for part in text.split(",")]
    if len(parts) > MAX_STEPS:
        raise BadSchedule(f"At most {MAX_STEPS} reminders of one kind.")
    days: set[int] = set()
    for part in parts:
        if not part.isdigit():  # refuses "-1", "1.5", "1e3", "" between commas
            raise BadSchedule(
                f"“{part}” is not a whole number of days: use numbers from 1 to {MAX_DAYS}."
            )
        value = int(part)
        if not 1 <= value <= MAX_DAYS:
            raise BadSchedule(f"{value} days is out of range: use 1 to {MAX_DAYS} days.")
        days.add(value)
    return tuple(sorted(days))


def format_schedule(days: Iterable[int]) -> str:
    return ", ".join(str(day) for day in sorted(days))


def schedule(entity: Entity, kind: ReminderKind) -> tuple[int, ...]:
    """The entity's stored schedule of `kind`; a stored value that no longer parses (set
    by hand in the database) counts as off."""
    try:
        return parse_schedule(getattr(entity, COLUMNS[kind]))
    except BadSchedule:
        log.warning("entity %s: unreadable %s schedule; treated as off", entity.id, kind)
        return ()


def entity_today(entity: Entity) -> dt.date:
    """Today in the seller's terms: every reminder date is counted from this one day.
    There is no per-seller time zone yet; when there is, it is applied here only."""
    return clock.today()


# --- unsubscribe tokens -----------------------------------------------------------------


@dataclass(frozen=True)
class Unsubscribe:
    """What a valid unsubscribe token names."""

    bill_group_id: int
    address: str
    kinds: tuple[ReminderKind, ...]


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(settings().SECRET_KEY, salt=UNSUBSCRIBE_SALT)


def unsubscribe_token(group: BillGroup, address: str, kinds: Iterable[ReminderKind]) -> str:
    return _serializer().dumps([group.id, address, [kind.value for kind in kinds]])


def read_unsubscribe_token(token: str) -> Unsubscribe | None:
    """What the token names, or None if it is forged, altered, malformed or too old."""
    if not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        return None
    try:
        payload = _serializer().loads(token, max_age=int(UNSUBSCRIBE_MAX_AGE.total_seconds()))
    except (BadSignature, ValueError, UnicodeDecodeError):
        return None
    if not (isinstance(payload, list) and len(payload) == 3):
        return None
    group_id, address, kinds = payload
    if not (isinstance(group_id, int) and isinstance(address, str) and isinstance(kinds, list)):
        return None
    try:
        named = tuple(ReminderKind(kind) for kind in kinds)
    except (ValueError, TypeError):
        return None
    if not named or any(kind not in NON_ESSENTIAL for kind in named):
        return None
    return Unsubscribe(group_id, address, named)


def unsubscribe_url(group: BillGroup, address: str, kinds: Iterable[ReminderKind]) -> str:
    return links.portal_url(group, f"/unsubscribe/{unsubscribe_token(group, address, kinds)}")


def unsubscribe_headers(url: str) -> tuple[tuple[str, str], ...]:
    """RFC 8058: the HTTPS URL a mail client POSTs "List-Unsubscribe=One-Click" to."""
    return (
        ("List-Unsubscribe", f"<{url}>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
    )


def unsubscribed_kinds(db: Session, group_id: int, address: str) -> set[ReminderKind]:
    return set(
        db.scalars(
            select(ReminderUnsubscription.kind).where(
                ReminderUnsubscription.bill_group_id == group_id,
                ReminderUnsubscription.address == address.lower(),
            )
        )
    )


def was_reminded(db: Session, group_id: int, address: str) -> bool:
    """Whether the bill group ever sent this address a reminder (an unsubscribe token is
    honoured only for an address that got one from that bill group)."""
    return bool(
        db.scalar(
            select(
                exists().where(
                    ReminderSent.bill_group_id == group_id,
                    ReminderSent.to_address == address.lower(),
                )
            )
        )
    )


# --- the scan ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Due:
    kind: ReminderKind
    target_id: int
    target_date: dt.date
    step: int


def windows(
    steps: tuple[int, ...], kind: ReminderKind, today: dt.date
) -> Iterator[tuple[int, dt.date, dt.date]]:
    """For each step, the target dates for which that step is the current one, as
    (step, after, up_to): after < target_date <= up_to (after None: no lower bound)."""
    day = dt.timedelta(days=1)
    if kind == ReminderKind.OVERDUE:
        # Step s is current when target + s <= today < target + next step.
        for i, step in enumerate(steps):
            upper = today - step * day
            nxt = steps[i + 1] if i + 1 < len(steps) else None
            lower = today - nxt * day if nxt is not None else upper - OVERDUE_LOOKBACK
            yield step, lower, upper
    else:
        # Days before: step s is current when target - s <= today and no smaller step
        # has been reached yet; and the date itself is still ahead.
        for i, step in enumerate(steps):
            smaller = steps[i - 1] if i > 0 else 0
            yield step, today + smaller * day, today + step * day


def _not_sent(
    kind: ReminderKind, target_id: Any, target_date: Any, step: int
) -> ColumnElement[bool]:
    return ~exists().where(
        ReminderSent.kind == kind,
        ReminderSent.target_id == target_id,
        ReminderSent.target_date == target_date,
        ReminderSent.step == step,
    )


def _reachable(today: dt.date) -> ColumnElement[bool]:
    """The bill group's portal is on and its contract active, and it has a billing
    contact with a confirmed address."""
    return and_(
        BillGroup.portal_available(today),
        exists().where(
            Contact.bill_group_id == BillGroup.id,
            Contact.kind == ContactKind.BILLING,
            Contact.email.is_not(None),
            Contact.email != "",
        ),
    )


def find_due(db: Session, limit: int = BATCH) -> list[Due]:
    """Reminders to queue now, at most `limit`, over every seller with a schedule."""
    found: list[Due] = []
    sellers = db.scalars(
        select(Entity).where(or_(*(getattr(Entity, column) != "" for column in COLUMNS.values())))
    ).all()
    for entity in sellers:
        today = entity_today(entity)
        for kind in ReminderKind:
            for step, after, up_to in windows(schedule(entity, kind), kind, today):
                room = limit - len(found)
                if room <= 0:
                    return found
                found += _due_of(db, entity, kind, step, after, up_to, today, room)
    return found


def _due_of(
    db: Session,
    entity: Entity,
    kind: ReminderKind,
    step: int,
    after: dt.date,
    up_to: dt.date,
    today: dt.date,
    limit: int,
) -> list[Due]:
    if kind == ReminderKind.UPCOMING:
        rows = db.execute(
            select(Subscription.id, Subscription.renewal_date)
            .join(BillGroup, BillGroup.id == Subscription.bill_group_id)
            .where(
                Subscription.status.in_(LIVE_SUBSCRIPTIONS),
                Subscription.renewal_date > after,
                Subscription.renewal_date <= up_to,
                # Ends at or before the renewal: nothing will be invoiced.
                or_(
                    Subscription.end_date.is_(None),
                    Subscription.end_date > Subscription.renewal_date,
                ),
                BillGroup.entity_id == entity.id,
                _reachable(today),
                _not_sent(kind, Subscription.id, Subscription.renewal_date, step),
            )
            .order_by(Subscription.renewal_date, Subscription.id)
            .limit(limit)
        ).all()
    else:
        rows = db.execute(
            select(Invoice.id, Invoice.due_date)
            .join(BillGroup, BillGroup.id == Invoice.bill_group_id)
            .where(
                Invoice.entity_id == entity.id,
                Invoice.status == InvoiceStatus.OPEN,
                Invoice.due_date > after,
                Invoice.due_date <= up_to,
                Invoice.balance_minor > 0,
                _reachable(today),
                _not_sent(kind, Invoice.id, Invoice.due_date, step),
            )
            .order_by(Invoice.due_date, Invoice.id)
            .limit(limit)
        ).all()
    return [
        Due(kind, target_id, target_date, step) for target_id, target_date in rows if target_date
    ]


def send_due(db: Session, limit: int = BATCH) -> int:
    """Queue the reminders due now; returns how many emails were queued."""
    due = find_due(db, limit)
    db.rollback()
    queued = 0
    for item in due:
        try:
            queued += queue_one(db, item)
            db.commit()
        except IntegrityError:  # another worker queued this very reminder first
            db.rollback()
        except Exception:
            db.rollback()
            log.exception("reminder %s could not be queued", item)
    return queued


def queue_one(db: Session, item: Due) -> bool:
    """Queue one reminder in the caller's transaction, after checking again, under a row
    lock, that it is still due; False if it no longer is (or its address unsubscribed:
    then the row is written all the same, so the scan does not pick it again). Raises
    IntegrityError if another worker has written it."""
    target: Invoice | Subscription | None
    if item.kind == ReminderKind.UPCOMING:
        target = db.scalar(
            select(Subscription)
            .where(Subscription.id == item.target_id)
            .with_for_update(of=Subscription)
            .execution_options(populate_existing=True)
        )
        still = (
            target is not None
            and target.status in LIVE_SUBSCRIPTIONS
            and target.renewal_date == item.target_date
        )
    else:
        target = db.scalar(
            select(Invoice)
            .where(Invoice.id == item.target_id)
            .with_for_update(of=Invoice)
            .execution_options(populate_existing=True)
        )
        # Paid, voided or moved since the scan: the payment's transaction has committed
        # (the lock waited for it), so this is what the customer owes now.
        still = (
            target is not None
            and target.status == InvoiceStatus.OPEN
            and target.balance_minor > 0
            and target.due_date == item.target_date
        )
    if target is None or not still:
        return False
    group = db.scalar(
        select(BillGroup)
        .where(BillGroup.id == target.bill_group_id)
        .options(joinedload(BillGroup.entity), joinedload(BillGroup.contacts))
    )
    assert group is not None
    today = entity_today(group.entity)
    contact = group.contact(ContactKind.BILLING)
    if not group.portal_available(today) or contact is None or not contact.email:
        return False
    address = contact.email.lower()
    unsubscribed = item.kind in unsubscribed_kinds(db, group.id, address)
    db.add(
        ReminderSent(
            kind=item.kind,
            target_id=item.target_id,
            target_date=item.target_date,
            step=item.step,
            bill_group_id=group.id,
            to_address=address,
            outcome=ReminderOutcome.UNSUBSCRIBED if unsubscribed else ReminderOutcome.QUEUED,
            queued_at=clock.now(),
        )
    )
    db.flush()  # the unique key: a second worker stops here
    if unsubscribed:
        return False
    outbox.queue(db, reminder_email(item.kind, group, target, contact.email))
    return True


def reminder_email(
    kind: ReminderKind,
    group: BillGroup,
    target: Invoice | Subscription,
    to: str,
) -> Email:
    """The reminder, text and HTML, with its deep link (and, when non-essential, its
    one-click unsubscribe)."""
    locale = settings().LOCALE
    context: dict[str, Any] = {"entity": group.entity, "bill_group": group}
    if isinstance(target, Invoice):
        context |= {
            "number": target.number,
            "balance": format_money(target.balance_minor, target.currency, locale),
            "due": format_day(target.due_date, "long", locale),
            "link": links.portal_url(group, f"/invoices/{target.id}"),
        }
    else:
        assert target.renewal_date is not None
        context |= {
            "name": subscription_name(target),
            "amount": format_money(target.amount_per_period_minor, group.currency, locale),
            "renews": format_day(target.renewal_date, "long", locale),
            "link": links.portal_url(group, "/subscriptions"),
        }
    headers: tuple[tuple[str, str], ...] = ()
    if kind in NON_ESSENTIAL:
        url = unsubscribe_url(group, to.lower(), [kind])
        context["unsubscribe_url"] = url
        headers = unsubscribe_headers(url)
    context["settings_url"] = links.portal_url(group, "/email-reminders")
    return render(TEMPLATES[kind], to, headers=headers, **context)
