"""Routes of the native event API (``POST /v1/events``)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, status

from services.ingest.schemas import Accepted, EventIn
from shared.bus.ports import OutgoingRecord, Publisher
from shared.contracts.events import EventEnvelope
from shared.contracts.topics import EVENTS
from shared.tenancy.http import require
from shared.tenancy.keys import KeyStore, Principal, Scope


def to_envelope(event: EventIn, *, workspace_id: str, received_at: datetime) -> EventEnvelope:
    context = dict(event.context)
    if event.model_extra:
        context["extra"] = dict(event.model_extra)
    return EventEnvelope(
        event_id=event.event_id or str(uuid.uuid4()),
        workspace_id=workspace_id,
        customer_id=event.customer_id,
        anonymous_id=event.anonymous_id,
        type=event.type,
        occurred_at=event.occurred_at or received_at,
        received_at=received_at,
        source="api",
        properties=event.properties,
        traits=event.traits,
        context=context,
    )


def to_record(envelope: EventEnvelope) -> OutgoingRecord:
    return OutgoingRecord(
        topic=EVENTS, key=envelope.key, value=envelope.to_json(), headers=envelope.headers()
    )


def events_router(*, keys: KeyStore, publisher: Publisher) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["events"])
    WriteKey = Annotated[Principal, Depends(require(keys, Scope.INGEST))]

    @router.post(
        "/events",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=Accepted,
        summary="Send one event",
        responses={401: {"description": "no valid key"}, 403: {"description": "wrong scope"}},
    )
    async def post_event(event: EventIn, principal: WriteKey) -> Accepted:
        envelope = to_envelope(
            event, workspace_id=principal.workspace_id, received_at=datetime.now(UTC)
        )
        # 202 only after the bus has durably accepted the event.
        await publisher.publish([to_record(envelope)])
        return Accepted(event_id=envelope.event_id)

    return router
