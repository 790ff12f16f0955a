"""Vonage Messages API, SMS channel (``POST /v1/messages``, JSON, Basic ``api_key:api_secret``).

Numbers go without the leading ``+`` (Vonage's form of E.164). Our message id travels as
``client_ref``, which Vonage repeats in every status webhook; Vonage keeps at most 100 characters
of it, so a longer id is refused here rather than truncated into something that matches nothing.
The workspace is not sent: the message id alone finds the message. The receipt is
``message_uuid``.

A ``text`` longer than :data:`MAX_TEXT` is refused here, before the request Vonage would answer
with a 422.

Errors are RFC 7807 problem documents (``type, title, detail, instance`` and, for 422,
``invalid_parameters``); 429 and 5xx are transient, other 4xx permanent (401 credentials, 402 low
balance, 422 invalid parameters).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx

from services.dispatch.adapters.providers.base import (
    e164,
    ensure_channel,
    json_object,
    post,
    raise_for_answer,
    sms_text,
)
from services.dispatch.domain.messages import Outbound, Receipt
from services.dispatch.domain.providers import Channel, VonageConfig
from services.dispatch.errors import NotSentError

log = logging.getLogger(__name__)

CLIENT_REF_MAX = 100
MAX_TEXT = 1000
"""The longest ``text`` the Messages API takes for SMS: "The text of message to send; limited to
1000 characters" (API reference, developer.vonage.com/en/api/messages; Vonage's Python SDK has
``max_length=1000`` on it). Longer is a 422 naming ``text``. Vonage does not say how it counts an
emoji: Ciclo counts it 2 (UTF-16 code units), as Twilio does, the stricter reading.
"""
_NUMBER = re.compile(r"^\+?[0-9]+$")


def vonage_number(number: str, *, field: str = "recipient") -> str:
    """E.164 without the ``+``, as Vonage wants it."""
    return e164(number, provider="vonage", field=field).removeprefix("+")


def problem_detail(answer: dict[str, Any]) -> str:
    """``title: detail`` plus each invalid parameter with its reason."""
    parts = [str(p) for p in (answer.get("title"), answer.get("detail")) if p]
    text = ": ".join(parts)
    invalid = answer.get("invalid_parameters")
    if isinstance(invalid, list):
        reasons = [f"{p.get('name')}: {p.get('reason')}" for p in invalid if isinstance(p, dict)]
        if reasons:
            text += " (" + "; ".join(reasons) + ")"
    return text


class VonageProvider:
    name = "vonage"
    channels: tuple[Channel, ...] = VonageConfig.channels
    max_text = MAX_TEXT

    def __init__(self, client: httpx.AsyncClient, config: VonageConfig) -> None:
        self._client = client
        self._url = config.base_url.rstrip("/") + "/v1/messages"
        self._auth = httpx.BasicAuth(config.api_key, config.api_secret)
        # A sender is a number (sent without "+") or an alphanumeric id (sent as it is).
        self._from = (
            config.from_number.removeprefix("+")
            if _NUMBER.fullmatch(config.from_number)
            else config.from_number
        )

    def body(self, message: Outbound) -> dict[str, str]:
        if len(message.message_id) > CLIENT_REF_MAX:
            raise NotSentError(
                f"vonage: message id {message.message_id[:20]!r}… is longer than the "
                f"{CLIENT_REF_MAX} characters Vonage keeps in client_ref"
            )
        return {
            "message_type": "text",
            "channel": "sms",
            "to": vonage_number(message.to),
            "from": self._from,
            "text": sms_text(
                message.content.text,
                provider=self.name,
                limit=self.max_text,
                refusal="a 422 on text",
            ),
            "client_ref": message.message_id,
        }

    async def send(self, message: Outbound) -> Receipt:
        ensure_channel(self.name, self.channels, message)
        response = await post(
            self._client,
            self._url,
            provider=self.name,
            json=self.body(message),
            auth=self._auth,
            headers={"Accept": "application/json"},
        )
        if not response.is_success:
            detail = problem_detail(json_object(response)) or response.text[:500]
            raise_for_answer(response, provider=self.name, detail=detail)
        uuid = json_object(response).get("message_uuid")
        if not isinstance(uuid, str):
            log.warning(
                "vonage accepted %s without a message_uuid: %.200s",
                message.message_id,
                response.text,
            )
            uuid = None
        return Receipt(provider=self.name, provider_message_id=uuid)
