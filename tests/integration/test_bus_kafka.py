"""The Kafka adapter in a consumer group: partitions split between members and move on a stop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path

import pytest

from shared.bus.factory import open_bus
from shared.bus.kafka import KafkaBus, KafkaConsumer
from shared.bus.ports import ConsumedRecord, Consumer, OutgoingRecord, TopicSpec
from shared.consumer import ConsumerRunner
from shared.errors import BusError
from shared.settings import CommonSettings
from tests.fakes.server import free_port
from tests.fixtures.broker import (
    TEST_HEARTBEAT_INTERVAL_MS,
    TEST_SESSION_TIMEOUT_MS,
    forwarding,
    tansu_settings,
)
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.kafka


def _records(topic: str, start: int, end: int) -> list[OutgoingRecord]:
    return [OutgoingRecord(topic, f"k{i % 40}", f"v{i}".encode()) for i in range(start, end)]


async def _poll_and_commit(member: Consumer, received: list[ConsumedRecord]) -> None:
    batch = await member.poll(max_records=10, timeout=0.2)
    received += batch
    # Refused during a rebalance: the partition's next owner gets these again, which is allowed.
    with contextlib.suppress(BusError):
        await member.commit(batch)


async def test_members_split_partitions_and_take_over_on_stop(
    kafka_bus: KafkaBus, topic_name: str
) -> None:
    await kafka_bus.ensure_topics([TopicSpec(topic_name, partitions=4)])
    first_half = _records(topic_name, 0, 200)
    await kafka_bus.publish(first_half)
    a = kafka_bus.consumer(group="g", topics=[topic_name])
    b = kafka_bus.consumer(group="g", topics=[topic_name])
    await asyncio.gather(a.start(), b.start())

    got_a: list[ConsumedRecord] = []
    got_b: list[ConsumedRecord] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while {r.value for r in got_a + got_b} < {r.value for r in first_half}:
        assert loop.time() < deadline, "the group did not deliver every record"
        await asyncio.gather(_poll_and_commit(a, got_a), _poll_and_commit(b, got_b))
    assert got_a, "member a got no partition"
    assert got_b, "member b got no partition"

    # b takes one more batch and stops without committing it: a must get those records again.
    second_half = _records(topic_name, 200, 400)
    await kafka_bus.publish(second_half)
    uncommitted: list[ConsumedRecord] = []
    while not uncommitted:
        assert loop.time() < deadline + 10
        uncommitted = await b.poll(max_records=10, timeout=0.5)
    await b.stop()

    got_a_after: list[ConsumedRecord] = []
    deadline = loop.time() + 20
    while {r.value for r in got_a_after} < {r.value for r in second_half}:
        assert loop.time() < deadline, "a did not take over b's partitions"
        await _poll_and_commit(a, got_a_after)

    assert {r.partition for r in got_a_after} == {0, 1, 2, 3}
    assert {r.value for r in uncommitted} <= {r.value for r in got_a_after}


async def test_the_fetch_size_setting_reaches_the_consumer_that_polls(
    tansu_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    """CICLO_KAFKA_MAX_PARTITION_FETCH_BYTES bounds what one poll can bring of a partition
    (Apache Kafka honours it; Tansu returns more, so the bound itself is aiokafka's to keep):
    from the settings through ``open_bus`` to the fetcher of a consumer that polls."""
    settings = CommonSettings(
        data_dir=tmp_path,
        kafka_max_partition_fetch_bytes=4 * 1024 * 1024,
        **tansu_settings(tansu_bootstrap),
    )
    bus = open_bus(settings)
    assert isinstance(bus, KafkaBus)
    await bus.start()
    try:
        await bus.ensure_topics([TopicSpec(topic_name, partitions=1)])
        await bus.publish(_records(topic_name, 0, 50))
        consumer = bus.consumer(group="g", topics=[topic_name])
        await consumer.start()
        received: list[ConsumedRecord] = []

        async def all_fifty() -> bool:
            received.extend(await consumer.poll(max_records=100, timeout=2))
            return len(received) >= 50

        await wait_for(all_fifty, timeout=30, what="the 50 records")
        assert [r.value for r in received] == [f"v{i}".encode() for i in range(50)]
        fetcher = consumer._consumer._fetcher
        assert fetcher._max_partition_fetch_bytes == 4 * 1024 * 1024
        await consumer.stop()
    finally:
        await bus.close()


async def test_a_consumer_started_while_the_broker_is_down_joins_once_it_is_back(
    kafka_bus: KafkaBus, tansu_bootstrap: str, topic_name: str
) -> None:
    """The broker drops just as a replica comes up: its consumer loop keeps trying to join, is
    reported unready meanwhile, and consumes once the broker answers — no restart needed."""
    await kafka_bus.ensure_topics([TopicSpec(topic_name, partitions=1)])
    port = free_port()
    consumer = KafkaConsumer(
        bootstrap_servers=f"127.0.0.1:{port}",  # nothing listens there yet
        client_id="test-late-broker",
        group=f"g-{topic_name}",
        topics=[topic_name],
        session_timeout_ms=TEST_SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=TEST_HEARTBEAT_INTERVAL_MS,
    )
    handled: list[bytes] = []

    async def handle(records: Sequence[ConsumedRecord]) -> None:
        handled.extend(r.value for r in records)

    runner = ConsumerRunner(
        group=f"g-{topic_name}",
        consumer=consumer,
        handler=handle,
        dead_letters=kafka_bus.publisher(),
        poll_timeout=0.2,
        retry_base_delay=0.05,
    )
    running = asyncio.create_task(runner.run())
    try:
        await wait_for(lambda: runner.start_error is not None, timeout=10, what="a failed start")
        with pytest.raises(RuntimeError, match="has not joined yet"):
            runner.check()
        await kafka_bus.publish([OutgoingRecord(topic_name, "k", b"after the outage")])
        async with forwarding(port, tansu_bootstrap):
            await wait_for(lambda: handled, timeout=30, what="the record consumed")
            assert handled == [b"after the outage"]
            runner.check()  # joined: ready
    finally:
        runner.stop()
        await running
    assert running.exception() is None
