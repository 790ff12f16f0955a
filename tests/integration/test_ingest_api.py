"""The ingest API over HTTP (httpx against the ASGI app), on the embedded bus."""

from __future__ import annotations

import gc
import gzip
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from services.runtime import GC_YOUNG_THRESHOLD, Runtime
from shared.settings import ServerSettings
from shared.tenancy.keys import Scope
from tests.fixtures.events import published


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime, dict[str, str]]]:
    runtime = Runtime(services=("ingest",), server=ServerSettings(data_dir=tmp_path))
    await runtime.start()
    await runtime.keys.ensure_workspace("shop")
    keys = {scope.value: (await runtime.keys.create_key("shop", scope))[1] for scope in Scope}
    transport = httpx.ASGITransport(app=runtime.app())
    async with httpx.AsyncClient(transport=transport, base_url="http://ciclo") as client:
        yield client, runtime, keys
    await runtime.stop()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_event_is_published_with_the_keys_workspace(api) -> None:  # type: ignore[no-untyped-def]
    client, runtime, keys = api
    answer = await client.post(
        "/v1/events",
        headers=auth(keys["ingest"]),
        json={
            "type": "signup",
            "customer_id": "c1",
            "workspace_id": "someone-else",
            "occurred_at": "2026-11-20T10:00:00+01:00",
            "traits": {"email": "ana@example.com"},
        },
    )
    assert answer.status_code == 202
    assert answer.headers["x-request-id"]
    [event] = await published(runtime, 1)
    assert event.event_id == answer.json()["event_id"]
    assert event.workspace_id == "shop"  # the key decides, never the body
    assert event.context["extra"] == {"workspace_id": "someone-else"}  # kept, not dropped
    assert event.occurred_at.isoformat() == "2026-11-20T09:00:00+00:00"


async def test_basic_auth_with_the_key_as_user_works(api) -> None:  # type: ignore[no-untyped-def]
    client, _, keys = api
    answer = await client.post(
        "/v1/events", auth=(keys["ingest"], ""), json={"type": "page_viewed", "anonymous_id": "a1"}
    )
    assert answer.status_code == 202


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ({}, 401, "missing API key"),
        ({"Authorization": "Bearer ciclo_ingest_" + "x" * 40}, 401, "unknown or revoked"),
        ({"Authorization": "Token abc"}, 401, "unsupported authorization scheme"),
    ],
)
async def test_bad_credentials_are_401(api, headers, status, message) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = api
    answer = await client.post(
        "/v1/events", headers=headers, json={"type": "x", "customer_id": "c"}
    )
    assert answer.status_code == status
    assert message in answer.json()["error"]["message"]
    assert answer.headers["www-authenticate"].startswith("Bearer")


async def test_an_admin_key_may_post(api) -> None:  # type: ignore[no-untyped-def]
    # That an ingest key may not read is checked where reading routes run: test_customers_api,
    # test_dispatch_checks (this runtime serves ingest alone).
    client, _, keys = api
    ok = await client.post(
        "/v1/events", headers=auth(keys["admin"]), json={"type": "x", "customer_id": "c"}
    )
    assert ok.status_code == 202


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"customer_id": "c1"}, "type", "Field required"),
        ({"type": "signup"}, "body", "customer_id or anonymous_id is required"),
        (
            {"type": "signup", "customer_id": "c1", "occurred_at": "2026-11-20T10:00:00"},
            "occurred_at",
            "timezone",
        ),
        ({"type": "bad type!", "customer_id": "c1"}, "type", "an event name is ASCII letters"),
        ({"type": "注文完了", "customer_id": "c1"}, "type", "not '注文完了'"),
        ({"type": "signup", "customer_id": "c1", "traits": []}, "traits", "valid dictionary"),
    ],
)
async def test_invalid_events_get_422_naming_the_field(api, body, field, message) -> None:  # type: ignore[no-untyped-def]
    client, runtime, keys = api
    answer = await client.post("/v1/events", headers=auth(keys["ingest"]), json=body)
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["field"] == field
    assert message in error["message"]
    await published(runtime, 0)


