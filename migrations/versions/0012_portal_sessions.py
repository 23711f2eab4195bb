"""portal sessions made through the API: one-time link tokens, allowed return origins,
and the session's "Back to" link

Revision ID: 0012_portal_sessions
Revises: 0011_paying_fixes
Create Date: 2026-12-03 18:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import portal.db

revision: str = "0012_portal_sessions"
down_revision: str | None = "0011_paying_fixes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "portal_session_tokens",
        sa.Column("bill_group_id", BigId, nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("next_path", sa.String(length=500), nullable=True),
        sa.Column("return_url", sa.String(length=2000), nullable=True),
        sa.Column("api_key_id", BigId, nullable=False),
        sa.Column("made_by", sa.String(length=254), nullable=False),
        sa.Column("created_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("spent_at", portal.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", BigId, nullable=False),
        sa.ForeignKeyConstraint(
            ["bill_group_id"],
            ["bill_groups.id"],
            name=op.f("fk_portal_session_tokens_bill_group_id_bill_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portal_session_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_portal_session_tokens_token_hash")),
    )
    op.create_index(
        "ix_portal_session_tokens_bill_group",
        "portal_session_tokens",
        ["bill_group_id", "email"],
        unique=False,
    )
    op.create_table(
        "return_origins",
        sa.Column("entity_id", BigId, nullable=False),
        sa.Column("origin", sa.String(length=300), nullable=False),
        sa.Column("created_by", sa.String(length=254), nullable=False),
        sa.Column("created_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", BigId, nullable=False),
        sa.ForeignKeyConstraint(
            ["entity_id"],
            ["entities.id"],
            name=op.f("fk_return_origins_entity_id_entities"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_return_origins")),
        sa.UniqueConstraint("entity_id", "origin", name=op.f("uq_return_origins_entity_id_origin")),
    )
    with op.batch_alter_table("customer_sessions") as batch_op:
        batch_op.add_column(sa.Column("return_url", sa.String(length=2000), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("customer_sessions") as batch_op:
        batch_op.drop_column("return_url")
    op.drop_table("return_origins")
    op.drop_index("ix_portal_session_tokens_bill_group", table_name="portal_session_tokens")
    op.drop_table("portal_session_tokens")
