"""The outbox sends a claimed batch over one SMTP connection (bench/run.py's outbox
benchmark found a connection, greeting and QUIT per message), and a connection that the
server drops between two messages costs neither message an attempt."""

from __future__ import annotations

import smtplib

from sqlalchemy import select

from emails import outbox, transport
from portal import db as portal_db
from portal.models import OutboxMessage
from tests.conftest import queue_emails


def _count_connections(monkeypatch) -> list[int]:
    opened: list[int] = []
    configure = transport._TimeoutConnection.configure_host

    def counted(self):  # type: ignore[no-untyped-def]
        opened.append(1)
        return configure(self)

    monkeypatch.setattr(transport._TimeoutConnection, "configure_host", counted)
    return opened


def test_a_batch_goes_over_one_smtp_connection(app, db, smtp, monkeypatch):
    queue_emails(app, db, 5)
    opened = _count_connections(monkeypatch)
    with app.app_context():
        assert outbox.send_due(portal_db.session(), worker="w", limit=20) == 5
    assert len(opened) == 1
    assert sorted(m["Subject"] for m in smtp.messages) == [f"Message {i:03d}" for i in range(5)]
    rows = db.scalars(select(OutboxMessage)).all()
    assert all(m.sent_at is not None and m.attempts == 1 for m in rows)


def test_a_connection_dropped_between_messages_is_opened_again(app, db, smtp, monkeypatch):
    queue_emails(app, db, 3)
    opened = _count_connections(monkeypatch)
    send = transport.Connection.send
    dropped: list[str] = []

    def drop_once(self, message, envelope_from=None):  # type: ignore[no-untyped-def]
        if message.subject == "Message 001" and not dropped:
            dropped.append(message.subject)
            raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
        return send(self, message, envelope_from)

    monkeypatch.setattr(transport.Connection, "send", drop_once)
    with app.app_context():
        assert outbox.send_due(portal_db.session(), worker="w") == 3
    assert dropped and len(opened) == 2
    assert sorted(m["Subject"] for m in smtp.messages) == [
        "Message 000",
        "Message 001",
        "Message 002",
    ]
    rows = db.scalars(select(OutboxMessage)).all()
    assert all(m.sent_at is not None and m.attempts == 1 for m in rows)


def test_a_message_that_fails_is_retried_later_and_the_rest_still_go(app, db, smtp, monkeypatch):
    queue_emails(app, db, 3)
    send = transport.Connection.send

    def refuse(self, message, envelope_from=None):  # type: ignore[no-untyped-def]
        if message.subject == "Message 001":
            raise smtplib.SMTPRecipientsRefused({"user1@acme.com": (550, b"no such user")})
        return send(self, message, envelope_from)

    monkeypatch.setattr(transport.Connection, "send", refuse)
    with app.app_context():
        assert outbox.send_due(portal_db.session(), worker="w") == 2
    assert sorted(m["Subject"] for m in smtp.messages) == ["Message 000", "Message 002"]
    failed = db.scalar(select(OutboxMessage).where(OutboxMessage.subject == "Message 001"))
    assert failed.sent_at is None and failed.attempts == 1
    assert failed.last_error and "SMTPRecipientsRefused" in failed.last_error


def test_a_claim_leases_at_most_its_limit_and_the_next_claim_the_next_ones(app, db, smtp):
    # On PostgreSQL a LIMIT ... FOR UPDATE SKIP LOCKED subquery under IN was run again
    # for every row of a nested loop, and one worker leased every due message at once.
    queue_emails(app, db, 30)
    with app.app_context():
        first = [m.id for m in outbox.claim(portal_db.session(), "a", limit=4)]
    with app.app_context(), app.extensions["portal.db"]() as other:
        second = [m.id for m in outbox.claim(other, "b", limit=4)]
    assert len(first) == len(second) == 4
    assert not set(first) & set(second)
    leased = db.scalars(select(OutboxMessage).where(OutboxMessage.claimed_by.is_not(None))).all()
    assert len(leased) == 8
