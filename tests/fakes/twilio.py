"""A fake Twilio Messages resource (``POST /2010-04-01/Accounts/{sid}/Messages.json``) that checks
requests the way the real API does and answers with Twilio's bodies.

Checks: Basic ``AccountSid:AuthToken`` matching the account in the path (401, code 20003), a
urlencoded form, ``To`` present (21604) and E.164 and a possible number (21211), a sender:
``From`` one of the account's numbers (21603 missing, 21606 not ours) or a ``MessagingServiceSid``
of the account (21705), a ``Body`` (21602) of at most 1600 characters (21617; counted as Twilio
counts them, an emoji or other character outside the BMP as 2, UTF-16 code units), a valid
``StatusCallback`` URL (21609), and recipients who replied STOP (21610). Success is 201 with the
Message resource (``sid`` SM…, ``status`` queued, or accepted through a messaging service).
"""

from __future__ import annotations

import re
import secrets
import urllib.parse
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import phonenumbers
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.faults import Faults, Injected, basic_credentials

__all__ = ["FakeTwilio", "Injected"]

MAX_BODY = 1600
MAX_URL = 4000
_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
_REASONS = {429: (20429, "Too Many Requests"), 503: (20503, "Service Unavailable")}


def _characters(text: str) -> int:
    """Twilio's count: characters "with a higher byte count" (emoji) count as several."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _possible(number: str) -> bool:
    if not _E164.fullmatch(number):
        return False
    try:
        return phonenumbers.is_possible_number(phonenumbers.parse(number))
    except phonenumbers.NumberParseException:
        return False


class FakeTwilio:
    def __init__(
        self,
        *,
        account_sid: str = "AC" + "0" * 31 + "1",
        auth_token: str = "twilio-token",
        numbers: tuple[str, ...] = ("+14155550100",),
        messaging_services: tuple[str, ...] = ("MG" + "0" * 31 + "1",),
        latency: float = 0.0,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.numbers = numbers
        self.messaging_services = messaging_services
        self.unsubscribed: set[str] = set()
        self.accepted: list[dict[str, str]] = []
        self.requests = 0
        self.faults = Faults(latency=latency)
        self.app = Starlette(
            routes=[
                Route("/2010-04-01/Accounts/{sid}/Messages.json", self.create, methods=["POST"])
            ]
        )

    def fail_next(self, *failures: Injected) -> None:
        self.faults.fail_next(*failures)

    def reset(self) -> None:
        self.accepted.clear()
        self.unsubscribed.clear()
        self.requests = 0
        self.faults.clear()

    def message_ids(self) -> list[str]:
        """Our message ids, read back from each StatusCallback URL as Twilio would call it."""
        ids = []
        for m in self.accepted:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(m["StatusCallback"]).query)
            ids.append(query["ciclo_message_id"][0])
        return ids

    @staticmethod
    def _error(status: int, code: int, message: str) -> Response:
        return JSONResponse(
            {
                "code": code,
                "message": message,
                "more_info": f"https://www.twilio.com/docs/errors/{code}",
                "status": status,
            },
            status_code=status,
        )

    def _injected_error(self, status: int) -> Response:
        code, message = _REASONS.get(status, (20500, "Internal Server Error"))
        return self._error(status, code, message)

    async def create(self, request: Request) -> Response:
        self.requests += 1
        await self.faults.pause()
        sid = request.path_params["sid"]
        credentials = basic_credentials(request.headers.get("authorization"))
        if credentials != (self.account_sid, self.auth_token) or sid != self.account_sid:
            return self._error(401, 20003, "Authenticate")
        form: dict[str, str] = {}
        if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            raw = (await request.body()).decode()
            form = dict(urllib.parse.parse_qsl(raw, keep_blank_values=True))
        problem = self._validate(form)
        if problem:
            return self._error(400, *problem)
        injected = self.faults.take()
        if injected is not None:
            return await self.faults.apply(
                injected, accept=lambda: self._accept(form), error=self._injected_error
            )
        return self._accept(form)

    def _validate(self, form: dict[str, str]) -> tuple[int, str] | None:
        to = form.get("To", "")
        if not to:
            return 21604, "A 'To' phone number is required."
        if not _possible(to):
            return 21211, f"The 'To' number {to} is not a valid phone number."
        service = form.get("MessagingServiceSid")
        sender = form.get("From")
        if service is not None:
            if service not in self.messaging_services:
                return 21705, f"The Messaging Service Sid {service} is invalid."
        elif not sender:
            return 21603, "A 'From' phone number is required."
        elif sender not in self.numbers:
            return (
                21606,
                f"The From phone number {sender} is not a valid, SMS-capable inbound phone "
                "number or short code for your account.",
            )
        body = form.get("Body", "")
        if not body:
            return 21602, "Message body is required."
        if _characters(body) > MAX_BODY:
            return 21617, "The concatenated message body exceeds the 1600 character limit."
        callback = form.get("StatusCallback")
        if callback is not None:
            parts = urllib.parse.urlsplit(callback)
            if (
                parts.scheme not in ("http", "https")
                or not parts.hostname
                or len(callback) > MAX_URL
            ):
                return 21609, "Invalid StatusCallback"
        if to in self.unsubscribed:
            return 21610, "Attempt to send to unsubscribed recipient"
        return None

    def _accept(self, form: dict[str, str]) -> Response:
        self.accepted.append(form)
        sid = "SM" + secrets.token_hex(16)
        now = format_datetime(datetime.now(UTC), usegmt=True)
        via_service = "MessagingServiceSid" in form
        resource: dict[str, Any] = {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": form["Body"],
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "num_media": "0",
            "num_segments": str(-(-len(form["Body"]) // 153) if len(form["Body"]) > 160 else 1),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "accepted" if via_service else "queued",
            "subresource_uris": {
                "media": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}/Media.json"
            },
            "to": form["To"],
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
        }
        return JSONResponse(resource, status_code=201)
