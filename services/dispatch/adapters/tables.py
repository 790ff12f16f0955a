"""Tables of the dispatch service.

Prefix ``dispatch_``; version table ``alembic_version_dispatch``.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
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
    Column(
        "not_before",
        UtcDateTime(),
        nullable=True,
        doc="status held: when the quiet hours end and the message is tried again",
    ),
    Column("request", JSON, nullable=True, doc="status held: the MessageRequest to send later"),
    Index("ix_dispatch_messages_workspace", "workspace_id", "created_at"),
    Index("ix_dispatch_messages_held", "status", "not_before"),
)

# Per-workspace provider configuration: a primary and an optional fallback per channel. Secrets
# live in ``config`` (as the ingest webhook secrets do); the API never shows them back.
providers = Table(
    "dispatch_providers",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("channel", String(8), primary_key=True),
    Column("role", String(8), primary_key=True, doc="primary | fallback"),
    Column("kind", String(16), nullable=False, doc="sendgrid, mailgun, postmark, twilio, ..."),
    Column("config", JSON, nullable=False),
    Column("rate_per_second", Float, nullable=True),
    Column("concurrency", Integer, nullable=True),
    Column("updated_at", UtcDateTime(), nullable=False),
)

# Addresses that must not get mail: hard bounces and complaints (scope ``all``) and unsubscribes
# (scope ``marketing``). One row per workspace, channel and normalised address.
suppressions = Table(
    "dispatch_suppressions",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("channel", String(8), primary_key=True),
    Column("address", String(320), primary_key=True),
    Column("scope", String(16), nullable=False, doc="all | marketing"),
    Column("reason", String(32), nullable=False, doc="hard_bounce, complaint, unsubscribe, manual"),
    Column("source", String(64), nullable=False, doc="provider webhook, one-click, api, ..."),
    Column("customer_id", String(210), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
)

# Provider webhook events already turned into events (deduplication by the provider's id), and
# Mailgun's single-use tokens (``mailgun-token``), so a replayed webhook changes nothing.
webhook_events = Table(
    "dispatch_webhook_events",
    metadata,
    Column("provider", String(32), primary_key=True),
    Column("event_id", String(200), primary_key=True),
    Column("received_at", UtcDateTime(), nullable=False),
    Index("ix_dispatch_webhook_events_received", "received_at"),
)

# Templates saved over HTTP: every save is a new version; a message renders the latest version
# (files in templates/ are version 0, the fallback when a workspace has saved none).
templates = Table(
    "dispatch_templates",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("template_id", String(100), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("channel", String(8), nullable=False),
    Column("parts", JSON, nullable=False, doc="subject, html, text (email) or sms: Liquid source"),
    Column("sample", JSON, nullable=True, doc="sample variables used to check and preview it"),
    Column("created_at", UtcDateTime(), nullable=False),
)

# Single-use discount codes, a pool per campaign: a code is drawn once, for one message (the same
# message rendered again gets the same code), and sits in one pool of its workspace (d0004).
discount_codes = Table(
    "dispatch_discount_codes",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("pool", String(64), primary_key=True),
    Column("code", String(100), primary_key=True),
    Column("message_id", String(100), nullable=True),
    Column("claimed_at", UtcDateTime(), nullable=True),
    Column("expires_at", UtcDateTime(), nullable=True),
    Index("ix_dispatch_discount_codes_free", "workspace_id", "pool", "message_id"),
    Index("uq_dispatch_discount_codes_code", "workspace_id", "code", unique=True),
)

# Per-workspace dispatch settings: quiet hours per channel, the default time zone.
workspace_settings = Table(
    "dispatch_workspace_settings",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("settings", JSON, nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
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

# Customers erased (GDPR), by a hash of workspace and customer id: a message request for them
# that was already on the bus at the erasure is dropped instead of sent (and recorded again).
# Pruned after ``KEEP_ERASURES``, by when no such request can still be waiting.
erasures = Table(
    "dispatch_erasures",
    metadata,
    Column("subject", String(64), primary_key=True, doc="sha256 of workspace:customer, hex"),
    Column("erased_at", UtcDateTime(), nullable=False, doc="the erasure's requested_at"),
    Index("ix_dispatch_erasures_erased_at", "erased_at"),
)

outbox = outbox_table(metadata, "dispatch_outbox")
