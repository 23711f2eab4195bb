"""Sign-in budgets that strangers cannot exhaust: what each budget counts, the floods of
the outside review (issue 14), the known-device cookie, client keys per IPv6 /64, and
the two code-entry leaks (a refused code echoed back; wrong-code timing).

Each flood runs as the review ran it, then the admitted person asks and must get an
email; on memory:// and, marked `redis`, on Redis.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest
from flask import Flask, Response
from flask.testing import FlaskClient
from sqlalchemy import event

from portal import db as portal_db
from portal import devices, throttle
from portal.app import create_app
from portal.models import AuditEvent, SignInChallenge
from tests.conftest import (
    TEST_CONFIG,
    csrf_token,
    request_link,
    run_worker,
)
from tests.portal.session_helpers import (
    audit_since,
    count,
    emailed,
    journey,
    last_audit_id,
    person,
    portal,
    rows,
)
from tests.portal.signin_helpers import race
from tests.settings import change_settings

ADDRESS = "ap@acme.com"


@pytest.fixture
def budgets(counted_app: Flask) -> Flask:
    """The app with its budgets on memory:// or on the test Redis (tests.conftest)."""
    return counted_app


def emails_to(smtp, address: str) -> int:
    return len(smtp.to(address))


def drain(app: Flask) -> None:
    """Run the worker until nothing is left to decide or send (it works in batches)."""
    while run_worker(app) != (0, 0):
        pass


def known_browser(app: Flask, signed_in: FlaskClient, ip: str) -> FlaskClient:
    """The browser someone signed in from, later, its session over: only the
    known-device cookie is left."""
    browser = person(app, ip)
    browser.set_cookie("known_device", signed_in.get_cookie("known_device").value)
    return browser


# --- what the client key is ------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "ipv4_prefix", "ipv6_prefix", "key"),
    [
        ("198.51.100.7", 32, 64, "198.51.100.7"),
        ("198.51.100.7", 24, 64, "198.51.100.0/24"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 32, 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", 32, 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", 32, 56, "2001:db8:1::/56"),
        ("2001:db8:1:2::1", 32, 128, "2001:db8:1:2::1"),
        ("::ffff:198.51.100.7", 32, 64, "198.51.100.7"),
        ("fe80::1%eth0", 32, 64, "fe80::/64"),
        ("not an address", 32, 64, "not an address"),
        ("", 32, 64, "unknown"),
    ],
)
def test_the_client_key_is_the_ipv4_address_or_the_ipv6_64(
    app, address, ipv4_prefix, ipv6_prefix, key
):
    change_settings(app, RATELIMIT_IPV4_PREFIX=ipv4_prefix, RATELIMIT_IPV6_PREFIX=ipv6_prefix)
    with app.app_context():
        assert throttle.client_key_of(address) == key


@pytest.mark.parametrize(
    ("key", "value"),
    [("RATELIMIT_IPV4_PREFIX", 33), ("RATELIMIT_IPV4_PREFIX", 0), ("RATELIMIT_IPV6_PREFIX", 129)],
)
def test_an_impossible_prefix_refuses_to_start(tmp_path, key, value):
    from portal.config import ConfigError

    with pytest.raises(ConfigError, match=key):
        create_app({**TEST_CONFIG, "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", key: value})


# --- the four floods of the review ------------------------------------------------------


def test_a_domain_flood_of_invented_addresses_leaves_the_admitted_address_its_email(
    budgets, db, smtp
):
    # 30 requests for invented addresses at the customer's domain, from 3 addresses: on
    # main this spent acme.com's budget and ap@acme.com then got the page and no email.
    group = portal(db, ADDRESS)
    for i in range(30):
        attacker = person(budgets, f"203.0.113.{i % 3 + 1}")
        assert request_link(attacker, group.public_id, f"invented{i}@acme.com").status_code == 200
    run_worker(budgets)
    assert smtp.messages == []

    assert request_link(person(budgets, "192.0.2.80"), group.public_id, ADDRESS).status_code == 200
    assert run_worker(budgets) == (1, 1)
    assert emails_to(smtp, ADDRESS) == 1