async def refused(client: httpx.AsyncClient, keys: dict[str, str], event: object) -> Any:
    """The error of posting ``event`` to /v1/events, which must be a 422."""
    answer = await client.post("/v1/events", headers=auth(keys["ingest"]), json=event)
    assert answer.status_code == 422, answer.text
    return answer.json()["error"]


@pytest.mark.parametrize(
    ("trait", "value", "message"),
    [
        *(
            ("birthday", b, "is not a date")
            for b in ["2020-13-45", "1990-02-29", "--02-30", "00-10"]
        ),
        ("country", "zz", "not an ISO 3166"),
        ("country", "12", "not an ISO 3166"),
        ("country", "UK", "is GB"),
    ],
)
async def test_a_trait_that_is_no_date_or_country_is_422(api, trait, value, message) -> None:  # type: ignore[no-untyped-def]
    client, runtime, keys = api
    error = await refused(
        client, keys, {"type": "identify", "customer_id": "c1", "traits": {trait: value}}
    )
    assert error["field"] == f"traits.{trait}"
    assert message in error["message"]
    await published(runtime, 0)


@pytest.mark.parametrize(
    ("trait", "value", "kept"),
    [
        *(("birthday", b, b) for b in ["1992-02-29", "--02-29", "12-31"]),
        ("country", "de", "DE"),
        ("country", "XK", "XK"),
        ("country", "gb", "GB"),
        ("first_name", "  Ana\n", "Ana"),
        ("last_name", "\u00a0Díaz ", "Díaz"),
        ("first_name", "   ", None),  # removed, as null is
        ("last_name", "", None),
    ],
)
async def test_a_date_country_or_name_trait_is_kept(api, trait, value, kept) -> None:  # type: ignore[no-untyped-def]
    client, runtime, keys = api
    answer = await client.post(
        "/v1/events",
        headers=auth(keys["ingest"]),
        json={"type": "identify", "customer_id": "c1", "traits": {trait: value}},
    )
    assert answer.status_code == 202, answer.text
    [event] = await published(runtime, 1)
    assert event.traits[trait] == kept


@pytest.mark.parametrize(
    ("field", "value"),
    [("customer_id", "c\n1"), ("anonymous_id", "a\x00"), ("event_id", "e\t1")],
)
async def test_an_id_with_a_control_character_is_422(api, field, value) -> None:  # type: ignore[no-untyped-def]
    # The customer API refuses control characters in a customer id, so a customer created
    # under one could never be read, exported or erased: such an id is refused on the way in.
    client, runtime, keys = api
    error = await refused(client, keys, {"type": "signup", "customer_id": "c1", field: value})
    assert error["field"] == field
    assert "control characters" in error["message"]
    await published(runtime, 0)


