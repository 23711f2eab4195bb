"""Customer sessions: server-side rows with idle and absolute expiry and revocation.

The Flask cookie carries only Flask-Login's user id, which is the session's random id
("c:" + 256 bits); the row stores its SHA-256. On every request the row is loaded and
the address is checked against the bill group's current rules and availability, so
revoking a rule, disabling the portal or ending the contract ends the session at once.
"""

from __future__ import annotations

import datetime as dt
import secrets

from flask import Flask, request, session
from flask_login import LoginManager, UserMixin, current_user
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session, joinedload
from sqlalchemy.orm.attributes import set_committed_value

from portal import audit, clock, db, staffauth
from portal.access import may_access
from portal.config import settings
from portal.db import rowcount
from portal.models import BillGroup, CustomerRole, CustomerSession
from portal.signin import sha256
from portal.staffauth import Staff

PREFIX = "c:"
# last_seen_at is written at most this often, not on every request.
TOUCH_EVERY = dt.timedelta(seconds=60)

login_manager = LoginManager()


class Customer(UserMixin):
    """A signed-in customer: one address, one bill group, and the role of the rule that
    admits the address on this request (not the one that admitted it at sign-in: staff
    may have changed it since)."""

    is_preview = False

    def __init__(self, sid: str, row: CustomerSession, role: CustomerRole) -> None:
        self._sid = sid
        self.row = row
        self.email = row.email
        self.bill_group: BillGroup = row.bill_group
        self.role = role

    def get_id(self) -> str:
        return PREFIX + self._sid


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    # Our rows do the protecting; Flask-Login's IP/agent hashing would only sign people
    # out when their mobile network changes.
    login_manager.session_protection = None
    app.config["REMEMBER_COOKIE_DURATION"] = dt.timedelta(0)


@login_manager.user_loader
def load_user(user_id: str) -> Customer | Staff | None:
    """Customer sessions are "c:<id>", staff sessions "s:<id>"; nothing else loads."""
    if user_id.startswith(PREFIX):
        return load(db.session(), user_id.removeprefix(PREFIX))
    if user_id.startswith(staffauth.PREFIX):
        return staffauth.load(db.session(), user_id.removeprefix(staffauth.PREFIX))
    return None


def current_customer() -> Customer | None:
    """The signed-in customer, or None (no one, or staff: staff are never customers)."""
    user = current_user._get_current_object()
    return user if isinstance(user, Customer) else None


def create(db_session: Session, bill_group: BillGroup, email: str) -> tuple[str, CustomerSession]:
    """A new session row, and the random id for the cookie (only its hash is stored)."""
    now = clock.now()
    sid = secrets.token_urlsafe(32)
    hours = settings().CUSTOMER_SESSION_MAX_HOURS
    row = CustomerSession(
        sid_hash=sha256(sid),
        bill_group_id=bill_group.id,
        email=email,
        created_at=now,
        last_seen_at=now,
        expires_at=now + dt.timedelta(hours=hours),
        ip=audit.client_ip(),
        user_agent=(request.user_agent.string or "")[:200] or None,
        bill_group=bill_group,
    )
    db_session.add(row)
    return sid, row


# Built once: every signed-in request runs it. The bill group comes with its seller (every
# page shows the brand), its rules (checked below) and its default payment method (one
# row, on the overview and payment pages), so a page needs no more statements to know
# who is looking and that they still may.
_group = joinedload(CustomerSession.bill_group)
_LIVE_SESSION = (
    select(CustomerSession)
    .where(CustomerSession.sid_hash == bindparam("sid_hash"), CustomerSession.revoked_at.is_(None))
    .options(
        _group.joinedload(BillGroup.entity),
        _group.joinedload(BillGroup.access_rules),
        _group.joinedload(BillGroup.default_payment_method),
    )
)


def load(db_session: Session, sid: str) -> Customer | None:
    found = db_session.scalars(_LIVE_SESSION, {"sid_hash": sha256(sid)})
    row = found.unique().one_or_none()
    if row is None:
        return None
    now = clock.now()
    reason = row.lapsed(now, idle_timeout())
    # The rules came with the session's statement: the admitting rule, and so the role,
    # costs no query of its own.
    rule = None if reason else may_access(row.bill_group, row.email, now.date())
    if rule is None:
        revoke(db_session, row, reason or "access_revoked")
        db_session.commit()
        return None
    if now - row.last_seen_at >= TOUCH_EVERY:
        row.last_seen_at = now
        db_session.commit()
    return Customer(sid, row, rule.role)


def idle_timeout() -> dt.timedelta:
    """How long a customer session lives without a request."""
    return dt.timedelta(minutes=settings().CUSTOMER_SESSION_IDLE_MINUTES)


def revoke(db_session: Session, row: CustomerSession, reason: str) -> bool:
    """End the session, audited; False if it had already ended. One conditional UPDATE,
    so that requests ending the same session at once (a double click on "Sign out",
    staff and the customer together) end and audit it once."""
    if row.revoked_at is not None:
        return False
    now = clock.now()
    ended = db_session.execute(
        update(CustomerSession)
        .where(CustomerSession.id == row.id, CustomerSession.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=reason)
        .execution_options(synchronize_session=False)
    )
    if rowcount(ended) == 0:
        db_session.refresh(row, ["revoked_at", "revoked_reason"])
        return False
    # The row in hand says what the database now holds (no second UPDATE at flush).
    set_committed_value(row, "revoked_at", now)
    set_committed_value(row, "revoked_reason", reason)
    audit.record(
        db_session,
        "session.end",
        reason,
        actor_type="customer",
        actor=row.email,
        bill_group_id=row.bill_group_id,
    )
    return True


def revoke_all(db_session: Session, bill_group_id: int, reason: str) -> int:
    """End every session of a bill group (staff "sign out everyone"); each end is audited,
    as `revoke` does for one."""
    ended = (
        db_session.execute(
            update(CustomerSession)
            .where(
                CustomerSession.bill_group_id == bill_group_id, CustomerSession.revoked_at.is_(None)
            )
            .values(revoked_at=clock.now(), revoked_reason=reason)
            .returning(CustomerSession.email)
            .execution_options(synchronize_session=False)
        )
        .scalars()
        .all()
    )
    for email in ended:
        audit.record(
            db_session,
            "session.end",
            reason,
            actor_type="customer",
            actor=email,
            bill_group_id=bill_group_id,
        )
    return len(ended)


def browser_nonce() -> str | None:
    return session.get("nonce")