def test_under_a_domain_rule_invented_addresses_cannot_crowd_out_a_returning_one(budgets, db, smtp):
    # A domain rule admits invented addresses too, so their emails do go out and do
    # spend the domain's budget; an address that has signed in before is not counted
    # there, and still gets its email, even from a browser it has never used.
    group = portal(db, "acme.com")
    journey(person(budgets, "192.0.2.80"), budgets, smtp, group.public_id)
    smtp.clear()
    change_settings(budgets, SIGNIN_LIMIT_PER_DOMAIN="30 per 15 minutes")
    for i in range(31):
        attacker = person(budgets, f"203.0.113.{i % 4 + 1}")
        request_link(attacker, group.public_id, f"invented{i}@acme.com")
    drain(budgets)
    # The domain's budget, counted in emails sent: ap@acme.com's first sign-in was one.
    assert len(smtp.messages) == 29
    mark = last_audit_id(db)

    request_link(person(budgets, "192.0.2.81"), group.public_id, ADDRESS)
    request_link(person(budgets, "192.0.2.82"), group.public_id, "newcomer@acme.com")
    assert run_worker(budgets) == (2, 1)
    assert emails_to(smtp, ADDRESS) == 1
    assert emails_to(smtp, "newcomer@acme.com") == 0  # a first sign-in: over the budget
    decided = {(e.actor, e.outcome) for e in audit_since(db, mark) if e.action == "signin.link"}
    assert decided == {(ADDRESS, "sent"), ("newcomer@acme.com", "throttled")}


def test_a_global_flood_for_domains_without_access_sends_nothing_and_spends_nothing(
    budgets, db, smtp
):
    # 300 requests from 30 IPs for domains that have no access: on main this spent the
    # global budget and no sign-in email went out for any bill group.
    group = portal(db, ADDRESS)
    for i in range(300):
        attacker = person(budgets, f"203.0.113.{i % 30 + 1}")
        request_link(attacker, group.public_id, f"user{i}@nowhere{i % 7}.example")
    drain(budgets)
    assert smtp.messages == []
    assert count(db, SignInChallenge) == 300

    request_link(person(budgets, "192.0.2.80"), group.public_id, ADDRESS)
    assert run_worker(budgets) == (1, 1)
    assert emails_to(smtp, ADDRESS) == 1


def test_the_global_budget_counts_emails_sent_to_first_sign_ins(budgets, db, smtp):
    group = portal(db, "acme.com", "acme.org")
    change_settings(budgets, SIGNIN_LIMIT_GLOBAL="2 per 15 minutes")
    for i, address in enumerate(["a@acme.com", "nobody@else.example", "b@acme.org", "c@acme.com"]):
        request_link(person(budgets, f"198.51.100.{i + 1}"), group.public_id, address)
    assert run_worker(budgets) == (4, 2)
    assert sorted(m["To"] for m in smtp.messages) == ["a@acme.com", "b@acme.org"]
    outcomes = [
        (e.actor, e.outcome) for e in rows(db, AuditEvent, AuditEvent.action == "signin.link")
    ]
    assert sorted(outcomes) == [
        ("a@acme.com", "sent"),
        ("b@acme.org", "sent"),
        ("c@acme.com", "throttled"),
        ("nobody@else.example", "not_admitted"),
    ]


def test_one_ipv6_64_is_one_client_however_many_addresses_it_uses(budgets, db, smtp):
    # On main every address of a /64 had a budget of its own: unlimited "IPs".
    group = portal(db, ADDRESS)
    change_settings(budgets, SIGNIN_LIMIT_PER_IP="10 per 15 minutes")
    for i in range(30):  # the per-client 429 (30 a minute) would answer the rest
        flood = person(budgets, f"2001:db8:1:2::{i + 1:x}")
        assert request_link(flood, group.public_id, f"u{i}@elsewhere.example").status_code == 200
    assert count(db, SignInChallenge) == 10
    throttled = rows(db, AuditEvent, AuditEvent.outcome == "throttled")
    assert len(throttled) == 20

    # Another /64, and an IPv4 client, are not touched; the admitted person gets email.
    request_link(person(budgets, "2001:db8:1:3::1"), group.public_id, "x@elsewhere.example")
    request_link(person(budgets, "192.0.2.80"), group.public_id, ADDRESS)
    assert count(db, SignInChallenge) == 12
    run_worker(budgets)
    assert emails_to(smtp, ADDRESS) == 1


def test_the_per_client_429_counts_an_ipv6_64_as_one_client(budgets, db, smtp):
    group = portal(db, ADDRESS)
    change_settings(budgets, SECRET_ENDPOINT_LIMIT="3 per minute")
    statuses = [
        request_link(person(budgets, f"2001:db8:9:9::{i + 1}"), group.public_id, ADDRESS)
        for i in range(4)
    ]
    assert [r.status_code for r in statuses] == [200, 200, 200, 429]
    assert (
        request_link(person(budgets, "2001:db8:9:a::1"), group.public_id, ADDRESS).status_code
        == 200
    )


