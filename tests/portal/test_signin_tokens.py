"""Security tests for the sign-in link, its token and code (../shared/SECURITY.md,
"The flow"): what is stored, what a GET or HEAD does, single use under concurrency,
retirement, expiry, browser binding, forgeries and wrong codes, leaks, `next` and the
Host header. Everything goes through the real forms (CSRF on) and a real SMTP server."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from types import SimpleNamespace
from urllib.parse import urljoin, urlsplit

import pytest
from flask import Flask, request
from flask.testing import FlaskClient
from sqlalchemy import Engine, event, func, inspect, select, text
from sqlalchemy.orm import Session
from werkzeug.serving import make_server

from portal import db as portal_db
from portal import hygiene, signin
from portal.access import add_rule
from portal.logredact import GunicornLogger, RedactTokens, redact
from portal.models import AuditEvent, BillGroup, CustomerSession, OutboxMessage, SignInChallenge
from tests.clock import Clock
from tests.conftest import CODE_RE, LINK_RE, Inbox, csrf_token, link_and_code, run_worker
from tests.factories import make_bill_group

ADDRESS = "ap@acme.com"
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")
CONCURRENT = 20


# --- helpers ------------------------------------------------------------------------


def engine_of(app: Flask) -> Engine:
    return app.extensions["portal.db"].kw["bind"]


def scalar(app: Flask, statement):  # type: ignore[no-untyped-def]
    """One value, read on a connection of its own (no snapshot left open)."""
    with engine_of(app).connect() as connection:
        return connection.execute(statement).scalar()


# Scoped to the test's bill group: on PostgreSQL others may share the database.


def sessions_count(app: Flask, pid: str) -> int:
    return scalar(
        app,
        select(func.count())
        .select_from(CustomerSession)
        .join(BillGroup, BillGroup.id == CustomerSession.bill_group_id)
        .where(BillGroup.public_id == pid),
    )


def challenges(app: Flask, pid: str) -> list:
    with engine_of(app).connect() as connection:
        return list(
            connection.execute(
                select(SignInChallenge)
                .join(BillGroup, BillGroup.id == SignInChallenge.bill_group_id)
                .where(BillGroup.public_id == pid)
                .order_by(SignInChallenge.id)
            )
        )


def portal(db: Session, rule: str = "acme.com") -> str:
    group = make_bill_group(db)
    add_rule(db, group, rule, created_by="test")
    db.commit()
    return group.public_id


def ask(client: FlaskClient, pid: str, address: str = ADDRESS, next_path: str = "", **kw):
    """Open the portal link and ask for a sign-in link; returns the check-email page."""
    page = client.get(f"/p/{pid}", query_string={"next": next_path} if next_path else None, **kw)
    assert page.status_code == 200
    response = client.post(
        f"/p/{pid}/sign-in",
        data={"csrf_token": csrf_token(page.text), "email": address, "next": next_path},
        **kw,
    )
    assert response.status_code == 200
    assert "Check your email" in response.text
    return response


def mails(app: Flask, inbox: Inbox, address: str = ADDRESS) -> list[tuple[str, str]]:
    """Run the worker; (verify path, code) of every sign-in email to the address."""
    run_worker(app)
    return [link_and_code(message) for message in inbox.to(address)]


def latest(app: Flask, inbox: Inbox, address: str = ADDRESS) -> tuple[str, str]:
    sent = mails(app, inbox, address)
    assert sent, "no sign-in email"
    return sent[-1]


def token_of(path: str) -> str:
    return path.rsplit("/", 1)[1]


def clone(app: Flask, client: FlaskClient) -> FlaskClient:
    """Another client carrying the same browser session cookie."""
    twin = app.test_client()
    twin.set_cookie("session", client.get_cookie("session").value)
    return twin


def cookie_session(app: Flask, value: str) -> dict:
    return app.session_interface.get_signing_serializer(app).loads(value)


def session_of(app: Flask, client: FlaskClient) -> dict:
    return cookie_session(app, client.get_cookie("session").value)


def confirm(client: FlaskClient, pid: str):
    page = client.get(f"/p/{pid}/confirm")
    assert page.status_code == 200, "the confirm page was not reached"
    return client.post(f"/p/{pid}/confirm", data={"csrf_token": csrf_token(page.text)})


def type_code(client: FlaskClient, pid: str, code: str, csrf: str):
    return client.post(f"/p/{pid}/code", data={"csrf_token": csrf, "code": code})


def wrong(code: str, i: int = 0) -> str:
    digits = code.replace("-", "")
    return f"{(int(digits) + 1 + i) % 10**8:08d}"


def urls(pid: str) -> SimpleNamespace:
    return SimpleNamespace(
        confirm=f"/p/{pid}/confirm",
        invalid=f"/p/{pid}/link-invalid",
        other=f"/p/{pid}/other-browser",
        overview=f"/p/{pid}/overview",
    )


def scan_database(app: Flask, secrets_: dict[str, str]) -> set[tuple[str, str, str]]:
    """(table, column, secret name) for every secret found in any row of any table."""
    hits = set()
    engine = engine_of(app)
    with engine.connect() as connection:
        for table in inspect(connection).get_table_names():
            result = connection.execute(text(f'SELECT * FROM "{table}"'))
            for row in result.mappings():
                for column, value in row.items():
                    if value is None:
                        continue
                    as_text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
                    for name, secret in secrets_.items():
                        if secret in as_text:
                            hits.add((table, column, name))
    return hits


def race(jobs: list, send) -> list:  # type: ignore[no-untyped-def]
    """Run send(job) for every job at once: threads released together by a barrier."""
    barrier = threading.Barrier(len(jobs))

    def go(job):  # type: ignore[no-untyped-def]
        barrier.wait(timeout=30)
        return send(job)

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return list(pool.map(go, jobs))


# --- 1. tokens and codes: random, and stored only as hashes ------------------------


def test_the_token_is_256_random_bits_and_only_hashes_are_stored(app, client, db, smtp):
    pid = portal(db)
    ask(client, pid)
    path, code = latest(app, smtp)
    token = token_of(path)

    assert TOKEN_RE.fullmatch(token)
    assert len(base64.urlsafe_b64decode(token + "=")) == 32  # 256 bits
    assert re.fullmatch(r"\d{4}-\d{4}", code)
    [row] = challenges(app, pid)
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    nonce = session_of(app, client)["nonce"]
    assert row.nonce_hash == hashlib.sha256(nonce.encode()).hexdigest()

    client.get(path)
    signed_in = confirm(client, pid)
    assert signed_in.headers["Location"] == urls(pid).overview
    sid = session_of(app, client)["_user_id"].removeprefix("c:")
    assert scalar(app, select(CustomerSession.sid_hash)) == hashlib.sha256(sid.encode()).hexdigest()

    found = scan_database(
        app,
        {
            "token": token,
            "code": code,
            "code digits": code.replace("-", ""),
            "nonce": nonce,
            "session id": sid,
        },
    )
    assert found == set()


def test_a_queued_email_is_sealed_and_a_sent_one_is_emptied(app, client, db, smtp):
    """While the sign-in email waits in the outbox its body is encrypted, so no table
    holds the live link or code in clear; once sent, the body is gone."""
    from emails import outbox
    from portal import signin as core

    pid = portal(db)
    ask(client, pid)
    with app.app_context():
        assert core.evaluate_pending(portal_db.session()) == 1
    [queued] = db.scalars(select(OutboxMessage)).all()
    with app.app_context():
        text = outbox.unseal(queued.text_body)
    token, code = LINK_RE.search(text).group(1).rsplit("/", 1)[1], CODE_RE.search(text).group(1)
    assert (
        scan_database(app, {"token": token, "code": code, "digits": code.replace("-", "")}) == set()
    )

    run_worker(app)
    db.expire_all()
    sent = db.get(OutboxMessage, queued.id)
    assert sent.sent_at is not None and sent.text_body == sent.html_body == ""
    assert len(smtp.to(ADDRESS)) == 1


def test_the_code_hash_is_an_hmac_keyed_by_secret_key(app, client, db, smtp):
    pid = portal(db)
    ask(client, pid)
    _path, code = latest(app, smtp)
    digits = code.replace("-", "")
    [row] = challenges(app, pid)

    with app.app_context():
        expected = signin.code_hash(row.id, digits)
        original = app.config["SECRET_KEY"]
        try:
            app.config["SECRET_KEY"] = "another-secret-key-" + "y" * 32
            under_another_key = signin.code_hash(row.id, digits)
        finally:
            app.config["SECRET_KEY"] = original
    key = hashlib.sha256(b"portal sign-in code\x00" + original.encode()).digest()

    assert row.code_hash == expected
    assert expected == hmac.new(key, f"{row.id}:{digits}".encode(), hashlib.sha256).hexdigest()
    assert under_another_key != expected
    assert row.code_hash != hashlib.sha256(digits.encode()).hexdigest()


# --- 2. GET and HEAD of the link change nothing --------------------------------------


def test_a_get_of_the_link_spends_nothing_and_redirects_away_from_the_token(app, client, db, smtp):
    pid = portal(db)
    ask(client, pid)
    path, _code = latest(app, smtp)
    token = token_of(path)

    for _ in range(2):
        opened = client.get(path)
        assert opened.status_code == 303
        assert opened.headers["Location"] == urls(pid).confirm
        assert all(token not in value for _name, value in opened.headers.items())
        assert token not in opened.get_data(as_text=True)
        [row] = challenges(app, pid)
        assert row.spent_at is None and row.retired_at is None
    assert sessions_count(app, pid) == 0
    assert confirm(client, pid).headers["Location"] == urls(pid).overview


def test_a_head_of_the_link_is_200_empty_and_touches_no_database(app, client, db, smtp):
    pid = portal(db)
    ask(client, pid)
    path, _code = latest(app, smtp)
    statements: list[str] = []

    def seen(_conn, _cursor, statement, *_args):  # type: ignore[no-untyped-def]
        statements.append(statement)

    engine = engine_of(app)
    event.listen(engine, "before_cursor_execute", seen)
    try:
        heads = [client.head(path), app.test_client().head(path)]
        during_head = list(statements)
        opened = client.get(path)  # the listener does see the queries of a GET
    finally:
        event.remove(engine, "before_cursor_execute", seen)

    for head in heads:
        assert head.status_code == 200
        assert head.data == b""
    assert during_head == []
    assert len(statements) > 0
    assert opened.headers["Location"] == urls(pid).confirm
    [row] = challenges(app, pid)
    assert row.spent_at is None


# --- 3. single use, under concurrency -------------------------------------------------


def test_twenty_concurrent_confirms_sign_in_exactly_once(app, client, db, smtp):
    pid = portal(db)
    ask(client, pid)
    path, _code = latest(app, smtp)
    assert client.get(path).headers["Location"] == urls(pid).confirm
    browsers = [clone(app, client) for _ in range(CONCURRENT)]
    jobs = []
    for browser in browsers:
        page = browser.get(urls(pid).confirm)
        assert page.status_code == 200
        jobs.append((browser, csrf_token(page.text)))

    responses = race(jobs, lambda job: job[0].post(urls(pid).confirm, data={"csrf_token": job[1]}))

    assert [r.status_code for r in responses] == [303] * CONCURRENT
    locations = [r.headers["Location"] for r in responses]
    assert locations.count(urls(pid).overview) == 1
    assert locations.count(urls(pid).invalid) == CONCURRENT - 1
    assert sessions_count(app, pid) == 1
    [row] = challenges(app, pid)
    assert row.spent_at is not None
    winner = browsers[locations.index(urls(pid).overview)]
    assert winner.get(urls(pid).overview).status_code == 200


def test_twenty_concurrent_correct_codes_sign_in_exactly_once(app, client, db, smtp):
    pid = portal(db)
    page = ask(client, pid)
    _path, code = latest(app, smtp)
    csrf = csrf_token(page.text)
    browsers = [clone(app, client) for _ in range(CONCURRENT)]

    responses = race(
        browsers,
        lambda browser: browser.post(f"/p/{pid}/code", data={"csrf_token": csrf, "code": code}),
    )

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [303] + [400] * (CONCURRENT - 1)
    [won] = [r for r in responses if r.status_code == 303]
    assert won.headers["Location"] == urls(pid).overview
    assert sessions_count(app, pid) == 1
    [row] = challenges(app, pid)
    assert row.spent_at is not None


def test_concurrent_wrong_codes_get_no_more_than_the_allowed_attempts(
    app, client, db, smtp, monkeypatch
):
    """Attempts are counted atomically: a burst of guesses at once is not a way to try
    more than CODE_ATTEMPTS_PER_CHALLENGE codes."""
    pid = portal(db)
    page = ask(client, pid)
    _path, code = latest(app, smtp)
    csrf = csrf_token(page.text)
    compared = []
    real_code_hash = signin.code_hash

    def counting_code_hash(challenge_id: int, guess: str) -> str:
        compared.append(guess)
        return real_code_hash(challenge_id, guess)

    monkeypatch.setattr(signin, "code_hash", counting_code_hash)
    guesses = [(clone(app, client), wrong(code, i)) for i in range(CONCURRENT)]

    responses = race(
        guesses,
        lambda job: job[0].post(f"/p/{pid}/code", data={"csrf_token": csrf, "code": job[1]}),
    )

    limit = app.config["CODE_ATTEMPTS_PER_CHALLENGE"]
    assert [r.status_code for r in responses] == [400] * CONCURRENT
    assert len(compared) <= limit
    [row] = challenges(app, pid)
    assert row.code_attempts <= limit
    refused = type_code(client, pid, code, csrf)
    assert refused.status_code == 400
    assert sessions_count(app, pid) == 0


# --- 4. retirement ----------------------------------------------------------------------


@pytest.mark.parametrize("used", ["link", "code"])
def test_two_requests_give_two_live_links_and_signing_in_retires_the_other(
    app, client, db, smtp, used
):
    pid = portal(db)
    page = ask(client, pid)
    ask(client, pid)
    (path1, code1), (path2, code2) = mails(app, smtp)
    assert path1 != path2 and code1 != code2

    # The second request did not cancel the first: both links reach the confirm page.
    assert client.get(path1).headers["Location"] == urls(pid).confirm
    assert client.get(path2).headers["Location"] == urls(pid).confirm
    # The same browser, before signing in: same nonce, about to confirm link 2.
    twin = clone(app, client)
    twin_csrf = csrf_token(twin.get(urls(pid).confirm).text)

    if used == "link":
        assert client.get(path1).headers["Location"] == urls(pid).confirm
        assert confirm(client, pid).headers["Location"] == urls(pid).overview
    else:
        signed_in = type_code(client, pid, code1, csrf_token(page.text))
        assert signed_in.headers["Location"] == urls(pid).overview
    first, second = challenges(app, pid)
    assert first.spent_at is not None
    assert second.spent_at is None and second.retired_at is not None

    # Link 2, its confirm and its code are dead, even in a browser that still has the
    # nonce they were bound to.
    for browser in (client, twin):
        opened = browser.get(path2)
        assert opened.headers["Location"] == urls(pid).invalid
        neutral = browser.get(opened.headers["Location"])
        assert "This sign-in link cannot be used" in neutral.text
    assert (
        twin.post(urls(pid).confirm, data={"csrf_token": twin_csrf}).headers["Location"]
        == urls(pid).invalid
    )
    for typed in (code2, code1):
        refused = type_code(twin, pid, typed, twin_csrf)
        assert refused.status_code == 400
        assert "That code is not right" in refused.text
    assert sessions_count(app, pid) == 1


# --- 5. expiry, with the clock moved ---------------------------------------------------


@pytest.mark.parametrize(
    ("ttl", "before", "after"),
    [
        (None, dt.timedelta(minutes=15) - dt.timedelta(seconds=1), dt.timedelta(minutes=15)),
        (5, dt.timedelta(minutes=4), dt.timedelta(minutes=6)),
    ],
    ids=["default-15", "configured-5"],
)
def test_the_link_and_the_code_expire_after_the_configured_lifetime(
    app, client, db, smtp, ttl, before, after
):
    if ttl is not None:
        app.config["SIGNIN_TTL_MINUTES"] = ttl
    minutes = app.config["SIGNIN_TTL_MINUTES"]
    start = dt.datetime.now(dt.UTC).replace(microsecond=0)
    clock = Clock(start).install(app)
    pid = portal(db)
    page = ask(client, pid)
    path, code = latest(app, smtp)
    csrf = csrf_token(page.text)
    [row] = challenges(app, pid)
    assert row.expires_at == start + dt.timedelta(minutes=minutes)

    clock.set(start + before)
    assert client.get(path).headers["Location"] == urls(pid).confirm
    late = clone(app, client)
    late_csrf = csrf_token(late.get(urls(pid).confirm).text)

    clock.set(start + after)
    assert client.get(path).headers["Location"] == urls(pid).invalid
    assert type_code(client, pid, code, csrf).status_code == 400
    confirmed = late.post(urls(pid).confirm, data={"csrf_token": late_csrf})
    assert confirmed.headers["Location"] == urls(pid).invalid
    assert sessions_count(app, pid) == 0

    # Back within the lifetime the very same code works: it was refused for its age.
    clock.set(start + before)
    assert type_code(client, pid, code, csrf).headers["Location"] == urls(pid).overview
    assert sessions_count(app, pid) == 1


# --- 6. binding to the browser that asked ---------------------------------------------


def test_the_link_in_another_browser_spends_nothing_and_never_signs_in(app, client, db, smtp):
    pid = portal(db)
    ask(client, pid)
    path, code = latest(app, smtp)
    other = app.test_client()

    opened = other.get(path)
    assert opened.status_code == 303
    assert opened.headers["Location"] == urls(pid).other
    page = other.get(urls(pid).other)
    assert "Open the link where you asked for it" in page.text
    csrf = csrf_token(page.text)
    assert (
        other.post(urls(pid).confirm, data={"csrf_token": csrf}).headers["Location"]
        == urls(pid).invalid
    )
    assert type_code(other, pid, code, csrf).status_code == 400
    assert sessions_count(app, pid) == 0
    [row] = challenges(app, pid)
    assert row.spent_at is None and row.code_attempts == 0
    # The spend itself is bound too, whatever the caller passes.
    with app.app_context():
        group = db.get(SignInChallenge, row.id).bill_group
        for nonce in (session_of(app, other)["nonce"], None, ""):
            assert signin.spend(db, row.id, group, nonce) is False
        db.rollback()

    assert client.get(path).headers["Location"] == urls(pid).confirm
    assert confirm(client, pid).headers["Location"] == urls(pid).overview


class Forms(HTMLParser):
    """Every form on a page: (method, action, {name: value}); and every link."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, str, dict[str, str]]] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):  # type: ignore[no-untyped-def]
        attributes = dict(attrs)
        if tag == "form":
            method = (attributes.get("method") or "get").upper()
            self.forms.append((method, attributes.get("action") or "", {}))
        elif tag in ("input", "textarea", "button") and self.forms and attributes.get("name"):
            self.forms[-1][2][attributes["name"]] = attributes.get("value") or ""
        elif tag == "a" and attributes.get("href"):
            self.links.append(attributes["href"])


