"""A fake SendGrid v3 Mail Send server that checks requests the way the real API does.

It validates auth (Bearer key), content type, the required fields and their shapes, and answers 202
with ``X-Message-Id`` like SendGrid. Tests can queue failures (``Injected``, from faults.py: 429
with Retry-After, 5xx, a delay longer than the client's timeout) to exercise retries and the
ambiguous case.
"""

from __future__ import annotations

import secrets
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.faults import Faults, Injected

__all__ = ["MAX_BYTES", "FakeSendGrid", "Injected"]

MAX_BYTES = 30 * 1024 * 1024


class FakeSendGrid:
    def __init__(self, api_key: str = "SG.test-key", *, latency: float = 0.0) -> None:
        self.api_key = api_key
        self.accepted: list[dict[str, Any]] = []
        self.requests = 0
        self.faults = Faults(latency=latency)
        self.app = Starlette(routes=[Route("/v3/mail/send", self.mail_send, methods=["POST"])])

    def fail_next(self, *failures: Injected) -> None:
        self.faults.fail_next(*failures)

    def reset(self) -> None:
        self.accepted.clear()
        self.requests = 0
        self.faults.clear()

    def message_ids(self) -> list[str]:
        return [m["custom_args"]["ciclo_message_id"] for m in self.accepted]

    @staticmethod
    def _error(status: int, message: str, field_name: str | None = None) -> JSONResponse:
        return JSONResponse(
            {"errors": [{"message": message, "field": field_name, "help": None}]},
            status_code=status,
        )

    async def mail_send(self, request: Request) -> Response:
        self.requests += 1
        await self.faults.pause()
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return self._error(
                401, "The provided authorization grant is invalid, expired, or revoked"
            )
        if not request.headers.get("content-type", "").startswith("application/json"):
            return self._error(415, "Content-Type should be application/json.")
        raw = await request.body()
        if len(raw) > MAX_BYTES:
            return self._error(413, "Payload too large")
        try:
            body = await request.json()
        except ValueError:
            return self._error(400, "Bad Request", None)
        problem = self._validate(body)
        if problem:
            return self._error(400, *problem)
        injected = self.faults.take()
        if injected is not None:
            return await self.faults.apply(
                injected,
                accept=lambda: self._accept(body),
                error=lambda status: self._error(status, "injected failure"),
            )
        return self._accept(body)

    def _accept(self, body: dict[str, Any]) -> Response:
        self.accepted.append(body)
        return Response(status_code=202, headers={"X-Message-Id": secrets.token_urlsafe(16)})

    @staticmethod
    def _validate(body: Any) -> tuple[str, str] | None:
        if not isinstance(body, dict):
            return "The request body must be a JSON object", "body"
        personalizations = body.get("personalizations")
        if not isinstance(personalizations, list) or not personalizations:
            return (
                "The personalizations field is required and must have at least one "
                "personalization.",
                "personalizations",
            )
        for i, p in enumerate(personalizations):
            to = p.get("to") if isinstance(p, dict) else None
            if (
                not isinstance(to, list)
                or not to
                or not all(isinstance(t, dict) and "@" in str(t.get("email", "")) for t in to)
            ):
                return "Does not contain a valid address.", f"personalizations.{i}.to"
        sender = body.get("from")
        if not isinstance(sender, dict) or "@" not in str(sender.get("email", "")):
            return "The from object must be provided for every email send.", "from.email"
        if not body.get("subject") and not all(p.get("subject") for p in personalizations):
            return "The subject is required.", "subject"
        content = body.get("content")
        if not isinstance(content, list) or not content:
            return (
                "Unless a valid template_id is provided, the content parameter is required.",
                "content",
            )
        types = [c.get("type") for c in content]
        if "text/plain" in types and types.index("text/plain") != 0:
            return "If present, text/plain content must be first.", "content"
        if any(not c.get("value") for c in content):
            return (
                "The content value must be a string at least one character in length.",
                "content.0.value",
            )
        return None
