"""Mailgun Messages API (``POST /v3/{domain}/messages``, multipart form, Basic ``api:KEY``).

Our ids travel as the custom variables ``v:ciclo_message_id`` and ``v:ciclo_workspace_id``;
Mailgun hands them back in every webhook as ``event-data.user-variables``. The receipt keeps the
Message-Id Mailgun assigns without its angle brackets, the form in which webhooks
(``event-data.message.headers.message-id``) and the Events API filter ``message-id`` show it.
"""

from __future__ import annotations

import logging

import httpx

from services.dispatch.adapters.providers.base import (
    ensure_channel,
    json_object,
    mailbox,
    post,
    raise_for_answer,
)
from services.dispatch.domain.messages import Outbound, Receipt
from services.dispatch.domain.providers import Channel, MailgunConfig

log = logging.getLogger(__name__)

# Each field is a form part without a file name: (name, (None, value)) in httpx's files API,
# which is what makes httpx send multipart/form-data rather than a urlencoded body.
FormPart = tuple[str, tuple[None, str]]


class MailgunProvider:
    name = "mailgun"
    channels: tuple[Channel, ...] = MailgunConfig.channels

    def __init__(self, client: httpx.AsyncClient, config: MailgunConfig) -> None:
        self._client = client
        self._url = f"{config.base_url.rstrip('/')}/v3/{config.domain}/messages"
        self._auth = httpx.BasicAuth("api", config.api_key)

    def form(self, message: Outbound) -> list[FormPart]:
        fields: list[tuple[str, str | None]] = [
            ("from", mailbox(message.sender, message.sender_name)),
            ("to", message.to),
            ("subject", message.content.subject),
            ("text", message.content.text or None),
            ("html", message.content.html),
            ("o:tag", message.template),
            *((f"h:{name}", value) for name, value in message.headers.items()),
            ("v:ciclo_message_id", message.message_id),
            ("v:ciclo_workspace_id", message.workspace_id),
        ]
        return [(name, (None, value)) for name, value in fields if value is not None]

    async def send(self, message: Outbound) -> Receipt:
        ensure_channel(self.name, self.channels, message)
        response = await post(
            self._client,
            self._url,
            provider=self.name,
            files=self.form(message),
            auth=self._auth,
        )
        if not response.is_success:
            # Errors are {"message": …}, except 401, which is a bare "Forbidden".
            detail = str(json_object(response).get("message") or response.text[:500])
            raise_for_answer(response, provider=self.name, detail=detail)
        provider_id = json_object(response).get("id")
        if not isinstance(provider_id, str):
            log.warning(
                "mailgun accepted %s without an id: %.200s", message.message_id, response.text
            )
            return Receipt(provider=self.name, provider_message_id=None)
        return Receipt(provider=self.name, provider_message_id=provider_id.strip().strip("<>"))
