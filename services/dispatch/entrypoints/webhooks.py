"""Provider webhooks: ``POST /v1/webhooks/providers/{provider}/{workspace_id}``.

No API key: the provider's signature (Postmark: Basic credentials) is the authentication, checked
against the workspace's configuration of that provider. Answers:

- 200 with counts: every engagement was recorded, or was a duplicate, or is about a message that
  is not Ciclo's (still 200: the provider has done its part and must not retry). A malformed
  event of a batch (SendGrid) is skipped, logged, and listed in ``errors``; the batch's other
  events are recorded, as a retry of the whole batch would fail the same way;
- 401 for a forged, unsigned, stale or replayed request, or a workspace configuration without the
  webhook secret; nothing is written;
- 404 for a provider Ciclo does not read, or a workspace without that provider configured;
- 400 for a body that is not the provider's format, 422 for the one event of a single-event
  provider (Mailgun, Postmark, Twilio, Vonage) missing a field (``error.field`` names it): there
  is nothing else in the request to record, and the provider's retries and its webhook log make
  the failure visible (a Ciclo fixed meanwhile records the retry); 503 when the database is
  unreachable (the provider retries).

The URL Twilio signs is the public one. Behind a reverse proxy Ciclo rebuilds it from
``X-Forwarded-Proto`` and ``X-Forwarded-Host`` (first value of each) when present, otherwise from
the request's scheme and ``Host``; the configured ``status_callback`` (with the query actually
called) is tried as well. Trusting those headers costs nothing: a forger still needs the auth
token to sign whatever URL they name.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from fastapi import APIRouter, Request
from prometheus_client import Counter
from pydantic import BaseModel, Field
from sqlalchemy.exc import InterfaceError, OperationalError

from services.dispatch.domain.providers import ProviderConfig
from services.dispatch.service_layer.uow import DispatchUnitOfWork
from services.dispatch.webhooks.model import (
    WebhookAuthError,
    WebhookFormatError,
    WebhookPayloadError,
    WebhookRequest,
)
from services.dispatch.webhooks.recorder import EngagementRecorder
from services.dispatch.webhooks.registry import KINDS, authenticate, parse
from shared.clock import Clock
from shared.http import HTTPProblem, NotFound, ServiceUnavailable, Unauthorized, Unprocessable
from shared.tenancy.keys import WORKSPACE_RE

log = logging.getLogger(__name__)

PROVIDER_WEBHOOKS = Counter(
    "ciclo_provider_webhook_events_total",
    "Provider webhooks by provider and outcome: received, duplicate and unknown (message not "
    "Ciclo's) count engagements; invalid counts events skipped as malformed, and requests "
    "answered 400/422; refused (401) counts requests",
    ["provider", "outcome"],
)
_OUTCOMES = ("received", "duplicate", "unknown", "refused", "invalid")

ConfigLookup = Callable[[str, str], Awaitable[ProviderConfig | None]]


class InvalidEventError(BaseModel):
    """An event of the batch that Ciclo skipped because it could not read it."""

    index: int = Field(description="Position of the event in the batch, from 0.")
    field: str = Field(description="Path of what is wrong, e.g. `[3].timestamp`.")
    message: str = Field(description="What is wrong with it.")


class WebhookReceipt(BaseModel):
    """What Ciclo did with a provider webhook; every one of these is a 200."""

    status: Literal["accepted"] = "accepted"
    received: int = Field(description="Engagements in the request (skipped provider steps not).")
    emitted: int = Field(description="Engagement events written for the events stream.")
    duplicates: int = Field(description="Engagements already recorded by an earlier request.")
    unknown: int = Field(description="Engagements about messages Ciclo did not send.")
    suppressed: int = Field(description="Addresses newly put on the suppression list.")
    invalid: int = Field(description="Malformed events of the batch, skipped (not recorded).")
    errors: list[InvalidEventError] = Field(description="Each skipped event and what is wrong.")


_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "The body is not the provider's format (JSON, or a form for Twilio)"},
    401: {"description": "Forged, unsigned, stale or replayed; or no webhook secret configured"},
    404: {"description": "Unknown provider, or the workspace has not configured it"},
    413: {"description": "Body larger than CICLO_MAX_BODY_BYTES"},
    422: {
        "description": "The one event of a single-event provider (not SendGrid) without a field "
        "Ciclo needs: `error.field` names it"
    },
    503: {"description": "The database is unreachable; the provider retries"},
}
_BODY = {
    "requestBody": {
        "required": True,
        "description": "The provider's webhook body, exactly as the provider sends it.",
        "content": {
            "application/json": {"schema": {}},
            "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
        },
    }
}


def provider_webhooks_router(
    *,
    uow: Callable[[], DispatchUnitOfWork],
    configs: ConfigLookup,
    clock: Clock,
    notify: Callable[[], None] | None = None,
) -> APIRouter:
    """The provider webhook endpoint. ``configs(workspace_id, kind)`` is the workspace's
    configuration of a provider (None when it has none); ``notify`` wakes the outbox relay
    after a commit that emitted events."""
    recorder = EngagementRecorder(uow=uow, clock=clock, notify=notify)
    router = APIRouter(prefix="/v1/webhooks/providers", tags=["provider webhooks"])
    for kind in KINDS:  # series at 0 from the start, so increase() sees the first one
        for outcome in _OUTCOMES:
            PROVIDER_WEBHOOKS.labels(kind, outcome)

    @router.post(
        "/{provider}/{workspace_id}",
        response_model=WebhookReceipt,
        summary="Receive a provider's delivery and engagement webhook",
        description="`provider` is one of " + ", ".join(KINDS) + ".",
        responses=_RESPONSES,
        openapi_extra=_BODY,
    )
    async def receive(provider: str, workspace_id: str, request: Request) -> WebhookReceipt:
        if provider not in KINDS:
            raise NotFound(
                f"Ciclo reads no webhooks of {provider[:40]!r}: use one of {', '.join(KINDS)}",
                field="provider",
            )
        incoming = WebhookRequest(
            body=await request.body(),
            headers={name.lower(): value for name, value in request.headers.items()},
            url=public_url(request),
        )
        now = clock.now()
        try:
            config = (
                await configs(workspace_id, provider)
                if WORKSPACE_RE.fullmatch(workspace_id)
                else None
            )
            if config is None or config.kind != provider:
                raise NotFound(
                    f"workspace {workspace_id[:64]!r} has no {provider} provider configured",
                    field="workspace_id",
                )
            nonce = authenticate(config, incoming, now=now)
            batch = parse(provider, incoming, received_at=now)
            recorded = await recorder.record(
                provider=provider,
                workspace_id=workspace_id,
                engagements=batch.engagements,
                nonce=nonce,
            )
        except WebhookAuthError as exc:
            PROVIDER_WEBHOOKS.labels(provider, "refused").inc()
            log.warning(
                "provider webhook refused: %s",
                exc.reason,
                extra={"provider": provider, "workspace_id": workspace_id},
            )
            raise Unauthorized(exc.reason, field=exc.field) from exc
        except WebhookPayloadError as exc:
            PROVIDER_WEBHOOKS.labels(provider, "invalid").inc()
            log.warning(
                "provider webhook not recorded: %s",
                exc,
                extra={"provider": provider, "workspace_id": workspace_id},
            )
            problem = HTTPProblem if isinstance(exc, WebhookFormatError) else Unprocessable
            raise problem(str(exc), field=exc.field) from exc
        except (OperationalError, InterfaceError, OSError) as exc:
            # OSError: a refused connection escapes the driver untranslated.
            log.error("provider webhook not recorded: database unreachable: %s", exc)
            raise ServiceUnavailable(
                "the database is unreachable; the webhook can be retried",
                headers={"Retry-After": "10"},
            ) from exc
        PROVIDER_WEBHOOKS.labels(provider, "received").inc(recorded.received)
        PROVIDER_WEBHOOKS.labels(provider, "duplicate").inc(recorded.duplicates)
        PROVIDER_WEBHOOKS.labels(provider, "unknown").inc(recorded.unknown)
        PROVIDER_WEBHOOKS.labels(provider, "invalid").inc(len(batch.invalid))
        for skipped in batch.invalid:
            log.warning(
                "provider webhook event skipped: %s: %s",
                skipped.field,
                skipped.message,
                extra={"provider": provider, "workspace_id": workspace_id},
            )
        return WebhookReceipt(
            received=recorded.received,
            emitted=recorded.emitted,
            duplicates=recorded.duplicates,
            unknown=recorded.unknown,
            suppressed=recorded.suppressed,
            invalid=len(batch.invalid),
            errors=[
                InvalidEventError(index=e.index, field=e.field, message=e.message)
                for e in batch.invalid
            ],
        )

    return router


def public_url(request: Request) -> str:
    """The URL the provider called: ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` (first values)
    win over the request's own scheme and ``Host``; path and query exactly as sent."""
    headers = request.headers
    scheme = _first(headers.get("x-forwarded-proto")) or request.url.scheme
    host = _first(headers.get("x-forwarded-host")) or headers.get("host") or request.url.netloc
    raw_path = request.scope.get("raw_path")
    path = raw_path.decode("latin-1") if isinstance(raw_path, bytes) else request.url.path
    query = request.scope.get("query_string", b"").decode("latin-1")
    return f"{scheme}://{host}{path}" + (f"?{query}" if query else "")


def _first(value: str | None) -> str | None:
    """The first of a comma-separated list (each proxy on the way appends its own)."""
    if not value:
        return None
    return value.split(",", 1)[0].strip() or None
