"""subscription changes: the seller's plans, what each subscription allows, the staff's
switches per entity, and the change requests (one pending per subscription)

Revision ID: 0015_subscription_changes
Revises: 0014_sso
Create Date: 2026-12-03 18:18:14.417945
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import portal.db

revision: str = "0015_subscription_changes"
down_revision: str | None = "0014_sso"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "plans",
        sa.Column(
            "entity_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("price_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column(
            "period",
            sa.Enum(
                "monthly",
                "quarterly",
                "semiannual",
                "annual",
                name="plan_period",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("change_seq", sa.BigInteger(), nullable=True),
        sa.Column("external_id", sa.String(length=100), nullable=True),
        sa.CheckConstraint("price_minor >= 0", name=op.f("ck_plans_price")),
        sa.ForeignKeyConstraint(
            ["entity_id"],
            ["entities.id"],
            name=op.f("fk_plans_entity_id_entities"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plans")),
        sa.UniqueConstraint("external_id", name=op.f("uq_plans_external_id")),
    )
    with op.batch_alter_table("plans", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_plans_change_seq"), ["change_seq"], unique=False)
        batch_op.create_index(batch_op.f("ix_plans_entity_id"), ["entity_id"], unique=False)

    op.create_table(
        "subscription_change_requests",
        sa.Column(
            "subscription_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "bill_group_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "kind",
            sa.Enum(
                "plan",
                "quantity",
                "pause",
                "resume",
                "convert_trial",
                "extend_trial",
                "cancel_at_term_end",
                "cancel_now",
                name="subscription_change_kind",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column(
            "state",
            sa.Enum(
                "requested",
                "accepted",
                "refused",
                name="subscription_change_state",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column(
            "from_plan_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column(
            "to_plan_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("from_quantity", sa.Integer(), nullable=True),
        sa.Column("to_quantity", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(length=40), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("requested_by", sa.String(length=254), nullable=False),
        sa.Column("answered_by", sa.String(length=254), nullable=True),
        sa.Column("answer_reason", sa.Text(), nullable=True),
        sa.Column("answered_at", portal.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("change_seq", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "(state = 'requested') = (answered_at IS NULL)",
            name=op.f("ck_subscription_change_requests_answered_when_answered"),
        ),
        sa.CheckConstraint(
            "to_quantity IS NULL OR to_quantity > 0",
            name=op.f("ck_subscription_change_requests_to_quantity"),
        ),
        sa.ForeignKeyConstraint(
            ["bill_group_id"],
            ["bill_groups.id"],
            name=op.f("fk_subscription_change_requests_bill_group_id_bill_groups"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["from_plan_id"],
            ["plans.id"],
            name=op.f("fk_subscription_change_requests_from_plan_id_plans"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_subscription_change_requests_subscription_id_subscriptions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["to_plan_id"],
            ["plans.id"],
            name=op.f("fk_subscription_change_requests_to_plan_id_plans"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscription_change_requests")),
    )
    with op.batch_alter_table("subscription_change_requests", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_subscription_change_requests_change_seq"), ["change_seq"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_subscription_change_requests_from_plan_id"),
            ["from_plan_id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_subscription_change_requests_group", ["bill_group_id", "state"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_subscription_change_requests_to_plan_id"), ["to_plan_id"], unique=False
        )
        batch_op.create_index(
            "uq_subscription_change_requests_pending",
            ["subscription_id"],
            unique=True,
            sqlite_where=sa.text("state = 'requested'"),
            postgresql_where=sa.text("state = 'requested'"),
        )

    op.create_table(
        "subscription_plan_options",
        sa.Column(
            "subscription_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("plan_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["plans.id"],
            name=op.f("fk_subscription_plan_options_plan_id_plans"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_subscription_plan_options_subscription_id_subscriptions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "subscription_id", "plan_id", name=op.f("pk_subscription_plan_options")
        ),
    )
    with op.batch_alter_table("subscription_plan_options", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_subscription_plan_options_plan_id"), ["plan_id"], unique=False
        )

    with op.batch_alter_table("entities", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("allow_change_plan", sa.Boolean(), server_default=sa.true(), nullable=False)
        )
        batch_op.add_column(
            sa.Column(
                "allow_change_quantity", sa.Boolean(), server_default=sa.true(), nullable=False
            )
        )
        batch_op.add_column(
            sa.Column("allow_change_pause", sa.Boolean(), server_default=sa.true(), nullable=False)
        )
        batch_op.add_column(
            sa.Column("allow_change_resume", sa.Boolean(), server_default=sa.true(), nullable=False)
        )
        batch_op.add_column(
            sa.Column(
                "allow_change_convert_trial", sa.Boolean(), server_default=sa.true(), nullable=False
            )
        )
        batch_op.add_column(
            sa.Column(
                "allow_change_extend_trial", sa.Boolean(), server_default=sa.true(), nullable=False
            )
        )
        batch_op.add_column(
            sa.Column(
                "allow_change_cancel_at_term_end",
                sa.Boolean(),
                server_default=sa.true(),
                nullable=False,
            )
        )
        batch_op.add_column(
            sa.Column(
                "allow_change_cancel_now", sa.Boolean(), server_default=sa.true(), nullable=False
            )
        )

    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "plan_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
            )
        )
        batch_op.add_column(sa.Column("quantity", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("trial_end", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("quantity_min", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("quantity_max", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("allow_cancel_now", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(
            sa.Column(
                "allow_cancel_at_term_end", sa.Boolean(), server_default=sa.false(), nullable=False
            )
        )
        batch_op.add_column(
            sa.Column("allow_pause", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(
            sa.Column("allow_resume", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(
            sa.Column(
                "allow_convert_trial", sa.Boolean(), server_default=sa.false(), nullable=False
            )
        )
        batch_op.add_column(
            sa.Column("allow_extend_trial", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.create_index(batch_op.f("ix_subscriptions_plan_id"), ["plan_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_subscriptions_plan_id_plans"),
            "plans",
            ["plan_id"],
            ["id"],
            ondelete="RESTRICT",
        )
        batch_op.create_check_constraint("quantity", "quantity IS NULL OR quantity > 0")
        batch_op.create_check_constraint(
            "quantity_range",
            "quantity_min IS NULL OR quantity_max IS NULL OR quantity_min <= quantity_max",
        )
        batch_op.create_check_constraint("quantity_min", "quantity_min IS NULL OR quantity_min > 0")


def downgrade() -> None:
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_subscriptions_quantity_min"), type_="check")
        batch_op.drop_constraint(batch_op.f("ck_subscriptions_quantity_range"), type_="check")
        batch_op.drop_constraint(batch_op.f("ck_subscriptions_quantity"), type_="check")
        batch_op.drop_constraint(batch_op.f("fk_subscriptions_plan_id_plans"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_subscriptions_plan_id"))
        batch_op.drop_column("allow_extend_trial")
        batch_op.drop_column("allow_convert_trial")
        batch_op.drop_column("allow_resume")
        batch_op.drop_column("allow_pause")
        batch_op.drop_column("allow_cancel_at_term_end")
        batch_op.drop_column("allow_cancel_now")
        batch_op.drop_column("quantity_max")
        batch_op.drop_column("quantity_min")
        batch_op.drop_column("trial_end")
        batch_op.drop_column("quantity")
        batch_op.drop_column("plan_id")

    with op.batch_alter_table("entities", schema=None) as batch_op:
        batch_op.drop_column("allow_change_cancel_now")
        batch_op.drop_column("allow_change_cancel_at_term_end")
        batch_op.drop_column("allow_change_extend_trial")
        batch_op.drop_column("allow_change_convert_trial")
        batch_op.drop_column("allow_change_resume")
        batch_op.drop_column("allow_change_pause")
        batch_op.drop_column("allow_change_quantity")
        batch_op.drop_column("allow_change_plan")

    with op.batch_alter_table("subscription_plan_options", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_subscription_plan_options_plan_id"))

    op.drop_table("subscription_plan_options")
    with op.batch_alter_table("subscription_change_requests", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_subscription_change_requests_pending",
            sqlite_where=sa.text("state = 'requested'"),
            postgresql_where=sa.text("state = 'requested'"),
        )
        batch_op.drop_index(batch_op.f("ix_subscription_change_requests_to_plan_id"))
        batch_op.drop_index("ix_subscription_change_requests_group")
        batch_op.drop_index(batch_op.f("ix_subscription_change_requests_from_plan_id"))
        batch_op.drop_index(batch_op.f("ix_subscription_change_requests_change_seq"))

    op.drop_table("subscription_change_requests")
    with op.batch_alter_table("plans", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_plans_entity_id"))
        batch_op.drop_index(batch_op.f("ix_plans_change_seq"))

    op.drop_table("plans")