def scan(client: FlaskClient, link: str, pid: str) -> list[tuple[str, str, int]]:
    """A mail scanner: HEAD and GET the link, follow every redirect and same-site link,
    submit every form it finds, then POST confirm with its own CSRF token."""
    done: list[tuple[str, str, int]] = []
    queue: list[tuple[str, str, dict[str, str] | None]] = [
        ("HEAD", link, None),
        ("GET", link, None),
    ]
    seen: set[tuple[str, str]] = set()
    csrf = None
    while queue and len(done) < 40:
        method, url, data = queue.pop(0)
        if (method, url) in seen and method != "HEAD":
            continue
        seen.add((method, url))
        response = client.open(url, method=method, data=data)
        done.append((method, url, response.status_code))
        if "Location" in response.headers:
            queue.append(("GET", urljoin(url, response.headers["Location"]), None))
            continue
        parser = Forms()
        parser.feed(response.get_data(as_text=True))
        for form_method, action, fields in parser.forms:
            csrf = fields.get("csrf_token", csrf)
            queue.append((form_method, urljoin(url, action) or url, fields))
        for href in parser.links:
            if urlsplit(href).netloc == "" and href.startswith(f"/p/{pid}"):
                queue.append(("GET", href, None))
    assert csrf, "the scanner found no form"
    confirmed = client.post(f"/p/{pid}/confirm", data={"csrf_token": csrf})
    done.append(("POST", f"/p/{pid}/confirm", confirmed.status_code))
    return done


