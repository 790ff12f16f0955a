"""Sending a batch of message requests, each at most once.

1. Claim: in one transaction, drop requests already handled (their message_id is in the ledger),
   render the rest and write them as ``sending``.
2. Send concurrently, retrying transient failures with backoff (honouring Retry-After).
3. Record every outcome and emit it as an engagement event through the outbox, in one transaction.

A ``sending`` row found at claim time means a previous process died mid-send: whether the provider
got it is unknown, and ``ambiguous_policy`` decides (``skip``: never twice; ``resend``: never lost).
A transactional provider (the local sink) does all three steps in one transaction: exactly once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard

from prometheus_client import Counter

from services.dispatch.adapters.providers.base import Provider, TransactionalProvider
from services.dispatch.adapters.templates import TemplateStore
from services.dispatch.domain.messages import Outbound, Outcome
from services.dispatch.errors import (
    AmbiguousSendError,
    PermanentSendError,
    TemplateError,
    TransientSendError,
)
from services.dispatch.service_layer.uow import DispatchUnitOfWork
from shared.bus.ports import OutgoingRecord
from shared.clock import Clock
from shared.contracts.events import EventEnvelope
from shared.contracts.messages import MessageRequest
from shared.contracts.topics import EVENTS
from shared.retry import RetryPolicy

log = logging.getLogger(__name__)

SENDS = Counter("ciclo_sends_total", "Messages by provider and outcome", ["provider", "outcome"])
AMBIGUOUS = Counter(
    "ciclo_dispatch_ambiguous_total",
    "Sends whose fate is unknown (timeout after leaving, crash)",
    ["provider"],
)

_EVENT_TYPES = {
    "sent": "message_sent",
    "failed": "message_failed",
    "skipped": "message_skipped",
    "ambiguous": "message_ambiguous",
}


def is_transactional(
    provider: Provider | TransactionalProvider,
) -> TypeGuard[TransactionalProvider]:
    return hasattr(provider, "send_within")


def is_http(provider: Provider | TransactionalProvider) -> TypeGuard[Provider]:
    return hasattr(provider, "send")


@dataclass(frozen=True, slots=True)
class Sender:
    email: str
    name: str


class Dispatcher:
    def __init__(
        self,
        *,
        uow: Callable[[], DispatchUnitOfWork],
        templates: TemplateStore,
        provider: Provider | TransactionalProvider,
        sender: Sender,
        retry: RetryPolicy,
        ambiguous_policy: Literal["skip", "resend"],
        concurrency: int,
        clock: Clock,
    ) -> None:
        self._uow = uow
        self._templates = templates
        self._provider = provider
        self._sender = sender
        self._retry = retry
        self._ambiguous_policy = ambiguous_policy
        self._limit = asyncio.Semaphore(concurrency)
        self._clock = clock
        # Series at 0 from the start, so alerts on increase() see the first failure.
        AMBIGUOUS.labels(provider.name)
        for outcome in _EVENT_TYPES:
            SENDS.labels(provider.name, outcome)

    async def handle(self, requests: Sequence[MessageRequest]) -> None:
        unique = list({r.message_id: r for r in requests}.values())
        async with self._uow() as uow:
            known = await uow.ledger.statuses(r.message_id for r in unique)
            outcomes: list[Outcome] = []
            to_send: list[tuple[Outbound, int]] = []
            new_rows: list[dict[str, Any]] = []
            by_id = {r.message_id: r for r in unique}
            for request in unique:
                prior = known.get(request.message_id)
                attempts = 0
                if prior is not None:
                    status, attempts = prior
                    if status != "sending":
                        continue  # already handled: a redelivered request
                    if self._ambiguous_policy == "skip":
                        AMBIGUOUS.labels(self._provider.name).inc()
                        outcomes.append(
                            Outcome(
                                request.message_id,
                                "ambiguous",
                                attempts,
                                error="process stopped during the send; not resent (policy skip)",
                            )
                        )
                        continue
                outbound, refusal = self._prepare(request)
                if prior is None:
                    new_rows.append(self._row(request, "sending" if outbound else "failed"))
                if outbound is None:
                    assert refusal is not None
                    outcomes.append(refusal)
                else:
                    to_send.append((outbound, attempts))

            if is_transactional(self._provider):
                await uow.ledger.insert(new_rows)
                for outbound, attempts in to_send:
                    receipt = await self._provider.send_within(uow.session, outbound)
                    outcomes.append(
                        Outcome(
                            outbound.message_id, "sent", attempts + 1, receipt.provider_message_id
                        )
                    )
                await self._finish(uow, outcomes, by_id)
                return
            await uow.ledger.insert(new_rows)
            await uow.commit()

        results = await asyncio.gather(*(self._send(o, a) for o, a in to_send))
        async with self._uow() as uow:
            await self._finish(uow, [*outcomes, *results], by_id)

    async def _finish(
        self, uow: DispatchUnitOfWork, outcomes: list[Outcome], by_id: dict[str, MessageRequest]
    ) -> None:
        now = self._clock.now()
        await uow.ledger.record(outcomes, at=now)
        await uow.emit([self._event(by_id[o.message_id], o) for o in outcomes])
        await uow.commit()
        for o in outcomes:
            SENDS.labels(self._provider.name, o.status).inc()

    def _prepare(self, request: MessageRequest) -> tuple[Outbound | None, Outcome | None]:
        address_key = "email" if request.channel == "email" else "phone"
        to = request.recipient.get(address_key)
        if not to:
            return None, Outcome(
                request.message_id, "failed", 0, error=f"recipient has no {address_key}"
            )
        variables = {
            "customer": {**request.recipient.get("traits", {}), "id": request.customer_id},
            "event": request.data.get("event", {}),
            "message": {"id": request.message_id, "category": request.category},
        }
        try:
            content = self._templates.render(request.template, request.channel, variables)
        except TemplateError as exc:
            return None, Outcome(request.message_id, "failed", 0, error=str(exc)[:1000])
        return Outbound(
            message_id=request.message_id,
            workspace_id=request.workspace_id,
            customer_id=request.customer_id,
            channel=request.channel,
            template=request.template,
            category=request.category,
            to=str(to),
            sender=self._sender.email,
            sender_name=self._sender.name,
            content=content,
        ), None

    async def _send(self, message: Outbound, attempts: int) -> Outcome:
        provider = self._provider
        assert is_http(provider)
        async with self._limit:
            while True:
                attempts += 1
                try:
                    receipt = await provider.send(message)
                    return Outcome(
                        message.message_id, "sent", attempts, receipt.provider_message_id
                    )
                except PermanentSendError as exc:
                    return Outcome(message.message_id, "failed", attempts, error=str(exc))
                except AmbiguousSendError as exc:
                    AMBIGUOUS.labels(provider.name).inc()
                    if self._ambiguous_policy == "skip" or attempts >= self._retry.max_attempts:
                        return Outcome(message.message_id, "ambiguous", attempts, error=str(exc))
                    retry_after = None
                except TransientSendError as exc:
                    if attempts >= self._retry.max_attempts:
                        return Outcome(message.message_id, "failed", attempts, error=str(exc))
                    retry_after = exc.retry_after
                await asyncio.sleep(self._retry.delay(attempts, retry_after=retry_after))

    def _row(self, request: MessageRequest, status: str) -> dict[str, Any]:
        now = self._clock.now()
        return {
            "message_id": request.message_id,
            "workspace_id": request.workspace_id,
            "customer_id": request.customer_id,
            "channel": request.channel,
            "template": request.template,
            "provider": self._provider.name,
            "status": status,
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
        }

    def _event(self, request: MessageRequest, outcome: Outcome) -> OutgoingRecord:
        now = self._clock.now()
        properties: dict[str, Any] = {
            "message_id": request.message_id,
            "channel": request.channel,
            "template": request.template,
            "category": request.category,
            "journey_id": request.journey_id,
            "journey_version": request.journey_version,
            "step": request.step,
            "provider": self._provider.name,
            "attempts": outcome.attempts,
        }
        if outcome.error:
            properties["reason"] = outcome.error
        envelope = EventEnvelope(
            event_id=f"{request.message_id}:{outcome.status}",
            workspace_id=request.workspace_id,
            customer_id=request.customer_id,
            type=_EVENT_TYPES[outcome.status],
            occurred_at=now,
            received_at=now,
            source="dispatch",
            properties=properties,
        )
        return OutgoingRecord(
            topic=EVENTS, key=envelope.key, value=envelope.to_json(), headers=envelope.headers()
        )
