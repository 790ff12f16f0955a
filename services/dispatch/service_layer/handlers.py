"""Sending a batch of message requests, each at most once.

1. Claim: in one transaction, drop requests already handled (their message_id is in the ledger),
   run the checks before a send (address, consent, suppression, quiet hours:
   ``domain/policy.py``), render the rest (claiming their discount codes) and write them as
   ``sending``. Refusals are written as ``skipped`` and held messages as ``held``, each with its
   reason, and emitted as events.
2. Send concurrently through the workspace's provider, within its rate and concurrency limits,
   retrying transient failures with backoff (honouring Retry-After); a provider whose circuit
   breaker is open hands over to the fallback provider, if one is configured.
3. Record every outcome and emit it as an event through the outbox, in one transaction; a message
   that failed for good also goes to the dead-letter topic with its reason.

A batch goes through these steps in chunks of ``claim_chunk`` requests, pipelined: while the sends
of one chunk are in flight the next chunk is claimed, and each chunk is recorded once its sends
are done; ``handle`` returns when every chunk is recorded (then the caller commits the offsets).

A ``sending`` row found at claim time means a previous process died mid-send (this process skips
the messages it is sending itself): whether the provider got it is unknown, and
``ambiguous_policy`` decides (``skip``: never twice; ``resend``: never lost).
A transactional provider (the local sink) does all three steps in one transaction: exactly once.
A ``held`` row is claimed again by one process only (a conditional update) once it is due.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter as Tally
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol, TypeGuard

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatch.adapters.providers.base import Provider, TransactionalProvider
from services.dispatch.adapters.suppressions import Suppression
from services.dispatch.adapters.suppressions import key as suppression_key
from services.dispatch.adapters.templates import TemplateStore
from services.dispatch.adapters.webhook_events import SentMessage
from services.dispatch.domain.events import event_record
from services.dispatch.domain.messages import Outbound, Outcome, Rendered
from services.dispatch.domain.policy import DispatchPolicy, Hold, Refuse, address_of, decide
from services.dispatch.domain.templates import INTELLIGENCE_OBJECTS
from services.dispatch.errors import (
    AmbiguousSendError,
    NotSentError,
    OptedOutError,
    PermanentSendError,
    TemplateError,
    TransientSendError,
)
from services.dispatch.service_layer.resilience import CircuitBreaker, RateGate
from services.dispatch.service_layer.uow import DispatchUnitOfWork
from services.dispatch.webhooks.model import Engagement
from services.dispatch.webhooks.recorder import engagement_records, suppress
from shared.bus.ports import OutgoingRecord
from shared.clock import Clock
from shared.contracts.messages import TEMPLATE_ROOTS, MessageRequest
from shared.contracts.topics import dead_letter
from shared.retry import RetryPolicy

log = logging.getLogger(__name__)

SENDS = Counter("ciclo_sends_total", "Messages by provider and outcome", ["provider", "outcome"])
AMBIGUOUS = Counter(
    "ciclo_dispatch_ambiguous_total",
    "Sends whose fate is unknown (timeout after leaving, crash)",
    ["provider"],
)
REFUSED = Counter(
    "ciclo_dispatch_refused_total", "Messages not sent by a check before the send", ["reason"]
)
FALLBACKS = Counter(
    "ciclo_dispatch_fallback_total", "Sends handed to the fallback provider", ["provider"]
)

ERASED = Counter(
    "ciclo_dispatch_erased_total",
    "Message requests dropped because their customer was erased after requesting them",
)

_YIELD_EVERY = 16
"""Requests claimed between two turns of the event loop."""

_EVENT_TYPES = {
    "sent": "message_sent",
    "failed": "message_failed",
    "skipped": "message_skipped",
    "ambiguous": "message_ambiguous",
    "held": "message_held",
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


@dataclass(slots=True)
class Lane:
    """One provider with its own breaker and rate gate."""

    provider: Provider | TransactionalProvider
    breaker: CircuitBreaker
    gate: RateGate

    @property
    def name(self) -> str:
        return self.provider.name


@dataclass(frozen=True, slots=True)
class ResolvedRoute:
    primary: Lane
    fallback: Lane | None = None


class Routes(Protocol):
    """Where a workspace's messages go and what it decided for sending."""

    async def route(self, workspace_id: str, channel: str) -> ResolvedRoute: ...
    async def policy(self, workspace_id: str) -> DispatchPolicy: ...


