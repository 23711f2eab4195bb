"""customer roles: each access rule grants viewer or billing_manager

Rules that exist before this migration become billing_manager, whatever their kind:
today every admitted address may change billing details and pay, and an upgrade should
not take that away from anyone without staff deciding it. Only rules added after it get
the kind's default (domain → viewer, address → billing_manager; portal.access).

Revision ID: 0016_roles
Revises: 0015_subscription_changes
Create Date: 2026-12-04 02:15:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016_roles"
down_revision: str | None = "0015_subscription_changes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("access_rules", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "role",
                sa.Enum(
                    "viewer",
                    "billing_manager",
                    name="customer_role",
                    native_enum=False,
                    create_constraint=True,
                    length=24,
                ),
                server_default="billing_manager",
                nullable=False,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("access_rules", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_access_rules_customer_role"), type_="check")
        batch_op.drop_column("role")
