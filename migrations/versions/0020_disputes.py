"""disputes: questions and disputes customers raise on invoices, their threads of
messages and attached files (in the database, so every host serves them), and the
invoice's open dispute kind for the badge

Revision ID: 0020_disputes
Revises: 0019_reminders
Create Date: 2026-12-04 02:13:40.133203
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import portal.db

revision: str = "0020_disputes"
down_revision: str | None = "0019_reminders"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "disputes",
        sa.Column(
            "bill_group_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "invoice_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "kind",
            sa.Enum(
                "question",
                "dispute",
                name="dispute_kind",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("reason", sa.String(length=40), nullable=True),
        sa.Column(
            "state",
            sa.Enum(
                "open",
                "resolved",
                name="dispute_state",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("raised_by", sa.String(length=254), nullable=False),
        sa.Column("resolved_by", sa.String(length=254), nullable=True),
        sa.Column("resolved_at", portal.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("change_seq", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "(state = 'open') = (resolved_at IS NULL)",
            name=op.f("ck_disputes_resolved_when_resolved"),
        ),
        sa.CheckConstraint(
            "kind = 'question' OR reason IS NOT NULL", name=op.f("ck_disputes_reason")
        ),
        sa.ForeignKeyConstraint(
            ["bill_group_id"],
            ["bill_groups.id"],
            name=op.f("fk_disputes_bill_group_id_bill_groups"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_disputes_invoice_id_invoices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_disputes")),
    )
    with op.batch_alter_table("disputes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_disputes_change_seq"), ["change_seq"], unique=False)
        batch_op.create_index("ix_disputes_group", ["bill_group_id", "state"], unique=False)
        batch_op.create_index(batch_op.f("ix_disputes_invoice_id"), ["invoice_id"], unique=False)
        batch_op.create_index("ix_disputes_state", ["state", "id"], unique=False)
        batch_op.create_index(
            "uq_disputes_open",
            ["invoice_id"],
            unique=True,
            sqlite_where=sa.text("state = 'open'"),
            postgresql_where=sa.text("state = 'open'"),
        )

    op.create_table(
        "dispute_messages",
        sa.Column(
            "dispute_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("author_type", sa.String(length=16), nullable=False),
        sa.Column("author", sa.String(length=254), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.CheckConstraint(
            "author_type IN ('customer', 'staff', 'api')",
            name=op.f("ck_dispute_messages_author_type"),
        ),
        sa.ForeignKeyConstraint(
            ["dispute_id"],
            ["disputes.id"],
            name=op.f("fk_dispute_messages_dispute_id_disputes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispute_messages")),
    )
    with op.batch_alter_table("dispute_messages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_dispute_messages_dispute_id"), ["dispute_id"], unique=False
        )

    op.create_table(
        "dispute_attachments",
        sa.Column(
            "message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("filename", sa.String(length=200), nullable=False),
        sa.Column("content_type", sa.String(length=40), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.CheckConstraint("size > 0", name=op.f("ck_dispute_attachments_size")),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["dispute_messages.id"],
            name=op.f("fk_dispute_attachments_message_id_dispute_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispute_attachments")),
        sa.UniqueConstraint("message_id", name=op.f("uq_dispute_attachments_message_id")),
    )
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "open_dispute_kind",
                sa.Enum(
                    "question",
                    "dispute",
                    name="invoice_open_dispute_kind",
                    native_enum=False,
                    create_constraint=True,
                    length=24,
                ),
                nullable=True,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_invoices_invoice_open_dispute_kind"), type_="check")
        batch_op.drop_column("open_dispute_kind")

    op.drop_table("dispute_attachments")
    with op.batch_alter_table("dispute_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dispute_messages_dispute_id"))

    op.drop_table("dispute_messages")
    with op.batch_alter_table("disputes", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_disputes_open",
            sqlite_where=sa.text("state = 'open'"),
            postgresql_where=sa.text("state = 'open'"),
        )
        batch_op.drop_index("ix_disputes_state")
        batch_op.drop_index(batch_op.f("ix_disputes_invoice_id"))
        batch_op.drop_index("ix_disputes_group")
        batch_op.drop_index(batch_op.f("ix_disputes_change_seq"))

    op.drop_table("disputes")