def test_a_scanner_that_follows_and_submits_everything_never_gets_a_session(app, client, db, smtp):
    pid = portal(db)
    ask(client, pid)
    path, _code = latest(app, smtp)
    scanner = app.test_client()

    visited = scan(scanner, path, pid)

    submitted = {(method, url) for method, url, _status in visited if method == "POST"}
    assert {("POST", f"/p/{pid}/resend"), ("POST", f"/p/{pid}/confirm")} <= submitted
    assert sessions_count(app, pid) == 0
    assert scanner.get(urls(pid).overview).status_code != 200
    assert all(row.spent_at is None for row in challenges(app, pid))
    assert "_user_id" not in session_of(app, scanner)

    assert client.get(path).headers["Location"] == urls(pid).confirm
    assert confirm(client, pid).headers["Location"] == urls(pid).overview
    assert sessions_count(app, pid) == 1


def code_only_mail(inbox: Inbox, address: str = ADDRESS) -> tuple[str, str, str]:
    """The newest email: its plain text, its HTML, and its code."""
    message = inbox.to(address)[-1]
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    return text, html, CODE_RE.search(text).group(1)


def test_a_scanner_that_also_scans_the_email_it_caused_gets_no_session(app, client, db, smtp):
    """The resend button sends a code, not a link: a scanner that keeps its cookies and
    reads the email it caused has nothing to follow."""
    pid = portal(db)
    ask(client, pid)
    path, _code = latest(app, smtp)
    scanner = app.test_client()
    scan(scanner, path, pid)
    run_worker(app)
    assert len(smtp.to(ADDRESS)) == 2, "the scanner's resend sent no email"

    text, html, _code = code_only_mail(smtp)
    assert "/verify/" not in text and "/verify/" not in html
    assert 'href="http' not in html and "http" not in text
    assert sessions_count(app, pid) == 0
    assert client.get(path).headers["Location"] == urls(pid).confirm


