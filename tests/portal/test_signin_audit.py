"""The audit trail of every sign-in step, and the sign-in pages' response headers."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from sqlalchemy import delete, text, update
from sqlalchemy.exc import DBAPIError

from portal.models import (
    AccessRule,
    AuditEvent,
    CustomerSession,
    SignInChallenge,
)
from tests.conftest import (
    csrf_token,
    request_link,
    run_worker,
)
from tests.portal.session_helpers import (
    ADDRESS,
    count,
    emailed,
    journey,
    person,
    portal,
    rows,
    session_id,
    to_confirm,
)
from tests.settings import change_settings

# --- 10. the audit trail ----------------------------------------------------------------


def test_every_step_is_audited_with_group_actor_outcome_and_ip_and_no_secret(app, db, smtp, clock):
    group = portal(db)
    pid = group.public_id
    change_settings(
        app,
        SIGNIN_LIMIT_PER_ADDRESS="3 per 15 minutes",
        SIGNIN_LIMIT_PER_KNOWN_DEVICE="2 per 15 minutes",
    )
    browser = person(app, "192.0.2.10")
    stranger = person(app, "192.0.2.11")

    request_link(stranger, pid, "who@other.com")  # queued -> not_admitted
    _, path, code = emailed(browser, app, smtp, pid)  # queued -> sent
    token = path.rsplit("/", 1)[1]
    page = browser.get(f"/p/{pid}")
    browser.post(f"/p/{pid}/code", data={"csrf_token": csrf_token(page.text), "code": "0000-0000"})
    confirm = browser.get(browser.get(path).headers["Location"])
    browser.post(f"/p/{pid}/confirm", data={"csrf_token": csrf_token(confirm.text)})
    sid = session_id(app, browser)
    overview = browser.get(f"/p/{pid}/overview")
    browser.post(f"/p/{pid}/sign-out", data={"csrf_token": csrf_token(overview.text)})
    for _ in range(3):  # a known device now: the third is over its budget
        request_link(browser, pid, ADDRESS)
    # A second session that goes idle.
    idler = person(app, "192.0.2.12")
    journey(idler, app, smtp, pid, "idle@acme.com")
    clock.advance(minutes=31)
    idler.get(f"/p/{pid}/overview")

    events = rows(db, AuditEvent)
    seen = {(e.action, e.outcome) for e in events}
    assert seen >= {
        ("signin.request", "queued"),
        ("signin.request", "throttled"),
        ("signin.link", "sent"),
        ("signin.link", "not_admitted"),
        ("signin.code", "wrong_code"),
        ("signin.complete", "signed_in"),
        ("session.end", "signed_out"),
        ("session.end", "idle"),
    }
    for event in events:
        assert event.bill_group_id == group.id, event.action
        assert event.actor in (ADDRESS, "who@other.com", "idle@acme.com"), event.action
        assert event.outcome and event.at is not None
        if event.action != "signin.link":  # decided by the worker, off the request
            assert event.ip in ("192.0.2.10", "192.0.2.11", "192.0.2.12"), event.action
    ip_of = {ADDRESS: "192.0.2.10", "who@other.com": "192.0.2.11", "idle@acme.com": "192.0.2.12"}
    assert all(e.ip == ip_of[e.actor] for e in events if e.action != "signin.link")

    secrets = {
        token,
        hashlib.sha256(token.encode()).hexdigest(),
        code,
        code.replace("-", ""),
        sid,
    }
    for event in events:
        fields = " ".join(str(value) for value in vars(event).values() if value is not None)
        assert not any(secret in fields for secret in secrets), event.action


def test_a_failed_completion_is_audited_with_its_actor(app, client, db, smtp):
    group = portal(db)
    pid = group.public_id
    confirm = to_confirm(client, app, smtp, pid)[-1]
    db.execute(delete(AccessRule).where(AccessRule.bill_group_id == group.id))
    db.commit()

    done = client.post(f"/p/{pid}/confirm", data={"csrf_token": csrf_token(confirm.text)})

    assert done.headers["Location"] == f"/p/{pid}/link-invalid"
    assert count(db, CustomerSession) == 0
    (event,) = rows(db, AuditEvent, AuditEvent.action == "signin.complete")
    assert (event.outcome, event.actor, event.ip, event.bill_group_id) == (
        "access_revoked",
        ADDRESS,
        "127.0.0.1",
        group.id,
    )


def test_a_confirm_of_a_spent_link_is_audited_with_its_actor(app, client, db, smtp):
    group = portal(db)
    pid = group.public_id
    confirm = to_confirm(client, app, smtp, pid)[-1]
    db.execute(update(SignInChallenge).values(spent_at=dt.datetime.now(dt.UTC)))
    db.commit()

    done = client.post(f"/p/{pid}/confirm", data={"csrf_token": csrf_token(confirm.text)})

    assert done.headers["Location"] == f"/p/{pid}/link-invalid"
    (event,) = rows(db, AuditEvent, AuditEvent.action == "signin.complete")
    assert (event.outcome, event.actor, event.ip) == ("link_not_usable", ADDRESS, "127.0.0.1")


def test_the_workers_decisions_carry_the_requesters_ip(app, db, smtp):
    group = portal(db)
    request_link(person(app, "192.0.2.10"), group.public_id, ADDRESS)
    run_worker(app)
    (event,) = rows(db, AuditEvent, AuditEvent.action == "signin.link")
    assert event.ip == "192.0.2.10"


def test_the_audit_trail_is_append_only(app, client, db, smtp):
    group = portal(db)
    request_link(client, group.public_id, ADDRESS)
    (event,) = rows(db, AuditEvent)

    for statement in (
        text("UPDATE audit_events SET outcome = 'forged'"),
        text("UPDATE audit_events SET actor = NULL WHERE id = :id").bindparams(id=event.id),
        text("DELETE FROM audit_events"),
        text("DELETE FROM audit_events WHERE id = :id").bindparams(id=event.id),
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            db.execute(statement)
        db.rollback()
    with pytest.raises(DBAPIError, match="append-only"):
        db.delete(db.get(AuditEvent, event.id))
        db.flush()
    db.rollback()

    (after,) = rows(db, AuditEvent)
    assert (after.id, after.outcome, after.actor) == (event.id, "queued", ADDRESS)


# --- 11. response headers ---------------------------------------------------------------


def test_security_headers_on_the_sign_in_pages_confirm_page_and_overview(app, client, db, smtp):
    group = portal(db)
    pid = group.public_id
    responses = {"start": client.get(f"/p/{pid}")}
    responses["check email"], path, _code = emailed(client, app, smtp, pid)
    responses["verify"] = client.get(path)
    responses["confirm"] = client.get(responses["verify"].headers["Location"])
    responses["signed in"] = client.post(
        f"/p/{pid}/confirm", data={"csrf_token": csrf_token(responses["confirm"].text)}
    )
    responses["overview"] = client.get(f"/p/{pid}/overview")
    responses["link invalid"] = client.get(f"/p/{pid}/link-invalid")
    responses["other browser"] = app.test_client().get(f"/p/{pid}/other-browser")
    responses["unavailable"] = client.get(f"/p/{'A' * 22}")

    assert responses["confirm"].status_code == responses["overview"].status_code == 200
    for name, response in responses.items():
        headers = response.headers
        assert headers["Content-Security-Policy"] == (
            "default-src 'self'; form-action 'self'; frame-ancestors 'none'; "
            "object-src 'none'; base-uri 'none'"
        ), name
        assert headers["X-Content-Type-Options"] == "nosniff", name
        assert headers["Referrer-Policy"] == "strict-origin", name
        assert headers["X-Frame-Options"] == "DENY", name
        assert headers["Cache-Control"] == "no-store", name
