"""The Segment-compatible tracking API (RudderStack speaks the same): ``POST /v1/identify``,
``/v1/track``, ``/v1/page``, ``/v1/screen``, ``/v1/group``, ``/v1/alias`` and ``/v1/batch``, plus
the one-letter paths analytics.js posts to (``/v1/i``, ``/v1/t``, …, ``/v1/b``; not in the schema).

A request is authenticated (``Authorization`` first, else ``writeKey`` in the body), read under a
byte cap with gzip inflated under the same cap, parsed, mapped onto the native catalogue by
:mod:`services.ingest.segment_mapping` and published; the answer (``{"success": true}``) comes only
after the bus acknowledged. A batch accepts its good items and reports the bad ones by index;
``/v1/batch`` also takes a single message of any type (webhook forwarders use one URL for all).

Errors are rendered by :mod:`shared.http`'s one handler as ``{"error": {status, code, message,
field}}``; all but one come from there::

    HTTPProblem
    ├── InvalidPayload          400  bad JSON or gzip, wrong shape, an invalid event (here)
    ├── Unauthorized            401  no key, unknown or revoked key
    ├── Forbidden               403  a key without the ingest scope
    ├── PayloadTooLarge         413  32 KB per event; 500 KB or 2,500 events per batch
    ├── UnsupportedMediaType    415  a Content-Type or Content-Encoding we do not read
    └── TooManyRequests         429  the key's rate limit, with Retry-After
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from services.ingest.catalogue import EventBase
from services.ingest.envelope import record_for
from services.ingest.segment_mapping import (
    CREDENTIAL,
    KINDS,
    BatchDefaults,
    Problem,
    Rejected,
    batch_defaults,
    merge_batch,
    to_event,
)
from shared.bus.ports import OutgoingRecord, Publisher
from shared.clock import Clock, SystemClock
from shared.http import (
    Forbidden,
    HTTPProblem,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
    problem,
)
from shared.tenancy.http import authenticate, credentials, keystore
from shared.tenancy.http import limit as rate_limit
from shared.tenancy.keys import Principal, Scope

MAX_EVENT_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
MAX_BATCH_EVENTS = 2_500
# analytics.js posts text/plain so that browsers skip the CORS preflight; its body is JSON all
# the same. Anything else (a form, XML) is refused with 415.
MEDIA_TYPES = frozenset({"application/json", "text/plain"})

PATHS = (
    *(f"/v1/{name}" for kind in KINDS for name in (kind, kind[0])),
    "/v1/batch",
    "/v1/b",
)
"""Every Segment-compatible route's path (each takes gzip bodies: :func:`gzipped`)."""
_CHALLENGE = {"WWW-Authenticate": 'Basic realm="ciclo"'}


class InvalidPayload(HTTPProblem):
    """400, as Segment's API answers a payload it cannot use; its clients and dashboards expect
    that, not the native API's 422."""

    status = 400
    code = "invalid_payload"


class Ack(BaseModel):
    success: bool = True


class ItemError(BaseModel):
    index: int
    field: str
    message: str


class BatchAck(Ack):
    accepted: int
    rejected: int
    errors: list[ItemError]


