"""The webhook endpoints: ``POST /v1/webhooks/shopify/{workspace_id}`` and
``POST /v1/webhooks/woocommerce/{workspace_id}``.

Per delivery: verify the HMAC of the raw body with the workspace's secret, skip a delivery already
published, map the payload onto the catalogue, publish once (200 only after the bus acknowledged),
then record the delivery. Nothing else happens in the request, which keeps the answer well inside
Shopify's 5 seconds.

Answers: 200 ``accepted`` | ``duplicate`` | ``ignored`` (a topic Ciclo does not map, or nothing to
say) | ``ping``; 401 for a missing or wrong signature, the same for a workspace without a secret
(nothing tells a caller whether a workspace exists); 422 naming the field when the payload maps
to an invalid event; 503 when the bus refused (the platform retries).
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.datastructures import Headers

from services.ingest.catalogue import EventBase, OrderCompletedEvent
from services.ingest.envelope import event_id_of, record_for
from services.ingest.webhooks.mapping import (
    Delivery,
    FieldError,
    Identity,
    MappingError,
    Payload,
    Platform,
    Topic,
    build_events,
    text,
)
from services.ingest.webhooks.shopify import SHOPIFY
from services.ingest.webhooks.signature import verify
from services.ingest.webhooks.store import WebhookStore
from services.ingest.webhooks.woocommerce import WOOCOMMERCE, is_ping
from shared.bus.ports import Publisher
from shared.clock import Clock, SystemClock
from shared.errors import BusError, DatabaseError
from shared.http import HTTPProblem, ServiceUnavailable, Unauthorized, problem
from shared.tenancy.keys import WORKSPACE_RE

log = logging.getLogger(__name__)

WEBHOOK_DELIVERIES = Counter(
    "ciclo_webhook_deliveries_total",
    "Commerce webhook deliveries by source and outcome "
    "(accepted, duplicate, unknown_topic, skipped, ping, unauthorized, invalid)",
    ["source", "outcome"],
)
_PLAIN_ID = re.compile(r"[\x21-\x7e]{1,150}")


class WebhookResult(BaseModel):
    """What Ciclo did with a delivery. Every one of these is a 200: the platform is done."""

    status: Literal["accepted", "duplicate", "ignored", "ping"]
    event_ids: list[str] = Field(default_factory=list, description="Events published.")
    reason: str | None = Field(None, description="Why nothing was published, when nothing was.")


def _documentation(platform: Platform) -> dict[str, Any]:
    headers = [
        (platform.signature_header, "base64 HMAC-SHA256 of the raw body under the secret"),
        (platform.topic_header, "the topic, e.g. " + next(iter(platform.topics))),
        (platform.delivery_headers[0], "the delivery id: the dedupe key"),
    ]
    return {
        "parameters": [
            {"name": name, "in": "header", "required": False, "schema": {"type": "string"}}
            | {"description": about}
            for name, about in headers
        ],
        "requestBody": {
            "required": True,
            "description": f"The {platform.source} resource exactly as the platform sends it.",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
    }


_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "A signed delivery without its topic header"},
    401: {"description": "Missing or wrong signature, or no secret for this workspace"},
    413: {"description": "Body larger than CICLO_MAX_BODY_BYTES"},
    422: {"description": "The payload maps to an invalid event: `error.field` names the field"},
    503: {"description": "The bus did not accept the events; the platform retries"},
}


class WebhookHandler:
    """Verifies, dedupes, maps and publishes one delivery of either platform."""

    def __init__(self, *, store: WebhookStore, publisher: Publisher, clock: Clock) -> None:
        self._store = store
        self._publisher = publisher
        self._clock = clock
        # Checked when a workspace has no secret, so that answer costs the same HMAC.
        self._decoy = secrets.token_urlsafe(32)

    async def handle(
        self, platform: Platform, workspace_id: str, body: bytes, headers: Headers
    ) -> WebhookResult | JSONResponse:
        source = platform.source
        signature = headers.get(platform.signature_header)
        if platform is WOOCOMMERCE and signature is None and is_ping(body):
            # WooCommerce saves a webhook only after its unsigned ping got a 200.
            WEBHOOK_DELIVERIES.labels(source, "ping").inc()
            return WebhookResult(status="ping")
        await self._verify(platform, workspace_id, body, signature)

        topic = (headers.get(platform.topic_header) or "").strip()
        if not topic:
            raise HTTPProblem(
                f"missing {platform.topic_header} header", field=platform.topic_header
            )
        spec = platform.topics.get(topic)
        if spec is None:
            # A 2xx, or the platform counts failures and disables the whole webhook.
            WEBHOOK_DELIVERIES.labels(source, "unknown_topic").inc()
            return WebhookResult(status="ignored", reason=f"topic {topic!r} is not mapped")

        delivery = Delivery(
            source=source,
            topic=topic,
            delivery_id=_delivery_id(platform, headers, topic, body),
            origin=text(headers.get(platform.origin_header)),
        )
        if await self._store.seen(workspace_id, delivery):
            WEBHOOK_DELIVERIES.labels(source, "duplicate").inc()
            return WebhookResult(status="duplicate", reason="this delivery was published before")
        try:
            events = await self._map(spec, workspace_id, delivery, body)
        except MappingError as exc:
            WEBHOOK_DELIVERIES.labels(source, "invalid").inc()
            log.warning(
                "webhook payload maps to an invalid event",
                extra={"workspace_id": workspace_id, "source": source, "topic": topic},
            )
            return _invalid(exc)
        if not events:
            WEBHOOK_DELIVERIES.labels(source, "skipped").inc()
            return WebhookResult(status="ignored", reason="nothing to announce for this state")
        event_ids = await self._publish(
            workspace_id, delivery, events, remember_orders=_remembers_orders(platform)
        )
        WEBHOOK_DELIVERIES.labels(source, "accepted").inc()
        return WebhookResult(status="accepted", event_ids=event_ids)

    async def _map(
        self, spec: Topic, workspace_id: str, delivery: Delivery, body: bytes
    ) -> list[EventBase]:
        payload = _decode(body)
        owner = None
        if spec.order_field and (order_id := text(payload.get(spec.order_field))):
            owner = await self._store.order_owner(workspace_id, delivery.source, order_id)
        return build_events(spec, payload, delivery, owner=owner)

    async def _publish(
        self,
        workspace_id: str,
        delivery: Delivery,
        events: list[EventBase],
        *,
        remember_orders: bool,
    ) -> list[str]:
        """One durable publish, then the delivery record; the published event ids."""
        received_at = self._clock.now()
        records = [
            record_for(
                e, workspace_id=workspace_id, received_at=received_at, source=delivery.source
            )
            for e in events
        ]
        try:
            await self._publisher.publish(records)
        except BusError as exc:
            raise ServiceUnavailable(
                "the bus did not accept the events; the delivery may be retried",
                headers={"Retry-After": "5"},
            ) from exc
        orders = [
            (
                e.properties.order_id,
                Identity(customer_id=e.customer_id, anonymous_id=e.anonymous_id),
            )
            for e in events
            if remember_orders and isinstance(e, OrderCompletedEvent)
        ]
        try:
            await self._store.record(workspace_id, delivery, received_at=received_at, orders=orders)
        except DatabaseError:
            # Published already, so this is a success; a redelivery publishes the same event ids,
            # which the journey service drops.
            log.warning(
                "webhook delivery published but not recorded",
                exc_info=True,
                extra={"workspace_id": workspace_id, "topic": delivery.topic},
            )
        return [event_id_of(r) for r in records]

    async def _verify(
        self, platform: Platform, workspace_id: str, body: bytes, signature: str | None
    ) -> None:
        header = platform.signature_header
        if not signature:
            WEBHOOK_DELIVERIES.labels(platform.source, "unauthorized").inc()
            raise Unauthorized(f"missing {header} header", field=header)
        known = WORKSPACE_RE.fullmatch(workspace_id) is not None
        secret = await self._store.secret(workspace_id, platform.source) if known else None
        matches = verify(secret or self._decoy, body, signature)
        if secret is None or not matches:
            WEBHOOK_DELIVERIES.labels(platform.source, "unauthorized").inc()
            raise Unauthorized(
                f"{header} does not match: check the secret set with `ciclo webhooks set`",
                field=header,
            )


def _remembers_orders(platform: Platform) -> bool:
    """Only a platform with a topic that needs an order's owner keeps the order index."""
    return any(t.order_field for t in platform.topics.values())


