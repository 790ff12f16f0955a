"""Routes of the native event API (``POST /v1/events``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Request, status
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import ValidationError

from services.ingest.catalogue import Event, error_field, parse_event
from services.ingest.envelope import event_id_of, record_for
from services.ingest.schemas import EXAMPLES, Accepted, BatchIn, BatchResult
from shared.bus.ports import OutgoingRecord, Publisher
from shared.http import Unprocessable
from shared.tenancy.http import JsonIngestPrincipal

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No API key, or an unknown or revoked one"},
    403: {"description": "The key's scope does not allow this"},
    400: {"description": "A `Content-Encoding: gzip` body that is not valid gzip"},
    413: {"description": "Body larger than CICLO_MAX_BODY_BYTES (compressed or inflated)"},
    415: {"description": "Body is not JSON, or a Content-Encoding other than gzip"},
    422: {"description": "Invalid event: `error.field` names the field, `error.errors` all"},
    429: {"description": "Rate limit of the key exceeded; see Retry-After"},
}


NATIVE_PATHS = ("/v1/events", "/v1/events/batch")
"""The native routes' paths (they take gzip bodies: services/ingest/encoding.py)."""


def _rejected(index: int, errors: list[dict[str, str]]) -> dict[str, Any]:
    """A rejected item's result, shaped as :class:`ItemResult` dumps it."""
    return {"index": index, "status": "rejected", "event_id": None, "errors": errors}


class _NotFinite(ValueError):
    pass


def _constant(name: str) -> float:
    raise _NotFinite(name)


def _finite(text: str) -> float:
    number = float(text)
    if number - number != 0:  # inf - inf is NaN
        raise _NotFinite(text)
    return number


def loads_events(body: bytes) -> Any:
    """A native body as JSON, as the standard library reads it (an integer beyond 64 bits stays
    an integer, for the catalogue to refuse), but without what JSON has not: ``NaN``,
    ``Infinity`` and a number too large for a double (``1e400``). The standard library takes
    those, and a property of NaN was then stored as null; Segment, webhooks and import, which
    read with orjson, refuse them. Raises ``json.JSONDecodeError`` (FastAPI answers it with the
    position, and shared.http makes that a 400 naming the body)."""
    try:
        return json.loads(body, parse_constant=_constant, parse_float=_finite)
    except _NotFinite as exc:
        text = body.decode()  # json.loads read it, so it decodes
        at = text.find(str(exc))  # where orjson says, or the token's first place
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError as located:
            at = located.pos - (located.pos > 0 and text[located.pos - 1] == "-")
        raise json.JSONDecodeError(f"{exc} is not a JSON number", text, max(at, 0)) from None


class _EventsRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads_events(await self.body())
        return self._json


class _EventsRoute(APIRoute):
    """Routes whose JSON body is read by ``loads_events``, as the fast path reads it."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(_EventsRequest(request.scope, request.receive))

        return route


def events_router(*, publisher: Publisher) -> APIRouter:
    # Both routes take JsonIngestPrincipal: 415 unless JSON, then the key's checks, as one
    # dependency (two would cost FastAPI more per request; see json_ingest_principal).
    router = APIRouter(prefix="/v1", tags=["events"], route_class=_EventsRoute)

    @router.post(
        "/events",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=Accepted,
        summary="Send one event",
        responses=ERRORS,
    )
    async def post_event(
        event: Annotated[Event, Body(openapi_examples=EXAMPLES)], principal: JsonIngestPrincipal
    ) -> Response:
        record = record_for(
            event, workspace_id=principal.workspace_id, received_at=datetime.now(UTC)
        )
        # 202 only after the bus has durably accepted the event.
        await publisher.publish([record])
        # Written directly: the response model is for the docs, its validation is per request.
        return Response(
            orjson.dumps({"event_id": event_id_of(record), "status": "accepted"}),
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
    async def post_batch(batch: BatchIn, principal: JsonIngestPrincipal) -> Response:
        received_at = datetime.now(UTC)
        workspace_id = principal.workspace_id
        # Results are plain dicts written with orjson: one ItemResult model per item, validated
        # again as the response model, cost more than the rest of an accepted item's handling.
        results: list[dict[str, Any]] = []
        records: list[OutgoingRecord] = []
        for index, item in enumerate(batch.events):
            if not isinstance(item, dict):
                results.append(
                    _rejected(index, [{"field": "$", "message": "must be a JSON object"}])
                )
                continue
            try:
                record = record_for(
                    parse_event(item), workspace_id=workspace_id, received_at=received_at
                )
            except ValidationError as exc:
                errors = [
                    {"field": error_field(e["loc"]), "message": e["msg"]} for e in exc.errors()
                ]
                results.append(_rejected(index, errors))
                continue
            except Unprocessable as exc:
                results.append(
                    _rejected(index, [{"field": exc.field or "$", "message": exc.message}])
                )
                continue
            records.append(record)
            results.append(
                {
                    "index": index,
                    "status": "accepted",
                    "event_id": event_id_of(record),
                    "errors": None,
                }
            )
        if records:
            # One durable publish for the whole batch; 202 only once all of it is on the bus.
            await publisher.publish(records)
            status_code = 202
        else:
            # Every item rejected: 422, and its results without the null fields.
            status_code = 422
            for result in results:
                del result["event_id"]
        body = {
            "accepted": len(records),
            "rejected": len(results) - len(records),
            "results": results,
        }
        return Response(orjson.dumps(body), status_code=status_code, media_type="application/json")

    return router
