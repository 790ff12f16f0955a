"""The body of every component's Alembic ``env.py``.

Each component (tenancy, ingest, journey, dispatch) keeps its own migration chain and its own
version table, so the services can share one database or use separate ones. :mod:`shared.db.migrate`
hands the connection in through ``config.attributes``; there is no alembic.ini.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import MetaData


def run_migrations(target_metadata: MetaData, *, version_table: str) -> None:
    connection: Any = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through `ciclo migrate` (shared.db.migrate)")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=version_table,
        render_as_batch=connection.dialect.name == "sqlite",
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()
