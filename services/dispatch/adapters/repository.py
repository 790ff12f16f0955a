"""Repository of dispatch's message ledger: every query dispatch makes lives here."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import JSON, String, bindparam, func, insert, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatch.adapters.tables import messages, sink
from services.dispatch.domain.messages import Outcome
from shared.db.types import UtcDateTime


class MessageLedger:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def statuses(
        self, message_ids: Iterable[str]
    ) -> dict[str, tuple[str, int, datetime | None]]:
        """Status, attempts and (held) not-before of the messages already in the ledger."""
        ids = list(message_ids)
        if not ids:
            return {}
        rows = await self._session.execute(
            select(
                messages.c.message_id,
                messages.c.status,
                messages.c.attempts,
                messages.c.not_before,
            ).where(messages.c.message_id.in_(ids))
        )
        return {r.message_id: (r.status, r.attempts, r.not_before) for r in rows}

    async def release(self, message_id: str, *, at: datetime) -> bool:
        """Take a held message back for sending; True for the one process whose update won."""
        result = cast(
            CursorResult[Any],
            await self._session.execute(
                update(messages)
                .where(messages.c.message_id == message_id, messages.c.status == "held")
                .values(status="sending", updated_at=at)
            ),
        )
        return bool(result.rowcount)

    async def due_held(self, *, now: datetime, limit: int) -> list[dict[str, Any]]:
        """Requests of held messages whose time has come, oldest first."""
        rows = await self._session.execute(
            select(messages.c.request)
            .where(messages.c.status == "held", messages.c.not_before <= now)
            .order_by(messages.c.not_before)
            .limit(limit)
        )
        return [r.request for r in rows if r.request is not None]

    async def next_held(self) -> datetime | None:
        rows = await self._session.execute(
            select(messages.c.not_before)
            .where(messages.c.status == "held")
            .order_by(messages.c.not_before)
            .limit(1)
        )
        return rows.scalar_one_or_none()

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
                "provider": o.provider,
                "not_before": o.not_before,
                "request": o.request,
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
        provider=func.coalesce(bindparam("provider", type_=String), messages.c.provider),
        not_before=bindparam("not_before", type_=UtcDateTime()),
        request=bindparam("request", type_=JSON),
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
