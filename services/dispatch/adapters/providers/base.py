"""The provider port and the translation of httpx errors into send errors (done once, here)."""

from __future__ import annotations

import email.utils
import time
from typing import Protocol

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatch.domain.messages import Outbound, Receipt
from services.dispatch.errors import AmbiguousSendError, PermanentSendError, TransientSendError


class Provider(Protocol):
    name: str

    async def send(self, message: Outbound) -> Receipt:
        """Hand the message over; raise a SendError subclass when it was not accepted."""
        ...


class TransactionalProvider(Protocol):
    """A provider whose delivery is a database write: it joins the dispatch transaction, so its
    sends are exactly once (the local sink)."""

    name: str

    async def send_within(self, session: AsyncSession, message: Outbound) -> Receipt: ...


def retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value:
        if value.strip().isdigit():
            return float(value)
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time())
    reset = response.headers.get("x-ratelimit-reset")
    if reset and reset.strip().isdigit():
        return max(0.0, float(reset) - time.time())
    return None


def raise_for_response(response: httpx.Response, *, provider: str, detail: str) -> None:
    status = response.status_code
    if status < 400:
        return
    message = f"{provider} answered {status}: {detail}"[:1000]
    if status in (408, 429) or status >= 500:
        raise TransientSendError(message, retry_after=retry_after_seconds(response))
    raise PermanentSendError(message)


async def post(
    client: httpx.AsyncClient, url: str, *, provider: str, **kwargs: object
) -> httpx.Response:
    """POST, translating transport errors: a failure before the request left is transient; a
    timeout or drop after it may have left is ambiguous (the provider may have sent it)."""
    try:
        return await client.post(url, **kwargs)  # type: ignore[arg-type]
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
