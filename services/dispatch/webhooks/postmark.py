"""Postmark's webhooks: one JSON record per request, its kind in ``RecordType``.

Postmark signs nothing: a webhook is protected by HTTP Basic credentials written into its URL
(``https://user:password@…``), which Postmark sends as an ``Authorization`` header. Ciclo compares
them, in constant time, with the workspace's ``webhook_username`` and ``webhook_password``.

Records: ``Delivery``; ``Bounce`` (hard or soft by ``TypeCode``, see below); ``SpamComplaint``
(complained); ``Open``; ``Click`` (``OriginalLink``); ``SubscriptionChange`` with
``SuppressSending: true`` and ``SuppressionReason: ManualSuppression`` (the recipient used
Postmark's unsubscribe link, or someone suppressed the address in Postmark: unsubscribed). A
SubscriptionChange caused by a hard bounce or a complaint repeats what its Bounce or
SpamComplaint record said, and a reactivation (``SuppressSending: false``) is not a consent, so
those are skipped. Ciclo's id is ``Metadata.ciclo_message_id``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal

from services.dispatch.webhooks.model import Engagement, EngagementType, WebhookAuthError
from services.dispatch.webhooks.wire import (
    Payload,
    iso,
    json_object,
    obj,
    required_text,
    same,
    text,
)

PROVIDER = "postmark"

Outcome = Literal["hard", "soft", "complaint", "unsubscribe", "failed", "ignore"]

# Postmark's bounce types (Bounce API, "bounce types"), by TypeCode and by Type name.
_BOUNCES: dict[int, tuple[str, Outcome]] = {
    1: ("HardBounce", "hard"),
    2: ("Transient", "soft"),
    16: ("Unsubscribe", "unsubscribe"),
    32: ("Subscribe", "ignore"),
    64: ("AutoResponder", "ignore"),
    128: ("AddressChange", "ignore"),
    256: ("DnsError", "soft"),
    512: ("SpamNotification", "soft"),
    1024: ("OpenRelayTest", "ignore"),
    2048: ("Unknown", "soft"),
    4096: ("SoftBounce", "soft"),
    8192: ("VirusNotification", "soft"),
    16384: ("ChallengeVerification", "ignore"),
    100000: ("BadEmailAddress", "hard"),
    100001: ("SpamComplaint", "complaint"),
    100002: ("ManuallyDeactivated", "failed"),
    100003: ("Unconfirmed", "failed"),
    100006: ("Blocked", "soft"),
    100007: ("SMTPApiError", "failed"),
    100008: ("InboundError", "ignore"),
    100009: ("DMARCPolicy", "soft"),
    100010: ("TemplateRenderingFailed", "failed"),
}
_BY_NAME: dict[str, Outcome] = {name: outcome for name, outcome in _BOUNCES.values()}
_KIND_OF: dict[Outcome, EngagementType] = {
    "hard": "message_bounced",
    "soft": "message_bounced",
    "complaint": "message_complained",
    "unsubscribe": "message_unsubscribed",
    "failed": "message_failed",
}

_SIMPLE: dict[str, tuple[EngagementType, str]] = {
    # RecordType: (engagement, field of its time)
    "Delivery": ("message_delivered", "DeliveredAt"),
    "SpamComplaint": ("message_complained", "BouncedAt"),
    "Open": ("message_opened", "ReceivedAt"),
    "Click": ("message_clicked", "ReceivedAt"),
}


def basic_credentials(username: str, password: str) -> str:
    """The ``Authorization`` header Postmark sends for credentials in the webhook URL."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def verify(*, username: str, password: str, authorization: str | None) -> None:
    """Raise ``WebhookAuthError`` unless the request carries the workspace's Basic credentials."""
    if not authorization:
        raise WebhookAuthError(
            "missing Authorization header: put the credentials in the webhook URL "
            "(https://user:password@…)",
            field="Authorization",
        )
    scheme, _, encoded = authorization.strip().partition(" ")
    try:
        given = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        given = ""
    user, _, secret = given.partition(":")
    # Both compared, always: which of the two was wrong is not told by the time taken.
    matches = same(username, user) & same(password, secret)
    if scheme.lower() != "basic" or not matches:
        raise WebhookAuthError(
            "the Basic credentials do not match webhook_username and webhook_password",
            field="Authorization",
        )


