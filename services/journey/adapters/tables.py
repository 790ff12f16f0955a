"""Tables of the journey service.

Prefix ``journey_``; version table ``alembic_version_journey``.
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, Index, Integer, MetaData, String, Table

from shared.db.types import UtcDateTime
from shared.outbox import outbox_table

metadata = MetaData()

customers = Table(
    "journey_customers",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("customer_id", String(210), primary_key=True),
    Column("traits", JSON, nullable=False),
    Column("first_seen_at", UtcDateTime(), nullable=False),
    Column("last_seen_at", UtcDateTime(), nullable=False),
)

instances = Table(
    "journey_instances",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("run_id", String(32), primary_key=True),
    Column("customer_id", String(210), nullable=False),
    Column("journey_id", String(100), nullable=False),
    Column("version", Integer, nullable=False),
    Column("step", String(100), nullable=True),
    Column("status", String(16), nullable=False),
    Column("entered_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Index("ix_journey_instances_customer", "workspace_id", "customer_id", "journey_id"),
)

# Idempotency: an event id is recorded in the same transaction as the state it changed.
processed_events = Table(
    "journey_processed_events",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("event_id", String(200), primary_key=True),
    Column("processed_at", UtcDateTime(), nullable=False),
)

outbox = outbox_table(metadata, "journey_outbox")
