"""The provider port, the translation of httpx errors into send errors (done once, here), and the
checks every provider shares (channel, E.164 numbers, SMS length, display names)."""

from __future__ import annotations

import email.utils
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatch.domain.messages import Outbound, Receipt
from services.dispatch.domain.providers import E164
from services.dispatch.domain.sms import characters, measure
from services.dispatch.errors import (
    MAX_RETRY_AFTER,
    AmbiguousSendError,
    NotSentError,
    PermanentSendError,
    TransientSendError,
)


class Provider(Protocol):
    name: str

    async def send(self, message: Outbound) -> Receipt:
        """Hand the message over; raise a SendError subclass when it was not accepted."""
        ...


class TransactionalProvider(Protocol):
    """A provider whose delivery is a database write: it joins the dispatch transaction, so its
    sends are exactly once (the local sink)."""

    name: str

    async def send_within(
        self, session: AsyncSession, message: Outbound, *, at: datetime
    ) -> Receipt:
        """Deliver within the dispatch transaction; ``at`` is the dispatcher's clock."""
        ...


def retry_after(response: httpx.Response) -> float | datetime | None:
    """What the provider asks: ``Retry-After`` in seconds, or the time to come back at
    (``Retry-After`` as an HTTP date, else ``X-RateLimit-Reset`` in epoch seconds). The time is
    turned into a wait by :meth:`TransientSendError.wait` on the dispatcher's clock, not here on
    the wall clock. A value that is none of these (``1.5``, ``soon``, a garbled date, sent by
    some gateways and proxies) asks nothing: the usual backoff applies, and the answer stays a
    transient failure instead of an error escaping the send. A wait beyond ``MAX_RETRY_AFTER``
    is cut to it: the message is held, not parked past the calendar."""
    value = (response.headers.get("retry-after") or "").strip()
    if value:
        seconds = _seconds(value)
        if seconds is not None:
            return min(seconds, MAX_RETRY_AFTER)
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (ValueError, TypeError, IndexError, OverflowError):
            return None
        if parsed.tzinfo is None:  # an HTTP date is always GMT
            parsed = parsed.replace(tzinfo=UTC)
        return parsed
    reset = _seconds((response.headers.get("x-ratelimit-reset") or "").strip())
    if reset is not None:
        try:
            return datetime.fromtimestamp(reset, UTC)
        except (OverflowError, OSError, ValueError):
            return datetime.max.replace(tzinfo=UTC)  # beyond the calendar: the longest wait
    return None


def _seconds(value: str) -> float | None:
    """A non-negative finite number (seconds, or epoch seconds), or None."""
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def raise_for_response(response: httpx.Response, *, provider: str, detail: str) -> None:
    status = response.status_code
    if status < 400:
        return
    message = f"{provider} answered {status}: {detail}"[:1000]
    if status in (408, 429) or status >= 500:
        raise TransientSendError(
            message, retry_after=retry_after(response), throttled=status == 429
        )
    raise PermanentSendError(message)


