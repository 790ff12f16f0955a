"""The timer poller: fires the durable timers of journeys (ends of waits, wait_for timeouts,
held sends, birthdays, inactivity) when they come due.

Each round leases a batch of due timers in one short transaction (``leased_until``; on
PostgreSQL with SKIP LOCKED, so replicas take different batches), then fires them in a second
transaction that locks the customers' rows, re-reads their state and fires only the timers that
are still due there. An event of the same customer handled meanwhile either committed first
(the timer it moved or cleared is skipped) or waits for the lock. A replica that dies holding a
lease leaves the timers to the others once the lease passes. On SQLite a round keeps the
process's write turn from its lease to its firing (``shared.db.turns``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy.ext.asyncio import AsyncEngine

from services.journey.domain.catalog import JourneyCatalog
from services.journey.service_layer.handlers import (
    RULES_BACKFILL,
    Fired,
    backfill_schedules,
    handle_timers,
    reconsider_customers,
)
from services.journey.service_layer.sources import Catalogs, IntelSource, Policies, StaticIntel
from services.journey.service_layer.uow import JourneyUnitOfWork
from shared.clock import Clock
from shared.db import turns
from shared.db.engine import session_factory

log = logging.getLogger(__name__)

TIMERS_DUE = Gauge(
    "ciclo_journey_timers_due", "Journey timers due and not yet fired (backlog of the poller)"
)
TIMERS_FIRED = Counter("ciclo_journey_timers_fired_total", "Journey timers fired")
BACKLOG_EVERY = timedelta(seconds=5)
LATENESS = Histogram(
    "ciclo_journey_timer_lateness_seconds",
    "How long after its due time a timer fired",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


class TimerPoller:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        clock: Clock,
        catalogs: Catalogs,
        policies: Policies,
        intel: IntelSource | None = None,
        batch_size: int,
        poll_interval: float,
        lease: float,
        after_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self._engine = engine
        self._sessions = session_factory(engine)
        self._clock = clock
        self._catalogs = catalogs
        self._policies = policies
        self._intel = intel or StaticIntel()
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._lease = timedelta(seconds=lease)
        self._after_commit = after_commit
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._backfilled: JourneyCatalog | None = None
        self._counted_at = datetime.min.replace(tzinfo=UTC)

    def notify(self) -> None:
        """A timer may have been set earlier than the poller's next look: look now."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                fired = await self.fire_due()
            except Exception:
                log.exception("timer round failed; retrying")
                fired = 0
                await self._pause(self._poll_interval * 5)
            if fired == 0:
                try:
                    if await self.backfill_step() or await self.rules_step():
                        continue
                except Exception:
                    log.exception("schedule backfill failed; retrying")
                try:
                    idle = await self._idle_for()
                except Exception:
                    # The database is down: an error here must not end the poller, or no timer
                    # of this replica fires again once the database is back.
                    log.exception("timer round failed; retrying")
                    idle = self._poll_interval * 5
                await self._pause(idle)

    async def fire_due(self) -> int:
        """One round: lease due timers and fire them. Returns how many were leased.

        On SQLite the round keeps the process's write turn from the lease to the firing
        (``shared.db.turns.held``): beside an event consumer writing flat out, each of the two
        transactions would otherwise wait for one of its batches."""
        async with turns.held(self._engine):
            return await self._fire_due()

    async def _fire_due(self) -> int:
        now = self._clock.now()
        async with JourneyUnitOfWork(self._sessions) as uow:
            leased = await uow.timers.lease_due(now=now, limit=self._batch_size, lease=self._lease)
            # Counting a large backlog is costly exactly when the poller is behind: at most
            # once per BACKLOG_EVERY seconds, and never when this round took all that was due.
            if len(leased) < self._batch_size:
                TIMERS_DUE.set(0)
            elif now - self._counted_at >= BACKLOG_EVERY:
                self._counted_at = now
                TIMERS_DUE.set(max(await uow.timers.count_due(now=now) - len(leased), 0))
            await uow.commit()
        if not leased:
            return 0
        fired = [Fired(*row) for row in leased]
        catalog = await self._catalogs.current()
        workspaces = {f.workspace_id for f in fired}
        policies = await self._policies.for_workspaces(workspaces)
        intel = await self._intel.for_workspaces(workspaces)
        now = self._clock.now()
        async with JourneyUnitOfWork(self._sessions) as uow:
            count = await handle_timers(
                uow, fired, catalog=catalog, policies=policies, now=now, intel=intel
            )
        for f in fired:
            LATENESS.observe(max((now - f.due_at).total_seconds(), 0.0))
        TIMERS_FIRED.inc(count)
        self._after_commit()
        return len(leased)

    async def backfill_step(self) -> bool:
        """When idle: schedule birthdays (and other date triggers) for one chunk of the
        customers who were there before a dated journey was published. True when a chunk was
        done and more may follow."""
        catalog = await self._catalogs.current()
        if catalog is self._backfilled:
            return False
        wanted = [(scope or "", j.id, j.version) for scope, j in catalog.dated()]
        async with JourneyUnitOfWork(self._sessions) as uow:
            unfinished = await uow.backfills.unfinished(wanted)
            if unfinished:
                key, after = unfinished[0]
                upcoming = await uow.states.keys_after(key[0] or None, after, self._batch_size)
            await uow.commit()
        if not unfinished:
            self._backfilled = catalog
            return False
        policies = await self._policies.for_workspaces({w for w, _ in upcoming})
        async with JourneyUnitOfWork(self._sessions) as uow:
            await backfill_schedules(
                uow,
                key=key,
                after=after,
                keys=upcoming,
                catalog=catalog,
                policies=policies,
                now=self._clock.now(),
                limit=self._batch_size,
            )
        return True

    async def rules_step(self) -> bool:
        """When idle: decide band, stage and segments anew for one chunk of the customers of a
        workspace whose rules changed (a segment saved, new score rules). True when a chunk was
        done and more may follow."""
        async with JourneyUnitOfWork(self._sessions) as uow:
            revisions = await uow.backfills.rule_revisions()
            unfinished = await uow.backfills.unfinished(
                [(w, RULES_BACKFILL, revision) for w, revision in revisions]
            )
            if unfinished:
                (workspace, _, revision), after = unfinished[0]
                upcoming = await uow.states.keys_after(workspace, after, self._batch_size)
            await uow.commit()
        if not unfinished:
            return False
        intel = (await self._intel.for_workspaces([workspace]))[workspace]
        if intel.revision < revision:
            return False  # the cached rules are older than the change: after the next refresh
        catalog = await self._catalogs.current()
        policies = await self._policies.for_workspaces([workspace])
        async with JourneyUnitOfWork(self._sessions) as uow:
            await reconsider_customers(
                uow,
                workspace=workspace,
                revision=revision,
                after=after,
                keys=upcoming,
                catalog=catalog,
                policies=policies,
                intel=intel,
                now=self._clock.now(),
                limit=self._batch_size,
            )
        self._after_commit()
        return True

    async def _idle_for(self) -> float:
        """Sleep until the next timer is due, but no longer than the poll interval."""
        async with JourneyUnitOfWork(self._sessions) as uow:
            due = await uow.timers.next_due()
        if due is None:
            return self._poll_interval
        wait = (due - self._clock.now()).total_seconds()
        if wait <= 0:
            return self._poll_interval  # due but leased by another replica
        return min(wait, self._poll_interval)

    async def _pause(self, seconds: float) -> None:
        if seconds <= 0:
            return
        self._wake.clear()
        if self._stopping.is_set():
            return  # stop() came during the round: its wake-up was just cleared
        waiter: Awaitable[bool] = self._wake.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter, timeout=seconds)
