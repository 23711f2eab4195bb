"""A signed-in customer's sessions: moving one to another bill group of the same seller
(the switcher), and ending sessions (the customer's "Signed-in devices" page and the
staff access page call the same `end_session`).

A switch moves the server-side session row: the cookie, the address and the absolute
expiry stay as they are, only `bill_group_id` changes, by one conditional UPDATE. The
target is checked as a sign-in would check it (same seller, portal available, a rule
admits the address today, not a rule that requires the company's own sign-in), under
the target's lock, so a rule removed a moment before is seen. The caller commits; on a
refusal it commits too, to keep the audit row (nothing else was written).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from portal import audit, clock, sessions, sso
from portal.access import may_access
from portal.actions import Actor, Forbidden, NotFound
from portal.db import rowcount
from portal.locks import lock_bill_group
from portal.models import AuditEvent, BillGroup, CustomerSession


class SwitchRefused(Forbidden):
    """The session cannot move to that bill group; `code` says why, for the record."""

    def __init__(self, code: str) -> None:
        super().__init__(
            "You cannot switch to that bill group with this sign-in. Sign in to it instead.",
            code=code,
        )


class NoSuchSession(NotFound):
    """Not one of this customer's sessions (or already ended): as absent as none."""

    def __init__(self) -> None:
        super().__init__("That device is not signed in.")


@dataclass(frozen=True)
class Switched:
    target: BillGroup
    # False: the session was already there (a second click, or one of a burst).
    moved: bool


def switch_bill_group(db: Session, row: CustomerSession, target: BillGroup) -> Switched:
    """Move the live session `row` to `target`. Another seller's bill group is NotFound
    (nothing written: it is not the customer's business that it exists); a group of the
    same seller that does not admit the address today is SwitchRefused, audited."""
    source = row.bill_group
    if target.entity_id != source.entity_id:
        raise NotFound("That bill group is not available.")
    if target.id == source.id:
        return Switched(target, moved=False)
    actor = Actor.customer(row.email)
    lock_bill_group(db, target.id)
    # After the lock: the rules and switches as they are now, not as this request first
    # read them (a rule removed between the listing and the click is seen here).
    db.refresh(target, ["access_rules", "portal_enabled", "contract_start", "contract_end"])
    rule = may_access(target, row.email, clock.today())
    code = "not_admitted" if rule is None else "sso_required" if sso.required_for(rule) else None
    if code is None and _everyone_signed_out_since(db, target, row):
        code = "signed_out_by_staff"
    if code is not None:
        audit.record(
            db,
            "session.switch",
            code,
            **actor.audit(),
            bill_group_id=target.id,
            detail=f"from bill group {source.id}",
        )
        raise SwitchRefused(code)
    now = clock.now()
    moved = db.execute(
        update(CustomerSession)
        .where(
            CustomerSession.id == row.id,
            CustomerSession.bill_group_id == source.id,
            CustomerSession.revoked_at.is_(None),
            CustomerSession.expires_at > now,
        )
        .values(bill_group_id=target.id)
        .execution_options(synchronize_session=False)
    )
    if rowcount(moved) == 0:
        # Another request moved or ended it first: fine if it is now where asked.
        db.refresh(row)
        if row.revoked_at is None and row.bill_group_id == target.id:
            return Switched(target, moved=False)
        raise SwitchRefused("session_changed")
    db.refresh(row)
    for group_id, outcome, detail in (
        (source.id, "switched_out", f"to bill group {target.id}"),
        (target.id, "switched_in", f"from bill group {source.id}"),
    ):
        audit.record(
            db, "session.switch", outcome, **actor.audit(), bill_group_id=group_id, detail=detail
        )
    return Switched(target, moved=True)


def _everyone_signed_out_since(db: Session, target: BillGroup, row: CustomerSession) -> bool:
    """Whether staff signed everyone out of `target` after this session began. Staff are
    told that everyone "must sign in again to see this bill group" (admin.access), so a
    session that was at another bill group at that moment must not walk back in by a
    switch: a new sign-in makes a new session, which may switch again."""
    return (
        db.scalar(
            select(AuditEvent.id)
            .where(
                AuditEvent.bill_group_id == target.id,
                AuditEvent.action == "session.revoke_all",
                AuditEvent.at >= row.created_at,
            )
            .limit(1)
        )
        is not None
    )


def end_session(db: Session, actor: Actor, row: CustomerSession, reason: str) -> bool:
    """End one session (portal.sessions.revoke audits `session.end`) and record who asked
    (`session.revoke`); False if it had already ended (nothing written)."""
    if not sessions.revoke(db, row, reason):
        return False
    audit.record(
        db,
        "session.revoke",
        reason,
        **actor.audit(),
        bill_group_id=row.bill_group_id,
        detail=row.email,
    )
    return True


def own_sessions(db: Session, current: CustomerSession) -> list[CustomerSession]:
    """The sessions of the current session's address with its seller, across the seller's
    bill groups (a session can move), newest first. Live: not ended, not expired, not idle."""
    now = clock.now()
    query = (
        select(CustomerSession)
        .join(BillGroup, BillGroup.id == CustomerSession.bill_group_id)
        .where(
            CustomerSession.email == current.email,
            BillGroup.entity_id == current.bill_group.entity_id,
            CustomerSession.revoked_at.is_(None),
            CustomerSession.expires_at > now,
            CustomerSession.last_seen_at > now - sessions.idle_timeout(),
        )
        .order_by(CustomerSession.created_at.desc(), CustomerSession.id.desc())
    )
    return list(db.scalars(query))


def end_own_session(db: Session, current: CustomerSession, session_id: object) -> CustomerSession:
    """The customer ends another of their own live sessions (another device: what the
    page lists). Anything else (another address's, another seller's, an ended or lapsed
    one, this one, not a number) is NoSuchSession, and nothing is written."""
    if not isinstance(session_id, int) or not 0 < session_id < 2**63:
        raise NoSuchSession()
    target = next((s for s in own_sessions(db, current) if s.id == session_id), None)
    if target is None or target.id == current.id:
        raise NoSuchSession()
    end_session(db, Actor.customer(current.email), target, "signed_out_by_customer")
    return target


def end_other_sessions(db: Session, current: CustomerSession) -> int:
    """The customer's "sign out all other devices" (the live ones; a lapsed session is
    ended at its next request anyway): each ended and audited as one."""
    actor = Actor.customer(current.email)
    ended = 0
    for row in own_sessions(db, current):
        if row.id != current.id and end_session(db, actor, row, "signed_out_by_customer"):
            ended += 1
    return ended