def segment_router(*, publisher: Publisher, clock: Clock | None = None) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["segment"])
    now = (clock or SystemClock()).now
    errors: dict[int | str, dict[str, Any]] = {
        400: {"description": "bad JSON or gzip, or an invalid event (naming the field)"},
        401: {"description": "no write key, or an unknown or revoked one"},
        403: {"description": "the key lacks the ingest scope"},
        413: {"description": "over 32 KB per event, or 500 KB or 2,500 events per batch"},
        415: {"description": "not JSON, or a Content-Encoding other than gzip"},
        429: {"description": "the key's rate limit; see Retry-After"},
    }

    def one(kind: str) -> Callable[[Request], Awaitable[Ack | JSONResponse]]:
        async def post_message(request: Request) -> Ack | JSONResponse:
            received_at = now()
            body, principal = await _receive(request, max_bytes=MAX_EVENT_BYTES, what="an event")
            if body.get("type") not in (None, kind):
                raise InvalidPayload(
                    f"type {body['type']!r} was posted to /v1/{kind}", field="type"
                )
            try:
                event = to_event(body, kind=kind, received_at=received_at)
            except Rejected as exc:
                listed = [asdict(p) for p in exc.problems]
                return _bad_request("invalid_event", exc.problems[0], listed)
            # 200 only once the bus has durably accepted the event: a client that sees it may
            # forget the event.
            await publisher.publish([_record(event, principal, received_at)])
            return Ack()

        return post_message

    async def post_batch(request: Request) -> BatchAck | JSONResponse:
        received_at = now()
        body, principal = await _receive(request, max_bytes=MAX_BATCH_BYTES, what="a batch")
        if "batch" not in body and "type" in body:
            # One message of any type, as webhook forwarders post every call to a single URL.
            body = {"batch": [body]}
        items = body.pop("batch", None)
        if not isinstance(items, list) or not items:
            raise InvalidPayload("batch is required: a non-empty array of messages", field="batch")
        if len(items) > MAX_BATCH_EVENTS:
            raise PayloadTooLarge(
                f"the batch holds {len(items):,} events; the limit is {MAX_BATCH_EVENTS:,}",
                field="batch",
            )
        try:
            defaults = batch_defaults(body)
        except Rejected as exc:
            return _bad_request("invalid_batch", exc.problems[0], [asdict(exc.problems[0])])
        rejected: list[ItemError] = []
        records = []
        for index, item in enumerate(items):
            try:
                event = _batch_item(item, defaults, received_at=received_at)
            except Rejected as exc:
                rejected += [
                    ItemError(index=index, field=p.field, message=p.message) for p in exc.problems
                ]
                continue
            records.append(_record(event, principal, received_at))
        if not records:
            first = Problem(f"batch.{rejected[0].index}.{rejected[0].field}", rejected[0].message)
            listed = [e.model_dump() for e in rejected]
            lead = "every event in the batch was rejected; the first: "
            return _bad_request("invalid_batch", first, listed, lead=lead)
        # One durable publish for the whole batch, acknowledged before we answer.
        await publisher.publish(records)
        return BatchAck(
            accepted=len(records), rejected=len({e.index for e in rejected}), errors=rejected
        )

    for kind in KINDS:
        router.add_api_route(
            f"/{kind}",
            one(kind),
            methods=["POST"],
            summary=f"Segment {kind}",
            response_model=Ack,
            responses=errors,
            openapi_extra={"requestBody": _request_body(_MESSAGE, _EXAMPLES[kind])},
        )
        router.add_api_route(
            f"/{kind[0]}", one(kind), methods=["POST"], response_model=Ack, include_in_schema=False
        )
    router.add_api_route(
        "/batch",
        post_batch,
        methods=["POST"],
        summary="Segment batch: up to 2,500 messages; each is accepted or rejected on its own",
        response_model=BatchAck,
        responses=errors,
        openapi_extra={"requestBody": _request_body(_BATCH, _EXAMPLES["batch"])},
    )
    router.add_api_route(
        "/b", post_batch, methods=["POST"], response_model=BatchAck, include_in_schema=False
    )
    return router


async def _receive(
    request: Request, *, max_bytes: int, what: str
) -> tuple[dict[str, Any], Principal]:
    """The body as a JSON object, and who sent it."""
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media not in MEDIA_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, not {media or 'missing'!r}",
            field="Content-Type",
        )
    header_key = credentials(request)
    keys = keystore(request)
    # A key in a header is checked (and rate limited) before the body is read: no work for a
    # stranger or a client over its limit.
    principal = None
    if header_key:
        principal = rate_limit(request, await authenticate(keys, header_key, Scope.INGEST))
    body = _json(await read_body(request, max_bytes=max_bytes, what=what))
    if not isinstance(body, dict):
        raise InvalidPayload("the body must be a JSON object", field="body")
    # The write key is a credential: it leaves the body here and is never stored.
    body_key = body.pop(CREDENTIAL, None)
    if body_key is not None and not isinstance(body_key, str):
        raise Unauthorized("writeKey must be a string", field=CREDENTIAL, headers=_CHALLENGE)
    if principal is not None:
        if body_key and body_key != header_key:
            raise Unauthorized(
                "writeKey in the body and the Authorization header are different keys",
                field=CREDENTIAL,
                headers=_CHALLENGE,
            )
        return body, principal
    if not body_key:
        raise Unauthorized(
            "missing write key: send writeKey in the body, HTTP Basic with the key as user, "
            "or Authorization: Bearer <key>",
            field=CREDENTIAL,
            headers=_CHALLENGE,
        )
    try:
        principal = await authenticate(keys, body_key, Scope.INGEST)
    except (Unauthorized, Forbidden) as exc:
        raise type(exc)(exc.message, field=CREDENTIAL, headers=exc.headers) from None
    return body, rate_limit(request, principal)


def gzipped(coding: str) -> bool:
    """Whether a request's ``Content-Encoding`` (as sent) is gzip: False for none (empty) or
    ``identity``; 415 naming the header for any other coding."""
    coding = coding.strip().lower()
    if coding in ("", "identity"):
        return False
    if coding in ("gzip", "x-gzip"):
        return True
    raise UnsupportedMediaType(
        f"Content-Encoding {coding!r} is not supported: send gzip or none",
        field="Content-Encoding",
    )


