"""A fake Mailgun Messages API (``POST /v3/{domain}/messages``) that checks requests the way the
real one does and answers with Mailgun's bodies.

Checks: Basic auth ``api:KEY`` (else 401 with the bare text ``Forbidden``), a known domain (404
``Domain not found``), a multipart or urlencoded form, ``from``/``to`` present and valid addresses,
a subject, at least one of text/html, at most 3 tags of at most 128 ASCII characters, custom
variables (``v:``) of at most 4 KB in all, and 25 MB in all. Success is 200
``{"id": "<…@domain>", "message": "Queued. Thank you."}``.
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import secrets
import time
import urllib.parse

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.fakes.faults import Faults, Injected, basic_credentials

__all__ = ["FakeMailgun", "Injected", "parse_form"]

MAX_BYTES = 25 * 1024 * 1024
MAX_TAGS = 3
MAX_TAG_LENGTH = 128
MAX_VARIABLES_BYTES = 4 * 1024

Form = dict[str, list[str]]


def parse_form(content_type: str, body: bytes) -> Form | None:
    """The fields of a multipart/form-data or urlencoded body (repeated names kept in order), or
    None when the body is neither. The standard library's MIME parser reads multipart."""
    form: Form = {}
    if content_type.startswith("application/x-www-form-urlencoded"):
        for name, value in urllib.parse.parse_qsl(body.decode(), keep_blank_values=True):
            form.setdefault(name, []).append(value)
        return form
    if not content_type.startswith("multipart/form-data"):
        return None
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    parsed = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not parsed.is_multipart():
        return None
    for part in parsed.iter_parts():
        field = part.get_param("name", header="content-disposition")
        if not isinstance(field, str):
            continue
        payload = part.get_payload(decode=True)
        raw = payload if isinstance(payload, bytes) else b""
        form.setdefault(field, []).append(raw.decode(part.get_content_charset() or "utf-8"))
    return form


def _address_ok(value: str) -> bool:
    _, address = email.utils.parseaddr(value)
    local, _, domain = address.partition("@")
    return bool(local) and "." in domain


class FakeMailgun:
    def __init__(
        self, *, api_key: str = "key-test", domain: str = "mg.example.com", latency: float = 0.0
    ) -> None:
        self.api_key = api_key
        self.domain = domain
        self.accepted: list[Form] = []
        self.requests = 0
        self.faults = Faults(latency=latency)
        self.app = Starlette(
            routes=[Route("/v3/{domain}/messages", self.messages, methods=["POST"])]
        )

    def fail_next(self, *failures: Injected) -> None:
        self.faults.fail_next(*failures)

    def reset(self) -> None:
        self.accepted.clear()
        self.requests = 0
        self.faults.clear()

    def message_ids(self) -> list[str]:
        return [m["v:ciclo_message_id"][0] for m in self.accepted]

    @staticmethod
    def _error(status: int, message: str) -> Response:
        return JSONResponse({"message": message}, status_code=status)

    async def messages(self, request: Request) -> Response:
        self.requests += 1
        await self.faults.pause()
        if basic_credentials(request.headers.get("authorization")) != ("api", self.api_key):
            return PlainTextResponse("Forbidden", status_code=401)
        if request.path_params["domain"] != self.domain:
            return self._error(404, f"Domain not found: {request.path_params['domain']}")
        raw = await request.body()
        if len(raw) > MAX_BYTES:
            return self._error(413, "Message size exceeds the 25MB limit")
        form = parse_form(request.headers.get("content-type", ""), raw)
        if form is None:
            return self._error(400, "Content-Type must be multipart/form-data")
        problem = self._validate(form)
        if problem:
            return self._error(400, problem)
        injected = self.faults.take()
        if injected is not None:
            return await self.faults.apply(
                injected,
                accept=lambda: self._accept(form),
                error=lambda status: self._error(status, _REASONS.get(status, "Internal Error")),
            )
        return self._accept(form)

    def _accept(self, form: Form) -> Response:
        self.accepted.append(form)
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
        message_id = f"<{stamp}.{secrets.token_hex(8)}@{self.domain}>"
        return JSONResponse({"id": message_id, "message": "Queued. Thank you."})

    @staticmethod
    def _validate(form: Form) -> str | None:
        def first(name: str) -> str:
            return form.get(name, [""])[0]

        if not first("from"):
            return "'from' parameter is missing"
        if not _address_ok(first("from")):
            return "'from' parameter is not a valid address. please check documentation"
        if not form.get("to"):
            return "'to' parameter is missing"
        for value in form["to"]:
            for address in value.split(","):
                if not _address_ok(address.strip()):
                    return "'to' parameter is not a valid address. please check documentation"
        if not first("subject"):
            return "'subject' parameter is missing"
        if not any(first(part) for part in ("text", "html", "amp-html", "template")):
            return (
                "Need at least one of 'text', 'html', 'amp-html' or 'template' parameters specified"
            )
        tags = form.get("o:tag", [])
        if len(tags) > MAX_TAGS:
            return f"Too many tags: at most {MAX_TAGS} are allowed per message"
        for tag in tags:
            if len(tag) > MAX_TAG_LENGTH or not tag.isascii():
                return f"Tag {tag[:20]!r} must be ASCII and at most {MAX_TAG_LENGTH} characters"
        variables = sum(
            len(name.encode()) + sum(len(v.encode()) for v in values)
            for name, values in form.items()
            if name.startswith("v:")
        )
        if variables > MAX_VARIABLES_BYTES:
            return "Custom variables exceed the 4KB limit"
        return None

    def variables(self, index: int = -1) -> dict[str, str]:
        """The ``v:`` custom variables of an accepted message, as webhooks return them."""
        return {k[2:]: v[0] for k, v in self.accepted[index].items() if k.startswith("v:")}

    def headers(self, index: int = -1) -> dict[str, str]:
        """The ``h:`` headers of an accepted message."""
        return {k[2:]: v[0] for k, v in self.accepted[index].items() if k.startswith("h:")}


_REASONS: dict[int, str] = {
    429: "Too many requests",
    500: "Internal Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
