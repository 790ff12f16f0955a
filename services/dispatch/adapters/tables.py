"""Tables of the dispatch service.

Prefix ``dispatch_``; version table ``alembic_version_dispatch``.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from shared.db.types import UtcDateTime
from shared.outbox import outbox_table

metadata = MetaData()

# One row per message_id: the primary key is what makes a message go out at most once.
messages = Table(
    "dispatch_messages",
    metadata,
    Column("message_id", String(100), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("customer_id", String(210), nullable=False),
    Column("channel", String(8), nullable=False),
    Column("template", String(100), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("provider_message_id", String(200), nullable=True),
    Column("error", Text, nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Index("ix_dispatch_messages_workspace", "workspace_id", "created_at"),
)

# The local sink: what would have gone to a provider, for development and the README tour.
sink = Table(
    "dispatch_sink",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("message_id", String(100), nullable=False),
    Column("channel", String(8), nullable=False),
    Column("to", String(320), nullable=False),
    Column("subject", Text, nullable=True),
    Column("html", Text, nullable=True),
    Column("text", Text, nullable=True),
    Column("headers", JSON, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Index("ix_dispatch_sink_workspace", "workspace_id", "id"),
)

outbox = outbox_table(metadata, "dispatch_outbox")
