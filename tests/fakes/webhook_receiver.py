"""A receiver of Ciclo's generic signed webhook, written from the documented contract (it does not
import Ciclo's signing code, so a test against it checks the contract, not the code against
itself).

Checks: POST with ``Content-Type: application/json``; ``X-Ciclo-Signature: t=…,v1=…`` where v1 is
the hex HMAC-SHA256 of ``"<t>." + raw body`` under the shared secret, with ``t`` within
``tolerance`` seconds of now (401 otherwise); ``X-Ciclo-Message-Id`` equal to the body's
``message_id``; every documented field present with its type (422 naming the field). Answers 200
``{"id": "rcv_…"}``; a message id seen before gets the same id back (an idempotent receiver).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.faults import Faults, Injected

__all__ = ["FakeWebhookReceiver", "Injected"]

MAX_BYTES = 5 * 1024 * 1024
_FIELDS: dict[str, tuple[type, ...]] = {
    "message_id": (str,),
    "workspace_id": (str,),
    "customer_id": (str,),
    "channel": (str,),
    "category": (str,),
    "template": (str,),
    "to": (str,),
    "from": (dict, type(None)),
    "subject": (str, type(None)),
    "html": (str, type(None)),
    "text": (str,),
    "headers": (dict,),
}


class FakeWebhookReceiver:
    def __init__(
        self,
        secret: str,
        *,
        path: str = "/ciclo/messages",
        tolerance: float = 300.0,
        latency: float = 0.0,
    ) -> None:
        self.secret = secret
        self.path = path
        self.tolerance = tolerance
        self.accepted: list[dict[str, Any]] = []
        self.received_headers: list[dict[str, str]] = []
        self.requests = 0
        self._ids: dict[str, str] = {}
        self.faults = Faults(latency=latency)
        self.app = Starlette(routes=[Route(path, self.receive, methods=["POST"])])

    def fail_next(self, *failures: Injected) -> None:
        self.faults.fail_next(*failures)

    def reset(self) -> None:
        self.accepted.clear()
        self.received_headers.clear()
        self._ids.clear()
        self.requests = 0
        self.faults.clear()

    def message_ids(self) -> list[str]:
        return [m["message_id"] for m in self.accepted]

    def signature_ok(self, header: str, body: bytes) -> bool:
        fields: dict[str, list[str]] = {}
        for item in header.split(","):
            key, _, value = item.strip().partition("=")
            fields.setdefault(key, []).append(value)
        stamps = fields.get("t", [])
        if len(stamps) != 1 or not stamps[0].isdigit():
            return False
        if abs(time.time() - int(stamps[0])) > self.tolerance:
            return False
        signed = stamps[0].encode() + b"." + body
        expected = hmac.new(self.secret.encode(), signed, hashlib.sha256).hexdigest()
        return any(hmac.compare_digest(expected, given) for given in fields.get("v1", []))

    @staticmethod
    def _error(status: int, message: str) -> Response:
        return JSONResponse({"error": message}, status_code=status)

    async def receive(self, request: Request) -> Response:
        self.requests += 1
        await self.faults.pause()
        raw = await request.body()
        if not self.signature_ok(request.headers.get("x-ciclo-signature", ""), raw):
            return self._error(401, "invalid or stale X-Ciclo-Signature")
        if not request.headers.get("content-type", "").startswith("application/json"):
            return self._error(415, "Content-Type must be application/json")
        if len(raw) > MAX_BYTES:
            return self._error(413, "body larger than 5 MB")
        try:
            body = json.loads(raw)
        except ValueError:
            return self._error(400, "body is not JSON")
        if not isinstance(body, dict):
            return self._error(422, "body must be a JSON object")
        for name, types in _FIELDS.items():
            if name not in body:
                return self._error(422, f"{name}: required")
            if not isinstance(body[name], types):
                return self._error(422, f"{name}: wrong type {type(body[name]).__name__}")
        if request.headers.get("x-ciclo-message-id") != body["message_id"]:
            return self._error(422, "X-Ciclo-Message-Id does not match message_id")
        headers = dict(request.headers)
        injected = self.faults.take()
        if injected is not None:
            return await self.faults.apply(
                injected,
                accept=lambda: self._accept(body, headers),
                error=lambda status: self._error(status, "injected failure"),
            )
        return self._accept(body, headers)

    def _accept(self, body: dict[str, Any], headers: dict[str, str]) -> Response:
        self.accepted.append(body)
        self.received_headers.append(headers)
        receipt = self._ids.setdefault(body["message_id"], "rcv_" + secrets.token_hex(8))
        return JSONResponse({"id": receipt})
