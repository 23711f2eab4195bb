"""change feed in commit order: change_seq on every listed record, one change counter

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 11:20:00.000000

The API's lists were in (updated_at, id) order, and updated_at is stamped at flush, so a
poll could read a later stamp before an earlier one had committed and then skip it. Each
listed record now carries the number of the transaction that last changed it, taken at
commit from change_counter (see portal/models/changes.py). Existing rows are numbered in
their old (updated_at, id) order, so a first read after the upgrade keeps that order,
and the counter starts after the largest number given out.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Every table an API list reads: the models with ChangeMixin.
FEED_TABLES = (
    "accounts",
    "bill_groups",
    "contacts",
    "entities",
    "invoices",
    "payment_methods",
    "payments",
    "products",
    "subscriptions",
)


def upgrade() -> None:
    op.create_table(
        "change_counter",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_change_counter_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_change_counter")),
    )
    for table in FEED_TABLES:
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(sa.Column("change_seq", sa.BigInteger(), nullable=True))
        # UPDATE ... FROM: PostgreSQL, and SQLite since 3.33.
        op.execute(
            f"UPDATE {table} SET change_seq = numbered.n FROM "
            f"(SELECT id, row_number() OVER (ORDER BY updated_at, id) AS n FROM {table}) "
            f"AS numbered WHERE {table}.id = numbered.id"
        )
        with op.batch_alter_table(table) as batch_op:
            batch_op.create_index(f"ix_{table}_change_seq", ["change_seq"], unique=False)
    largest = " UNION ALL ".join(f"SELECT max(change_seq) AS n FROM {t}" for t in FEED_TABLES)
    op.execute(
        "INSERT INTO change_counter (id, value) "
        f"SELECT 1, coalesce(max(n), 0) FROM ({largest}) AS largest"
    )


def downgrade() -> None:
    for table in reversed(FEED_TABLES):
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_index(f"ix_{table}_change_seq")
            batch_op.drop_column("change_seq")
    op.drop_table("change_counter")
