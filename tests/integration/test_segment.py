"""The Segment-compatible API over real HTTP, on the embedded bus.

Two clients: httpx against the ASGI app (every route, auth form, encoding, limit and error), and
the real segment-analytics-python library pointed at a uvicorn server on a loopback port.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from fastapi import FastAPI
from segment.analytics import Client
from segment.analytics.request import APIError

from services.ingest.segment import MAX_BATCH_BYTES, gunzip
from services.runtime import Runtime
from shared.contracts.events import EventEnvelope
from shared.http import PayloadTooLarge
from shared.settings import ServerSettings
from shared.tenancy.keys import Scope
from tests.fakes.server import free_port
from tests.fixtures.events import published


@dataclass
class Api:
    client: httpx.AsyncClient
    runtime: Runtime
    app: FastAPI
    keys: dict[str, str]

    async def post(self, path: str, body: Any, **kwargs: Any) -> httpx.Response:
        kwargs.setdefault("auth", (self.keys["ingest"], ""))
        return await self.client.post(path, json=body, **kwargs)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    runtime = Runtime(services=("ingest",), server=ServerSettings(data_dir=tmp_path))
    await runtime.start()
    await runtime.keys.ensure_workspace("shop")
    keys = {scope.value: (await runtime.keys.create_key("shop", scope))[1] for scope in Scope}
    app = runtime.app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ciclo") as client:
        yield Api(client, runtime, app, keys)
    await runtime.stop()


def gzipped(body: Any) -> bytes:
    return gzip.compress(orjson.dumps(body))


TRACK = {
    "userId": "c1",
    "messageId": "order-1001",
    "event": "Order Completed",
    "properties": {
        "order_id": "1001",
        "total": 59.9,
        "currency": "EUR",
        "products": [{"product_id": "p1", "price": 29.95, "quantity": 2}],
    },
}


async def test_every_route_maps_onto_the_catalogue(api: Api) -> None:
    calls = [
        ("/v1/track", TRACK),
        ("/v1/identify", {"userId": "c1", "traits": {"email": "ana@example.com"}}),
        ("/v1/page", {"anonymousId": "a1", "name": "Home", "properties": {"path": "/"}}),
        ("/v1/screen", {"userId": "c1", "name": "Cart"}),
        ("/v1/group", {"userId": "c1", "groupId": "acme", "traits": {"plan": "pro"}}),
        ("/v1/alias", {"userId": "c1", "previousId": "a1"}),
    ]
    for path, body in calls:
        answer = await api.post(path, body)
        assert (answer.status_code, answer.json()) == (200, {"success": True}), path
    events = {e.type: e for e in await published(api.runtime, 6)}
    assert set(events) == {
        "order_completed",
        "identify",
        "page_viewed",
        "screen_viewed",
        "group",
        "alias",
    }
    order = events["order_completed"]
    assert (order.event_id, order.workspace_id, order.source) == ("order-1001", "shop", "segment")
    assert order.properties["items"][0]["price"] == "29.95"
    assert events["identify"].traits == {"email": "ana@example.com"}
    assert events["page_viewed"].properties == {"path": "/", "name": "Home"}
    assert events["alias"].properties == {"previous_id": "a1"}
    assert events["group"].properties == {"group_id": "acme", "traits": {"plan": "pro"}}
    assert all(e.historical is False for e in events.values())


async def test_analytics_js_paths_and_text_plain_bodies_are_accepted(api: Api) -> None:
    # analytics.js posts to /v1/t, /v1/p, ... with Content-Type text/plain and writeKey in the
    # body, so that browsers skip the CORS preflight.
    body = {"writeKey": api.keys["ingest"], "type": "track", "anonymousId": "a1", "event": "Hi"}
    answer = await api.client.post(
        "/v1/t", content=orjson.dumps(body), headers={"Content-Type": "text/plain"}
    )
    assert answer.status_code == 200
    batch = {"writeKey": api.keys["ingest"], "batch": [{**body, "writeKey": None}]}
    answer = await api.client.post(
        "/v1/b", content=orjson.dumps(batch), headers={"Content-Type": "text/plain"}
    )
    assert answer.status_code == 200
    assert [e.type for e in await published(api.runtime, 2)] == ["hi", "hi"]


@pytest.mark.parametrize("form", ["body", "basic", "bearer"])
async def test_all_three_auth_forms(api: Api, form: str) -> None:
    key = api.keys["ingest"]
    body: dict[str, Any] = {"anonymousId": "a1", "event": "x", "workspace_id": "other"}
    headers = {}
    if form == "body":
        body["writeKey"] = key
    elif form == "basic":
        headers["Authorization"] = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    else:
        headers["Authorization"] = f"Bearer {key}"
    answer = await api.post("/v1/track", body, headers=headers, auth=None)
    assert answer.status_code == 200
    [event] = await published(api.runtime, 1)
    assert event.workspace_id == "shop"  # the key decides, never the body
    assert api.keys["ingest"] not in event.to_json().decode()


async def test_an_admin_key_may_send(api: Api) -> None:
    answer = await api.post(
        "/v1/track", {"userId": "c", "event": "x"}, auth=(api.keys["admin"], "")
    )
    assert answer.status_code == 200


@pytest.mark.parametrize(
    ("body", "headers", "field", "message"),
    [
        ({}, {}, "writeKey", "missing write key"),
        ({"writeKey": "ciclo_ingest_" + "x" * 40}, {}, "writeKey", "unknown or revoked"),
        ({"writeKey": 5}, {}, "writeKey", "must be a string"),
        ({}, {"Authorization": "Bearer nope"}, "Authorization", "unknown or revoked"),
        ({}, {"Authorization": "Digest x"}, "Authorization", "unsupported authorization"),
    ],
)
async def test_without_a_valid_key_it_is_401(
    api: Api, body: dict[str, Any], headers: dict[str, str], field: str, message: str
) -> None:
    answer = await api.post(
        "/v1/track", {"userId": "c", "event": "x", **body}, headers=headers, auth=None
    )
    assert answer.status_code == 401
    error = answer.json()["error"]
    assert (error["field"], message in error["message"]) == (field, True)
    assert "www-authenticate" in answer.headers
    await published(api.runtime, 0)


async def test_a_body_key_that_contradicts_the_header_is_401(api: Api) -> None:
    body = {"userId": "c", "event": "x", "writeKey": api.keys["admin"]}
    answer = await api.post("/v1/track", body)
    assert answer.status_code == 401
    assert "different keys" in answer.json()["error"]["message"]


class _ReadOnly:
    """A principal of a (future) scope that may not ingest: what a 403 is for. Today's two scopes
    both may ingest, so only a stand-in can show the 403."""

    workspace_id = "shop"
    scope = SimpleNamespace(value="read")

    def allows(self, _needed: Scope) -> bool:
        return False


class _ReadOnlyKeys:
    async def authenticate(self, _plaintext: str) -> _ReadOnly:
        return _ReadOnly()


@pytest.mark.parametrize("form", ["header", "body"])
async def test_a_key_without_the_ingest_scope_is_403(api: Api, form: str) -> None:
    api.app.state.keys = _ReadOnlyKeys()
    body: dict[str, Any] = {"userId": "c", "event": "x"}
    headers = {"Authorization": "Bearer k"} if form == "header" else {}
    if form == "body":
        body["writeKey"] = "k"
    answer = await api.post("/v1/track", body, headers=headers, auth=None)
    assert answer.status_code == 403
    error = answer.json()["error"]
    assert error["field"] == ("Authorization" if form == "header" else "writeKey")
    assert "'ingest' is needed" in error["message"]


async def test_the_key_rate_limit_applies_to_every_auth_form(tmp_path: Path) -> None:
    settings = ServerSettings(data_dir=tmp_path, rate_limit=1, rate_limit_burst=2)
    runtime = Runtime(services=("ingest",), server=settings)
    await runtime.start()
    try:
        await runtime.keys.ensure_workspace("shop")
        _, key = await runtime.keys.create_key("shop", Scope.INGEST)
        app = runtime.app()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ciclo") as client:
            answers = [
                await client.post("/v1/track", json=body, auth=auth)
                for body, auth in [
                    ({"userId": "c", "event": "x"}, (key, "")),
                    ({"userId": "c", "event": "x", "writeKey": key}, None),
                    ({"userId": "c", "event": "x", "writeKey": key}, None),
                ]
            ]
    finally:
        await runtime.stop()
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert int(answers[2].headers["retry-after"]) >= 1


async def test_gzip_bodies_are_inflated(api: Api) -> None:
    answer = await api.client.post(
        "/v1/batch",
        content=gzipped({"batch": [{"type": "track", **TRACK}], "writeKey": api.keys["ingest"]}),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert answer.status_code == 200
    [event] = await published(api.runtime, 1)
    assert event.type == "order_completed"


async def test_a_zip_bomb_is_413_without_inflating_it(api: Api) -> None:
    bomb = gzip.compress(b'{"batch": [' + b" " * 50_000_000 + b"]}")
    assert len(bomb) < 100_000
    answer = await api.client.post(
        "/v1/batch",
        content=bomb,
        auth=(api.keys["ingest"], ""),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert answer.status_code == 413
    assert "500 KB" in answer.json()["error"]["message"]


def test_gunzip_never_holds_more_than_the_cap() -> None:
    bomb = gzip.compress(b"0" * 200_000_000)  # 200 MB inflated, about 200 KB sent
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge):
            gunzip(bomb, max_bytes=MAX_BATCH_BYTES, error=PayloadTooLarge("too large"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MAX_BATCH_BYTES


def test_gunzip_reads_every_member_of_a_multi_member_body() -> None:
    data = gzip.compress(b'{"a": ') + gzip.compress(b"1}")
    assert gunzip(data, max_bytes=100, error=PayloadTooLarge("too large")) == b'{"a": 1}'


@pytest.mark.parametrize(
    ("content", "encoding", "status", "message"),
    [
        (b"\x1f\x8b not gzip at all", "gzip", 400, "not valid gzip"),
        (gzipped({"userId": "c", "event": "x"})[:-12], "gzip", 400, "truncated"),
        (b'{"userId": "c", "event": "x"}', "br", 415, "Content-Encoding 'br'"),
    ],
    # Named, not by their bytes: gzip stamps the time, and test workers must collect the same ids.
    ids=["not-gzip", "truncated-gzip", "brotli"],
)
async def test_bad_encodings(
    api: Api, content: bytes, encoding: str, status: int, message: str
) -> None:
    answer = await api.client.post(
        "/v1/track",
        content=content,
        auth=(api.keys["ingest"], ""),
        headers={"Content-Type": "application/json", "Content-Encoding": encoding},
    )
    assert answer.status_code == status
    assert message in answer.json()["error"]["message"]


async def test_one_event_over_32_kb_is_413(api: Api) -> None:
    body = {"userId": "c", "event": "x", "properties": {"blob": "x" * 33_000}}
    answer = await api.post("/v1/track", body)
    assert answer.status_code == 413
    assert "32 KB (32,768 bytes)" in answer.json()["error"]["message"]
    gz = await api.client.post(
        "/v1/track",
        content=gzipped(body),
        auth=(api.keys["ingest"], ""),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert gz.status_code == 413  # the inflated size counts, not the compressed one
    await published(api.runtime, 0)


async def test_a_batch_over_500_kb_or_2500_events_is_413(api: Api) -> None:
    item = {"type": "track", "userId": "c", "event": "x", "properties": {"blob": "x" * 30_000}}
    big = await api.post("/v1/batch", {"batch": [item] * 18})
    assert big.status_code == 413
    assert "500 KB (512,000 bytes)" in big.json()["error"]["message"]
    many = await api.post("/v1/batch", {"batch": [{"type": "track"}] * 2501})
    assert many.status_code == 413
    assert (many.json()["error"]["field"], "2,500" in many.json()["error"]["message"]) == (
        "batch",
        True,
    )
    await published(api.runtime, 0)


async def test_exactly_2500_small_events_are_accepted(api: Api) -> None:
    items = [{"type": "track", "userId": f"c{i}", "event": "x"} for i in range(2500)]
    answer = await api.post("/v1/batch", {"batch": items})
    assert answer.status_code == 200
    assert answer.json()["accepted"] == 2500
    assert len(await published(api.runtime, 2500)) == 2500


@pytest.mark.parametrize(
    ("content", "content_type", "status", "field", "message"),
    [
        (b'{"userId": "c",', "application/json", 400, "body", "not valid JSON"),
        (b"", "application/json", 400, "body", "empty"),
        (b"[1, 2]", "application/json", 400, "body", "JSON object"),
        (b"userId=c&event=x", "application/x-www-form-urlencoded", 415, "Content-Type", "form"),
        (b'{"userId": "c", "event": "x"}', "text/html", 415, "Content-Type", "application/json"),
        (b'{"userId": "c", "event": "x"}', "", 415, "Content-Type", "missing"),
        (b'{"event": "x"}', "application/json", 400, "userId", "userId or anonymousId"),
        (b'{"userId": "c", "type": "page"}', "application/json", 400, "type", "/v1/track"),
    ],
)
async def test_malformed_requests_name_the_problem(
    api: Api, content: bytes, content_type: str, status: int, field: str, message: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    answer = await api.client.post(
        "/v1/track", content=content, headers=headers, auth=(api.keys["ingest"], "")
    )
    assert answer.status_code == status
    error = answer.json()["error"]
    assert error["field"] == field
    assert message in error["message"]
    await published(api.runtime, 0)


async def test_an_order_without_currency_is_400_naming_the_field(api: Api) -> None:
    body = {**TRACK, "properties": {"order_id": "1", "total": 10}}
    answer = await api.post("/v1/track", body)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_event", "properties.currency")
    [only] = error["errors"]
    assert error["message"] == f"{only['field']}: {only['message']}"
    await published(api.runtime, 0)


async def test_money_text_that_is_no_decimal_is_400_naming_the_segment_field(api: Api) -> None:
    products = [{"product_id": "p1", "price": "1e5"}]
    body = {**TRACK, "properties": {"order_id": "1", "total": "1_000", "currency": "EUR"}}
    answer = await api.post(
        "/v1/track", {**body, "properties": {**body["properties"], "products": products}}
    )
    assert answer.status_code == 400
    errors = answer.json()["error"]["errors"]
    assert [e["field"] for e in errors] == ["properties.total", "properties.products.0.price"]
    assert all("is not a decimal amount" in e["message"] for e in errors)
    await published(api.runtime, 0)


@pytest.mark.parametrize("name", ["注文完了", "Покупка", "Покупка 2"])
async def test_an_event_name_in_another_script_is_400_saying_names_are_latin(
    api: Api, name: str
) -> None:
    answer = await api.post("/v1/track", {"userId": "c1", "event": name})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["field"] == "event"
    assert "event names must be written in Latin letters and ASCII digits" in error["message"]
    assert "no letter or digit" not in error["message"]
    await published(api.runtime, 0)


async def test_batch_accepts_good_items_and_reports_bad_ones(api: Api) -> None:
    answer = await api.post(
        "/v1/batch",
        {
            "batch": [
                {"type": "identify", "userId": "c1", "traits": {"email": "a@example.com"}},
                {"type": "track", "event": "no one"},
                "not an object",
                {"type": "track", "userId": "c", "event": "x", "properties": {"b": "x" * 33_000}},
                {"type": "merge", "userId": "c"},
                {"type": "page", "anonymousId": "a1", "messageId": "mine-1"},
            ],
            "context": {"ip": "10.0.0.1", "library": {"name": "analytics-ruby"}},
            "integrations": {"All": True},
        },
    )
    assert answer.status_code == 200
    body = answer.json()
    assert (body["success"], body["accepted"], body["rejected"]) == (True, 2, 4)
    assert [(e["index"], e["field"]) for e in body["errors"]] == [
        (1, "userId"),
        (2, "$"),
        (3, "$"),
        (4, "type"),
    ]
    assert "32 KB" in body["errors"][2]["message"]
    events = {e.type: e for e in await published(api.runtime, 2)}
    page = events["page_viewed"]
    assert page.event_id == "mine-1"
    assert page.context["ip"] == "10.0.0.1"  # the batch context merged into the item
    assert page.context["extra"]["segment"]["integrations"] == {"All": True}


async def test_a_batch_of_only_bad_items_is_400_listing_each(api: Api) -> None:
    answer = await api.post("/v1/batch", {"batch": [{"type": "track"}, {"userId": "c"}]})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "invalid_batch"
    assert error["field"] == "batch.0.userId"
    assert [(e["index"], e["field"]) for e in error["errors"]] == [(0, "userId"), (1, "type")]
    await published(api.runtime, 0)


async def test_the_batch_route_takes_one_message_of_any_type(api: Api) -> None:
    # What a webhook forwarder (one URL for every call) sends.
    for message in ({"type": "identify", "userId": "c1"}, {"type": "track", **TRACK}):
        answer = await api.post("/v1/batch", message)
        assert (answer.status_code, answer.json()["accepted"]) == (200, 1)
    assert [e.type for e in await published(api.runtime, 2)] == ["identify", "order_completed"]


@pytest.mark.parametrize("batch", [None, [], {"a": 1}])
async def test_a_batch_needs_a_non_empty_array(api: Api, batch: Any) -> None:
    answer = await api.post("/v1/batch", {"batch": batch})
    assert (answer.status_code, answer.json()["error"]["field"]) == (400, "batch")


async def test_clock_skew_is_corrected_from_sent_at(api: Api) -> None:
    # The device clock runs a day late; the event happened 90 s before the upload.
    body = {
        "userId": "c",
        "event": "x",
        "originalTimestamp": "2020-01-01T00:00:00Z",
        "sentAt": "2020-01-01T00:01:30Z",
    }
    assert (await api.post("/v1/track", body)).status_code == 200
    [event] = await published(api.runtime, 1)
    assert event.occurred_at == event.received_at - timedelta(seconds=90)
    assert event.context["extra"]["segment"]["originalTimestamp"] == "2020-01-01T00:00:00Z"


async def test_openapi_documents_the_routes_with_bodies(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    for kind in ("track", "identify", "page", "screen", "group", "alias", "batch"):
        operation = spec["paths"][f"/v1/{kind}"]["post"]
        assert "schema" in operation["requestBody"]["content"]["application/json"]
        assert {"200", "400", "401", "403", "413", "415", "429"} <= set(operation["responses"])
    assert "/v1/t" not in spec["paths"]


# --- the real Segment library -----------------------------------------------------------------


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """uvicorn on a loopback port in *this* event loop: the runtime's bus belongs to the loop that
    started it, so the server cannot run in a thread of its own. The blocking Segment client
    runs in a worker thread instead."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()  # the server failed to start: raise its error
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def _send_everything(client: Client) -> None:
    client.identify("c1", {"email": "ana@example.com", "firstName": "Ana"}, message_id="id-1")
    client.track(
        "c1",
        "Order Completed",
        {
            "order_id": "1001",
            "revenue": 50.0,
            "total": 59.9,
            "currency": "EUR",
            "products": [{"product_id": "p1", "name": "Mug", "price": 29.95, "quantity": 2}],
        },
        message_id="order-1001",
    )
    client.page(anonymous_id="a1", name="Home", properties={"url": "https://shop.example/"})
    client.alias("a1", "c1", message_id="alias-1")
    client.track(anonymous_id="a1", event="Coupon Applied", properties={"coupon": "X"})
    client.flush()


