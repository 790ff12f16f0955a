"""Repositories of the journey service: every query it makes lives here, batch-shaped."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.journey.adapters.tables import customers, instances, processed_events
from services.journey.domain.engine import Instance
from services.journey.domain.profile import Profile


class ProcessedEvents:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def seen(self, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        keys = list(keys)
        if not keys:
            return set()
        t = processed_events
        rows = await self._session.execute(
            select(t.c.workspace_id, t.c.event_id).where(
                tuple_(t.c.workspace_id, t.c.event_id).in_(keys)
            )
        )
        return {(r.workspace_id, r.event_id) for r in rows}

    async def mark(self, keys: Iterable[tuple[str, str]], *, at: datetime) -> None:
        rows = [{"workspace_id": w, "event_id": e, "processed_at": at} for w, e in keys]
        if rows:
            await self._session.execute(insert(processed_events), rows)


class Profiles:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def load(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Profile]:
        keys = list(set(keys))
        if not keys:
            return {}
        t = customers
        rows = await self._session.execute(
            select(t).where(tuple_(t.c.workspace_id, t.c.customer_id).in_(keys))
        )
        return {
            (r.workspace_id, r.customer_id): Profile(
                workspace_id=r.workspace_id,
                customer_id=r.customer_id,
                traits=dict(r.traits),
                first_seen_at=r.first_seen_at,
                last_seen_at=r.last_seen_at,
                stored=True,
            )
            for r in rows
        }

    async def save(self, profiles: Iterable[Profile]) -> None:
        new: list[dict[str, Any]] = []
        for p in profiles:
            values = {"traits": p.traits, "last_seen_at": p.last_seen_at}
            if p.stored:
                await self._session.execute(
                    update(customers)
                    .where(
                        customers.c.workspace_id == p.workspace_id,
                        customers.c.customer_id == p.customer_id,
                    )
                    .values(**values)
                )
            else:
                new.append(
                    {
                        "workspace_id": p.workspace_id,
                        "customer_id": p.customer_id,
                        "first_seen_at": p.first_seen_at,
                        **values,
                    }
                )
        if new:
            await self._session.execute(insert(customers), new)


class Instances:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def entered(self, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str, str]]:
        """(workspace, customer, journey_id) for every journey those customers ever entered."""
        keys = list(set(keys))
        if not keys:
            return set()
        t = instances
        rows = await self._session.execute(
            select(t.c.workspace_id, t.c.customer_id, t.c.journey_id)
            .where(tuple_(t.c.workspace_id, t.c.customer_id).in_(keys))
            .distinct()
        )
        return {(r.workspace_id, r.customer_id, r.journey_id) for r in rows}

    async def add(self, new: Iterable[Instance]) -> None:
        rows = [
            {
                "workspace_id": i.workspace_id,
                "run_id": i.run_id,
                "customer_id": i.customer_id,
                "journey_id": i.journey_id,
                "version": i.version,
                "step": i.step,
                "status": i.status,
                "entered_at": i.entered_at,
                "updated_at": i.updated_at,
            }
            for i in new
        ]
        if rows:
            await self._session.execute(insert(instances), rows)
