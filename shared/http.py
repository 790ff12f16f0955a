"""HTTP plumbing shared by every service: health, metrics, errors, request ids.

Errors: raise an :class:`HTTPProblem` subclass anywhere; one handler renders
``{"error": {"status", "code", "message", "field"?}}``. Payload validation errors (422) come out in
the same shape with every offending field.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, Protocol

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import BusError, CicloError
from shared.logging import request_id

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[None]]

HTTP_REQUESTS = Counter(
    "ciclo_http_requests_total",
    "HTTP requests by route template and status",
    ["method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "ciclo_http_request_seconds",
    "HTTP request latency by route template",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class HTTPProblem(CicloError):
    """An error with an HTTP status, a stable code and a message that says what and where."""

    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.headers = headers or {}
        self.extra = extra or {}


class Unauthorized(HTTPProblem):
    status = 401
    code = "unauthorized"


class Forbidden(HTTPProblem):
    status = 403
    code = "forbidden"


class Unprocessable(HTTPProblem):
    status = 422
    code = "validation_failed"


class NotFound(HTTPProblem):
    status = 404
    code = "not_found"


class Conflict(HTTPProblem):
    status = 409
    code = "conflict"


class PayloadTooLarge(HTTPProblem):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(HTTPProblem):
    status = 415
    code = "unsupported_media_type"


class TooManyRequests(HTTPProblem):
    status = 429
    code = "rate_limited"


class ServiceUnavailable(HTTPProblem):
    status = 503
    code = "unavailable"


def is_json_media(content_type: str) -> bool:
    """Whether a Content-Type is JSON: ``application/json`` or ``application/*+json``."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def require_json(request: Request) -> None:
    """415 unless the body is JSON (:func:`is_json_media`)."""
    content_type = request.headers.get("content-type", "")
    if not is_json_media(content_type):
        raise UnsupportedMediaType(
            f"send JSON with Content-Type: application/json, not {content_type or 'nothing'!r}",
            field="Content-Type",
        )


def problem(
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"status": status, "code": code, "message": message}
    if field is not None:
        body["field"] = field
    if extra:
        body.update(extra)
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def bus_unavailable(exc: BusError) -> JSONResponse:
    """The answer when the bus refused to take events: nothing was acknowledged, and a 503 with
    Retry-After tells clients (Segment's libraries too) to retry."""
    log.error("bus refused a request: %s", exc)
    return problem(
        503,
        "unavailable",
        "the event bus is not accepting events right now; retry",
        headers={"Retry-After": "5"},
    )


def _field_path(loc: Sequence[Any], union_tags: frozenset[str]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
        # A tagged union puts its tag first (body.order_completed.properties.total): not a field.
        if parts and parts[0] in union_tags:
            parts = parts[1:]
        if not parts:
            return "body"
    return ".".join(parts) or "body"


_FASTAPI_UNPARSABLE = "There was an error parsing the body"


def _unparsable(cause: BaseException | None) -> str:
    """Why a body that is not a JSON syntax error still could not be parsed."""
    if isinstance(cause, RecursionError):
        # json.loads recurses once per array or object: a document a client means to send
        # never nests near Python's limit (about a thousand levels).
        return "the body is not valid JSON: its arrays and objects nest too deeply"
    if isinstance(cause, UnicodeError):
        return "the body is not valid JSON: it is not UTF-8 text"
    return "the body could not be read as UTF-8 JSON"


def install_error_handlers(app: FastAPI, *, union_tags: frozenset[str] = frozenset()) -> None:
    @app.exception_handler(HTTPProblem)
    async def _problem(_request: Request, exc: HTTPProblem) -> JSONResponse:
        return problem(
            exc.status, exc.code, exc.message, field=exc.field, extra=exc.extra, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        unparsable = next((e for e in exc.errors() if e["type"] == "json_invalid"), None)
        if unparsable is not None:
            # FastAPI puts the character offset where a field would be: ("body", 6).
            at = unparsable["loc"][-1]
            reason = (unparsable.get("ctx") or {}).get("error", "JSON decode error")
            return problem(
                400,
                "invalid_body",
                f"the body is not valid JSON: {reason} at character {at}",
                field="body",
            )
        if any(e["type"] == "missing" and tuple(e["loc"]) == ("body",) for e in exc.errors()):
            # No body at all where one is required: not JSON, like a body that does not parse.
            return problem(
                400, "invalid_body", "the body is empty: send a JSON object", field="body"
            )
        errors = [
            {"field": _field_path(e["loc"], union_tags), "message": e["msg"], "type": e["type"]}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"field": "body", "message": "invalid"}
        return problem(
            422,
            "validation_failed",
            f"{first['field']}: {first['message']}",
            field=str(first["field"]),
            extra={"errors": errors},
        )

    @app.exception_handler(BusError)
    async def _bus_down(_request: Request, exc: BusError) -> JSONResponse:
        return bus_unavailable(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == _FASTAPI_UNPARSABLE:
            # FastAPI's answer to a body its JSON parser gave up on (the cause says why): name
            # the field and the reason.
            return problem(400, "invalid_body", _unparsable(exc.__cause__), field="body")
        return problem(
            exc.status_code, "http_error", str(exc.detail), headers=getattr(exc, "headers", None)
        )


def health_router(checks: Mapping[str, ReadinessCheck]) -> APIRouter:
    """``/livez`` (up, no dependency checks), ``/readyz`` (every check passes), ``/metrics``."""
    router = APIRouter(include_in_schema=False)

    @router.get("/livez")
    async def livez() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> Response:
        results: dict[str, str] = {}
        ok = True
        for name, check in checks.items():
            try:
                await check()
                results[name] = "ok"
            except Exception as exc:
                ok = False
                results[name] = f"error: {exc.__class__.__name__}: {exc}"[:300]
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", "checks": results},
            status_code=200 if ok else 503,
        )

    @router.get("/metrics")
    async def metrics() -> Response:
        return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


@functools.cache
def _children(method: str, route: str, status: int) -> tuple[Any, Any]:
    """Labelled metric children, looked up once per (method, route, status) rather than per
    request; the set is bounded by the route templates."""
    return HTTP_REQUESTS.labels(method, route, str(status)), HTTP_SECONDS.labels(method, route)


def count_request(method: str, route: str, status: int, started: float) -> None:
    """Count and time one request (``started``: its ``time.perf_counter()``) under its route
    template."""
    requests, seconds = _children(method, route, status)
    requests.inc()
    seconds.observe(time.perf_counter() - started)


def request_id_of(header: bytes | None) -> str:
    """The request's id: the caller's ``X-Request-Id`` (at most 100 characters), or a new one.
    Not secrets.token_hex: os.urandom costs ~50 µs a call on some VMs, and a request id needs
    uniqueness, not unpredictability."""
    if header:
        return header.decode("latin-1")[:100]
    return f"{random.getrandbits(64):016x}"


async def receive_body(receive: Receive, *, max_bytes: int | None = None) -> bytes | None:
    """A request's whole body from its ASGI ``receive``; None if the client went away first.
    With ``max_bytes``: PayloadTooLarge as soon as more has come, never holding more."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if max_bytes is not None and size > max_bytes:
            raise PayloadTooLarge(f"request body is larger than {max_bytes} bytes", field="body")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` for an app after a middleware read the request's body: ``body`` once, then
    whatever the connection sends next (a disconnect)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class BodyLimitMiddleware:
    """413 for request bodies over ``max_bytes``: at once from Content-Length; a body without one
    (chunked) is read up to the limit here and replayed to the app, so an oversized upload is
    refused without ever being held whole in memory."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = int(value) if value.isdigit() else None
                break
        if declared is not None:
            if declared > self.max_bytes:
                await self._reject(send)
                return
            await self.app(scope, receive, send)
            return
        try:
            body = await receive_body(receive, max_bytes=self.max_bytes)
        except PayloadTooLarge:
            await self._reject(send)
            return
        if body is not None:  # else the client went away
            await self.app(scope, replay_body(body, receive), send)

    async def _reject(self, send: Send) -> None:
        response = problem(
            413,
            "payload_too_large",
            f"request body is larger than {self.max_bytes} bytes",
            field="body",
        )
        await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})


class ContentEncodingMiddleware:
    """415 for a request body in a ``Content-Encoding`` its route does not decode (RFC 9110
    §15.5.16): without it, a gzip body reached the JSON parser as "not valid JSON" and a body
    labelled ``br`` but sent plain was read as if the label were not there. ``decoded``: the
    paths that inflate their own bodies (the ingest routes take gzip)."""

    def __init__(self, app: ASGIApp, *, decoded: Collection[str] = ()) -> None:
        self.app = app
        self.decoded = frozenset(decoded)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] in ("GET", "HEAD", "OPTIONS")
            or scope["path"] in self.decoded
        ):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-encoding":
                coding = value.decode("latin-1").strip()
                if coding and coding.lower() != "identity":
                    response = problem(
                        415,
                        "unsupported_media_type",
                        f"Content-Encoding {coding!r} is not accepted here: send the body "
                        "uncompressed",
                        field="Content-Encoding",
                    )
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class RequestIdMiddleware:
    """Gives every request an id (or keeps the caller's ``X-Request-Id``), logs carry it, the
    response echoes it; counts and times the request by route template (never the raw path, which
    would make a metric label per customer). Pure ASGI: BaseHTTPMiddleware costs a task per
    request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                header = value
                break
        rid = request_id_of(header)
        token = request_id.set(rid)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            count_request(scope["method"], template, status, started)


class FastPath(Protocol):
    """An ASGI handler for one (method, path) that may hand a request on to ``fallback`` (the
    framework's own handling of it)."""

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, fallback: ASGIApp
    ) -> None: ...


class CicloApp(FastAPI):
    """FastAPI with fast paths: a handler registered for an exact (method, path) gets its
    requests before the framework (routing, middleware, dependencies) and decides whether to
    answer them itself or pass them on. Everything else goes through FastAPI as usual."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fast_paths: dict[tuple[str, str], FastPath] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.fast_paths:
            handler = self.fast_paths.get((scope["method"], scope["path"]))
            if handler is not None:
                await handler(scope, receive, send, super().__call__)
                return
        await super().__call__(scope, receive, send)
