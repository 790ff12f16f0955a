"""The events dispatch emits into the events stream (through its outbox), one builder for all:
send outcomes, provider engagement (delivered, opened, …), refusals and unsubscribes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.bus.ports import OutgoingRecord
from shared.contracts.events import EventEnvelope
from shared.contracts.topics import EVENTS

# Engagement events normalised from every provider's webhook.
ENGAGEMENT = (
    "message_delivered",
    "message_opened",
    "message_clicked",
    "message_bounced",  # properties.bounce: hard | soft
    "message_complained",
    "message_unsubscribed",
    "message_failed",
)


def event_record(
    *,
    event_id: str,
    workspace_id: str,
    customer_id: str,
    type: str,
    at: datetime,
    properties: dict[str, Any],
    traits: dict[str, Any] | None = None,
    received_at: datetime | None = None,
) -> OutgoingRecord:
    """An event of dispatch as a record of the events topic (keyed by customer, like ingest)."""
    envelope = EventEnvelope(
        event_id=event_id,
        workspace_id=workspace_id,
        customer_id=customer_id,
        type=type,
        occurred_at=at,
        received_at=received_at or at,
        source="dispatch",
        properties=properties,
        traits=traits or {},
    )
    return OutgoingRecord(
        topic=EVENTS, key=envelope.key, value=envelope.to_json(), headers=envelope.headers()
    )


def consent_record(
    *,
    event_id: str,
    workspace_id: str,
    customer_id: str,
    channel: str,
    status: str,
    source: str,
    at: datetime,
    message_id: str | None = None,
    received_at: datetime | None = None,
) -> OutgoingRecord:
    """A ``consent_updated`` event for marketing on a channel: the shape the journey service
    reads into the customer's ``<channel>_marketing_consent`` trait."""
    properties: dict[str, Any] = {
        "channel": channel,
        "status": status,
        "category": "marketing",
        "source": source,
    }
    if message_id is not None:
        properties["message_id"] = message_id
    return event_record(
        event_id=event_id,
        workspace_id=workspace_id,
        customer_id=customer_id,
        type="consent_updated",
        at=at,
        received_at=received_at,
        properties=properties,
    )
