"""A fake Vonage Messages API (``POST /v1/messages``, SMS channel) that checks requests the way the
real one does and answers with Vonage's RFC 7807 problem documents.

Checks: Basic ``api_key:api_secret`` (401 unauthorized), a JSON body (422), ``message_type`` text
and ``channel`` sms, ``to`` as E.164 digits without ``+`` (7 to 15 digits, a possible number),
``from`` a number the same way or an alphanumeric sender id of at most 11 characters, ``text`` of
1 to 1000 characters (code points, as Vonage's own SDK checks it: its API reference does not say
how an emoji counts), ``client_ref`` of at most 100 characters; numbers barred for the account
answer 422 as well. Success is 202 ``{"message_uuid": …}``.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import phonenumbers
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.faults import Faults, Injected, basic_credentials, json_response

__all__ = ["FakeVonage", "Injected"]

MAX_TEXT = 1000
MAX_CLIENT_REF = 100
_DIGITS = re.compile(r"^[1-9][0-9]{6,14}$")
_ALPHANUMERIC = re.compile(r"^[A-Za-z0-9 ]{1,11}$")
_TYPES = "https://developer.vonage.com/api-errors"
_PROBLEMS = {
    401: ("#unauthorized", "Unauthorized", "You did not provide correct credentials."),
    402: (
        "#low-balance",
        "Low balance",
        "This request could not be performed due to your account balance being low.",
    ),
    422: ("/messages#1150", "Invalid params", "The value of one or more parameters is invalid."),
    429: ("#throttled", "Rate Limit Hit", "Please wait, then retry your request"),
    500: ("#internal", "Internal Error", "Something went wrong."),
    503: ("#internal", "Service Unavailable", "The service is temporarily unavailable."),
}


def _number_ok(digits: str) -> bool:
    if not _DIGITS.fullmatch(digits):
        return False
    try:
        return phonenumbers.is_possible_number(phonenumbers.parse("+" + digits))
    except phonenumbers.NumberParseException:
        return False


def problem(status: int, invalid: list[dict[str, str]] | None = None) -> Response:
    suffix, title, detail = _PROBLEMS.get(status, _PROBLEMS[500])
    body: dict[str, Any] = {
        "type": _TYPES + suffix,
        "title": title,
        "detail": detail,
        "instance": str(uuid.uuid4()),
    }
    if invalid:
        body["invalid_parameters"] = invalid
    return json_response(body, status, media_type="application/problem+json")


class FakeVonage:
    def __init__(
        self,
        *,
        api_key: str = "vonage-key",
        api_secret: str = "vonage-secret",
        latency: float = 0.0,
    ) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.barred: set[str] = set()
        self.accepted: list[dict[str, Any]] = []
        self.requests = 0
        self.faults = Faults(latency=latency)
        self.app = Starlette(routes=[Route("/v1/messages", self.messages, methods=["POST"])])

    def fail_next(self, *failures: Injected) -> None:
        self.faults.fail_next(*failures)

    def reset(self) -> None:
        self.accepted.clear()
        self.barred.clear()
        self.requests = 0
        self.faults.clear()

    def message_ids(self) -> list[str]:
        return [m["client_ref"] for m in self.accepted]

    async def messages(self, request: Request) -> Response:
        self.requests += 1
        await self.faults.pause()
        credentials = basic_credentials(request.headers.get("authorization"))
        if credentials != (self.api_key, self.api_secret):
            return problem(401)
        if not request.headers.get("content-type", "").startswith("application/json"):
            return problem(
                422, [{"name": "body", "reason": "Content-Type must be application/json"}]
            )
        try:
            body = json.loads(await request.body())
        except ValueError:
            return problem(422, [{"name": "body", "reason": "Malformed JSON"}])
        if not isinstance(body, dict):
            return problem(422, [{"name": "body", "reason": "Must be a JSON object"}])
        invalid = self._validate(body)
        if invalid:
            return problem(422, invalid)
        injected = self.faults.take()
        if injected is not None:
            return await self.faults.apply(
                injected, accept=lambda: self._accept(body), error=problem
            )
        return self._accept(body)

    def _accept(self, body: dict[str, Any]) -> Response:
        self.accepted.append(body)
        return JSONResponse({"message_uuid": str(uuid.uuid4())}, status_code=202)

    def _validate(self, body: dict[str, Any]) -> list[dict[str, str]]:
        invalid: list[dict[str, str]] = []

        def bad(name: str, reason: str) -> None:
            invalid.append({"name": name, "reason": reason})

        if body.get("message_type") != "text":
            bad("message_type", "must be one of: text, image, vcard")
        if body.get("channel") != "sms":
            bad("channel", "must be one of: sms, mms, whatsapp, messenger, viber_service")
        to = str(body.get("to") or "")
        if not _number_ok(to):
            bad("to", f"'{to}' is not a valid phone number in E.164 format without a leading +")
        elif to in self.barred:
            bad("to", f"The number {to} is barred and may not receive messages")
        sender = str(body.get("from") or "")
        if not (_number_ok(sender) or (_ALPHANUMERIC.fullmatch(sender) and not sender.isdigit())):
            bad(
                "from",
                "must be a number in E.164 format without + or an alphanumeric sender id "
                "of up to 11 characters",
            )
        text = body.get("text")
        if not isinstance(text, str) or not 1 <= len(text) <= MAX_TEXT:
            bad("text", f"must be between 1 and {MAX_TEXT} characters")
        client_ref = body.get("client_ref")
        if client_ref is not None and (
            not isinstance(client_ref, str) or len(client_ref) > MAX_CLIENT_REF
        ):
            bad("client_ref", f"must be at most {MAX_CLIENT_REF} characters")
        return invalid