async def test_a_segment_user_id_with_a_control_character_is_400_naming_user_id(api) -> None:  # type: ignore[no-untyped-def]
    client, runtime, keys = api
    answer = await client.post(
        "/v1/identify", headers=auth(keys["ingest"]), json={"userId": "u\r\n1"}
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == "userId"
    await published(runtime, 0)


@pytest.mark.parametrize("when", [1700000000, "1700000000", "20261123", True])
async def test_an_occurred_at_that_is_not_rfc_3339_is_422(api, when) -> None:  # type: ignore[no-untyped-def]
    client, runtime, keys = api
    error = await refused(
        client, keys, {"type": "signup", "customer_id": "c1", "occurred_at": when}
    )
    assert error["field"] == "occurred_at"
    assert "RFC 3339" in error["message"]
    await published(runtime, 0)


async def test_batch_accepts_good_items_and_reports_bad_ones(api) -> None:  # type: ignore[no-untyped-def]
    client, runtime, keys = api
    answer = await client.post(
        "/v1/events/batch",
        headers=auth(keys["ingest"]),
        json={
            "events": [
                {"type": "signup", "customer_id": "c1"},
                {"type": "signup"},
                {"type": "page_viewed", "anonymous_id": "a1", "event_id": "mine-1"},
            ]
        },
    )
    assert answer.status_code == 202
    body = answer.json()
    assert (body["accepted"], body["rejected"]) == (2, 1)
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected", "accepted"]
    assert body["results"][2]["event_id"] == "mine-1"
    assert "customer_id or anonymous_id" in body["results"][1]["errors"][0]["message"]
    events = await published(runtime, 2)
    assert {e.type for e in events} == {"signup", "page_viewed"}


async def test_a_batch_item_that_is_not_an_object_is_one_rejected_item(api) -> None:  # type: ignore[no-untyped-def]
    # A bad item never drops the good ones, whatever it is: a number or a null in the list is
    # rejected on its own, by index, and the objects around it are published.
    client, runtime, keys = api
    answer = await client.post(
        "/v1/events/batch",
        headers=auth(keys["ingest"]),
        json={"events": [{"type": "signup", "customer_id": "c1"}, 1, None, "x"]},
    )
    assert answer.status_code == 202
    body = answer.json()
    assert (body["accepted"], body["rejected"]) == (1, 3)
    for result in body["results"][1:]:
        assert result["status"] == "rejected"
        assert result["errors"] == [{"field": "$", "message": "must be a JSON object"}]
    [event] = await published(runtime, 1)
    assert event.customer_id == "c1"
    only_bad = await client.post(
        "/v1/events/batch", headers=auth(keys["ingest"]), json={"events": [[], 2]}
    )
    assert only_bad.status_code == 422
    assert [r["index"] for r in only_bad.json()["results"]] == [0, 1]


async def test_batch_with_only_bad_items_is_422(api) -> None:  # type: ignore[no-untyped-def]
    client, _, keys = api
    answer = await client.post(
        "/v1/events/batch", headers=auth(keys["ingest"]), json={"events": [{"x": 1}]}
    )
    assert answer.status_code == 422
    assert answer.json()["rejected"] == 1


async def test_batch_results_keep_their_shape(api) -> None:  # type: ignore[no-untyped-def]
    # The results are written by hand, not through BatchResult: they must read as its dump does,
    # nulls included on a 202 and left out on a 422.
    client, _, keys = api
    accepted = await client.post(
        "/v1/events/batch",
        headers=auth(keys["ingest"]),
        json={"events": [{"type": "x", "customer_id": "c", "event_id": "e-1"}, {"type": "x"}]},
    )
    assert accepted.status_code == 202
    assert accepted.json() == {
        "accepted": 1,
        "rejected": 1,
        "results": [
            {"index": 0, "status": "accepted", "event_id": "e-1", "errors": None},
            {
                "index": 1,
                "status": "rejected",
                "event_id": None,
                "errors": [
                    {
                        "field": "$",
                        "message": "Value error, customer_id or anonymous_id is required",
                    }
                ],
            },
        ],
    }
    rejected = await client.post(
        "/v1/events/batch",
        headers=auth(keys["ingest"]),
        json={"events": [{"type": "order_completed", "customer_id": "c", "properties": {}}]},
    )
    assert rejected.status_code == 422
    assert rejected.headers["content-type"] == "application/json"
    assert rejected.json() == {
        "accepted": 0,
        "rejected": 1,
        "results": [
            {
                "index": 0,
                "status": "rejected",
                "errors": [
                    {"field": "properties.order_id", "message": "Field required"},
                    {"field": "properties.total", "message": "Field required"},
                    {"field": "properties.currency", "message": "Field required"},
                ],
            }
        ],
    }


async def test_batch_limit_is_1000(api) -> None:  # type: ignore[no-untyped-def]
    client, _, keys = api
    events = [{"type": "x", "customer_id": "c"}] * 1001
    answer = await client.post(
        "/v1/events/batch", headers=auth(keys["ingest"]), json={"events": events}
    )
    assert answer.status_code == 422
    assert answer.json()["error"]["field"] == "events"


async def test_health_and_metrics(api) -> None:  # type: ignore[no-untyped-def]
    client, _, keys = api
    assert (await client.get("/livez")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "bus": "ok", "ingest": "ok"}
    await client.post(
        "/v1/events", headers=auth(keys["ingest"]), json={"type": "x", "customer_id": "c"}
    )
    metrics = (await client.get("/metrics")).text
    assert 'ciclo_http_requests_total{method="POST",route="/v1/events",status="202"}' in metrics


async def test_oversized_body_is_413_whether_declared_or_streamed(api) -> None:  # type: ignore[no-untyped-def]
    client, runtime, keys = api
    big = b'{"type": "x", "customer_id": "c", "properties": {"blob": "' + b"a" * 1_100_000 + b'"}}'
    declared = await client.post(
        "/v1/events",
        headers={**auth(keys["ingest"]), "Content-Type": "application/json"},
        content=big,
    )
    assert declared.status_code == 413
    assert declared.json()["error"]["code"] == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    streamed = await client.post(
        "/v1/events",
        headers={**auth(keys["ingest"]), "Content-Type": "application/json"},
        content=chunks(),
    )
    assert streamed.status_code == 413
    await published(runtime, 0)


async def test_non_json_body_is_415(api) -> None:  # type: ignore[no-untyped-def]
    client, _, keys = api
    answer = await client.post(
        "/v1/events",
        headers={**auth(keys["ingest"]), "Content-Type": "text/plain"},
        content=b"type=signup",
    )
    assert answer.status_code == 415
    assert answer.json()["error"]["field"] == "Content-Type"


@pytest.mark.parametrize("path", ["/v1/events", "/v1/events/batch"])
async def test_checks_come_in_order_content_type_then_key_then_body(api, path: str) -> None:  # type: ignore[no-untyped-def]
    """415 before 401 before 422: what a request that fails several checks is told first."""
    client, runtime, keys = api
    not_json = await client.post(path, headers={"Content-Type": "text/plain"}, content=b"{}")
    assert not_json.status_code == 415
    assert not_json.json()["error"]["field"] == "Content-Type"
    no_key = await client.post(path, json={"type": "signup"})
    assert no_key.status_code == 401
    assert no_key.headers["www-authenticate"] == 'Bearer realm="ciclo"'
    admin_only = await client.post(path, headers=auth(keys["admin"]), json={"type": 1})
    assert admin_only.status_code == 422  # an admin key may post: the body is what fails
    wrong = await client.post(
        path, headers={**auth(keys["ingest"]), "Content-Type": "text/plain"}, content=b"{}"
    )
    assert wrong.status_code == 415
    await published(runtime, 0)


async def test_typed_properties_are_checked_and_normalised(api) -> None:  # type: ignore[no-untyped-def]
    client, runtime, keys = api
    bad = await client.post(
        "/v1/events",
        headers=auth(keys["ingest"]),
        json={
            "type": "order_completed",
            "customer_id": "c1",
            "properties": {"order_id": "o1", "total": 10, "currency": "EURO"},
        },
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "properties.currency"
    good = await client.post(
        "/v1/events",
        headers=auth(keys["ingest"]),
        json={
            "type": "order_completed",
            "customer_id": "c1",
            "properties": {"order_id": "o1", "total": 10.5, "currency": "eur", "gift_wrap": True},
            "traits": {"email": "Ana@EXAMPLE.com", "phone": "+49 30 1234567"},
        },
    )
    assert good.status_code == 202
    [event] = await published(runtime, 1)
    assert event.properties == {
        "order_id": "o1",
        "total": "10.5",
        "currency": "EUR",
        "gift_wrap": True,
    }
    assert event.traits == {"email": "Ana@example.com", "phone": "+49301234567"}


@pytest.mark.parametrize(
    "amount",
    [
        "1_000",
        "1e5",
        "1E2",
        "NaN",
        "Infinity",
        "+5",
        "\u0661\u0662",
        "\uff11\uff12",
        "",
        ".",
        "12 50",
    ],
)
async def test_money_text_python_would_read_but_json_does_not_write_is_422(api, amount) -> None:  # type: ignore[no-untyped-def]
    # Decimal reads "1_000" as 1000 and "1e5" as 1E+5 (which travels on as "1E+5" and no
    # journey condition reads as a number): refused, on the total and on an item's price.
    client, runtime, keys = api
    for field, properties in [
        ("properties.total", {"total": amount, "items": []}),
        (
            "properties.items.0.price",
            {"total": "1", "items": [{"product_id": "p", "price": amount}]},
        ),
    ]:
        error = await refused(
            client,
            keys,
            {
                "type": "order_completed",
                "customer_id": "c1",
                "properties": {"order_id": "o1", "currency": "EUR", **properties},
            },
        )
        assert error["field"] == field
        assert "is not a decimal amount" in error["message"]
    await published(runtime, 0)


async def test_money_text_as_shops_write_it_is_kept_as_a_decimal_string(api) -> None:  # type: ignore[no-untyped-def]
    client, runtime, keys = api
    for total in ["59.90", " 12.50 ", ".5", "7.", "0"]:
        answer = await client.post(
            "/v1/events",
            headers=auth(keys["ingest"]),
            json={
                "type": "order_completed",
                "customer_id": "c1",
                "properties": {"order_id": "o1", "total": total, "currency": "EUR"},
            },
        )
        assert answer.status_code == 202, answer.text
    events = await published(runtime, 5)
    assert [e.properties["total"] for e in events] == ["59.90", "12.50", "0.5", "7", "0"]


async def test_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    settings = ServerSettings(data_dir=tmp_path, rate_limit=1, rate_limit_burst=2)
    runtime = Runtime(services=("ingest",), server=settings)
    await runtime.start()
    try:
        await runtime.keys.ensure_workspace("shop")
        _, key = await runtime.keys.create_key("shop", Scope.INGEST)
        _, other = await runtime.keys.create_key("shop", Scope.INGEST)
        transport = httpx.ASGITransport(app=runtime.app())
        async with httpx.AsyncClient(transport=transport, base_url="http://ciclo") as client:
            body = {"type": "x", "customer_id": "c"}
            codes = [
                (await client.post("/v1/events", headers=auth(key), json=body)).status_code
                for _ in range(3)
            ]
            assert codes == [202, 202, 429]
            limited = await client.post("/v1/events", headers=auth(key), json=body)
            assert limited.headers["retry-after"] == "1"
            assert limited.json()["error"]["code"] == "rate_limited"
            # The limit is per key: another key of the same workspace is not affected.
            assert (
                await client.post("/v1/events", headers=auth(other), json=body)
            ).status_code == 202
    finally:
        await runtime.stop()


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type": "x", "customer_id": "c", "properties": {"n": 40308976522711564214096363}}',
        b'{"type": "x", "customer_id": "c", "properties": {"s": "\\ud85f"}}',
    ],
    ids=["int-beyond-64-bits", "lone-surrogate"],
)
async def test_what_json_on_the_wire_cannot_carry_is_422_not_500(api, raw: bytes) -> None:  # type: ignore[no-untyped-def]
    # Found by schemathesis: Python's JSON parser accepts both, the bus encoding does not.
    client, runtime, keys = api
    headers = {**auth(keys["ingest"]), "Content-Type": "application/json"}
    single = await client.post("/v1/events", headers=headers, content=raw)
    assert single.status_code == 422
    assert "cannot be encoded" in single.json()["error"]["message"]
    batch = await client.post(
        "/v1/events/batch",
        headers=headers,
        content=b'{"events": [' + raw + b', {"type": "ok", "customer_id": "c"}]}',
    )
    assert batch.status_code == 202
    assert [r["status"] for r in batch.json()["results"]] == ["rejected", "accepted"]
    await published(runtime, 1)


