"""Repository of dispatch's message ledger: every query dispatch makes lives here."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatch.adapters.tables import messages, sink
from services.dispatch.domain.messages import Outcome


class MessageLedger:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def statuses(self, message_ids: Iterable[str]) -> dict[str, tuple[str, int]]:
        ids = list(message_ids)
        if not ids:
            return {}
        rows = await self._session.execute(
            select(messages.c.message_id, messages.c.status, messages.c.attempts).where(
                messages.c.message_id.in_(ids)
            )
        )
        return {r.message_id: (r.status, r.attempts) for r in rows}

    async def insert(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            await self._session.execute(insert(messages), list(rows))

    async def record(self, outcomes: Iterable[Outcome], *, at: datetime) -> None:
        """Every outcome of a batch in one executemany, not a statement per message."""
        rows = [
            {
                "id": o.message_id,
                "status": o.status,
                "attempts": o.attempts,
                "provider_message_id": o.provider_message_id,
                "error": o.error,
                "updated_at": at,
            }
            for o in outcomes
        ]
        if rows:
            await self._session.execute(_RECORD_OUTCOME, rows)


_RECORD_OUTCOME = (
    update(messages)
    .where(messages.c.message_id == bindparam("id"))
    .values(
        status=bindparam("status"),
        attempts=bindparam("attempts"),
        provider_message_id=bindparam("provider_message_id"),
        error=bindparam("error"),
        updated_at=bindparam("updated_at"),
    )
)


class SinkMessages:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def list(
        self, workspace_id: str, *, after_id: int = 0, limit: int = 100
    ) -> list[dict[str, Any]]:
        rows = await self._session.execute(
            select(sink)
            .where(sink.c.workspace_id == workspace_id, sink.c.id > after_id)
            .order_by(sink.c.id)
            .limit(limit)
        )
        return [dict(r._mapping) for r in rows]
