"""Workspaces and API keys.

Revision ID: t0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "t0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenancy_workspaces",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "tenancy_api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "workspace_id", sa.String(64), sa.ForeignKey("tenancy_workspaces.id"), nullable=False
        ),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("prefix", sa.String(24), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_tenancy_api_keys_workspace", "tenancy_api_keys", ["workspace_id"])


def downgrade() -> None:
    op.drop_table("tenancy_api_keys")
    op.drop_table("tenancy_workspaces")