async def test_implausible_timestamps_are_422_not_500(api) -> None:  # type: ignore[no-untyped-def]
    # Year 1 with an offset cannot even be converted to UTC (found through the Segment routes).
    client, runtime, keys = api
    for when in ("0001-01-01T00:00:00+05:00", "1969-12-31T23:59:59Z", "2999-01-01T00:00:00Z"):
        answer = await client.post(
            "/v1/events",
            headers=auth(keys["ingest"]),
            json={"type": "x", "customer_id": "c", "occurred_at": when},
        )
        assert answer.status_code == 422, when
        assert answer.json()["error"]["field"] == "occurred_at"
    await published(runtime, 0)


async def test_a_clients_own_context_extra_is_kept(api) -> None:  # type: ignore[no-untyped-def]
    client, runtime, keys = api
    await client.post(
        "/v1/events",
        headers=auth(keys["ingest"]),
        json={"type": "x", "customer_id": "c", "odd": 1, "context": {"extra": {"mine": True}}},
    )
    [event] = await published(runtime, 1)
    assert event.context["extra"] == {"odd": 1, "context_extra": {"mine": True}}


async def test_a_bus_that_refuses_gives_503_so_clients_retry(api) -> None:  # type: ignore[no-untyped-def]
    client, runtime, keys = api
    await runtime.bus.close()
    answer = await client.post(
        "/v1/events", headers=auth(keys["ingest"]), json={"type": "x", "customer_id": "c"}
    )
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "5"
    assert answer.json()["error"]["code"] == "unavailable"


