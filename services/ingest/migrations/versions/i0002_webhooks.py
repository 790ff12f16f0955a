"""Commerce webhooks: signing secrets, delivery dedupe, order owners.

Revision ID: i0002
Revises: i0001
"""

import sqlalchemy as sa
from alembic import op

revision = "i0002"
down_revision = "i0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ingest_webhook_secrets",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("source", sa.String(32), primary_key=True),
        sa.Column("secret", sa.String(500), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "ingest_webhook_deliveries",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("source", sa.String(32), primary_key=True),
        sa.Column("topic", sa.String(100), primary_key=True),
        sa.Column("delivery_id", sa.String(200), primary_key=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_ingest_webhook_deliveries_received", "ingest_webhook_deliveries", ["received_at"]
    )
    op.create_table(
        "ingest_webhook_orders",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("source", sa.String(32), primary_key=True),
        sa.Column("order_id", sa.String(200), primary_key=True),
        sa.Column("customer_id", sa.String(200), nullable=True),
        sa.Column("anonymous_id", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ingest_webhook_orders")
    op.drop_index("ix_ingest_webhook_deliveries_received", table_name="ingest_webhook_deliveries")
    op.drop_table("ingest_webhook_deliveries")
    op.drop_table("ingest_webhook_secrets")
