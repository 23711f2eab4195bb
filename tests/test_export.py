"""`flask export`: what it writes reads back through `flask import` unchanged."""

from __future__ import annotations

import io
import json
import secrets
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import make_url, select, text

from portal import db as portal_db
from portal.app import create_app
from portal.db import Base, make_engine
from portal.models import (
    Account,
    AuditEvent,
    BillGroup,
    Contact,
    ContactKind,
)
from portal.sync import importer
from tests.conftest import POSTGRES_URL, TEST_CONFIG
from tests.import_helpers import (
    CONTACT,
    DATASET,
    counts,
    jsonl,
    run,
    snapshot,
    write,
)

# --- export ---------------------------------------------------------------------------


@pytest.fixture
def fresh_app(tmp_path, app) -> Iterator[Flask]:
    """A second app on an empty database of its own (on PostgreSQL, a throwaway
    database on the same server)."""
    name = None
    if POSTGRES_URL:
        name = f"portal_import_{secrets.token_hex(4)}"
        server = make_engine(POSTGRES_URL).execution_options(isolation_level="AUTOCOMMIT")
        with server.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{tmp_path / 'fresh.db'}"
    other = create_app({**TEST_CONFIG, "DATABASE_URL": url})
    with other.app_context():
        Base.metadata.create_all(portal_db.engine())
    try:
        yield other
    finally:
        with other.app_context():
            portal_db.engine().dispose()
        if name:
            with server.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            server.dispose()


def test_export_then_import_into_an_empty_database_round_trips(
    runner, db, app, fresh_app, tmp_path
):
    source = write(tmp_path, DATASET)
    assert runner.invoke(args=["import", str(source)]).exit_code == 0
    before = snapshot(db)
    assert sum(len(rows) for rows in before.values()) == len(DATASET)

    exported = tmp_path / "export.jsonl"
    result = runner.invoke(args=["export", str(exported)])
    assert result.exit_code == 0, result.output
    assert f"Exported {len(DATASET)} records" in result.output
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    order = [line["type"] for line in lines]
    assert order == sorted(order, key=importer.TYPES.index)
    assert len(lines) == len(DATASET)

    imported = fresh_app.test_cli_runner().invoke(args=["import", str(exported)])
    assert imported.exit_code == 0, imported.output
    other = fresh_app.extensions["portal.db"]()
    try:
        assert snapshot(other) == before
    finally:
        other.close()
    db.rollback()
    assert db.scalar(select(AuditEvent.detail).where(AuditEvent.action == "export.run"))


def test_export_leaves_out_records_without_an_external_id(app, db):
    run(app, db, jsonl(DATASET))
    group = db.scalar(select(BillGroup).filter_by(external_id="bg-2"))
    db.add(Account(name="No id"))
    db.add(Contact(bill_group=group, kind=ContactKind.BILLING, **CONTACT))
    group.external_id = None
    db.commit()
    stream = io.StringIO()
    with app.app_context():
        written = importer.export(db, stream, chunk=1)
    types = [json.loads(line)["type"] for line in stream.getvalue().splitlines()]
    assert written["account"] == 2 and written["bill_group"] == 1 and written["contact"] == 2
    assert types.count("account") == 2 and types.count("contact") == 2
    assert sum(written.values()) == len(types) == len(DATASET) - 1


def test_export_to_stdout_is_importable(runner, app, db):
    run(app, db, jsonl(DATASET))
    result = runner.invoke(args=["export", "-"])
    assert result.exit_code == 0
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == len(DATASET)
    again = run(app, db, "\n".join(lines))
    assert again.total("unchanged") == len(DATASET) and again.rejected == 0


def test_the_readme_example_imports(app, db):
    from portal import ROOT

    readme = (ROOT / "README.md").read_text()
    example = readme.split("### Bulk import and export", 1)[1].split("```jsonl\n", 1)[1]
    example = example.split("```", 1)[0]
    summary = run(app, db, example)
    assert summary.rejected == 0 and summary.total("created") == 3
    assert counts(db)["bill_group"] == 1


def test_plans_and_what_a_subscription_allows_round_trip(runner, db, app, fresh_app, tmp_path):
    plan = {"entity": "ent-1", "currency": "EUR", "period": "monthly"}
    subscription = DATASET[9] | {
        "data": DATASET[9]["data"]
        | {
            "plan": "plan-team",
            "quantity": 5,
            "trial_end": "2025-01-15",
            "allowed_changes": {
                "plans": ["plan-team", "plan-business"],
                "quantity_min": 2,
                "quantity_max": 50,
                "pause": True,
                "cancel_at_term_end": True,
            },
        }
    }
    assert subscription["type"] == "subscription"
    lines = [
        *DATASET[:9],
        # Before the subscription that names them, as export writes them.
        {
            "type": "plan",
            "external_id": "plan-team",
            "data": plan | {"name": "Team", "price_minor": 9900},
        },
        {
            "type": "plan",
            "external_id": "plan-business",
            "data": plan | {"name": "Business", "price_minor": 24900},
        },
        subscription,
    ]
    result = runner.invoke(args=["import", str(write(tmp_path, lines))])
    assert result.exit_code == 0, result.output
    before = snapshot(db)
    (sub,) = before["subscription"]
    assert sub["plan"] == "plan-team" and sub["allowed_changes"]["plans"] == [
        "plan-team",
        "plan-business",
    ]
    exported = tmp_path / "export.jsonl"
    assert runner.invoke(args=["export", str(exported)]).exit_code == 0
    types = [json.loads(line)["type"] for line in exported.read_text().splitlines()]
    assert types.index("plan") < types.index("subscription")
    imported = fresh_app.test_cli_runner().invoke(args=["import", str(exported)])
    assert imported.exit_code == 0, imported.output
    other = fresh_app.extensions["portal.db"]()
    try:
        assert snapshot(other) == before
    finally:
        other.close()