def test_email_me_a_code_for_this_browser_signs_in_the_second_browser(app, client, db, smtp):
    pid = portal(db)
    ask(client, pid)
    path1, _code1 = latest(app, smtp)
    phone = app.test_client()
    page = phone.get(phone.get(path1).headers["Location"])
    assert "Email me a code for this browser" in page.text

    resent = phone.post(f"/p/{pid}/resend", data={"csrf_token": csrf_token(page.text)})
    assert resent.status_code == 200 and "Check your email" in resent.text
    run_worker(app)
    _text, _html, code2 = code_only_mail(smtp)
    second = challenges(app, pid)[1]
    phone_nonce = session_of(app, phone)["nonce"]
    assert second.nonce_hash == hashlib.sha256(phone_nonce.encode()).hexdigest()

    # The code works only in the browser that pressed the button.
    refused = type_code(client, pid, code2, csrf_token(client.get(f"/p/{pid}").text))
    assert refused.status_code == 400
    signed_in = type_code(phone, pid, code2, csrf_token(resent.text))
    assert signed_in.headers["Location"] == urls(pid).overview


def test_forged_foreign_truncated_and_huge_tokens_get_the_same_neutral_page(app, client, db, smtp):
    pid_a, pid_b = portal(db), portal(db)
    ask(client, pid_a)
    path, _code = latest(app, smtp)
    token = token_of(path)
    forged = {
        "random": (pid_a, secrets.token_urlsafe(32)),
        "other bill group": (pid_b, token),
        "truncated": (pid_a, token[:-1]),
        "half": (pid_a, token[:22]),
        "one character changed": (pid_a, token[:-1] + ("A" if token[-1] != "A" else "B")),
        "10 kB": (pid_a, "A" * 10_240),
        "10 kB after the token": (pid_a, token + "A" * 10_240),
    }
    answers = {}
    for name, (pid, fake) in forged.items():
        opened = client.get(f"/p/{pid}/verify/{fake}")
        assert opened.status_code == 303, name
        assert opened.headers["Location"] == urls(pid).invalid, name
        assert "Set-Cookie" not in opened.headers, name
        neutral = client.get(opened.headers["Location"])
        assert neutral.status_code == 200
        answers[name] = (pid, opened.get_data(as_text=True), neutral.get_data(as_text=True))

    for pid in (pid_a, pid_b):
        reference = client.get(urls(pid).invalid).get_data(as_text=True)
        same_group = [a for a in answers.values() if a[0] == pid]
        assert same_group
        assert {a[2] for a in same_group} == {reference}
        assert len({a[1] for a in same_group}) == 1
    assert sessions_count(app, pid_a) == sessions_count(app, pid_b) == 0
    [row] = challenges(app, pid_a)
    assert row.spent_at is None
    # The real token still works: the forgeries were refused for what they were.
    assert client.get(path).headers["Location"] == urls(pid_a).confirm


