"""Mailgun's webhooks: one JSON event per request, ``{"signature": {...}, "event-data": {...}}``.

Signature: ``signature.signature`` is the hex HMAC-SHA256, under the account's HTTP webhook signing
key, of ``signature.timestamp`` followed by ``signature.token``. It does not cover the event, so a
captured signature could carry another body: the timestamp must be recent and the token is
single-use (the caller records it; ``verify`` returns it).

Events: ``delivered``; ``failed`` with ``severity`` ``permanent`` (bounced hard) or ``temporary``
(bounced soft); ``opened``; ``clicked`` (``url``); ``complained``; ``unsubscribed``; ``rejected``
(Mailgun refused to send: failed). A permanent failure whose ``reason`` says Mailgun did not even
try (``suppress-unsubscribe``, ``suppress-complaint``: the address is on Mailgun's own list) is a
failure, not a bounce; one that gave up after retrying (``old``) or was blocked by the receiving
provider (``espblock``) says nothing about the address and counts as a soft bounce. ``accepted``,
``stored`` and list events are skipped. Ciclo's id is ``user-variables.ciclo_message_id``.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Any

from services.dispatch.webhooks.model import Engagement, EngagementType, WebhookAuthError
from services.dispatch.webhooks.wire import (
    Payload,
    check_fresh,
    digest,
    epoch,
    json_object,
    obj,
    required_text,
    same,
    signed_at,
    text,
)

PROVIDER = "mailgun"
TOKEN_PROVIDER = "mailgun-token"  # where used tokens are recorded in dispatch_webhook_events

_TYPES: dict[str, EngagementType] = {
    "delivered": "message_delivered",
    "failed": "message_bounced",
    "opened": "message_opened",
    "clicked": "message_clicked",
    "complained": "message_complained",
    "unsubscribed": "message_unsubscribed",
    "rejected": "message_failed",
}
_NOT_SENT = frozenset({"suppress-unsubscribe", "suppress-complaint"})
_NOT_THE_ADDRESS = frozenset({"old", "espblock"})


def sign(signing_key: str, timestamp: str, token: str) -> str:
    return hmac.new(signing_key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()


def signature_block(body: bytes) -> tuple[str, str, str]:
    """(timestamp, token, signature) of a webhook body; missing ones are unauthentic."""
    payload = json_object(body, provider="Mailgun")
    block = payload.get("signature")
    if not isinstance(block, dict):
        raise WebhookAuthError("missing signature object in the body", field="signature")
    fields = []
    for name in ("timestamp", "token", "signature"):
        value = text(block.get(name))
        if value is None:
            raise WebhookAuthError(f"missing signature.{name}", field=f"signature.{name}")
        fields.append(value)
    return fields[0], fields[1], fields[2]


def verify(*, signing_key: str, timestamp: str, token: str, signature: str, now: datetime) -> str:
    """Raise ``WebhookAuthError`` unless Mailgun signed ``timestamp + token`` within the last five
    minutes; the token, which the caller must refuse to see twice."""
    if not same(sign(signing_key, timestamp, token), signature.lower()):
        raise WebhookAuthError(
            "signature.signature does not match: check webhook_signing_key (Mailgun's HTTP "
            "webhook signing key, not the API key)",
            field="signature.signature",
        )
    check_fresh(signed_at(timestamp, field="signature.timestamp"), now, field="signature.timestamp")
    return token


def parse(body: bytes) -> list[Engagement]:
    payload = json_object(body, provider="Mailgun")
    data = obj(payload.get("event-data"), "event-data")
    name = required_text(data, "event", "event-data.event")
    kind = _TYPES.get(name)
    if kind is None:
        return []
    occurred_at = epoch(data.get("timestamp"), "event-data.timestamp")
    properties: dict[str, Any] = {"provider_status": name}
    status = obj(data.get("delivery-status"), "event-data.delivery-status")
    reason = text(data.get("reason"))
    if name == "failed":
        severity = text(data.get("severity"))
        if severity == "permanent" and reason in _NOT_SENT:
            kind = "message_failed"
        else:
            hard = severity == "permanent" and reason not in _NOT_THE_ADDRESS
            properties["bounce"] = "hard" if hard else "soft"
        if severity is not None:
            properties["severity"] = severity
    elif name == "rejected":
        reason = text(obj(data.get("reject"), "event-data.reject").get("reason")) or reason
    elif name == "clicked":
        properties["url"] = text(data.get("url"))
    if reason is not None:
        properties["reason"] = reason
    description = text(status.get("description")) or text(status.get("message"))
    if description is not None:
        properties["description"] = description[:500]
    if (code := text(status.get("code"))) is not None:
        properties["error_code"] = code
    headers = obj(
        obj(data.get("message"), "event-data.message").get("headers"), "event-data.message.headers"
    )
    if (provider_message_id := text(headers.get("message-id"))) is not None:
        properties["provider_message_id"] = provider_message_id
    variables = obj(data.get("user-variables"), "event-data.user-variables")
    return [
        Engagement(
            provider=PROVIDER,
            provider_event_id=_event_id(data),
            type=kind,
            message_id=text(variables.get("ciclo_message_id")),
            workspace_id=text(variables.get("ciclo_workspace_id")),
            address=text(data.get("recipient")),
            occurred_at=occurred_at,
            properties=properties,
        )
    ]


def _event_id(data: Payload) -> str:
    """Mailgun's event id is unique only within a day; with the event's own timestamp it is
    unique for as long as the dedupe table keeps it, and the same in every retry."""
    event_id = text(data.get("id"))
    timestamp = text(data.get("timestamp"))
    if event_id is None:
        return digest(text(data.get("event")), timestamp, text(data.get("recipient")))
    return f"{event_id}:{timestamp}"
