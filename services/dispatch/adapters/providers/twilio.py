"""Twilio Programmable Messaging (``POST /2010-04-01/Accounts/{sid}/Messages.json``, form body,
Basic ``AccountSid:AuthToken``).

Twilio has no custom-data field, so our ids ride on the ``StatusCallback`` URL as the query
parameters ``ciclo_message_id`` and ``ciclo_workspace_id``: every status callback for the message
comes back to that exact URL. The receipt is Twilio's Message SID (``SM…``), which callbacks carry
as ``MessageSid``.

Errors are ``{"code", "message", "more_info", "status"}``; the HTTP status decides retries (429
and 5xx transient, other 4xx permanent, e.g. 21211 invalid number, 20003 bad credentials).
21610, the recipient replied STOP, is an :class:`OptedOutError`: the dispatcher suppresses the
number, as when a status callback reports it.

A ``Body`` longer than :data:`MAX_BODY` is refused here, before the request Twilio would answer
with error 21617.
"""

from __future__ import annotations

import logging

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
from services.dispatch.domain.providers import Channel, TwilioConfig
from services.dispatch.errors import NotSentError, OptedOutError, PermanentSendError

log = logging.getLogger(__name__)

OPTED_OUT_CODES = frozenset({"21610"})
"""Twilio's error for "Attempt to send to unsubscribed recipient": the number replied STOP (or
another opt-out keyword) to this sender (https://www.twilio.com/docs/api/errors/21610)."""

MAX_BODY = 1600
"""The longest ``Body`` Twilio takes, in characters as Twilio counts them: an emoji or other
character "with a higher byte count" counts as several (here: UTF-16 code units, an emoji 2).
Longer is HTTP 400 with error 21617, "The concatenated message body exceeds the 1600 character
limit" (https://www.twilio.com/docs/api/errors/21617). A limit of characters, not segments:
1600 GSM-7 characters are 11 segments, 1600 UCS-2 ones 24.
"""


class TwilioProvider:
    name = "twilio"
    channels: tuple[Channel, ...] = TwilioConfig.channels
    max_text = MAX_BODY

    def __init__(self, client: httpx.AsyncClient, config: TwilioConfig) -> None:
        self._client = client
        self._config = config
        self._url = (
            f"{config.base_url.rstrip('/')}/2010-04-01/Accounts/{config.account_sid}/Messages.json"
        )
        self._auth = httpx.BasicAuth(config.account_sid, config.auth_token)

    def status_callback(self, message: Outbound) -> str | None:
        if not self._config.status_callback:
            return None
        url = httpx.URL(self._config.status_callback).copy_merge_params(
            {"ciclo_message_id": message.message_id, "ciclo_workspace_id": message.workspace_id}
        )
        return str(url)

    def form(self, message: Outbound) -> dict[str, str]:
        form = {
            "To": e164(message.to, provider=self.name),
            "Body": sms_text(
                message.content.text, provider=self.name, limit=self.max_text, refusal="error 21617"
            ),
        }
        # A messaging service picks the sender from its pool (and handles STOP, geo-matching).
        if self._config.messaging_service_sid:
            form["MessagingServiceSid"] = self._config.messaging_service_sid
        elif self._config.from_number:
            form["From"] = e164(self._config.from_number, provider=self.name, field="from_number")
        else:
            raise NotSentError(
                "twilio: the configuration has neither from_number nor messaging_service_sid"
            )
        callback = self.status_callback(message)
        if callback:
            form["StatusCallback"] = callback
        return form

    async def send(self, message: Outbound) -> Receipt:
        ensure_channel(self.name, self.channels, message)
        response = await post(
            self._client, self._url, provider=self.name, data=self.form(message), auth=self._auth
        )
        if not response.is_success:
            error = json_object(response)
            detail = response.text[:500]
            if error.get("message"):
                detail = f"{error.get('code')} {error['message']}"
                if error.get("more_info"):
                    detail += f" ({error['more_info']})"
            try:
                raise_for_answer(response, provider=self.name, detail=detail)
            except PermanentSendError as exc:
                if str(error.get("code")) in OPTED_OUT_CODES:
                    raise OptedOutError(str(exc)) from None
                raise
        sid = json_object(response).get("sid")
        if not isinstance(sid, str):
            log.warning(
                "twilio accepted %s without a sid: %.200s", message.message_id, response.text
            )
            sid = None
        return Receipt(provider=self.name, provider_message_id=sid)
