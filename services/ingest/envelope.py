"""One validated event → its bus record: the single mapping every way into Ciclo uses (native
API, Segment, webhooks, ``ciclo import``).

The record's value is built straight from one dump of the event rather than through the
EventEnvelope model: the catalogue has checked everything that model checks, and building and
dumping the model cost about half of it again. ``to_envelope`` reads the record back as the model
(for callers and tests that want the contract object).
"""

from __future__ import annotations

from datetime import UTC, datetime
from random import getrandbits
from typing import Any

import orjson

from services.ingest.catalogue import EventBase
from shared.bus.ports import OutgoingRecord
from shared.contracts.events import EVENT_TYPE_PREFIX, EventEnvelope, cloudevent_headers
from shared.contracts.topics import EVENTS
from shared.http import Unprocessable

# Version 4 and the RFC 4122 variant, as uuid.UUID(int=..., version=4) sets them.
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def new_event_id() -> str:
    """A random (version 4) UUID from the process's PRNG: uuid4() reads os.urandom, which costs
    ~50 µs a call on some VMs; an event id needs uniqueness, not unpredictability. Formatted
    directly: building a uuid.UUID to print it costs three times as much, once per event."""
    digits = f"{getrandbits(128) & _UUID4_CLEAR | _UUID4_SET:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


_last_isoformat: tuple[datetime, str] | None = None


def _isoformat(moment: datetime) -> str:
    """``moment.isoformat()`` for the receipt time, which every event of a batch without its own
    ``occurred_at`` shares: the last one is kept. (An LRU cache costs a single event more than it
    saves: every single event has a receipt time of its own.)"""
    global _last_isoformat
    last = _last_isoformat
    if last is not None and last[0] == moment and last[0].tzinfo is moment.tzinfo:
        return last[1]
    text = moment.isoformat()
    _last_isoformat = (moment, text)
    return text


def encode_event(
    event: EventBase,
    *,
    workspace_id: str,
    received_at: datetime,
    source: str = "api",
    historical: bool = False,
    event_id: str | None = None,
) -> OutgoingRecord:
    """The bus record of a validated event (EventEnvelope v1 as JSON, CloudEvents headers, keyed
    ``workspace:customer``). Money travels as decimal strings, timestamps in UTC; unknown
    top-level fields go to ``context.extra`` (a client's own ``context.extra`` is kept there as
    ``context_extra``). Raises TypeError for what JSON cannot carry (integers beyond 64 bits,
    lone surrogates), which Python's JSON parser lets through."""
    # The serializer itself, not model_dump(): the same dump without its Python wrapper.
    fields = event.__pydantic_serializer__.to_python(event, mode="json", exclude_unset=True)
    context: dict[str, Any] = fields.get("context", {})
    if event.model_extra:
        extras = {name: fields[name] for name in event.model_extra}
        if "extra" in context:
            extras["context_extra"] = context["extra"]
        context["extra"] = extras
    event_id = event_id or event.event_id or new_event_id()
    event_type: str = event.type  # type: ignore[attr-defined]
    received = received_at.astimezone(UTC)
    if event.occurred_at is None:
        occurred = received
        ce_time = _isoformat(received)
    else:
        occurred = event.occurred_at.astimezone(UTC)
        ce_time = occurred.isoformat()
    value = orjson.dumps(
        {
            "schema_version": 1,
            "event_id": event_id,
            "workspace_id": workspace_id,
            "customer_id": event.customer_id,
            "anonymous_id": event.anonymous_id,
            "type": event_type,
            "occurred_at": occurred,
            "received_at": received,
            "source": source,
            "properties": fields.get("properties", {}),
            "traits": fields.get("traits", {}),
            "context": context,
            "historical": historical,
        },
        option=orjson.OPT_UTC_Z,
    )
    headers = cloudevent_headers(
        ce_id=event_id,
        ce_type=EVENT_TYPE_PREFIX + event_type,
        ce_source=f"/workspaces/{workspace_id}/{source}",
        ce_time=ce_time,
    )
    subject = event.customer_id or f"anon:{event.anonymous_id}"
    return OutgoingRecord(
        topic=EVENTS, key=f"{workspace_id}:{subject}", value=value, headers=headers
    )


def record_for(event: EventBase, **kwargs: Any) -> OutgoingRecord:
    """:func:`encode_event` for HTTP handlers: what cannot be encoded is a 422."""
    try:
        return encode_event(event, **kwargs)
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise Unprocessable(f"the event cannot be encoded: {exc}", field="body") from exc


def event_id_of(record: OutgoingRecord) -> str:
    return record.headers["ce_id"]


def to_envelope(event: EventBase, **kwargs: Any) -> EventEnvelope:
    """The event as the EventEnvelope contract object (decoded from its record)."""
    return EventEnvelope.from_json(record_for(event, **kwargs).value)
