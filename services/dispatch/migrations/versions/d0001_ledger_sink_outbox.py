"""Message ledger, local sink, outbox.

Revision ID: d0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "d0001"
down_revision = None
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "dispatch_messages",
        sa.Column("message_id", sa.String(100), primary_key=True),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(210), nullable=False),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("template", sa.String(100), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("provider_message_id", sa.String(200), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_dispatch_messages_workspace", "dispatch_messages", ["workspace_id", "created_at"]
    )
    op.create_table(
        "dispatch_sink",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("message_id", sa.String(100), nullable=False),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("to", sa.String(320), nullable=False),
        sa.Column("subject", sa.Text, nullable=True),
        sa.Column("html", sa.Text, nullable=True),
        sa.Column("text", sa.Text, nullable=True),
        sa.Column("headers", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_dispatch_sink_workspace", "dispatch_sink", ["workspace_id", "id"])
    op.create_table(
        "dispatch_outbox",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("key", sa.String(500), nullable=False),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("headers", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    for table in ("dispatch_outbox", "dispatch_sink", "dispatch_messages"):
        op.drop_table(table)
