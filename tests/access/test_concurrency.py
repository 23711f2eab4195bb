"""add_rule under concurrency: racing writers never leave overlapping rules."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence

import pytest
from flask import Flask
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from portal import db as portal_db
from portal.access import (
    AccessError,
    DuplicateRule,
    OverlappingRules,
    RuleSpec,
    add_rule,
    check_new_rule,
    parse_rule,
)
from portal.models import AccessRule, BillGroup
from tests.access.helpers import (
    STAFF,
    stored,
)

# --- concurrency ----------------------------------------------------------------------

Attempt = tuple[str, bool, bool]  # raw value, include_subdomains, fold_in


def race(app: Flask, bill_group_id: int, attempts: Sequence[Attempt]) -> list[object]:
    """Run add_rule + commit for every attempt at once, each in its own thread and session
    on the app's engine; return what each got: "added", the AccessError subclass, or any
    other exception."""
    with app.app_context():
        engine = portal_db.engine()
    factory = sessionmaker(engine, expire_on_commit=False)
    barrier = threading.Barrier(len(attempts))
    outcomes: list[object] = [None] * len(attempts)

    def attempt(index: int, raw: str, include_subdomains: bool, fold_in: bool) -> None:
        try:
            with factory() as session:
                bill_group = session.get(BillGroup, bill_group_id)
                assert bill_group is not None
                barrier.wait(timeout=30)
                try:
                    add_rule(
                        session,
                        bill_group,
                        raw,
                        created_by=STAFF,
                        include_subdomains=include_subdomains,
                        fold_in=fold_in,
                    )
                    session.commit()
                except AccessError as exc:
                    outcomes[index] = type(exc)
                else:
                    outcomes[index] = "added"
        except Exception as exc:  # reported by the caller's assertions
            outcomes[index] = exc

    threads = [
        threading.Thread(target=attempt, args=(index, *args)) for index, args in enumerate(attempts)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return outcomes


def assert_rules_do_not_overlap(rules: Sequence[AccessRule]) -> None:
    """Every stored rule would pass check_new_rule against all the others."""
    for rule in rules:
        others = [other for other in rules if other is not rule]
        spec = RuleSpec(rule.kind, rule.value, rule.include_subdomains)
        assert check_new_rule(spec, others) == [], rule


def test_concurrent_identical_adds_store_one_rule(
    app: Flask, db: Session, group: BillGroup
) -> None:
    """Runs on the SQLite file database, and on PostgreSQL under -m db."""
    outcomes = race(app, group.id, [("AP@acme.com", False, False)] * 8)
    assert Counter(outcomes) == {"added": 1, DuplicateRule: 7}, outcomes
    db.expire_all()
    assert stored(db, group) == {("email", "ap@acme.com", False)}


def test_concurrent_domain_and_address_adds_never_overlap(
    app: Flask, db: Session, group: BillGroup
) -> None:
    """Runs on SQLite too, where FOR UPDATE is a no-op and add_rule takes the write lock."""
    for _round in range(6):
        outcomes = race(
            app, group.id, [("acme.com", False, False), ("ap@acme.com", False, False)] * 4
        )
        assert Counter(outcomes) in (
            {"added": 1, DuplicateRule: 7},  # the domain won: the other domains are duplicates
            {"added": 1, DuplicateRule: 3, OverlappingRules: 4},  # the address won
        ), outcomes
        db.expire_all()
        rules = db.scalars(select(AccessRule).where(AccessRule.bill_group_id == group.id)).all()
        assert_rules_do_not_overlap(rules)
        db.execute(delete(AccessRule).where(AccessRule.bill_group_id == group.id))
        db.commit()


# Deselected (not skipped) by conftest when PORTAL_TEST_DATABASE_URL is unset.
postgres_only = pytest.mark.postgres


@postgres_only
def test_concurrent_identical_adds_store_one_rule_on_postgresql(
    app: Flask, db: Session, group: BillGroup
) -> None:
    assert db.get_bind().dialect.name == "postgresql"
    for attempts in (
        [("acme.com", False, False)] * 8,
        [("acme.org", True, True)] * 8,
        [("cfo@acme-holdings.com", False, False)] * 8,
    ):
        outcomes = race(app, group.id, attempts)
        assert Counter(outcomes) == {"added": 1, DuplicateRule: 7}, outcomes
    db.expire_all()
    assert stored(db, group) == {
        ("domain", "acme.com", False),
        ("domain", "acme.org", True),
        ("email", "cfo@acme-holdings.com", False),
    }


@postgres_only
@pytest.mark.parametrize(
    "attempts",
    [
        [("acme.com", False, False), ("ap@acme.com", False, False)] * 4,
        [("acme.com", False, True), ("ap@acme.com", False, False), ("cfo@acme.com", False, False)]
        * 3,
        [
            ("acme.com", True, False),
            ("eu.acme.com", False, False),
            ("ap@eu.acme.com", False, False),
            ("acme.com", True, True),
        ]
        * 2,
    ],
    ids=["domain vs address", "fold in vs addresses", "subdomains vs subdomain"],
)
def test_concurrent_overlapping_adds_never_store_overlapping_rules(
    app: Flask, db: Session, group: BillGroup, attempts: list[Attempt]
) -> None:
    assert db.get_bind().dialect.name == "postgresql"
    for _round in range(12):
        outcomes = race(app, group.id, attempts)
        assert all(outcome in ("added", DuplicateRule, OverlappingRules) for outcome in outcomes), (
            outcomes
        )
        assert outcomes.count("added") >= 1
        db.expire_all()
        rules = db.scalars(select(AccessRule).where(AccessRule.bill_group_id == group.id)).all()
        # a fold-in that won may have removed address rules added before it
        assert 1 <= len(rules) <= outcomes.count("added")
        assert_rules_do_not_overlap(rules)
        db.execute(delete(AccessRule).where(AccessRule.bill_group_id == group.id))
        db.commit()


@pytest.mark.parametrize(
    ("raw", "subdomains"),
    [("x.corp-mail.example.com", False), ("example.com", True), ("corp-mail.example.com", False)],
)
def test_extra_providers_are_refused_at_under_and_over_their_domain(raw, subdomains):
    """A configured provider that is itself a subdomain must not leak through a rule for
    a subdomain of it, or through a subdomains rule for its parent."""
    with pytest.raises(AccessError, match="public email provider"):
        parse_rule(raw, subdomains, extra_providers=["corp-mail.example.com"])
    assert parse_rule("example.com", False, ["corp-mail.example.com"]).value == "example.com"
