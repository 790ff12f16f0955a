"""Routes of the native event API (``POST /v1/events``)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Depends, status
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from services.ingest.catalogue import Event, EventBase, error_field, parse_event, sent_fields
from services.ingest.schemas import EXAMPLES, Accepted, BatchIn, BatchResult, ItemResult
from shared.bus.ports import OutgoingRecord, Publisher
from shared.contracts.events import EventEnvelope
from shared.contracts.topics import EVENTS
from shared.http import Unprocessable, require_json
from shared.tenancy.http import IngestPrincipal


def new_event_id() -> str:
    """A random (version 4) UUID from the process's PRNG: uuid4() reads os.urandom, which costs
    ~50 µs a call on some VMs; an event id needs uniqueness, not unpredictability."""
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


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
        extras = dict(event.model_extra)
        if "extra" in context:
            extras["context_extra"] = context["extra"]  # the client's own context.extra, kept
        context["extra"] = extras
    # The catalogue validated every field already: build the envelope without validating it
    # a second time (it was half the cost of a batch item). Timestamps go to UTC here, as the
    # envelope's own validator would.
    return EventEnvelope.model_construct(
        schema_version=1,
        event_id=event.event_id or new_event_id(),
        workspace_id=workspace_id,
        customer_id=event.customer_id,
        anonymous_id=event.anonymous_id,
        type=event.type,  # type: ignore[attr-defined]
        occurred_at=(event.occurred_at or received_at).astimezone(UTC),
        received_at=received_at.astimezone(UTC),
        source=source,
        properties=sent_fields(event.properties),  # type: ignore[attr-defined]
        traits=sent_fields(event.traits),
        context=context,
        historical=historical,
    )


def to_record(envelope: EventEnvelope) -> OutgoingRecord:
    """The bus record of an envelope; 422 for what JSON on the wire cannot carry (integers
    beyond 64 bits, lone UTF-16 surrogates), which Python's JSON parser lets through."""
    try:
        value = envelope.to_json()
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise Unprocessable(f"the event cannot be encoded: {exc}", field="body") from exc
    return OutgoingRecord(topic=EVENTS, key=envelope.key, value=value, headers=envelope.headers())


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No API key, or an unknown or revoked one"},
    403: {"description": "The key's scope does not allow this"},
    413: {"description": "Body larger than CICLO_MAX_BODY_BYTES"},
    415: {"description": "Body is not JSON"},
    422: {"description": "Invalid event: `error.field` names the field, `error.errors` all"},
    429: {"description": "Rate limit of the key exceeded; see Retry-After"},
}


def events_router(*, publisher: Publisher) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["events"], dependencies=[Depends(require_json)])

    @router.post(
        "/events",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=Accepted,
        summary="Send one event",
        responses=ERRORS,
    )
    async def post_event(
        event: Annotated[Event, Body(openapi_examples=EXAMPLES)], principal: IngestPrincipal
    ) -> Response:
        envelope = to_envelope(
            event, workspace_id=principal.workspace_id, received_at=datetime.now(UTC)
        )
        # 202 only after the bus has durably accepted the event.
        await publisher.publish([to_record(envelope)])
        # Written directly: the response model is for the docs, its validation is per request.
        return Response(
            orjson.dumps({"event_id": envelope.event_id, "status": "accepted"}),
            status_code=202,
            media_type="application/json",
        )

    @router.post(
        "/events/batch",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=BatchResult,
        summary="Send up to 1,000 events; each is accepted or rejected on its own",
        responses={**ERRORS, 422: {"model": BatchResult, "description": "every item was rejected"}},
    )
    async def post_batch(batch: BatchIn, principal: IngestPrincipal) -> BatchResult | JSONResponse:
        received_at = datetime.now(UTC)
        results: list[ItemResult] = []
        records: list[OutgoingRecord] = []
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
            try:
                records.append(to_record(envelope))
            except Unprocessable as exc:
                errors = [{"field": exc.field or "$", "message": exc.message}]
                results.append(ItemResult(index=index, status="rejected", errors=errors))
                continue
            results.append(ItemResult(index=index, status="accepted", event_id=envelope.event_id))
        if records:
            # One durable publish for the whole batch; 202 only once all of it is on the bus.
            await publisher.publish(records)
        result = BatchResult(
            accepted=len(records), rejected=len(results) - len(records), results=results
        )
        if not records:
            return JSONResponse(result.model_dump(mode="json", exclude_none=True), status_code=422)
        return result

    return router
