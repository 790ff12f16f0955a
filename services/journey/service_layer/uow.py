"""The journey service's unit of work: one transaction holding its repositories and outbox."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.journey.adapters.repository import (
    Backfills,
    CustomerStates,
    Identities,
    ProcessedEvents,
    Timers,
)
from services.journey.adapters.state_cache import StateCache
from services.journey.adapters.tables import outbox
from shared.bus.ports import OutgoingRecord
from shared.db.uow import SqlUnitOfWork
from shared.outbox import add_to_outbox


class JourneyUnitOfWork(SqlUnitOfWork):
    processed: ProcessedEvents
    states: CustomerStates
    timers: Timers
    backfills: Backfills
    identities: Identities

    def __init__(
        self, sessions: async_sessionmaker[Any], *, cache: StateCache | None = None
    ) -> None:
        """``cache``: the process's ``StateCache``; states are taken from it as rows are loaded
        and put back when the transaction commits."""
        super().__init__(sessions)
        self._cache = cache

    def _bind(self, session: AsyncSession) -> None:
        self.processed = ProcessedEvents(session)
        self.states = CustomerStates(session, self._cache)
        self.timers = Timers(session)
        self.backfills = Backfills(session)
        self.identities = Identities(session)

    async def emit(self, records: Sequence[OutgoingRecord]) -> None:
        """Write records to the outbox; the relay publishes them after commit."""
        await add_to_outbox(self.session, outbox, records)

    async def commit(self) -> None:
        await super().commit()
        if self._cache is not None:
            for stamp, states in self.states.saved:
                self._cache.keep(states, stamp)
        self.states.saved.clear()

    async def rollback(self) -> None:
        self.states.saved.clear()
        await super().rollback()