def _delivery_id(platform: Platform, headers: Headers, topic: str, body: bytes) -> str:
    """The platform's delivery id; a digest of topic and body when it sent none (a redelivery
    sends the same bytes, so the digest dedupes it too). An id too long or odd to be a key
    (control bytes, spaces) is replaced by its digest."""
    for name in platform.delivery_headers:
        value = (headers.get(name) or "").strip()
        if value:
            if _PLAIN_ID.fullmatch(value):
                return value
            return "sha256:" + hashlib.sha256(value.encode()).hexdigest()
    return "sha256:" + hashlib.sha256(topic.encode() + b"\n" + body).hexdigest()


def _decode(body: bytes) -> Payload:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MappingError([FieldError("body", "body", f"the body is not JSON: {exc}")]) from exc
    if not isinstance(payload, dict):
        raise MappingError([FieldError("body", "body", "the body must be a JSON object")])
    return payload


def _invalid(exc: MappingError) -> JSONResponse:
    errors = [
        {"field": e.field, "event_field": e.event_field, "message": e.message} for e in exc.errors
    ]
    first = exc.errors[0]
    return problem(
        422,
        "validation_failed",
        f"{first.field}: {first.message}",
        field=first.field,
        extra={"errors": errors},
    )


def webhooks_router(
    *, publisher: Publisher, engine: AsyncEngine, clock: Clock | None = None
) -> APIRouter:
    """The two webhook endpoints. Their own auth (the HMAC) replaces API keys."""
    handler = WebhookHandler(
        store=WebhookStore(engine), publisher=publisher, clock=clock or SystemClock()
    )
    router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

    @router.post(
        "/shopify/{workspace_id}",
        response_model=WebhookResult,
        response_model_exclude_none=True,
        summary="Receive a Shopify webhook",
        responses=_RESPONSES,
        openapi_extra=_documentation(SHOPIFY),
    )
    async def shopify(workspace_id: str, request: Request) -> WebhookResult | JSONResponse:
        return await handler.handle(SHOPIFY, workspace_id, await request.body(), request.headers)

    @router.post(
        "/woocommerce/{workspace_id}",
        response_model=WebhookResult,
        response_model_exclude_none=True,
        summary="Receive a WooCommerce webhook (and its creation ping)",
        responses=_RESPONSES,
        openapi_extra=_documentation(WOOCOMMERCE),
    )
    async def woocommerce(workspace_id: str, request: Request) -> WebhookResult | JSONResponse:
        return await handler.handle(
            WOOCOMMERCE, workspace_id, await request.body(), request.headers
        )

    return router
