"""The migration chains of Ciclo: tenancy plus one per service."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from shared.db.engine import create_engine
from shared.db.migrate import Component, upgrade
from shared.errors import ConfigurationError

ServiceName = Literal["ingest", "journey", "dispatch"]
ALL: tuple[ServiceName, ...] = ("ingest", "journey", "dispatch")
_ROOT = Path(__file__).resolve().parent

COMPONENTS = {
    "tenancy": Component("tenancy", _ROOT.parent / "shared" / "tenancy" / "migrations"),
    "ingest": Component("ingest", _ROOT / "ingest" / "migrations"),
    "journey": Component("journey", _ROOT / "journey" / "migrations"),
    "dispatch": Component("dispatch", _ROOT / "dispatch" / "migrations"),
}


def components_for(services: Sequence[ServiceName]) -> list[Component]:
    """Tenancy (every HTTP service authenticates) plus the given services' chains."""
    return [COMPONENTS["tenancy"], *(COMPONENTS[s] for s in services)]


async def prepare_schema(url: str, services: Sequence[ServiceName], *, auto_migrate: bool) -> None:
    """Bring the services' chains (tenancy included) to this code's schema, or check they are.

    With ``auto_migrate`` (``CICLO_AUTO_MIGRATE``, on by default) they are upgraded. Without it
    nothing is written: a schema older than the code raises a ConfigurationError naming the chains
    behind and asking for ``ciclo migrate``, so that neither a server nor a one-shot command run
    from a newer image upgrades a production database as a side effect."""
    if auto_migrate:
        await upgrade(url, components_for(services))
    elif old := await behind(url, services):
        raise ConfigurationError(
            f"the database schema is older than this version of Ciclo ({', '.join(old)}): "
            "run `ciclo migrate` first (CICLO_AUTO_MIGRATE is false)"
        )


async def behind(url: str, services: Sequence[ServiceName]) -> list[str]:
    """The services' chains (tenancy included) whose database is older than this code's head:
    never migrated, or at a revision this code knows that is not its newest. A revision it does
    not know is newer (a migration of a later version, during a rolling upgrade or a rollback)
    and not behind: this code runs against the newer schema."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_behind, components_for(services))
    finally:
        await engine.dispose()


def _behind(connection: Any, components: Sequence[Component]) -> list[str]:
    found = []
    for component in components:
        context = MigrationContext.configure(
            connection, opts={"version_table": component.version_table}
        )
        current = context.get_current_revision()
        script = ScriptDirectory.from_config(component.config())
        if current == script.get_current_head():
            continue
        if current is None or current in {r.revision for r in script.walk_revisions()}:
            found.append(f"{component.name} at {current or 'no revision'}")
    return found
