"""Journeys managed over HTTP (definitions and their versions) and workspace journey settings.

Revision ID: j0004
Revises: j0003
"""

import sqlalchemy as sa
from alembic import op

revision = "j0004"
down_revision = "j0003"
branch_labels = None
depends_on = None

_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "journey_definitions",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("journey_id", sa.String(100), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("current_version", sa.Integer, nullable=True),
        sa.Column("revision", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("updated_at", _WHEN, nullable=False),
    )
    op.create_table(
        "journey_versions",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("journey_id", sa.String(100), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("document", sa.JSON, nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("updated_at", _WHEN, nullable=False),
        sa.Column("published_at", _WHEN, nullable=True),
    )
    op.create_table(
        "journey_workspace_settings",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("live_from", _WHEN, nullable=True),
        sa.Column("max_event_age", sa.String(40), nullable=True),
        sa.Column("default_timezone", sa.String(100), nullable=True),
        sa.Column("frequency_caps", sa.JSON, nullable=True),
        sa.Column("updated_at", _WHEN, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("journey_workspace_settings")
    op.drop_table("journey_versions")
    op.drop_table("journey_definitions")
