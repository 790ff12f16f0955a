"""Run every component's Alembic chain up to head (``ciclo migrate``).

On PostgreSQL an advisory lock serialises concurrent runs (several replicas starting at once, or a
Helm hook racing a manual run); on SQLite ``BEGIN IMMEDIATE`` does the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from shared.db.engine import create_engine

_LOCK_ID = 0x43494C4F  # "CILO": one advisory lock for all of Ciclo's migrations


@dataclass(frozen=True)
class Component:
    name: str
    migrations: Path

    @property
    def version_table(self) -> str:
        return f"alembic_version_{self.name}"

    def config(self, connection: Any | None = None) -> Config:
        cfg = Config()
        cfg.set_main_option("script_location", str(self.migrations))
        cfg.attributes["connection"] = connection
        return cfg


async def upgrade(url: str, components: Sequence[Component]) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
            for component in components:
                await conn.run_sync(_upgrade, component)
    finally:
        await engine.dispose()


def _upgrade(connection: Any, component: Component) -> None:
    command.upgrade(component.config(connection), "head")


async def pending(url: str, components: Sequence[Component]) -> list[str]:
    """Names of the components whose database is behind their migration head."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_pending, components)
    finally:
        await engine.dispose()


def _pending(connection: Any, components: Sequence[Component]) -> list[str]:
    behind = []
    for component in components:
        ctx = MigrationContext.configure(
            connection, opts={"version_table": component.version_table}
        )
        head = ScriptDirectory.from_config(component.config()).get_current_head()
        if ctx.get_current_revision() != head:
            behind.append(component.name)
    return behind
