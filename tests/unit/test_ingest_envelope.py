"""The bus record of an event: ids, CloudEvents time and the envelope, as every way in encodes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

from services.ingest.catalogue import parse_event
from services.ingest.envelope import encode_event, new_event_id
from shared.contracts.events import EventEnvelope

BERLIN_WINTER = timezone(timedelta(hours=1))


def test_new_event_ids_are_distinct_version_4_uuids() -> None:
    ids = [new_event_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:200]:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert str(parsed) == text


def test_ce_time_is_the_utc_occurrence_whether_given_or_the_receipt() -> None:
    given = parse_event(
        {"type": "x", "customer_id": "c", "occurred_at": "2026-11-20T10:00:00.5+01:00"}
    )
    absent = parse_event({"type": "x", "customer_id": "c"})
    first = datetime(2026, 11, 23, 10, 0, tzinfo=BERLIN_WINTER)
    later = first + timedelta(seconds=1)

    record = encode_event(given, workspace_id="shop", received_at=first)
    assert record.headers["ce_time"] == "2026-11-20T09:00:00.500000+00:00"
    # Events without their own time take the receipt time of their request, not a former one's.
    for received in (first, later, first):
        record = encode_event(absent, workspace_id="shop", received_at=received)
        envelope = EventEnvelope.from_json(record.value)
        assert record.headers["ce_time"] == received.astimezone(UTC).isoformat()
        assert envelope.occurred_at == envelope.received_at == received
        assert record.headers == envelope.headers()
