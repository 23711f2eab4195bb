"""Fixtures: app (fresh database per test), client, runner, db session, factories.

Every test that uses the database runs on SQLite (a fresh file per test); with
PORTAL_TEST_DATABASE_URL set, `-m db` runs the same tests on PostgreSQL, where the
schema is created once and every table is emptied before each test.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import secrets
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import event, make_url, text
from sqlalchemy.orm import Session

import portal.models  # noqa: F401
from portal import db as portal_db
from portal import throttle
from portal.app import create_app
from portal.config import settings_of
from portal.db import Base, make_engine
from tests.clock import MIDDAY, Clock
from tests.localstripe import localstripe  # noqa: F401  # the session fixture
from tests.oidc_mock import fake_provider, oidc_mock  # noqa: F401  # the provider fixtures

POSTGRES_URL = os.environ.get("PORTAL_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("PORTAL_TEST_REDIS_URL")
DB_FIXTURES = {"app", "db", "client", "runner"}

TEST_CONFIG = {
    "TESTING": True,
    "SECRET_KEY": "test-secret-key-" + "x" * 32,
    "PORTAL_BASE_URL": "https://portal.example.test",
    "SERVER_NAME": None,
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark database tests `db`; without PostgreSQL, deselect the PostgreSQL-only tests
    (they run in CI's second pass) rather than skip them."""
    missing = []
    for item in items:
        if DB_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.db)
        if (not POSTGRES_URL and item.get_closest_marker("postgres")) or (
            not REDIS_URL and item.get_closest_marker("redis")
        ):
            missing.append(item)
    if missing:
        config.hook.pytest_deselected(items=missing)
        items[:] = [item for item in items if item not in missing]
        config._portal_service_deselected = len(missing)  # type: ignore[attr-defined]


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    count = getattr(config, "_portal_service_deselected", 0)
    if count:
        terminalreporter.write_line(
            f"{count} tests that need PostgreSQL or Redis deselected: set "
            "PORTAL_TEST_DATABASE_URL and PORTAL_TEST_REDIS_URL to run them (CI does)."
        )


