"""Regressions found by bench/resilience.py (the app under load and faults)."""

from __future__ import annotations

from sqlalchemy import event, select

from emails import outbox
from portal import throttle
from portal.access import add_rule
from portal.models import AuditEvent, OutboxMessage, SignInChallenge
from tests.conftest import request_link, run_worker
from tests.factories import make_bill_group
from tests.settings import change_settings

ADDRESS = "burst@acme.com"


def test_a_burst_that_measured_the_budget_at_once_gets_no_more_than_the_budget(
    app, db, smtp, monkeypatch
):
    # 500 requests for one address from as many IPs, spread over gunicorn workers, all
    # found room in the per-address budget before any of them had spent from it, and 5
    # emails went out where the budget was 3. Here every request sees room (as all of a
    # burst can), so only the spending itself can hold the line.
    group = make_bill_group(db)
    add_rule(db, group, "acme.com", created_by="test")
    db.commit()
    change_settings(app, SIGNIN_LIMIT_PER_ADDRESS="3 per 15 minutes")
    monkeypatch.setattr(throttle.limiter.limiter, "test", lambda *_args, **_kwargs: True)

    for i in range(6):
        client = app.test_client()
        client.environ_base["REMOTE_ADDR"] = f"198.51.100.{i + 1}"
        assert request_link(client, group.public_id, ADDRESS).status_code == 200

    outcomes = db.scalars(
        select(AuditEvent.outcome).where(AuditEvent.action == "signin.request")
    ).all()
    assert outcomes == ["queued"] * 3 + ["throttled"] * 3
    assert len(db.scalars(select(SignInChallenge)).all()) == 3
    assert run_worker(app) == (3, 3)
    assert len(smtp.to(ADDRESS)) == 3


def test_an_email_sent_as_the_database_blinks_is_recorded_and_never_sent_again(
    app, db, smtp, monkeypatch
):
    # PostgreSQL restarted between the SMTP delivery and the write that records it: the
    # message stayed leased, unsent in the database, and went out a second time when
    # the lease ran out. Now the write is retried until it sticks.
    group = make_bill_group(db)
    add_rule(db, group, "acme.com", created_by="test")
    db.commit()
    assert request_link(app.test_client(), group.public_id, ADDRESS).status_code == 200
    monkeypatch.setattr(outbox, "RECORD_SENT_PAUSE", 0)
    engine = app.extensions["portal.db"].kw["bind"]
    failures = []

    def blink(conn, _cursor, statement, _parameters, _context, _many):
        # The first write of sent_at fails as a dropped connection would.
        changes = statement.partition(" WHERE ")[0]
        if changes.startswith("UPDATE outbox_messages") and "sent_at" in changes:
            if not failures:
                failures.append(statement)
                raise conn.dialect.loaded_dbapi.OperationalError("server closed the connection")

    event.listen(engine, "before_cursor_execute", blink)
    try:
        assert run_worker(app) == (1, 1)
    finally:
        event.remove(engine, "before_cursor_execute", blink)

    assert failures, "the write that records the delivery was never tried"
    (message,) = db.scalars(select(OutboxMessage)).all()
    assert message.sent_at is not None and message.claimed_until is None
    assert message.attempts == 1 and message.text_body == ""
    assert run_worker(app) == (0, 0)
    assert len(smtp.to(ADDRESS)) == 1