class Renderer(Protocol):
    async def render(
        self,
        session: AsyncSession,
        *,
        workspace_id: str,
        template_id: str,
        channel: str,
        variables: dict[str, Any],
        message_id: str,
        now: datetime,
    ) -> Rendered: ...


class Links(Protocol):
    """The unsubscribe headers and link variables of a message to an address."""

    def for_message(
        self, request: MessageRequest, address: str
    ) -> tuple[dict[str, str], dict[str, str]]: ...


@dataclass(slots=True)
class FileRenderer:
    """Templates from files only (templates/), no discount codes: simulation and tests."""

    store: TemplateStore

    async def render(
        self,
        session: AsyncSession,
        *,
        workspace_id: str,
        template_id: str,
        channel: str,
        variables: dict[str, Any],
        message_id: str,
        now: datetime,
    ) -> Rendered:
        return self.store.render(template_id, channel, variables)


@dataclass(slots=True)
class FixedRoutes:
    """Every workspace on the same providers and one policy (tests, benchmarks)."""

    primary: Lane
    fallback: Lane | None = None
    sending: DispatchPolicy = field(default_factory=lambda: DispatchPolicy(quiet_hours={}))

    async def route(self, workspace_id: str, channel: str) -> ResolvedRoute:
        return ResolvedRoute(self.primary, self.fallback)

    async def policy(self, workspace_id: str) -> DispatchPolicy:
        return self.sending


def lane(
    provider: Provider | TransactionalProvider,
    *,
    concurrency: int = 32,
    rate: float | None = None,
    threshold: int = 5,
    cooldown: float = 30.0,
) -> Lane:
    return Lane(
        provider,
        CircuitBreaker(provider.name, threshold=threshold, cooldown=cooldown),
        RateGate(rate=rate, concurrency=concurrency),
    )


def message_variables(request: MessageRequest, links: dict[str, str]) -> dict[str, Any]:
    """What a message's template reads (docs/dispatch.md, Variables): the recipient snapshot,
    the triggering event, the request's own data and the message's unsubscribe links. The
    variables built here (``TEMPLATE_ROOTS``) win over keys of ``data`` with the same names:
    a request's data adds variables, it never replaces the customer, the message or its links."""
    recipient = request.recipient
    shadowing = sorted(k for k in request.data if k in TEMPLATE_ROOTS and k != "event")
    if shadowing:
        log.warning(
            "message %s: data keys %s are template variables dispatch builds; ignored",
            request.message_id,
            shadowing,
        )
    extra = {k: v for k, v in request.data.items() if k not in TEMPLATE_ROOTS}
    return {
        **extra,
        "customer": {**(recipient.get("traits") or {}), "id": request.customer_id},
        "event": request.data.get("event", {}),
        "message": {"id": request.message_id, "category": request.category},
        "scores": recipient.get("scores") or {},
        # What customer intelligence knew when the journey asked for the message: absent
        # (empty, stage nil) when the workspace turned it off.
        **{root: recipient.get(root) or {} for root in INTELLIGENCE_OBJECTS},
        "stage": recipient.get("stage"),
        "segments": recipient.get("segments") or [],
        **links,
    }


def _erased_before(request: MessageRequest, erased: dict[tuple[str, str], datetime]) -> bool:
    """Whether the request's customer was erased at or after the request was made."""
    cutoff = erased.get((request.workspace_id, request.customer_id))
    return cutoff is not None and request.requested_at <= cutoff


@dataclass(frozen=True, slots=True)
class _Lookups:
    """A batch's workspace policies and routes, looked up before its transaction."""

    policies: dict[str, DispatchPolicy]
    routes: dict[tuple[str, str], ResolvedRoute]


@dataclass(slots=True)
class _Claim:
    request: MessageRequest
    outbound: Outbound
    attempts: int
    route: ResolvedRoute


