"""The embedded bus beyond the port's contract: crash durability, group leases, pruning, wake-ups;
and the factory that builds a bus from settings.

Two EmbeddedBus objects on one file stand in for two processes: each has its own writer and reader
connections, which is all SQLite sees of a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import sys
import textwrap
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from shared.bus import embedded_log, partitioning
from shared.bus.embedded import EmbeddedBus
from shared.bus.factory import ensure_standard_topics, open_bus
from shared.bus.kafka import KafkaBus
from shared.bus.ports import OutgoingRecord, TopicSpec
from shared.contracts.topics import all_topics
from shared.errors import BusClosedError, BusError, ConfigurationError
from shared.settings import CommonSettings
from tests.fixtures.broker import drain, values

REPO = Path(__file__).resolve().parents[2]
TOPIC = "t"


@pytest.fixture
async def twin(embedded_bus: EmbeddedBus) -> AsyncIterator[EmbeddedBus]:
    """A second bus on the same file, as another process would open it."""
    other = EmbeddedBus(embedded_bus.path, partitions=4, sync="normal", lease_ttl=2.0)
    await other.start()
    try:
        yield other
    finally:
        await other.close()


def _delete(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _records(count: int, *, start: int = 0, key: str = "k") -> list[OutgoingRecord]:
    return [OutgoingRecord(TOPIC, key, f"v{i}".encode()) for i in range(start, start + count)]


def test_partitioning_is_kafkas_default_partitioner() -> None:
    keys = [f"ws-{i}:customer-{i * 7919}" for i in range(300)] + ["", "é", "a" * 33]
    for key in keys:
        assert partitioning.murmur2(key.encode()) == aiokafka_murmur2(key.encode())
        for partitions in (1, 3, 8, 12):
            expected = DefaultPartitioner()(key.encode(), list(range(partitions)), [])
            assert partitioning.partition_for(key, partitions) == expected


# The child publishes from 20 concurrent tasks (so acks come out of shared group commits) and
# prints each record once publish() has returned for it.
_PUBLISHER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from shared.bus.embedded import EmbeddedBus
    from shared.bus.ports import OutgoingRecord, TopicSpec

    async def main():
        bus = EmbeddedBus(Path(sys.argv[1]), partitions=4, sync="normal")
        await bus.start()
        await bus.ensure_topics([TopicSpec("t", 4)])

        async def worker(w):
            i = 0
            while True:
                value = f"{w}-{i}"
                await bus.publish([OutgoingRecord("t", f"key-{w}", value.encode())])
                print(value, flush=True)
                i += 1

        await asyncio.gather(*(worker(w) for w in range(20)))

    asyncio.run(main())
    """
)


@pytest.mark.slow
async def test_acknowledged_records_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "bus.db"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _PUBLISHER,
        str(path),
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    acked: list[str] = []
    try:
        async with asyncio.timeout(30):
            while len(acked) < 3000:
                line = await child.stdout.readline()
                if not line:
                    break
                acked.append(line.decode().strip())
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have died by itself
            child.send_signal(signal.SIGKILL)
        # Acks already printed before the kill count too.
        rest, errors = await child.communicate()
        acked += rest.decode().split()
    assert len(acked) >= 3000, f"the publisher died before the kill: {errors.decode()}"
    assert child.returncode == -signal.SIGKILL

    bus = EmbeddedBus(path, partitions=4, sync="normal")
    await bus.start()
    try:
        consumer = bus.consumer(group="audit", topics=["t"])
        await consumer.start()
        got = await drain(consumer, len(acked), seconds=10)
    finally:
        await bus.close()

    stored = [r.value.decode() for r in got]
    assert set(acked) <= set(stored)
    assert len(stored) == len(set(stored))
    by_worker: dict[str, list[int]] = defaultdict(list)
    for value in stored:
        worker, i = value.split("-")
        by_worker[worker].append(int(i))
    # Per-key order survives, without gaps: a record is stored only after all earlier ones.
    assert all(seq == list(range(len(seq))) for seq in by_worker.values())


async def test_a_second_member_waits_for_the_lease(
    embedded_bus: EmbeddedBus, twin: EmbeddedBus
) -> None:
    await embedded_bus.ensure_topics([TopicSpec(TOPIC, 2)])
    await embedded_bus.publish(_records(10))
    first = embedded_bus.consumer(group="g", topics=[TOPIC])
    second = twin.consumer(group="g", topics=[TOPIC])
    await first.start()
    await second.start()

    got = await first.poll(max_records=4, timeout=1)
    await first.commit(got)
    assert await second.poll(max_records=10, timeout=0.3) == []

    await first.stop()  # releases the lease
    rest = await drain(second, 6)
    assert values(rest) == values(_records(6, start=4))


