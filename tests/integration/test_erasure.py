"""Erasing a customer (GDPR) on SQLite and PostgreSQL: ``DELETE /v1/customers/{id}`` over HTTP
removes every journey row of the customer and of the ids merged into them, stops their runs,
logs counts only and publishes the erasure; dispatch's handler removes their messages (a held one
is never sent) and keeps suppressions; end to end through the embedded bus, and the dispatch
worker's erasure consumer on a Kafka-protocol broker."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Table, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.components import components_for
from services.dispatch.adapters.tables import (
    discount_codes,
    messages,
    sink,
    suppressions,
    webhook_events,
)
from services.dispatch.adapters.tables import outbox as dispatch_outbox
from services.dispatch.bootstrap import DispatchWorker
from services.dispatch.service_layer.erasure import erase_customers
from services.dispatch.service_layer.uow import DispatchUnitOfWork
from services.dispatch.settings import DispatchSettings
from services.journey.adapters.files import load_catalog
from services.journey.adapters.tables import (
    activity,
    backfills,
    customers,
    erasures,
    identities,
    instances,
    orders,
    outbox,
    segment_members,
    timers,
)
from services.journey.domain.policy import WorkspacePolicy
from services.journey.service_layer.handlers import Fired, handle_events, handle_timers
from services.journey.service_layer.uow import JourneyUnitOfWork
from services.journey.settings import JourneySettings
from services.runtime import Runtime
from shared.bus.factory import ensure_standard_topics
from shared.bus.ports import OutgoingRecord
from shared.clock import VirtualClock
from shared.contracts.erasure import ErasureRequest
from shared.contracts.events import EventEnvelope
from shared.contracts.messages import MessageRequest
from shared.contracts.topics import ERASURES, EVENTS, MESSAGES
from shared.db.engine import create_engine, session_factory
from shared.db.migrate import upgrade
from shared.outbox import OutboxRelay
from shared.settings import CommonSettings, ServerSettings
from shared.tenancy.keys import Scope
from tests.fixtures.broker import broker_bus
from tests.integration.test_customers_api import ANA, NOW, event, journeys_folder, merge

ERASED = ("cust-ana", "anon:v-1")
PERSONAL = ("cust-ana", "anon:v-1", "v-1", "ana@example.com", "Ana")


@dataclass
class Shop:
    client: httpx.AsyncClient
    runtime: Runtime
    engine: AsyncEngine
    admin: str
    journeys_dir: Path

    async def delete(self, customer_id: str) -> httpx.Response:
        return await self.client.delete(
            f"/v1/customers/{customer_id}", headers={"Authorization": f"Bearer {self.admin}"}
        )

    async def apply(self, events: list[EventEnvelope]) -> None:
        async with JourneyUnitOfWork(session_factory(self.engine)) as uow:
            await handle_events(
                uow,
                events,
                catalog=load_catalog(self.journeys_dir),
                policies={"shop": WorkspacePolicy(), "other": WorkspacePolicy()},
                now=NOW,
            )

    async def seed(self) -> None:
        """Ana (signed up, ordered, waits in the welcome journey), the anonymous visitor she
        was before (rows of their own left from before the merge), and others around her."""
        await self.apply(ANA)
        await self.apply(
            [
                event(
                    "v-1", "page_viewed", NOW - timedelta(hours=5), customer=None, anonymous="v-1"
                ),
                event(
                    "b-1",
                    "signup",
                    NOW - timedelta(hours=1),
                    customer="cust-bob",
                    traits={"email": "bob@example.com"},
                ),
                event(
                    "b-2",
                    "order_completed",
                    NOW - timedelta(minutes=30),
                    customer="cust-bob",
                    properties={"order_id": "o-2", "total": 30, "currency": "USD"},
                ),
                event("f-1", "page_viewed", NOW - timedelta(hours=1), customer="a-first"),
            ]
        )
        await merge(self.engine, "anon:v-1", "cust-ana")
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(backfills),
                [
                    # A workspace journey's cursor, one over every workspace, and one elsewhere.
                    backfill("shop", "birthday", "shop", "cust-ana"),
                    backfill("", "birthday", "shop", "cust-ana"),
                    backfill("", "winback", "shop", "cust-bob"),
                ],
            )


def backfill(scope: str, journey: str, workspace: str, customer: str) -> dict[str, Any]:
    return {
        "scope": scope,
        "journey_id": journey,
        "version": 1,
        "after_workspace": workspace,
        "after_customer": customer,
        "finished_at": NOW,
    }


@pytest.fixture
async def shop(tmp_path: Path, engine: AsyncEngine, database_url: str) -> AsyncIterator[Shop]:
    journeys, templates = journeys_folder(tmp_path)
    runtime = Runtime(
        services=("journey",),
        clock=VirtualClock(NOW),
        server=ServerSettings(data_dir=tmp_path, database_url=database_url, rate_limit=0),
        journey=JourneySettings(journeys_dir=journeys, templates_dir=templates),
    )
    await runtime.keys.ensure_workspace("shop")
    _, admin = await runtime.keys.create_key("shop", Scope.ADMIN)
    transport = httpx.ASGITransport(app=runtime.app())
    async with httpx.AsyncClient(transport=transport, base_url="http://ciclo") as client:
        yield Shop(client, runtime, engine, admin, journeys)
    await runtime.bus.close()
    await runtime.engine.dispose()


async def rows_of(engine: AsyncEngine, table: Table, ids: tuple[str, ...]) -> list[Any]:
    """The table's rows about any of these customers."""
    columns = [c for c in ("customer_id", "alias") if c in table.c]
    async with engine.connect() as conn:
        result = await conn.execute(
            select(table).where(or_(*(table.c[c].in_(ids) for c in columns)))
        )
        return list(result)


