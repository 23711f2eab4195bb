"""Customer sessions, revocation, isolation, enumeration, CSRF, rate limits, the outbox,
the audit trail and response headers of the passwordless sign-in (SECURITY.md).

Tokens, codes, races, browser binding, next-redirects and leaks are in
test_signin_tokens.py.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete, func, select, text, update
from sqlalchemy import event as sa_event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from emails import outbox
from emails.render import Email
from portal import db as portal_db
from portal import sessions, signin, throttle
from portal.access import add_rule
from portal.app import create_app
from portal.db import Base
from portal.models import (
    AccessRule,
    AuditEvent,
    BillGroup,
    CustomerSession,
    OutboxMessage,
    SignInChallenge,
)
from portal.web import CSP
from tests.conftest import (
    CSRF_RE,
    TEST_CONFIG,
    Inbox,
    csrf_token,
    free_port,
    link_and_code,
    request_link,
    run_worker,
)
from tests.factories import make_bill_group, make_invoice

ADDRESS = "ap@acme.com"
REDIS_URL = os.environ.get("PORTAL_TEST_REDIS_URL")


# --- helpers ----------------------------------------------------------------------------


class Clock:
    """An injectable clock (app.extensions["portal.clock"]) that moves only when told."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> dt.datetime:
        self.now += dt.timedelta(**delta)
        return self.now

    def today(self) -> dt.date:
        return self.now.date()


