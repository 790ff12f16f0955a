"""A fake Postmark Email API (``POST /email``) that checks requests the way the real one does and
answers with Postmark's bodies (``{"ErrorCode", "Message"}``).

Checks: ``X-Postmark-Server-Token`` (401, ErrorCode 10), a JSON content type (ErrorCode 409) and
body (402), a From that parses and is a confirmed sender signature (300, 400), a To that parses
(300), at most 50 recipients (300), a body (300), Headers as ``[{Name, Value}]`` (300), Metadata
with at most 10 fields, names of at most 20 characters and values of at most 80 (300), a known
message stream (1235), recipients marked inactive (406), and 10 MB in all. Validation errors are
HTTP 422, as Postmark answers them.
"""

from __future__ import annotations

import email.utils
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.faults import Faults, Injected

__all__ = ["FakePostmark", "Injected"]

MAX_BYTES = 10 * 1024 * 1024
MAX_RECIPIENTS = 50
METADATA_FIELDS = 10
METADATA_NAME = 20
METADATA_VALUE = 80
_STATUS_CODES = {429: (429, "Rate limit exceeded."), 503: (100, "Maintenance.")}


def _address(value: str) -> str | None:
    _, address = email.utils.parseaddr(value)
    local, _, domain = address.partition("@")
    return address.lower() if local and "." in domain else None


class FakePostmark:
    def __init__(
        self,
        *,
        server_token: str = "pm-server-token",
        sender_domains: tuple[str, ...] = ("example.com",),
        streams: tuple[str, ...] = ("outbound", "broadcast"),
        latency: float = 0.0,
    ) -> None:
        self.server_token = server_token
        self.sender_domains = sender_domains
        self.streams = streams
        self.inactive: set[str] = set()
        self.accepted: list[dict[str, Any]] = []
        self.requests = 0
        self.faults = Faults(latency=latency)
        self.app = Starlette(routes=[Route("/email", self.email, methods=["POST"])])

    def fail_next(self, *failures: Injected) -> None:
        self.faults.fail_next(*failures)

    def reset(self) -> None:
        self.accepted.clear()
        self.inactive.clear()
        self.requests = 0
        self.faults.clear()

    def message_ids(self) -> list[str]:
        return [m["Metadata"]["ciclo_message_id"] for m in self.accepted]

    @staticmethod
    def _error(status: int, code: int, message: str) -> Response:
        return JSONResponse({"ErrorCode": code, "Message": message}, status_code=status)

    def _injected_error(self, status: int) -> Response:
        code, message = _STATUS_CODES.get(status, (status, "Internal server error."))
        return self._error(status, code, message)

    async def email(self, request: Request) -> Response:
        self.requests += 1
        await self.faults.pause()
        if request.headers.get("x-postmark-server-token") != self.server_token:
            return self._error(
                401,
                10,
                "Request does not contain a valid Server token. Please check that the token "
                "is correct and is associated with this server.",
            )
        if not request.headers.get("content-type", "").startswith("application/json"):
            return self._error(422, 409, "JSON required.")
        raw = await request.body()
        if len(raw) > MAX_BYTES:
            return self._error(422, 300, "Message size exceeds the 10 MB limit.")
        try:
            body = json.loads(raw)
        except ValueError:
            return self._error(422, 402, "Invalid JSON.")
        if not isinstance(body, dict):
            return self._error(422, 403, "Incompatible JSON.")
        problem = self._validate(body)
        if problem:
            return self._error(422, *problem)
        injected = self.faults.take()
        if injected is not None:
            return await self.faults.apply(
                injected, accept=lambda: self._accept(body), error=self._injected_error
            )
        return self._accept(body)

    def _accept(self, body: dict[str, Any]) -> Response:
        self.accepted.append(body)
        return JSONResponse(
            {
                "To": body["To"],
                "SubmittedAt": datetime.now(UTC).isoformat(),
                "MessageID": str(uuid.uuid4()),
                "ErrorCode": 0,
                "Message": "OK",
            }
        )

    def _validate(self, body: dict[str, Any]) -> tuple[int, str] | None:
        sender = _address(str(body.get("From") or ""))
        if sender is None:
            return 300, f"Error parsing 'From': Illegal email address '{body.get('From')}'."
        if sender.rpartition("@")[2] not in self.sender_domains:
            return (
                400,
                f"The 'From' address you supplied ({sender}) is not a Sender Signature on "
                "your account. Please add and confirm this address in order to be able to use "
                "it in the 'From' field of your messages.",
            )
        recipients = [r for r in str(body.get("To") or "").split(",") if r.strip()]
        if not recipients:
            return 300, "Zero recipients specified"
        if len(recipients) > MAX_RECIPIENTS:
            return 300, f"Maximum of {MAX_RECIPIENTS} recipients allowed per email message."
        addresses = [_address(r) for r in recipients]
        if None in addresses:
            return 300, f"Error parsing 'To': Illegal email address '{body.get('To')}'."
        if not body.get("TextBody") and not body.get("HtmlBody"):
            return 300, "Provide either email TextBody or HtmlBody or both."
        headers = body.get("Headers", [])
        if not isinstance(headers, list) or not all(
            isinstance(h, dict) and set(h) == {"Name", "Value"} for h in headers
        ):
            return 300, "Invalid 'Headers': expected a list of {Name, Value} objects."
        problem = self._validate_metadata(body.get("Metadata", {}))
        if problem:
            return 300, problem
        stream = body.get("MessageStream", "outbound")
        if stream not in self.streams:
            return 1235, f"The message stream '{stream}' does not exist on this server."
        inactive = [a for a in addresses if a in self.inactive]
        if inactive:
            return (
                406,
                "You tried to send to recipient(s) that have been marked as inactive. Found "
                f"inactive addresses: {', '.join(str(a) for a in inactive)}. Inactive "
                "recipients are ones that have generated a hard bounce, a spam complaint, or a "
                "manual suppression.",
            )
        return None

    @staticmethod
    def _validate_metadata(metadata: Any) -> str | None:
        if not isinstance(metadata, dict):
            return "Invalid 'Metadata': expected an object."
        if len(metadata) > METADATA_FIELDS:
            return f"Metadata may hold at most {METADATA_FIELDS} fields."
        for name, value in metadata.items():
            if len(name) > METADATA_NAME:
                return f"Metadata field name '{name}' exceeds {METADATA_NAME} characters."
            if not isinstance(value, str | int | float) or len(str(value)) > METADATA_VALUE:
                return f"Metadata value of '{name}' must be a string of at most 80 characters."
        return None
