"""Vonage Messages API status webhooks: one JSON status per request, signed with a JWT.

Signature: ``Authorization: Bearer <JWT>``, HS256 under the account's signature secret, with the
claims ``iat`` (when it was signed), ``jti``, ``iss`` and ``payload_hash`` (hex SHA-256 of the raw
body, so a signed token cannot carry another body). Ciclo checks the algorithm (HS256 only: a
token that names ``none`` or another algorithm is refused), the signature, the body hash, and that
``iat`` is within five minutes (``exp``, when present, too). Verified with the standard library.

Statuses: ``delivered``; ``read`` (apps with read receipts: opened); ``rejected``,
``undeliverable`` and ``failed`` are failed, with ``error.title`` as the error code and
``error.detail`` as the description. ``submitted`` is skipped. Ciclo's id is ``client_ref``.
Vonage writes numbers without the ``+``; Ciclo adds it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any

import orjson

from services.dispatch.webhooks.model import Engagement, EngagementType, WebhookAuthError
from services.dispatch.webhooks.wire import (
    check_fresh,
    iso,
    json_object,
    obj,
    required_text,
    same,
    text,
)

PROVIDER = "vonage"
HEADER = "Authorization"

_TYPES: dict[str, EngagementType] = {
    "delivered": "message_delivered",
    "read": "message_opened",
    "rejected": "message_failed",
    "undeliverable": "message_failed",
    "failed": "message_failed",
}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def sign(signature_secret: str, claims: dict[str, Any]) -> str:
    """An HS256 JWT of ``claims``, as Vonage makes them."""
    header = _b64url(orjson.dumps({"alg": "HS256", "typ": "JWT"}))
    payload = _b64url(orjson.dumps(claims))
    mac = hmac.new(signature_secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256)
    return f"{header}.{payload}.{_b64url(mac.digest())}"


def verify(
    *, signature_secret: str, body: bytes, authorization: str | None, now: datetime
) -> dict[str, Any]:
    """Raise ``WebhookAuthError`` unless the bearer token is Vonage's signature of this body,
    made within the last five minutes; the token's claims."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise WebhookAuthError(
            "missing Authorization: Bearer <JWT> header (turn on signed webhooks)", field=HEADER
        )
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise WebhookAuthError("the bearer token is not a JWT", field=HEADER)
    try:
        header = orjson.loads(_unb64url(parts[0]))
        claims = orjson.loads(_unb64url(parts[1]))
        signature = _unb64url(parts[2])
    except (binascii.Error, ValueError):
        raise WebhookAuthError("the bearer token is not a readable JWT", field=HEADER) from None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise WebhookAuthError("the JWT must be signed with HS256", field=HEADER)
    expected = hmac.new(
        signature_secret.encode(), f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256
    ).digest()
    if not hmac.compare_digest(expected, signature):
        raise WebhookAuthError(
            "the JWT's signature does not match: check signature_secret", field=HEADER
        )
    if not isinstance(claims, dict):
        raise WebhookAuthError("the JWT's claims must be an object", field=HEADER)
    body_hash = claims.get("payload_hash")
    if not isinstance(body_hash, str) or not same(
        hashlib.sha256(body).hexdigest(), body_hash.lower()
    ):
        raise WebhookAuthError(
            "the body does not match the JWT's payload_hash: it was changed", field=HEADER
        )
    check_fresh(_claim_time(claims, "iat"), now, field=HEADER)
    if "exp" in claims and _claim_time(claims, "exp") < now:
        raise WebhookAuthError("the JWT has expired", field=HEADER)
    return claims


def _claim_time(claims: dict[str, Any], name: str) -> datetime:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WebhookAuthError(f"the JWT has no numeric {name} claim", field=HEADER)
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        raise WebhookAuthError(f"the JWT's {name} claim is not a time", field=HEADER) from None


def parse(body: bytes) -> list[Engagement]:
    status_update = json_object(body, provider="Vonage")
    uuid = required_text(status_update, "message_uuid", "message_uuid")
    status = required_text(status_update, "status", "status")
    kind = _TYPES.get(status)
    if kind is None:
        return []
    properties: dict[str, Any] = {"provider_status": status, "provider_message_id": uuid}
    error = obj(status_update.get("error"), "error")
    if (code := text(error.get("title"))) is not None:
        properties["error_code"] = code
    if (detail := text(error.get("detail"))) is not None:
        properties["description"] = detail[:500]
    if (channel := text(status_update.get("channel"))) is not None:
        properties["provider_channel"] = channel
    to = text(status_update.get("to"))
    return [
        Engagement(
            provider=PROVIDER,
            provider_event_id=f"{uuid}:{status}",
            type=kind,
            message_id=text(status_update.get("client_ref")),
            workspace_id=None,
            address=f"+{to}" if to is not None and to.isdigit() else to,
            occurred_at=iso(status_update.get("timestamp"), "timestamp"),
            properties=properties,
        )
    ]
