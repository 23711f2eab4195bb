"""Leasing queued rows to a worker (outbox emails, webhook deliveries): each due row goes
to exactly one worker, which has it until the lease runs out, so a worker that dies
mid-send only delays the row.

One UPDATE takes the rows and re-checks "due" on every row it changes: of two workers
racing for a row, exactly one gets it. On PostgreSQL the rows are chosen FOR UPDATE SKIP
LOCKED, so a second worker leases the next due rows rather than waiting for the same ones
and then finding them gone; SQLite runs one writer at a time, so the second UPDATE sees
the first's leases. The choice is a CTE, which PostgreSQL runs once: as a plain
IN (subquery) it may run again for every row of a nested loop, and each run, skipping the
rows the statement has just changed, would lease `limit` more.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from portal.models import OutboxMessage, WebhookDelivery

Leased = TypeVar("Leased", OutboxMessage, WebhookDelivery)


def lease(
    db: Session,
    model: type[Leased],
    due: ColumnElement[bool],
    *,
    worker: str,
    until: dt.datetime,
    limit: int,
    order_by: Sequence[ColumnElement[Any] | InstrumentedAttribute[Any]] = (),
) -> list[Leased]:
    """Lease up to `limit` rows of `model` matching `due` (which must exclude rows under
    a live lease) to `worker` until `until`, and return them in id order. Commits: a
    lease is one only once the other workers can see it."""
    chosen = (
        select(model.id)
        .where(due)
        .order_by(*order_by, model.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("due")
    )
    leased = db.scalars(
        update(model)
        .where(model.id.in_(select(chosen.c.id)), due)
        .values(claimed_by=worker, claimed_until=until)
        .returning(model.id)
        .execution_options(synchronize_session=False)
    ).all()
    db.commit()
    if not leased:
        return []
    return list(
        db.scalars(
            select(model)
            .where(model.id.in_(leased), model.claimed_by == worker)
            .order_by(model.id)
            .execution_options(populate_existing=True)
        )
    )
