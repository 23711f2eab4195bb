"""receipts_due: succeeded payments whose receipt the worker is still to render and queue;
payment_applications.applied_by: who in the portal applied a payment as credit

Revision ID: 0011_paying_fixes
Revises: 0010_pay
Create Date: 2026-12-03 18:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_paying_fixes"
down_revision: str | None = "0010_pay"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "receipts_due",
        sa.Column(
            "payment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["payments.id"],
            name=op.f("fk_receipts_due_payment_id_payments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("payment_id", name=op.f("pk_receipts_due")),
    )
    with op.batch_alter_table("payment_applications") as batch_op:
        batch_op.add_column(sa.Column("applied_by", sa.String(length=254), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("payment_applications") as batch_op:
        batch_op.drop_column("applied_by")
    op.drop_table("receipts_due")