class Dispatcher:
    def __init__(
        self,
        *,
        uow: Callable[[], DispatchUnitOfWork],
        renderer: Renderer,
        routes: Routes,
        sender: Sender,
        retry: RetryPolicy,
        ambiguous_policy: Literal["skip", "resend"],
        clock: Clock,
        links: Links,
        hold_over: float = 60.0,
        claim_chunk: int = 100,
    ) -> None:
        if claim_chunk < 1:
            raise ValueError("claim_chunk must be at least 1")
        self._uow = uow
        self._renderer = renderer
        self._routes = routes
        self._sender = sender
        self._retry = retry
        self._ambiguous_policy = ambiguous_policy
        self._clock = clock
        self._links = links
        """Every message gets its unsubscribe links, and a marketing email its List-Unsubscribe
        headers: required, so that no dispatcher can send marketing email without them."""
        self._hold_over = hold_over
        """A provider asking us to wait longer than this (Retry-After) gets the message held in
        the ledger and retried by the held-message poller, instead of a send waiting in memory."""
        self._chunk = claim_chunk
        """Requests claimed per transaction: the sends of one chunk are in flight while the next
        is claimed and rendered."""
        self._writing = asyncio.Lock()
        """One dispatch transaction at a time in this process: a claim and the recording of an
        earlier chunk never wait on each other's database lock (SQLite has one writer)."""
        self._in_flight: set[str] = set()
        """Messages this process claimed and has not recorded yet. Another ``handle`` running
        meanwhile (the held-message poller, a next batch) leaves them alone: their ``sending``
        row is this process's own send, not one a dead process left behind."""

    async def handle(self, requests: Sequence[MessageRequest]) -> None:
        """Claim, send and record ``requests``; returns once every one is recorded (the caller
        then commits their offsets). The batch goes in chunks of ``claim_chunk``: while one
        chunk's sends are in flight the next is claimed and rendered, and each chunk's outcomes
        are recorded as soon as its sends are done. Should a claim fail, the sends already
        started still finish and are recorded before the error is raised."""
        unique = list({r.message_id: r for r in requests}.values())
        if not unique:
            return
        by_id = {r.message_id: r for r in unique}
        batch = await self._lookups(unique)
        sending: list[asyncio.Task[None]] = []
        try:
            for first in range(0, len(unique), self._chunk):
                remote = await self._claim(unique[first : first + self._chunk], batch, by_id)
                if remote:
                    sending.append(asyncio.create_task(self._send_and_record(remote, by_id)))
        finally:
            done = await asyncio.gather(*sending, return_exceptions=True)
        for result in done:
            if isinstance(result, BaseException):
                raise result

    async def _lookups(self, requests: Sequence[MessageRequest]) -> _Lookups:
        # Looked up before any transaction: on SQLite a second connection could not begin while
        # a claim's transaction holds the write lock.
        policies = {
            w: await self._routes.policy(w) for w in sorted({r.workspace_id for r in requests})
        }
        routes: dict[tuple[str, str], ResolvedRoute] = {
            (w, c): await self._routes.route(w, c)
            for w, c in sorted({(r.workspace_id, r.channel) for r in requests})
        }
        return _Lookups(policies, routes)

    async def _claim(
        self,
        requests: Sequence[MessageRequest],
        batch: _Lookups,
        by_id: dict[str, MessageRequest],
    ) -> list[_Claim]:
        """One transaction: drop what was handled, check and render the rest, write them as
        ``sending`` (refusals, held messages and the local sink's sends with their outcome).
        Returns the claims for the HTTP providers, committed and marked in flight."""
        async with self._writing:
            async with self._uow() as uow:
                remote = await self._claim_within(uow, requests, batch, by_id)
            self._in_flight.update(c.outbound.message_id for c in remote)
        return remote

    async def _claim_within(
        self,
        uow: DispatchUnitOfWork,
        requests: Sequence[MessageRequest],
        batch: _Lookups,
        by_id: dict[str, MessageRequest],
    ) -> list[_Claim]:
        outcomes: list[Outcome] = []
        claims: list[_Claim] = []
        remote: list[_Claim] = []
        now = self._clock.now()
        known = await uow.ledger.statuses(r.message_id for r in requests)
        erased = await uow.erased.cutoffs({(r.workspace_id, r.customer_id) for r in requests})
        suppressed = await self._suppressions(uow, requests)
        rows: list[dict[str, Any]] = []
        for n, request in enumerate(requests, 1):
            if n % _YIELD_EVERY == 0:
                # Rendering is CPU: let the answers of the sends in flight be read meanwhile,
                # so their latency (and the rate at a given concurrency) does not suffer.
                await asyncio.sleep(0)
            if request.message_id in self._in_flight:
                continue  # being sent by this process: that send records it
            if _erased_before(request, erased):
                ERASED.inc()
                continue  # requested before the customer was erased: never sent, no trace
            prior = known.get(request.message_id)
            attempts = 0
            if prior is not None:
                status, attempts, not_before = prior
                if status == "held":
                    due = not_before is None or not_before <= now
                    if not due or not await uow.ledger.release(request.message_id, at=now):
                        continue  # still held, or another process took it back
                elif status != "sending":
                    continue  # already handled: a redelivered request
                elif self._ambiguous_policy == "skip":
                    current = batch.routes[(request.workspace_id, request.channel)]
                    AMBIGUOUS.labels(current.primary.name).inc()
                    outcomes.append(
                        Outcome(
                            request.message_id,
                            "ambiguous",
                            attempts,
                            error="process stopped during the send; not resent (policy skip)",
                        )
                    )
                    continue
            checked = await self._check(uow, batch, request, attempts, now, suppressed)
            if isinstance(checked, Outcome):
                outcomes.append(checked)
            else:
                claims.append(checked)
            if prior is None:
                status = checked.status if isinstance(checked, Outcome) else "sending"
                rows.append(self._row(request, status, now))
        await uow.ledger.insert(rows)

        # The local sink joins this transaction: its sends are exactly once.
        for claim in claims:
            provider = claim.route.primary.provider
            if is_transactional(provider):
                receipt = await provider.send_within(uow.session, claim.outbound, at=now)
                outcomes.append(
                    Outcome(
                        claim.outbound.message_id,
                        "sent",
                        claim.attempts + 1,
                        receipt.provider_message_id,
                        provider=provider.name,
                    )
                )
            else:
                remote.append(claim)
        await self._finish(uow, outcomes, by_id, now)
        return remote

    async def _send_and_record(
        self, claims: list[_Claim], by_id: dict[str, MessageRequest]
    ) -> None:
        try:
            outcomes = list(await asyncio.gather(*(self._send(c) for c in claims)))
            async with self._writing, self._uow() as uow:
                # Erased while the sends were in flight: the erasure found their rows not yet
                # recorded; they go now, and no event about them is emitted.
                erased = await uow.erased.cutoffs(
                    {(c.request.workspace_id, c.request.customer_id) for c in claims}
                )
                if erased:
                    gone = {
                        c.request.message_id for c in claims if _erased_before(c.request, erased)
                    }
                    await uow.ledger.forget(gone)
                    ERASED.inc(len(gone))
                    outcomes = [o for o in outcomes if o.message_id not in gone]
                await self._finish(uow, outcomes, by_id, self._clock.now())
        finally:
            self._in_flight.difference_update(c.outbound.message_id for c in claims)

    async def _check(
        self,
        uow: DispatchUnitOfWork,
        batch: _Lookups,
        request: MessageRequest,
        attempts: int,
        now: datetime,
        suppressed: dict[tuple[str, str, str], Suppression],
    ) -> _Claim | Outcome:
        """The checks before a send (``domain/policy.py``), then rendering. A message claimed
        again (held and due, or resent after a crash) is checked afresh, since consent or the
        suppression list may have changed meanwhile."""
        decision = decide(
            channel=request.channel,
            category=request.category,
            recipient=request.recipient,
            suppressed=_blocking(suppressed, request),
            policy=batch.policies[request.workspace_id],
            now=now,
        )
        if isinstance(decision, Refuse):
            REFUSED.labels(decision.reason.split(":")[0]).inc()
            return Outcome(request.message_id, "skipped", attempts, error=decision.reason)
        if isinstance(decision, Hold):
            return Outcome(
                request.message_id,
                "held",
                attempts,
                error=decision.reason,
                not_before=decision.until,
                request=request.model_dump(mode="json"),
            )
        return await self._prepare(uow, batch, request, decision.address, attempts, now)

    async def _suppressions(
        self, uow: DispatchUnitOfWork, requests: Sequence[MessageRequest]
    ) -> dict[tuple[str, str, str], Suppression]:
        keys = set()
        for r in requests:
            address = address_of(r.channel, r.recipient)
            if isinstance(address, str):
                keys.add((r.workspace_id, r.channel, address))
        return await uow.suppressions.find_many(keys)

    async def _prepare(
        self,
        uow: DispatchUnitOfWork,
        batch: _Lookups,
        request: MessageRequest,
        address: str,
        attempts: int,
        now: datetime,
    ) -> _Claim | Outcome:
        headers, links = self._links.for_message(request, address)
        if request.category != "marketing" or request.channel != "email":
            headers = {}  # List-Unsubscribe belongs on marketing email only
        variables = message_variables(request, links)
        try:
            content = await self._renderer.render(
                uow.session,
                workspace_id=request.workspace_id,
                template_id=request.template,
                channel=request.channel,
                variables=variables,
                message_id=request.message_id,
                now=now,
            )
        except TemplateError as exc:
            return Outcome(request.message_id, "failed", attempts, error=str(exc)[:1000])
        route = batch.routes[(request.workspace_id, request.channel)]
        policy = batch.policies[request.workspace_id]
        return _Claim(
            request=request,
            outbound=Outbound(
                message_id=request.message_id,
                workspace_id=request.workspace_id,
                customer_id=request.customer_id,
                channel=request.channel,
                template=request.template,
                category=request.category,
                to=address,
                sender=policy.from_email or self._sender.email,
                sender_name=policy.from_name or self._sender.name,
                content=content,
                headers=headers,
            ),
            attempts=attempts,
            route=route,
        )

    async def _finish(
        self,
        uow: DispatchUnitOfWork,
        outcomes: list[Outcome],
        by_id: dict[str, MessageRequest],
        now: datetime,
    ) -> None:
        if outcomes:
            await uow.ledger.record(outcomes, at=now)
            records = [self._event(by_id[o.message_id], o, now) for o in outcomes]
            records.extend(
                self._dead_letter(by_id[o.message_id], o) for o in outcomes if o.status == "failed"
            )
            for outcome in outcomes:
                if outcome.opted_out:
                    records.extend(await _opt_out(uow, by_id[outcome.message_id], outcome, now))
            await uow.emit(records)
        await uow.commit()
        for (provider, status), n in Tally((o.provider or "-", o.status) for o in outcomes).items():
            SENDS.labels(provider, status).inc(n)

    async def _send(self, claim: _Claim) -> Outcome:
        message, attempts = claim.outbound, claim.attempts
        retry_after: float | None = None
        while True:
            current = self._pick(claim.route)
            if current is None:
                # Every provider of the route is open: wait for the first trial slot.
                wait = claim.route.primary.breaker.wait()
                if wait > self._hold_over:
                    return self._held(claim, attempts, wait, "provider circuit open")
                await asyncio.sleep(max(wait, 0.05))
                continue
            provider = current.provider
            assert is_http(provider)
            attempts += 1
            try:
                async with current.gate:
                    receipt = await provider.send(message)
            except NotSentError as exc:
                # Refused before any request (wrong channel, a number not in E.164…): the
                # provider was not asked, so this is no evidence either way. A half-open trial
                # is over without a verdict; the count of failures in a row is left as it is.
                current.breaker.release()
                return Outcome(
                    message.message_id, "failed", attempts, error=str(exc), provider=provider.name
                )
            except PermanentSendError as exc:
                current.breaker.success()  # the provider answered: it is healthy
                return Outcome(
                    message.message_id,
                    "failed",
                    attempts,
                    error=str(exc),
                    provider=provider.name,
                    opted_out=isinstance(exc, OptedOutError),
                )
            except AmbiguousSendError as exc:
                current.breaker.failure()
                AMBIGUOUS.labels(provider.name).inc()
                if self._ambiguous_policy == "skip" or attempts >= self._retry.max_attempts:
                    return Outcome(
                        message.message_id,
                        "ambiguous",
                        attempts,
                        error=str(exc),
                        provider=provider.name,
                    )
                retry_after = None
            except TransientSendError as exc:
                # A time to come back at becomes a wait on this dispatcher's clock.
                retry_after = exc.wait(self._clock.now())
                if not exc.throttled:
                    current.breaker.failure()
                else:
                    # The provider is throttling us (a 429, or a Retry-After), not failing: its
                    # breaker stays as it is, with or without a Retry-After; a half-open trial
                    # is over, so the next send may try again.
                    current.breaker.release()
                if retry_after is not None and retry_after > self._hold_over:
                    return self._held(claim, attempts, retry_after, str(exc))
                if attempts >= self._retry.max_attempts:
                    return Outcome(
                        message.message_id,
                        "failed",
                        attempts,
                        error=str(exc),
                        provider=provider.name,
                    )
            else:
                current.breaker.success()
                return Outcome(
                    message.message_id,
                    "sent",
                    attempts,
                    receipt.provider_message_id,
                    provider=provider.name,
                )
            delay = self._retry.delay(attempts, retry_after=retry_after)
            if retry_after is not None:
                # The policy caps a Retry-After at its max_delay; up to the hold-over (beyond it
                # the message was held above) the provider's ask is waited in full, or a
                # throttling provider would be asked again before it said it could take more.
                delay = max(delay, retry_after)
            # On the injected clock, like the wait it was computed from: a simulation or a test
            # on a virtual clock moves it instead of sleeping.
            await self._clock.sleep(delay)

    def _pick(self, route: ResolvedRoute) -> Lane | None:
        if route.primary.breaker.allow():
            return route.primary
        fallback = route.fallback
        if fallback is not None and is_http(fallback.provider) and fallback.breaker.allow():
            FALLBACKS.labels(fallback.name).inc()
            return fallback
        return None

    def _held(self, claim: _Claim, attempts: int, wait: float, why: str) -> Outcome:
        return Outcome(
            claim.outbound.message_id,
            "held",
            attempts,
            error=f"rate_limited: {why}"[:1000],
            not_before=self._clock.now() + timedelta(seconds=wait),
            request=claim.request.model_dump(mode="json"),
            provider=claim.route.primary.name,
        )

    def _row(self, request: MessageRequest, status: str, now: datetime) -> dict[str, Any]:
        """A new ledger row; recording the batch's outcomes then fills in the rest (provider,
        attempts, error, and for a held message when and what to send)."""
        return {
            "message_id": request.message_id,
            "workspace_id": request.workspace_id,
            "customer_id": request.customer_id,
            "channel": request.channel,
            "template": request.template,
            "provider": "-",
            "status": status,
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
        }

    def _event(self, request: MessageRequest, outcome: Outcome, now: datetime) -> OutgoingRecord:
        properties: dict[str, Any] = {
            "message_id": request.message_id,
            "channel": request.channel,
            "template": request.template,
            "category": request.category,
            "journey_id": request.journey_id,
            "journey_version": request.journey_version,
            "step": request.step,
            "provider": outcome.provider,
            "attempts": outcome.attempts,
        }
        if outcome.error:
            properties["reason"] = outcome.error
        if outcome.not_before is not None:
            properties["until"] = outcome.not_before.isoformat()
        suffix: str = outcome.status
        if outcome.status == "held":
            # A message may be held more than once (quiet hours, then a rate limit).
            suffix = f"held:{outcome.not_before.isoformat() if outcome.not_before else ''}"
        return event_record(
            event_id=f"{request.message_id}:{suffix}",
            workspace_id=request.workspace_id,
            customer_id=request.customer_id,
            type=_EVENT_TYPES[outcome.status],
            at=now,
            properties=properties,
        )

    def _dead_letter(self, request: MessageRequest, outcome: Outcome) -> OutgoingRecord:
        headers = request.headers()
        headers.update(
            {
                "dlq_reason": (outcome.error or "failed")[:1000],
                "dlq_group": "dispatch",
                "dlq_provider": outcome.provider or "-",
                "dlq_attempts": str(outcome.attempts),
            }
        )
        return OutgoingRecord(
            topic=dead_letter("dispatch"), key=request.key, value=request.to_json(), headers=headers
        )


