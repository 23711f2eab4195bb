"""Customer sessions: server-side, renewed, idle and absolute expiry, revocation, cookie flags."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import delete
from sqlalchemy.orm import Session

from portal import db as portal_db
from portal import sessions
from portal.app import create_app
from portal.config import settings_of
from portal.db import Base
from portal.models import (
    AccessRule,
    AuditEvent,
    BillGroup,
    CustomerSession,
)
from tests.clock import Clock
from tests.conftest import (
    csrf_token,
    link_and_code,
    run_worker,
)
from tests.factories import make_bill_group
from tests.portal.session_helpers import (
    ADDRESS,
    cookie_data,
    cookie_names,
    journey,
    portal,
    rows,
    sent_to_sign_in,
    session_id,
    signed_in,
)

# --- 1. server-side sessions and renewal -----------------------------------------------


def test_a_session_is_a_row_named_by_the_cookie_and_sign_in_renews_the_cookie(
    app, client, db, smtp
):
    group = portal(db)
    pid = group.public_id
    client.get(f"/p/{pid}")
    with client.session_transaction() as planted:
        planted["planted"] = "chosen by an attacker"
    before = cookie_data(app, client)
    cookie_before = client.get_cookie("session").value
    assert before["planted"] == "chosen by an attacker"

    responses = journey(client, app, smtp, pid)

    # No remember-me cookie on any response, and none in the browser.
    assert all("remember_token" not in cookie_names(r) for r in responses)
    # Besides the session, only the known-device cookie (see test_budgets.py).
    assert sorted(cookie_names(responses[-1])) == ["known_device", "session"]
    assert client.get_cookie("remember_token") is None
    after = cookie_data(app, client)
    assert "planted" not in after and "confirm" not in after
    assert after["nonce"] != before["nonce"]
    assert "_remember" not in after
    sid = session_id(app, client)
    assert len(sid) >= 43  # 256 bits, URL-safe base64
    (row,) = rows(db, CustomerSession)
    assert row.sid_hash == hashlib.sha256(sid.encode()).hexdigest()
    assert sid not in (row.sid_hash, row.email, row.user_agent or "")
    assert row.bill_group_id == group.id and row.email == ADDRESS and row.revoked_at is None
    overview = client.get(f"/p/{pid}/overview")
    assert overview.status_code == 200 and ADDRESS in overview.text
    assert "remember_token" not in cookie_names(overview)

    # The cookie from before sign-in is worth nothing.
    old = app.test_client()
    old.set_cookie("session", cookie_before)
    assert sent_to_sign_in(old.get(f"/p/{pid}/overview"), pid)


def test_signing_in_again_replaces_the_old_session_row(app, client, db, smtp):
    group = portal(db)
    pid = group.public_id
    journey(client, app, smtp, pid)
    first_sid = session_id(app, client)
    first_cookie = client.get_cookie("session").value

    # Signed in, the browser asks for a link again (from the overview's CSRF token).
    overview = client.get(f"/p/{pid}/overview")
    again = client.post(
        f"/p/{pid}/sign-in", data={"csrf_token": csrf_token(overview.text), "email": ADDRESS}
    )
    assert again.status_code == 200
    run_worker(app)
    path, _code = link_and_code(smtp.to(ADDRESS)[-1])
    confirm = client.get(client.get(path).headers["Location"])
    done = client.post(f"/p/{pid}/confirm", data={"csrf_token": csrf_token(confirm.text)})
    assert done.status_code == 303

    second_sid = session_id(app, client)
    assert second_sid != first_sid
    old, new = rows(db, CustomerSession)
    assert old.sid_hash == hashlib.sha256(first_sid.encode()).hexdigest()
    assert (old.revoked_reason, new.revoked_at) == ("replaced", None)
    assert old.revoked_at is not None
    assert client.get(f"/p/{pid}/overview").status_code == 200
    replay = app.test_client()
    replay.set_cookie("session", first_cookie)
    assert sent_to_sign_in(replay.get(f"/p/{pid}/overview"), pid)


# --- 2. idle and absolute expiry ---------------------------------------------------------


def test_an_idle_session_ends_after_the_idle_timeout(app, client, db, smtp, clock):
    group = portal(db)
    pid = group.public_id
    journey(client, app, smtp, pid)
    idle = dt.timedelta(minutes=settings_of(app).CUSTOMER_SESSION_IDLE_MINUTES)
    assert idle == dt.timedelta(minutes=30)

    clock.advance(seconds=idle.total_seconds() - 1)
    assert client.get(f"/p/{pid}/overview").status_code == 200
    (row,) = rows(db, CustomerSession)
    assert row.last_seen_at == clock.now and row.revoked_at is None

    clock.advance(seconds=idle.total_seconds())  # exactly idle since the last request
    response = client.get(f"/p/{pid}/overview")
    assert sent_to_sign_in(response, pid)
    assert parse_qs(urlsplit(response.headers["Location"]).query)["next"] == [f"/p/{pid}/overview"]
    (row,) = rows(db, CustomerSession)
    assert (row.revoked_reason, row.revoked_at) == ("idle", clock.now)
    # Coming back later does not resurrect it.
    clock.advance(seconds=1)
    assert sent_to_sign_in(client.get(f"/p/{pid}/overview"), pid)


def test_activity_keeps_a_session_alive_until_the_absolute_cap(app, client, db, smtp, clock):
    group = portal(db)
    pid = group.public_id
    journey(client, app, smtp, pid)
    start = clock.now
    cap = dt.timedelta(hours=settings_of(app).CUSTOMER_SESSION_MAX_HOURS)
    assert cap == dt.timedelta(hours=12)

    # A request every 20 minutes: well past the idle timeout, always signed in.
    while clock.now + dt.timedelta(minutes=20) < start + cap:
        clock.advance(minutes=20)
        assert client.get(f"/p/{pid}/overview").status_code == 200, clock.now - start
    assert clock.now - start == dt.timedelta(hours=11, minutes=40)
    clock.now = start + cap - dt.timedelta(seconds=1)
    assert client.get(f"/p/{pid}/overview").status_code == 200

    clock.now = start + cap
    assert sent_to_sign_in(client.get(f"/p/{pid}/overview"), pid)
    (row,) = rows(db, CustomerSession)
    assert row.revoked_reason == "expired" and row.revoked_at == start + cap


# --- 3. revocation on every request ------------------------------------------------------


def _delete_rule(db: Session, group: BillGroup, clock: Clock) -> None:
    db.execute(delete(AccessRule).where(AccessRule.bill_group_id == group.id))


def _disable_portal(db: Session, group: BillGroup, clock: Clock) -> None:
    group.portal_enabled = False


def _end_contract(db: Session, group: BillGroup, clock: Clock) -> None:
    group.contract_end = clock.today() - dt.timedelta(days=1)


@pytest.mark.parametrize(
    ("revoke", "status"),
    [(_delete_rule, 302), (_disable_portal, 404), (_end_contract, 404)],
    ids=["rule-deleted", "portal-disabled", "contract-ended"],
)
def test_revoking_access_ends_the_session_at_the_next_request(
    app, client, db, smtp, clock, revoke, status
):
    group = portal(db)
    pid = group.public_id
    journey(client, app, smtp, pid)
    assert client.get(f"/p/{pid}/overview").status_code == 200
    clock.advance(seconds=5)  # well inside the idle timeout

    revoke(db, group, clock)
    db.commit()
    response = client.get(f"/p/{pid}/overview")

    assert response.status_code == status
    if status == 404:
        assert "This portal is not available" in response.text
    else:
        assert sent_to_sign_in(response, pid)
    assert ADDRESS not in response.text
    (row,) = rows(db, CustomerSession)
    assert (row.revoked_reason, row.revoked_at) == ("access_revoked", clock.now)
    (event,) = rows(db, AuditEvent, AuditEvent.action == "session.end")
    assert (event.outcome, event.actor, event.bill_group_id) == (
        "access_revoked",
        ADDRESS,
        group.id,
    )


def test_access_revoked_stays_revoked_when_access_returns(app, client, db, smtp, clock):
    group = portal(db)
    pid = group.public_id
    journey(client, app, smtp, pid)
    group.portal_enabled = False
    db.commit()
    assert client.get(f"/p/{pid}/overview").status_code == 404
    group.portal_enabled = True
    db.commit()
    assert sent_to_sign_in(client.get(f"/p/{pid}/overview"), pid)


def test_sign_out_revokes_the_row_and_the_old_cookie_is_worthless(app, client, db, smtp):
    group = portal(db)
    pid = group.public_id
    journey(client, app, smtp, pid)
    overview = client.get(f"/p/{pid}/overview")
    cookie = client.get_cookie("session").value

    out = client.post(f"/p/{pid}/sign-out", data={"csrf_token": csrf_token(overview.text)})

    assert out.status_code == 303
    assert out.headers["Location"] == f"/p/{pid}?signed_out=1"
    (row,) = rows(db, CustomerSession)
    assert row.revoked_reason == "signed_out" and row.revoked_at is not None
    assert sent_to_sign_in(client.get(f"/p/{pid}/overview"), pid)
    replay = app.test_client()
    replay.set_cookie("session", cookie)
    response = replay.get(f"/p/{pid}/overview")
    assert sent_to_sign_in(response, pid)
    assert ADDRESS not in response.text


def test_revoke_all_ends_every_session_of_the_bill_group_only(app, db, smtp):
    group = portal(db)
    other = portal(db, "acme.com")
    alice = signed_in(app, smtp, group.public_id, "alice@acme.com")
    bob = signed_in(app, smtp, group.public_id, "bob@acme.com")
    carol = signed_in(app, smtp, other.public_id, "carol@acme.com")

    with app.app_context():
        ended = sessions.revoke_all(db, group.id, "staff_sign_out")
        db.commit()

    assert ended == 2
    assert sent_to_sign_in(alice.get(f"/p/{group.public_id}/overview"), group.public_id)
    assert sent_to_sign_in(bob.get(f"/p/{group.public_id}/overview"), group.public_id)
    assert carol.get(f"/p/{other.public_id}/overview").status_code == 200
    reasons = {(r.email, r.revoked_reason) for r in rows(db, CustomerSession)}
    assert reasons == {
        ("alice@acme.com", "staff_sign_out"),
        ("bob@acme.com", "staff_sign_out"),
        ("carol@acme.com", None),
    }
    ends = rows(db, AuditEvent, AuditEvent.action == "session.end")
    assert {(e.actor, e.outcome, e.bill_group_id) for e in ends} == {
        ("alice@acme.com", "staff_sign_out", group.id),
        ("bob@acme.com", "staff_sign_out", group.id),
    }


# --- 4. cookie flags in production ------------------------------------------------------


def test_production_session_cookie_is_host_prefixed_secure_httponly_lax_and_transient(
    tmp_path, smtp_server
):
    _inbox, port = smtp_server
    app = create_app(
        {
            "SECRET_KEY": "p" * 40,
            "PORTAL_BASE_URL": "https://billing.example.com",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'production.db'}",
            "MAIL_TRANSPORT": "smtp",
            "MAIL_PORT": port,
        }
    )
    try:
        assert not app.testing and not app.debug
        with app.app_context():
            Base.metadata.create_all(portal_db.engine())
            group = make_bill_group(portal_db.session())
            portal_db.session().commit()
            pid = group.public_id
        client = app.test_client()

        response = client.get(f"/p/{pid}", base_url="https://billing.example.com")

        assert response.status_code == 200
        (cookie,) = response.headers.getlist("Set-Cookie")
        assert re.fullmatch(
            r"__Host-session=[^;\s]+; Secure; HttpOnly; Path=/; SameSite=Lax", cookie
        ), cookie
        assert not re.search(r"(?i)\b(domain|expires|max-age)=", cookie)
        assert response.headers["Strict-Transport-Security"].startswith("max-age=")
        # The cookie holds the nonce only: nothing about the bill group or access.
        data = cookie_data(app, client, domain="billing.example.com")
        assert set(data) <= {"nonce", "csrf_token"} and "nonce" in data
    finally:
        with app.app_context():
            portal_db.engine().dispose()