@pytest.mark.parametrize(("wrong_codes", "works"), [(4, True), (5, False)])
def test_five_wrong_codes_lock_the_challenge(app, client, db, smtp, wrong_codes, works):
    pid = portal(db)
    csrf = csrf_token(ask(client, pid).text)
    _path, code = latest(app, smtp)
    for i in range(wrong_codes):
        refused = type_code(client, pid, wrong(code, i), csrf)
        assert refused.status_code == 400
        assert "That code is not right" in refused.text

    answer = type_code(client, pid, code, csrf)

    if works:
        assert answer.headers["Location"] == urls(pid).overview
        assert sessions_count(app, pid) == 1
    else:
        assert answer.status_code == 400
        assert sessions_count(app, pid) == 0
        [row] = challenges(app, pid)
        assert row.spent_at is None and row.code_attempts == 5


def _fail_codes(app: Flask, pid: str, inbox: Inbox, failures: int, per_challenge: int) -> None:
    """`failures` wrong codes for ADDRESS, from fresh browsers, per_challenge each."""
    while failures:
        browser = app.test_client()
        csrf = csrf_token(ask(browser, pid).text)
        _path, code = latest(app, inbox)
        for i in range(min(per_challenge, failures)):
            assert type_code(browser, pid, wrong(code, i), csrf).status_code == 400
            failures -= 1