def assert_everything(events: list[EventEnvelope]) -> None:
    by_type = {e.type: e for e in events}
    assert set(by_type) == {"identify", "order_completed", "page_viewed", "alias", "coupon_applied"}
    assert all(
        (e.source, e.historical, e.workspace_id) == ("segment", False, "shop") for e in events
    )
    assert by_type["identify"].event_id == "id-1"
    assert by_type["identify"].traits == {"email": "ana@example.com", "first_name": "Ana"}
    order = by_type["order_completed"]
    assert (order.event_id, order.customer_id) == ("order-1001", "c1")
    assert (order.properties["total"], order.properties["currency"]) == ("59.9", "EUR")
    assert order.properties["items"] == [
        {"product_id": "p1", "name": "Mug", "price": "29.95", "quantity": 2}
    ]
    assert order.context["library"]["name"] == "analytics-python"
    assert by_type["page_viewed"].properties["url"] == "https://shop.example/"
    assert by_type["page_viewed"].anonymous_id == "a1"
    assert by_type["alias"].properties == {"previous_id": "a1"}
    assert by_type["coupon_applied"].properties["event_name"] == "Coupon Applied"


@pytest.mark.parametrize("compress", [False, True])
async def test_the_segment_library_in_sync_mode(api: Api, compress: bool) -> None:
    async with serving(api.app) as url:
        client = Client(api.keys["ingest"], host=url, sync_mode=True, gzip=compress)
        await asyncio.to_thread(_send_everything, client)
    assert_everything(await published(api.runtime, 5))


async def test_the_segment_library_batching_in_its_own_thread(api: Api) -> None:
    async with serving(api.app) as url:
        client = Client(api.keys["ingest"], host=url, gzip=True, upload_interval=0.05)
        try:
            await asyncio.to_thread(_send_everything, client)
        finally:
            await asyncio.to_thread(client.join)
    assert_everything(await published(api.runtime, 5))


async def test_the_segment_library_sees_our_rejections(api: Api) -> None:
    async with serving(api.app) as url:
        stranger = Client("ciclo_ingest_" + "x" * 40, host=url, sync_mode=True)
        with pytest.raises(APIError) as unknown:
            await asyncio.to_thread(stranger.track, "c1", "x")
        client = Client(api.keys["ingest"], host=url, sync_mode=True)
        with pytest.raises(APIError) as invalid:
            await asyncio.to_thread(client.track, "c1", "Order Completed", {"order_id": "1"})
    assert unknown.value.status == 401
    assert invalid.value.status == 400
    assert "properties.total" in invalid.value.message
    await published(api.runtime, 0)
