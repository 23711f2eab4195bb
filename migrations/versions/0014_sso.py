"""company single sign-on: a domain rule's OpenID Connect provider, and its attempts

Revision ID: 0014_sso
Revises: 0013_bank
Create Date: 2026-12-03 18:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import portal.db

revision: str = "0014_sso"
down_revision: str | None = "0013_bank"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "sso_providers",
        sa.Column("id", BigId, primary_key=True),
        sa.Column(
            "rule_id",
            BigId,
            sa.ForeignKey("access_rules.id", ondelete="CASCADE"),
            nullable=False,
            unique=True,
        ),
        sa.Column("company_name", sa.String(80), nullable=False),
        sa.Column("issuer", sa.String(500), nullable=False),
        sa.Column("client_id", sa.String(255), nullable=False),
        sa.Column("client_secret_sealed", sa.Text(), nullable=False),
        sa.Column(
            "mode",
            sa.Enum(
                "offered",
                "required",
                name="sso_mode",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("updated_by", sa.String(254), nullable=False),
        sa.Column("updated_at", portal.db.UTCDateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "sso_attempts",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("state_hash", sa.String(64), nullable=False, unique=True),
        sa.Column(
            "bill_group_id",
            BigId,
            sa.ForeignKey("bill_groups.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "provider_id",
            BigId,
            sa.ForeignKey("sso_providers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("next_path", sa.String(500), nullable=True),
        sa.Column("created_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("spent_at", portal.db.UTCDateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("sso_attempts")
    op.drop_table("sso_providers")
