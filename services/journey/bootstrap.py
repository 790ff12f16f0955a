"""Wires the journey service: journeys and workspace policies, the consumer of the events topic,
the timer poller and the outbox relay."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from services.journey.adapters.definitions import DatabaseCatalogs
from services.journey.adapters.files import load_catalog
from services.journey.adapters.intelligence_config import DatabaseIntel
from services.journey.adapters.state_cache import StateCache
from services.journey.adapters.tables import outbox
from services.journey.adapters.workspace_settings import DatabasePolicies
from services.journey.domain.catalog import JourneyCatalog
from services.journey.insights import InsightScheduler
from services.journey.service_layer.handlers import handle_events, raised_here_record
from services.journey.service_layer.sources import Catalogs, IntelSource, Policies
from services.journey.service_layer.uow import JourneyUnitOfWork
from services.journey.settings import JourneySettings
from services.journey.timer_poller import TimerPoller
from shared.bus.ports import Bus, ConsumedRecord
from shared.clock import Clock
from shared.consumer import ConsumerRunner, decode_records
from shared.contracts.events import EventEnvelope
from shared.contracts.topics import EVENTS
from shared.db.engine import session_factory
from shared.outbox import OutboxRelay
from shared.worker import ConsumerWorker, check_running, finish

GROUP = "journey"


def decode_events(records: Sequence[ConsumedRecord]) -> list[EventEnvelope]:
    return decode_records(records, EventEnvelope.from_json, "an EventEnvelope v1")


class JourneyWorker(ConsumerWorker):
    def __init__(
        self,
        settings: JourneySettings,
        *,
        engine: AsyncEngine,
        bus: Bus,
        clock: Clock,
        catalog: JourneyCatalog | None = None,
        catalogs: Catalogs | None = None,
        policies: Policies | None = None,
        intel: IntelSource | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog if catalog is not None else load_catalog(settings.journeys_dir)
        # Journeys: the files, plus each workspace's own published over HTTP; policies: each
        # workspace's settings over the configured defaults. Both reload when they change.
        self.catalogs = (
            catalogs
            if catalogs is not None
            else DatabaseCatalogs(
                engine, self.catalog, refresh_seconds=settings.journey_catalog_refresh
            )
        )
        self.policies = (
            policies
            if policies is not None
            else DatabasePolicies(
                engine, settings.default_policy(), refresh_seconds=settings.journey_catalog_refresh
            )
        )
        self.intel = (
            intel
            if intel is not None
            else DatabaseIntel(engine, refresh_seconds=settings.journey_catalog_refresh)
        )
        self._sessions = session_factory(engine)
        self._clock = clock
        self.state_cache = (
            StateCache(settings.journey_state_cache) if settings.journey_state_cache else None
        )
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
                stop_timeout=settings.bus_stop_timeout,
            ),
            stop_timeout=settings.bus_stop_timeout,
        )
        self.timers = TimerPoller(
            engine=engine,
            clock=clock,
            catalogs=self.catalogs,
            policies=self.policies,
            intel=self.intel,
            batch_size=settings.journey_timer_batch_size,
            poll_interval=settings.journey_timer_poll_interval,
            lease=settings.journey_timer_lease,
            after_commit=self.relay.notify,
        )
        self.insights = InsightScheduler(
            engine,
            clock,
            catalogs=self.catalogs,
            policies=self.policies,
            intel=self.intel,
            interval_seconds=settings.journey_insights_interval,
            batch_size=settings.journey_insights_batch_size,
            after_commit=self.relay.notify,
        )
        self._timing: asyncio.Task[None] | None = None
        self._insighting: asyncio.Task[None] | None = None

    async def handle(self, records: Sequence[ConsumedRecord]) -> None:
        # This service's own derived events come back from the events topic: already applied,
        # they are dropped before decoding (``handle_events`` drops any the headers missed).
        events = decode_events([r for r in records if not raised_here_record(r.headers)])
        if not events:
            return
        catalog = await self.catalogs.current()
        workspaces = {e.workspace_id for e in events}
        policies = await self.policies.for_workspaces(workspaces)
        intel = await self.intel.for_workspaces(workspaces)
        async with JourneyUnitOfWork(self._sessions, cache=self.state_cache) as uow:
            await handle_events(
                uow, events, catalog=catalog, policies=policies, now=self._clock.now(), intel=intel
            )
        self.relay.notify()
        self.timers.notify()

    async def start(self) -> None:
        await super().start()
        self._timing = asyncio.create_task(self.timers.run(), name=f"{self.name}-timers")
        self._insighting = asyncio.create_task(self.insights.run(), name=f"{self.name}-insights")

    async def check(self) -> None:
        await super().check()
        check_running(self._timing, self._insighting)

    async def stop(self) -> None:
        """Stop firing timers, then finish the batch in hand and drain the outbox.

        A part that ended on an error is logged and does not keep the others from stopping (see
        ``ConsumerWorker.stop``): a timer it leased fires again once its lease runs out, and an
        insight run it claimed is run again next round."""
        self.timers.stop()
        self.insights.stop()
        await finish(self._timing, "its leased timers fire again after their lease")
        await finish(self._insighting, "a run it claimed is retried next round")
        await super().stop()
