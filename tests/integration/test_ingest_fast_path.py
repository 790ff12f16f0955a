"""``POST /v1/events``'s fast path answers exactly as the FastAPI route does.

Every request below goes once to an app with the fast path and once to the same app without it
(the route alone); status, body (event ids aside), headers and what reached the bus must match,
and the fast path must have answered the accepted ones itself and passed every refusal on.
"""

from __future__ import annotations

import gzip
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from services.ingest.fast_path import PATH, EventFastPath
from services.runtime import Runtime
from shared.http import CicloApp
from shared.settings import ServerSettings
from shared.tenancy.keys import Scope
from tests.fixtures.events import published

Request = dict[str, Any]


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[tuple[Runtime, dict[str, str]]]:
    settings = ServerSettings(data_dir=tmp_path, rate_limit=1000, rate_limit_burst=1000)
    runtime = Runtime(services=("ingest",), server=settings)
    await runtime.start()
    await runtime.keys.ensure_workspace("shop")
    keys = {scope.value: (await runtime.keys.create_key("shop", scope))[1] for scope in Scope}
    info, revoked = await runtime.keys.create_key("shop", Scope.INGEST)
    await runtime.keys.revoke(info.id)
    keys["revoked"] = revoked
    yield runtime, keys
    await runtime.stop()


def _json(body: Any) -> bytes:
    return orjson.dumps(body)


def requests(keys: dict[str, str]) -> list[tuple[str, Request, int, bool]]:
    """(name, request, status, answered by the fast path) for a wide spread of requests."""
    bearer = {"Authorization": f"Bearer {keys['ingest']}", "Content-Type": "application/json"}
    signup = {
        "type": "signup",
        "customer_id": "c1",
        "occurred_at": "2026-11-20T10:00:00+01:00",
        "traits": {"email": "Ana@Example.COM", "phone": "+34 612 34 56 78"},
        "unknown_top_level": {"kept": True},
    }
    order = {
        "type": "order_completed",
        "customer_id": "c2",
        "event_id": "order-1",
        "properties": {
            "order_id": "o1",
            "total": "59.90",
            "currency": "EUR",
            "items": [{"product_id": "p1", "price": "59.90", "quantity": 1}],
        },
    }
    return [
        ("signup", {"headers": bearer, "content": _json(signup)}, 202, True),
        ("order", {"headers": bearer, "content": _json(order)}, 202, True),
        (
            "anonymous page view",
            {"headers": bearer, "content": _json({"type": "page_viewed", "anonymous_id": "a1"})},
            202,
            True,
        ),
        (
            "custom event",
            {
                "headers": bearer,
                "content": _json(
                    {"type": "quiz_done", "customer_id": "c3", "properties": {"n": 3}}
                ),
            },
            202,
            True,
        ),
        (
            "admin key, +json media type, caller's request id",
            {
                "headers": {
                    "Authorization": f"Bearer {keys['admin']}",
                    "Content-Type": "application/vnd.ciclo+json; charset=utf-8",
                    "X-Request-Id": "req-42",
                },
                "content": _json({"type": "x", "customer_id": "c4"}),
            },
            202,
            True,
        ),
        (
            "basic auth",
            {
                "headers": {"Content-Type": "application/json"},
                "auth": (keys["ingest"], ""),
                "content": _json({"type": "x", "customer_id": "c5"}),
            },
            202,
            True,
        ),
        (
            "no key",
            {"headers": {"Content-Type": "application/json"}, "content": _json(signup)},
            401,
            False,
        ),
        (
            "revoked key",
            {
                "headers": {**bearer, "Authorization": f"Bearer {keys['revoked']}"},
                "content": _json(signup),
            },
            401,
            False,
        ),
        (
            "unknown scheme",
            {"headers": {**bearer, "Authorization": "Token abc"}, "content": _json(signup)},
            401,
            False,
        ),
        (
            "malformed basic",
            {"headers": {**bearer, "Authorization": "Basic !!!"}, "content": _json(signup)},
            401,
            False,
        ),
        (
            "not JSON",
            {"headers": {**bearer, "Content-Type": "text/plain"}, "content": b"hello"},
            415,
            False,
        ),
        (
            "no content type",
            {"headers": {"Authorization": bearer["Authorization"]}, "content": _json(signup)},
            415,
            False,
        ),
        ("broken JSON", {"headers": bearer, "content": b'{"type": "x",'}, 400, False),
        ("not UTF-8", {"headers": bearer, "content": b'{"type": "\xff"}'}, 400, False),
        ("JSON not an object", {"headers": bearer, "content": b"[1, 2]"}, 422, False),
        ("empty body", {"headers": bearer, "content": b""}, 400, False),
        (
            "invalid email",
            {"headers": bearer, "content": _json({**signup, "traits": {"email": "nope"}})},
            422,
            False,
        ),
        ("no identity", {"headers": bearer, "content": _json({"type": "page_viewed"})}, 422, False),
        (
            "bad currency",
            {
                "headers": bearer,
                "content": _json(
                    {**order, "properties": {**order["properties"], "currency": "EURO"}}
                ),
            },
            422,
            False,
        ),
        (
            "int beyond 64 bits",
            {
                "headers": bearer,
                "content": b'{"type": "x", "customer_id": "c", '
                b'"properties": {"n": 40308976522711564214096363}}',
            },
            422,
            False,
        ),
        (
            "lone surrogate",
            {
                "headers": bearer,
                "content": b'{"type": "x", "customer_id": "c", "properties": {"s": "\\ud85f"}}',
            },
            422,
            False,
        ),
        (
            # Not JSON, though Python's parser reads it: refused, never stored as null.
            "NaN",
            {
                "headers": bearer,
                "content": b'{"type": "x", "customer_id": "c", "properties": {"n": NaN}}',
            },
            400,
            False,
        ),
        (
            "number too large for a double",
            {
                "headers": bearer,
                "content": b'{"type": "x", "customer_id": "c", "properties": {"n": 1e400}}',
            },
            400,
            False,
        ),
        (
            # Inflated by the route's middleware, not the fast path's to take.
            "gzip body",
            {
                "headers": {**bearer, "Content-Encoding": "gzip"},
                "content": gzip.compress(_json({**signup, "customer_id": "c7"})),
            },
            202,
            False,
        ),
        (
            "too large",
            {
                "headers": bearer,
                "content": _json(
                    {"type": "x", "customer_id": "c", "properties": {"s": "x" * 2_000_000}}
                ),
            },
            413,
            False,
        ),
        (
            "chunked (no Content-Length)",
            {"headers": bearer, "content": _chunks(_json({"type": "x", "customer_id": "c6"}))},
            202,
            False,
        ),
    ]


