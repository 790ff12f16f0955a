"""One line of a backfill → one record for the events topic, or the reasons it is rejected.

The rules of an import, on top of the API's (:func:`~services.ingest.catalogue.parse_event`):

* ``occurred_at`` is required: history needs a time.
* The cut-off: an event that occurred at or before ``Rules.live_after`` gets ``historical=True``
  and builds profiles without ever triggering a journey. A later one is rejected unless
  ``allow_live``, which imports it as a live event: a backfill must never send by accident.
* A line's ``event_id`` is kept; a line without one gets an id derived from the workspace and the
  line's content, so a second import of the same file publishes the same ids and the journey
  service, which dedupes by event id, changes nothing.

Everything here is pure and picklable: it runs in the import's worker processes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pydantic import ValidationError

from services.ingest.catalogue import EventBase, error_field, parse_event
from services.ingest.envelope import encode_event
from services.ingest.import_sort import Item
from services.ingest.import_sources import LineError

SOURCE = "import"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Rules:
    """What every line is checked against; shipped to the worker processes with each chunk."""

    workspace_id: str
    live_after: datetime
    received_at: datetime
    allow_live: bool = False


def prepare(
    data: dict[str, Any] | LineError, line: int, rules: Rules
) -> tuple[Item, bool] | list[LineError]:
    """One decoded line → its item and whether it is historical, or why it was rejected."""
    if isinstance(data, LineError):
        return [data]
    try:
        event = parse_event(data)
    except ValidationError as exc:
        return [
            LineError(line, error_field(e["loc"]), e["msg"]) for e in exc.errors(include_url=False)
        ]
    if event.occurred_at is None:
        return [LineError(line, "occurred_at", "required in an import: history needs a time")]
    occurred = event.occurred_at.astimezone(UTC)
    historical = occurred <= rules.live_after
    if not historical and not rules.allow_live:
        return [
            LineError(
                line,
                "occurred_at",
                f"{occurred.isoformat()} is after the cut-off {rules.live_after.isoformat()}: "
                "a backfill never sends (pass a later --live-after, or --allow-live to import "
                "it as a live event)",
            )
        ]
    try:
        event_id = event.event_id or derive_event_id(rules.workspace_id, data)
        key, headers, value = encode_envelope(
            event, event_id=event_id, occurred=occurred, rules=rules, historical=historical
        )
    except TypeError as exc:  # orjson's JSONEncodeError: what JSON cannot carry (ints > 64 bits)
        return [LineError(line, "$", f"the event cannot be encoded: {exc}")]
    return ((occurred - _EPOCH) // _MICROSECOND, line, key, headers, value), historical


def derive_event_id(workspace_id: str, data: dict[str, Any]) -> str:
    """The id of an event that came without one: the same workspace and line content give the same
    id. Keys are sorted first, so an export that reorders fields keeps its ids. Two identical lines
    are one event (an exported duplicate), so the journey service counts it once."""
    digest = hashlib.blake2b(workspace_id.encode(), digest_size=16)
    digest.update(b"\0")
    digest.update(orjson.dumps(data, option=orjson.OPT_SORT_KEYS))
    return "imp_" + digest.hexdigest()


def encode_envelope(
    event: EventBase, *, event_id: str, occurred: datetime, rules: Rules, historical: bool
) -> tuple[str, bytes, bytes]:
    """The record key, CloudEvents headers (JSON) and value of a validated event: the same
    encoding as every other way in (:func:`services.ingest.envelope.encode_event`), in the
    compact form the sort spills to disk."""
    record = encode_event(
        event,
        workspace_id=rules.workspace_id,
        received_at=rules.received_at,
        source=SOURCE,
        historical=historical,
        event_id=event_id,
    )
    # ``occurred`` is the event's own time, already required and checked against the cut-off.
    assert event.occurred_at is not None and event.occurred_at.astimezone(UTC) == occurred
    # Copies: orjson's bytes keep the whole over-allocated output buffer (about 4 KiB) alive, which
    # made a sorted run ten times its size in memory.
    return record.key, _compact(orjson.dumps(dict(record.headers))), _compact(record.value)


def _compact(data: bytes) -> bytes:
    return bytes(memoryview(data))
