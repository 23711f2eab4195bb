"""The migrations build exactly the schema the models describe, and can be undone.

The test app here never calls create_all: the schema comes from `flask db upgrade` only.
Each check runs on SQLite; with PORTAL_TEST_DATABASE_URL set it also runs on PostgreSQL,
in a throwaway database (`-m db`).
"""

from __future__ import annotations

import os
import pprint
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask
from sqlalchemy import Engine, inspect, make_url, text

import portal.cli
import portal.models  # noqa: F401  (registers every table on Base.metadata)
from portal import ROOT
from portal import db as portal_db
from portal.app import create_app
from portal.cli import alembic_config, db_group
from portal.db import Base, make_engine
from portal.models import Account
from tests.conftest import POSTGRES_URL, TEST_CONFIG

MODEL_TABLES = set(Base.metadata.tables)


@contextmanager
def migration_app(url: str) -> Iterator[Flask]:
    """An app on `url` whose database starts empty: no create_all."""
    app = create_app({**TEST_CONFIG, "DATABASE_URL": url})
    try:
        # The db commands are plain click commands: the runner needs an app context.
        with app.app_context():
            yield app
    finally:
        with app.app_context():
            portal_db.engine().dispose()


def flask_db(app: Flask, *args: str) -> str:
    result = app.test_cli_runner().invoke(args=["db", *args])
    command = " ".join(["flask db", *args])
    assert result.exit_code == 0, f"{command}: {result.exception!r}\n{result.output}"
    return result.output


