"""Reading provider payloads: JSON and forms, typed fields, timestamps, signature freshness and
constant-time comparison. Every provider module reads its wire format through these, so a
malformed field is reported the same way (``WebhookPayloadError`` naming its path) everywhere."""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import orjson

from services.dispatch.webhooks.model import (
    WebhookAuthError,
    WebhookFormatError,
    WebhookPayloadError,
)
from shared.contracts.events import EARLIEST, LATEST

# How far a signed timestamp may lie from our clock, either way: older is a replay, newer a
# clock gone wrong. Five minutes absorbs ordinary clock skew and the provider's queueing.
MAX_SKEW = timedelta(minutes=5)

Payload = dict[str, Any]


def json_body(body: bytes, *, provider: str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise WebhookFormatError(f"a {provider} webhook body must be JSON: {exc}") from None


def json_object(body: bytes, *, provider: str) -> Payload:
    payload = json_body(body, provider=provider)
    if not isinstance(payload, dict):
        raise WebhookFormatError(f"a {provider} webhook body must be a JSON object")
    return payload


def form(body: bytes, *, provider: str) -> list[tuple[str, str]]:
    """An ``application/x-www-form-urlencoded`` body as (name, value) pairs, repeats kept."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookFormatError(f"a {provider} webhook body must be a UTF-8 form") from None
    return parse_qsl(text, keep_blank_values=True)


def obj(value: Any, field: str) -> Payload:
    """An optional nested object: absent or null is empty, anything else but an object is an
    error."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WebhookPayloadError("must be an object", field=field)
    return value


def text(value: Any) -> str | None:
    """A string or number as text; absent, empty, or any other type is None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def required_text(data: Mapping[str, Any], key: str, field: str) -> str:
    value = text(data.get(key))
    if value is None:
        raise WebhookPayloadError("is required (a non-empty string)", field=field)
    return value


def _in_range(at: datetime, field: str) -> datetime:
    if not EARLIEST <= at <= LATEST:
        raise WebhookPayloadError(f"must lie between {EARLIEST:%Y} and {LATEST:%Y}", field=field)
    return at.astimezone(UTC)


def epoch(value: Any, field: str) -> datetime:
    """Unix seconds (an integer, a float, or either as a string) as an aware UTC datetime."""
    seconds: float | None = None
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str):
            seconds = float(value.strip())
    except (ValueError, OverflowError):
        seconds = None
    if seconds is None or not math.isfinite(seconds):
        raise WebhookPayloadError("must be a Unix time in seconds", field=field)
    try:
        at = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise WebhookPayloadError("is not a plausible Unix time", field=field) from None
    return _in_range(at, field)


def iso(value: Any, field: str) -> datetime:
    """An ISO 8601 time with an offset (``Z`` or ``±hh:mm``) as an aware UTC datetime."""
    if not isinstance(value, str):
        raise WebhookPayloadError("must be an ISO 8601 time", field=field)
    try:
        at = datetime.fromisoformat(value.strip())
    except ValueError:
        raise WebhookPayloadError(f"is not an ISO 8601 time: {value[:40]!r}", field=field) from None
    if at.tzinfo is None:
        raise WebhookPayloadError("must carry a UTC offset", field=field)
    return _in_range(at, field)


def signed_at(value: str, *, field: str) -> datetime:
    """A signed Unix timestamp from a header or signature block: unreadable is unauthentic."""
    try:
        seconds = int(value.strip())
        return datetime.fromtimestamp(seconds, UTC)
    except (ValueError, OverflowError, OSError):
        raise WebhookAuthError(f"{field} is not a Unix time", field=field) from None


def check_fresh(at: datetime, now: datetime, *, field: str) -> None:
    """Refuse a signature made too long ago (a replay) or too far ahead (a wrong clock)."""
    if now - at > MAX_SKEW:
        raise WebhookAuthError(
            f"the signature is stale: signed {_ago(now - at)} ago, more than "
            f"{_ago(MAX_SKEW)} allowed",
            field=field,
        )
    if at - now > MAX_SKEW:
        raise WebhookAuthError(
            f"the signature is dated {_ago(at - now)} in the future: check the clocks",
            field=field,
        )


def _ago(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    return f"{seconds // 60} min"


def same(expected: str, given: str) -> bool:
    """Constant-time comparison of two texts (a signature against the one we computed)."""
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8", "replace"))


def digest(*parts: object) -> str:
    """A stable id for an event the provider gave none: a hash of what identifies it."""
    joined = "\n".join("" if p is None else str(p) for p in parts)
    return "sha256:" + hashlib.sha256(joined.encode()).hexdigest()


def canonical(value: Any) -> bytes:
    """JSON with sorted keys: the same event always hashes the same."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