async def read_body(request: Request, *, max_bytes: int, what: str) -> bytes:
    """The request body, gzip inflated, never more than ``max_bytes`` in memory either way."""
    inflate = gzipped(request.headers.get("content-encoding", ""))
    too_large = PayloadTooLarge(
        f"the body is over the limit for {what}: {max_bytes // 1024} KB ({max_bytes:,} bytes)",
        field="body",
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        # Compressed bytes count too: gzip cannot shrink JSON this large below the cap anyway.
        if len(raw) > max_bytes:
            raise too_large
    if not inflate:
        return bytes(raw)
    return gunzip(bytes(raw), max_bytes=max_bytes, error=too_large)


def gunzip(data: bytes, *, max_bytes: int, error: PayloadTooLarge) -> bytes:
    """Inflate gzip (one member or several), never producing more than ``max_bytes + 1`` bytes:
    a zip bomb costs the cap, not the memory it would expand to."""
    out = bytearray()
    while data:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(data, max_bytes + 1 - len(out))
        except zlib.error as exc:
            raise InvalidPayload(f"the body is not valid gzip: {exc}", field="body") from None
        if len(out) > max_bytes:
            raise error
        if not inflater.eof:
            raise InvalidPayload("the gzip body is truncated", field="body")
        data = inflater.unused_data
    return bytes(out)


def _json(raw: bytes) -> Any:
    if not raw.strip():
        raise InvalidPayload("the body is empty: send a JSON object", field="body")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidPayload(f"the body is not valid JSON: {exc}", field="body") from None


def _batch_item(item: Any, defaults: BatchDefaults, *, received_at: datetime) -> EventBase:
    if not isinstance(item, dict):
        raise Rejected([Problem("$", "must be a JSON object")])
    size = len(orjson.dumps(item))
    if size > MAX_EVENT_BYTES:
        limit = f"32 KB ({MAX_EVENT_BYTES:,} bytes)"
        raise Rejected([Problem("$", f"the event is {size:,} bytes, over the limit of {limit}")])
    kind = item.get("type")
    if not isinstance(kind, str):
        raise Rejected([Problem("type", f"type is required: one of {', '.join(KINDS)}")])
    return to_event(merge_batch(item, defaults), kind=kind, received_at=received_at)


def _record(event: EventBase, principal: Principal, received_at: datetime) -> OutgoingRecord:
    # The key decides the workspace, never the body.
    return record_for(
        event, workspace_id=principal.workspace_id, received_at=received_at, source="segment"
    )


def _bad_request(
    code: str, first: Problem, errors: list[dict[str, Any]], *, lead: str = ""
) -> JSONResponse:
    # Returned rather than raised: the one error shape, plus every problem under "errors".
    message = f"{lead}{first.field}: {first.message}"
    return problem(400, code, message, field=first.field, extra={"errors": errors})


# --- OpenAPI: the handlers read the raw body (gzip, size caps), so the schema is declared here --

_TIME = {"type": "string", "format": "date-time"}
_OBJECT = {"type": "object", "additionalProperties": True}
_MESSAGE: dict[str, Any] = {
    "type": "object",
    "description": "A Segment message; userId or anonymousId is required. Unknown fields are kept.",
    "additionalProperties": True,
    "properties": {
        "type": {"type": "string", "enum": list(KINDS)},
        "userId": {"type": "string"},
        "anonymousId": {"type": "string"},
        "messageId": {"type": "string", "maxLength": 99, "description": "The dedupe key."},
        "timestamp": _TIME,
        "originalTimestamp": _TIME,
        "sentAt": _TIME,
        "context": _OBJECT,
        "integrations": _OBJECT,
        "event": {"type": "string", "description": "track: the action's name"},
        "properties": _OBJECT,
        "traits": _OBJECT,
        "name": {"type": "string", "description": "page and screen"},
        "groupId": {"type": "string", "description": "group"},
        "previousId": {"type": "string", "description": "alias"},
        CREDENTIAL: {"type": "string", "description": "The write key, if not in a header."},
    },
}
_BATCH: dict[str, Any] = {
    "type": "object",
    "required": ["batch"],
    "additionalProperties": True,
    "properties": {
        "batch": {"type": "array", "items": _MESSAGE, "minItems": 1, "maxItems": MAX_BATCH_EVENTS},
        "context": _OBJECT,
        "integrations": _OBJECT,
        "sentAt": _TIME,
        CREDENTIAL: {"type": "string"},
    },
}
_ORDER = {
    "type": "track",
    "userId": "c1",
    "messageId": "order-1001",
    "timestamp": "2026-11-23T09:30:00+01:00",
    "event": "Order Completed",
    "properties": {
        "order_id": "1001",
        "total": 59.9,
        "currency": "EUR",
        "products": [{"product_id": "sku-1", "name": "Mug", "price": 29.95, "quantity": 2}],
    },
}
_EXAMPLES: dict[str, dict[str, Any]] = {
    "track": _ORDER,
    "identify": {"type": "identify", "userId": "c1", "traits": {"email": "ana@example.com"}},
    "page": {"type": "page", "anonymousId": "a-77", "name": "Home", "properties": {"path": "/"}},
    "screen": {"type": "screen", "userId": "c1", "name": "Cart"},
    "group": {"type": "group", "userId": "c1", "groupId": "acme", "traits": {"plan": "pro"}},
    "alias": {"type": "alias", "userId": "c1", "previousId": "a-77"},
    "batch": {"batch": [_ORDER], "context": {"library": {"name": "analytics-python"}}},
}


def _request_body(schema: dict[str, Any], example: dict[str, Any]) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/json": {"schema": schema, "example": example}},
    }
