"""``Content-Encoding: gzip`` on the native event routes, as the Segment-compatible ones take it.

Clients that compress their requests (Segment's libraries do, and so can any HTTP client) send
``Content-Encoding: gzip``; the native routes then see the inflated JSON as if it had been sent
plain. The compressed body is held to the body limit (``BodyLimitMiddleware`` in front checks
the declared length) and so is the inflated one: a zip bomb costs the cap, not the memory it
would expand to. Answers, each naming the field: 415 for another coding (``Content-Encoding``),
400 for a body that is not valid gzip (``body``), 413 when either side is over the limit.
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.types import ASGIApp, Receive, Scope, Send

from services.ingest.segment import gunzip, gzipped
from shared.http import (
    HTTPProblem,
    PayloadTooLarge,
    problem,
    receive_body,
    replay_body,
)


class RequestEncodingMiddleware:
    def __init__(self, app: ASGIApp, *, paths: Collection[str], max_bytes: int) -> None:
        self.app = app
        self.paths = frozenset(paths)
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        coding = ""  # none sent
        for name, value in scope["headers"]:
            if name == b"content-encoding":
                coding = value.decode("latin-1")
                break
        try:
            if not gzipped(coding):
                body = None
            else:
                raw = await receive_body(receive, max_bytes=self.max_bytes)
                if raw is None:
                    return  # the client went away
                body = gunzip(raw, max_bytes=self.max_bytes, error=self._too_large())
        except HTTPProblem as exc:
            response = problem(exc.status, exc.code, exc.message, field=exc.field)
            await response(scope, receive, send)
            return
        if body is None:  # not compressed
            await self.app(scope, receive, send)
            return
        headers = [
            (name, value)
            for name, value in scope["headers"]
            if name not in (b"content-encoding", b"content-length")
        ]
        headers.append((b"content-length", str(len(body)).encode()))
        await self.app({**scope, "headers": headers}, replay_body(body, receive), send)

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"the body, inflated, is larger than {self.max_bytes} bytes", field="body"
        )
