"""The journey service's unit of work: one transaction holding its repositories and outbox."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from services.journey.adapters.repository import (
    Backfills,
    CustomerStates,
    Identities,
    ProcessedEvents,
    Timers,
)
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

    def _bind(self, session: AsyncSession) -> None:
        self.processed = ProcessedEvents(session)
        self.states = CustomerStates(session)
        self.timers = Timers(session)
        self.backfills = Backfills(session)
        self.identities = Identities(session)

    async def emit(self, records: Sequence[OutgoingRecord]) -> None:
        """Write records to the outbox; the relay publishes them after commit."""
        await add_to_outbox(self.session, outbox, records)
