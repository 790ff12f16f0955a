"""Tables of the tenancy component."""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Index, MetaData, String, Table

from shared.db.types import UtcDateTime

metadata = MetaData()

workspaces = Table(
    "tenancy_workspaces",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
)

api_keys = Table(
    "tenancy_api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("workspace_id", String(64), ForeignKey("tenancy_workspaces.id"), nullable=False),
    Column("scope", String(16), nullable=False),
    Column("prefix", String(24), nullable=False),
    Column("hash", String(64), nullable=False, unique=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("revoked_at", UtcDateTime(), nullable=True),
    Index("ix_tenancy_api_keys_workspace", "workspace_id"),
)