async def _opt_out(
    uow: DispatchUnitOfWork, request: MessageRequest, outcome: Outcome, now: datetime
) -> list[OutgoingRecord]:
    """A send the provider refused because the recipient opted out with it (an SMS STOP): the
    same engagement a status callback reports, recorded the same way (a marketing suppression,
    ``message_unsubscribed`` and a revoked consent). Without this, every later message to the
    number was tried and refused, and journeys kept asking for them."""
    provider = outcome.provider or "-"
    address = address_of(request.channel, request.recipient)
    engagement = Engagement(
        provider=provider,
        provider_event_id=f"{request.message_id}:opted_out",
        type="message_unsubscribed",
        message_id=request.message_id,
        address=address if isinstance(address, str) else None,
        occurred_at=now,
        properties={"reason": "the recipient opted out with the provider"},
        workspace_id=request.workspace_id,
    )
    message = SentMessage(
        message_id=request.message_id,
        workspace_id=request.workspace_id,
        customer_id=request.customer_id,
        channel=request.channel,
        template=request.template,
        provider=provider,
    )
    await suppress(uow, engagement, message, at=now)
    return engagement_records(engagement, message, received_at=now)


def _blocking(
    found: dict[tuple[str, str, str], Suppression], request: MessageRequest
) -> str | None:
    address = address_of(request.channel, request.recipient)
    if not isinstance(address, str):
        return None
    entry = found.get(
        (request.workspace_id, request.channel, suppression_key(request.channel, address))
    )
    if entry is not None and entry.blocks(request.category):
        return entry.reason
    return None
