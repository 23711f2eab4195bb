"""Sign-in by emailed link or code: request, evaluate (off the request path), open,
spend once, and start a session. The design is ../shared/SECURITY.md.

Secrets: the link token is 256 bits from `secrets`, stored as SHA-256; the 8-digit code
is stored as HMAC-SHA-256 under a key derived from SECRET_KEY; the browser nonce is
stored as SHA-256. Each is spent by one conditional UPDATE, so of any number of
concurrent attempts exactly one wins.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from enum import Enum
from urllib.parse import unquote, urlsplit

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from emails import outbox
from emails.render import render
from portal import audit, clock, devices, links, sso, throttle
from portal.access import may_access
from portal.config import settings
from portal.db import rowcount
from portal.models import BillGroup, CustomerSession, SignInChallenge

log = logging.getLogger(__name__)

CODE_DIGITS = 8


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def new_nonce() -> str:
    return secrets.token_urlsafe(32)


def _code_key() -> bytes:
    # A key of its own, so a code hash is useless without SECRET_KEY.
    secret = settings().SECRET_KEY
    return hashlib.sha256(b"portal sign-in code\x00" + secret.encode()).digest()


def code_hash(challenge_id: int, code: str) -> str:
    message = f"{challenge_id}:{code}".encode()
    return hmac.new(_code_key(), message, hashlib.sha256).hexdigest()


def normalise_code(raw: str) -> str | None:
    """'1234-5678', '1234 5678' and '12345678' are the same code; anything else is None."""
    digits = "".join(ch for ch in raw if ch not in " -")
    if len(digits) != CODE_DIGITS or not digits.isascii() or not digits.isdigit():
        return None
    return digits


def format_code(code: str) -> str:
    return f"{code[:4]}-{code[4:]}"


def safe_next(raw: str | None, public_id: str) -> str | None:
    """A same-site path inside this bill group's portal, or None.

    Only paths under /p/<public id>/ are accepted: no scheme, no host, no backslashes,
    no control characters, nothing that a browser could read as another origin.
    """
    if not raw or len(raw) > 500:
        return None
    if any(ord(ch) < 0x21 or ch in "\\\x7f" for ch in raw):
        return None
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc or raw.startswith("//"):
        return None
    prefix = f"/p/{public_id}/"
    # Browsers read "%2e" as "." in a path, so "/p/<id>/%2e%2e/" climbs out like "../".
    segments = unquote(parts.path).split("/")
    if not parts.path.startswith(prefix) or any(s in (".", "..") for s in segments):
        return None
    return raw


# --- requesting a link --------------------------------------------------------------


def request_link(
    db: Session,
    bill_group: BillGroup,
    email: str,
    nonce: str,
    next_path: str | None,
    code_only: bool = False,
) -> bool:
    """Record a request for a link, the same way for every address; returns whether it
    was within budget. Whether the address is admitted is decided later, by
    `evaluate_pending`, so that this request costs the same either way.

    Only the budgets of the requester are spent here: the address's and the client's,
    or, from a browser this address signed in from before, that known device's alone
    (so a flood of the address from elsewhere cannot use it up). The domain's and the
    global budget count emails sent, in the worker, where admission is known.
    """
    if devices.is_known(email):
        budgets: tuple[tuple[str, str], ...] = (("signin-known-device", email),)
    else:
        budgets = (("signin-address", email), ("signin-ip", throttle.client_key()))
    if not throttle.within(*budgets):
        audit.record(
            db,
            "signin.request",
            "throttled",
            actor_type="anonymous",
            actor=email,
            bill_group_id=bill_group.id,
        )
        db.commit()
        return False
    now = clock.now()
    db.add(
        SignInChallenge(
            bill_group_id=bill_group.id,
            email=email,
            nonce_hash=sha256(nonce),
            next_path=next_path,
            ip=audit.client_ip(),
            created_at=now,
            expires_at=now + dt.timedelta(minutes=settings().SIGNIN_TTL_MINUTES),
            code_only=code_only,
        )
    )
    audit.record(
        db,
        "signin.request",
        "queued",
        actor_type="anonymous",
        actor=email,
        bill_group_id=bill_group.id,
    )
    db.commit()
    return True


def evaluate_pending(db: Session, limit: int = 50) -> int:
    """Decide pending requests: for an admitted address issue a token and code and queue
    the email; otherwise record the refusal. Returns how many were decided."""
    pending = db.scalars(
        select(SignInChallenge.id)
        .where(SignInChallenge.evaluated_at.is_(None))
        .order_by(SignInChallenge.id)
        .limit(limit)
    ).all()
    decided = 0
    for challenge_id in pending:
        now = clock.now()
        claimed = db.execute(
            update(SignInChallenge)
            .where(SignInChallenge.id == challenge_id, SignInChallenge.evaluated_at.is_(None))
            .values(evaluated_at=now)
            .execution_options(synchronize_session=False)
        )
        if rowcount(claimed) != 1:
            db.rollback()
            continue  # another worker has it
        challenge = db.get(SignInChallenge, challenge_id, populate_existing=True)
        assert challenge is not None
        _decide(db, challenge, now)
        db.commit()
        decided += 1
    return decided


def _decide(db: Session, challenge: SignInChallenge, now: dt.datetime) -> None:
    group = challenge.bill_group
    if challenge.retired_at is not None or challenge.spent_at is not None:
        return  # the address signed in meanwhile: no email for a link that cannot work
    rule = may_access(group, challenge.email, now.date())
    if rule is None or challenge.expires_at <= now:
        audit.record(
            db,
            "signin.link",
            "not_admitted",
            actor_type="anonymous",
            actor=challenge.email,
            bill_group_id=group.id,
            ip=challenge.ip,
        )
        return
    if sso.required_for(rule):
        # Staff made the domain sign in with its company's sign-in since the request.
        audit.record(
            db,
            "signin.link",
            "sso_required",
            actor_type="anonymous",
            actor=challenge.email,
            bill_group_id=group.id,
            ip=challenge.ip,
        )
        return
    if not _volume_within_budget(db, challenge):
        audit.record(
            db,
            "signin.link",
            "throttled",
            actor_type="anonymous",
            actor=challenge.email,
            bill_group_id=group.id,
            detail="domain or global budget",
            ip=challenge.ip,
        )
        return
    token = secrets.token_urlsafe(32)  # 256 bits
    code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
    challenge.token_hash = sha256(token)
    challenge.code_hash = code_hash(challenge.id, code)
    minutes = settings().SIGNIN_TTL_MINUTES
    email = render(
        "signin_link",
        challenge.email,
        entity=group.entity,
        bill_group=group,
        link=None if challenge.code_only else links.portal_url(group, f"/verify/{token}"),
        code=format_code(code),
        minutes=minutes,
        portal_url=links.portal_url(group),
    )
    outbox.queue(db, email, discard_after=challenge.expires_at)
    audit.record(
        db,
        "signin.link",
        "sent",
        actor_type="anonymous",
        actor=challenge.email,
        bill_group_id=group.id,
        detail=f"rule {rule.id}" + (", code only" if challenge.code_only else ""),
        ip=challenge.ip,
    )


def _volume_within_budget(db: Session, challenge: SignInChallenge) -> bool:
    """Spend an email from the domain's and the global budget, unless the address has
    signed in to this bill group before.

    Only emails that go out are counted, so requests for addresses nobody admitted cost
    nothing here; and an address that signed in before is bounded by its own budget
    alone, so invented addresses under a domain rule cannot crowd out the real ones.
    """
    returning = db.scalar(
        select(CustomerSession.id)
        .where(
            CustomerSession.bill_group_id == challenge.bill_group_id,
            CustomerSession.email == challenge.email,
        )
        .limit(1)
    )
    if returning is not None:
        return True
    domain = challenge.email.rpartition("@")[2]
    return throttle.within(("signin-domain", domain), ("signin-global", "all"))


# --- using a link or a code ---------------------------------------------------------


class LinkState(Enum):
    SAME_BROWSER = "same_browser"
    OTHER_BROWSER = "other_browser"
    INVALID = "invalid"


@dataclass(frozen=True)
class OpenedLink:
    state: LinkState
    challenge: SignInChallenge | None = None


def _usable(now: dt.datetime):  # type: ignore[no-untyped-def]
    return (
        SignInChallenge.token_hash.is_not(None),
        SignInChallenge.spent_at.is_(None),
        SignInChallenge.retired_at.is_(None),
        SignInChallenge.expires_at > now,
    )


def open_link(db: Session, bill_group: BillGroup, token: str, nonce: str | None) -> OpenedLink:
    """Look at a link without spending it (GETs never change state)."""
    if not token or len(token) > 100:
        return OpenedLink(LinkState.INVALID)
    challenge = db.scalar(
        select(SignInChallenge).where(
            SignInChallenge.token_hash == sha256(token),
            SignInChallenge.bill_group_id == bill_group.id,
            *_usable(clock.now()),
        )
    )
    if challenge is None:
        return OpenedLink(LinkState.INVALID)
    if nonce and hmac.compare_digest(challenge.nonce_hash, sha256(nonce)):
        return OpenedLink(LinkState.SAME_BROWSER, challenge)
    return OpenedLink(LinkState.OTHER_BROWSER, challenge)


def spend(db: Session, challenge_id: int, bill_group: BillGroup, nonce: str | None) -> bool:
    """Spend the challenge, bound to this browser; True for exactly one caller."""
    if not nonce:
        return False
    result = db.execute(
        update(SignInChallenge)
        .where(
            SignInChallenge.id == challenge_id,
            SignInChallenge.bill_group_id == bill_group.id,
            SignInChallenge.nonce_hash == sha256(nonce),
            *_usable(clock.now()),
        )
        .values(spent_at=clock.now())
        .execution_options(synchronize_session=False)
    )
    return rowcount(result) == 1


def _open(now: dt.datetime):  # type: ignore[no-untyped-def]
    """Not yet spent, retired or expired: whether or not the worker issued a code."""
    return (
        SignInChallenge.spent_at.is_(None),
        SignInChallenge.retired_at.is_(None),
        SignInChallenge.expires_at > now,
    )


# Compared with the typed code where no code was issued (the address is not admitted,
# or not yet decided): same work, and no HMAC's hex digest can ever equal it.
_NO_CODE = "-" * 64


def check_code(db: Session, bill_group: BillGroup, nonce: str | None, raw: str) -> int | None:
    """The id of the challenge that this code spends, or None.

    Only challenges requested from this browser are candidates; each code typed takes
    an attempt from every candidate (5 each), and a wrong one counts against the
    address (20 a day).

    A challenge for an address that is not admitted is a candidate like any other and
    simply has no code that matches: the same statements, budget calls, audit row and
    commit as a wrong code for an admitted address, so neither the answer nor its time
    says which it was.
    """
    code = normalise_code(raw)
    if not nonce:
        return None
    max_attempts = settings().CODE_ATTEMPTS_PER_CHALLENGE
    candidates = db.scalars(
        select(SignInChallenge).where(
            SignInChallenge.bill_group_id == bill_group.id,
            SignInChallenge.nonce_hash == sha256(nonce),
            SignInChallenge.code_attempts < max_attempts,
            *_open(clock.now()),
        )
    ).all()
    candidates = [c for c in candidates if throttle.has_room("code-failures", c.email)]
    # Take the attempt before comparing, by a conditional UPDATE: of any number of
    # concurrent guesses, at most max_attempts per challenge are ever compared.
    taken = []
    for candidate in candidates:
        attempt = db.execute(
            update(SignInChallenge)
            .where(
                SignInChallenge.id == candidate.id,
                SignInChallenge.code_attempts < max_attempts,
                *_open(clock.now()),
            )
            .values(code_attempts=SignInChallenge.code_attempts + 1)
            .execution_options(synchronize_session=False)
        )
        if rowcount(attempt) == 1:
            taken.append(candidate)
    candidates = taken
    if not candidates:
        return None
    for challenge in candidates:
        typed = code_hash(challenge.id, code) if code is not None else ""
        if hmac.compare_digest(challenge.code_hash or _NO_CODE, typed) and code is not None:
            # This request holds one of the attempts (taken above, same transaction).
            won = db.execute(
                update(SignInChallenge)
                .where(SignInChallenge.id == challenge.id, *_usable(clock.now()))
                .values(spent_at=clock.now())
                .execution_options(synchronize_session=False)
            )
            return challenge.id if won.rowcount == 1 else None  # type: ignore[attr-defined]
    for address in {c.email for c in candidates}:
        throttle.spend("code-failures", address)
        audit.record(
            db,
            "signin.code",
            "wrong_code",
            actor_type="anonymous",
            actor=address,
            bill_group_id=bill_group.id,
        )
    db.commit()
    return None


def retire_open(db: Session, bill_group_id: int, email: str, *, except_id: int | None) -> None:
    """After a sign-in, the open links and codes for that address and bill group stop
    working, but `except_id` (the challenge just spent)."""
    db.execute(
        update(SignInChallenge)
        .where(
            SignInChallenge.bill_group_id == bill_group_id,
            SignInChallenge.email == email,
            SignInChallenge.id != (except_id if except_id is not None else -1),
            SignInChallenge.spent_at.is_(None),
            SignInChallenge.retired_at.is_(None),
        )
        .values(retired_at=clock.now())
        .execution_options(synchronize_session=False)
    )