_LEASE_HOLDER = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    from shared.bus.embedded import EmbeddedBus

    async def main():
        bus = EmbeddedBus(Path(sys.argv[1]), partitions=2, sync="normal", lease_ttl=60)
        await bus.start()
        consumer = bus.consumer(group="g", topics=["t"])
        await consumer.start()
        await consumer.poll(max_records=1, timeout=1)
        print("holding", flush=True)
        await asyncio.sleep(120)

    asyncio.run(main())
    """
)


async def test_a_killed_holders_lease_is_taken_over_at_once(tmp_path: Path) -> None:
    path = tmp_path / "bus.db"
    bus = EmbeddedBus(path, partitions=2, sync="normal", lease_ttl=60)
    await bus.start()
    try:
        await bus.ensure_topics([TopicSpec("t", 2)])
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _LEASE_HOLDER,
            str(path),
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=asyncio.subprocess.PIPE,
        )
        assert child.stdout is not None
        async with asyncio.timeout(20):
            assert (await child.stdout.readline()).strip() == b"holding"
        await bus.publish(_records(5))
        consumer = bus.consumer(group="g", topics=["t"])
        await consumer.start()
        assert await consumer.poll(max_records=5, timeout=0.3) == []  # the holder is alive

        child.send_signal(signal.SIGKILL)
        await child.wait()
        started = time.monotonic()
        got = await drain(consumer, 5, seconds=5)
        assert values(got) == values(_records(5))
        assert time.monotonic() - started < 5  # not the 60 s lease
        await consumer.stop()
    finally:
        await bus.close()


def test_the_lease_goes_to_one_member_at_a_time(tmp_path: Path) -> None:
    # The SQL itself decides, so that two processes racing past their "is it free?" reads still
    # cannot both win.
    conn = embedded_log.connect(tmp_path / "bus.db", sync="normal")
    try:
        embedded_log.create_schema(conn)
        take = functools.partial(embedded_log.acquire_lease, conn, group="g", topics=[TOPIC])
        assert take(owner="a", now_ms=1_000, ttl_ms=500)
        assert not take(owner="b", now_ms=1_200, ttl_ms=500)
        assert take(owner="a", now_ms=1_400, ttl_ms=500)  # renewal by the holder
        assert not take(owner="b", now_ms=1_800, ttl_ms=500)
        assert take(owner="b", now_ms=1_900, ttl_ms=500)  # a's lease ran out at 1_900
        assert not embedded_log.renew_lease(conn, group="g", owner="a", now_ms=1_950, ttl_ms=500)
    finally:
        conn.close()


async def test_an_expired_lease_moves_on_and_fences_the_old_member(tmp_path: Path) -> None:
    path = tmp_path / "bus.db"
    old_bus = EmbeddedBus(path, partitions=1, sync="normal", lease_ttl=0.3)
    new_bus = EmbeddedBus(path, partitions=1, sync="normal", lease_ttl=10)
    await old_bus.start()
    await new_bus.start()
    try:
        await old_bus.ensure_topics([TopicSpec(TOPIC, 1)])
        await old_bus.publish(_records(5))
        old = old_bus.consumer(group="g", topics=[TOPIC])
        await old.start()
        handed_out = await old.poll(max_records=5, timeout=1)
        await old.commit(handed_out[:2])

        new = new_bus.consumer(group="g", topics=[TOPIC])
        await new.start()
        # The old member stops polling (stuck, or a dead process): its lease runs out.
        taken_over = await drain(new, 3, seconds=3)
        with pytest.raises(BusError, match="lost its lease"):
            await old.commit(handed_out)

        assert values(taken_over) == values(_records(3, start=2))
        assert await old.poll(max_records=5, timeout=0.2) == []
    finally:
        await old_bus.close()
        await new_bus.close()


async def test_prune_keeps_what_any_group_still_needs(embedded_bus: EmbeddedBus) -> None:
    await embedded_bus.ensure_topics([TopicSpec(TOPIC, 1), TopicSpec("unread", 1)])
    await embedded_bus.publish(_records(10))
    await embedded_bus.publish([OutgoingRecord("unread", "k", b"x")] * 3)
    ahead = embedded_bus.consumer(group="ahead", topics=[TOPIC])
    behind = embedded_bus.consumer(group="behind", topics=[TOPIC])
    for consumer, done in ((ahead, 8), (behind, 3)):
        await consumer.start()
        await consumer.commit((await drain(consumer, 10))[:done])

    assert await embedded_bus.prune(timedelta(days=1)) == 0  # nothing is that old yet
    await asyncio.sleep(
        0.002
    )  # the records' millisecond timestamps must fall strictly before the cutoff
    assert await embedded_bus.prune(timedelta(0)) == 3 + 3  # "unread" has no group holding it

    newcomer = embedded_bus.consumer(group="newcomer", topics=[TOPIC, "unread"])
    await newcomer.start()
    remaining = await drain(newcomer, 7)
    assert [r.offset for r in remaining] == [3, 4, 5, 6, 7, 8, 9]
    # Offsets never restart, even in a partition pruned empty.
    await embedded_bus.publish([OutgoingRecord("unread", "k", b"y")])
    assert [r.offset for r in await drain(newcomer, 1)] == [3]


async def test_retention_runs_by_itself(tmp_path: Path) -> None:
    bus = EmbeddedBus(
        tmp_path / "bus.db",
        partitions=1,
        sync="normal",
        retention=timedelta(0),
        prune_interval=0.05,
    )
    await bus.start()
    try:
        await bus.ensure_topics([TopicSpec(TOPIC, 1)])
        await bus.publish(_records(3))  # no group consumes TOPIC yet: only retention holds them
        await asyncio.sleep(0.3)
        consumer = bus.consumer(group="late", topics=[TOPIC])
        await consumer.start()
        assert await consumer.poll(max_records=10, timeout=0.1) == []
    finally:
        await bus.close()


async def test_stop_ends_a_waiting_poll(embedded_bus: EmbeddedBus) -> None:
    await embedded_bus.ensure_topics([TopicSpec(TOPIC, 1)])
    consumer = embedded_bus.consumer(group="g", topics=[TOPIC])
    await consumer.start()
    waiting = asyncio.create_task(consumer.poll(max_records=1, timeout=5))
    await asyncio.sleep(0.1)
    await consumer.stop()
    with pytest.raises(BusClosedError):
        await asyncio.wait_for(waiting, 1)


async def test_a_same_process_publish_wakes_a_waiting_poll(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "bus.db", partitions=1, sync="normal", poll_interval=30)
    await bus.start()
    try:
        await bus.ensure_topics([TopicSpec(TOPIC, 1)])
        consumer = bus.consumer(group="g", topics=[TOPIC])
        await consumer.start()
        waiting = asyncio.create_task(consumer.poll(max_records=10, timeout=20))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await bus.publish(_records(1))
        got = await waiting
        assert values(got) == [b"v0"]
        assert time.monotonic() - started < 1  # far below poll_interval
    finally:
        await bus.close()


async def test_another_process_publish_is_seen_by_polling(
    embedded_bus: EmbeddedBus, twin: EmbeddedBus
) -> None:
    await embedded_bus.ensure_topics([TopicSpec(TOPIC, 4)])
    consumer = embedded_bus.consumer(group="g", topics=[TOPIC])
    await consumer.start()
    await twin.publish(_records(5))
    assert sorted(values(await drain(consumer, 5, seconds=3))) == sorted(values(_records(5)))


async def test_concurrent_publishes_get_dense_offsets(embedded_bus: EmbeddedBus) -> None:
    await embedded_bus.ensure_topics([TopicSpec(TOPIC, 2)])
    await asyncio.gather(
        *(embedded_bus.publish(_records(3, start=3 * i, key=f"k{i % 5}")) for i in range(200))
    )
    consumer = embedded_bus.consumer(group="g", topics=[TOPIC])
    await consumer.start()
    got = await drain(consumer, 600)
    assert len(got) == 600
    for partition in (0, 1):
        offsets = [r.offset for r in got if r.partition == partition]
        assert offsets == list(range(len(offsets)))


async def test_one_bad_publish_does_not_fail_its_neighbours(embedded_bus: EmbeddedBus) -> None:
    await embedded_bus.ensure_topics([TopicSpec(TOPIC, 1)])
    results = await asyncio.gather(
        embedded_bus.publish(_records(1)),
        embedded_bus.publish([OutgoingRecord("missing", "k", b"x")]),
        embedded_bus.publish(_records(1, start=1)),
        return_exceptions=True,
    )
    assert results[0] is None
    assert isinstance(results[1], BusError)
    assert results[2] is None


async def test_ping_and_use_after_close(embedded_bus: EmbeddedBus, tmp_path: Path) -> None:
    await embedded_bus.ping()
    _delete(embedded_bus.path)
    with pytest.raises(BusError):
        await embedded_bus.ping()
    await embedded_bus.close()
    with pytest.raises(BusClosedError):
        await embedded_bus.publish(_records(1))


async def test_settings_pick_the_adapter_and_the_standard_topics(tmp_path: Path) -> None:
    settings = CommonSettings(data_dir=tmp_path / "nested" / "data", bus_url="")
    bus = open_bus(settings)
    assert isinstance(bus, EmbeddedBus)
    assert bus.path == tmp_path / "nested" / "data" / "bus.db"
    await bus.start()
    try:
        await ensure_standard_topics(bus, settings)
        await bus.publish([OutgoingRecord(name, "k", b"v") for name in all_topics()])
    finally:
        await bus.close()
    kafka = open_bus(CommonSettings(bus_url="kafka://k1:9092, k2:9092", kafka_idempotence=False))
    assert isinstance(kafka, KafkaBus)
    no_servers = CommonSettings(bus_url="kafka://")
    with pytest.raises(ConfigurationError):
        open_bus(no_servers)
