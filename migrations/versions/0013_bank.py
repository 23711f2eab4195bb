"""entities: bank details for paying by bank transfer, and how the payment reference is made

Revision ID: 0013_bank
Revises: 0012_portal_sessions
Create Date: 2026-12-03 18:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_bank"
down_revision: str | None = "0012_portal_sessions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    ("bank_account_holder", 70),
    ("bank_name", 70),
    ("bank_iban", 34),
    ("bank_bic", 11),
    ("bank_account_number", 17),
    ("bank_routing_number", 9),
)


def upgrade() -> None:
    with op.batch_alter_table("entities") as batch_op:
        for name, length in COLUMNS:
            batch_op.add_column(sa.Column(name, sa.String(length), nullable=True))
        batch_op.add_column(
            sa.Column(
                "bank_reference_format",
                sa.String(20),
                nullable=False,
                server_default="invoice_number",
            )
        )
        batch_op.create_check_constraint(
            "bank_reference_format",
            "bank_reference_format IN ('invoice_number', 'group_and_invoice')",
        )


def downgrade() -> None:
    with op.batch_alter_table("entities") as batch_op:
        batch_op.drop_constraint(op.f("ck_entities_bank_reference_format"), type_="check")
        batch_op.drop_column("bank_reference_format")
        for name, _length in reversed(COLUMNS):
            batch_op.drop_column(name)
