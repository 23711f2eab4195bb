"""Staff sign-in: password (scrypt), a TOTP second factor with recovery codes, and
server-side staff sessions (30 minutes idle, 8 hours at most, by default).

Flask-Login's user id for staff is "s:" + the session's random id; customers use "c:".
The two never mix: a staff principal is not a customer and cannot see a portal as one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets

import pyotp
from flask import current_app, request
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from werkzeug.security import check_password_hash, generate_password_hash

from portal import audit, clock, crypto
from portal.access import AccessError, canonical_email
from portal.config import settings
from portal.db import rowcount
from portal.models import StaffRole, StaffSession, StaffUser

PREFIX = "s:"
TOTP_PURPOSE = "portal staff totp"
RECOVERY_CODES = 10
# Checked when the address is unknown, so both answers take the same time.
_DUMMY_HASH = generate_password_hash(secrets.token_urlsafe(16), method="scrypt")


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class Staff:
    """A signed-in staff member (Flask-Login principal)."""

    is_authenticated = True
    is_active = True
    is_anonymous = False
    is_staff = True

    def __init__(self, sid: str, row: StaffSession) -> None:
        self._sid = sid
        self.row = row
        self.user: StaffUser = row.user
        self.email = row.user.email

    def get_id(self) -> str:
        return PREFIX + self._sid

    def may(self, permission: str) -> bool:
        return self.user.may(permission)


# --- passwords ---------------------------------------------------------------------


def authenticate(db: Session, raw_email: str, password: str) -> StaffUser | None:
    """The active staff user with this email and password, else None; the same work is
    done for an unknown address as for a wrong password."""
    try:
        email = canonical_email(raw_email)
    except AccessError:
        email = None
    user = db.scalar(select(StaffUser).where(StaffUser.email == email)) if email else None
    if user is None:
        check_password_hash(_DUMMY_HASH, password)
        return None
    if not check_password_hash(user.password_hash, password) or not user.is_active:
        return None
    return user


def mfa_required(user: StaffUser) -> bool:
    """Admins must use TOTP outside local development; anyone enrolled always does, and
    so does anyone whose second factor an admin reset (they set up a new one)."""
    from portal.config import is_local

    return (
        user.has_totp
        or user.must_enrol
        or (user.role == StaffRole.ADMIN and not is_local(current_app))
    )


# --- TOTP and recovery codes ---------------------------------------------------------


def new_totp_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(user: StaffUser, secret: str) -> str:
    issuer = settings().TOTP_ISSUER
    return pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=issuer)


def _step(now: dt.datetime) -> int:
    return int(now.timestamp()) // 30


def _matching_step(secret: str, code: str, now: dt.datetime) -> int | None:
    """The 30-second step (now, or one either side for clock drift) the code is for."""
    digits = "".join(ch for ch in code if ch.isdigit())
    if len(digits) != 6:
        return None
    totp = pyotp.TOTP(secret)
    for step in (_step(now) - 1, _step(now), _step(now) + 1):
        if hmac.compare_digest(totp.at(step * 30), digits):
            return step
    return None


def code_matches(secret: str, code: str) -> bool:
    """Whether a code from the app being set up is right (nothing is spent)."""
    return _matching_step(secret, code, clock.now()) is not None


def set_totp(user: StaffUser, secret: str, code: str) -> list[str] | None:
    """Store the seed `secret`, confirmed by its first `code`, and fresh recovery codes
    on `user`; returns the codes, or None (nothing set) if the code is not right now.
    Only portal.actions.staff.enrol calls this: it decides who may, audits and tells."""
    now = clock.now()
    step = _matching_step(secret, code, now)
    if step is None:
        return None
    user.totp_secret = crypto.seal(TOTP_PURPOSE, secret)
    user.totp_enabled_at = now
    user.totp_last_step = step
    user.must_enrol = False
    codes = [f"{secrets.token_hex(4)}-{secrets.token_hex(4)}" for _ in range(RECOVERY_CODES)]
    user.recovery_code_hashes = " ".join(_sha256(c) for c in codes)
    return codes


def clear_totp(user: StaffUser) -> None:
    """Forget the user's second factor; they must set up a new one at their next sign-in."""
    user.totp_secret = None
    user.totp_enabled_at = None
    user.totp_last_step = None
    user.recovery_code_hashes = None
    user.must_enrol = True


