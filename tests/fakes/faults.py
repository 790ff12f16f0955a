"""Failure injection shared by the fake providers.

A test queues ``Injected`` faults; each request that passed the fake's own checks (auth, shape)
takes the next one. A fault can answer with a status and headers (429 with Retry-After, 503), wait
longer than the client's timeout, record the message as accepted although the answer fails (the
ambiguous case: the provider sent it, we cannot know), or drop the connection mid-answer. A fixed
``latency`` before every answer stands in for a real provider's round trip in benchmarks.

Also here, because every fake needs it: reading HTTP Basic credentials.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send


@dataclass
class Injected:
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (longer than the client timeout: ambiguous)
    accept: bool = False  # count the message as sent although the answer fails (ambiguous)
    drop: bool = False  # start the answer, then close the connection (ambiguous as well)
    body: Any = None  # a JSON body instead of the fake's own error for ``status``


class DroppedAnswer(Response):
    """Starts a 200 answer and closes the connection before its body is complete."""

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"id":', "more_body": True})
        # Returning with the body unfinished makes the server close the connection (it logs
        # "ASGI callable returned without completing response"): the client sees a peer that
        # hung up mid-answer.


class Faults:
    """The queue of injected faults and the latency of a fake (thread-safe: tests queue faults
    from their own thread while the server answers in its own)."""

    def __init__(self, *, latency: float = 0.0) -> None:
        self.latency = latency
        self._queue: list[Injected] = []
        self._lock = threading.Lock()

    def fail_next(self, *failures: Injected) -> None:
        with self._lock:
            self._queue.extend(failures)

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()

    def take(self) -> Injected | None:
        with self._lock:
            return self._queue.pop(0) if self._queue else None

    async def pause(self) -> None:
        if self.latency:
            await asyncio.sleep(self.latency)

    @staticmethod
    async def apply(
        injected: Injected,
        *,
        accept: Callable[[], Response],
        error: Callable[[int], Response],
    ) -> Response:
        """Answer as ``injected`` says. ``accept`` records the message and returns the fake's
        success answer; ``error`` returns the fake's own error body for a status."""
        accepted = accept() if injected.accept else None
        if injected.delay:
            await asyncio.sleep(injected.delay)
        if injected.drop:
            return DroppedAnswer()
        if injected.status >= 400:
            response = (
                error(injected.status)
                if injected.body is None
                else json_response(injected.body, injected.status)
            )
        elif accepted is not None and accepted.status_code == injected.status:
            response = accepted
        else:
            response = Response(status_code=injected.status)
        response.headers.update(injected.headers)
        return response


def json_response(body: Any, status: int, *, media_type: str = "application/json") -> Response:
    """A JSON answer that keeps the provider's exact media type (Vonage answers
    ``application/problem+json``)."""
    return Response(json.dumps(body), status_code=status, media_type=media_type)


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """The (user, password) of an ``Authorization: Basic …`` header, or None."""
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None
