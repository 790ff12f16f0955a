"""Tables of the ingest service (its own schema and migration chain)."""

from __future__ import annotations

from sqlalchemy import MetaData

metadata = MetaData()
