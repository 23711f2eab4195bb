"""Change numbers in commit order: what makes the API's change feeds complete.

Every record the API lists carries `change_seq`, the number of the transaction that last
wrote it. A row is inserted or updated with NULL there; just before the transaction
commits, it takes the next number from the one-row change counter and stamps it on its
rows. Taking the number updates the counter row, which locks it until the commit ends:
on PostgreSQL the next writer waits for that row lock (and sees the number committed
before it), and on SQLite the transaction has held the database's write lock since its
first write, which the counter's update takes anyway if nothing else has. Either way
no two transactions hold numbers at once, and PostgreSQL makes a commit visible before
it lets go of its locks. So numbers become visible in commit order, and a reader
that can see change N can see every change before it: a feed read in (change_seq, id)
order never finds an earlier number committed behind its back, as it could with
`updated_at`, stamped at flush by transactions that then commit in any order.

The cost is that commits which change feed records queue on the counter for the last
statements of their transaction, never longer: the holder only writes rows it has
already locked, so the wait cannot deadlock. Writes that touch no feed record (sign-in,
outbox, audit alone) never take it. Writes through a Session are covered, statements
included (the listeners below are on the Session class); SQL sent on a bare connection
is not, and must not change listed records.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Integer, event, inspect, null, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import (
    Mapped,
    Mapper,
    ORMExecuteState,
    Session,
    SessionTransaction,
    UOWTransaction,
    mapped_column,
)
from sqlalchemy.orm.attributes import set_committed_value

from portal.db import Base

# An id above every row's, for a position after the whole of a change (see api.base).
AFTER_ALL = 2**63 - 1
_TOUCHED = "portal.changes.tables"


class ChangeMixin:
    """A record in an API change feed: numbered when its transaction commits."""

    # NULL only inside the writing transaction: every commit numbers its rows.
    change_seq: Mapped[int | None] = mapped_column(
        BigInteger, default=None, onupdate=null(), index=True
    )


class ChangeCounter(Base):
    """The one row holding the last change number given out."""

    __tablename__ = "change_counter"
    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, nullable=False)


def last_change(db: Session) -> int:
    """The last change number committed: every change up to it is visible now."""
    return db.scalar(select(ChangeCounter.value)) or 0


def _take_number(db: Session) -> int:
    """The next change number, holding the counter until this transaction ends. An
    upsert, so a database whose counter row is missing (emptied by tests) starts one."""
    dialect = db.connection().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(ChangeCounter)
        .values(id=1, value=1)
        .on_conflict_do_update(index_elements=["id"], set_={"value": ChangeCounter.value + 1})
        .returning(ChangeCounter.value)
    )
    return db.execute(statement).scalar_one()


def _note(db: Session, mapper: Mapper[Any] | None) -> None:
    if mapper is not None and issubclass(mapper.class_, ChangeMixin):
        touched: set[str] = db.info.setdefault(_TOUCHED, set())
        touched.add(mapper.tables[0].name)


@event.listens_for(Session, "before_flush")
def _note_flushed(db: Session, _flush: UOWTransaction, _instances: Any) -> None:
    """Which feed tables this transaction writes: only those are numbered at commit."""
    for record in db.new:
        _note(db, inspect(record).mapper)
    for record in db.dirty:
        if db.is_modified(record):
            _note(db, inspect(record).mapper)


@event.listens_for(Session, "do_orm_execute")
def _note_statement(state: ORMExecuteState) -> None:
    """An UPDATE or INSERT statement run through the session sets NULL too."""
    if state.is_update or state.is_insert:
        _note(state.session, state.bind_mapper)


@event.listens_for(Session, "before_commit")
def _number_changes(db: Session) -> None:
    if db.in_nested_transaction():
        return  # a savepoint: the number is taken once, when the transaction commits
    db.flush()
    touched: set[str] = db.info.pop(_TOUCHED, set())
    if not touched:
        return
    number = _take_number(db)
    connection = db.connection()
    for name in sorted(touched):
        table = Base.metadata.tables[name]
        connection.execute(
            update(table)
            .where(table.c.change_seq.is_(None))
            # Named, so that updated_at's onupdate leaves this row's time alone.
            .values(change_seq=number, updated_at=table.c.updated_at)
        )
    # The session keeps its objects past the commit: give them their number too.
    for record in db.identity_map.values():
        if isinstance(record, ChangeMixin) and "change_seq" in record.__dict__:
            if record.change_seq is None:
                set_committed_value(record, "change_seq", number)


@event.listens_for(Session, "after_transaction_end")
def _forget_tables(db: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # rolled back, or committed after numbering
        db.info.pop(_TOUCHED, None)
