"""Repository of dispatch's message ledger: every query dispatch makes lives here."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import JSON, String, bindparam, case, delete, func, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatch.adapters.tables import erasures, messages, sink
from services.dispatch.domain.messages import Outcome
from shared.db import bulk
from shared.db.types import UtcDateTime
from shared.db.upsert import insert_for

_CHUNK = 500  # ids per IN list: within SQLite's and PostgreSQL's bound-parameter limits


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

    async def forget(self, message_ids: Iterable[str]) -> None:
        """Delete these messages' rows (their customer was erased meanwhile)."""
        ids = list(message_ids)
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            await self._session.execute(delete(messages).where(messages.c.message_id.in_(chunk)))

    async def insert(self, rows: Sequence[dict[str, Any]]) -> None:
        await bulk.insert_rows(self._session, messages, rows)

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


Customer = tuple[str, str]  # workspace id, customer id


def erased_subject(workspace_id: str, customer_id: str) -> str:
    """How ``dispatch_erasures`` names an erased customer: not the id itself, which the
    erasure removed everywhere else."""
    return hashlib.sha256(f"{workspace_id}:{customer_id}".encode()).hexdigest()


class ErasedCustomers:
    """The customers erased lately, each with the time of the erasure request: a message
    requested for them up to that time is not sent."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def cutoffs(self, customers: Iterable[Customer]) -> dict[Customer, datetime]:
        """For those of ``customers`` that were erased: when (the latest erasure)."""
        by_subject = {erased_subject(w, c): (w, c) for w, c in customers}
        subjects = list(by_subject)
        found: dict[Customer, datetime] = {}
        for start in range(0, len(subjects), _CHUNK):
            rows = await self._session.execute(
                select(erasures.c.subject, erasures.c.erased_at).where(
                    erasures.c.subject.in_(subjects[start : start + _CHUNK])
                )
            )
            found.update((by_subject[r.subject], r.erased_at) for r in rows)
        return found

    async def add(self, workspace_id: str, customer_ids: Iterable[str], *, at: datetime) -> None:
        """Remember the customers as erased at ``at`` (a later erasure moves the time on)."""
        rows = [
            {"subject": erased_subject(workspace_id, c), "erased_at": at}
            for c in dict.fromkeys(customer_ids)
        ]
        if not rows:
            return
        stmt = insert_for(self._session.get_bind().dialect.name)(erasures)
        await self._session.execute(
            stmt.on_conflict_do_update(
                index_elements=["subject"],
                set_={
                    "erased_at": case(
                        (stmt.excluded.erased_at > erasures.c.erased_at, stmt.excluded.erased_at),
                        else_=erasures.c.erased_at,
                    )
                },
            ),
            rows,
        )

    async def prune(self, *, before: datetime) -> int:
        """Forget erasures older than ``before``; how many."""
        result = cast(
            CursorResult[Any],
            await self._session.execute(delete(erasures).where(erasures.c.erased_at < before)),
        )
        return int(result.rowcount or 0)


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
