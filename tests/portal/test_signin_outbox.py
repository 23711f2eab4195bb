"""The outbox that sends sign-in emails: retries, claims, discarding, SMTP timeouts."""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time

from sqlalchemy import event as sa_event
from sqlalchemy import func, select

from emails import outbox
from portal import db as portal_db
from portal import signin
from portal.models import (
    OutboxMessage,
)
from tests.conftest import (
    free_port,
    queue_emails,
    request_link,
    run_worker,
)
from tests.portal.session_helpers import (
    ADDRESS,
    masked,
    portal,
    rows,
)
from tests.settings import change_settings

# --- 9. the outbox ----------------------------------------------------------------------


def test_an_email_waits_in_the_outbox_while_smtp_is_down_and_goes_once_it_is_up(
    app, client, db, smtp, clock
):
    group = portal(db)
    mail_state = app.extensions["mail"]
    real_port = mail_state.port
    # The page while SMTP is up (an unknown address, so that no email is queued) ...
    reference = request_link(app.test_client(), group.public_id, "who@other.com")
    mail_state.port = free_port()  # nothing listens there: connection refused
    # ... is the page while it is down: the request never talks to SMTP.
    response = request_link(client, group.public_id, ADDRESS)
    assert response.status_code == 200
    assert masked(response.text, ADDRESS) == masked(reference.text, "who@other.com")

    with app.app_context():
        assert signin.evaluate_pending(portal_db.session()) == 2
    (message,) = rows(db, OutboxMessage)
    # Written with the decision, before any attempt to send.
    assert (message.to_address, message.sent_at, message.attempts) == (ADDRESS, None, 0)

    assert run_worker(app) == (0, 0)
    (message,) = rows(db, OutboxMessage)
    assert message.sent_at is None and message.attempts == 1
    assert message.last_error and "Connection" in message.last_error
    assert message.next_attempt_at > clock.now
    assert smtp.messages == []

    mail_state.port = real_port
    assert run_worker(app) == (0, 0), "retried before its backoff"
    clock.now = message.next_attempt_at + dt.timedelta(seconds=1)
    assert run_worker(app) == (0, 1)
    assert len(smtp.to(ADDRESS)) == 1
    (message,) = rows(db, OutboxMessage)
    assert message.sent_at == clock.now and message.attempts == 2
    clock.advance(minutes=5)
    assert run_worker(app) == (0, 0)
    assert len(smtp.messages) == 1


def test_two_workers_send_each_message_exactly_once(app, db, smtp):
    queue_emails(app, db, 50)
    start = threading.Barrier(2)
    errors: list[BaseException] = []
    rounds: dict[str, list[int]] = {"a": [], "b": []}

    def work(name: str) -> None:
        try:
            start.wait()
            for _ in range(30):
                with app.app_context():
                    sent = outbox.send_due(portal_db.session(), worker=name, limit=4)
                rounds[name].append(sent)
                if sent == 0 and count_unsent() == 0:
                    return
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def count_unsent() -> int:
        with app.app_context():
            return portal_db.session().scalar(
                select(func.count()).where(OutboxMessage.sent_at.is_(None))
            )

    threads = [threading.Thread(target=work, args=(name,)) for name in rounds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads)

    subjects = [m["Subject"] for m in smtp.messages]
    assert len(subjects) == 50
    assert sorted(subjects) == [f"Message {i:03d}" for i in range(50)]
    assert sum(map(sum, rounds.values())) == 50
    messages = rows(db, OutboxMessage)
    assert all(m.sent_at is not None and m.attempts == 1 for m in messages)
    with app.app_context():
        assert outbox.send_due(portal_db.session()) == 0
    assert len(smtp.messages) == 50


def test_of_two_workers_that_saw_the_same_due_messages_only_one_claims_them(app, db, smtp):
    """The race made deterministic: between our worker's SELECT of due messages and its
    claiming UPDATE, another worker claims them all."""
    queue_emails(app, db, 3)
    raced: list[list[OutboxMessage]] = []
    with app.app_context():
        mine = portal_db.session()
        theirs = app.extensions["portal.db"]()

        @sa_event.listens_for(mine, "do_orm_execute")
        def the_other_worker_gets_there_first(state) -> None:
            if state.is_update and not raced:
                raced.append(outbox.claim(theirs, "theirs"))

        try:
            claimed = outbox.claim(mine, "mine")
        finally:
            theirs.close()

    assert [m.subject for m in raced[0]] == ["Message 000", "Message 001", "Message 002"]
    assert claimed == []
    assert {m.claimed_by for m in rows(db, OutboxMessage)} == {"theirs"}


def test_a_claimed_message_is_not_sent_by_another_worker_until_the_lease_runs_out(
    app, db, smtp, clock
):
    queue_emails(app, db, 1)
    with app.app_context():
        (claimed,) = outbox.claim(portal_db.session(), "crashed-worker")
    with app.app_context():
        assert outbox.send_due(portal_db.session(), worker="other") == 0
    assert smtp.messages == []
    clock.now = claimed.claimed_until + dt.timedelta(seconds=1)
    with app.app_context():
        assert outbox.send_due(portal_db.session(), worker="other") == 1
    assert len(smtp.messages) == 1


def test_a_message_past_discard_after_is_discarded_not_sent(app, db, smtp, clock):
    queue_emails(app, db, 1, discard_after=clock.now + dt.timedelta(minutes=15))
    clock.advance(minutes=15, seconds=1)
    with app.app_context():
        assert outbox.send_due(portal_db.session()) == 0
    (message,) = rows(db, OutboxMessage)
    assert message.discarded_at == clock.now and message.sent_at is None
    clock.advance(hours=1)
    with app.app_context():
        assert outbox.send_due(portal_db.session()) == 0
    assert smtp.messages == []


def test_a_silent_smtp_server_times_out_instead_of_hanging_the_worker(app, db, smtp, clock):
    queue_emails(app, db, 1)
    results: list[int] = []

    def send() -> None:
        with app.app_context():
            results.append(outbox.send_due(portal_db.session()))

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(5)  # the kernel accepts the connection; nobody ever says a word
        app.extensions["mail"].port = silent.getsockname()[1]
        change_settings(app, MAIL_TIMEOUT=1)
        worker = threading.Thread(target=send)
        started = time.monotonic()
        worker.start()
        worker.join(timeout=5)
        elapsed = time.monotonic() - started
        hung = worker.is_alive()
    # Closing the listener resets the connection, so a hung worker ends now too.
    worker.join(timeout=5)
    assert not hung, "the worker hung on a silent SMTP server"
    assert results == [0] and 0.9 < elapsed < 5
    (message,) = rows(db, OutboxMessage)
    assert message.sent_at is None and message.attempts == 1
    assert message.last_error and "timed out" in message.last_error
    assert message.next_attempt_at > clock.now
