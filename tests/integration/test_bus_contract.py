"""The Bus port's behaviour, run against both adapters: the embedded log and Kafka (Tansu)."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest

from shared.bus.embedded import EmbeddedBus
from shared.bus.partitioning import partition_for
from shared.bus.ports import Bus, OutgoingRecord, TopicSpec
from shared.errors import BusClosedError, BusError
from tests.fixtures.broker import drain, values


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
def bus(request: pytest.FixtureRequest) -> Bus:
    adapter: Bus = request.getfixturevalue(f"{request.param}_bus")
    return adapter


def _records(topic: str, count: int, *, keys: int) -> list[OutgoingRecord]:
    return [
        OutgoingRecord(topic, f"customer-{i % keys}", f"v{i:04d}".encode()) for i in range(count)
    ]


async def test_published_records_are_all_polled(bus: Bus, topic_name: str) -> None:
    await bus.ensure_topics([TopicSpec(topic_name, partitions=4)])
    await bus.ensure_topics([TopicSpec(topic_name, partitions=2)])  # exists: left as it is
    sent = _records(topic_name, 120, keys=30)
    await bus.publisher().publish(sent)
    consumer = bus.consumer(group="g", topics=[topic_name])
    await consumer.start()

    got = await drain(consumer, len(sent))

    assert sorted(values(got)) == sorted(values(sent))
    assert {r.partition for r in got} == {0, 1, 2, 3}


async def test_keys_land_where_kafkas_default_partitioner_puts_them(
    bus: Bus, topic_name: str
) -> None:
    # The same key must map to the same partition in both modes, or moving a shop from the
    # embedded log to Kafka would reorder a customer's events.
    await bus.ensure_topics([TopicSpec(topic_name, partitions=4)])
    await bus.publisher().publish(_records(topic_name, 40, keys=40))
    consumer = bus.consumer(group="g", topics=[topic_name])
    await consumer.start()

    got = await drain(consumer, 40)

    assert len(got) == 40
    assert all(r.partition == partition_for(r.key, 4) for r in got)


async def test_records_of_one_key_keep_their_order(bus: Bus, topic_name: str) -> None:
    await bus.ensure_topics([TopicSpec(topic_name, partitions=4)])
    sent = _records(topic_name, 200, keys=7)
    # The order within one call and across sequential calls must both hold.
    for start in range(0, 200, 50):
        await bus.publisher().publish(sent[start : start + 50])
    consumer = bus.consumer(group="g", topics=[topic_name])
    await consumer.start()

    got = await drain(consumer, len(sent), max_records=13)

    by_key: dict[str, list[bytes]] = defaultdict(list)
    for record in got:
        by_key[record.key].append(record.value)
    expected: dict[str, list[bytes]] = defaultdict(list)
    for record in sent:
        expected[record.key].append(record.value)
    assert by_key == expected
    for partition in {r.partition for r in got}:
        offsets = [r.offset for r in got if r.partition == partition]
        assert offsets == sorted(offsets)


async def test_new_member_resumes_after_a_mid_batch_commit(bus: Bus, topic_name: str) -> None:
    await bus.ensure_topics([TopicSpec(topic_name, partitions=1)])
    sent = _records(topic_name, 10, keys=1)
    await bus.publisher().publish(sent)
    first = bus.consumer(group="g", topics=[topic_name])
    await first.start()
    batch = await drain(first, 10)
    assert values(batch) == values(sent)

    await first.commit(batch[:4])  # processed only the first four before stopping
    await first.stop()
    second = bus.consumer(group="g", topics=[topic_name])
    await second.start()
    resumed = await drain(second, 6)

    assert [r.offset for r in resumed] == [4, 5, 6, 7, 8, 9]
    assert values(resumed) == values(sent[4:])


async def test_uncommitted_records_go_to_the_next_member(bus: Bus, topic_name: str) -> None:
    await bus.ensure_topics([TopicSpec(topic_name, partitions=2)])
    await bus.publisher().publish(_records(topic_name, 20, keys=5))
    first = bus.consumer(group="g", topics=[topic_name])
    await first.start()
    handed_out = await drain(first, 20)
    committed = [r for r in handed_out if r.partition == 0]
    await first.commit(committed)
    await first.stop()

    second = bus.consumer(group="g", topics=[topic_name])
    await second.start()
    again = await drain(second, 20 - len(committed))

    assert len(handed_out) == 20
    assert sorted(values(again)) == sorted(values([r for r in handed_out if r.partition == 1]))


async def test_each_group_sees_every_record(bus: Bus, topic_name: str) -> None:
    await bus.ensure_topics([TopicSpec(topic_name, partitions=3)])
    sent = _records(topic_name, 60, keys=12)
    await bus.publisher().publish(sent)
    journey = bus.consumer(group="journey", topics=[topic_name])
    dispatch = bus.consumer(group="dispatch", topics=[topic_name])
    await asyncio.gather(journey.start(), dispatch.start())

    got_journey, got_dispatch = await asyncio.gather(drain(journey, 60), drain(dispatch, 60))
    await journey.commit(got_journey)

    assert sorted(values(got_journey)) == sorted(values(sent))
    assert sorted(values(got_dispatch)) == sorted(values(sent))


async def test_headers_round_trip(bus: Bus, topic_name: str) -> None:
    await bus.ensure_topics([TopicSpec(topic_name, partitions=1)])
    headers = {"content-type": "application/json", "trace": "ünï-çødé", "empty": ""}
    await bus.publisher().publish(
        [
            OutgoingRecord(topic_name, "a", b"with", headers),
            OutgoingRecord(topic_name, "a", b"without"),
        ]
    )
    consumer = bus.consumer(group="g", topics=[topic_name])
    await consumer.start()

    got = await drain(consumer, 2)

    assert [(r.value, dict(r.headers)) for r in got] == [(b"with", headers), (b"without", {})]
    assert all(r.timestamp_ms > 0 for r in got)


async def test_embedded_publish_to_a_missing_topic_fails_whole(
    embedded_bus: EmbeddedBus, topic_name: str
) -> None:
    # Kafka brokers may create topics on first use, so only the embedded log promises this.
    await embedded_bus.ensure_topics([TopicSpec(topic_name, partitions=1)])

    with pytest.raises(BusError, match="nope"):
        await embedded_bus.publish(
            [OutgoingRecord(topic_name, "k", b"1"), OutgoingRecord("nope", "k", b"2")]
        )

    consumer = embedded_bus.consumer(group="g", topics=[topic_name])
    await consumer.start()
    assert await consumer.poll(max_records=10, timeout=0.1) == []


async def test_ping_answers_until_closed(bus: Bus) -> None:
    await bus.ping()
    await bus.close()
    with pytest.raises(BusClosedError):
        await bus.ping()
    with pytest.raises(BusClosedError):
        await bus.publisher().publish([OutgoingRecord("any", "k", b"v")])


async def test_lag_counts_what_is_not_handed_out_yet(bus: Bus, topic_name: str) -> None:
    await bus.ensure_topics([TopicSpec(topic_name, partitions=1)])
    await bus.publisher().publish(_records(topic_name, 10, keys=1))
    consumer = bus.consumer(group="g", topics=[topic_name])
    await consumer.start()
    try:
        got = await drain(consumer, 4, max_records=4, seconds=10)
        assert len(got) >= 4
        lag = await consumer.lag()
        assert lag == {topic_name: 10 - len(got)}
        rest = await drain(consumer, 10 - len(got))
        assert len(got) + len(rest) == 10
        assert await consumer.lag() == {topic_name: 0}
    finally:
        await consumer.stop()
