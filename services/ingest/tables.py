"""Tables of the ingest service (its own schema and migration chain).

Ingest is stateless for events (the bus is its store); these tables serve the commerce webhooks:
per-workspace signing secrets, the deliveries already published (dedupe), and which customer
placed an order (a Shopify refund names its order but not its customer).
"""

from __future__ import annotations

from sqlalchemy import Column, Index, MetaData, String, Table

from shared.db.types import UtcDateTime

metadata = MetaData()

webhook_secrets = Table(
    "ingest_webhook_secrets",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("source", String(32), primary_key=True),
    # In clear: verifying an HMAC needs the key itself (a hash would not do). Listings never
    # select this column.
    Column("secret", String(500), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)

webhook_deliveries = Table(
    "ingest_webhook_deliveries",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("source", String(32), primary_key=True),
    Column("topic", String(100), primary_key=True),
    Column("delivery_id", String(200), primary_key=True),
    Column("received_at", UtcDateTime(), nullable=False),
    Index("ix_ingest_webhook_deliveries_received", "received_at"),
)

webhook_orders = Table(
    "ingest_webhook_orders",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("source", String(32), primary_key=True),
    Column("order_id", String(200), primary_key=True),
    Column("customer_id", String(200), nullable=True),
    Column("anonymous_id", String(200), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
)
