"""Stopping against a broker that does not answer: every wait on it has a deadline, so a service
stops within the bound docs/operations.md gives, not aiokafka's 40 s per request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from shared.bus.kafka import KafkaBus
from shared.bus.ports import ConsumedRecord, OutgoingRecord, TopicSpec
from shared.consumer import ConsumerRunner
from shared.db.engine import create_engine
from shared.outbox import OutboxRelay, add_to_outbox, outbox_table
from shared.worker import ConsumerWorker
from tests.fixtures.broker import broker_bus, paused
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.kafka

STOP_TIMEOUT = 1.0
# The worker: twice STOP_TIMEOUT; the bus: once; plus half a second of local clean-up
# for each abandoned client, and slack for a loaded machine.
BOUND = 3 * STOP_TIMEOUT + 3.0


@pytest.fixture
async def outbox_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}")
    try:
        yield engine
    finally:
        await engine.dispose()


async def test_a_worker_and_its_bus_stop_within_the_bound_while_the_broker_hangs(
    fresh_broker: str, outbox_engine: AsyncEngine
) -> None:
    bus = broker_bus(fresh_broker, stop_timeout=STOP_TIMEOUT)
    await bus.start()
    topic, out = "test.in", "test.out"
    await bus.ensure_topics([TopicSpec(topic, partitions=2), TopicSpec(out, partitions=2)])
    table = outbox_table(MetaData(), "test_outbox")
    async with outbox_engine.begin() as conn:
        await conn.run_sync(table.metadata.create_all)

    # The handler holds its second batch until the broker hangs: its commit then gets no answer.
    batches: list[Sequence[ConsumedRecord]] = []
    release = asyncio.Event()

    async def handle(records: Sequence[ConsumedRecord]) -> None:
        batches.append(records)
        if len(batches) > 1:
            await release.wait()

    runner = ConsumerRunner(
        group="g",
        consumer=bus.consumer(group="g", topics=[topic]),
        handler=handle,
        dead_letters=bus.publisher(),
        poll_timeout=0.2,
        stop_timeout=STOP_TIMEOUT,
    )
    relay = OutboxRelay(engine=outbox_engine, table=table, publisher=bus.publisher())
    worker = ConsumerWorker(name="test", runner=runner, relay=relay, stop_timeout=STOP_TIMEOUT)
    await worker.start()
    try:
        await bus.publish([OutgoingRecord(topic, "a", b"1")])
        await wait_for(lambda: runner.processed == 1, timeout=20, what="the first batch committed")
        await bus.publish([OutgoingRecord(topic, "a", b"2")])
        await wait_for(lambda: len(batches) == 2, timeout=10, what="the second batch in hand")
        with paused(fresh_broker):
            # Records for the outbox: the relay's publish and then the drain get no answer.
            async with AsyncSession(outbox_engine) as session, session.begin():
                await add_to_outbox(
                    session, table, [OutgoingRecord(out, f"k{i}", b"x") for i in range(20)]
                )
            relay.notify()
            release.set()
            started = time.monotonic()
            stopping = asyncio.create_task(_stop(worker, bus))
            await asyncio.wait({stopping}, timeout=BOUND)
            took = time.monotonic() - started
            in_time = stopping.done()
        await stopping  # once the broker answers again, a stop still waiting on it finishes
        assert in_time, f"stopping took more than {BOUND} s with the broker hung"
        assert took < BOUND
    finally:
        release.set()
        await bus.close()


async def _stop(worker: ConsumerWorker, bus: KafkaBus) -> None:
    await worker.stop()
    await bus.close()