def _chunks(body: bytes) -> Any:
    async def stream() -> AsyncIterator[bytes]:
        yield body[:10]
        yield body[10:]

    return stream


async def _post(app: Any, request: Request) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ciclo") as client:
        request = dict(request)
        if callable(request.get("content")):
            request["content"] = request["content"]()
        return await client.post(PATH, **request)


def _comparable(answer: httpx.Response) -> tuple[int, Any, dict[str, str]]:
    body = answer.json()
    if isinstance(body, dict) and "event_id" in body:
        body = {**body, "event_id": "<id>"}
    headers = {k: v for k, v in answer.headers.items() if k != "x-request-id"}
    return answer.status_code, body, headers


def _event_fields(event: Any) -> dict[str, Any]:
    fields = event.model_dump(mode="json")
    if fields["occurred_at"] == fields.pop("received_at"):
        fields.pop("occurred_at")  # none given: the receipt time
    if fields["event_id"] != "order-1":
        fields.pop("event_id")
    return fields


async def test_every_request_gets_the_routes_answer(runtime) -> None:  # type: ignore[no-untyped-def]
    runtime, keys = runtime
    app = runtime.app()
    fast = app.fast_paths[("POST", PATH)]
    assert isinstance(fast, EventFastPath)
    route_only = runtime.app()
    route_only.fast_paths.clear()
    cases = requests(keys)
    for name, request, status, here in cases:
        handled = fast.handled
        with_fast = await _post(app, request)
        without = await _post(route_only, request)
        assert _comparable(with_fast) == _comparable(without), name
        assert with_fast.status_code == status, (name, with_fast.text)
        assert fast.handled == handled + here, f"{name}: answered by the fast path?"
        if "X-Request-Id" in request["headers"]:
            assert with_fast.headers["x-request-id"] == without.headers["x-request-id"] == "req-42"
        else:
            assert len(with_fast.headers["x-request-id"]) == 16
    # Each accepted request reached the bus once from each app, as the same event.
    accepted = sum(1 for _, _, status, _ in cases if status == 202)
    events = await published(runtime, 2 * accepted)
    twice = Counter(orjson.dumps(_event_fields(e), option=orjson.OPT_SORT_KEYS) for e in events)
    assert sorted(twice.values()) == [2] * accepted