@pytest.fixture
def clock(app: Flask) -> Clock:
    # Midday, so that 12 hours either way stay inside the contract's dates.
    now = dt.datetime.now(dt.UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    ticking = Clock(now)
    app.extensions["portal.clock"] = ticking
    return ticking


@pytest.fixture
def sibling(app: Flask) -> Iterator:
    """Build further apps on the test's database and SMTP server (another worker process,
    or other settings fixed at start-up such as the rate-limit storage)."""
    built: list[Flask] = []

    def build(**overrides) -> Flask:
        config = {
            **TEST_CONFIG,
            "DATABASE_URL": app.config["DATABASE_URL"],
            "MAIL_SERVER": app.config["MAIL_SERVER"],
            "MAIL_PORT": app.config["MAIL_PORT"],
            "MAIL_TIMEOUT": app.config["MAIL_TIMEOUT"],
            **overrides,
        }
        _close_limiter_storage()
        other = create_app(config)
        built.append(other)
        return other

    yield build
    _close_limiter_storage()
    for other in built:
        with other.app_context():
            portal_db.engine().dispose()


def _close_limiter_storage() -> None:
    """The limiter is one object per process, and each new app replaces its storage:
    close the Redis connections of the one being replaced."""
    client = getattr(throttle.limiter.storage, "storage", None)
    if client is not None and hasattr(client, "connection_pool"):
        client.close()
        client.connection_pool.disconnect()


def portal(db: Session, *rules: str, **overrides) -> BillGroup:
    """A bill group with access rules (acme.com unless told otherwise), committed."""
    group = make_bill_group(db, **overrides)
    for rule in rules or ("acme.com",):
        add_rule(db, group, rule, created_by="test")
    db.commit()
    return group


def cookie_data(app: Flask, client: FlaskClient, domain: str = "localhost") -> dict:
    """The contents of the browser's Flask session cookie."""
    cookie = client.get_cookie(app.config["SESSION_COOKIE_NAME"], domain=domain)
    assert cookie is not None, "no session cookie"
    return app.session_interface.get_signing_serializer(app).loads(cookie.value)


def session_id(app: Flask, client: FlaskClient) -> str:
    user_id = cookie_data(app, client)["_user_id"]
    assert user_id.startswith("c:")
    return user_id.removeprefix("c:")


def cookie_names(response) -> list[str]:
    return [header.split("=", 1)[0] for header in response.headers.getlist("Set-Cookie")]


def cookie_shapes(response) -> set[tuple[str, frozenset[str]]]:
    """Set-Cookie headers as (name, attributes), without the values."""
    shapes = set()
    for header in response.headers.getlist("Set-Cookie"):
        first, *attributes = [part.strip() for part in header.split(";")]
        shapes.add((first.split("=", 1)[0], frozenset(a.lower() for a in attributes)))
    return shapes


def masked(html: str, *addresses: str) -> str:
    html = CSRF_RE.sub('name="csrf_token" type="hidden" value="X"', html)
    for address in addresses:
        html = html.replace(address, "ADDRESS")
    return html


def journey(
    client: FlaskClient, app: Flask, inbox: Inbox, public_id: str, address: str = ADDRESS
) -> list:
    """Sign in through the real forms; every response on the way, last the confirm POST."""
    responses = [request_link(client, public_id, address)]
    run_worker(app)
    path, _code = link_and_code(inbox.to(address)[-1])
    responses.append(client.get(path))
    responses.append(client.get(responses[-1].headers["Location"]))
    responses.append(
        client.post(f"/p/{public_id}/confirm", data={"csrf_token": csrf_token(responses[-1].text)})
    )
    assert responses[-1].status_code == 303, "sign-in did not complete"
    return responses


def signed_in(app: Flask, inbox: Inbox, public_id: str, address: str = ADDRESS) -> FlaskClient:
    """A new browser, signed in."""
    client = app.test_client()
    journey(client, app, inbox, public_id, address)
    return client


# The reads below end their transaction at once: a test's session must not sit "idle in
# transaction" holding locks while the app, in the same thread, waits to write.


def rows(db: Session, model, *where) -> list:
    db.expire_all()
    found = list(db.scalars(select(model).where(*where).order_by(model.id)))
    db.commit()
    return found


def count(db: Session, model) -> int:
    db.expire_all()
    number = db.scalar(select(func.count()).select_from(model))
    db.commit()
    return number


def audit_since(db: Session, after_id: int = 0) -> list[AuditEvent]:
    return rows(db, AuditEvent, AuditEvent.id > after_id)


def last_audit_id(db: Session) -> int:
    last = db.scalar(select(func.coalesce(func.max(AuditEvent.id), 0)))
    db.commit()
    return last


def sent_to_sign_in(response, public_id: str) -> bool:
    """A redirect to the portal's sign-in page (with this page as `next`)."""
    if response.status_code not in (302, 303):
        return False
    return urlsplit(response.headers["Location"]).path == f"/p/{public_id}"


def person(app: Flask, ip: str) -> FlaskClient:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = ip
    return client


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
    idle = dt.timedelta(minutes=app.config["CUSTOMER_SESSION_IDLE_MINUTES"])
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
    cap = dt.timedelta(hours=app.config["CUSTOMER_SESSION_MAX_HOURS"])
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


# --- 5. tenant isolation and the one 404 -------------------------------------------------


def test_a_session_for_one_bill_group_sees_nothing_of_another(app, client, db, smtp):
    mine = portal(db, name="Alpha Widgets Ltd")
    theirs = portal(db, name="Bravo Secret Holdings")
    my_invoices = [make_invoice(db, mine).number for _ in range(2)]
    their_invoices = [make_invoice(db, theirs).number for _ in range(2)]
    db.commit()
    journey(client, app, smtp, mine.public_id)

    overview = client.get(f"/p/{mine.public_id}/overview")
    assert overview.status_code == 200
    assert all(number in overview.text for number in my_invoices)
    assert not any(number in overview.text for number in their_invoices)
    assert theirs.name not in overview.text

    response = client.get(f"/p/{theirs.public_id}/overview")
    assert sent_to_sign_in(response, theirs.public_id)
    assert not any(number in response.text for number in their_invoices)
    assert theirs.name not in response.text and ADDRESS not in response.text
    # Their sign-in page is a sign-in form, not their data or my session.
    page = client.get(response.headers["Location"])
    assert page.status_code == 200 and 'name="email"' in page.text
    assert not any(number in page.text for number in their_invoices + my_invoices)
    # And my session still works for me.
    assert client.get(f"/p/{mine.public_id}/overview").status_code == 200


def test_unknown_disabled_and_inactive_portals_are_the_same_404(app, client, db, clock):
    today = clock.today()
    disabled = portal(db, portal_enabled=False)
    ended = portal(db, contract_end=today - dt.timedelta(days=1))
    not_started = portal(db, contract_start=today + dt.timedelta(days=1), contract_end=None)
    live = portal(db)
    ids = {
        "unknown": "A" * 22,
        "too short": "abc",
        "disabled": disabled.public_id,
        "ended": ended.public_id,
        "not started": not_started.public_id,
    }
    assert client.get(f"/p/{live.public_id}").status_code == 200

    for suffix in ("", "/overview", "/link-invalid"):
        responses = {name: client.get(f"/p/{pid}{suffix}") for name, pid in ids.items()}
        bodies = {name: r.data for name, r in responses.items()}
        assert {r.status_code for r in responses.values()} == {404}, suffix
        assert len(set(bodies.values())) == 1, suffix
        assert b"This portal is not available" in bodies["unknown"]
        assert all(not cookie_names(r) for r in responses.values()), suffix
    for name in ("disabled", "ended", "not started"):
        group = {"disabled": disabled, "ended": ended, "not started": not_started}[name]
        assert group.name.encode() not in bodies[name]


# --- 6. enumeration -----------------------------------------------------------------------


def test_admitted_and_unknown_addresses_get_the_same_response(app, db, smtp):
    group = portal(db)
    pid = group.public_id
    known_address, unknown_address = "ap@acme.com", "ap@other.com"
    results = {}
    for address in (known_address, unknown_address):
        browser = person(app, "203.0.113.7")
        page = browser.get(f"/p/{pid}")
        mark = last_audit_id(db)
        response = browser.post(
            f"/p/{pid}/sign-in", data={"csrf_token": csrf_token(page.text), "email": address}
        )
        results[address] = (response, audit_since(db, mark))
    (known, known_audit), (unknown, unknown_audit) = results.values()

    assert known.status_code == unknown.status_code == 200
    assert masked(known.text, known_address) == masked(unknown.text, unknown_address)
    assert cookie_shapes(known) == cookie_shapes(unknown)
    assert sorted(known.headers.keys()) == sorted(unknown.headers.keys())

    def shape(events):
        return [
            (e.action, e.outcome, e.actor_type, e.bill_group_id, e.ip, e.detail) for e in events
        ]

    assert shape(known_audit) == shape(unknown_audit)
    assert shape(known_audit) == [
        ("signin.request", "queued", "anonymous", group.id, "203.0.113.7", None)
    ]
    assert [e.actor for e in known_audit + unknown_audit] == [known_address, unknown_address]
    challenges = rows(db, SignInChallenge)
    assert [(c.email, c.token_hash, c.evaluated_at) for c in challenges] == [
        (known_address, None, None),
        (unknown_address, None, None),
    ]
    assert smtp.messages == []

    # The difference shows only after the worker has decided, off the request path.
    mark = last_audit_id(db)
    assert run_worker(app) == (2, 1)
    assert [m["To"] for m in smtp.messages] == [known_address]
    decided = {(e.actor, e.outcome) for e in audit_since(db, mark)}
    assert decided == {(known_address, "sent"), (unknown_address, "not_admitted")}


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("a,b@acme.com", "Add addresses one at a time"),
        ("ap@acme.com, boss@acme.com", "Add addresses one at a time"),
        ("Bob <bob@acme.com>", "without a name, quotes or brackets"),
        ("ap@acme.com\r\nBcc: victim@acme.com", "invisible or control characters"),
        ("ap@acme.com\nbcc:victim@acme.com", "invisible or control characters"),
    ],
    ids=["comma", "comma-space", "display-name", "crlf", "lf"],
)
def test_a_malformed_address_gets_a_400_and_nothing_happens(
    app, client, db, smtp, address, message
):
    group = portal(db)
    response = request_link(client, group.public_id, address)

    assert response.status_code == 400
    assert message in response.text
    assert "Traceback" not in response.text
    assert count(db, SignInChallenge) == 0
    assert count(db, AuditEvent) == 0
    assert run_worker(app) == (0, 0)
    assert smtp.messages == []


