"""The batch route over the Kafka adapter: a batch larger than one Kafka record batch per
partition still lands whole, each event on the partition Kafka's default partitioner picks and in
the order it was posted for its customer."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from services.runtime import Runtime
from shared.bus.partitioning import partition_for
from shared.contracts.events import EventEnvelope
from shared.contracts.topics import EVENTS
from shared.settings import ServerSettings
from shared.tenancy.keys import Scope
from tests.fixtures.broker import drain, tansu_settings

pytestmark = pytest.mark.kafka

CUSTOMERS = 40
PER_CUSTOMER = 15
# ~1 KB per event: 600 events are ~75 KB per partition, several 16 KB Kafka batches each.
PAD = "x" * 1000


@pytest.fixture
async def kafka_api(
    fresh_broker: str, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime, str]]:
    settings = ServerSettings(data_dir=tmp_path, **tansu_settings(fresh_broker))
    runtime = Runtime(services=("ingest",), server=settings)
    await runtime.start()
    try:
        await runtime.keys.ensure_workspace("shop")
        _, key = await runtime.keys.create_key("shop", Scope.INGEST)
        transport = httpx.ASGITransport(app=runtime.app())
        async with httpx.AsyncClient(transport=transport, base_url="http://ciclo") as client:
            yield client, runtime, key
    finally:
        await runtime.stop()


async def test_a_large_batch_lands_whole_in_key_order_on_kafka(kafka_api) -> None:  # type: ignore[no-untyped-def]
    client, runtime, key = kafka_api
    events = [
        {
            "type": "page_viewed",
            "customer_id": f"c{n % CUSTOMERS}",
            "properties": {"path": f"/p/{n}", "seq": n, "pad": PAD},
        }
        for n in range(CUSTOMERS * PER_CUSTOMER)
    ]
    answer = await client.post(
        "/v1/events/batch", headers={"Authorization": f"Bearer {key}"}, json={"events": events}
    )
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert (body["accepted"], body["rejected"]) == (len(events), 0)

    consumer = runtime.bus.consumer(group=f"test-{uuid.uuid4().hex}", topics=[EVENTS])
    await consumer.start()
    try:
        records = await drain(consumer, len(events))
    finally:
        await consumer.stop()
    assert len(records) == len(events)
    partitions = runtime.server.bus_partitions
    seqs: dict[str, list[int]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        assert record.partition == partition_for(record.key, partitions)
        event = EventEnvelope.from_json(record.value)
        assert record.key == f"shop:{event.customer_id}"
        assert record.headers["ce_id"] == event.event_id
        seqs[record.key].append(event.properties["seq"])
    assert len({r.partition for r in records}) > 1
    for customer, got in seqs.items():
        assert got == sorted(got), f"{customer}: events out of order"
        assert len(got) == PER_CUSTOMER
    assert {r["event_id"] for r in body["results"]} == {r.headers["ce_id"] for r in records}


async def test_single_events_land_where_kafkas_partitioner_puts_them(kafka_api) -> None:  # type: ignore[no-untyped-def]
    """POST /v1/events publishes one record: on its key's partition, with its CloudEvents
    headers, 202 once Kafka has it; concurrent posts each get their own record."""
    client, runtime, key = kafka_api
    headers = {"Authorization": f"Bearer {key}"}
    answers = await asyncio.gather(
        *(
            client.post(
                "/v1/events",
                headers=headers,
                json={"type": "signup", "customer_id": f"s{n}", "traits": {"plan": n}},
            )
            for n in range(30)
        )
    )
    assert {a.status_code for a in answers} == {202}
    ids = {a.json()["event_id"] for a in answers}
    assert len(ids) == 30

    consumer = runtime.bus.consumer(group=f"test-{uuid.uuid4().hex}", topics=[EVENTS])
    await consumer.start()
    try:
        records = await drain(consumer, 30)
    finally:
        await consumer.stop()
    assert {r.headers["ce_id"] for r in records} == ids
    partitions = runtime.server.bus_partitions
    for record in records:
        assert record.partition == partition_for(record.key, partitions)
        event = EventEnvelope.from_json(record.value)
        assert event.customer_id is not None
        assert record.key == f"shop:{event.customer_id}"
        assert event.traits == {"plan": int(event.customer_id[1:])}
        assert record.headers["ce_type"].endswith("signup")
        assert record.headers["ce_source"] == "/workspaces/shop/api"
    assert len({r.partition for r in records}) > 1