@pytest.mark.parametrize(
    ("limit", "failures", "works"),
    [("20 per day", 19, True), ("20 per day", 20, False), ("2 per day", 2, False)],
)
def test_wrong_codes_per_address_per_day_lock_even_a_fresh_challenge(
    app, db, smtp, limit, failures, works
):
    app.config.update(
        CODE_FAILURE_LIMIT_PER_ADDRESS=limit,
        SIGNIN_LIMIT_PER_ADDRESS="100 per day",
        SIGNIN_LIMIT_PER_IP="100 per day",
        SECRET_ENDPOINT_LIMIT="1000 per minute",
    )
    pid = portal(db)
    _fail_codes(app, pid, smtp, failures, app.config["CODE_ATTEMPTS_PER_CHALLENGE"])

    fresh = app.test_client()
    csrf = csrf_token(ask(fresh, pid).text)
    _path, code = latest(app, smtp)
    answer = type_code(fresh, pid, code, csrf)

    if works:
        assert answer.headers["Location"] == urls(pid).overview
        assert sessions_count(app, pid) == 1
    else:
        assert answer.status_code == 400
        assert sessions_count(app, pid) == 0
        # Another address, from the same IP, is not affected.
        colleague = app.test_client()
        csrf = csrf_token(ask(colleague, pid, "ar@acme.com").text)
        _path, other_code = latest(app, smtp, "ar@acme.com")
        signed_in = type_code(colleague, pid, other_code, csrf)
        assert signed_in.headers["Location"] == urls(pid).overview


@pytest.mark.parametrize("layout", ["{} {}", "{}{}", "{}-{}"])
def test_a_code_may_be_typed_with_a_space_a_dash_or_nothing(app, client, db, smtp, layout):
    pid = portal(db)
    csrf = csrf_token(ask(client, pid).text)
    _path, code = latest(app, smtp)
    first, last = code.split("-")

    answer = type_code(client, pid, layout.format(first, last), csrf)

    assert answer.status_code == 303
    assert answer.headers["Location"] == urls(pid).overview
    assert sessions_count(app, pid) == 1


# --- 8. no secret leaks ---------------------------------------------------------------


class Recording:
    """A test client that keeps every response."""

    def __init__(self, client: FlaskClient, responses: list) -> None:
        self.client = client
        self.responses = responses

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        method = getattr(self.client, name)
        if name not in ("get", "post", "head", "open"):
            return method

        def call(*args, **kwargs):  # type: ignore[no-untyped-def]
            response = method(*args, **kwargs)
            self.responses.append(response)
            return response

        return call


