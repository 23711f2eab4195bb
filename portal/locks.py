"""The per-bill-group lock: writes that read, decide and write again (rules, billing
contact, default payment method) hold it, so two concurrent requests cannot both decide
on what they read before the other wrote.

PostgreSQL takes a row lock on the bill group. SQLite has no row locks and ignores
FOR UPDATE; worse, pysqlite opens a transaction only before the first INSERT, UPDATE or
DELETE, so a SELECT ... FOR UPDATE there would run outside any transaction and hold
nothing. A no-op UPDATE of the row opens the transaction and takes the database's write
lock, which a second writer waits for (the engine's busy timeout).
"""

from __future__ import annotations

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from portal.models import BillGroup


def lock_bill_group(db: Session, bill_group_id: int) -> None:
    """Hold the bill group's lock until the caller's transaction ends."""
    if db.get_bind().dialect.name == "sqlite":
        db.execute(text("UPDATE bill_groups SET id = id WHERE id = :id"), {"id": bill_group_id})
        return
    # NO KEY UPDATE: conflicts with itself, so writers queue, but not with the KEY SHARE
    # lock that inserting a row referencing the bill group takes, so those do not wait.
    db.execute(
        select(BillGroup.id).where(BillGroup.id == bill_group_id).with_for_update(key_share=True)
    )
