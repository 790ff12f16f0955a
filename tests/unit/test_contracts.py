from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from shared.contracts.events import EventEnvelope
from shared.contracts.messages import MessageRequest, message_id_for

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def envelope(**overrides: object) -> EventEnvelope:
    fields: dict[str, object] = {
        "event_id": "e1",
        "workspace_id": "demo",
        "customer_id": "c1",
        "type": "signup",
        "occurred_at": NOW,
        "received_at": NOW,
    }
    fields.update(overrides)
    return EventEnvelope.model_validate(fields)


def test_envelope_round_trips_through_json() -> None:
    event = envelope(traits={"email": "ana@example.com"}, properties={"total": "10.50"})
    assert EventEnvelope.from_json(event.to_json()) == event


def test_envelope_needs_customer_or_anonymous_id() -> None:
    with pytest.raises(ValidationError, match="customer_id or anonymous_id"):
        envelope(customer_id=None)


def test_key_keeps_one_customers_events_together() -> None:
    assert envelope().key == "demo:c1"
    assert envelope(customer_id=None, anonymous_id="a9").key == "demo:anon:a9"


def test_envelope_rejects_naive_timestamps() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        envelope(occurred_at=datetime(2026, 1, 1))


def test_cloudevents_headers() -> None:
    headers = envelope().headers()
    assert headers["ce_specversion"] == "1.0"
    assert headers["ce_id"] == "e1"
    assert headers["ce_type"] == "ciclo.event.signup"
    assert headers["ce_source"] == "/workspaces/demo/api"
    assert datetime.fromisoformat(headers["ce_time"]) == NOW


def test_message_id_is_deterministic_and_distinct_per_step() -> None:
    args = {"workspace_id": "demo", "journey_id": "welcome", "version": 1, "run_id": "r1"}
    first = message_id_for(**args, step="hello")
    assert first == message_id_for(**args, step="hello")
    assert first != message_id_for(**args, step="reminder")
    assert first != message_id_for(**{**args, "version": 2}, step="hello")
    assert len(first) < 100


def test_message_request_round_trips() -> None:
    request = MessageRequest(
        message_id="msg_1",
        workspace_id="demo",
        customer_id="c1",
        channel="email",
        template="welcome-1",
        requested_at=NOW,
        recipient={"email": "ana@example.com"},
    )
    assert MessageRequest.from_json(request.to_json()) == request
    assert request.headers()["ce_type"] == "ciclo.message.requested"