# --- 7. CSRF ----------------------------------------------------------------------------


def test_posts_without_a_csrf_token_are_refused_and_change_nothing(app, client, db, smtp):
    group = portal(db)
    pid = group.public_id

    def state():
        db.expire_all()
        return (
            [(c.id, c.spent_at, c.retired_at, c.code_attempts) for c in rows(db, SignInChallenge)],
            [(s.id, s.revoked_at) for s in rows(db, CustomerSession)],
            count(db, AuditEvent),
        )

    client.get(f"/p/{pid}")
    refused = client.post(f"/p/{pid}/sign-in", data={"email": ADDRESS})
    assert refused.status_code == 400
    assert state() == ([], [], 0)

    request_link(client, pid, ADDRESS)
    run_worker(app)
    path, code = link_and_code(smtp.to(ADDRESS)[-1])
    before = state()
    assert len(before[0]) == 1 and before[1] == []

    assert client.post(f"/p/{pid}/code", data={"code": code}).status_code == 400
    assert state() == before
    assert client.get(path).status_code == 303  # to the confirm page
    assert client.post(f"/p/{pid}/confirm", data={}).status_code == 400
    assert state() == before
    other_browser = app.test_client()
    other_browser.get(path)
    assert other_browser.post(f"/p/{pid}/resend", data={}).status_code == 400
    assert state() == before
    assert run_worker(app) == (0, 0)
    assert len(smtp.messages) == 1

    # With the token the same confirm works; then a sign-out without one does nothing.
    confirm = client.get(f"/p/{pid}/confirm")
    client.post(f"/p/{pid}/confirm", data={"csrf_token": csrf_token(confirm.text)})
    assert client.get(f"/p/{pid}/overview").status_code == 200
    signed_in_state = state()
    assert len(signed_in_state[1]) == 1
    assert client.post(f"/p/{pid}/sign-out", data={}).status_code == 400
    assert client.post(f"/p/{pid}/sign-out", data={"csrf_token": "forged"}).status_code == 400
    assert state() == signed_in_state
    assert client.get(f"/p/{pid}/overview").status_code == 200


