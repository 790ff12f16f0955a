"""SendGrid's Event Webhook: a JSON array of events, signed with ECDSA P-256.

Signature: ``X-Twilio-Email-Event-Webhook-Signature`` is the base64 DER ECDSA/SHA-256 signature of
``X-Twilio-Email-Event-Webhook-Timestamp`` followed by the raw body, checked with the public key
SendGrid shows under Mail Settings → Event Webhook (base64 DER, or PEM).

Events: ``delivered``; ``bounce`` (``type`` ``bounce`` → hard, ``blocked`` → soft); ``dropped``
(SendGrid refused to send: failed); ``open``; ``click`` (``url``); ``spamreport`` (complained);
``unsubscribe`` and ``group_unsubscribe`` (unsubscribed). ``processed`` and ``deferred`` are
steps on the way (SendGrid retries a deferral for up to 72 hours, then reports a bounce or a
drop) and ``group_resubscribe`` is not a consent Ciclo takes from a provider: all three are
skipped. Ciclo's ``custom_args`` arrive as top-level keys of each event.
"""

from __future__ import annotations

import base64
import binascii
import functools
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from services.dispatch.webhooks.model import (
    Batch,
    Engagement,
    EngagementType,
    InvalidEvent,
    WebhookAuthError,
    WebhookFormatError,
    WebhookPayloadError,
)
from services.dispatch.webhooks.wire import (
    canonical,
    check_fresh,
    digest,
    epoch,
    json_body,
    required_text,
    signed_at,
    text,
)

PROVIDER = "sendgrid"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

_TYPES: dict[str, EngagementType] = {
    "delivered": "message_delivered",
    "bounce": "message_bounced",
    "dropped": "message_failed",
    "open": "message_opened",
    "click": "message_clicked",
    "spamreport": "message_complained",
    "unsubscribe": "message_unsubscribed",
    "group_unsubscribe": "message_unsubscribed",
}


@functools.lru_cache(maxsize=256)
def load_public_key(key: str) -> ec.EllipticCurvePublicKey:
    """The verification key as SendGrid shows it (base64 DER), or PEM; cached, as every
    request of a workspace presents the same key."""
    try:
        if "BEGIN PUBLIC KEY" in key:
            loaded = serialization.load_pem_public_key(key.encode())
        else:
            loaded = serialization.load_der_public_key(base64.b64decode(key, validate=True))
    except (ValueError, binascii.Error, TypeError, UnsupportedAlgorithm):
        raise WebhookAuthError(
            "the configured webhook_public_key is not a public key: paste the Event Webhook's "
            "verification key from SendGrid's Mail Settings"
        ) from None
    if not isinstance(loaded, ec.EllipticCurvePublicKey) or loaded.curve.name != "secp256r1":
        raise WebhookAuthError("the configured webhook_public_key is not an ECDSA P-256 key")
    return loaded


def verify(
    *,
    public_key: str,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    now: datetime,
) -> None:
    """Raise ``WebhookAuthError`` unless SendGrid signed ``timestamp + body`` within the last
    five minutes."""
    if not signature:
        raise WebhookAuthError(f"missing {SIGNATURE_HEADER} header", field=SIGNATURE_HEADER)
    if not timestamp:
        raise WebhookAuthError(f"missing {TIMESTAMP_HEADER} header", field=TIMESTAMP_HEADER)
    at = signed_at(timestamp, field=TIMESTAMP_HEADER)
    key = load_public_key(public_key)
    try:
        der = base64.b64decode(signature.strip(), validate=True)
        key.verify(der, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, ValueError, InvalidSignature):
        raise WebhookAuthError(
            f"{SIGNATURE_HEADER} does not match the body: check webhook_public_key",
            field=SIGNATURE_HEADER,
        ) from None
    check_fresh(at, now, field=TIMESTAMP_HEADER)


def parse(body: bytes) -> Batch:
    """The engagements of a batch. A malformed event is skipped and listed in ``invalid``, never
    raised: SendGrid retries a failed request as a whole, so one bad event would otherwise keep
    every good one of its batch from being recorded until SendGrid gives up."""
    events = json_body(body, provider="SendGrid")
    if not isinstance(events, list):
        raise WebhookFormatError("a SendGrid event webhook body must be a JSON array of events")
    engagements = []
    invalid = []
    for index, event in enumerate(events):
        where = f"[{index}]"
        try:
            if not isinstance(event, dict):
                raise WebhookPayloadError("must be an event object", field=where)
            engagement = _engagement(event, where)
        except WebhookPayloadError as exc:
            invalid.append(InvalidEvent(index=index, field=exc.field, message=exc.message))
            continue
        if engagement is not None:
            engagements.append(engagement)
    return Batch(engagements=engagements, invalid=invalid)


def _engagement(event: dict[str, Any], where: str) -> Engagement | None:
    name = required_text(event, "event", f"{where}.event")
    kind = _TYPES.get(name)
    if kind is None:
        return None
    occurred_at = epoch(event.get("timestamp"), f"{where}.timestamp")
    properties: dict[str, Any] = {"provider_status": name}
    for key, prop in (("sg_message_id", "provider_message_id"), ("reason", "reason")):
        if (value := text(event.get(key))) is not None:
            properties[prop] = value
    if name == "bounce":
        # "blocked": the receiving server refused this message (reputation, content), not the
        # address; the next message may well arrive.
        properties["bounce"] = "soft" if text(event.get("type")) == "blocked" else "hard"
        if (status := text(event.get("status"))) is not None:
            properties["error_code"] = status
        if (classification := text(event.get("bounce_classification"))) is not None:
            properties["classification"] = classification
    elif name == "click":
        properties["url"] = text(event.get("url"))
    elif name == "open" and isinstance(event.get("sg_machine_open"), bool):
        # Apple Mail Privacy Protection and the like open every message: not a person reading.
        properties["machine_open"] = event["sg_machine_open"]
    elif name == "group_unsubscribe" and (group := text(event.get("asm_group_id"))) is not None:
        properties["group"] = group
    return Engagement(
        provider=PROVIDER,
        provider_event_id=text(event.get("sg_event_id")) or digest(canonical(event)),
        type=kind,
        message_id=text(event.get("ciclo_message_id")),
        workspace_id=text(event.get("ciclo_workspace_id")),
        address=text(event.get("email")),
        occurred_at=occurred_at,
        properties=properties,
    )