def test_a_flood_of_one_admitted_address_leaves_its_known_browser_its_own_budget(budgets, db, smtp):
    group = portal(db, ADDRESS)
    signed_in = person(budgets, "192.0.2.80")
    journey(signed_in, budgets, smtp, group.public_id)
    browser = known_browser(budgets, signed_in, "192.0.2.80")
    smtp.clear()
    # Strangers from 20 clients at once spend what is left of the address's budget (3 in
    # 15 minutes, and the sign-in above was one).
    attackers = [person(budgets, f"203.0.113.{i + 1}") for i in range(20)]
    race(attackers, lambda attacker: request_link(attacker, group.public_id, ADDRESS))
    assert count(db, SignInChallenge) == 1 + 2
    drain(budgets)
    assert emails_to(smtp, ADDRESS) == 2
    smtp.clear()

    # A fresh browser now gets nothing (the shared budget is spent) ...
    request_link(person(budgets, "192.0.2.81"), group.public_id, ADDRESS)
    assert run_worker(budgets) == (0, 0)
    # ... but the browser the person signed in from keeps its own.
    request_link(browser, group.public_id, ADDRESS)
    assert run_worker(budgets) == (1, 1)
    assert emails_to(smtp, ADDRESS) == 1


def test_twenty_concurrent_requests_from_a_known_browser_get_its_budget_exactly(budgets, db, smtp):
    group = portal(db, ADDRESS)
    signed_in = person(budgets, "192.0.2.80")
    journey(signed_in, budgets, smtp, group.public_id)
    twins = [known_browser(budgets, signed_in, "192.0.2.80") for _ in range(20)]

    race(twins, lambda b: request_link(b, group.public_id, ADDRESS))
    # 3 per 15 minutes for the known device (the first sign-in spent the shared budget).
    assert count(db, SignInChallenge) == 1 + 3


# --- the known-device cookie --------------------------------------------------------------


def device_cookie_header(response) -> str:
    [header] = [h for h in response.headers.getlist("Set-Cookie") if "known_device=" in h]
    return header


def test_the_device_cookie_is_set_at_sign_in_only_and_says_nothing_readable(app, db, smtp):
    group = portal(db, ADDRESS)
    browser = person(app, "192.0.2.80")
    responses = journey(browser, app, smtp, group.public_id)
    assert all(
        "known_device=" not in " ".join(r.headers.getlist("Set-Cookie")) for r in responses[:-1]
    )
    header = device_cookie_header(responses[-1])
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Path=/" in header
    assert f"Max-Age={90 * 24 * 3600}" in header
    value = browser.get_cookie("known_device").value
    import base64
    import hashlib

    payload = base64.urlsafe_b64decode(value.split(".")[0] + "==")
    for leak in (ADDRESS, "acme", hashlib.sha256(ADDRESS.encode()).hexdigest()[:32]):
        assert leak.encode() not in payload and leak not in value

    # A wrong code or a request for a link sets nothing.
    browser = known_browser(app, browser, "192.0.2.80")
    page = browser.get(f"/p/{group.public_id}")
    for response in (
        request_link(browser, group.public_id, "other@acme.com"),
        browser.post(
            f"/p/{group.public_id}/code",
            data={"csrf_token": csrf_token(page.text), "code": "0000-0000"},
        ),
    ):
        assert "known_device" not in " ".join(response.headers.getlist("Set-Cookie"))


def test_a_forged_or_foreign_device_cookie_is_worth_nothing(app, db, smtp):
    group = portal(db, ADDRESS)
    change_settings(app, SIGNIN_LIMIT_PER_ADDRESS="1 per 15 minutes")
    request_link(person(app, "203.0.113.1"), group.public_id, ADDRESS)  # spends the budget
    with app.test_request_context():
        from itsdangerous import URLSafeTimedSerializer

        foreign = URLSafeTimedSerializer("another key " * 4, salt=devices.SALT)
        forged = foreign.dumps([devices._digest(ADDRESS)])
        genuine = devices._serializer().dumps([devices._digest(ADDRESS)])
    cases = ((forged, False), ("garbage", False), ("x" * 3000, False), (genuine, True))
    for value, works in cases:
        browser = person(app, "192.0.2.80")
        browser.set_cookie("known_device", value)
        mark = last_audit_id(db)
        request_link(browser, group.public_id, ADDRESS)
        outcomes = [e.outcome for e in audit_since(db, mark)]
        assert outcomes == (["queued"] if works else ["throttled"]), value[:20]