def test_no_secret_reaches_a_response_the_audit_trail_the_log_or_the_cookie(app, db, smtp, caplog):
    caplog.set_level(logging.DEBUG)
    responses: list = []
    group_pid = portal(db)
    group_row = scalar(app, text(f"SELECT id FROM bill_groups WHERE public_id = '{group_pid}'"))
    group_name = scalar(app, text(f"SELECT name FROM bill_groups WHERE id = {group_row}"))
    laptop = Recording(app.test_client(), responses)
    phone = Recording(app.test_client(), responses)
    elsewhere = Recording(app.test_client(), responses)

    # By link, in the laptop.
    ask(laptop, group_pid)
    path_a, code_a = latest(app, smtp)
    laptop.head(path_a)
    laptop.get(laptop.get(path_a).headers["Location"])
    laptop.get(laptop.get(f"/p/{group_pid}/verify/{secrets.token_urlsafe(32)}").headers["Location"])
    assert confirm(laptop, group_pid).headers["Location"] == urls(group_pid).overview
    assert laptop.get(urls(group_pid).overview).status_code == 200
    # By code, in the phone; its link opened elsewhere first.
    csrf = csrf_token(ask(phone, group_pid).text)
    path_b, code_b = latest(app, smtp)
    elsewhere.get(elsewhere.get(path_b).headers["Location"])
    assert type_code(phone, group_pid, wrong(code_b), csrf).status_code == 400
    signed_in = type_code(phone, group_pid, code_b, csrf)
    assert signed_in.headers["Location"] == urls(group_pid).overview
    phone.get(urls(group_pid).overview)

    sids = [session_of(app, c.client)["_user_id"].removeprefix("c:") for c in (laptop, phone)]
    assert all(len(sid) == 43 for sid in sids)
    secret_values = {
        "token a": token_of(path_a),
        "token b": token_of(path_b),
        "code a": code_a,
        "code a digits": code_a.replace("-", ""),
        "code b": code_b,
        "code b digits": code_b.replace("-", ""),
        "session id laptop": sids[0],
        "session id phone": sids[1],
    }

    cookies = []
    for response in responses:
        body = response.get_data(as_text=True)
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        for name, secret in secret_values.items():
            assert secret not in body, name
            assert secret not in headers, name
        cookies += [
            value.split("=", 1)[1].split(";", 1)[0]
            for value in response.headers.getlist("Set-Cookie")
            if value.startswith("session=") and not value.startswith("session=;")
        ]
    assert len(responses) > 12 and cookies

    with engine_of(app).connect() as connection:
        audit_rows = [str(tuple(row)) for row in connection.execute(select(AuditEvent))]
    assert len(audit_rows) >= 6
    for name, secret in secret_values.items():
        assert not [row for row in audit_rows if secret in row], name

    # mail.log is aiosmtpd, the test's SMTP server: the mailbox, which does get the email.
    records = [r for r in caplog.records if not r.name.startswith("mail.log")]
    assert any(r.name == "mail.log" and "/verify/" in r.getMessage() for r in caplog.records)
    logged = "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''} {r.stack_info or ''}" for r in records
    )
    for name, secret in secret_values.items():
        assert secret not in logged, name

    # The (client-readable) session cookie says nothing about who or which bill group.
    for value in cookies + [c.client.get_cookie("session").value for c in (laptop, phone)]:
        data = json.dumps(cookie_session(app, value))
        for fact in (ADDRESS, "acme.com", group_pid, group_name):
            assert fact not in data
        assert not any(
            word in key
            for key in cookie_session(app, value)
            for word in ("email", "group", "bill", "address")
        )


def test_redact_and_the_filter_remove_tokens_from_access_log_lines(app):
    token = secrets.token_urlsafe(32)
    line = f'127.0.0.1 - - [21/Nov/2026 12:00:00] "GET /p/x/verify/{token} HTTP/1.1" 303 -'
    assert token not in redact(line)
    assert "/p/x/verify/[redacted] HTTP/1.1" in redact(line)
    assert redact(f"/p/x/verify/{token}?a=b") == "/p/x/verify/[redacted]?a=b"

    record = logging.LogRecord(
        "werkzeug",
        logging.INFO,
        __file__,
        1,
        '%s - - "%s" %s %s',
        ("127.0.0.1", f"GET /p/x/verify/{token} HTTP/1.1", "303", "-"),
        None,
    )
    assert RedactTokens().filter(record) is True
    assert token not in record.getMessage()
    assert "/verify/[redacted]" in record.getMessage()
    for name in ("werkzeug", "gunicorn.access"):
        assert any(isinstance(f, RedactTokens) for f in logging.getLogger(name).filters)


