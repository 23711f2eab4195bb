"""portal.locks.lock_bill_group: a second writer of the same bill group waits for the
first to commit, on SQLite and on PostgreSQL; other bill groups and readers do not."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from portal.locks import lock_bill_group
from portal.models import BillGroup
from tests.factories import make_bill_group, make_invoice

HOLD = 0.4


def _bill_groups(db: Session, count: int) -> list[int]:
    ids = [make_bill_group(db).id for _ in range(count)]
    db.commit()
    return ids


def _hold_then_commit(app: Flask, group_id: int, locked: threading.Event) -> None:
    with app.extensions["portal.db"]() as db:
        lock_bill_group(db, group_id)
        locked.set()
        time.sleep(HOLD)
        db.commit()


def _while_held(app: Flask, group_id: int, work: Callable[[Session], None]) -> float:
    """How long `work` takes in a second session (then committed), while a first holds
    the bill group's lock."""
    locked = threading.Event()
    holder = threading.Thread(target=_hold_then_commit, args=(app, group_id, locked))
    holder.start()
    assert locked.wait(5)
    start = time.monotonic()
    with app.extensions["portal.db"]() as db:
        work(db)
        db.commit()
    waited = time.monotonic() - start
    holder.join()
    return waited


def test_a_second_writer_waits_for_the_first_to_commit(app: Flask, db: Session) -> None:
    (group_id,) = _bill_groups(db, 1)
    assert _while_held(app, group_id, lambda other: lock_bill_group(other, group_id)) >= HOLD * 0.75


@pytest.mark.postgres
def test_other_bill_groups_are_not_held_up_on_postgres(app: Flask, db: Session) -> None:
    held, free = _bill_groups(db, 2)
    assert _while_held(app, held, lambda other: lock_bill_group(other, free)) < HOLD / 2


@pytest.mark.postgres
def test_rows_that_reference_the_bill_group_can_be_inserted_meanwhile(
    app: Flask, db: Session
) -> None:
    """NO KEY UPDATE: the foreign key check of an insert (KEY SHARE) does not wait."""
    (group_id,) = _bill_groups(db, 1)

    def insert(other: Session) -> None:
        make_invoice(other, other.get(BillGroup, group_id))

    assert _while_held(app, group_id, insert) < HOLD / 2


def test_the_lock_ends_with_a_rollback(app: Flask, db: Session) -> None:
    (group_id,) = _bill_groups(db, 1)
    lock_bill_group(db, group_id)
    db.rollback()
    with app.extensions["portal.db"]() as other:
        start = time.monotonic()
        lock_bill_group(other, group_id)
        other.commit()
    assert time.monotonic() - start < HOLD / 2