async def test_cors_preflight_for_storefront_pages(tmp_path: Path) -> None:
    settings = ServerSettings(data_dir=tmp_path, cors_origins="https://shop.example.com")
    runtime = Runtime(services=("ingest",), server=settings)
    await runtime.start()
    try:
        transport = httpx.ASGITransport(app=runtime.app())
        async with httpx.AsyncClient(transport=transport, base_url="http://ciclo") as client:
            preflight = await client.options(
                "/v1/events",
                headers={
                    "Origin": "https://shop.example.com",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization,content-type",
                },
            )
            assert preflight.status_code == 200
            assert preflight.headers["access-control-allow-origin"] == "https://shop.example.com"
            other = await client.options(
                "/v1/events",
                headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
            )
            assert "access-control-allow-origin" not in other.headers
    finally:
        await runtime.stop()


@pytest.mark.parametrize("tune_gc", [True, False])
async def test_a_server_settles_its_heap_once_started(tmp_path: Path, tune_gc: bool) -> None:
    """`ciclo run` / `ciclo serve` (tune_gc) freeze the start-up heap and collect the youngest
    generation less often once the app has started; a runtime among others (tests) leaves the
    collector alone."""
    before = gc.get_threshold()
    gc.unfreeze()
    runtime = Runtime(
        services=("ingest",), server=ServerSettings(data_dir=tmp_path), tune_gc=tune_gc
    )
    app = runtime.app()
    try:
        async with app.router.lifespan_context(app):
            assert (gc.get_threshold()[0] == GC_YOUNG_THRESHOLD) is tune_gc
            assert (gc.get_freeze_count() > 0) is tune_gc
            assert gc.get_threshold()[1:] == before[1:]
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://ciclo") as client:
                assert (await client.get("/livez")).status_code == 200
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