@asynccontextmanager
async def _ingest(tmp_path: Path, **settings: Any) -> AsyncIterator[tuple[CicloApp, str]]:
    """An ingest runtime's app with ``settings``, and an ingest key of workspace 'shop'."""
    runtime = Runtime(services=("ingest",), server=ServerSettings(data_dir=tmp_path, **settings))
    await runtime.start()
    try:
        await runtime.keys.ensure_workspace("shop")
        _, key = await runtime.keys.create_key("shop", Scope.INGEST)
        yield runtime.app(), key
    finally:
        await runtime.stop()


async def test_the_rate_limit_and_its_retry_after_still_apply(tmp_path: Path) -> None:
    async with _ingest(tmp_path, rate_limit=1, rate_limit_burst=2) as (app, key):
        request = {
            "headers": {"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            "content": _json({"type": "x", "customer_id": "c"}),
        }
        answers = [await _post(app, request) for _ in range(3)]
        assert [a.status_code for a in answers] == [202, 202, 429]
        assert answers[2].headers["retry-after"] == "1"
        assert answers[2].json()["error"]["code"] == "rate_limited"
        # An invalid body over the limit is still a 429 first (the route's order of checks).
        invalid = {**request, "content": b"{}"}
        assert (await _post(app, invalid)).status_code == 429
        assert app.fast_paths[("POST", PATH)].handled == 2  # type: ignore[attr-defined]


async def test_a_bus_that_refuses_gives_the_same_503(runtime) -> None:  # type: ignore[no-untyped-def]
    runtime, keys = runtime
    app = runtime.app()
    route_only = runtime.app()
    route_only.fast_paths.clear()
    await runtime.bus.close()
    request = {
        "headers": {
            "Authorization": f"Bearer {keys['ingest']}",
            "Content-Type": "application/json",
        },
        "content": _json({"type": "x", "customer_id": "c"}),
    }
    with_fast = await _post(app, request)
    assert app.fast_paths[("POST", PATH)].handled == 1  # type: ignore[attr-defined]
    assert with_fast.status_code == 503
    assert with_fast.headers["retry-after"] == "5"
    assert _comparable(with_fast) == _comparable(await _post(route_only, request))


async def test_requests_are_counted_under_the_route_template(runtime) -> None:  # type: ignore[no-untyped-def]
    runtime, keys = runtime
    app = runtime.app()
    request = {
        "headers": {
            "Authorization": f"Bearer {keys['ingest']}",
            "Content-Type": "application/json",
        },
        "content": _json({"type": "x", "customer_id": "c"}),
    }

    def count(status: str) -> float:
        from prometheus_client import REGISTRY

        value = REGISTRY.get_sample_value(
            "ciclo_http_requests_total",
            {"method": "POST", "route": PATH, "status": status},
        )
        return value or 0.0

    before = count("202"), count("422")
    await _post(app, request)
    await _post(app, {**request, "content": b"{}"})
    assert (count("202"), count("422")) == (before[0] + 1, before[1] + 1)


async def test_with_cors_on_a_storefront_request_gets_the_cors_headers(tmp_path: Path) -> None:
    origin = "https://shop.example.com"
    async with _ingest(tmp_path, cors_origins=origin) as (app, key):
        answer = await _post(
            app,
            {
                "headers": {
                    "Authorization": f"Bearer {key}",
                    "Content-Type": "application/json",
                    "Origin": origin,
                },
                "content": _json({"type": "x", "customer_id": "c"}),
            },
        )
        assert answer.status_code == 202
        assert answer.headers["access-control-allow-origin"] == origin
