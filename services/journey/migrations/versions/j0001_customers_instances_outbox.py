"""Customers, journey instances, processed events, outbox.

Revision ID: j0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "j0001"
down_revision = None
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "journey_customers",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(210), primary_key=True),
        sa.Column("traits", sa.JSON, nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "journey_instances",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("customer_id", sa.String(210), nullable=False),
        sa.Column("journey_id", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("step", sa.String(100), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("entered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_journey_instances_customer",
        "journey_instances",
        ["workspace_id", "customer_id", "journey_id"],
    )
    op.create_table(
        "journey_processed_events",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("event_id", sa.String(200), primary_key=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "journey_outbox",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("key", sa.String(500), nullable=False),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("headers", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    for table in (
        "journey_outbox",
        "journey_processed_events",
        "journey_instances",
        "journey_customers",
    ):
        op.drop_table(table)