# --- 8. rate limits ---------------------------------------------------------------------


def _address_case(i: int) -> tuple[str, str]:
    return "ap@acme.com", f"198.51.100.{i}"


def _ip_case(i: int) -> tuple[str, str]:
    return f"user{i}@{('acme.com', 'acme.org')[i % 2]}", "198.51.100.1"


# The per-domain and global budgets count emails sent, in the worker: test_budgets.py.
@pytest.mark.parametrize(
    ("budget", "attempt", "unaffected"),
    [
        ("SIGNIN_LIMIT_PER_ADDRESS", _address_case, ("ap2@acme.com", "198.51.100.3")),
        ("SIGNIN_LIMIT_PER_IP", _ip_case, ("user3@acme.org", "198.51.100.9")),
    ],
    ids=["per-address", "per-ip"],
)
def test_a_sign_in_budget_bites_silently(app, db, smtp, budget, attempt, unaffected):
    group = portal(db, "acme.com", "acme.org")
    pid = group.public_id
    app.config[budget] = "2 per 15 minutes"

    pages = []
    for i in range(3):
        address, ip = attempt(i)
        pages.append((address, request_link(person(app, ip), pid, address)))
    assert [r.status_code for _a, r in pages] == [200, 200, 200]
    first = masked(pages[0][1].text, pages[0][0])
    assert all(masked(r.text, a) == first for a, r in pages)

    outcomes = [(e.actor, e.outcome, e.ip) for e in rows(db, AuditEvent)]
    assert outcomes == [
        (attempt(0)[0], "queued", attempt(0)[1]),
        (attempt(1)[0], "queued", attempt(1)[1]),
        (attempt(2)[0], "throttled", attempt(2)[1]),
    ]
    assert count(db, SignInChallenge) == 2
    assert run_worker(app) == (2, 2)
    assert sorted(m["To"] for m in smtp.messages) == sorted([attempt(0)[0], attempt(1)[0]])

    # The budget is this one: a request outside it still goes through.
    address, ip = unaffected
    assert request_link(person(app, ip), pid, address).status_code == 200
    assert run_worker(app) == (1, 1)
    assert smtp.to(address) != []