def parse(body: bytes) -> list[Engagement]:
    record = json_object(body, provider="Postmark")
    record_type = required_text(record, "RecordType", "RecordType")
    if record_type == "Bounce":
        return _bounce(record)
    if record_type == "SubscriptionChange":
        return _subscription_change(record)
    simple = _SIMPLE.get(record_type)
    if simple is None:
        return []  # Inbound and any record type Postmark adds later
    kind, time_field = simple
    properties: dict[str, Any] = {}
    if record_type == "Click":
        properties["url"] = text(record.get("OriginalLink"))
    elif record_type == "Open" and isinstance(record.get("FirstOpen"), bool):
        properties["first_open"] = record["FirstOpen"]
    elif record_type == "Delivery" and (details := text(record.get("Details"))) is not None:
        properties["description"] = details[:500]
    extra = properties.get("url") if record_type == "Click" else None
    return [_engagement(record, kind, time_field=time_field, properties=properties, extra=extra)]


def _bounce(record: Payload) -> list[Engagement]:
    code = record.get("TypeCode")
    name = text(record.get("Type"))
    known = _BOUNCES.get(code) if isinstance(code, int) and not isinstance(code, bool) else None
    outcome: Outcome = known[1] if known else _BY_NAME.get(name or "", "soft")
    if outcome == "ignore":
        return []
    if outcome == "soft" and record.get("Inactive") is True:
        # Postmark deactivated the address over this bounce: nothing reaches it any more.
        outcome = "hard"
    kind = _KIND_OF[outcome]
    properties: dict[str, Any] = {}
    if outcome in ("hard", "soft"):
        properties["bounce"] = outcome
    if name is not None:
        properties["reason"] = name
    if isinstance(code, int) and not isinstance(code, bool):
        properties["error_code"] = str(code)
    description = text(record.get("Description")) or text(record.get("Details"))
    if description is not None:
        properties["description"] = description[:500]
    return [_engagement(record, kind, time_field="BouncedAt", properties=properties)]


def _subscription_change(record: Payload) -> list[Engagement]:
    if record.get("SuppressSending") is not True:
        return []
    if text(record.get("SuppressionReason")) != "ManualSuppression":
        return []
    properties: dict[str, Any] = {"reason": "ManualSuppression"}
    if (origin := text(record.get("Origin"))) is not None:
        properties["origin"] = origin
    return [
        _engagement(record, "message_unsubscribed", time_field="ChangedAt", properties=properties)
    ]


def _engagement(
    record: Payload,
    kind: EngagementType,
    *,
    time_field: str,
    properties: dict[str, Any],
    extra: str | None = None,
) -> Engagement:
    record_type = str(record["RecordType"])
    occurred_at = iso(record.get(time_field), time_field)
    provider_message_id = text(record.get("MessageID"))
    # Bounces and complaints have an id of their own; other records are identified by message,
    # type and time (a click also by its link: two links clicked in the same instant).
    record_id = text(record.get("ID"))
    if record_id is not None and record_type in ("Bounce", "SpamComplaint"):
        event_id = f"{record_type}:{record_id}"
    else:
        event_id = ":".join(
            p for p in (record_type, provider_message_id, text(record.get(time_field)), extra) if p
        )
    properties = {"provider_status": record_type, **properties}
    if provider_message_id is not None:
        properties["provider_message_id"] = provider_message_id
    metadata = obj(record.get("Metadata"), "Metadata")
    return Engagement(
        provider=PROVIDER,
        provider_event_id=event_id,
        type=kind,
        message_id=text(metadata.get("ciclo_message_id")),
        workspace_id=text(metadata.get("ciclo_workspace_id")),
        address=text(record.get("Email")) or text(record.get("Recipient")),
        occurred_at=occurred_at,
        properties=properties,
    )
