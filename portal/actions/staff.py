"""Staff sign-in and second factors, whoever triggers them: the staff member signing in,
setting up or moving their authenticator app, or an admin resetting a lost one; and the
staff accounts admins create and change.

portal.staffauth holds the primitives (password hashes, TOTP steps spent by a
conditional UPDATE, recovery codes spent by compare-and-swap, session rows); these
actions put them together once. The face (admin/auth.py, admin/staff.py) keeps what
belongs to the browser: the pending sign-in in the cookie session, the per-client
backoff, replacing the cookie, and the commit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from portal import audit, clock, staffauth, throttle
from portal.access import AccessError, canonical_email
from portal.actions import Actor, Conflict, Forbidden, Invalid
from portal.config import settings
from portal.models import StaffRole, StaffSession, StaffUser

# How a sign-in is being completed: with the password alone, with a code of the
# second factor just spent, or with a second factor just set up.
Proof = Literal["password", "second_factor", "enrolment"]


@dataclass(frozen=True)
class StaffSignedIn:
    """A new staff session: `sid` goes into the cookie (only its hash is stored)."""

    sid: str
    session: StaffSession


class SecondStepRequired(Forbidden):
    """The password was right, but this user must also give a code (or set up an app)."""

    def __init__(self) -> None:
        super().__init__("Two-step sign-in is needed.", code="second_step_required")


WRONG_CODE = "That code is not right. Codes change every 30 seconds."


class WrongCode(Invalid):
    """A code that is not right for the app being set up or signed in with, or its
    30-second step was used already."""


def complete_sign_in(db: Session, user: StaffUser, proof: Proof) -> StaffSignedIn:
    """A new server-side session for `user`, audited. With the password alone it is
    refused (SecondStepRequired, nothing written) for a user who must use a second
    factor, so no face can hand a session to a password-only sign-in."""
    if not user.is_active:
        raise Forbidden("This staff account is not active.")
    if proof == "password" and staffauth.mfa_required(user):
        raise SecondStepRequired()
    sid, row = staffauth.new_session(user)
    db.add(row)
    user.last_sign_in_at = row.created_at
    audit.record(db, "staff.signin", "signed_in", **Actor.staff(user.email).audit())
    return StaffSignedIn(sid, row)


def sign_in_with_code(db: Session, user: StaffUser, code: str) -> StaffSignedIn:
    """Spend a TOTP code or a recovery code (each usable once) and sign in. Raises
    WrongCode; the face rolls back and records the refusal."""
    if not staffauth.verify_second_factor(db, user, code):
        raise WrongCode(WRONG_CODE, "code")
    return complete_sign_in(db, user, "second_factor")


def record_refusal(db: Session, attempted: str, outcome: str) -> None:
    """Audit a staff sign-in that did not complete (a wrong password: "failed", a wrong
    code: "wrong_code"), by whoever tried it: anonymous until signed in. The face commits."""
    audit.record(db, "staff.signin", outcome, actor_type="anonymous", actor=attempted)


# --- second factors -------------------------------------------------------------------


class ReplaceRefused(Forbidden):
    """Moving to a new app without a fresh proof of the current one."""

    def __init__(self) -> None:
        super().__init__(
            "Enter a code from your current authenticator app, or one of your recovery "
            "codes, to move two-step sign-in to a new app.",
            "current_code",
        )


def enrol(
    db: Session,
    user: StaffUser,
    secret: str,
    code: str,
    *,
    current_code: str = "",
    signed_in: StaffSession | None = None,
) -> list[str]:
    """Set up the authenticator app with seed `secret`, confirmed by its first `code`;
    returns the fresh recovery codes. A user who has a second factor replaces it only
    with `current_code`, a code of the current one spent here, so neither a password
    alone nor a stolen session becomes a second factor of its own (ReplaceRefused; the
    face rolls back, then calls record_replace_refused and commits). A replacement is
    audited and announced to the user; when `signed_in` (the session making the
    change), every other session of theirs ends.

    Raises WrongCode when `code` is not right for `secret`, or its step was used."""
    if not staffauth.code_matches(secret, code):
        raise WrongCode(
            "That code is not right. Check the time on your phone and try again.", "code"
        )
    replacing = user.has_totp
    if replacing and not (
        throttle.within(("staff-reauth", str(user.id)))
        and current_code
        and staffauth.verify_second_factor(db, user, current_code)
    ):
        raise ReplaceRefused()
    codes = staffauth.set_totp(user, secret, code)
    if codes is None:  # the step turned while this request ran
        raise WrongCode("That code has just been used. Wait for the next one.", "code")
    audit.record(
        db, "staff.totp", "replaced" if replacing else "enrolled", **Actor.staff(user.email).audit()
    )
    if replacing:
        _notify(db, user, "replaced")
    if signed_in is not None:
        staffauth.end_all(db, user, "second_factor_replaced", keep=signed_in)
    return codes


def record_replace_refused(db: Session, user: StaffUser) -> None:
    """Audit a refused move to a new app (the face commits)."""
    audit.record(db, "staff.totp", "replace_refused", **Actor.staff(user.email).audit())


def reset_second_factor(db: Session, by: StaffUser, user: StaffUser) -> None:
    """An admin clears another user's second factor, for one who lost their phone and
    recovery codes: every session of theirs ends, they must set up a new one at their
    next sign-in, and they are told. Nobody resets their own (Forbidden)."""
    if by.id == user.id:
        raise Forbidden(
            "You cannot reset your own two-step sign-in: move it to a new app from the "
            "home page, or ask another admin."
        )
    staffauth.clear_totp(user)
    staffauth.end_all(db, user, "second_factor_reset")
    audit.record(
        db,
        "staff.totp",
        "reset_by_admin",
        **Actor.staff(by.email).audit(),
        detail=f"second factor of {user.email} reset; must set up a new one",
    )
    _notify(db, user, "reset", by=by.email)


def _notify(db: Session, user: StaffUser, change: str, by: str | None = None) -> None:
    """Tell the staff member: a second factor they did not replace themselves means
    somebody else holds their password and a session."""
    from emails import outbox
    from emails.render import render

    outbox.queue(
        db,
        render(
            "staff_second_factor",
            user.email,
            account=user.email,
            change=change,
            by=by,
            when=clock.now(),
            issuer=settings().TOTP_ISSUER,
            sign_in_url=f"{settings().PORTAL_BASE_URL}/admin/sign-in",
        ),
    )


# --- staff users, as admins manage them -------------------------------------------------


def _record_staff(db: Session, actor: Actor, action: str, email: str, changes: object) -> None:
    audit.record(
        db,
        action,
        "changed",
        **actor.audit(),
        detail=json.dumps({"staff": email, "changes": changes}),
    )


def create_staff_user(
    db: Session,
    actor: Actor,
    *,
    email: str,
    name: str | None,
    role: StaffRole,
    is_active: bool,
    password: str,
) -> StaffUser:
    """A new staff account under the canonical form of `email`, audited. Raises Invalid
    (email, password) or Conflict (an address that has an account already)."""
    try:
        email = canonical_email(email)
    except AccessError as exc:
        raise Invalid(exc.message, "email") from None
    if db.scalar(select(func.count()).where(StaffUser.email == email)):
        raise Conflict(f"{email} already has a staff account.", "email")
    user = StaffUser(email=email, name=name, role=role, is_active=is_active)
    try:
        user.set_password(password)
    except ValueError as exc:
        raise Invalid(str(exc), "password") from None
    db.add(user)
    _record_staff(db, actor, "staff.create", email, {"role": [None, role.value]})
    return user


def update_staff_user(
    db: Session,
    actor: Actor,
    by: StaffUser,
    user: StaffUser,
    *,
    name: str | None,
    role: StaffRole,
    is_active: bool,
    password: str = "",
) -> None:
    """Change a staff account (`by` is the admin changing it), audited. A changed role,
    a new password or a deactivation ends every session of theirs: they start again from
    a new sign-in. Nobody changes their own role or deactivates themselves (Forbidden),
    and a short password is refused (Invalid); either way nothing is written."""
    if by.id == user.id and (role != user.role or not is_active):
        raise Forbidden(
            "You cannot change your own role or deactivate yourself; ask another admin.", "role"
        )
    before = {"role": user.role.value, "is_active": user.is_active}
    if password:
        try:
            user.set_password(password)
        except ValueError as exc:
            raise Invalid(str(exc), "password") from None
    user.role, user.is_active, user.name = role, is_active, name
    after = {"role": role.value, "is_active": is_active}
    changes = {k: [before[k], v] for k, v in after.items() if before[k] != v}
    if password:
        changes["password"] = ["(set)", "(reset)"]
    if not is_active or password or "role" in changes:
        db.execute(
            update(StaffSession)
            .where(StaffSession.staff_user_id == user.id, StaffSession.revoked_at.is_(None))
            .values(revoked_at=clock.now(), revoked_reason="changed_by_admin")
        )
    _record_staff(db, actor, "staff.update", user.email, changes)
