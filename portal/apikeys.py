"""API keys for the billing system: created and revoked by admins, shown once, stored as
SHA-256 (a key is 256 random bits, so a fast hash is enough: there is nothing to guess)."""

from __future__ import annotations

import datetime as dt
import re
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import clock
from portal.models import ApiKey
from portal.signin import sha256

PREFIX = "bp_"
SCOPES = ("read", "write", "sessions")
_SHAPE = re.compile(r"^bp_[A-Za-z0-9_-]{43}$")
# last_used_at is written at most this often, not on every request.
TOUCH_EVERY = dt.timedelta(seconds=60)


def create(db: Session, name: str, scopes: set[str], created_by: str) -> tuple[str, ApiKey]:
    """A new key and its row; the caller commits and shows the key once."""
    unknown = set(scopes) - set(SCOPES)
    if unknown or not scopes:
        raise ValueError(f"Scopes are {', '.join(SCOPES)}.")
    name = name.strip()
    if not name or len(name) > 100:
        raise ValueError("Give the key a name of at most 100 characters.")
    key = PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        name=name,
        key_hash=sha256(key),
        hint=key[: len(PREFIX) + 6],
        scopes=" ".join(scope for scope in SCOPES if scope in scopes),
        created_by=created_by,
        created_at=clock.now(),
    )
    db.add(row)
    return key, row


def authenticate(db: Session, presented: str) -> ApiKey | None:
    """The active key this is, or None. Commits a last-used time now and then."""
    if not _SHAPE.match(presented):
        return None
    row = db.scalar(select(ApiKey).where(ApiKey.key_hash == sha256(presented)))
    if row is None or row.revoked_at is not None:
        return None
    now = clock.now()
    if row.last_used_at is None or now - row.last_used_at >= TOUCH_EVERY:
        row.last_used_at = now
        db.commit()
    return row


def revoke(db: Session, row: ApiKey, by: str) -> bool:
    """Revoke the key (the caller commits); False if it already was."""
    if row.revoked_at is not None:
        return False
    row.revoked_at = clock.now()
    row.revoked_by = by
    return True