def test_the_per_ip_secret_endpoint_limit_answers_429(app, db, smtp):
    group = portal(db)
    pid = group.public_id
    app.config["SECRET_ENDPOINT_LIMIT"] = "3 per minute"
    browser = person(app, "198.51.100.20")
    token = csrf_token(browser.get(f"/p/{pid}").text)

    statuses = [
        browser.post(
            f"/p/{pid}/sign-in", data={"csrf_token": token, "email": f"u{i}@acme.com"}
        ).status_code
        for i in range(3)
    ]
    blocked = browser.post(f"/p/{pid}/sign-in", data={"csrf_token": token, "email": ADDRESS})
    code = browser.post(f"/p/{pid}/code", data={"csrf_token": token, "code": "1234-5678"})

    assert statuses == [200, 200, 200]
    assert blocked.status_code == code.status_code == 429
    assert "Too many attempts" in blocked.text
    assert "Traceback" not in blocked.text and "RateLimitExceeded" not in blocked.text
    assert blocked.headers["Content-Security-Policy"] == CSP
    assert count(db, SignInChallenge) == 3
    # Another address on the Internet is not affected.
    assert request_link(person(app, "198.51.100.21"), pid, ADDRESS).status_code == 200
    run_worker(app)
    assert len(smtp.to(ADDRESS)) == 1


def _two_workers_share_the_address_budget(sibling, db, smtp, storage: str) -> int:
    """Two requests through one app (worker), a third through a second one started
    afterwards; returns how many emails went out."""
    group = portal(db)
    config = {"RATELIMIT_STORAGE_URI": storage, "SIGNIN_LIMIT_PER_ADDRESS": "2 per 15 minutes"}
    first = sibling(**config)
    for ip in ("198.51.100.1", "198.51.100.2"):
        assert request_link(person(first, ip), group.public_id, ADDRESS).status_code == 200
    second = sibling(**config)
    assert request_link(person(second, "198.51.100.3"), group.public_id, ADDRESS).status_code == 200
    run_worker(second)
    return len(smtp.to(ADDRESS))


@pytest.mark.redis
def test_with_redis_the_address_budget_holds_across_workers(app, db, smtp, sibling):
    import redis

    with redis.Redis.from_url(REDIS_URL) as server:
        server.flushdb()
        sent = _two_workers_share_the_address_budget(sibling, db, smtp, REDIS_URL)
        assert server.dbsize() > 0
        server.flushdb()
    assert sent == 2
    assert [e.outcome for e in rows(db, AuditEvent, AuditEvent.action == "signin.request")] == [
        "queued",
        "queued",
        "throttled",
    ]


@pytest.fixture
def on_redis(sibling) -> Iterator[Flask]:
    """An app whose budgets live in the test Redis database, emptied before and after."""
    import redis

    with redis.Redis.from_url(REDIS_URL) as server:
        server.flushdb()
        yield sibling(
            RATELIMIT_STORAGE_URI=REDIS_URL,
            SIGNIN_LIMIT_PER_ADDRESS="1 per 15 minutes; 5 per day",
            SIGNIN_LIMIT_PER_DOMAIN="2 per 15 minutes",
        )
        server.flushdb()


@pytest.mark.redis
def test_on_redis_a_spent_budget_spends_nothing_from_the_others(on_redis):
    domain, address = ("signin-domain", "acme.com"), ("signin-address", ADDRESS)
    with on_redis.app_context():
        assert throttle.within(domain, address)
        # The address is spent; the domain, asked first, must not pay for the refusal.
        assert not throttle.within(domain, address)
        assert throttle.has_room(*domain)
        assert throttle.within(domain, ("signin-address", "other@acme.com"))
        assert not throttle.has_room(*domain)