def verify_second_factor(db: Session, user: StaffUser, code: str) -> bool:
    """A TOTP code (each step usable once: spent by a conditional UPDATE) or an unused
    recovery code (removed when used)."""
    if not user.has_totp or user.totp_secret is None:
        return False
    step = _matching_step(crypto.unseal(TOTP_PURPOSE, user.totp_secret), code, clock.now())
    if step is not None:
        spent = db.execute(
            update(StaffUser)
            .where(
                StaffUser.id == user.id,
                or_(StaffUser.totp_last_step.is_(None), StaffUser.totp_last_step < step),
            )
            .values(totp_last_step=step)
            .execution_options(synchronize_session=False)
        )
        return rowcount(spent) == 1
    return _spend_recovery_code(db, user, _sha256(code.strip().lower()))


def _spend_recovery_code(db: Session, user: StaffUser, hashed: str) -> bool:
    """Remove one recovery code by a conditional UPDATE on the list as it was read
    (compare and swap): of any number of concurrent uses of one code, exactly one wins.
    A swap is lost only when another code was spent meanwhile, so trying again on the new
    list ends: at most once per code on the list."""
    for _attempt in range(RECOVERY_CODES + 1):
        before = db.scalar(select(StaffUser.recovery_code_hashes).where(StaffUser.id == user.id))
        remaining = (before or "").split()
        if hashed not in remaining:
            return False
        remaining.remove(hashed)
        after = " ".join(remaining)
        swapped = db.execute(
            update(StaffUser)
            .where(StaffUser.id == user.id, StaffUser.recovery_code_hashes == before)
            .values(recovery_code_hashes=after)
            .execution_options(synchronize_session=False)
        )
        if rowcount(swapped) == 1:
            set_committed_value(user, "recovery_code_hashes", after)  # no second write
            audit.record(
                db,
                "staff.recovery_code",
                "used",
                actor_type="staff",
                actor=user.email,
                detail=f"{len(remaining)} left",
            )
            return True
    return False


# --- sessions --------------------------------------------------------------------------


def new_session(user: StaffUser) -> tuple[str, StaffSession]:
    """A session row for `user` (not yet added) and the random id its cookie carries;
    the row stores only the id's SHA-256. portal.actions.staff.complete_sign_in adds it."""
    now = clock.now()
    sid = secrets.token_urlsafe(32)
    row = StaffSession(
        sid_hash=_sha256(sid),
        user=user,
        created_at=now,
        last_seen_at=now,
        expires_at=now + dt.timedelta(hours=settings().STAFF_SESSION_MAX_HOURS),
        ip=audit.client_ip(),
        user_agent=(request.user_agent.string or "")[:200] or None,
    )
    return sid, row


def load(db: Session, sid: str) -> Staff | None:
    row = db.scalar(
        select(StaffSession).where(
            StaffSession.sid_hash == _sha256(sid), StaffSession.revoked_at.is_(None)
        )
    )
    if row is None:
        return None
    now = clock.now()
    idle = dt.timedelta(minutes=settings().STAFF_SESSION_IDLE_MINUTES)
    reason = row.lapsed(now, idle)
    if reason is None and not row.user.is_active:
        reason = "deactivated"
    if reason:
        end(db, row, reason)
        db.commit()
        return None
    if now - row.last_seen_at >= dt.timedelta(seconds=60):
        row.last_seen_at = now
        db.commit()
    return Staff(sid, row)


def end_all(db: Session, user: StaffUser, reason: str, keep: StaffSession | None = None) -> None:
    """End every open session of the user (but `keep`, the one making the change)."""
    rows = db.scalars(
        select(StaffSession).where(
            StaffSession.staff_user_id == user.id, StaffSession.revoked_at.is_(None)
        )
    ).all()
    for row in rows:
        if keep is None or row.id != keep.id:
            end(db, row, reason)


def end(db: Session, row: StaffSession, reason: str) -> None:
    if row.revoked_at is None:
        row.revoked_at = clock.now()
        row.revoked_reason = reason
        audit.record(db, "staff.session_end", reason, actor_type="staff", actor=row.user.email)
