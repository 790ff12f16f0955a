"""The suppression list: addresses that must not get mail, per workspace and channel.

Scope ``all`` (hard bounce, complaint, manual) stops every message; scope ``marketing``
(unsubscribe) stops marketing only, so order confirmations still arrive. An address is stored
normalised (``shared.contracts.addresses``) and, for email, lower-cased (mailbox providers treat
local parts case-insensitively), so ``Ana@Example.com`` and ``ana@example.com`` are one entry.
A stronger scope is never weakened: an unsubscribe after a complaint keeps ``all``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

from sqlalchemy import delete, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatch.adapters.tables import suppressions
from shared.db.upsert import insert_for

Scope = Literal["all", "marketing"]
Reason = Literal["hard_bounce", "complaint", "unsubscribe", "manual"]

SCOPE_OF: dict[str, Scope] = {
    "hard_bounce": "all",
    "complaint": "all",
    "manual": "all",
    "unsubscribe": "marketing",
}


@dataclass(frozen=True, slots=True)
class Suppression:
    workspace_id: str
    channel: str
    address: str
    scope: Scope
    reason: str
    source: str
    customer_id: str | None
    created_at: datetime

    def blocks(self, category: str) -> bool:
        return self.scope == "all" or category == "marketing"


_CHUNK = 500


def key(channel: str, address: str) -> str:
    """The address as the list keys it."""
    return address.lower() if channel == "email" else address


class Suppressions:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def find(
        self, workspace_id: str, channel: str, addresses: Iterable[str]
    ) -> dict[str, Suppression]:
        """The suppressions among ``addresses`` of one workspace and channel, by their key."""
        found = await self.find_many((workspace_id, channel, a) for a in addresses)
        return {address: entry for (_, _, address), entry in found.items()}

    async def find_many(
        self, keys: Iterable[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], Suppression]:
        """Suppressions by (workspace, channel, address), for a batch across workspaces: one
        query per workspace and channel, the addresses in chunks (SQLite bounds the number of
        bound parameters and the depth of an expression)."""
        wanted: dict[tuple[str, str], set[str]] = {}
        for w, c, a in keys:
            wanted.setdefault((w, c), set()).add(key(c, a))
        found: dict[tuple[str, str, str], Suppression] = {}
        for (workspace_id, channel), addresses in sorted(wanted.items()):
            ordered = sorted(addresses)
            for start in range(0, len(ordered), _CHUNK):
                rows = await self._session.execute(
                    select(suppressions).where(
                        suppressions.c.workspace_id == workspace_id,
                        suppressions.c.channel == channel,
                        suppressions.c.address.in_(ordered[start : start + _CHUNK]),
                    )
                )
                for r in rows:
                    found[(r.workspace_id, r.channel, r.address)] = Suppression(**r._mapping)
        return found

    async def add(
        self,
        *,
        workspace_id: str,
        channel: str,
        address: str,
        reason: Reason,
        source: str,
        customer_id: str | None,
        at: datetime,
    ) -> bool:
        """Suppress an address; True when it was not suppressed (with this scope) before."""
        scope = SCOPE_OF[reason]
        address = key(channel, address)
        row: dict[str, Any] = {
            "workspace_id": workspace_id,
            "channel": channel,
            "address": address,
            "scope": scope,
            "reason": reason,
            "source": source,
            "customer_id": customer_id,
            "created_at": at,
        }
        insert = insert_for(self._session.get_bind().dialect.name)
        result = cast(
            CursorResult[Any],
            await self._session.execute(insert(suppressions).values(row).on_conflict_do_nothing()),
        )
        if result.rowcount:
            return True
        if scope == "all":
            # Strengthen a marketing-only entry (an unsubscribe, then a hard bounce).
            upgraded = cast(
                CursorResult[Any],
                await self._session.execute(
                    update(suppressions)
                    .where(
                        suppressions.c.workspace_id == workspace_id,
                        suppressions.c.channel == channel,
                        suppressions.c.address == address,
                        suppressions.c.scope == "marketing",
                    )
                    .values(scope="all", reason=reason, source=source, created_at=at)
                ),
            )
            return bool(upgraded.rowcount)
        return False

    async def remove(
        self, workspace_id: str, channel: str, address: str, *, reasons: Iterable[str] | None = None
    ) -> bool:
        """Lift a suppression (a re-subscribe lifts only ``unsubscribe``); True when one was."""
        address = key(channel, address)
        where = [
            suppressions.c.workspace_id == workspace_id,
            suppressions.c.channel == channel,
            suppressions.c.address == address,
        ]
        if reasons is not None:
            where.append(suppressions.c.reason.in_(list(reasons)))
        result = cast(
            CursorResult[Any], await self._session.execute(delete(suppressions).where(*where))
        )
        return bool(result.rowcount)

    async def list(
        self, workspace_id: str, *, channel: str | None = None, after: str = "", limit: int = 100
    ) -> list[Suppression]:
        where = [suppressions.c.workspace_id == workspace_id, suppressions.c.address > after]
        if channel is not None:
            where.append(suppressions.c.channel == channel)
        rows = await self._session.execute(
            select(suppressions).where(*where).order_by(suppressions.c.address).limit(limit)
        )
        return [Suppression(**r._mapping) for r in rows]