JOURNEY_TABLES = (customers, instances, timers, activity, orders, segment_members, identities)


# ── The journey service ───────────────────────────────────────────────────────────────────────


async def test_erasure_removes_every_journey_row_and_stops_the_runs(shop: Shop) -> None:
    await shop.seed()
    for table in JOURNEY_TABLES:
        assert await rows_of(shop.engine, table, ERASED), table.name  # there is something to erase
    async with shop.engine.connect() as conn:
        [run] = (
            await conn.execute(
                select(instances.c.run_id).where(
                    instances.c.customer_id == "cust-ana", instances.c.status == "active"
                )
            )
        ).all()
        pending = (
            await conn.execute(select(outbox.c.key).where(outbox.c.key == "shop:cust-ana"))
        ).all()
    assert pending  # the derived events the relay has not published yet

    answer = await shop.delete("cust-ana")
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["erasure_id"].startswith("era_")
    removed = body["removed"]
    assert removed["journey_customers"] == 2  # Ana and the visitor merged into her
    assert removed["journey_instances"] == 2  # welcome (active) and nurture (exited)
    assert removed["journey_orders"] == 1
    assert removed["journey_activity"] == 2
    assert removed["journey_identities"] == 1
    assert removed["journey_segment_members"] == 1
    assert removed["journey_timers"] >= 1
    assert removed["journey_outbox"] == len(pending)
    assert removed["journey_backfills"] == 2

    for table in JOURNEY_TABLES:
        assert await rows_of(shop.engine, table, ERASED) == [], table.name
    async with shop.engine.connect() as conn:
        keys = [r.key for r in await conn.execute(select(outbox.c.key, outbox.c.topic))]
        cursors = {
            (r.scope, r.journey_id): (r.after_workspace, r.after_customer)
            for r in await conn.execute(select(backfills))
        }
    assert "shop:cust-bob" in keys  # others' records stay
    assert [k for k in keys if k in ("shop:cust-ana", "shop:anon:v-1")] == ["shop:cust-ana"]
    assert cursors == {
        ("shop", "birthday"): ("shop", "a-first"),  # the customer before, in key order
        ("", "birthday"): ("shop", "a-first"),
        ("", "winback"): ("shop", "cust-bob"),
    }
    for table in (customers, instances, timers, orders, segment_members):  # Bob is untouched
        assert await rows_of(shop.engine, table, ("cust-bob",)), table.name

    # Her run is over: its timer, fired anyway, finds nothing and asks for nothing.
    async with JourneyUnitOfWork(session_factory(shop.engine)) as uow:
        fired = await handle_timers(
            uow,
            [Fired("shop", "cust-ana", f"run:{run.run_id}", NOW + timedelta(days=3))],
            catalog=load_catalog(shop.journeys_dir),
            policies={"shop": WorkspacePolicy()},
            now=NOW + timedelta(days=4),
        )
    assert fired == 0
    assert await rows_of(shop.engine, customers, ERASED) == []
    async with shop.engine.connect() as conn:
        asked = (await conn.execute(select(outbox.c.key).where(outbox.c.topic == MESSAGES))).all()
    assert asked == []

    assert (
        await shop.client.get(
            "/v1/customers/cust-ana", headers={"Authorization": f"Bearer {shop.admin}"}
        )
    ).status_code == 404


