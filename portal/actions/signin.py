"""Finishing a customer's sign-in, once its challenge is spent.

Spending the challenge (one conditional UPDATE, portal.signin.spend / check_code) proves
that this request, and no other, holds the link or code. What follows is the same for
the link and the typed code, so it is written once here: check the rules again (they may
have changed since the link was sent), end the browser's old session, retire the other
open links for that address and bill group, create the new server-side session, audit,
and queue the `portal.signed_in` event. The face then replaces the browser's cookie
session, remembers the device and redirects; it commits in every case, so a spent
challenge stays spent even when the sign-in is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from portal import audit, events, sessions, signin, sso
from portal.access import may_access
from portal.actions import Actor, Forbidden
from portal.clock import today
from portal.models import BillGroup, CustomerSession, SignInChallenge


@dataclass(frozen=True)
class SignedIn:
    """A new session: `sid` goes into the cookie (only its hash is stored), `next_path`
    is where the customer asked to go, if anywhere."""

    sid: str
    session: CustomerSession
    email: str
    next_path: str | None


class SignInRefused(Forbidden):
    """The sign-in cannot complete. The customer only ever sees the one "link not usable"
    page; `code` (the audit outcome) and `email` are for the record."""

    def __init__(self, code: str, email: str | None = None) -> None:
        super().__init__("This link or code can no longer be used.", code=code)
        self.email = email


def complete_sign_in(
    db: Session,
    group: BillGroup,
    challenge_id: int,
    *,
    replacing: CustomerSession | None = None,
) -> SignedIn:
    """Sign in with a challenge this request has just spent (uncommitted), ending the
    browser's session `replacing`. Raises SignInRefused (writing nothing) if the address
    no longer has access, or its domain now signs in with its company's sign-in only."""
    # Afresh: the spend was an UPDATE behind the ORM's back.
    challenge = db.get(SignInChallenge, challenge_id, populate_existing=True)
    if challenge is None or challenge.bill_group_id != group.id:
        raise SignInRefused("link_not_usable")
    rule = may_access(group, challenge.email, today())
    if rule is None:
        raise SignInRefused("access_revoked", challenge.email)
    if sso.required_for(rule):
        raise SignInRefused("sso_required", challenge.email)
    return start_session(
        db, group, challenge.email, challenge.next_path, replacing=replacing, spent=challenge.id
    )


def complete_sso_sign_in(
    db: Session,
    group: BillGroup,
    verified: sso.Verified,
    *,
    replacing: CustomerSession | None = None,
) -> SignedIn:
    """Sign in with an address the company's provider has just vouched for (portal.sso
    checked the token and spent the attempt). The same re-check and the same session as
    the emailed link; audited with the provider. Raises SignInRefused if the bill group's
    rules do not admit the address today."""
    email = verified.email
    if may_access(group, email, today()) is None:
        raise SignInRefused("access_revoked", email)
    return start_session(
        db,
        group,
        email,
        verified.attempt.next_path,
        replacing=replacing,
        outcome="signed_in_sso",
        audit_detail=f"sso {verified.provider.issuer}"[:500],
    )


def start_session(
    db: Session,
    group: BillGroup,
    email: str,
    next_path: str | None,
    *,
    replacing: CustomerSession | None,
    spent: int | None = None,
    return_url: str | None = None,
    outcome: str = "signed_in",
    audit_detail: str | None = None,
) -> SignedIn:
    """The part of a sign-in that follows proof of the address, for every way in (an
    emailed link or code, the company's sign-in, a portal session the seller's app
    made): end the browser's old session, retire the open links for the address (but
    `spent`, the challenge just used), create the session row, audit and queue
    `portal.signed_in`. The caller has checked the rules."""
    if replacing is not None:
        sessions.revoke(db, replacing, "replaced")
    signin.retire_open(db, group.id, email, except_id=spent)
    sid, row = sessions.create(db, group, email)
    row.return_url = return_url
    actor = Actor.customer(email)
    audit.record(
        db,
        "signin.complete",
        outcome,
        bill_group_id=group.id,
        detail=audit_detail,
        **actor.audit(),
    )
    events.signed_in(db, group, email)
    return SignedIn(sid, row, email, next_path)


def record_refusal(db: Session, group: BillGroup, refused: SignInRefused) -> None:
    """Audit a sign-in that did not complete, by whoever held the link (not yet a
    customer: the actor is anonymous). The caller commits."""
    audit.record(
        db,
        "signin.complete",
        refused.code,
        actor_type="anonymous",
        actor=refused.email,
        bill_group_id=group.id,
    )
