"""``INSERT … ON CONFLICT``, which SQLAlchemy builds per dialect: the insert construct of the
database a connection talks to (PostgreSQL or SQLite, the two Ciclo runs on)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite

Insert = postgresql.Insert | sqlite.Insert


def insert_for(dialect: str) -> Callable[[Table], Insert]:
    """``insert`` of ``dialect`` (a connection's ``dialect.name``), for its ``on_conflict_*``."""
    return postgresql.insert if dialect == "postgresql" else sqlite.insert
