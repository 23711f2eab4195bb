"""switcher: access rules looked up by value (an address, a domain and its parents)
across a seller's bill groups, for the bill-group switcher and the staff access checker;
customer sessions looked up by address, for the customer's signed-in devices

Revision ID: 0017_switcher
Revises: 0016_roles
Create Date: 2026-12-04 02:20:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017_switcher"
down_revision: str | None = "0016_roles"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("access_rules", schema=None) as batch_op:
        batch_op.create_index("ix_access_rules_value_kind", ["value", "kind"], unique=False)
    with op.batch_alter_table("customer_sessions", schema=None) as batch_op:
        batch_op.create_index("ix_customer_sessions_email", ["email", "revoked_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("customer_sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_customer_sessions_email")
    with op.batch_alter_table("access_rules", schema=None) as batch_op:
        batch_op.drop_index("ix_access_rules_value_kind")