async def test_the_erasure_log_keeps_counts_and_never_the_customer(shop: Shop) -> None:
    await shop.seed()
    body = (await shop.delete("anon:v-1")).json()  # by the alias: the same person
    async with shop.engine.connect() as conn:
        [row] = (await conn.execute(select(erasures))).all()
    assert row.erasure_id == body["erasure_id"]
    assert row.workspace_id == "shop"
    assert row.requested_at == NOW
    assert row.removed == body["removed"]
    assert row.removed["journey_customers"] == 2
    logged = json.dumps({k: str(v) for k, v in row._mapping.items()})
    for value in PERSONAL:
        assert value not in logged


async def test_the_erasure_request_goes_out_through_the_outbox(shop: Shop) -> None:
    await shop.seed()
    body = (await shop.delete("cust-ana")).json()
    async with shop.engine.connect() as conn:
        [record] = (await conn.execute(select(outbox).where(outbox.c.topic == ERASURES))).all()
    assert record.key == "shop:cust-ana"
    request = ErasureRequest.from_json(record.value)
    assert (request.erasure_id, request.workspace_id) == (body["erasure_id"], "shop")
    assert (request.customer_id, request.aliases) == ("cust-ana", ["anon:v-1"])
    assert request.requested_at == NOW
    assert record.headers["ce_type"] == "ciclo.customer.erasure_requested"

    # The embedded bus knows the topic: the relay publishes it and a consumer reads it back.
    bus = shop.runtime.bus
    await bus.start()
    await ensure_standard_topics(bus, shop.runtime.server)
    relay = OutboxRelay(engine=shop.engine, table=outbox, publisher=bus.publisher())
    await relay.drain()
    consumer = bus.consumer(group="test-erasures", topics=[ERASURES])
    await consumer.start()
    try:
        [published] = await consumer.poll(max_records=10, timeout=2)
    finally:
        await consumer.stop()
    assert published.key == "shop:cust-ana"
    assert ErasureRequest.from_json(published.value) == request


async def test_erasing_again_or_an_unknown_customer_is_202_with_nothing_removed(
    shop: Shop,
) -> None:
    await shop.seed()
    first = (await shop.delete("cust-ana")).json()
    for customer in ("cust-ana", "never-seen"):
        answer = await shop.delete(customer)
        assert answer.status_code == 202
        again = answer.json()
        assert again["erasure_id"] != first["erasure_id"]
        assert set(again["removed"]) == set(first["removed"])
        assert set(again["removed"].values()) == {0}
    async with shop.engine.connect() as conn:
        sent = [
            ErasureRequest.from_json(r.value).customer_id
            for r in await conn.execute(
                select(outbox.c.value).where(outbox.c.topic == ERASURES).order_by(outbox.c.id)
            )
        ]
        logged = (await conn.execute(select(erasures))).all()
    # Still asked of dispatch, which may know them; every erasure logged.
    assert sent == ["cust-ana", "cust-ana", "never-seen"]
    assert len(logged) == 3


# ── Dispatch ──────────────────────────────────────────────────────────────────────────────────


def held_request(message_id: str, customer: str) -> MessageRequest:
    return MessageRequest(
        message_id=message_id,
        workspace_id="shop",
        customer_id=customer,
        channel="email",
        template="welcome-1",
        requested_at=NOW,
        recipient={"email": f"{customer}@example.com", "traits": {"first_name": "Ana"}},
    )


def ledger_row(message_id: str, customer: str, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "workspace_id": "shop",
        "customer_id": customer,
        "channel": "email",
        "template": "welcome-1",
        "provider": "sink",
        "status": status,
        "attempts": 1 if status == "sent" else 0,
        "created_at": NOW,
        "updated_at": NOW,
        "provider_message_id": None,
        "not_before": None,
        "request": None,
        **extra,
    }


