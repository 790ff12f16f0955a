"""The generic signed webhook: Ciclo POSTs each rendered message as JSON to a URL of the user's,
who delivers it however they like (an in-house gateway, a provider we do not speak).

Every request carries ``X-Ciclo-Message-Id`` and ``X-Ciclo-Signature: t=<unix seconds>,v1=<hex>``
where the hex is HMAC-SHA256(secret, ``"<t>." + raw body``), Stripe's scheme: the timestamp inside
the signed text lets a receiver refuse replays older than a few minutes, and ``v1`` leaves room for
a new scheme (or a second secret while rotating) beside the old one. ``verify`` is the reference
implementation of the receiver's side.

A 2xx answer means accepted; its JSON ``id`` (if any) becomes the provider message id. Retries
follow the other providers: 408, 429 and 5xx are retried (honouring Retry-After), other answers
are final, and a timeout after the request left is ambiguous. Redirects are not followed.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from services.dispatch.adapters.providers.base import (
    ensure_channel,
    json_object,
    post,
    raise_for_answer,
)
from services.dispatch.domain.messages import Outbound, Receipt
from services.dispatch.domain.providers import Channel, WebhookConfig

SIGNATURE_HEADER = "X-Ciclo-Signature"
MESSAGE_ID_HEADER = "X-Ciclo-Message-Id"
SCHEME = "v1"
DEFAULT_TOLERANCE = 300.0


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>." + body``."""
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The value of ``X-Ciclo-Signature`` for ``body`` sent at ``timestamp`` (unix seconds)."""
    return f"t={timestamp},{SCHEME}={signature(secret, body, timestamp)}"


def verify(
    secrets: str | list[str],
    header: str,
    body: bytes,
    *,
    now: float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> bool:
    """True when ``header`` signs ``body`` with one of ``secrets`` (several while rotating) and
    its timestamp is within ``tolerance`` seconds of ``now``. Compares in constant time."""
    timestamp: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == SCHEME and value:
            candidates.append(value)
    if timestamp is None or not candidates or abs(now - timestamp) > tolerance:
        return False
    keys = [secrets] if isinstance(secrets, str) else secrets
    expected = [signature(key, body, timestamp) for key in keys]
    return any(hmac.compare_digest(e, c) for e in expected for c in candidates)


def payload(message: Outbound) -> dict[str, Any]:
    """The JSON body: the rendered message and who it is for. ``from`` is the email sender
    (``null`` for SMS, whose sender the receiver chooses)."""
    sender = (
        {"email": message.sender, "name": message.sender_name}
        if message.channel == "email"
        else None
    )
    return {
        "message_id": message.message_id,
        "workspace_id": message.workspace_id,
        "customer_id": message.customer_id,
        "channel": message.channel,
        "category": message.category,
        "template": message.template,
        "to": message.to,
        "from": sender,
        "subject": message.content.subject,
        "html": message.content.html,
        "text": message.content.text,
        "headers": message.headers,
    }


class WebhookProvider:
    name = "webhook"
    channels: tuple[Channel, ...] = WebhookConfig.channels

    def __init__(
        self,
        client: httpx.AsyncClient,
        config: WebhookConfig,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._url = config.url
        self._secret = config.secret
        self._clock = clock

    def request_parts(self, message: Outbound) -> tuple[bytes, dict[str, str]]:
        """The exact bytes to send and the headers that sign them."""
        body = orjson.dumps(payload(message))
        headers = {
            "Content-Type": "application/json",
            MESSAGE_ID_HEADER: message.message_id,
            SIGNATURE_HEADER: sign(self._secret, body, int(self._clock())),
        }
        return body, headers

    async def send(self, message: Outbound) -> Receipt:
        ensure_channel(self.name, self.channels, message)
        body, headers = self.request_parts(message)
        response = await post(
            self._client, self._url, provider=self.name, content=body, headers=headers
        )
        raise_for_answer(response, provider=self.name, detail=response.text[:500])
        receipt_id = json_object(response).get("id")
        return Receipt(
            provider=self.name,
            provider_message_id=receipt_id if isinstance(receipt_id, str) else message.message_id,
        )
