"""A worker's graceful stop stops every part even when one of them has died on an error: the
shutdown must not end half-way (outbox relay left running, bus and engine never closed, uvicorn's
'Application shutdown failed')."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.components import ServiceName, components_for
from services.dispatch.bootstrap import DispatchWorker
from services.dispatch.settings import DispatchSettings
from services.ingest.erasure import IngestErasures
from services.journey.bootstrap import JourneyWorker
from services.journey.settings import JourneySettings
from shared.bus.embedded import EmbeddedBus
from shared.clock import SystemClock
from shared.db.engine import create_engine
from shared.db.migrate import upgrade
from tests.fixtures.processes import REPO
from tests.fixtures.waiting import wait_for


@contextlib.asynccontextmanager
async def migrated(tmp_path: Path, service: ServiceName) -> AsyncIterator[AsyncEngine]:
    """An engine on a SQLite database at the service's schema."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'ciclo.db'}"
    await upgrade(url, components_for((service,)))
    engine = create_engine(url)
    try:
        yield engine
    finally:
        await engine.dispose()


class Broken(RuntimeError):
    pass


async def broken() -> None:
    raise Broken("the part died")


@pytest.mark.parametrize("part", ["timers", "insights"])
async def test_journey_stop_goes_on_past_a_part_that_died(
    tmp_path: Path, embedded_bus: EmbeddedBus, part: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with migrated(tmp_path, "journey") as engine:
        settings = JourneySettings(
            journeys_dir=REPO / "journeys",
            templates_dir=REPO / "templates",
            journey_poll_timeout=0.1,
            journey_insights_interval=0,  # the scheduler then waits for stop() only
        )
        worker = JourneyWorker(settings, engine=engine, bus=embedded_bus, clock=SystemClock())
        getattr(worker, part).run = broken
        await worker.start()
        task = worker._timing if part == "timers" else worker._insighting
        assert task is not None
        await wait_for(task.done, timeout=10, what=f"{part} dying")
        with pytest.raises(RuntimeError, match="stopped"):
            await worker.check()  # /readyz says so

        with caplog.at_level(logging.WARNING):
            await worker.stop()

        # Every other part was stopped all the same: the timers or insights, the consumer loop
        # and the outbox relay.
        for task in (worker._timing, worker._insighting, worker._consuming, worker._relaying):
            assert task is not None and task.done(), task
        failed = [r for r in caplog.records if r.exc_info and r.exc_info[0] is Broken]
        assert len(failed) == 1, caplog.text
        assert f"journey-{part}" in failed[0].getMessage(), caplog.text


@pytest.mark.parametrize("part", ["held", "erasures"])
async def test_dispatch_stop_goes_on_past_a_part_that_died(
    tmp_path: Path,
    embedded_bus: EmbeddedBus,
    part: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The erasure consumer gives up its batch by raising when SIGTERM meets a database outage."""
    async with migrated(tmp_path, "dispatch") as engine:
        settings = DispatchSettings(templates_dir=REPO / "templates", dispatch_poll_timeout=0.1)
        worker = DispatchWorker(settings, engine=engine, bus=embedded_bus, clock=SystemClock())
        if part == "held":
            monkeypatch.setattr(worker, "_release_loop", broken)
        else:
            monkeypatch.setattr(worker.erasures, "run", broken)
        await worker.start()
        task = worker._held if part == "held" else worker._erasing
        assert task is not None
        await wait_for(task.done, timeout=10, what=f"{part} dying")
        with pytest.raises(RuntimeError, match="stopped"):
            await worker.check()

        with caplog.at_level(logging.WARNING):
            await worker.stop()

        for other in (worker._held, worker._erasing, worker._consuming, worker._relaying):
            assert other is not None and other.done(), other
        assert worker.client.is_closed
        failed = [r for r in caplog.records if r.exc_info and r.exc_info[0] is Broken]
        assert len(failed) == 1, caplog.text
        assert task.get_name() in failed[0].getMessage(), caplog.text


@pytest.mark.parametrize("part", ["timers", "insights"])
async def test_a_stop_that_comes_during_a_round_is_not_lost(
    tmp_path: Path, embedded_bus: EmbeddedBus, part: str
) -> None:
    """stop() while the poller or the scheduler queries the database: its wake-up must not be
    cleared by the pause that follows the round (which would sleep a minute, or five)."""
    async with migrated(tmp_path, "journey") as engine:
        settings = JourneySettings(
            journeys_dir=REPO / "journeys",
            templates_dir=REPO / "templates",
            journey_timer_poll_interval=60,  # the timer poller's pause (at most 60 s)
            journey_insights_interval=3600,  # the scheduler's pause: 300 s (its check)
        )
        worker = JourneyWorker(settings, engine=engine, bus=embedded_bus, clock=SystemClock())
        component = worker.timers if part == "timers" else worker.insights

        async def round_during_which_stop_comes() -> bool | int:
            component.stop()
            return False if part == "timers" else 1  # no rules changed / a workspace failed

        if part == "timers":  # the last query of a round with nothing due
            worker.timers.rules_step = round_during_which_stop_comes  # type: ignore[method-assign,assignment]
        else:
            worker.insights.run_due = round_during_which_stop_comes  # type: ignore[method-assign]
        running = asyncio.create_task(component.run())
        done, _ = await asyncio.wait({running}, timeout=5)
        if not done:
            running.cancel()
        assert done == {running}, f"the {part} kept pausing after stop()"
        running.result()  # and it ended without an error


async def test_ingest_erasures_stop_goes_on_past_a_consumer_that_died(
    tmp_path: Path, embedded_bus: EmbeddedBus, caplog: pytest.LogCaptureFixture
) -> None:
    async with migrated(tmp_path, "ingest") as engine:
        erasures = IngestErasures(engine=engine, bus=embedded_bus)
        erasures.runner.run = broken  # type: ignore[method-assign]
        await erasures.start()

        async def dead() -> bool:
            try:
                await erasures.check()
            except RuntimeError:
                return True
            return False

        await wait_for(dead, timeout=10, what="the erasure consumer dying")
        with caplog.at_level(logging.WARNING):
            await erasures.stop()  # no Broken: the runtime goes on to close the bus
        assert "stopped on an error" in caplog.text


async def test_the_stop_deadline_setting_reaches_every_wait_on_the_bus(
    tmp_path: Path, embedded_bus: EmbeddedBus
) -> None:
    """CICLO_BUS_STOP_TIMEOUT bounds each wait of a stop on a bus that does not answer: the
    consumer loops (commit and leave), the workers (relay publish, drain) and the Kafka bus."""
    from shared.bus.factory import open_bus
    from shared.bus.kafka import KafkaBus
    from shared.settings import CommonSettings

    async with migrated(tmp_path, "journey") as engine:
        journey = JourneyWorker(
            JourneySettings(journeys_dir=REPO / "journeys", bus_stop_timeout=0.7),
            engine=engine,
            bus=embedded_bus,
            clock=SystemClock(),
        )
        dispatch = DispatchWorker(
            DispatchSettings(templates_dir=REPO / "templates", bus_stop_timeout=0.7),
            engine=engine,
            bus=embedded_bus,
            clock=SystemClock(),
        )
        try:
            waits = [journey.stop_timeout, journey.runner._stop_timeout]
            waits += [dispatch.stop_timeout, dispatch.runner._stop_timeout]
            waits.append(dispatch.erasures._stop_timeout)
            assert waits == [0.7] * 5
        finally:
            await dispatch.client.aclose()
    bus = open_bus(
        CommonSettings(bus_url="kafka://127.0.0.1:9092", bus_stop_timeout=0.7, data_dir=tmp_path)
    )
    assert isinstance(bus, KafkaBus)
    assert bus._stop_timeout == 0.7
