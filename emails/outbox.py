"""The durable outbox: messages are rows written in the same transaction as the change
that caused them, and a worker sends them after commit.

Each message is claimed with a lease by one conditional UPDATE, so two workers never
send the same message; a failed send is retried with exponential backoff.

Bodies can hold live sign-in links, so they are encrypted at rest (Fernet, a key
derived from SECRET_KEY: a database dump alone does not give working links) and
emptied once the message is sent or dropped.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import secrets
import time

from sqlalchemy import and_, or_, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from emails.render import Attachment, Email
from emails.transport import Sender
from portal import clock, crypto, leases
from portal.config import settings
from portal.crypto import InvalidToken
from portal.models import OutboxMessage

log = logging.getLogger(__name__)

LEASE = dt.timedelta(seconds=120)
# Sign-in links live 15 minutes: a longer pause could let SMTP come back and the link
# still expire unsent. Two minutes keeps retries cheap and the link useful.
MAX_BACKOFF = dt.timedelta(minutes=2)
# How long a worker keeps trying to record a delivery, and the pause between tries.
RECORD_SENT_FOR = LEASE / 2
RECORD_SENT_PAUSE = 0.5


PURPOSE = "portal outbox body"


def seal(text: str) -> str:
    return crypto.seal(PURPOSE, text)


def unseal(sealed: str) -> str:
    """The body as it was queued; raises InvalidToken if SECRET_KEY has changed."""
    return crypto.unseal(PURPOSE, sealed)


def queue(db: Session, email: Email, discard_after: dt.datetime | None = None) -> None:
    """Add the message to the caller's transaction."""
    db.add(
        OutboxMessage(
            kind=email.kind,
            to_address=email.to,
            reply_to=email.reply_to,
            subject=email.subject,
            text_body=seal(email.text),
            html_body=seal(email.html),
            attachments=_seal_attachments(email.attachments),
            headers=seal(json.dumps(email.headers)) if email.headers else None,
            next_attempt_at=clock.now(),
            discard_after=discard_after,
        )
    )


def _seal_attachments(attachments: tuple[Attachment, ...]) -> str | None:
    if not attachments:
        return None
    listed = [
        {
            "filename": a.filename,
            "content_type": a.content_type,
            "data": base64.b64encode(a.data).decode("ascii"),
        }
        for a in attachments
    ]
    return seal(json.dumps(listed))


def unseal_attachments(sealed: str | None) -> tuple[Attachment, ...]:
    """The files queued with a message; raises InvalidToken if SECRET_KEY has changed."""
    if not sealed:
        return ()
    return tuple(
        Attachment(item["filename"], item["content_type"], base64.b64decode(item["data"]))
        for item in json.loads(unseal(sealed))
    )


def unseal_headers(sealed: str | None) -> tuple[tuple[str, str], ...]:
    """The extra headers queued with a message; raises InvalidToken if SECRET_KEY has
    changed."""
    if not sealed:
        return ()
    return tuple((name, value) for name, value in json.loads(unseal(sealed)))


def backoff(attempts: int) -> dt.timedelta:
    """5 s, 10 s, 20 s ... capped at MAX_BACKOFF."""
    return min(dt.timedelta(seconds=5 * 2 ** max(attempts - 1, 0)), MAX_BACKOFF)


def _due(now: dt.datetime):  # type: ignore[no-untyped-def]
    return and_(
        OutboxMessage.sent_at.is_(None),
        OutboxMessage.discarded_at.is_(None),
        OutboxMessage.next_attempt_at <= now,
        or_(OutboxMessage.claimed_until.is_(None), OutboxMessage.claimed_until < now),
    )


def claim(db: Session, worker: str, limit: int = 20) -> list[OutboxMessage]:
    """Lease up to `limit` due messages to this worker and return them, oldest first
    (portal.leases: exactly one of two racing workers gets each)."""
    now = clock.now()
    return leases.lease(db, OutboxMessage, _due(now), worker=worker, until=now + LEASE, limit=limit)


def send_due(db: Session, worker: str | None = None, limit: int = 20) -> int:
    """Send what is due; returns how many were sent."""
    worker = worker or secrets.token_hex(8)
    with Sender() as sender:  # one SMTP connection for the whole batch
        return _send_claimed(db, sender, claim(db, worker, limit))


def _send_claimed(db: Session, sender: Sender, messages: list[OutboxMessage]) -> int:
    sent = 0
    for message in messages:
        now = clock.now()
        if message.discard_after is not None and message.discard_after < now:
            _drop(db, message, now, "expired before it could be sent")
            continue
        try:
            text, html = unseal(message.text_body), unseal(message.html_body)
            files = unseal_attachments(message.attachments)
            headers = unseal_headers(message.headers)
        except InvalidToken:
            _drop(db, message, now, "cannot be decrypted: SECRET_KEY has changed")
            continue
        try:
            sender.deliver(
                message.to_address, message.subject, text, html, message.reply_to, files, headers
            )
        except Exception as exc:  # SMTP errors, timeouts, refused connections
            message.attempts += 1
            message.next_attempt_at = now + backoff(message.attempts)
            message.claimed_until = None
            message.last_error = f"{type(exc).__name__}: {exc}"[:500]
            db.commit()
            log.warning(
                "outbox message %s not sent (attempt %s): %s",
                message.id,
                message.attempts,
                type(exc).__name__,
            )
            continue
        _record_sent(db, message)
        sent += 1
    return sent


def _record_sent(db: Session, message: OutboxMessage) -> None:
    """Write down that the message went. It has gone, so a database that blinks now must
    not lose that, or the message would go again once the lease runs out: the write is
    retried, on a fresh connection each time, for RECORD_SENT_FOR (well inside the lease)."""
    message_id = message.id
    values = {
        "attempts": OutboxMessage.attempts + 1,
        "sent_at": clock.now(),
        "claimed_until": None,
    }
    if settings().MAIL_TRANSPORT != "console":  # the dev mailbox reads them
        values |= {"text_body": "", "html_body": "", "attachments": None, "headers": None}
    deadline = time.monotonic() + RECORD_SENT_FOR.total_seconds()
    while True:
        try:
            db.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == message_id)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            db.commit()
            db.expire(message)  # read back as written, should anyone look
            return
        except DBAPIError as exc:
            db.rollback()
            if time.monotonic() >= deadline:
                raise
            log.warning(
                "outbox message %s sent but not yet recorded (%s); retrying",
                message_id,
                type(exc).__name__,
            )
            time.sleep(RECORD_SENT_PAUSE)


def _drop(db: Session, message: OutboxMessage, now: dt.datetime, why: str) -> None:
    message.discarded_at = now
    message.claimed_until = None
    message.text_body = message.html_body = ""
    message.attachments = None
    message.headers = None
    message.last_error = why
    db.commit()
    log.info("outbox message %s dropped: %s", message.id, why)
