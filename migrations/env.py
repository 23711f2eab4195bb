"""Alembic environment: the URL comes from the app's DATABASE_URL via portal.cli."""

from alembic import context

import portal.models  # noqa: F401  (registers every table on Base.metadata)
from portal.db import Base, make_engine

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=True,
        compare_type=True,
    )
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Batch mode rebuilds a table by copy, drop and rename. With foreign keys enforced,
        # dropping a table that other rows point at fails (any downgrade that rebuilds
        # entities with a bill group in the database), so they are off for the run, as
        # Alembic's batch documentation advises, and checked once at the end instead. The
        # pragma is a no-op inside a transaction, so it goes on the bare DBAPI connection.
        _sqlite_pragma(connection, "PRAGMA foreign_keys = OFF")
    try:
        with context.begin_transaction():
            context.run_migrations()
            if sqlite:
                dangling = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                if dangling:
                    raise RuntimeError(f"the migration left rows with no parent: {dangling[:5]}")
    finally:
        if sqlite:
            _sqlite_pragma(connection, "PRAGMA foreign_keys = ON")


def _sqlite_pragma(connection, statement: str) -> None:
    cursor = connection.connection.cursor()
    try:
        cursor.execute(statement)
    finally:
        cursor.close()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