async def post(
    client: httpx.AsyncClient,
    url: str | httpx.URL,
    *,
    provider: str,
    json: Any = None,
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """POST, translating transport errors: a failure before the request left is transient; a
    timeout or drop after it may have left is ambiguous (the provider may have sent it).

    A JSON or raw body with headers is built here (the body encoded by orjson) and handed to
    ``client.send``, which :class:`~.transport.ProviderClient` sends without the client's
    per-request machinery; forms, files and auth (``kwargs``) go through ``client.post``."""
    try:
        if kwargs:
            return await client.post(url, json=json, content=content, headers=headers, **kwargs)
        return await client.send(request(client, url, json=json, content=content, headers=headers))
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise TransientSendError(f"{provider} unreachable: {exc!r}") from exc
    except (
        httpx.ReadTimeout,
        httpx.WriteTimeout,
        httpx.RemoteProtocolError,
        httpx.ReadError,
    ) as exc:
        raise AmbiguousSendError(
            f"{provider} gave no answer after the request left: {exc!r}"
        ) from exc
    except httpx.HTTPError as exc:
        raise TransientSendError(f"{provider} request failed: {exc!r}") from exc


def request(
    client: httpx.AsyncClient,
    url: str | httpx.URL,
    *,
    json: Any = None,
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Request:
    """The POST ``client.post`` would build (the client's headers under ``headers``, its
    timeouts), without merging a base URL, params or cookies, which the providers never set."""
    if json is not None:
        content = orjson.dumps(json)
    return httpx.Request(
        "POST",
        url,
        headers=_merged(client.headers, headers, json=json is not None),
        content=content,
        extensions={"timeout": client.timeout.as_dict()},
    )


_MERGED: dict[
    tuple[tuple[tuple[bytes, bytes], ...], tuple[tuple[str, str], ...], bool], httpx.Headers
] = {}
_MERGED_MAX = 256


def _merged(
    defaults: httpx.Headers, headers: Mapping[str, str] | None, *, json: bool
) -> httpx.Headers:
    """The client's headers, updated with ``headers``, and the JSON content type for a JSON
    body. A provider sends the same few combinations again and again: each is built once (the
    request copies it, so the one kept is never changed), keyed by what it is built from."""
    key = (tuple(defaults.raw), tuple(headers.items()) if headers else (), json)
    merged = _MERGED.get(key)
    if merged is None:
        merged = httpx.Headers(defaults)
        if headers:
            merged.update(headers)
        if json:
            merged["Content-Type"] = "application/json"
        if len(_MERGED) >= _MERGED_MAX:
            _MERGED.clear()
        _MERGED[key] = merged
    return merged


def raise_for_answer(response: httpx.Response, *, provider: str, detail: str) -> None:
    """``raise_for_response``, and also refuse an answer that is neither 2xx nor an error: a
    redirect is never followed, so the message was not accepted and will not be until the
    configured URL is fixed."""
    raise_for_response(response, provider=provider, detail=detail)
    if not response.is_success:
        location = response.headers.get("location", "")
        raise PermanentSendError(
            f"{provider} answered {response.status_code} (redirect to {location!r} not "
            "followed: configure the final URL)"[:1000]
        )


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The answer's JSON object, or ``{}``: a garbled body must never turn an accepted send into
    an error (the retry would send the message twice)."""
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def ensure_channel(provider: str, channels: tuple[str, ...], message: Outbound) -> None:
    """Refuse before any I/O: an SMS handed to an email provider is a configuration mistake that
    no retry can fix."""
    if message.channel not in channels:
        raise NotSentError(
            f"{provider} cannot send {message.channel} messages (it sends: {', '.join(channels)})"
        )


def e164(number: str, *, provider: str, field: str = "recipient") -> str:
    """Check that ``number`` is E.164 (``+`` and 7 to 15 digits); SMS providers refuse anything
    else, so this fails early with a message that names the number."""
    if not E164.fullmatch(number):
        raise NotSentError(
            f"{provider}: {field} {number!r} is not an E.164 phone number (like +14155552671)"
        )
    return number


def sms_text(text: str, *, provider: str, limit: int, refusal: str) -> str:
    """Check that ``text`` is at most ``limit`` characters as SMS providers count them (UTF-16
    code units: an emoji counts 2); a longer text is refused here, before any request, with its
    length, encoding and segments, rather than by the provider (``refusal``: what it answers)."""
    if characters(text) > limit:
        raise NotSentError(
            f"{provider}: the text is {measure(text).describe()}; {provider} takes at most "
            f"{limit} characters and refuses longer ones ({refusal}): shorten the template"
        )
    return text


_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]')


def mailbox(address: str, name: str | None) -> str:
    """``Name <address>`` with the display name quoted when it holds RFC 5322 specials (a comma
    in "Shop, Inc." would otherwise split it into two addresses). Non-ASCII names stay as they
    are: the providers encode headers themselves."""
    if not name:
        return address
    if _SPECIALS.search(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{address}>"