async def seed_dispatch(engine: AsyncEngine) -> None:
    async with DispatchUnitOfWork(session_factory(engine)) as uow:
        await uow.ledger.insert(
            [
                ledger_row(
                    "msg_held",
                    "cust-ana",
                    "held",
                    not_before=NOW + timedelta(hours=1),
                    request=held_request("msg_held", "cust-ana").model_dump(mode="json"),
                ),
                ledger_row("msg_sent", "cust-ana", "sent"),
                ledger_row(
                    "msg_sms",
                    "anon:v-1",
                    "sent",
                    channel="sms",
                    provider="twilio",
                    provider_message_id="SM9",
                ),
                ledger_row("msg_bob", "cust-bob", "sent"),
            ]
        )
        await uow.suppressions.add(
            workspace_id="shop",
            channel="email",
            address="ana@example.com",
            reason="unsubscribe",
            source="one-click",
            customer_id="cust-ana",
            at=NOW,
        )
        session = uow.session
        await session.execute(
            insert(webhook_events),
            [
                {"provider": "twilio", "event_id": "SM9:delivered", "received_at": NOW},
                {"provider": "twilio", "event_id": "SM10:delivered", "received_at": NOW},
            ],
        )
        await session.execute(
            insert(sink),
            [
                {
                    "workspace_id": "shop",
                    "message_id": message_id,
                    "channel": "email",
                    "to": to,
                    "subject": "Hi",
                    "html": None,
                    "text": "Hi",
                    "headers": {},
                    "created_at": NOW,
                }
                for message_id, to in (("msg_sent", "ana@example.com"), ("msg_bob", "bob@x.io"))
            ],
        )
        await session.execute(
            insert(discount_codes),
            [
                {
                    "workspace_id": "shop",
                    "pool": "p",
                    "code": "ANA-10",
                    "message_id": "msg_sent",
                    "claimed_at": NOW,
                    "expires_at": None,
                },
                {
                    "workspace_id": "shop",
                    "pool": "p",
                    "code": "FREE-1",
                    "message_id": None,
                    "claimed_at": None,
                    "expires_at": None,
                },
            ],
        )
        await uow.emit(
            [
                _record("shop:cust-ana", b"message_sent about Ana"),
                _record("shop:cust-bob", b"message_sent about Bob"),
            ]
        )
        await uow.commit()


def _record(key: str, value: bytes) -> OutgoingRecord:
    return OutgoingRecord(topic=EVENTS, key=key, value=value)


async def due_held(engine: AsyncEngine) -> list[str]:
    async with DispatchUnitOfWork(session_factory(engine)) as uow:
        due = await uow.ledger.due_held(now=NOW + timedelta(days=1), limit=10)
    return [MessageRequest.model_validate(r).message_id for r in due]


async def test_dispatch_erases_messages_and_keeps_the_suppression(engine: AsyncEngine) -> None:
    await seed_dispatch(engine)
    assert await due_held(engine) == ["msg_held"]  # what the poller would send tomorrow

    request = ErasureRequest(
        erasure_id="era_test",
        workspace_id="shop",
        customer_id="cust-ana",
        aliases=["anon:v-1"],
        requested_at=NOW,
    )
    [erased] = await erase_customers(lambda: DispatchUnitOfWork(session_factory(engine)), [request])
    assert erased.removed == {
        "dispatch_messages": 3,
        "dispatch_sink": 1,
        "dispatch_webhook_events": 1,
        "dispatch_outbox": 1,
    }
    assert erased.detached == {"dispatch_discount_codes": 1, "dispatch_suppressions": 1}

    assert await due_held(engine) == []  # the held message is gone: never sent
    async with engine.connect() as conn:
        ledger = {r.message_id for r in await conn.execute(select(messages.c.message_id))}
        delivered = [r.to for r in await conn.execute(select(sink.c.to))]
        hooks = [r.event_id for r in await conn.execute(select(webhook_events.c.event_id))]
        codes = {r.code: r.message_id for r in await conn.execute(select(discount_codes))}
        [kept] = (await conn.execute(select(suppressions))).all()
        pending = [r.key for r in await conn.execute(select(dispatch_outbox.c.key))]
    assert ledger == {"msg_bob"}
    assert delivered == ["bob@x.io"]
    assert hooks == ["SM10:delivered"]
    assert codes == {"ANA-10": "erased:era_test", "FREE-1": None}  # drawn, not given back
    # The opt-out stands (looked up by address), no longer linked to the customer.
    assert (kept.address, kept.reason, kept.customer_id) == ("ana@example.com", "unsubscribe", None)
    assert pending == ["shop:cust-bob"]

    # A redelivered erasure finds nothing more.
    [again] = await erase_customers(lambda: DispatchUnitOfWork(session_factory(engine)), [request])
    assert set(again.removed.values()) == {0} and set(again.detached.values()) == {0}


