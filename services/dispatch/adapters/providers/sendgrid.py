"""SendGrid v3 Mail Send (``POST /v3/mail/send``). Our message id travels in ``custom_args`` so
SendGrid's event webhook can be matched back to it."""

from __future__ import annotations

from typing import Any

import httpx

from services.dispatch.adapters.providers.base import (
    ensure_channel,
    post,
    raise_for_answer,
)
from services.dispatch.domain.messages import Outbound, Receipt
from services.dispatch.domain.providers import Channel, SendGridConfig


class SendGridProvider:
    name = "sendgrid"
    channels: tuple[Channel, ...] = SendGridConfig.channels

    def __init__(self, client: httpx.AsyncClient, *, api_key: str, base_url: str) -> None:
        self._client = client
        self._url = httpx.URL(base_url.rstrip("/") + "/v3/mail/send")
        self._headers = {"Authorization": f"Bearer {api_key}"}

    @classmethod
    def from_config(cls, client: httpx.AsyncClient, config: SendGridConfig) -> SendGridProvider:
        return cls(client, api_key=config.api_key, base_url=config.base_url)

    def body(self, message: Outbound) -> dict[str, Any]:
        content = []
        # SendGrid requires text/plain before text/html.
        if message.content.text:
            content.append({"type": "text/plain", "value": message.content.text})
        if message.content.html:
            content.append({"type": "text/html", "value": message.content.html})
        custom_args = {
            "ciclo_message_id": message.message_id,
            "ciclo_workspace_id": message.workspace_id,
        }
        body: dict[str, Any] = {
            "personalizations": [{"to": [{"email": message.to}], "custom_args": custom_args}],
            "from": {"email": message.sender, "name": message.sender_name},
            "subject": message.content.subject,
            "content": content,
            "categories": [message.template],
            "custom_args": custom_args,
        }
        if message.headers:
            body["headers"] = message.headers
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
        detail = "" if response.is_success else self._detail(response)
        raise_for_answer(response, provider=self.name, detail=detail)
        return Receipt(provider=self.name, provider_message_id=response.headers.get("x-message-id"))

    @staticmethod
    def _detail(response: httpx.Response) -> str:
        """What a refusal says: SendGrid's ``errors`` (field: message), else the body."""
        detail = response.text[:500]
        if response.status_code >= 400:
            try:
                errors = response.json().get("errors", [])
                detail = (
                    "; ".join(f"{e.get('field') or '-'}: {e.get('message')}" for e in errors)
                    or detail
                )
            except (ValueError, AttributeError):
                pass
        return detail
