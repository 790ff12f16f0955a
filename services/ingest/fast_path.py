"""``POST /v1/events`` without the framework in the accepted case: what a storefront posts most.

FastAPI's route for one event costs more in routing, dependency solving, the request and response
objects and its own middleware stack than the event's real work (credentials, validation,
encoding, the durable publish). This ASGI handler sits in front of the FastAPI app (see
:class:`shared.http.CicloApp`) and does that work alone when everything about the request is
fine. It never decides a refusal: whatever it would not accept (a non-JSON content type, a
missing Content-Length or one over the limit, a Content-Encoding, a CORS request, credentials that
fail, an invalid body, a key over its rate limit) goes on to the FastAPI route with the body it
already read, and that route answers exactly as it always has: the same statuses, error bodies
and order of checks (415, 401, 403, 429, 422). The route also stays the one the OpenAPI document
describes.

Same behaviour in the accepted case too: the same validation (``parse_event`` on the parsed JSON,
as FastAPI validates a body), record, publish (202 only after the bus acknowledged, 503 with
Retry-After if it refused), response body and headers, request id, and request metrics.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from services.ingest.api import loads_events
from services.ingest.catalogue import parse_event
from services.ingest.envelope import event_id_of, record_for
from shared.bus.ports import OutgoingRecord, Publisher
from shared.errors import BusError
from shared.http import (
    HTTPProblem,
    bus_unavailable,
    count_request,
    is_json_media,
    receive_body,
    replay_body,
    request_id_of,
)
from shared.logging import request_id
from shared.ratelimit import RateLimiter
from shared.tenancy.http import credentials_from_header
from shared.tenancy.keys import KeyStore
from shared.tenancy.keys import Scope as KeyScope

PATH = "/v1/events"


class EventFastPath:
    """Handles ``POST /v1/events`` when it will be accepted; hands everything else to ``fallback``
    (the FastAPI app) untouched, its body replayed."""

    def __init__(
        self,
        *,
        publisher: Publisher,
        keys: KeyStore,
        limiter: RateLimiter | None,
        max_body_bytes: int,
        cors: bool,
    ) -> None:
        self.publisher = publisher
        self.keys = keys
        self.limiter = limiter
        self.max_body_bytes = max_body_bytes
        self.cors = cors  # with CORS on, a request with an Origin needs the CORS middleware
        self.handled = 0  # requests answered here (accepted, or refused by the bus)

    async def __call__(self, scope: Scope, receive: Receive, send: Send, fallback: ASGIApp) -> None:
        started = time.perf_counter()
        content_type = authorization = rid = None
        length = -1
        other = False  # a header that needs the framework's handling
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                length = int(value) if value.isdigit() else -1
            elif name == b"authorization":
                authorization = value
            elif name == b"x-request-id":
                rid = value
            elif name == b"content-encoding" or (name == b"origin" and self.cors):
                other = True
        if (
            other
            or content_type is None
            or authorization is None
            or not 0 < length <= self.max_body_bytes
            or not is_json_media(content_type.decode("latin-1"))
        ):
            await fallback(scope, receive, send)
            return
        body = await receive_body(receive)
        if body is None:
            return  # the client went away
        replay = replay_body(body, receive)
        try:
            plaintext = credentials_from_header(authorization.decode("latin-1"))
        except HTTPProblem:
            plaintext = None
        principal = await self.keys.authenticate(plaintext) if plaintext else None
        record = None
        if principal is not None and principal.allows(KeyScope.INGEST):
            try:
                # As the route reads its body: orjson would read an integer beyond 64 bits as
                # a float, where the route refuses it (the bus cannot carry it).
                event = parse_event(loads_events(body))
                record = record_for(
                    event, workspace_id=principal.workspace_id, received_at=datetime.now(UTC)
                )
            except Exception:  # the route answers it (422, or 400 for what json cannot parse)
                record = None
        # Last, once all else would be accepted: a refused acquire takes no token, so the
        # route's own look at the limiter answers the 429.
        if (
            record is None
            or principal is None
            or (self.limiter is not None and self.limiter.acquire(principal.key_id))
        ):
            await fallback(scope, replay, send)
            return
        await self._answer(scope, send, record, rid, started)

    async def _answer(
        self, scope: Scope, send: Send, record: OutgoingRecord, rid: bytes | None, started: float
    ) -> None:
        request_id_text = request_id_of(rid)
        token = request_id.set(request_id_text)
        status = 500
        try:
            try:
                # 202 only after the bus has durably accepted the event.
                await self.publisher.publish([record])
            except BusError as exc:
                refused = bus_unavailable(exc)
                status, headers, body = refused.status_code, refused.raw_headers, refused.body
            else:
                status = 202
                body = orjson.dumps({"event_id": event_id_of(record), "status": "accepted"})
                headers = [
                    (b"content-length", str(len(body)).encode()),
                    (b"content-type", b"application/json"),
                ]
            self.handled += 1
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [*headers, (b"x-request-id", request_id_text.encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})
        finally:
            request_id.reset(token)
            count_request("POST", PATH, status, started)
