"""Handlers of the journey service: load customer states through the unit of work, apply events
or due timers with the domain, and write state, timers, activity, idempotency marks and outbox
records in one transaction. Nothing is published from here.

Query count is constant per batch: duplicates, states and runs are each loaded with one query per
workspace for the whole batch, and written with one statement per table. With the event
consumer's ``StateCache``, states are first locked and their stamps read; only the rows it does
not hold under those stamps are read in full.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from services.journey.domain import engine, identity
from services.journey.domain.catalog import JourneyCatalog
from services.journey.domain.customer import (
    Changes,
    CustomerState,
    Outgoing,
    apply_event,
    apply_insights,
    apply_timer,
    merge_into,
    reconsider,
    schedule_all,
    timer_priority,
)
from services.journey.domain.intelligence import DERIVED_TYPES, Derived, Intelligence
from services.journey.domain.policy import WorkspacePolicy
from services.journey.service_layer.uow import JourneyUnitOfWork
from shared.bus.ports import OutgoingRecord
from shared.contracts.events import EVENT_TYPE_PREFIX, EventEnvelope
from shared.contracts.messages import MessageRequest
from shared.contracts.topics import EVENTS, MESSAGES

Intel = Mapping[str, Intelligence]
"""Each workspace's customer-intelligence rules; a workspace not in it takes the defaults."""

SOURCE = "journey"
"""The ``source`` of the events this service raises itself (band, stage and segment changes);
no producer outside it sets this source (ingest sets its own)."""


def raised_here(event: EventEnvelope) -> bool:
    """Whether ``event`` is a derived event this service published. It was applied in the
    transaction of the event or timer that caused it, before it was published: back from the
    events topic it is skipped, with no idempotency mark to look up or to write."""
    return event.source == SOURCE and event.type in DERIVED_TYPES


def raised_here_record(headers: Mapping[str, str]) -> bool:
    """``raised_here`` read from a consumed record's CloudEvents headers, before decoding it
    (a record without them is decoded and judged by ``raised_here``)."""
    source = headers.get("ce_source")
    kind = headers.get("ce_type")
    return (
        source is not None
        and kind is not None
        and source.endswith("/" + SOURCE)
        and kind.removeprefix(EVENT_TYPE_PREFIX) in DERIVED_TYPES
    )


@dataclass(frozen=True, slots=True)
class Fired:
    """A timer the poller leased: (workspace, customer, name) and when it was due."""

    workspace_id: str
    customer_id: str
    name: str
    due_at: datetime


async def handle_events(
    uow: JourneyUnitOfWork,
    events: Sequence[EventEnvelope],
    *,
    catalog: JourneyCatalog,
    policies: dict[str, WorkspacePolicy],
    now: datetime,
    intel: Intel | None = None,
) -> int:
    """Apply a batch of events; returns how many were new (duplicates, and derived events back
    from the events topic, are skipped)."""
    events = [e for e in events if not raised_here(e)]
    if not events:
        return 0
    seen = await uow.processed.seen((e.workspace_id, e.event_id) for e in events)
    fresh: list[EventEnvelope] = []
    batch_ids: set[tuple[str, str]] = set()
    for event in events:
        key = (event.workspace_id, event.event_id)
        if key in seen or key in batch_ids:
            continue
        batch_ids.add(key)
        fresh.append(event)
    if not fresh:
        return 0

    def live_of(event: EventEnvelope) -> bool:
        policy = policies.get(event.workspace_id) or WorkspacePolicy()
        return policy.is_live(occurred_at=event.occurred_at, historical=event.historical, now=now)

    # Identity: subjects merged earlier go to their customer; links in this batch (an
    # anonymous id identified, an alias) merge the linked record into the customer first.
    links: dict[tuple[str, str], tuple[str, bool]] = {}
    for event in fresh:
        for alias in identity.links(
            type=event.type,
            customer_id=event.customer_id,
            anonymous_id=event.anonymous_id,
            properties=event.properties,
        ):
            assert event.customer_id is not None
            links[(event.workspace_id, alias)] = (event.customer_id, live_of(event))
    subjects = {(e.workspace_id, e.subject) for e in fresh}
    aliases = await uow.identities.resolve(
        subjects | set(links) | {(w, target) for (w, _), (target, _) in links.items()}
    )
    merges: list[tuple[str, str, str, bool]] = []
    for (workspace, alias), (target, live) in sorted(links.items()):
        target = aliases.get((workspace, target), target)
        if alias != target and aliases.get((workspace, alias)) != target:
            merges.append((workspace, alias, target, live))
            aliases[(workspace, alias)] = target

    def subject_of(event: EventEnvelope) -> str:
        return aliases.get((event.workspace_id, event.subject), event.subject)

    keys = {(e.workspace_id, subject_of(e)) for e in fresh}
    keys.update((w, s) for w, s, _, _ in merges)
    keys.update((w, t) for w, _, t, _ in merges)
    batch = await _Batch.open(uow, keys, now)
    for workspace, alias, target, live in merges:
        batch.merge(
            workspace,
            alias,
            target,
            catalog=catalog,
            policy=(policies.get(workspace) or WorkspacePolicy()).policy,
            now=now,
            live=live,
            intel=(intel or {}).get(workspace),
        )
    for event in fresh:
        state = batch.state(event.workspace_id, subject_of(event))
        policy = policies.get(event.workspace_id) or WorkspacePolicy()
        live = live_of(event)
        batch.add(
            apply_event(
                state,
                event,
                catalog=catalog,
                policy=policy.policy,
                now=now,
                live=live,
                intel=(intel or {}).get(event.workspace_id),
            )
        )
    await batch.close(now)
    await uow.processed.mark(batch_ids, at=now)
    await uow.commit()
    return len(fresh)


