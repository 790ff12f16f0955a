"""Template ids a workspace saved over HTTP (dispatch's ``dispatch_templates``), for checking the
templates a journey names.

The journey service does not import dispatch: it reads the table by name, when the table is in
its own database (the embedded mode, or services sharing one PostgreSQL database). Elsewhere only
the templates/ folder is known, and a journey naming a template saved over HTTP is refused.
"""

from __future__ import annotations

from sqlalchemy import column, inspect, select, table
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

_TEMPLATES = table("dispatch_templates", column("workspace_id"), column("template_id"))


class SavedTemplates:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._present: bool | None = None

    async def ids(self, workspace_id: str) -> set[str]:
        """The workspace's saved template ids; empty when dispatch's table is not here."""
        async with self._engine.connect() as conn:
            if self._present is None:
                self._present = await conn.run_sync(_has_table)
            if not self._present:
                return set()
            rows = await conn.execute(
                select(_TEMPLATES.c.template_id)
                .where(_TEMPLATES.c.workspace_id == workspace_id)
                .distinct()
            )
            return {str(r.template_id) for r in rows}


def _has_table(connection: Connection) -> bool:
    return inspect(connection).has_table("dispatch_templates")
