"""Wires the journey service: catalog, consumer of the events topic, outbox relay."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.journey.adapters.files import load_catalog
from services.journey.adapters.tables import outbox
from services.journey.domain.catalog import JourneyCatalog
from services.journey.service_layer.handlers import handle_events
from services.journey.service_layer.uow import JourneyUnitOfWork
from services.journey.settings import JourneySettings
from shared.bus.ports import Bus, ConsumedRecord
from shared.clock import Clock
from shared.consumer import ConsumerRunner
from shared.contracts.events import EventEnvelope
from shared.contracts.topics import EVENTS
from shared.db.engine import session_factory
from shared.errors import PoisonRecordError
from shared.outbox import OutboxRelay
from shared.worker import ConsumerWorker

GROUP = "journey"


def decode_events(records: Sequence[ConsumedRecord]) -> list[EventEnvelope]:
    events = []
    for record in records:
        try:
            events.append(EventEnvelope.from_json(record.value))
        except ValidationError as exc:
            raise PoisonRecordError(f"not an EventEnvelope v1: {exc.errors()[:3]}") from exc
    return events


class JourneyWorker(ConsumerWorker):
    def __init__(
        self,
        settings: JourneySettings,
        *,
        engine: AsyncEngine,
        bus: Bus,
        clock: Clock,
        catalog: JourneyCatalog | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog if catalog is not None else load_catalog(settings.journeys_dir)
        self._sessions = session_factory(engine)
        self._clock = clock
        publisher = bus.publisher()
        super().__init__(
            name=GROUP,
            relay=OutboxRelay(engine=engine, table=outbox, publisher=publisher),
            runner=ConsumerRunner(
                group=GROUP,
                consumer=bus.consumer(group=GROUP, topics=[EVENTS]),
                handler=self.handle,
                dead_letters=publisher,
                max_records=settings.journey_batch_size,
                poll_timeout=settings.journey_poll_timeout,
                max_attempts=settings.journey_max_attempts,
            ),
        )

    async def handle(self, records: Sequence[ConsumedRecord]) -> None:
        events = decode_events(records)
        async with JourneyUnitOfWork(self._sessions) as uow:
            await handle_events(uow, events, catalog=self.catalog, now=self._clock.now())
        self.relay.notify()