async def handle_timers(
    uow: JourneyUnitOfWork,
    fired: Sequence[Fired],
    *,
    catalog: JourneyCatalog,
    policies: dict[str, WorkspacePolicy],
    now: datetime,
    intel: Intel | None = None,
) -> int:
    """Fire leased timers; returns how many fired. A timer that an event moved or removed since
    it was leased is left alone: the state, read under the customer's lock, is the truth."""
    batch = await _Batch.open(uow, {(f.workspace_id, f.customer_id) for f in fired}, now)
    count = 0

    # Due order, and for timers due together the journey with the higher priority first, so it
    # takes the frequency cap's one send.
    def order(f: Fired) -> tuple[datetime, int, str, str, str]:
        state = batch.states.get((f.workspace_id, f.customer_id))
        priority = timer_priority(state, f.name, catalog)
        return (f.due_at, -priority, f.workspace_id, f.customer_id, f.name)

    for timer in sorted(fired, key=order):
        state = batch.states.get((timer.workspace_id, timer.customer_id))
        if state is None:
            continue
        due = state.timers().get(timer.name)
        if due is None or due > now:
            continue
        policy = policies.get(timer.workspace_id) or WorkspacePolicy()
        batch.add(
            apply_timer(
                state,
                timer.name,
                catalog=catalog,
                policy=policy.policy,
                now=now,
                intel=(intel or {}).get(timer.workspace_id),
            )
        )
        count += 1
    await batch.close(now)
    await uow.commit()
    return count


async def handle_insights(
    uow: JourneyUnitOfWork,
    insights: Mapping[tuple[str, str], Mapping[str, object]],
    *,
    catalog: JourneyCatalog,
    policies: dict[str, WorkspacePolicy],
    now: datetime,
    intel: Intel | None = None,
) -> int:
    """Store RFM scores and predictions computed by the scheduled job for these customers
    ((workspace, customer) → ``{"rfm", "predictions", "computed_at"}``) and decide their
    segments again; returns how many customers were updated (one no longer there is skipped)."""
    batch = await _Batch.open(uow, set(insights), now)
    for key, state in sorted(batch.states.items()):
        policy = policies.get(key[0]) or WorkspacePolicy()
        batch.add(
            apply_insights(
                state,
                insights[key],
                catalog=catalog,
                policy=policy.policy,
                now=now,
                intel=(intel or {}).get(key[0]),
            )
        )
    await batch.close(now)
    await uow.commit()
    return len(batch.states)


async def backfill_schedules(
    uow: JourneyUnitOfWork,
    *,
    key: tuple[str, str, int],
    after: tuple[str, str] | None,
    keys: list[tuple[str, str]],
    catalog: JourneyCatalog,
    policies: dict[str, WorkspacePolicy],
    now: datetime,
    limit: int,
) -> tuple[str, str] | None:
    """Compute date-trigger schedules for ``keys``, the next customers (at most ``limit``,
    from ``CustomerStates.keys_after``) of a dated journey's scope (``key`` = (scope, journey
    id, version); scope '' is every workspace). Returns the cursor to go on from, None when
    finished. Customers added since are scheduled by their own events; computing twice keeps
    the first schedule."""
    if keys:
        batch = await _Batch.open(uow, set(keys), now)
        for (workspace, _), state in sorted(batch.states.items()):
            policy = policies.get(workspace) or WorkspacePolicy()
            schedule_all(state, catalog, policy.policy, now)
        await batch.close(now)
    done = len(keys) < limit
    cursor = keys[-1] if keys else after
    await uow.backfills.advance(key, cursor, now if done else None)
    await uow.commit()
    return None if done else cursor


RULES_BACKFILL = "~rules"
"""The journey id under which ``journey_backfills`` tracks re-deciding a workspace's customers
after its rules changed (the version is the rules' revision; no journey id has a '~')."""


async def reconsider_customers(
    uow: JourneyUnitOfWork,
    *,
    workspace: str,
    revision: int,
    after: tuple[str, str] | None,
    keys: list[tuple[str, str]],
    catalog: JourneyCatalog,
    policies: dict[str, WorkspacePolicy],
    intel: Intelligence,
    now: datetime,
    limit: int,
) -> tuple[str, str] | None:
    """Decide band, stage and segments anew for ``keys``, the next customers of a workspace
    whose rules moved to ``revision``; the cursor to go on from, None when finished."""
    if keys:
        batch = await _Batch.open(uow, set(keys), now)
        policy = (policies.get(workspace) or WorkspacePolicy()).policy
        for _, state in sorted(batch.states.items()):
            batch.add(reconsider(state, catalog=catalog, policy=policy, now=now, intel=intel))
        await batch.close(now)
    done = len(keys) < limit
    cursor = keys[-1] if keys else after
    await uow.backfills.advance(
        (workspace, RULES_BACKFILL, revision), cursor, now if done else None
    )
    await uow.commit()
    return None if done else cursor


