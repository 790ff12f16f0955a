"""Routes of the native event API (``POST /v1/events``)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Body, status
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from services.ingest.catalogue import Event, EventBase, error_field, parse_event, sent_fields
from services.ingest.schemas import EXAMPLES, Accepted, BatchIn, BatchResult, ItemResult
from shared.bus.ports import OutgoingRecord, Publisher
from shared.contracts.events import EventEnvelope
from shared.contracts.topics import EVENTS
from shared.tenancy.http import IngestPrincipal


def to_envelope(
    event: EventBase,
    *,
    workspace_id: str,
    received_at: datetime,
    source: str = "api",
    historical: bool = False,
) -> EventEnvelope:
    """The canonical envelope of a validated event. Money travels as decimal strings."""
    context = dict(event.context)
    if event.model_extra:
        context["extra"] = dict(event.model_extra)
    return EventEnvelope(
        event_id=event.event_id or str(uuid.uuid4()),
        workspace_id=workspace_id,
        customer_id=event.customer_id,
        anonymous_id=event.anonymous_id,
        type=event.type,  # type: ignore[attr-defined]
        occurred_at=event.occurred_at or received_at,
        received_at=received_at,
        source=source,
        properties=sent_fields(event.properties),  # type: ignore[attr-defined]
        traits=sent_fields(event.traits),
        context=context,
        historical=historical,
    )


def to_record(envelope: EventEnvelope) -> OutgoingRecord:
    return OutgoingRecord(
        topic=EVENTS, key=envelope.key, value=envelope.to_json(), headers=envelope.headers()
    )


def events_router(*, publisher: Publisher) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["events"])

    @router.post(
        "/events",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=Accepted,
        summary="Send one event",
        responses={401: {"description": "no valid key"}, 403: {"description": "wrong scope"}},
    )
    async def post_event(
        event: Annotated[Event, Body(openapi_examples=EXAMPLES)], principal: IngestPrincipal
    ) -> Accepted:
        envelope = to_envelope(
            event, workspace_id=principal.workspace_id, received_at=datetime.now(UTC)
        )
        # 202 only after the bus has durably accepted the event.
        await publisher.publish([to_record(envelope)])
        return Accepted(event_id=envelope.event_id)

    @router.post(
        "/events/batch",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=BatchResult,
        summary="Send up to 1,000 events; each is accepted or rejected on its own",
        responses={422: {"model": BatchResult, "description": "every item was rejected"}},
    )
    async def post_batch(batch: BatchIn, principal: IngestPrincipal) -> BatchResult | JSONResponse:
        received_at = datetime.now(UTC)
        results: list[ItemResult] = []
        envelopes: list[EventEnvelope] = []
        for index, item in enumerate(batch.events):
            try:
                event = parse_event(item)
            except ValidationError as exc:
                errors = [
                    {"field": error_field(e["loc"]), "message": e["msg"]} for e in exc.errors()
                ]
                results.append(ItemResult(index=index, status="rejected", errors=errors))
                continue
            envelope = to_envelope(
                event, workspace_id=principal.workspace_id, received_at=received_at
            )
            envelopes.append(envelope)
            results.append(ItemResult(index=index, status="accepted", event_id=envelope.event_id))
        if envelopes:
            # One durable publish for the whole batch; 202 only once all of it is on the bus.
            await publisher.publish([to_record(e) for e in envelopes])
        result = BatchResult(
            accepted=len(envelopes), rejected=len(results) - len(envelopes), results=results
        )
        if not envelopes:
            return JSONResponse(result.model_dump(mode="json", exclude_none=True), status_code=422)
        return result

    return router