@pytest.mark.redis
def test_on_redis_a_burst_across_threads_gets_exactly_the_budget(on_redis):
    admitted = []
    start = threading.Barrier(12)

    def ask() -> None:
        with on_redis.app_context():
            start.wait()
            admitted.append(throttle.within(("signin-address", ADDRESS)))

    threads = [threading.Thread(target=ask) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(admitted) == [False] * 11 + [True]


@pytest.mark.redis
def test_on_redis_the_sign_in_budgets_are_one_round_trip(on_redis, monkeypatch):
    # Four budgets, seven windows: one script, not a check and a spend per window.
    commands = []
    with on_redis.app_context():
        connection = throttle.limiter.limiter.storage.get_connection()
        real = connection.execute_command
        monkeypatch.setattr(
            connection,
            "execute_command",
            lambda *args, **options: commands.append(args[0]) or real(*args, **options),
        )
        budgets = [(name, "x@acme.com") for name in ("signin-address", "signin-ip")]
        assert throttle.within(*budgets, ("signin-domain", "acme.com"))
    assert commands in (["EVALSHA"], ["EVALSHA", "SCRIPT LOAD", "EVALSHA"])


def test_with_memory_storage_each_worker_counts_alone(app, db, smtp, sibling):
    # The contrast that makes the Redis test mean something: memory:// is per process.
    assert _two_workers_share_the_address_budget(sibling, db, smtp, "memory://") == 3


def test_rate_limit_storage_failure_fails_closed(app, db, smtp, sibling):
    group = portal(db)
    pid = group.public_id
    browser = person(app, "198.51.100.1")
    reference = request_link(browser, pid, ADDRESS)
    run_worker(app)
    _path, code = link_and_code(smtp.to(ADDRESS)[-1])
    smtp.clear()
    mark = last_audit_id(db)
    challenges = count(db, SignInChallenge)

    broken = sibling(RATELIMIT_STORAGE_URI=f"redis://127.0.0.1:{free_port()}")
    started = time.monotonic()
    response = request_link(person(broken, "198.51.100.2"), pid, ADDRESS)

    assert time.monotonic() - started < 10
    assert response.status_code == 200
    assert masked(response.text) == masked(reference.text)
    assert count(db, SignInChallenge) == challenges
    assert [(e.outcome, e.actor) for e in audit_since(db, mark)] == [("throttled", ADDRESS)]
    assert run_worker(broken) == (0, 0)
    assert smtp.messages == []

    # Nor is a code checked: the right code, in the right browser, does not sign in.
    same_browser = person(broken, "198.51.100.1")
    same_browser.set_cookie("session", browser.get_cookie("session").value)
    page = same_browser.get(f"/p/{pid}")
    typed = same_browser.post(
        f"/p/{pid}/code", data={"csrf_token": csrf_token(page.text), "code": code}
    )
    assert typed.status_code == 400
    assert count(db, CustomerSession) == 0
    assert all(c.spent_at is None for c in rows(db, SignInChallenge))


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


def _queue(app: Flask, db: Session, n: int, **kwargs) -> None:
    with app.app_context():
        for i in range(n):
            outbox.queue(
                db,
                Email(
                    kind="test",
                    to=f"user{i}@acme.com",
                    subject=f"Message {i:03d}",
                    text=f"Body {i}",
                    html=f"<p>Body {i}</p>",
                ),
                **kwargs,
            )
        db.commit()


def test_two_workers_send_each_message_exactly_once(app, db, smtp):
    _queue(app, db, 50)
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
    _queue(app, db, 3)
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
    _queue(app, db, 1)
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
    _queue(app, db, 1, discard_after=clock.now + dt.timedelta(minutes=15))
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
    _queue(app, db, 1)
    results: list[int] = []

    def send() -> None:
        with app.app_context():
            results.append(outbox.send_due(portal_db.session()))

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(5)  # the kernel accepts the connection; nobody ever says a word
        app.extensions["mail"].port = silent.getsockname()[1]
        app.config["MAIL_TIMEOUT"] = 1
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


# --- 10. the audit trail ----------------------------------------------------------------


def test_every_step_is_audited_with_group_actor_outcome_and_ip_and_no_secret(app, db, smtp, clock):
    group = portal(db)
    pid = group.public_id
    app.config["SIGNIN_LIMIT_PER_ADDRESS"] = "3 per 15 minutes"
    app.config["SIGNIN_LIMIT_PER_KNOWN_DEVICE"] = "2 per 15 minutes"
    browser = person(app, "192.0.2.10")
    stranger = person(app, "192.0.2.11")

    request_link(stranger, pid, "who@other.com")  # queued -> not_admitted
    request_link(browser, pid, ADDRESS)  # queued -> sent
    run_worker(app)
    path, code = link_and_code(smtp.to(ADDRESS)[-1])
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
    request_link(client, pid, ADDRESS)
    run_worker(app)
    path, _code = link_and_code(smtp.to(ADDRESS)[-1])
    confirm = client.get(client.get(path).headers["Location"])
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
    request_link(client, pid, ADDRESS)
    run_worker(app)
    path, _code = link_and_code(smtp.to(ADDRESS)[-1])
    confirm = client.get(client.get(path).headers["Location"])
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
    responses["check email"] = request_link(client, pid, ADDRESS)
    run_worker(app)
    path, _code = link_and_code(smtp.to(ADDRESS)[-1])
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
