"""Rate limits on sign-in: per address and per client, shared between workers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from flask import Flask

from portal import throttle
from portal.models import (
    AuditEvent,
    CustomerSession,
    SignInChallenge,
)
from portal.web import CSP
from tests.conftest import (
    REDIS_URL,
    csrf_token,
    free_port,
    request_link,
    run_worker,
)
from tests.portal.session_helpers import (
    ADDRESS,
    audit_since,
    count,
    emailed,
    last_audit_id,
    masked,
    person,
    portal,
    rows,
)
from tests.settings import change_settings

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
    change_settings(app, **{budget: "2 per 15 minutes"})

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
    change_settings(app, SECRET_ENDPOINT_LIMIT="3 per minute")
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
    reference, _path, code = emailed(browser, app, smtp, pid)
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