def test_the_device_cookie_is_secure_and_host_prefixed_outside_local_development(tmp_path):
    app = create_app(
        {
            "SECRET_KEY": "p" * 40,
            "PORTAL_BASE_URL": "https://billing.example.com",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'production.db'}",
            "MAIL_TRANSPORT": "smtp",
        }
    )
    try:
        with app.test_request_context(base_url="https://billing.example.com"):
            response = Response()
            devices.remember(response, ADDRESS)
        header = device_cookie_header(response)
        assert re.fullmatch(
            r"__Host-known_device=[^;\s]+; Expires=[^;]+; Max-Age=7776000; Secure; HttpOnly;"
            r" Path=/; SameSite=Lax",
            header,
        ), header
    finally:
        with app.app_context():
            portal_db.engine().dispose()


# --- the typed code is never echoed -------------------------------------------------------


def test_a_refused_code_is_never_written_back_into_the_page(app, db, smtp):
    group = portal(db, ADDRESS)
    pid = group.public_id
    browser = person(app, "192.0.2.80")
    page, _path, code = emailed(browser, app, smtp, pid)
    csrf = csrf_token(page.text)
    other = person(app, "192.0.2.81")
    other_csrf = csrf_token(other.get(f"/p/{pid}").text)

    def typed(client: FlaskClient, token: str, value: str):
        return client.post(f"/p/{pid}/code", data={"csrf_token": token, "code": value})

    wrong = "2468-1357" if code != "2468-1357" else "1357-2468"
    refusals = [
        (typed(browser, csrf, wrong), wrong),  # a wrong code
        (typed(other, other_csrf, code), code),  # another browser's code
        (typed(browser, csrf, "9" * 21), "9" * 21),  # too long for the form
    ]
    twin = person(app, "192.0.2.80")  # the same browser, in another tab
    twin.set_cookie("session", browser.get_cookie("session").value)
    assert typed(browser, csrf, code).status_code == 303
    refusals.append((typed(twin, csrf, code), code))  # a used code

    for response, value in refusals:
        assert response.status_code == 400
        assert value not in response.text and value.replace("-", "") not in response.text
        assert re.search(r'<input[^>]*name="code"[^>]*value=""', response.text)


# --- a wrong code costs the same whether or not the address is admitted --------------------


def test_a_wrong_code_does_the_same_work_for_admitted_and_not_admitted_addresses(
    budgets, db, smtp, monkeypatch
):
    group = portal(db, ADDRESS)
    pid = group.public_id
    admitted, stranger = person(budgets, "192.0.2.80"), person(budgets, "192.0.2.81")
    pages = {
        "admitted": request_link(admitted, pid, ADDRESS),
        "not admitted": request_link(stranger, pid, "nobody@other.example"),
    }
    run_worker(budgets)
    assert emails_to(smtp, ADDRESS) == 1

    statements: list[str] = []
    calls: Counter[str] = Counter()
    engine = budgets.extensions["portal.db"].kw["bind"]

    def on_execute(_conn, _cursor, statement, _params, _context, _many) -> None:
        statements.append(re.sub(r"\s+", " ", statement))

    def counting(name: str, real):  # type: ignore[no-untyped-def]
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            calls[name] += 1
            return real(*args, **kwargs)

        return wrapper

    for name in ("has_room", "spend", "within"):
        monkeypatch.setattr(throttle, name, counting(name, getattr(throttle, name)))
    limiter = throttle.limiter.limiter
    for name in ("test", "hit"):
        monkeypatch.setattr(limiter, name, counting(f"limiter.{name}", getattr(limiter, name)))

    work = {}
    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        for (label, page), browser in zip(pages.items(), (admitted, stranger), strict=True):
            statements.clear()
            calls.clear()
            mark = last_audit_id(db)
            response = browser.post(
                f"/p/{pid}/code", data={"csrf_token": csrf_token(page.text), "code": "0000-0001"}
            )
            assert response.status_code == 400
            work[label] = (list(statements), dict(calls))
            assert [e.outcome for e in audit_since(db, mark)] == ["wrong_code"]
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)

    (admitted_sql, admitted_calls), (stranger_sql, stranger_calls) = work.values()
    assert admitted_calls == stranger_calls
    assert admitted_calls["has_room"] == admitted_calls["spend"] == 1
    assert admitted_sql == stranger_sql
    assert any(s.startswith("UPDATE signin_challenges") for s in admitted_sql)
    assert any(s.startswith("INSERT INTO audit_events") for s in admitted_sql)