def table_names(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def versions(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.scalars(text("SELECT version_num FROM alembic_version")))


def model_diff(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)


def schema(engine: Engine) -> dict[str, dict[str, Any]]:
    """Everything reflection sees, including what autogenerate does not compare: CHECK
    constraints, partial-index predicates and foreign-key actions."""
    inspector = inspect(engine)
    snapshot: dict[str, dict[str, Any]] = {}
    for table in sorted(inspector.get_table_names()):
        if table == "alembic_version":
            continue
        snapshot[table] = {
            "columns": sorted(
                (c["name"], repr(c["type"]), c["nullable"], str(c.get("default")))
                for c in inspector.get_columns(table)
            ),
            "primary_key": inspector.get_pk_constraint(table),
            "foreign_keys": sorted(
                (
                    fk["name"],
                    tuple(fk["constrained_columns"]),
                    fk["referred_table"],
                    tuple(fk["referred_columns"]),
                    sorted((fk.get("options") or {}).items()),
                )
                for fk in inspector.get_foreign_keys(table)
            ),
            "unique": sorted(
                (u["name"], tuple(u["column_names"]))
                for u in inspector.get_unique_constraints(table)
            ),
            "indexes": sorted(
                (
                    i["name"],
                    tuple(i["column_names"]),
                    bool(i["unique"]),
                    sorted((k, str(v)) for k, v in (i.get("dialect_options") or {}).items()),
                )
                for i in inspector.get_indexes(table)
            ),
            "checks": sorted(
                (c["name"], c["sqltext"]) for c in inspector.get_check_constraints(table)
            ),
        }
    return snapshot


def model_schema(url: str) -> dict[str, dict[str, Any]]:
    """The schema create_all builds from the models, in the empty database at `url`."""
    engine = make_engine(url)
    try:
        Base.metadata.create_all(engine)
        return schema(engine)
    finally:
        engine.dispose()


def check_migrations(url: str, reference_url: str) -> None:
    """Upgrade, compare with the models, downgrade to nothing, upgrade again."""
    expected = model_schema(reference_url)
    with migration_app(url) as app:
        engine = portal_db.engine()
        assert table_names(engine) == set(), "the database must start empty"
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert head is not None

        assert "Database is at head." in flask_db(app, "upgrade")
        assert table_names(engine) == MODEL_TABLES | {"alembic_version"}
        assert versions(engine) == [head]
        diff = model_diff(engine)
        assert diff == [], "models and migrations differ:\n" + pprint.pformat(diff)
        migrated = schema(engine)
        assert migrated == expected, "reflected schemas differ:\n" + pprint.pformat(
            {
                table: {
                    part: (migrated[table][part], expected.get(table, {}).get(part))
                    for part in migrated[table]
                    if migrated[table][part] != expected.get(table, {}).get(part)
                }
                for table in migrated
                if migrated[table] != expected.get(table)
            }
        )

        flask_db(app, "downgrade", "base")
        assert table_names(engine) == {"alembic_version"}
        assert versions(engine) == []

        flask_db(app, "upgrade")
        assert table_names(engine) == MODEL_TABLES | {"alembic_version"}
        assert versions(engine) == [head]
        assert model_diff(engine) == []
        assert schema(engine) == expected


def test_migrations_match_the_models_on_sqlite(tmp_path):
    check_migrations(f"sqlite:///{tmp_path / 'migrated.db'}", f"sqlite:///{tmp_path / 'models.db'}")


@contextmanager
def throwaway_database(url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database next to the one at `url`, dropped afterwards."""
    name = f"portal_mig_{secrets.token_hex(6)}"
    engine = make_engine(url)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(url).set(database=name).render_as_string(hide_password=False)
        finally:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


@pytest.mark.db
@pytest.mark.postgres
def test_migrations_match_the_models_on_postgresql():
    assert POSTGRES_URL is not None
    with throwaway_database(POSTGRES_URL) as url, throwaway_database(POSTGRES_URL) as reference:
        check_migrations(url, reference)


def check_change_numbers_backfilled(url: str) -> None:
    """0007 numbers the records already there in the feed's old order, (updated_at, id),
    and the counter carries on after them: the next commit's number is larger."""
    with migration_app(url) as app:
        flask_db(app, "upgrade", "0006")
        engine = portal_db.engine()
        with engine.begin() as connection:
            # Ids 1, 2, 3 from the database, changed on the 3rd, 1st and 2nd.
            for row_id, day in ((1, 3), (2, 1), (3, 2)):
                connection.execute(
                    text(
                        "INSERT INTO accounts (name, created_at, updated_at) "
                        "VALUES (:name, :at, :at)"
                    ),
                    {"name": f"Account {row_id}", "at": f"2026-11-0{day} 09:00:00"},
                )
        flask_db(app, "upgrade")
        with engine.connect() as connection:
            numbered = connection.execute(text("SELECT id, change_seq FROM accounts ORDER BY id"))
            assert numbered.all() == [(1, 3), (2, 1), (3, 2)]
            assert connection.scalar(text("SELECT value FROM change_counter")) == 3

        session = portal_db.session()
        renamed = session.get(Account, 2)
        assert renamed is not None
        renamed.name = "Renamed"
        session.add(Account(name="New"))
        session.commit()
        with engine.connect() as connection:
            numbered = connection.execute(text("SELECT name, change_seq FROM accounts ORDER BY id"))
            assert numbered.all() == [
                ("Account 1", 3),
                ("Renamed", 4),
                ("Account 3", 2),
                ("New", 4),
            ]


def test_existing_records_are_numbered_in_feed_order_on_sqlite(tmp_path):
    check_change_numbers_backfilled(f"sqlite:///{tmp_path / 'portal.db'}")


@pytest.mark.db
@pytest.mark.postgres
def test_existing_records_are_numbered_in_feed_order_on_postgresql():
    assert POSTGRES_URL is not None
    with throwaway_database(POSTGRES_URL) as url:
        check_change_numbers_backfilled(url)


def test_every_model_table_is_created_by_the_migrations(tmp_path):
    # Not vacuous: the models are all registered.
    assert {"entities", "bill_groups", "invoices", "invoice_lines", "payment_methods"} <= (
        MODEL_TABLES
    )
    with migration_app(f"sqlite:///{tmp_path / 'portal.db'}") as app:
        flask_db(app, "upgrade")
        created = table_names(portal_db.engine())

    assert created - {"alembic_version"} == MODEL_TABLES
    assert "alembic_version" in created


def test_db_current_and_history_show_the_head(tmp_path):
    with migration_app(f"sqlite:///{tmp_path / 'portal.db'}") as app:
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        flask_db(app, "upgrade")
        current = flask_db(app, "current")
        history = flask_db(app, "history")

    assert head is not None
    assert head in current and "(head)" in current
    assert f"-> {head} (head)" in history
    assert "<base> -> " in history


def test_the_flask_command_runs_the_migrations(tmp_path: Path):
    """The real entry point, which pushes the app context itself."""
    url = f"sqlite:///{tmp_path / 'portal.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PORTAL_", "FLASK_"))}
    env["PORTAL_DATABASE_URL"] = url
    command = [sys.executable, "-m", "flask", "--app", "wsgi", "--debug", "db"]

    upgrade = subprocess.run(
        [*command, "upgrade"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert upgrade.returncode == 0, upgrade.stderr
    assert "Database is at head." in upgrade.stdout

    engine = make_engine(url)
    try:
        assert table_names(engine) == MODEL_TABLES | {"alembic_version"}
    finally:
        engine.dispose()


SUBCOMMANDS = sorted(db_group.commands)


def test_the_db_group_has_the_documented_subcommands():
    assert {"current", "downgrade", "history", "revision", "upgrade"} <= set(SUBCOMMANDS)


def test_flask_db_help():
    app = create_app({**TEST_CONFIG, "DATABASE_URL": "sqlite://"})
    result = app.test_cli_runner().invoke(args=["db", "--help"])

    assert result.exit_code == 0, result.output
    assert "Database migrations (Alembic)." in result.output
    for name in SUBCOMMANDS:
        assert name in result.output


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_flask_db_subcommand_help(name):
    app = create_app({**TEST_CONFIG, "DATABASE_URL": "sqlite://"})
    result = app.test_cli_runner().invoke(args=["db", name, "--help"])

    assert result.exit_code == 0, result.output
    assert f"db {name} [OPTIONS]" in result.output
    summary = (db_group.commands[name].help or "").splitlines()[0]
    assert summary and summary in " ".join(result.output.split())


def check_existing_rules_keep_full_access(url: str) -> None:
    """0016 gives every rule already there the billing manager's role, domain rules too:
    nobody loses, on upgrade, what they could do before. New rules get the kind's
    default (portal.access), which the column's server default does not decide."""
    from tests.factories import make_bill_group

    with migration_app(url) as app:
        flask_db(app, "upgrade")
        session = portal_db.session()
        group = make_bill_group(session)
        session.commit()
        group_id = group.id
        flask_db(app, "downgrade", "0015_subscription_changes")
        engine = portal_db.engine()
        with engine.begin() as connection:
            for kind, value in (("domain", "acme.com"), ("email", "cfo@acme-holdings.com")):
                connection.execute(
                    text(
                        "INSERT INTO access_rules (bill_group_id, kind, value, "
                        "include_subdomains, created_by, created_at) "
                        "VALUES (:group, :kind, :value, false, 'old', '2026-11-01 09:00:00')"
                    ),
                    {"group": group_id, "kind": kind, "value": value},
                )
        flask_db(app, "upgrade")
        with engine.connect() as connection:
            roles = connection.execute(text("SELECT value, role FROM access_rules ORDER BY id"))
            assert roles.all() == [
                ("acme.com", "billing_manager"),
                ("cfo@acme-holdings.com", "billing_manager"),
            ]


def test_existing_rules_keep_full_access_on_sqlite(tmp_path):
    check_existing_rules_keep_full_access(f"sqlite:///{tmp_path / 'portal.db'}")


@pytest.mark.db
@pytest.mark.postgres
def test_existing_rules_keep_full_access_on_postgresql():
    assert POSTGRES_URL is not None
    with throwaway_database(POSTGRES_URL) as url:
        check_existing_rules_keep_full_access(url)