class _Batch:
    """The customer states of one transaction, and everything that changed in them."""

    def __init__(
        self, uow: JourneyUnitOfWork, states: dict[tuple[str, str], CustomerState]
    ) -> None:
        self.uow = uow
        self.states = states
        self.timers_before = {key: s.timers() for key, s in states.items()}
        self.members_before = {key: set(s.facts.segments.members) for key, s in states.items()}
        self.stored_runs = {run for s in states.values() for run in s.instances}
        self.changes = Changes()
        self.merged: list[tuple[str, str, str]] = []
        """(workspace, source, target) of records merged in this batch."""

    @classmethod
    async def open(
        cls, uow: JourneyUnitOfWork, keys: set[tuple[str, str]], now: datetime
    ) -> _Batch:
        return cls(uow, await uow.states.load(keys, now=now, lock=True))

    def state(self, workspace_id: str, customer_id: str) -> CustomerState:
        key = (workspace_id, customer_id)
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = CustomerState(workspace_id, customer_id)
        return state

    def add(self, changes: Changes) -> None:
        self.changes.extend(changes)

    def merge(
        self,
        workspace: str,
        source: str,
        target: str,
        *,
        catalog: JourneyCatalog,
        policy: engine.Policy,
        now: datetime,
        live: bool,
        intel: Intelligence | None,
    ) -> None:
        """Merge the record ``source`` into ``target`` (recording the link even when there is
        no such record yet: its later events go to the target)."""
        self.merged.append((workspace, source, target))
        state = self.states.pop((workspace, source), None)
        if state is None:
            return
        self.add(
            merge_into(
                self.state(workspace, target),
                state,
                catalog=catalog,
                policy=policy,
                now=now,
                live=live,
                intel=intel,
            )
        )

    async def close(self, now: datetime) -> None:
        runs = self.changes.instances.values()
        await self.uow.states.save(
            self.states.values(),
            timers_before=self.timers_before,
            new_runs=[r for r in runs if r.run_id not in self.stored_runs],
            changed_runs=[r for r in runs if r.run_id in self.stored_runs],
        )
        if self.merged:
            await self.uow.states.remove_merged(self.merged)
            await self.uow.identities.record(self.merged, at=now)
        await self.uow.states.record(self.changes.activity)
        await self.uow.states.record_orders(self.changes.orders)
        await self.uow.states.record_membership(self.states.values(), self.members_before)
        # Derived events are published for everyone downstream. This service applied them
        # already, here: back from the events topic they are skipped (``raised_here``).
        derived = self.changes.events
        await self.uow.emit(
            [
                *_requests(self.changes.messages, self.states, now),
                *(_announce(state, event, live, now) for state, event, live in derived),
            ]
        )


def _announce(state: CustomerState, event: Derived, live: bool, now: datetime) -> OutgoingRecord:
    """A derived event (band, stage or segment change) as an events-topic record."""
    subject = state.customer_id
    anonymous = subject.removeprefix("anon:") if subject.startswith("anon:") else None
    envelope = EventEnvelope(
        event_id=event.event_id,
        workspace_id=state.workspace_id,
        customer_id=None if anonymous is not None else subject,
        anonymous_id=anonymous,
        type=event.type,
        occurred_at=event.occurred_at,
        received_at=now,
        source=SOURCE,
        properties=event.properties,
        historical=not live,
    )
    return OutgoingRecord(
        topic=EVENTS, key=envelope.key, value=envelope.to_json(), headers=envelope.headers()
    )


def message_request(message: Outgoing, state: CustomerState, now: datetime) -> MessageRequest:
    """The request a run's send puts on ``ciclo.messages`` (``ciclo simulate`` renders it too):
    the customer's profile snapshot as recipient, the event that started the run as data."""
    run, send = message.instance, message.send
    return MessageRequest(
        message_id=send.message_id,
        workspace_id=run.workspace_id,
        customer_id=run.customer_id,
        channel=send.channel,
        template=send.template,
        category=send.category,
        journey_id=run.journey_id,
        journey_version=run.version,
        run_id=run.run_id,
        step=send.step,
        requested_at=now,
        recipient=state.recipient(),
        data={"event": dict(run.trigger)},
    )


def _requests(
    messages: Iterable[Outgoing], states: dict[tuple[str, str], CustomerState], now: datetime
) -> Iterable[OutgoingRecord]:
    for message in messages:
        run = message.instance
        request = message_request(message, states[(run.workspace_id, run.customer_id)], now)
        yield OutgoingRecord(
            topic=MESSAGES, key=request.key, value=request.to_json(), headers=request.headers()
        )
