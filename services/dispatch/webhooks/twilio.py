"""Twilio's message status callbacks: a form POST to the ``StatusCallback`` URL of each message.

Signature: ``X-Twilio-Signature`` is the base64 HMAC-SHA1, under the account's auth token, of the
full URL Twilio called (query string included) followed by every POST parameter's name and value,
sorted by name (and a repeated name's values sorted too). Twilio signs the URL sometimes with and
sometimes without its port, so the URL is tried as called, without its port, and with the
default port (as Twilio's own request validator does). There is no timestamp, so nothing can be
stale; a replay only repeats an event the dedupe table already holds.

Statuses: ``delivered``; ``read`` (WhatsApp and RCS read receipts: opened); ``undelivered`` and
``failed`` are failed, except where the ``ErrorCode`` says the number itself cannot take an SMS
(bounced hard: 21211 invalid number, 21614 not a mobile number, 21635 landline, 30005 unknown
handset, 30006 landline or unreachable carrier) or that the recipient opted out by replying STOP
(21610: unsubscribed). 30003 (handset unreachable: switched off, no signal) is temporary and stays
a failure. ``queued``, ``sending``, ``sent``, ``accepted``, ``scheduled`` and ``canceled`` are
skipped. Twilio sends no event time: the time of receipt stands in. Ciclo's ids travel as the
``ciclo_message_id`` and ``ciclo_workspace_id`` query parameters of the StatusCallback URL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from services.dispatch.adapters.providers.twilio import OPTED_OUT_CODES
from services.dispatch.webhooks.model import (
    Engagement,
    EngagementType,
    WebhookAuthError,
    WebhookPayloadError,
)
from services.dispatch.webhooks.wire import form, same

PROVIDER = "twilio"
SIGNATURE_HEADER = "X-Twilio-Signature"

HARD_BOUNCE_CODES = frozenset({"21211", "21614", "21635", "30005", "30006"})

_TYPES: dict[str, EngagementType] = {
    "delivered": "message_delivered",
    "read": "message_opened",
    "undelivered": "message_failed",
    "failed": "message_failed",
}


def sign(auth_token: str, url: str, params: Sequence[tuple[str, str]]) -> str:
    values: dict[str, list[str]] = {}
    for name, value in params:
        values.setdefault(name, []).append(value)
    signed = url + "".join(
        name + value for name in sorted(values) for value in sorted(values[name])
    )
    mac = hmac.new(auth_token.encode(), signed.encode(), hashlib.sha1).digest()
    return base64.b64encode(mac).decode("ascii")


def url_variants(url: str) -> list[str]:
    """The URL as given, without its port, and (when it names none) with the default one."""
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    try:
        port = parts.port
    except ValueError:
        return [url]
    bare = parts.netloc if port is None else parts.netloc.rsplit(":", 1)[0]
    variants = [url, urlunsplit(parts._replace(netloc=bare))]
    if port is None and default is not None:
        variants.append(urlunsplit(parts._replace(netloc=f"{bare}:{default}")))
    return list(dict.fromkeys(variants))


def verify(
    *,
    auth_token: str,
    urls: Sequence[str],
    params: Sequence[tuple[str, str]],
    signature: str | None,
) -> None:
    """Raise ``WebhookAuthError`` unless Twilio signed one of ``urls`` with these parameters;
    ``urls`` are the candidates for the URL Twilio called (behind proxies it is not certain)."""
    if not signature:
        raise WebhookAuthError(f"missing {SIGNATURE_HEADER} header", field=SIGNATURE_HEADER)
    matched = False
    for url in dict.fromkeys(v for candidate in urls for v in url_variants(candidate)):
        # No early exit: the time taken does not tell which candidate matched.
        matched |= same(sign(auth_token, url, params), signature.strip())
    if not matched:
        raise WebhookAuthError(
            f"{SIGNATURE_HEADER} does not match: check auth_token, and that the URL Twilio calls "
            "is the one Ciclo sees (X-Forwarded-Proto and X-Forwarded-Host behind a proxy)",
            field=SIGNATURE_HEADER,
        )


def parse(body: bytes, *, url: str, received_at: datetime) -> list[Engagement]:
    params = dict(form(body, provider="Twilio"))
    sid = params.get("MessageSid") or params.get("SmsSid")
    if not sid:
        raise WebhookPayloadError("is required", field="MessageSid")
    status = params.get("MessageStatus") or params.get("SmsStatus")
    if not status:
        raise WebhookPayloadError("is required", field="MessageStatus")
    kind = _TYPES.get(status)
    if kind is None:
        return []
    properties: dict[str, Any] = {"provider_status": status, "provider_message_id": sid}
    error_code = (params.get("ErrorCode") or "").strip() or None
    if error_code is not None:
        properties["error_code"] = error_code
        if (message := (params.get("ErrorMessage") or "").strip()) != "":
            properties["description"] = message[:500]
    if kind == "message_failed" and error_code in HARD_BOUNCE_CODES:
        kind = "message_bounced"
        properties["bounce"] = "hard"
    elif kind == "message_failed" and error_code in OPTED_OUT_CODES:
        kind = "message_unsubscribed"
        properties["reason"] = "the recipient replied STOP"
    query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    return [
        Engagement(
            provider=PROVIDER,
            provider_event_id=f"{sid}:{status}",
            type=kind,
            message_id=query.get("ciclo_message_id") or None,
            workspace_id=query.get("ciclo_workspace_id") or None,
            address=params.get("To") or None,
            occurred_at=received_at,
            properties=properties,
        )
    ]