@pytest.fixture(scope="session")
def postgres_schema() -> Iterator[str | None]:
    """On PostgreSQL, a database of this run's own on that server (so concurrent runs
    cannot collide), with the schema created once, dropped at the end."""
    if not POSTGRES_URL:
        yield None
        return
    name = f"portal_test_{os.getpid()}_{secrets.token_hex(4)}"
    server = make_engine(POSTGRES_URL).execution_options(isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with server.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()


@pytest.fixture
def database_url(tmp_path, postgres_schema) -> str:
    if postgres_schema:
        engine = make_engine(postgres_schema)
        names = ", ".join(t.name for t in Base.metadata.sorted_tables)
        with engine.begin() as connection:
            # The audit table refuses TRUNCATE; tests may lift that, the app never does.
            connection.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
            connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
            connection.execute(text("ALTER TABLE audit_events ENABLE TRIGGER USER"))
        engine.dispose()
        return postgres_schema
    return f"sqlite:///{tmp_path / 'portal.db'}"


class Inbox:
    """What a real SMTP server on 127.0.0.1 received, parsed."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        # The bytes of each message as they came over the wire, in the same order.
        self.raw: list[bytes] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append(message)  # type: ignore[arg-type]
            self.raw.append(envelope.original_content)
        return "250 OK"

    def clear(self) -> None:
        with self.lock:
            self.messages.clear()
            self.raw.clear()

    def to(self, address: str) -> list[EmailMessage]:
        with self.lock:
            return [m for m in self.messages if m["To"] == address]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


@pytest.fixture
def smtp(smtp_server) -> Inbox:
    """The inbox of the test SMTP server, emptied for this test."""
    inbox, _port = smtp_server
    inbox.clear()
    return inbox


@pytest.fixture
def app(database_url: str, smtp_server) -> Iterator[Flask]:
    _inbox, port = smtp_server
    app = create_app(
        {
            **TEST_CONFIG,
            "DATABASE_URL": database_url,
            "MAIL_SERVER": "127.0.0.1",
            "MAIL_PORT": port,
            "MAIL_TIMEOUT": 5,
        }
    )
    with app.app_context():
        if database_url.startswith("sqlite"):
            Base.metadata.create_all(portal_db.engine())
    yield app
    with app.app_context():
        portal_db.engine().dispose()


@pytest.fixture
def sibling(app: Flask) -> Iterator:
    """Build further apps on the test's database and SMTP server (another worker process,
    or other settings fixed at start-up such as the rate-limit storage)."""
    built: list[Flask] = []

    def build(**overrides) -> Flask:
        config = {
            **TEST_CONFIG,
            "DATABASE_URL": settings_of(app).DATABASE_URL,
            "MAIL_SERVER": settings_of(app).MAIL_SERVER,
            "MAIL_PORT": settings_of(app).MAIL_PORT,
            "MAIL_TIMEOUT": settings_of(app).MAIL_TIMEOUT,
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


def production_app(tmp_path: Path) -> Flask:
    """An app as it runs outside local development (no TESTING, no debug: HSTS, staff
    must enrol, the demo refuses), on an SQLite file of its own with the tables made."""
    app = create_app(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'p.db'}",
            "SECRET_KEY": "p" * 40,
            "PORTAL_BASE_URL": "https://billing.example.com",
        }
    )
    with app.app_context():
        Base.metadata.create_all(portal_db.engine())
    return app


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def counted_app(request, app: Flask, sibling) -> Iterator[Flask]:
    """The app with its rate limits and budgets counted on memory:// (the `app` itself)
    or on the test Redis, emptied before and after."""
    if request.param == "memory":
        yield app
        return
    import redis

    with redis.Redis.from_url(REDIS_URL) as server:
        server.flushdb()
        yield sibling(RATELIMIT_STORAGE_URI=REDIS_URL)
        server.flushdb()


def _close_limiter_storage() -> None:
    """The limiter is one object per process, and each new app replaces its storage:
    close the Redis connections of the one being replaced."""
    client = getattr(throttle.limiter.storage, "storage", None)
    if client is not None and hasattr(client, "connection_pool"):
        client.close()
        client.connection_pool.disconnect()


@pytest.fixture
def db(app: Flask) -> Iterator[Session]:
    """A session on the app's database. No app context stays pushed: requests made by
    the test must get their own, as in production (g, CSRF tokens, the db session)."""
    session = app.extensions["portal.db"]()
    yield session
    session.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


@pytest.fixture
def clock(app: Flask) -> Clock:
    """The app's clock, stopped at midday on the factories' TODAY; moves only when told
    (`clock.advance(minutes=29)`, `clock.set(moment)`). Modules that want it for every test
    say `pytestmark = pytest.mark.usefixtures("clock")`."""
    return Clock(MIDDAY).install(app)


@contextmanager
def statements(app: Flask) -> Iterator[list[str]]:
    """Every SQL statement the app's engine sends while the block runs."""
    engine = app.extensions["portal.db"].kw["bind"]
    seen: list[str] = []

    def before(_conn, _cursor, statement, _params, _context, _many) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", before)


# --- actions, through the real forms (CSRF stays on) ---------------------------------

CSRF_RE = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def csrf_token(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def request_link(client: FlaskClient, public_id: str, address: str, next_path: str = ""):
    """Open the portal link and ask for a sign-in link; returns the response."""
    page = client.get(f"/p/{public_id}" + (f"?next={next_path}" if next_path else ""))
    return client.post(
        f"/p/{public_id}/sign-in",
        data={"csrf_token": csrf_token(page.text), "email": address, "next": next_path},
    )


def run_worker(app: Flask) -> tuple[int, int]:
    from portal import worker

    with app.app_context():
        return worker.run_once()


LINK_RE = re.compile(r"https://portal\.example\.test(/p/[\w-]+/verify/[\w-]+)")
CODE_RE = re.compile(r"\b(\d{4}-\d{4})\b")


def link_and_code(message: EmailMessage) -> tuple[str, str]:
    """The verify path and the code from a sign-in email's plain-text part."""
    text = message.get_body(preferencelist=("plain",)).get_content()
    return LINK_RE.search(text).group(1), CODE_RE.search(text).group(1)


def sign_in(client: FlaskClient, app: Flask, inbox: Inbox, public_id: str, address: str):
    """The whole journey: ask, receive, open the link, Continue. Returns the last response."""
    request_link(client, public_id, address)
    run_worker(app)
    from portal.access import canonical_email

    path, _code = link_and_code(inbox.to(canonical_email(address))[-1])
    confirm = client.get(client.get(path).headers["Location"])
    return client.post(f"/p/{public_id}/confirm", data={"csrf_token": csrf_token(confirm.text)})


def queue_emails(app: Flask, db: Session, n: int, **kwargs: Any) -> None:
    """Queue `n` plain test messages in the outbox, to user0@acme.com and on."""
    from emails import outbox
    from emails.render import Email

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