def test_the_development_servers_access_log_never_shows_a_token(app, db, caplog):
    caplog.set_level(logging.INFO, logger="werkzeug")
    pid = portal(db)
    token = secrets.token_urlsafe(32)
    server = make_server("127.0.0.1", 0, app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/p/{pid}/verify/{token}"
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD")) as answer:
            assert answer.status == 200
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    access = [r for r in caplog.records if r.name == "werkzeug"]
    assert any("/verify/[redacted]" in r.getMessage() for r in access)
    assert not any(token in r.getMessage() for r in access)


def test_gunicorns_access_log_atoms_are_redacted():
    from gunicorn.config import Config

    token = secrets.token_urlsafe(32)
    # atoms() reads nothing from the instance's configuration: skip gunicorn's setup,
    # which would attach handlers to the global gunicorn loggers.
    logger = object.__new__(GunicornLogger)
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": f"/p/x/verify/{token}",
        "PATH_INFO": f"/p/x/verify/{token}",
        "QUERY_STRING": f"next=/p/x/verify/{token}",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "203.0.113.9",
    }
    resp = SimpleNamespace(status="303 See Other", sent=0, headers=[("Location", "/p/x/confirm")])
    req = SimpleNamespace(headers=[("HOST", "portal.example.test")])

    atoms = logger.atoms(resp, req, environ, dt.timedelta(milliseconds=7))

    for key in ("r", "U", "q"):
        assert token not in atoms[key]
        assert "/verify/[redacted]" in atoms[key]
    assert atoms["r"] == "GET /p/x/verify/[redacted] HTTP/1.1"
    assert token not in Config().access_log_format % atoms


# --- 9. `next`: same-site paths in this bill group only --------------------------------

OPEN_REDIRECTS = [
    "//evil.com",
    "///evil.com",
    "/\\evil.com",
    "\\\\evil.com",
    "https://evil.com",
    "http:evil.com",
    "javascript:alert(1)",
    "/p/{pid}/../../evil",
    "/p/{pid}/..",
    "/p/{pid}/%2e%2e/%2e%2e/evil",
    "/p/{pid}/.%2E/{other}/overview",
    "%2F%2Fevil.com",
    "/p/{other}/overview",
    "/p/{pid}/overview\r\nLocation: x",
    " /p/{pid}/overview",
    "\t/p/{pid}/overview",
    "\n/p/{pid}/overview",
    "https://evil.com/p/{pid}/overview",
    "//evil.com/p/{pid}/overview",
    "/p/{pid}@evil.com/",
    "/p/{pid}/\\\\evil.com",
]


def _payload(template: str, pid: str, other: str) -> str:
    return template.replace("{pid}", pid).replace("{other}", other)


@pytest.mark.parametrize("template", OPEN_REDIRECTS)
def test_safe_next_refuses_every_redirect_outside_the_bill_group(template):
    pid, other = "abcdefghij12", "zyxwvutsrq98"
    assert signin.safe_next(_payload(template, pid, other), pid) is None


@pytest.mark.parametrize("valid", ["/p/{pid}/overview", "/p/{pid}/overview?tab=invoices"])
def test_safe_next_keeps_a_path_in_the_bill_group(valid):
    pid = "abcdefghij12"
    assert signin.safe_next(_payload(valid, pid, ""), pid) == _payload(valid, pid, "")


@pytest.mark.parametrize("template", OPEN_REDIRECTS)
def test_after_sign_in_a_hostile_next_lands_on_the_overview(app, client, db, smtp, template):
    pid, other = portal(db), portal(db)
    payload = _payload(template, pid, other)
    if not hygiene.clean_text(payload):
        # Control characters in a query string are refused before any view (portal.web).
        assert client.get(f"/p/{pid}", query_string={"next": payload}).status_code == 400
        assert challenges(app, pid) == []
        return
    ask(client, pid, next_path=payload)
    path, _code = latest(app, smtp)
    client.get(path)

    response = confirm(client, pid)

    assert response.status_code == 303
    assert response.headers["Location"] == urls(pid).overview
    assert challenges(app, pid)[0].next_path is None


def test_after_sign_in_a_next_in_the_bill_group_is_honoured(app, client, db, smtp):
    pid = portal(db)
    target = f"/p/{pid}/overview?tab=invoices"
    ask(client, pid, next_path=target)
    path, _code = latest(app, smtp)
    client.get(path)

    response = confirm(client, pid)

    assert response.headers["Location"] == target


# --- 10. links come from PORTAL_BASE_URL only ------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "evil.example"},
        {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "http"},
        {
            "Host": "evil.example",
            "X-Forwarded-Host": "evil.example",
            "X-Forwarded-Proto": "http",
            "Forwarded": "for=203.0.113.9;host=evil.example;proto=http",
        },
    ],
    ids=["host", "x-forwarded", "all"],
)
def test_the_emailed_link_uses_portal_base_url_whatever_the_host_header(app, db, smtp, headers):
    hosts: list[str] = []
    app.before_request(lambda: hosts.append(request.host))
    pid = portal(db)
    browser = app.test_client()

    ask(browser, pid, headers=headers)

    assert "Host" not in headers or hosts[-1] == "evil.example"  # the app took the Host
    run_worker(app)
    [message] = smtp.to(ADDRESS)
    for part in ("plain", "html"):
        body = message.get_body(preferencelist=(part,)).get_content()
        found = re.findall(r"https?://[^\s\"'<>]+", body)
        assert found, part
        assert all(url.startswith("https://portal.example.test/p/") for url in found), found
        assert "evil.example" not in body
    path, _code = link_and_code(message)
    assert path.startswith(f"/p/{pid}/verify/")
