"""alerts: the bill group's change history (old and new values, for the change-alert
emails and the customer's history page), invoice-copy recipients and their copies, and
the purpose of an address confirmation

Revision ID: 0018_alerts
Revises: 0017_switcher
Create Date: 2026-12-04 02:09:38.946415
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import portal.db

revision: str = "0018_alerts"
down_revision: str | None = "0017_switcher"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bill_group_changes",
        sa.Column(
            "bill_group_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor_type", sa.String(length=20), nullable=False),
        sa.Column("actor", sa.String(length=254), nullable=False),
        sa.Column("what", sa.String(length=60), nullable=False),
        sa.Column("changes", sa.Text(), nullable=False),
        sa.Column("page", sa.String(length=100), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.ForeignKeyConstraint(
            ["bill_group_id"],
            ["bill_groups.id"],
            name=op.f("fk_bill_group_changes_bill_group_id_bill_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bill_group_changes")),
    )
    with op.batch_alter_table("bill_group_changes", schema=None) as batch_op:
        batch_op.create_index("ix_bill_group_changes_group", ["bill_group_id", "id"], unique=False)

    op.create_table(
        "invoice_copy_recipients",
        sa.Column(
            "bill_group_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("added_by", sa.String(length=254), nullable=False),
        sa.Column("created_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", portal.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.ForeignKeyConstraint(
            ["bill_group_id"],
            ["bill_groups.id"],
            name=op.f("fk_invoice_copy_recipients_bill_group_id_bill_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_copy_recipients")),
        sa.UniqueConstraint(
            "bill_group_id", "email", name=op.f("uq_invoice_copy_recipients_bill_group_id_email")
        ),
    )
    op.create_table(
        "invoice_copies",
        sa.Column(
            "invoice_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "recipient_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("queued_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", portal.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("skipped", sa.Boolean(), nullable=False),
        sa.Column("stop_token_hash", sa.String(length=64), nullable=True),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_invoice_copies_invoice_id_invoices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["recipient_id"],
            ["invoice_copy_recipients.id"],
            name=op.f("fk_invoice_copies_recipient_id_invoice_copy_recipients"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_copies")),
        sa.UniqueConstraint("invoice_id", "email", name=op.f("uq_invoice_copies_invoice_id_email")),
        sa.UniqueConstraint("stop_token_hash", name=op.f("uq_invoice_copies_stop_token_hash")),
    )
    with op.batch_alter_table("invoice_copies", schema=None) as batch_op:
        batch_op.create_index("ix_invoice_copies_due", ["sent_at", "id"], unique=False)

    with op.batch_alter_table("contact_confirmations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "purpose", sa.String(length=20), server_default="billing_contact", nullable=False
            )
        )

    with op.batch_alter_table("notice_changes", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "change_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
            )
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_notice_changes_change_id_bill_group_changes"),
            "bill_group_changes",
            ["change_id"],
            ["id"],
            ondelete="CASCADE",
        )


def downgrade() -> None:
    with op.batch_alter_table("notice_changes", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_notice_changes_change_id_bill_group_changes"), type_="foreignkey"
        )
        batch_op.drop_column("change_id")

    with op.batch_alter_table("contact_confirmations", schema=None) as batch_op:
        batch_op.drop_column("purpose")

    with op.batch_alter_table("invoice_copies", schema=None) as batch_op:
        batch_op.drop_index("ix_invoice_copies_due")

    op.drop_table("invoice_copies")
    op.drop_table("invoice_copy_recipients")
    with op.batch_alter_table("bill_group_changes", schema=None) as batch_op:
        batch_op.drop_index("ix_bill_group_changes_group")

    op.drop_table("bill_group_changes")