async def test_end_to_end_a_held_message_is_erased_by_dispatch_and_never_sent(
    tmp_path: Path, engine: AsyncEngine, database_url: str
) -> None:
    journeys, templates = journeys_folder(tmp_path)
    clock = VirtualClock(NOW)
    runtime = Runtime(
        services=("journey", "dispatch"),
        clock=clock,
        server=ServerSettings(data_dir=tmp_path, database_url=database_url, rate_limit=0),
        journey=JourneySettings(journeys_dir=journeys, templates_dir=templates),
        dispatch=DispatchSettings(held_poll_interval=0.1),
    )
    await runtime.start()
    try:
        await runtime.keys.ensure_workspace("shop")
        _, admin = await runtime.keys.create_key("shop", Scope.ADMIN)
        await seed_dispatch(engine)
        transport = httpx.ASGITransport(app=runtime.app())
        async with httpx.AsyncClient(transport=transport, base_url="http://ciclo") as client:
            answer = await client.delete(
                "/v1/customers/cust-ana", headers={"Authorization": f"Bearer {admin}"}
            )
        assert answer.status_code == 202
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            async with engine.connect() as conn:
                left = {
                    r.message_id
                    for r in await conn.execute(
                        select(messages.c.message_id).where(messages.c.customer_id == "cust-ana")
                    )
                }
            if not left:
                break
            await asyncio.sleep(0.1)
        assert left == set(), "dispatch did not erase the customer"
        clock.advance(timedelta(hours=2))  # past the held message's time
        assert runtime.dispatch_worker is not None
        assert await runtime.dispatch_worker.release_held() == 0
        async with engine.connect() as conn:
            delivered = [r.to for r in await conn.execute(select(sink.c.to))]
        assert "ana@example.com" not in delivered
    finally:
        await runtime.stop()


async def test_dispatch_erases_on_a_request_from_kafka(
    fresh_broker: str, tmp_path: Path, sqlite_url: str
) -> None:
    """The distributed path: Ciclo's topics (the erasures topic and its dead-letter topic
    among them) created on a Kafka-protocol broker, the dispatch worker's erasure consumer
    group on it."""
    await upgrade(sqlite_url, components_for(("dispatch",)))
    engine = create_engine(sqlite_url)
    bus = broker_bus(fresh_broker, client_id="test-erasure")
    await bus.start()
    worker = DispatchWorker(DispatchSettings(), engine=engine, bus=bus, clock=VirtualClock(NOW))
    try:
        await ensure_standard_topics(bus, CommonSettings(bus_url=f"kafka://{fresh_broker}"))
        await seed_dispatch(engine)
        await worker.start()
        request = ErasureRequest(
            erasure_id="era_kafka",
            workspace_id="shop",
            customer_id="cust-ana",
            requested_at=NOW,
        )
        await bus.publisher().publish(
            [
                OutgoingRecord(
                    topic=ERASURES,
                    key=request.key,
                    value=request.to_json(),
                    headers=request.headers(),
                )
            ]
        )
        deadline = time.monotonic() + 30
        left: set[str] = {"?"}
        while left and time.monotonic() < deadline:
            async with engine.connect() as conn:
                left = {
                    r.message_id
                    for r in await conn.execute(
                        select(messages.c.message_id).where(messages.c.customer_id == "cust-ana")
                    )
                }
            await asyncio.sleep(0.2)
        assert left == set(), "the erasure consumer did not erase the customer"
        assert await due_held(engine) == []
        await worker.check()  # both consumers still running
    finally:
        await worker.stop()
        await bus.close()
        await engine.dispose()
