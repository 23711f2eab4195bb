"""portal.leases.lease: each due row goes to one worker, until its lease runs out."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from emails.outbox import LEASE, _due
from portal import clock
from portal.leases import lease
from portal.models import OutboxMessage


@pytest.fixture(autouse=True)
def _context(app: Flask) -> Iterator[None]:
    with app.app_context():  # the portal's clock
        yield


def _queue(db: Session, count: int) -> None:
    now = clock.now()
    for number in range(count):
        db.add(
            OutboxMessage(
                kind="test",
                to_address=f"u{number}@acme.com",
                subject="s",
                text_body="t",
                html_body="h",
                next_attempt_at=now,
            )
        )
    db.commit()


def _lease(db: Session, worker: str, limit: int = 5) -> list[OutboxMessage]:
    now = clock.now()
    return lease(db, OutboxMessage, _due(now), worker=worker, until=now + LEASE, limit=limit)


def test_rows_are_leased_in_id_order_up_to_the_limit(db: Session) -> None:
    _queue(db, 7)
    first = _lease(db, "a")
    assert [m.id for m in first] == sorted(m.id for m in first) and len(first) == 5
    assert {m.claimed_by for m in first} == {"a"}
    assert len(_lease(db, "b")) == 2
    assert _lease(db, "c") == []


def test_a_lease_that_ran_out_can_be_taken_again(db: Session) -> None:
    _queue(db, 1)
    (taken,) = _lease(db, "a")
    taken.claimed_until = clock.now() - dt.timedelta(seconds=1)
    db.commit()
    assert [m.claimed_by for m in _lease(db, "b")] == ["b"]


def test_racing_workers_never_share_a_row(app: Flask, db: Session) -> None:
    _queue(db, 40)
    got: dict[str, list[int]] = {}

    def work(name: str) -> None:
        with app.app_context(), app.extensions["portal.db"]() as mine:
            got[name] = [m.id for m in _lease(mine, name, limit=15)]

    workers = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    ids = [i for leased in got.values() for i in leased]
    assert len(ids) == len(set(ids)) == 40
