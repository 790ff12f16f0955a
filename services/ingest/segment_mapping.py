"""Segment (and RudderStack) messages mapped onto the native catalogue: pure functions, no I/O.

:func:`to_event` turns one Segment message of a given ``type`` (identify, track, page, screen,
group, alias) into a validated native event, or raises :class:`Rejected` whose problems name the
*Segment* field at fault (``properties.products.0.price``, ``userId``), never the native one the
client has never heard of. :func:`merge_batch` applies a batch's top-level ``context``,
``integrations`` and ``sentAt`` to one of its items. The mapping table is in
docs/ingest-segment.md.

Nothing a client sent is dropped: fields the mapping does not use travel in the event's
``context.extra.segment`` (via the catalogue's ``extra="allow"``), except ``writeKey``, which is a
credential and is never stored.

The six message types and the entry points live here; the primitives they share are in
:mod:`services.ingest.segment_common`, the e-commerce spec v2 events in
:mod:`services.ingest.segment_commerce`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from services.ingest.catalogue import TYPED, EventBase, error_field, parse_event
from services.ingest.segment_commerce import _COMMERCE, _products_to_items
from services.ingest.segment_common import (
    Builder,
    Native,
    _identifier,
    _object,
    _reject,
    foreign_letters,
)
from services.ingest.segment_common import Problem as Problem  # re-exported
from services.ingest.segment_common import Rejected as Rejected  # re-exported
from services.ingest.segment_common import snake_case as snake_case  # re-exported

KINDS = ("identify", "track", "page", "screen", "group", "alias")
MAX_MESSAGE_ID = 100  # Segment's dedupe key is "less than 100 characters"
CREDENTIAL = "writeKey"

_PAGE_FIELDS = ("url", "path", "title", "referrer", "search")


@dataclass(frozen=True, slots=True)
class BatchDefaults:
    """What a ``/v1/batch`` body says once for all of its items."""

    context: Mapping[str, Any] = field(default_factory=dict)
    integrations: Mapping[str, Any] = field(default_factory=dict)
    sent_at: Any = None
    other: Mapping[str, Any] = field(default_factory=dict)


def batch_defaults(body: Mapping[str, Any]) -> BatchDefaults:
    """The top-level fields of a batch body (``batch`` and ``writeKey`` already taken out)."""
    rest = dict(body)
    context = _object(rest.pop("context", None), "context")
    integrations = _object(rest.pop("integrations", None), "integrations")
    return BatchDefaults(context, integrations, rest.pop("sentAt", None), rest)


def merge_batch(item: Mapping[str, Any], defaults: BatchDefaults) -> dict[str, Any]:
    """One batch item with the batch's defaults applied; the item's own values win."""
    message = dict(item)
    for name, shared in (("context", defaults.context), ("integrations", defaults.integrations)):
        own = message.get(name)
        if shared and (own is None or isinstance(own, dict)):
            message[name] = {**shared, **(own or {})}
    if defaults.sent_at is not None:
        message.setdefault("sentAt", defaults.sent_at)
    if defaults.other:
        # Unknown batch-level fields are kept with every item rather than dropped.
        message.setdefault("batch", dict(defaults.other))
    return message


def to_event(message: Mapping[str, Any], *, kind: str, received_at: datetime) -> EventBase:
    """Map and validate one message; raises :class:`Rejected` naming Segment fields."""
    native = to_native(message, kind=kind, received_at=received_at)
    try:
        return parse_event(native.event)
    except ValidationError as exc:
        raise Rejected(
            [Problem(native.segment_field(error_field(e["loc"])), e["msg"]) for e in exc.errors()]
        ) from None


def to_native(message: Mapping[str, Any], *, kind: str, received_at: datetime) -> Native:
    """The native event dict for one message, before catalogue validation."""
    build = _BUILDERS.get(kind)
    if build is None:
        raise _reject("type", f"unknown type {kind!r}: expected one of {', '.join(KINDS)}")
    rest = dict(message)
    rest.pop("type", None)
    rest.pop(CREDENTIAL, None)
    native = Native()
    event = native.event
    user_id = _identifier(rest.pop("userId", None), "userId")
    anonymous_id = _identifier(rest.pop("anonymousId", None), "anonymousId")
    if user_id is None and anonymous_id is None:
        raise _reject("userId", "userId or anonymousId is required")
    event["customer_id"] = user_id
    event["anonymous_id"] = anonymous_id
    message_id = _identifier(rest.pop("messageId", None), "messageId")
    if message_id is not None and len(message_id) >= MAX_MESSAGE_ID:
        raise _reject("messageId", f"must be shorter than {MAX_MESSAGE_ID} characters")
    event["event_id"] = message_id
    event["occurred_at"], native.origins["occurred_at"] = occurred_at(rest, received_at=received_at)
    rest.pop("timestamp", None)
    event["context"] = context = _object(rest.pop("context", None), "context")
    if "extra" in context:
        # The envelope's context.extra holds the fields we kept; the client's own moves aside.
        rest["context_extra"] = context.pop("extra")
    build(rest, native)
    if rest:
        event["segment"] = rest  # → context.extra.segment: kept as sent
    return native


def occurred_at(message: Mapping[str, Any], *, received_at: datetime) -> tuple[datetime, str]:
    """When it happened, and the field that said so.

    ``timestamp`` if given; else Segment's clock-skew correction
    ``receivedAt - (sentAt - originalTimestamp)``, which trusts the device's clock only for the
    interval between the event and its upload; else ``originalTimestamp``; else ``receivedAt``.
    """
    if message.get("timestamp") is not None:
        return parse_timestamp(message["timestamp"], "timestamp"), "timestamp"
    original = message.get("originalTimestamp")
    if original is None:
        return received_at, "timestamp"
    when = parse_timestamp(original, "originalTimestamp")
    if message.get("sentAt") is None:
        return when, "originalTimestamp"
    sent = parse_timestamp(message["sentAt"], "sentAt")
    try:
        return received_at - (sent - when), "originalTimestamp"
    except OverflowError:
        raise _reject("sentAt", "sentAt and originalTimestamp are too far apart") from None


def parse_timestamp(value: Any, where: str) -> datetime:
    """ISO-8601 to an aware UTC datetime; a time without a zone is read as UTC, as Segment does."""
    if not isinstance(value, str):
        raise _reject(where, "must be an ISO-8601 timestamp string")
    try:
        when = datetime.fromisoformat(value)
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        raise _reject(where, f"{value[:64]!r} is not an ISO-8601 timestamp") from None


# --- the six message types -------------------------------------------------------------------


def _identify(rest: dict[str, Any], native: Native) -> None:
    native.event["type"] = "identify"
    native.event["traits"] = _traits(_object(rest.pop("traits", None), "traits"), native)


def _traits(traits: dict[str, Any], native: Native) -> dict[str, Any]:
    # Segment's reserved traits are camelCase; the catalogue (and every template) says first_name.
    for camel, snake in (("firstName", "first_name"), ("lastName", "last_name")):
        if camel in traits and snake not in traits:
            traits[snake] = traits.pop(camel)
            native.origins[f"traits.{snake}"] = f"traits.{camel}"
    birthday = traits.get("birthday")
    if isinstance(birthday, str) and re.match(r"^\d{4}-\d{2}-\d{2}[T ]", birthday):
        traits["birthday"] = birthday[:10]  # a date-time from a date picker: the date is meant
    return traits


def _alias(rest: dict[str, Any], native: Native) -> None:
    if native.event["customer_id"] is None:
        raise _reject("userId", "alias needs userId: the identity previousId is merged into")
    previous = _identifier(rest.pop("previousId", None), "previousId")
    if previous is None:
        raise _reject("previousId", "previousId is required")
    native.event["type"] = "alias"
    native.event["properties"] = {"previous_id": previous}
    native.origins["properties.previous_id"] = "previousId"


def _group(rest: dict[str, Any], native: Native) -> None:
    group_id = _identifier(rest.pop("groupId", None), "groupId")
    if group_id is None:
        raise _reject("groupId", "groupId is required")
    traits = _object(rest.pop("traits", None), "traits")
    native.event["type"] = "group"
    # The group's traits describe the account, not the person: they stay out of event traits.
    native.event["properties"] = {"group_id": group_id, "traits": traits}
    native.origins.update({"properties.group_id": "groupId", "properties.traits": "traits"})


def _page(rest: dict[str, Any], native: Native) -> None:
    props = _named_properties(rest, native)
    page = native.event["context"].get("page")
    if isinstance(page, dict):
        for name in _PAGE_FIELDS:
            if name not in props and name in page:
                props[name] = page[name]
                native.origins[f"properties.{name}"] = f"context.page.{name}"
    native.event["type"] = "page_viewed"
    native.event["properties"] = props


def _screen(rest: dict[str, Any], native: Native) -> None:
    native.event["type"] = "screen_viewed"
    native.event["properties"] = _named_properties(rest, native)


def _named_properties(rest: dict[str, Any], native: Native) -> dict[str, Any]:
    props = _object(rest.pop("properties", None), "properties")
    native.origins["properties"] = "properties"
    for name in ("name", "category"):
        if name not in rest:
            continue
        if name not in props:
            props[name] = rest.pop(name)
            native.origins[f"properties.{name}"] = name
        elif props[name] == rest[name]:
            del rest[name]
        # A name that differs from properties.name stays in context.extra.segment.
    return props


def _track(rest: dict[str, Any], native: Native) -> None:
    # ``event`` stays in rest on purpose: the name as sent is kept in context.extra.segment.
    name = rest.get("event")
    if not isinstance(name, str) or not name.strip():
        raise _reject("event", "event is required: the name of what the user did")
    foreign = foreign_letters(name)
    if foreign:
        # Event types are ASCII (the native catalogue's rule); dropping these letters would
        # misname the event, and "Покупка 2" and "Возврат 2" would both become "2".
        raise _reject(
            "event",
            f"{name[:64]!r}: event names must be written in Latin letters and ASCII digits, "
            f"as event types are ASCII (an accent is dropped: 'Café' becomes cafe), and "
            f"{foreign[:16]!r} cannot be; send the name in Latin script, e.g. 'Order Completed'",
        )
    snake = snake_case(name)
    if not snake:
        raise _reject("event", f"{name[:64]!r} has no letter or digit to name an event type by")
    props = _object(rest.pop("properties", None), "properties")
    native.origins.update({"type": "event", "properties": "properties"})
    commerce = _COMMERCE.get(snake)
    if commerce is not None:
        commerce(props, native)
        return
    if snake in ("identify", "alias"):
        raise _reject("event", f"a track named {name!r} would be an {snake}: use /v1/{snake}")
    if snake in TYPED:
        _products_to_items(props, native)
    else:
        # A custom event keeps its properties exactly as sent, plus the name it was sent as.
        props.setdefault("event_name", name)
    native.event["type"] = snake
    native.event["properties"] = props


_BUILDERS: dict[str, Builder] = {
    "identify": _identify,
    "track": _track,
    "page": _page,
    "screen": _screen,
    "group": _group,
    "alias": _alias,
}
