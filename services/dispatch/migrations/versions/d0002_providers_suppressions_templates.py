"""Provider configuration, suppression list, webhook dedupe, versioned templates, discount codes,
workspace settings; held messages (quiet hours) in the ledger.

Revision ID: d0002
Revises: d0001
"""

import sqlalchemy as sa
from alembic import op

revision = "d0002"
down_revision = "d0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dispatch_messages") as batch:
        batch.add_column(sa.Column("not_before", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("request", sa.JSON, nullable=True))
        batch.create_index("ix_dispatch_messages_held", ["status", "not_before"])
    op.create_table(
        "dispatch_providers",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("channel", sa.String(8), primary_key=True),
        sa.Column("role", sa.String(8), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("rate_per_second", sa.Float, nullable=True),
        sa.Column("concurrency", sa.Integer, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "dispatch_suppressions",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("channel", sa.String(8), primary_key=True),
        sa.Column("address", sa.String(320), primary_key=True),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(210), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "dispatch_webhook_events",
        sa.Column("provider", sa.String(32), primary_key=True),
        sa.Column("event_id", sa.String(200), primary_key=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_dispatch_webhook_events_received", "dispatch_webhook_events", ["received_at"]
    )
    op.create_table(
        "dispatch_templates",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("template_id", sa.String(100), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("parts", sa.JSON, nullable=False),
        sa.Column("sample", sa.JSON, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "dispatch_discount_codes",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("pool", sa.String(64), primary_key=True),
        sa.Column("code", sa.String(100), primary_key=True),
        sa.Column("message_id", sa.String(100), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "ix_dispatch_discount_codes_free",
        "dispatch_discount_codes",
        ["workspace_id", "pool", "message_id"],
    )
    op.create_table(
        "dispatch_workspace_settings",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("dispatch_workspace_settings")
    op.drop_index("ix_dispatch_discount_codes_free", "dispatch_discount_codes")
    op.drop_table("dispatch_discount_codes")
    op.drop_table("dispatch_templates")
    op.drop_index("ix_dispatch_webhook_events_received", "dispatch_webhook_events")
    op.drop_table("dispatch_webhook_events")
    op.drop_table("dispatch_suppressions")
    op.drop_table("dispatch_providers")
    with op.batch_alter_table("dispatch_messages") as batch:
        batch.drop_index("ix_dispatch_messages_held")
        batch.drop_column("request")
        batch.drop_column("not_before")
