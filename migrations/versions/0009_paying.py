"""paying: payment attempts, portal payments, credit notes, entity payment settings

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 14:13:27.191452
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import portal.db

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "credit_notes",
        sa.Column(
            "bill_group_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("number", sa.String(length=40), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("issue_date", sa.Date(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("amount_applied_minor", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("voided_at", portal.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("change_seq", sa.BigInteger(), nullable=True),
        sa.Column("external_id", sa.String(length=100), nullable=True),
        sa.CheckConstraint(
            "amount_applied_minor >= 0 AND amount_applied_minor <= amount_minor",
            name=op.f("ck_credit_notes_applied"),
        ),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_credit_notes_amount")),
        sa.ForeignKeyConstraint(
            ["bill_group_id"],
            ["bill_groups.id"],
            name=op.f("fk_credit_notes_bill_group_id_bill_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_notes")),
        sa.UniqueConstraint(
            "bill_group_id", "number", name=op.f("uq_credit_notes_bill_group_id_number")
        ),
        sa.UniqueConstraint("external_id", name=op.f("uq_credit_notes_external_id")),
    )
    with op.batch_alter_table("credit_notes", schema=None) as batch_op:
        batch_op.create_index(
            "ix_credit_notes_bill_group_issued", ["bill_group_id", "issue_date", "id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_credit_notes_change_seq"), ["change_seq"], unique=False
        )
        batch_op.create_index("ix_credit_notes_updated", ["updated_at", "id"], unique=False)

    op.create_table(
        "credit_applications",
        sa.Column(
            "credit_note_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "invoice_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("applied_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("applied_by", sa.String(length=254), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_credit_applications_amount")),
        sa.ForeignKeyConstraint(
            ["credit_note_id"],
            ["credit_notes.id"],
            name=op.f("fk_credit_applications_credit_note_id_credit_notes"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_credit_applications_invoice_id_invoices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_applications")),
    )
    with op.batch_alter_table("credit_applications", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_credit_applications_credit_note_id"), ["credit_note_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_credit_applications_invoice_id"), ["invoice_id"], unique=False
        )

    op.create_table(
        "payment_attempts",
        sa.Column(
            "bill_group_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "review",
                "charging",
                "requires_action",
                "processing",
                "succeeded",
                "failed",
                "expired",
                name="payment_attempt_state",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column(
            "payment_method_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("created_by", sa.String(length=254), nullable=False),
        sa.Column("expires_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", portal.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("gateway", sa.String(length=40), nullable=True),
        sa.Column("gateway_reference", sa.String(length=100), nullable=True),
        sa.Column("failure_message", sa.String(length=300), nullable=True),
        sa.Column(
            "payment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_payment_attempts_amount")),
        sa.ForeignKeyConstraint(
            ["bill_group_id"],
            ["bill_groups.id"],
            name=op.f("fk_payment_attempts_bill_group_id_bill_groups"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["payments.id"],
            name=op.f("fk_payment_attempts_payment_id_payments"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["payment_method_id"],
            ["payment_methods.id"],
            name=op.f("fk_payment_attempts_payment_method_id_payment_methods"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_attempts")),
        sa.UniqueConstraint("key", name=op.f("uq_payment_attempts_key")),
        sa.UniqueConstraint("payment_id", name=op.f("uq_payment_attempts_payment_id")),
    )
    with op.batch_alter_table("payment_attempts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_payment_attempts_bill_group_created", ["bill_group_id", "created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_payment_attempts_payment_method_id"), ["payment_method_id"], unique=False
        )
        batch_op.create_index("ix_payment_attempts_state", ["state", "updated_at"], unique=False)

    op.create_table(
        "payment_attempt_lines",
        sa.Column(
            "attempt_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "invoice_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_payment_attempt_lines_amount")),
        sa.ForeignKeyConstraint(
            ["attempt_id"],
            ["payment_attempts.id"],
            name=op.f("fk_payment_attempt_lines_attempt_id_payment_attempts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_payment_attempt_lines_invoice_id_invoices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_attempt_lines")),
        sa.UniqueConstraint(
            "attempt_id", "invoice_id", name=op.f("uq_payment_attempt_lines_attempt_id_invoice_id")
        ),
    )
    with op.batch_alter_table("payment_attempt_lines", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_payment_attempt_lines_invoice_id"), ["invoice_id"], unique=False
        )

    op.create_table(
        "gateway_events",
        sa.Column("gateway", sa.String(length=40), nullable=False),
        sa.Column("event_id", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=60), nullable=False),
        sa.Column("received_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gateway_events")),
        sa.UniqueConstraint("gateway", "event_id", name=op.f("uq_gateway_events_gateway_event_id")),
    )

    op.create_table(
        "sandbox_charges",
        sa.Column("reference", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("failure_message", sa.String(length=300), nullable=True),
        sa.Column("failure_code", sa.String(length=40), nullable=True),
        sa.Column("refunded_minor", sa.BigInteger(), nullable=False),
        sa.Column("created_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("settles_at", portal.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_sandbox_charges_amount")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sandbox_charges")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_sandbox_charges_idempotency_key")),
        sa.UniqueConstraint("reference", name=op.f("uq_sandbox_charges_reference")),
    )

    with op.batch_alter_table("bill_groups", schema=None) as batch_op:
        batch_op.add_column(sa.Column("gateway_customer_ref", sa.String(length=100), nullable=True))

    with op.batch_alter_table("entities", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "allow_partial_payments", sa.Boolean(), server_default=sa.true(), nullable=False
            )
        )
        batch_op.add_column(
            sa.Column(
                "min_partial_payment_minor", sa.BigInteger(), server_default="100", nullable=False
            )
        )
        batch_op.add_column(
            sa.Column(
                "allow_credit_application", sa.Boolean(), server_default=sa.true(), nullable=False
            )
        )
        batch_op.create_check_constraint("min_partial_payment", "min_partial_payment_minor >= 0")

    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("amount_credited_minor", sa.BigInteger(), server_default="0", nullable=False)
        )
        # A paid invoice is settled by payments and credits together.
        batch_op.drop_constraint(op.f("ck_invoices_paid_in_full"), type_="check")
        batch_op.create_check_constraint(
            "paid_in_full",
            "status <> 'paid' OR amount_paid_minor + amount_credited_minor = total_minor",
        )
        batch_op.create_check_constraint(
            "credited",
            # Only where there is credit: an overpayment alone is ck_invoices_paid's to name.
            "amount_credited_minor = 0"
            " OR (amount_credited_minor > 0"
            " AND amount_paid_minor + amount_credited_minor <= total_minor)",
        )

    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "source",
                sa.Enum(
                    "billing_system",
                    "portal",
                    "autopay",
                    name="payment_source",
                    native_enum=False,
                    create_constraint=True,
                    length=24,
                ),
                server_default="billing_system",
                nullable=False,
            )
        )
        batch_op.add_column(sa.Column("gateway", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("gateway_reference", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("failure_message", sa.String(length=300), nullable=True))
        batch_op.add_column(
            sa.Column("refunded_minor", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("created_by", sa.String(length=254), nullable=True))
        batch_op.create_unique_constraint(
            batch_op.f("uq_payments_gateway_gateway_reference"), ["gateway", "gateway_reference"]
        )
        batch_op.create_check_constraint(
            "refunded", "refunded_minor >= 0 AND refunded_minor <= amount_minor"
        )


def downgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_payments_refunded"), type_="check")
        batch_op.drop_constraint(op.f("ck_payments_payment_source"), type_="check")
        batch_op.drop_constraint(
            batch_op.f("uq_payments_gateway_gateway_reference"), type_="unique"
        )
        batch_op.drop_column("created_by")
        batch_op.drop_column("refunded_minor")
        batch_op.drop_column("failure_message")
        batch_op.drop_column("gateway_reference")
        batch_op.drop_column("gateway")
        batch_op.drop_column("source")

    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_invoices_credited"), type_="check")
        batch_op.drop_constraint(op.f("ck_invoices_paid_in_full"), type_="check")
        batch_op.create_check_constraint(
            "paid_in_full", "status <> 'paid' OR amount_paid_minor = total_minor"
        )
        batch_op.drop_column("amount_credited_minor")

    with op.batch_alter_table("entities", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_entities_min_partial_payment"), type_="check")
        batch_op.drop_column("allow_credit_application")
        batch_op.drop_column("min_partial_payment_minor")
        batch_op.drop_column("allow_partial_payments")

    with op.batch_alter_table("bill_groups", schema=None) as batch_op:
        batch_op.drop_column("gateway_customer_ref")

    with op.batch_alter_table("payment_attempt_lines", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_attempt_lines_invoice_id"))

    op.drop_table("sandbox_charges")
    op.drop_table("gateway_events")
    op.drop_table("payment_attempt_lines")
    with op.batch_alter_table("payment_attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_payment_attempts_state")
        batch_op.drop_index(batch_op.f("ix_payment_attempts_payment_method_id"))
        batch_op.drop_index("ix_payment_attempts_bill_group_created")

    op.drop_table("payment_attempts")
    with op.batch_alter_table("credit_applications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_credit_applications_invoice_id"))
        batch_op.drop_index(batch_op.f("ix_credit_applications_credit_note_id"))

    op.drop_table("credit_applications")
    with op.batch_alter_table("credit_notes", schema=None) as batch_op:
        batch_op.drop_index("ix_credit_notes_updated")
        batch_op.drop_index(batch_op.f("ix_credit_notes_change_seq"))
        batch_op.drop_index("ix_credit_notes_bill_group_issued")

    op.drop_table("credit_notes")