async def test_gzip_bodies_are_inflated_on_both_native_routes(api) -> None:  # type: ignore[no-untyped-def]
    client, runtime, keys = api
    headers = {**auth(keys["ingest"]), "Content-Type": "application/json"}
    gz = {**headers, "Content-Encoding": "gzip"}
    one = {"type": "signup", "customer_id": "g1", "traits": {"email": "g1@example.com"}}
    single = await client.post("/v1/events", headers=gz, content=gzip.compress(orjson.dumps(one)))
    assert single.status_code == 202, single.text
    batch = {"events": [{"type": "page_viewed", "customer_id": "g2"}, {"type": "x"}]}
    answer = await client.post(
        "/v1/events/batch", headers=gz, content=gzip.compress(orjson.dumps(batch))
    )
    assert answer.status_code == 202, answer.text
    assert [r["status"] for r in answer.json()["results"]] == ["accepted", "rejected"]
    events = await published(runtime, 2)
    assert {e.customer_id for e in events} == {"g1", "g2"}
    assert next(e for e in events if e.customer_id == "g1").traits["email"] == "g1@example.com"


async def test_bad_encodings_name_the_field(api) -> None:  # type: ignore[no-untyped-def]
    client, runtime, keys = api
    headers = {**auth(keys["ingest"]), "Content-Type": "application/json"}
    body = orjson.dumps({"type": "x", "customer_id": "c"})
    brotli = await client.post(
        "/v1/events", headers={**headers, "Content-Encoding": "br"}, content=body
    )
    assert brotli.status_code == 415
    assert brotli.json()["error"]["field"] == "Content-Encoding"
    broken = await client.post(
        "/v1/events", headers={**headers, "Content-Encoding": "gzip"}, content=b"not gzip"
    )
    assert broken.status_code == 400
    assert broken.json()["error"]["field"] == "body"
    assert "gzip" in broken.json()["error"]["message"]
    # 2 MiB of zeros, a few KB compressed, inflate past the body limit (1 MiB by default).
    bomb = gzip.compress(b"0" * (2 * 1024 * 1024))
    over = await client.post(
        "/v1/events/batch", headers={**headers, "Content-Encoding": "gzip"}, content=bomb
    )
    assert over.status_code == 413
    assert over.json()["error"]["field"] == "body"
    assert over.headers["x-request-id"]
    await published(runtime, 0)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"type":', "the body is not valid JSON: Expecting value at character 8"),
        (b'{"type": "\xff\xfe"}', "the body is not valid JSON: it is not UTF-8 text"),
        (
            b'{"type": "x", "customer_id": "c1", "properties": {"a": '
            + b"[" * 5000
            + b"]" * 5000
            + b"}}",
            "the body is not valid JSON: its arrays and objects nest too deeply",
        ),
        (b"", "the body is empty: send a JSON object"),
        # What the fast path, Segment and import refuse too: never stored as null.
        (
            b'{"type": "x", "customer_id": "c1", "properties": {"ratio": NaN}}',
            "the body is not valid JSON: NaN is not a JSON number at character 59",
        ),
        (
            b'{"type": "x", "customer_id": "c1", "properties": {"ratio": -Infinity}}',
            "the body is not valid JSON: -Infinity is not a JSON number at character 59",
        ),
        (
            b'{"type": "x", "customer_id": "c1", "properties": {"ratio": 1e400}}',
            "the body is not valid JSON: 1e400 is not a JSON number at character 59",
        ),
    ],
)
async def test_a_body_that_is_not_utf8_json_is_a_400_naming_the_body(  # type: ignore[no-untyped-def]
    api, content: bytes, message: str
) -> None:
    client, runtime, keys = api
    headers = {**auth(keys["ingest"]), "Content-Type": "application/json"}
    for path in ("/v1/events", "/v1/events/batch"):
        answer = await client.post(path, headers=headers, content=content)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"] == {
            "status": 400,
            "code": "invalid_body",
            "message": message,
            "field": "body",
        }
    await published(runtime, 0)
