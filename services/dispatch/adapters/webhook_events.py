"""Repository of provider webhooks: the dedupe table ``dispatch_webhook_events`` (provider events
already turned into events, and Mailgun's used tokens), and the look-up of the messages they are
about in ``dispatch_messages``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import delete, select
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatch.adapters.tables import messages, webhook_events
from shared.db.upsert import insert_for

# Rows per statement: well inside SQLite's limit on bound parameters (32766) and PostgreSQL's
# (65535), and small enough to keep one statement quick.
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class SentMessage:
    """What an engagement event needs to know of the message it is about."""

    message_id: str
    workspace_id: str
    customer_id: str
    channel: str
    template: str
    provider: str


class WebhookEvents:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def claim(self, provider: str, event_ids: Sequence[str], *, at: datetime) -> set[str]:
        """Record provider events as handled; the ids that were not recorded before (the others
        are duplicates). Concurrent claims of one id: the second waits for the first's
        transaction and then finds the row, so exactly one of them gets it."""
        wanted = list(dict.fromkeys(event_ids))
        claimed: set[str] = set()
        insert = insert_for(self._session.get_bind().dialect.name)
        for start in range(0, len(wanted), _CHUNK):
            rows = [
                {"provider": provider, "event_id": event_id, "received_at": at}
                for event_id in wanted[start : start + _CHUNK]
            ]
            result = await self._session.execute(
                insert(webhook_events)
                .values(rows)
                .on_conflict_do_nothing()
                .returning(webhook_events.c.event_id)
            )
            claimed.update(result.scalars())
        return claimed

    async def sent_messages(self, message_ids: Iterable[str]) -> dict[str, SentMessage]:
        wanted = sorted(set(message_ids))
        found: dict[str, SentMessage] = {}
        for start in range(0, len(wanted), _CHUNK):
            rows = await self._session.execute(
                select(
                    messages.c.message_id,
                    messages.c.workspace_id,
                    messages.c.customer_id,
                    messages.c.channel,
                    messages.c.template,
                    messages.c.provider,
                ).where(messages.c.message_id.in_(wanted[start : start + _CHUNK]))
            )
            for row in rows:
                found[row.message_id] = SentMessage(**row._mapping)
        return found

    async def prune(self, *, before: datetime) -> int:
        """Forget events received before ``before``; how many rows went."""
        result = cast(
            CursorResult[Any],
            await self._session.execute(
                delete(webhook_events).where(webhook_events.c.received_at < before)
            ),
        )
        return int(result.rowcount or 0)
