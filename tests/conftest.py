"""Fixtures: app (fresh database per test), client, runner, db session, factories.

Every test that uses the database runs on SQLite (a fresh file per test); with
PORTAL_TEST_DATABASE_URL set, `-m db` runs the same tests on PostgreSQL, where the
schema is created once and every table is emptied before each test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import text
from sqlalchemy.orm import Session

import portal.models  # noqa: F401
from portal import create_app
from portal import db as portal_db
from portal.db import Base, make_engine

POSTGRES_URL = os.environ.get("PORTAL_TEST_DATABASE_URL")
DB_FIXTURES = {"app", "db", "client", "runner"}

TEST_CONFIG = {
    "TESTING": True,
    "SECRET_KEY": "test-secret-key-" + "x" * 32,
    "PORTAL_BASE_URL": "https://portal.example.test",
    "SERVER_NAME": None,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if DB_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.db)


@pytest.fixture(scope="session")
def postgres_schema() -> Iterator[str | None]:
    """On PostgreSQL, create the schema once for the whole run."""
    if not POSTGRES_URL:
        yield None
        return
    engine = make_engine(POSTGRES_URL)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    engine.dispose()
    yield POSTGRES_URL


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


@pytest.fixture
def app(database_url: str) -> Iterator[Flask]:
    app = create_app({**TEST_CONFIG, "DATABASE_URL": database_url})
    with app.app_context():
        if database_url.startswith("sqlite"):
            Base.metadata.create_all(portal_db.engine())
    yield app
    with app.app_context():
        portal_db.engine().dispose()


@pytest.fixture
def db(app: Flask) -> Iterator[Session]:
    """The app's session inside an app context."""
    with app.app_context():
        yield portal_db.session()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()
