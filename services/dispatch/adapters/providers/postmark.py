"""Postmark Email API (``POST /email``, header ``X-Postmark-Server-Token``).

Our ids travel in ``Metadata`` (back in every webhook as ``Metadata``). Marketing mail goes to the
broadcast stream and transactional mail to the transactional one: Postmark keeps their reputations
apart and refuses bulk mail on a transactional stream.

Postmark answers errors as ``{"ErrorCode", "Message"}``, mostly with HTTP 422. The ErrorCode, not
the status, says whether a retry can help:

- transient: HTTP 429, 5xx, and ErrorCode 100 (maintenance) or 429 (rate limit) whatever the
  status, retried honouring Retry-After;
- permanent: everything else, notably 10 (bad server token), 300 (invalid email request),
  400/401 (sender signature missing or unconfirmed), 405/412/413 (the account may not send),
  406 (inactive recipient: hard bounce, spam complaint or manual suppression) and an unknown
  message stream.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from services.dispatch.adapters.providers.base import (
    ensure_channel,
    json_object,
    mailbox,
    post,
    raise_for_answer,
    retry_after,
)
from services.dispatch.domain.messages import Outbound, Receipt
from services.dispatch.domain.providers import Channel, PostmarkConfig
from services.dispatch.errors import NotSentError, TransientSendError

log = logging.getLogger(__name__)

RATE_LIMITED = 429  # ErrorCode of a rate limit (100 is maintenance)
TRANSIENT_CODES = frozenset({100, RATE_LIMITED})
INACTIVE_RECIPIENT = 406
# Postmark refuses Metadata values longer than 80 characters and names longer than 20.
METADATA_VALUE_MAX = 80


class PostmarkProvider:
    name = "postmark"
    channels: tuple[Channel, ...] = PostmarkConfig.channels

    def __init__(self, client: httpx.AsyncClient, config: PostmarkConfig) -> None:
        self._client = client
        self._config = config
        self._url = config.base_url.rstrip("/") + "/email"
        self._headers = {
            "X-Postmark-Server-Token": config.server_token,
            "Accept": "application/json",
        }

    def stream(self, message: Outbound) -> str:
        if message.category == "marketing":
            return self._config.broadcast_stream
        return self._config.message_stream

    def body(self, message: Outbound) -> dict[str, Any]:
        metadata = {
            "ciclo_message_id": message.message_id,
            "ciclo_workspace_id": message.workspace_id,
        }
        for key, value in metadata.items():
            if len(value) > METADATA_VALUE_MAX:
                raise NotSentError(
                    f"postmark: {key} {value[:20]!r}… is longer than the "
                    f"{METADATA_VALUE_MAX} characters Postmark allows in Metadata"
                )
        body: dict[str, Any] = {
            "From": mailbox(message.sender, message.sender_name),
            "To": message.to,
            "Subject": message.content.subject,
            "Tag": message.template,
            "Metadata": metadata,
            "MessageStream": self.stream(message),
        }
        if message.content.html:
            body["HtmlBody"] = message.content.html
        if message.content.text:
            body["TextBody"] = message.content.text
        if message.headers:
            body["Headers"] = [{"Name": k, "Value": v} for k, v in message.headers.items()]
        return body

    async def send(self, message: Outbound) -> Receipt:
        ensure_channel(self.name, self.channels, message)
        response = await post(
            self._client,
            self._url,
            provider=self.name,
            json=self.body(message),
            headers=self._headers,
        )
        if not response.is_success:
            self._raise(response)
        answer = json_object(response)
        provider_id = answer.get("MessageID")
        if not isinstance(provider_id, str):
            log.warning(
                "postmark accepted %s without a MessageID: %.200s",
                message.message_id,
                response.text,
            )
            provider_id = None
        return Receipt(provider=self.name, provider_message_id=provider_id)

    def _raise(self, response: httpx.Response) -> None:
        answer = json_object(response)
        code = answer.get("ErrorCode")
        text = str(answer.get("Message") or response.text[:500])
        detail = f"ErrorCode {code}: {text}" if code is not None else text
        if code in TRANSIENT_CODES:
            raise TransientSendError(
                f"postmark answered {response.status_code}: {detail}"[:1000],
                retry_after=retry_after(response),
                throttled=code == RATE_LIMITED or response.status_code == 429,
            )
        if code == INACTIVE_RECIPIENT:
            detail += " (the recipient is suppressed at Postmark)"
        raise_for_answer(response, provider=self.name, detail=detail)
