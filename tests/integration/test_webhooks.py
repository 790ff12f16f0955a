"""Shopify and WooCommerce webhooks over HTTP (httpx against the ASGI app of a Runtime), on the
embedded bus, with the state database on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from click.testing import CliRunner
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import inspect
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.datastructures import Headers

from services.cli import main as ciclo
from services.components import COMPONENTS
from services.ingest.webhooks.cli import webhooks
from services.ingest.webhooks.mapping import Delivery, Identity
from services.ingest.webhooks.routes import WebhookHandler, WebhookResult
from services.ingest.webhooks.shopify import SHOPIFY
from services.ingest.webhooks.signature import sign
from services.ingest.webhooks.store import WebhookStore
from services.runtime import Runtime
from shared.bus.ports import OutgoingRecord
from shared.clock import SystemClock
from shared.contracts.erasure import ErasureRequest
from shared.contracts.topics import ERASURES
from shared.db.engine import create_engine
from shared.errors import BusError
from shared.settings import ServerSettings
from tests.fixtures.events import published

PAYLOADS = Path(__file__).parents[1] / "fixtures" / "webhook_payloads"
SHOPIFY_SECRET = "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"
WOO_SECRET = "x+K2<v&9w;Qp"  # WooCommerce secrets are free text
NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


@dataclass
class Shop:
    client: httpx.AsyncClient
    runtime: Runtime
    store: WebhookStore


def _mount(runtime: Runtime, publisher: Any = None) -> FastAPI:
    """The runtime's own app (which mounts the webhook routes), optionally with another
    publisher behind every route."""
    if publisher is None:
        return runtime.app()
    original = runtime.bus.publisher
    runtime.bus.publisher = lambda: publisher  # type: ignore[method-assign]
    try:
        return runtime.app()
    finally:
        runtime.bus.publisher = original  # type: ignore[method-assign]


@pytest.fixture
async def shop(tmp_path: Path, database_url: str) -> AsyncIterator[Shop]:
    server = ServerSettings(data_dir=tmp_path, database_url=database_url)
    runtime = Runtime(services=("ingest",), server=server)
    await runtime.start()
    store = WebhookStore(runtime.engine)
    for workspace in ("shop", "other"):
        await runtime.keys.ensure_workspace(workspace)
    await store.set_secret("shop", "shopify", SHOPIFY_SECRET, now=NOW)
    await store.set_secret("shop", "woocommerce", WOO_SECRET, now=NOW)
    await store.set_secret("other", "shopify", "a-different-secret", now=NOW)
    transport = httpx.ASGITransport(app=_mount(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://ciclo") as client:
        yield Shop(client, runtime, store)
    await runtime.stop()


def body_of(name: str, **changes: Any) -> bytes:
    raw = (PAYLOADS / name).read_bytes()
    if not changes:
        return raw  # the bytes as the platform sent them: the signature covers exactly these
    return json.dumps(json.loads(raw) | changes).encode()


def shopify(
    body: bytes, *, topic: str = "orders/create", event_id: str = "", secret: str = SHOPIFY_SECRET
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": sign(secret, body),
        "X-Shopify-Event-Id": event_id or str(uuid.uuid4()),
        "X-Shopify-Shop-Domain": "ciclo-demo.myshopify.com",
        "X-Shopify-API-Version": "2025-10",
        "X-Shopify-Webhook-Id": str(uuid.uuid4()),
    }


def woo(body: bytes, *, topic: str, delivery_id: str = "") -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": "WooCommerce/9.4.2 Hookshot (WordPress/6.7)",
        "X-WC-Webhook-Source": "https://shop.example.com/",
        "X-WC-Webhook-Topic": topic,
        "X-WC-Webhook-Resource": topic.split(".")[0],
        "X-WC-Webhook-Event": topic.split(".")[1],
        "X-WC-Webhook-Signature": sign(WOO_SECRET, body),
        "X-WC-Webhook-ID": "12",
        "X-WC-Webhook-Delivery-ID": delivery_id or uuid.uuid4().hex,
    }


def counted(source: str, outcome: str) -> float:
    labels = {"source": source, "outcome": outcome}
    return REGISTRY.get_sample_value("ciclo_webhook_deliveries_total", labels) or 0.0


async def test_a_signed_shopify_order_is_published_once_the_bus_has_it(shop: Shop) -> None:
    body = body_of("shopify/orders_create.json")
    answer = await shop.client.post(
        "/v1/webhooks/shopify/shop", content=body, headers=shopify(body, event_id="e-1")
    )
    assert answer.status_code == 200
    assert answer.json() == {"status": "accepted", "event_ids": ["shopify:orders/create:e-1"]}
    [event] = await published(shop.runtime, 1)
    assert (event.event_id, event.workspace_id, event.source) == (
        "shopify:orders/create:e-1",
        "shop",
        "shopify",
    )
    assert (event.type, event.customer_id) == ("order_completed", "7208335310865")
    assert (event.properties["total"], event.properties["currency"]) == ("69.70", "EUR")
    assert event.context["webhook"]["origin"] == "ciclo-demo.myshopify.com"
    assert event.headers()["ce_source"] == "/workspaces/shop/shopify"


@pytest.mark.parametrize(
    ("workspace", "headers", "message"),
    [
        ("shop", {"X-Shopify-Hmac-Sha256": ""}, "missing X-Shopify-Hmac-Sha256"),
        ("shop", {"X-Shopify-Hmac-Sha256": sign("wrong", b"{}")}, "does not match"),
        ("other", {}, "does not match"),  # signed, but with the secret of another workspace
        ("nobody", {}, "does not match"),  # no such workspace: the same answer
        ("Not A Workspace!", {}, "does not match"),
    ],
)
async def test_bad_or_missing_signatures_are_401_and_publish_nothing(
    shop: Shop, workspace: str, headers: dict[str, str], message: str
) -> None:
    body = body_of("shopify/orders_create.json")
    answer = await shop.client.post(
        f"/v1/webhooks/shopify/{workspace}", content=body, headers=shopify(body) | headers
    )
    assert answer.status_code == 401
    error = answer.json()["error"]
    assert (error["code"], error["field"]) == ("unauthorized", "X-Shopify-Hmac-Sha256")
    assert message in error["message"]
    await published(shop.runtime, 0)


async def test_a_body_changed_after_signing_is_401(shop: Shop) -> None:
    body = body_of("shopify/orders_create.json")
    tampered = body.replace(b'"total_price": "69.70"', b'"total_price": "0.01"')
    assert tampered != body
    answer = await shop.client.post(
        "/v1/webhooks/shopify/shop", content=tampered, headers=shopify(body)
    )
    assert answer.status_code == 401


async def test_a_workspace_without_a_secret_for_that_source_is_401(shop: Shop) -> None:
    body = body_of("woocommerce/order_created.json")
    answer = await shop.client.post(
        "/v1/webhooks/woocommerce/other", content=body, headers=woo(body, topic="order.created")
    )
    assert answer.status_code == 401


async def test_a_redelivery_is_answered_200_without_publishing_again(shop: Shop) -> None:
    body = body_of("shopify/orders_create.json")
    headers = shopify(body, event_id="e-7")
    first = await shop.client.post("/v1/webhooks/shopify/shop", content=body, headers=headers)
    before = counted("shopify", "duplicate")
    again = await shop.client.post("/v1/webhooks/shopify/shop", content=body, headers=headers)
    assert first.json()["status"] == "accepted"
    assert again.status_code == 200
    assert again.json()["status"] == "duplicate"
    assert counted("shopify", "duplicate") == before + 1
    await published(shop.runtime, 1)


async def test_a_redelivery_that_misses_the_dedupe_row_repeats_the_same_event_id(
    shop: Shop,
) -> None:
    # As when two deliveries race, or the row was recorded nowhere: same delivery, same event id,
    # which the journey service drops.
    body = body_of("shopify/orders_create.json")
    headers = shopify(body, event_id="e-8")
    await shop.client.post("/v1/webhooks/shopify/shop", content=body, headers=headers)
    assert await shop.store.prune(before=datetime.now(UTC) + timedelta(minutes=1)) == 1
    again = await shop.client.post("/v1/webhooks/shopify/shop", content=body, headers=headers)
    assert again.json() == {"status": "accepted", "event_ids": ["shopify:orders/create:e-8"]}
    first, second = await published(shop.runtime, 2)
    assert first.event_id == second.event_id == "shopify:orders/create:e-8"


async def test_without_a_delivery_id_the_same_bytes_are_the_same_delivery(shop: Shop) -> None:
    body = body_of("woocommerce/customer_created.json")
    headers = woo(body, topic="customer.created")
    del headers["X-WC-Webhook-Delivery-ID"]
    first = await shop.client.post("/v1/webhooks/woocommerce/shop", content=body, headers=headers)
    again = await shop.client.post("/v1/webhooks/woocommerce/shop", content=body, headers=headers)
    assert (first.json()["status"], again.json()["status"]) == ("accepted", "duplicate")
    [event] = await published(shop.runtime, 1)
    assert event.event_id.startswith("woocommerce:customer.created:sha256:")


async def test_one_shop_event_id_under_two_topics_is_two_deliveries(shop: Shop) -> None:
    body = body_of("shopify/orders_create.json")
    for topic in ("orders/create", "orders/paid"):
        headers = shopify(body, topic=topic, event_id="e-9")
        answer = await shop.client.post("/v1/webhooks/shopify/shop", content=body, headers=headers)
        assert answer.json()["status"] == "accepted"
    created, paid = await published(shop.runtime, 2)
    assert (created.event_id, paid.event_id) == (
        "shopify:orders/create:e-9",
        "shopify:orders/paid:e-9",
    )


@pytest.mark.parametrize("workspace", ["shop", "nobody"])
async def test_the_woocommerce_ping_gets_200(shop: Shop, workspace: str) -> None:
    answer = await shop.client.post(
        f"/v1/webhooks/woocommerce/{workspace}",
        content=b"webhook_id=12",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 200
    assert answer.json() == {"status": "ping", "event_ids": []}
    await published(shop.runtime, 0)


SHOPIFY_TOPICS = [
    ("orders/create", "shopify/orders_create.json", ["order_completed"]),
    ("orders/paid", "shopify/orders_create.json", ["order_paid"]),
    ("refunds/create", "shopify/refunds_create.json", ["order_refunded"]),
    ("customers/create", "shopify/customers_create.json", ["signup", "consent_updated"]),
    (
        "customers/update",
        "shopify/customers_update.json",
        ["identify", "consent_updated", "consent_updated"],
    ),
    ("checkouts/create", "shopify/checkouts_create.json", ["checkout_started"]),
    ("checkouts/update", "shopify/checkouts_create.json", ["checkout_started"]),
]


@pytest.mark.parametrize(("topic", "fixture", "types"), SHOPIFY_TOPICS)
async def test_every_shopify_topic_is_published_as_catalogue_events(
    shop: Shop, topic: str, fixture: str, types: Sequence[str]
) -> None:
    body = body_of(fixture)
    answer = await shop.client.post(
        "/v1/webhooks/shopify/shop", content=body, headers=shopify(body, topic=topic)
    )
    assert answer.status_code == 200, answer.text
    events = await published(shop.runtime, len(types))
    assert [e.type for e in events] == list(types)
    assert answer.json()["event_ids"] == [e.event_id for e in events]
    assert {e.source for e in events} == {"shopify"}
    assert all(e.context["webhook"]["topic"] == topic for e in events)


WOO_TOPICS = [
    ("order.created", "woocommerce/order_created.json", {}, "order_completed"),
    ("order.created", "woocommerce/order_created_guest.json", {}, "order_completed"),
    ("order.updated", "woocommerce/order_created.json", {"status": "cancelled"}, "order_cancelled"),
    ("order.updated", "woocommerce/order_created.json", {"status": "refunded"}, "order_refunded"),
    ("order.updated", "woocommerce/order_created.json", {"status": "completed"}, "order_updated"),
    ("customer.created", "woocommerce/customer_created.json", {}, "signup"),
]


@pytest.mark.parametrize(("topic", "fixture", "changes", "event_type"), WOO_TOPICS)
async def test_every_woocommerce_topic_is_published_as_a_catalogue_event(
    shop: Shop, topic: str, fixture: str, changes: dict[str, Any], event_type: str
) -> None:
    body = body_of(fixture, **changes)
    answer = await shop.client.post(
        "/v1/webhooks/woocommerce/shop", content=body, headers=woo(body, topic=topic)
    )
    assert answer.status_code == 200, answer.text
    [event] = await published(shop.runtime, 1)
    assert (event.type, event.source, event.workspace_id) == (event_type, "woocommerce", "shop")
    assert event.context["webhook"]["origin"] == "https://shop.example.com/"
    assert event.customer_id or event.anonymous_id


async def test_a_refund_reaches_the_customer_who_placed_the_order(shop: Shop) -> None:
    order = body_of("shopify/orders_create.json")
    refund = body_of("shopify/refunds_create.json")
    await shop.client.post("/v1/webhooks/shopify/shop", content=order, headers=shopify(order))
    answer = await shop.client.post(
        "/v1/webhooks/shopify/shop",
        content=refund,
        headers=shopify(refund, topic="refunds/create"),
    )
    assert answer.status_code == 200
    placed, refunded = await published(shop.runtime, 2)
    assert refunded.type == "order_refunded"
    assert refunded.customer_id == placed.customer_id == "7208335310865"
    assert refunded.key == placed.key  # same partition: the refund follows the order in order


async def test_an_erased_customer_is_no_longer_the_owner_of_their_orders(shop: Shop) -> None:
    """The erasure request (ciclo.erasures, ingest's own consumer group) deletes the order map's
    rows of the customer and of their aliases: a refund arriving afterwards is published as an
    order nobody is known to own, not under the erased id."""
    order = body_of("shopify/orders_create.json")
    await shop.client.post("/v1/webhooks/shopify/shop", content=order, headers=shopify(order))
    [placed] = await published(shop.runtime, 1)
    order_id = str(json.loads(order)["id"])
    assert await shop.store.order_owner("shop", "shopify", order_id) is not None
    other = Delivery(source="shopify", topic="orders/create", delivery_id="d-other")
    await shop.store.record(
        "shop", other, received_at=NOW, orders=[("9", Identity(anonymous_id="v-9"))]
    )

    erasure = ErasureRequest(
        erasure_id="era_ingest",
        workspace_id="shop",
        customer_id=str(placed.customer_id),
        aliases=["anon:v-9"],
        requested_at=NOW,
    )
    await shop.runtime.bus.publisher().publish(
        [OutgoingRecord(ERASURES, erasure.key, erasure.to_json(), erasure.headers())]
    )
    deadline = asyncio.get_running_loop().time() + 10
    while asyncio.get_running_loop().time() < deadline:
        if await shop.store.order_owner("shop", "shopify", order_id) is None:
            break
        await asyncio.sleep(0.05)
    assert await shop.store.order_owner("shop", "shopify", order_id) is None
    assert await shop.store.order_owner("shop", "shopify", "9") is None

    refund = body_of("shopify/refunds_create.json")
    answer = await shop.client.post(
        "/v1/webhooks/shopify/shop", content=refund, headers=shopify(refund, topic="refunds/create")
    )
    assert answer.status_code == 200
    _, refunded = await published(shop.runtime, 2)
    assert refunded.type == "order_refunded"
    assert refunded.customer_id is None
    assert refunded.anonymous_id == f"shopify:order:{order_id}"


async def test_a_completed_checkout_is_acknowledged_and_skipped(shop: Shop) -> None:
    body = body_of("shopify/checkouts_create.json", completed_at="2026-11-21T19:09:40+01:00")
    answer = await shop.client.post(
        "/v1/webhooks/shopify/shop", content=body, headers=shopify(body, topic="checkouts/update")
    )
    assert answer.status_code == 200
    assert answer.json()["status"] == "ignored"
    await published(shop.runtime, 0)


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("shopify", lambda body: shopify(body, topic="products/update")),
        ("woocommerce", lambda body: woo(body, topic="action.woocommerce_add_to_cart")),
    ],
)
async def test_an_unknown_topic_is_200_ignored_and_counted(
    shop: Shop, path: str, headers: Any
) -> None:
    body = b'{"id": 632910392, "title": "IPod Nano - 8GB"}'
    before = counted(path, "unknown_topic")
    answer = await shop.client.post(
        f"/v1/webhooks/{path}/shop", content=body, headers=headers(body)
    )
    assert answer.status_code == 200
    assert answer.json()["status"] == "ignored"
    assert "is not mapped" in answer.json()["reason"]
    assert counted(path, "unknown_topic") == before + 1
    await published(shop.runtime, 0)


async def test_a_payload_that_maps_to_an_invalid_event_is_422_naming_the_field(
    shop: Shop,
) -> None:
    body = body_of("shopify/orders_create.json", currency="EURO")
    headers = shopify(body, event_id="e-422")
    answer = await shop.client.post("/v1/webhooks/shopify/shop", content=body, headers=headers)
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["field"] == "currency"
    assert error["errors"][0]["event_field"] == "properties.currency"
    await published(shop.runtime, 0)
    # Nothing was recorded: the platform's retry, once the shop is fixed, goes through.
    fixed = body_of("shopify/orders_create.json")
    retry = await shop.client.post(
        "/v1/webhooks/shopify/shop", content=fixed, headers=shopify(fixed, event_id="e-422")
    )
    assert retry.json()["status"] == "accepted"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [(b"not json", 422, "body"), (b"[1, 2]", 422, "body")],
)
async def test_a_signed_body_that_is_not_a_json_object_is_rejected(
    shop: Shop, body: bytes, status: int, field: str
) -> None:
    answer = await shop.client.post(
        "/v1/webhooks/shopify/shop", content=body, headers=shopify(body)
    )
    assert answer.status_code == status
    assert answer.json()["error"]["field"] == field


async def test_a_signed_delivery_without_a_topic_is_400(shop: Shop) -> None:
    body = body_of("shopify/orders_create.json")
    headers = shopify(body) | {"X-Shopify-Topic": ""}
    answer = await shop.client.post("/v1/webhooks/shopify/shop", content=body, headers=headers)
    assert answer.status_code == 400
    assert answer.json()["error"]["field"] == "X-Shopify-Topic"


class RefusingPublisher:
    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        raise BusError("broker unreachable")


async def test_a_bus_that_refuses_gives_503_and_records_nothing(shop: Shop) -> None:
    app = _mount(shop.runtime, publisher=RefusingPublisher())
    body = body_of("shopify/orders_create.json")
    headers = shopify(body, event_id="e-503")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://ciclo"
    ) as client:
        answer = await client.post("/v1/webhooks/shopify/shop", content=body, headers=headers)
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "5"
    delivery = Delivery(source="shopify", topic="orders/create", delivery_id="e-503")
    assert not await shop.store.seen("shop", delivery)


class UnrecordingStore(WebhookStore):
    async def _record(self, *args: Any, **kwargs: Any) -> None:
        raise OperationalError("INSERT", {}, Exception("database is locked"))


async def test_a_published_delivery_that_cannot_be_recorded_is_still_a_success(
    shop: Shop,
) -> None:
    handler = WebhookHandler(
        store=UnrecordingStore(shop.runtime.engine),
        publisher=shop.runtime.bus.publisher(),
        clock=SystemClock(),
    )
    body = body_of("shopify/customers_create.json")
    headers = Headers(shopify(body, topic="customers/create", event_id="e-rec"))
    result = await handler.handle(SHOPIFY, "shop", body, headers)
    assert isinstance(result, WebhookResult)
    assert result.status == "accepted"
    await published(shop.runtime, 2)
    delivery = Delivery(source="shopify", topic="customers/create", delivery_id="e-rec")
    assert not await shop.store.seen("shop", delivery)  # a redelivery republishes the same ids


async def test_webhook_routes_are_in_the_openapi_document(shop: Shop) -> None:
    document = (await shop.client.get("/openapi.json")).json()
    post = document["paths"]["/v1/webhooks/shopify/{workspace_id}"]["post"]
    assert {"200", "401", "422"} <= set(post["responses"])
    assert "X-Shopify-Hmac-Sha256" in {p["name"] for p in post["parameters"]}
    assert "/v1/webhooks/woocommerce/{workspace_id}" in document["paths"]


# --- the store and its migration, on both databases


async def test_the_migration_creates_the_webhook_tables_and_reverts(
    engine: AsyncEngine,
) -> None:
    def tables(conn: Any) -> set[str]:
        return set(inspect(conn).get_table_names())

    names = {"ingest_webhook_secrets", "ingest_webhook_deliveries", "ingest_webhook_orders"}
    ingest = COMPONENTS["ingest"]
    async with engine.begin() as conn:
        assert names <= await conn.run_sync(tables)
        await conn.run_sync(lambda c: command.downgrade(ingest.config(c), "i0001"))
        assert not names & await conn.run_sync(tables)
        await conn.run_sync(lambda c: command.upgrade(ingest.config(c), "head"))
        assert names <= await conn.run_sync(tables)


async def test_the_store_keeps_secrets_deliveries_and_order_owners(engine: AsyncEngine) -> None:
    store = WebhookStore(engine)
    assert await store.set_secret("shop", "shopify", "one", now=NOW) is True
    assert await store.set_secret("shop", "shopify", "two", now=NOW + timedelta(hours=1)) is False
    assert await store.secret("shop", "shopify") == "two"
    [info] = await store.list_secrets("shop")
    assert (info.source, info.created_at, info.updated_at) == (
        "shopify",
        NOW,
        NOW + timedelta(hours=1),
    )
    assert "two" not in repr(info)

    delivery = Delivery(source="shopify", topic="orders/create", delivery_id="d-1")
    owner = Identity(customer_id="c-1", anonymous_id="email_sha256:x")
    await store.record("shop", delivery, received_at=NOW, orders=[("o-1", owner)])
    # The loser of a race records the same rows again: no error, nothing changes.
    await store.record("shop", delivery, received_at=NOW, orders=[("o-1", Identity("c-2"))])
    assert await store.seen("shop", delivery)
    assert not await store.seen("other", delivery)
    assert await store.order_owner("shop", "shopify", "o-1") == owner
    assert await store.order_owner("shop", "woocommerce", "o-1") is None

    assert await store.prune(before=NOW) == 0
    assert await store.prune(before=NOW + timedelta(seconds=1)) == 1
    assert not await store.seen("shop", delivery)
    assert await store.remove_secret("shop", "shopify") is True
    assert await store.remove_secret("shop", "shopify") is False


# --- the CLI


def test_the_cli_sets_lists_and_removes_secrets_without_printing_them(
    tmp_path: Path, database_url: str
) -> None:
    env = {"CICLO_DATA_DIR": str(tmp_path), "CICLO_DATABASE_URL": database_url}
    runner = CliRunner()
    assert runner.invoke(ciclo, ["workspaces", "create", "shop"], env=env).exit_code == 0

    secret = "whsec-9f8e7d6c5b4a"
    done = runner.invoke(
        webhooks, ["set", "--workspace", "shop", "--source", "shopify", "--secret", secret], env=env
    )
    assert done.exit_code == 0, done.output
    assert "set the shopify secret" in done.output
    assert "/v1/webhooks/shopify/shop" in done.output
    # Prompted without echo when not given on the command line (shell history never sees it).
    prompted = runner.invoke(
        webhooks,
        ["set", "--workspace", "shop", "--source", "woocommerce"],
        input="wc-s3cret\n",
        env=env,
    )
    assert prompted.exit_code == 0, prompted.output
    assert "wc-s3cret" not in prompted.output

    listed = runner.invoke(webhooks, ["list", "--workspace", "shop"], env=env)
    assert listed.exit_code == 0
    assert [line.split("\t")[0] for line in listed.output.splitlines()] == [
        "shopify",
        "woocommerce",
    ]
    assert secret not in listed.output and "wc-s3cret" not in listed.output

    stored = asyncio.run(_secret(database_url, "shop", "woocommerce"))
    assert stored == "wc-s3cret"

    removed = runner.invoke(
        webhooks, ["remove", "--workspace", "shop", "--source", "shopify"], env=env
    )
    assert removed.exit_code == 0
    again = runner.invoke(
        webhooks, ["remove", "--workspace", "shop", "--source", "shopify"], env=env
    )
    assert again.exit_code == 1
    assert "no shopify secret" in again.output


def test_the_cli_refuses_an_unknown_workspace_and_a_blank_secret(
    tmp_path: Path, sqlite_url: str
) -> None:
    env = {"CICLO_DATA_DIR": str(tmp_path), "CICLO_DATABASE_URL": sqlite_url}
    runner = CliRunner()
    unknown = runner.invoke(
        webhooks, ["set", "--workspace", "nope", "--source", "shopify", "--secret", "s"], env=env
    )
    assert unknown.exit_code == 2
    assert "workspace 'nope' does not exist" in unknown.output
    assert runner.invoke(ciclo, ["workspaces", "create", "shop"], env=env).exit_code == 0
    blank = runner.invoke(
        webhooks, ["set", "--workspace", "shop", "--source", "shopify", "--secret", " s "], env=env
    )
    assert blank.exit_code == 1
    assert "must not be empty or start or end with spaces" in blank.output


async def _secret(url: str, workspace: str, source: str) -> str | None:
    engine = create_engine(url)
    try:
        return await WebhookStore(engine).secret(workspace, source)  # type: ignore[arg-type]
    finally:
        await engine.dispose()
