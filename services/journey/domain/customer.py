"""Everything the journey service keeps about one customer, and how events and timers change it.

``CustomerState`` is the unit of consistency: profile, entry history, send ledger (for frequency
caps), the runs still tracked and the trigger schedules (birthdays, inactivity). The database
handler loads the states of a batch's customers, applies inputs here and saves what changed; the
simulator keeps the states in memory. Both run this same code, so a simulation shows what
production will do.

Inputs are an event (``apply_event``) or a due timer (``apply_timer``). Timers are named
``run:<run_id>`` (a run's wait, wait_for timeout or held send) and ``trigger:<journey_id>`` (a
date or inactivity trigger); ``CustomerState.timers()`` lists the ones the state needs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from services.journey.domain import engine, identity, intelligence
from services.journey.domain.catalog import JourneyCatalog, WorkspaceJourneys
from services.journey.domain.conditions import utc_text
from services.journey.domain.definitions import (
    DateTrigger,
    EventTrigger,
    InactivityTrigger,
    Journey,
    ReentryAfter,
)
from services.journey.domain.durations import format_duration
from services.journey.domain.intelligence import (
    Derived,
    Facts,
    FactsView,
    IntelEvent,
    Intelligence,
    OrderRecord,
)
from services.journey.domain.localtime import next_date_trait, resolve_zone


class EventLike(IntelEvent, Protocol):
    """What the processor reads of an event (``EventEnvelope`` has it)."""

    @property
    def traits(self) -> dict[str, Any]: ...


@dataclass(slots=True)
class CustomerState:
    workspace_id: str
    customer_id: str
    traits: dict[str, Any] = field(default_factory=dict)
    trait_times: dict[str, str] = field(default_factory=dict)
    """Trait name → when the value held was given (``utc_text`` of its event's occurred_at, or
    of the instant a run set it), also for a trait a null removed: an event that occurred
    earlier, arriving late (an import, a delayed delivery), never overwrites it."""
    scores: dict[str, float] = field(default_factory=dict)
    first_seen_at: datetime | None = None
    last_seen_at: datetime | None = None
    entries: dict[str, datetime] = field(default_factory=dict)
    """Journey id → when the customer last entered it; for a keyed journey also
    ``<journey id>:<key>`` → when they last entered it for that key (re-entry counts per key,
    so that each cart gets its own run)."""
    ledger: engine.Ledger = ()
    instances: dict[str, engine.Instance] = field(default_factory=dict)
    """Runs still tracked (active, or goal window open), by run id."""
    schedules: dict[str, datetime] = field(default_factory=dict)
    """Journey id → when its date or inactivity trigger fires for this customer."""
    facts: Facts = field(default_factory=Facts)
    """Profile, lead score, lifecycle stage, segments, RFM and predictions."""
    stored: bool = False
    intel: Intelligence | None = None
    """The workspace's rules and the instant the state is being changed at: set by
    ``apply_event`` and ``apply_timer`` so that conditions can read the facts."""
    now: datetime | None = None
    traits_set: bool = False
    """A run set a trait since the flag was cleared (segments are decided again then)."""

    def bind(self, intel: Intelligence, now: datetime) -> None:
        self.intel, self.now = intel, now

    def customer(self) -> engine.Customer:
        if self.now is None:
            return engine.Customer(traits=self.traits, scores=self.scores)
        facts = FactsView(
            self.facts,
            first_seen_at=self.first_seen_at,
            last_seen_at=self.last_seen_at,
            intel=self.intel or intelligence.default(),
            now=self.now,
        )
        return engine.Customer(traits=self.traits, scores=self.scores, facts=facts)

    def timers(self) -> dict[str, datetime]:
        wanted = {
            f"run:{i.run_id}": i.wake_at
            for i in self.instances.values()
            if i.active and i.wake_at is not None
        }
        wanted.update({f"trigger:{j}": due for j, due in self.schedules.items()})
        if self.facts.due is not None:
            wanted[INTEL_TIMER] = self.facts.due
        return wanted

    def recipient(self) -> dict[str, Any]:
        """The snapshot a message request carries: addresses, traits and what customer
        intelligence knows, for personalisation (templates read ``profile``, ``lead``,
        ``stage``, ``segments``, ``rfm`` and ``predictions``)."""
        snapshot: dict[str, Any] = {
            "customer_id": self.customer_id,
            "email": self.traits.get("email"),
            "phone": self.traits.get("phone"),
            "traits": dict(self.traits),
            "scores": dict(self.scores),
        }
        if self.now is not None:
            view = self.customer().facts
            snapshot.update({root: view[root] for root in FactsView._ROOTS})
        return snapshot


@dataclass(frozen=True, slots=True)
class Activity:
    """One line of a customer's timeline in a journey (what `ciclo simulate` prints)."""

    at: datetime
    workspace_id: str
    customer_id: str
    journey_id: str
    version: int
    run_id: str
    kind: str
    step: str | None
    reason: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message request decided by a run."""

    send: engine.Send
    instance: engine.Instance


@dataclass(slots=True)
class Changes:
    activity: list[Activity] = field(default_factory=list)
    messages: list[Outgoing] = field(default_factory=list)
    instances: dict[str, engine.Instance] = field(default_factory=dict)
    """Runs created or changed, to save (including ones no longer tracked)."""
    events: list[tuple[CustomerState, Derived, bool]] = field(default_factory=list)
    """Band, stage and segment changes raised, with the customer and whether live: the
    service publishes them to the events topic."""
    orders: list[tuple[CustomerState, OrderRecord]] = field(default_factory=list)
    """Orders recorded or cancelled, for the order log the prediction models read."""

    def extend(self, other: Changes) -> None:
        self.activity.extend(other.activity)
        self.messages.extend(other.messages)
        self.instances.update(other.instances)
        self.events.extend(other.events)
        self.orders.extend(other.orders)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def rfc3339(value: datetime) -> str:
    return utc_text(value)


def jsonable(value: Any) -> Any:
    """A value of an activity or a run as JSON: instants in RFC 3339 UTC, durations in
    ISO 8601 (what the timeline prints and the database keeps)."""
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def event_view(event: EventLike) -> dict[str, Any]:
    """The event as conditions and templates see it."""
    return {"type": event.type, "id": event.event_id, "properties": event.properties}


# ── Inputs ────────────────────────────────────────────────────────────────────────────────────


INTEL_TIMER = "intel"
"""The timer of a customer's next time-based band, stage or segment change."""
MAX_DERIVED_DEPTH = 3
"""How far derived events may raise further derived events (a segment entry scored by a rule
that moves the band): a bound, so that rules that feed each other cannot loop."""


def timer_priority(state: CustomerState | None, timer: str, catalog: JourneyCatalog) -> int:
    """The ``priority`` of the journey a timer of ``state`` belongs to (0 for customer
    intelligence's, or a journey no longer there). Timers due at the same instant fire in
    descending priority, so the higher journey takes a frequency cap's one send."""
    if state is None:
        return 0
    kind, _, name = timer.partition(":")
    run = state.instances.get(name) if kind == "run" else None
    journey_id = run.journey_id if run is not None else name
    current = catalog.view(state.workspace_id).get(journey_id)
    return current[0].priority if current else 0


def apply_event(
    state: CustomerState,
    event: EventLike,
    *,
    catalog: JourneyCatalog,
    policy: engine.Policy,
    now: datetime,
    live: bool,
    intel: Intelligence | None = None,
    depth: int = 0,
) -> Changes:
    """Apply one event of the customer.

    Every event updates the profile, the lead score, the segments' windows and the trigger
    schedules, then band, stage and segment membership are decided; each change is a derived
    event, applied to the customer right after this one. Only a live event (not backfilled,
    not older than the workspace's cut-off) moves runs and starts new ones, and not an order
    or cancellation the profile already recorded (the same ``order_id`` reported again).
    """
    changes = Changes()
    intel = intel or intelligence.default()
    state.bind(intel, now)
    # A derived event is Ciclo's own news about the customer, not a sign of them: it does not
    # move first / last seen (a "not seen for 30 days" segment would otherwise never hold).
    changed = _observe(state, event, seen=not isinstance(event, Derived))
    observed = intelligence.observe(state.facts, event, intel, now)
    if observed.order is not None:
        changes.orders.append((state, observed.order))
    derived = _refresh(state, intel, now, cause=event.event_id)
    journeys = catalog.view(state.workspace_id)
    _reschedule(state, journeys, event, changed, policy, now)
    # An order reported again moves no run: it would end the thank-you run of that very order
    # (exit_when) and start another, a second thank-you for one purchase.
    if live and not observed.repeat:
        state.traits_set = False
        _run_journeys(state, event, changes, catalog, journeys, policy, now)
        if state.traits_set:  # an update step set a trait: segments may move on it at once
            derived += _refresh(state, intel, now, cause=f"{event.event_id}:runs")
    _follow(state, derived, changes, catalog, policy, now, live, intel, depth)
    return changes


def _refresh(
    state: CustomerState, intel: Intelligence, now: datetime, cause: str, *, full: bool = False
) -> list[Derived]:
    """Decide band, stage and segments (``full``: every segment, see ``intelligence.refresh``)."""
    return intelligence.refresh(
        state.facts,
        traits=state.traits,
        first_seen_at=state.first_seen_at,
        last_seen_at=state.last_seen_at,
        intel=intel,
        now=now,
        cause=cause,
        workspace_id=state.workspace_id,
        customer_id=state.customer_id,
        full=full,
    )


def _follow(
    state: CustomerState,
    derived: list[Derived],
    changes: Changes,
    catalog: JourneyCatalog,
    policy: engine.Policy,
    now: datetime,
    live: bool,
    intel: Intelligence,
    depth: int,
) -> None:
    """Record derived events and apply each to the customer, journeys included."""
    for event in derived:
        changes.events.append((state, event, live))
        if depth < MAX_DERIVED_DEPTH:
            changes.extend(
                apply_event(
                    state,
                    event,
                    catalog=catalog,
                    policy=policy,
                    now=now,
                    live=live,
                    intel=intel,
                    depth=depth + 1,
                )
            )


def _run_journeys(
    state: CustomerState,
    event: EventLike,
    changes: Changes,
    catalog: JourneyCatalog,
    journeys: WorkspaceJourneys,
    policy: engine.Policy,
    now: datetime,
) -> None:
    view = event_view(event)
    # The runs under way and the journeys this event enters, highest priority first, so that
    # the journey that matters most takes a send the frequency caps allow only once. The runs
    # are listed before any entry is made: the event that starts a run is not also an input to
    # it. At equal priority runs go first, so a run that this event ends (exit_when) makes way
    # for a new run of the same journey.
    runs = _by_priority(state, journeys, catalog)
    entering = journeys.entries_for(view, engine.context(state.customer(), view, now))
    ranked: list[tuple[tuple[int, int], engine.Instance | Journey]] = [
        ((-_priority(journeys, r.journey_id), 0), r) for r in runs
    ]
    ranked.extend(((-j.priority, 1), j) for j in entering)
    ranked.sort(key=lambda pair: pair[0])  # stable: each list keeps its own order
    for _, item in ranked:
        if isinstance(item, engine.Instance):
            _drive(
                state,
                changes,
                catalog,
                journeys,
                item,
                now,
                lambda journey, run: engine.on_event(
                    run,
                    journey,
                    view,
                    customer=state.customer(),
                    policy=policy,
                    ledger=state.ledger,
                    now=now,
                ),
            )
        else:
            _try_enter(state, changes, item, event, view, policy, now)


def _drive(
    state: CustomerState,
    changes: Changes,
    catalog: JourneyCatalog,
    journeys: WorkspaceJourneys,
    instance: engine.Instance,
    now: datetime,
    move: Callable[[Journey, engine.Instance], engine.Outcome | None],
) -> None:
    """Move a run under way with ``move`` (an event or its timer) on the version it entered;
    a run of an archived or removed journey ends instead."""
    journey = catalog.version(state.workspace_id, instance.journey_id, instance.version)
    if journey is None or _archived(journeys, instance):
        _end(state, changes, journey, instance, now)
        return
    outcome = move(journey, instance)
    if outcome is not None:
        _apply(state, changes, journey, outcome)


def _try_enter(
    state: CustomerState,
    changes: Changes,
    journey: Journey,
    event: EventLike,
    view: Mapping[str, Any],
    policy: engine.Policy,
    now: datetime,
) -> None:
    """Enter a journey the event triggers, if its key and re-entry rule allow."""
    trigger = journey.trigger
    key = None
    if isinstance(trigger, EventTrigger) and trigger.key is not None:
        value = event.properties.get(trigger.key)
        if value is None:
            return  # a keyed journey needs the key: no cart id, no cart run
        key = str(value)
    if _may_enter(state, journey, key, now):
        _enter(state, changes, journey, view, key, event.event_id, policy, now)


def apply_timer(
    state: CustomerState,
    timer: str,
    *,
    catalog: JourneyCatalog,
    policy: engine.Policy,
    now: datetime,
    intel: Intelligence | None = None,
) -> Changes:
    """Fire one of the customer's timers (a name from ``CustomerState.timers()``)."""
    changes = Changes()
    intel = intel or intelligence.default()
    state.bind(intel, now)
    if timer == INTEL_TIMER:
        due = state.facts.due
        if due is None or due > now:
            return changes
        derived = _refresh(state, intel, now, cause=f"{INTEL_TIMER}@{_iso(due)}", full=True)
        _follow(state, derived, changes, catalog, policy, now, True, intel, 0)
        return changes
    kind, _, name = timer.partition(":")
    journeys = catalog.view(state.workspace_id)
    if kind == "run":
        instance = state.instances.get(name)
        if instance is None:
            return changes  # ended meanwhile (an exit_when event came first)
        state.traits_set = False
        _drive(
            state,
            changes,
            catalog,
            journeys,
            instance,
            now,
            lambda journey, run: engine.on_timer(
                run,
                journey,
                customer=state.customer(),
                policy=policy,
                ledger=state.ledger,
                now=now,
            ),
        )
        if state.traits_set:
            derived = _refresh(state, intel, now, cause=f"{timer}@{_iso(now)}")
            _follow(state, derived, changes, catalog, policy, now, True, intel, 0)
        return changes
    due = state.schedules.get(name)
    if due is None or due > now:
        return changes
    del state.schedules[name]
    current = journeys.get(name)
    if current is None or current[1] == "archived":
        return changes
    journey, status = current
    trigger = journey.trigger
    view: dict[str, Any]
    if isinstance(trigger, DateTrigger):
        view = {
            "type": "date_trait",
            "id": f"{name}@{due.isoformat()}",
            "properties": {
                "trait": trigger.date_trait,
                "value": state.traits.get(trigger.date_trait),
            },
        }
        if trigger.yearly:
            following = _date_due(state, trigger, policy, now, after=max(due, now))
            # Also while the journey is paused: it takes no entry today, but next year's date
            # must still come round when it is published again.
            if following is not None:
                state.schedules[name] = following
    elif isinstance(trigger, InactivityTrigger):
        view = {
            "type": "inactivity",
            "id": f"{name}@{due.isoformat()}",
            "properties": {
                "event": trigger.inactivity.event,
                # Text, as it reads back from storage: conditions see the same value either way.
                "since": (due - trigger.inactivity.for_).isoformat(),
            },
        }
    else:  # pragma: no cover - only dated and inactivity journeys are scheduled
        return changes
    if status == "published" and _may_enter(state, journey, None, now):
        _enter(state, changes, journey, view, None, view["id"], policy, now)
    return changes


def apply_insights(
    state: CustomerState,
    insights: Mapping[str, Any],
    *,
    catalog: JourneyCatalog,
    policy: engine.Policy,
    now: datetime,
    intel: Intelligence | None = None,
) -> Changes:
    """Store freshly computed RFM scores and predictions (``{"rfm", "predictions",
    "computed_at"}``) and decide segments again: a segment on RFM or predictions changes here."""
    changes = Changes()
    intel = intel or intelligence.default()
    state.bind(intel, now)
    state.facts.insights = dict(insights)
    # The content is part of the cause: the same run stored again after membership moved in
    # between must not raise an entry with the id of the earlier one.
    digest = hashlib.blake2b(
        json.dumps(jsonable(dict(insights)), sort_keys=True).encode(), digest_size=8
    ).hexdigest()
    cause = f"insights@{insights.get('computed_at') or _iso(now)}:{digest}"
    _follow(
        state,
        _refresh(state, intel, now, cause=cause, full=True),
        changes,
        catalog,
        policy,
        now,
        True,
        intel,
        0,
    )
    return changes


def merge_into(
    target: CustomerState,
    source: CustomerState,
    *,
    catalog: JourneyCatalog,
    policy: engine.Policy,
    now: datetime,
    live: bool,
    intel: Intelligence | None = None,
) -> Changes:
    """Fold ``source`` (an anonymous visitor, an old id) into ``target``, the same person
    (``identity`` says how each part merges); band, stage and segments are then decided anew.
    The caller deletes the source's own rows and records the alias."""
    changes = Changes()
    intel = intel or intelligence.default()
    target.bind(intel, now)
    for name, given in source.trait_times.items():
        held = target.trait_times.get(name)
        if held is None and name in target.traits:
            continue  # the target's value predates trait times: it stays, as it always did
        if held is None or _earlier(held, given):
            target.trait_times[name] = given
            if name in source.traits:
                target.traits[name] = source.traits[name]
            else:
                target.traits.pop(name, None)
    for name, value in source.traits.items():
        if name not in source.trait_times:
            target.traits.setdefault(name, value)
    for name, value in source.scores.items():
        target.scores[name] = target.scores.get(name, 0) + value
    target.first_seen_at = identity.earlier(target.first_seen_at, source.first_seen_at)
    target.last_seen_at = identity.later(target.last_seen_at, source.last_seen_at)
    for name, at in source.entries.items():
        if name not in target.entries or target.entries[name] < at:
            target.entries[name] = at
    target.ledger = tuple(sorted({*target.ledger, *source.ledger}))
    for name, due in source.schedules.items():
        target.schedules.setdefault(name, due)
    identity.merge_facts(
        target.facts,
        source.facts,
        rules=intel.score_rules,
        definitions=intel.segments,
    )
    running = {(i.journey_id, i.key) for i in target.instances.values() if i.active}
    for run in sorted(source.instances.values(), key=lambda r: r.entered_at):
        moved = identity.move_run(run, target.customer_id)
        if moved.active and (moved.journey_id, moved.key) in running:
            journey = catalog.version(target.workspace_id, moved.journey_id, moved.version)
            _apply(target, changes, journey, _stop(target, moved, identity.MERGED, now))
            continue
        if moved.active:
            running.add((moved.journey_id, moved.key))
        target.instances[moved.run_id] = moved
        changes.instances[moved.run_id] = moved
    source.instances.clear()
    source.facts.due = None
    derived = _refresh(target, intel, now, cause=f"merge:{source.customer_id}", full=True)
    _follow(target, derived, changes, catalog, policy, now, live, intel, 0)
    return changes


def reconsider(
    state: CustomerState,
    *,
    catalog: JourneyCatalog,
    policy: engine.Policy,
    now: datetime,
    intel: Intelligence,
) -> Changes:
    """Decide band, stage and segments anew under rules that changed (a segment saved over
    HTTP, new score rules): the customer enters or leaves without waiting for an event."""
    changes = Changes()
    state.bind(intel, now)
    derived = _refresh(state, intel, now, cause=f"rules@{intel.revision}", full=True)
    _follow(state, derived, changes, catalog, policy, now, True, intel, 0)
    return changes


def archive(state: CustomerState, journey_id: str, *, now: datetime) -> Changes:
    """Stop the customer's active runs of a journey at once (archived over HTTP)."""
    changes = Changes()
    for instance in list(state.instances.values()):
        if instance.journey_id == journey_id and instance.active:
            _apply(state, changes, None, _stop(state, instance, "archived", now))
    return changes


# ── Internals ─────────────────────────────────────────────────────────────────────────────────


def _observe(state: CustomerState, event: EventLike, *, seen: bool = True) -> set[str]:
    """Merge the event's traits (None clears); the names that changed. Per trait, the value
    given later wins (``occurred_at``): an event older than a trait's value leaves it as it is,
    so history imported after live events, or a delayed delivery, cannot bring back an address
    changed since, a trait a null removed or a consent revoked since.

    A consent_updated event also sets ``<channel>_<category>_consent`` to granted or revoked,
    which the engine reads before every marketing send."""
    changed = set()
    traits = event.traits
    if event.type == "consent_updated":
        props = event.properties
        channel, status = props.get("channel"), props.get("status")
        if isinstance(channel, str) and status in ("granted", "revoked"):
            category = props.get("category") or "marketing"
            traits = {**traits, engine.consent_trait(channel, str(category)): status}
    if traits:
        given = utc_text(event.occurred_at)
        times = state.trait_times
        for key, value in traits.items():
            held = times.get(key)
            if held is not None and _earlier(given, held):
                continue  # a newer value (or removal) stands
            times[key] = given
            if value is None:
                if state.traits.pop(key, None) is not None:
                    changed.add(key)
            elif state.traits.get(key) != value:
                state.traits[key] = value
                changed.add(key)
    touched = state.facts.touched
    touched.update(f"customer.{name}" for name in changed)
    if not seen:
        return changed
    at = event.occurred_at
    if state.first_seen_at is None or at < state.first_seen_at:
        state.first_seen_at = at
        touched.add("profile.first_seen_at")
    if state.last_seen_at is None or at > state.last_seen_at:
        state.last_seen_at = at
        touched.add("profile.last_seen_at")
    return changed


def _earlier(given: str, held: str) -> bool:
    """Whether the instant ``given`` is before ``held`` (both ``utc_text``; compared as text
    only when the seconds differ: a fraction makes the text longer, not later)."""
    if given[:19] != held[:19]:
        return given < held
    return datetime.fromisoformat(given) < datetime.fromisoformat(held)


def _reschedule(
    state: CustomerState,
    journeys: WorkspaceJourneys,
    event: EventLike,
    changed: set[str],
    policy: engine.Policy,
    now: datetime,
) -> None:
    for journey in journeys.by_inactive_event.get(event.type, ()):
        assert isinstance(journey.trigger, InactivityTrigger)
        due = event.occurred_at + journey.trigger.inactivity.for_
        # Only the future: a backfilled order from long ago does not start a win-back today.
        if due > now and (journey.id not in state.schedules or state.schedules[journey.id] < due):
            state.schedules[journey.id] = due
    if not journeys.dated or not changed:
        return
    for journey in journeys.dated:
        trigger = journey.trigger
        assert isinstance(trigger, DateTrigger)
        if trigger.date_trait not in changed and "timezone" not in changed:
            continue
        when = _date_due(state, trigger, policy, now)
        if when is None:
            state.schedules.pop(journey.id, None)
        else:
            state.schedules[journey.id] = when


def schedule_all(
    state: CustomerState, catalog: JourneyCatalog, policy: engine.Policy, now: datetime
) -> None:
    """Compute the date-trigger schedules from scratch (a dated journey was just published)."""
    journeys = catalog.view(state.workspace_id)
    for journey in journeys.dated:
        trigger = journey.trigger
        assert isinstance(trigger, DateTrigger)
        due = _date_due(state, trigger, policy, now)
        if due is not None:
            state.schedules.setdefault(journey.id, due)


def _date_due(
    state: CustomerState,
    trigger: DateTrigger,
    policy: engine.Policy,
    now: datetime,
    *,
    after: datetime | None = None,
) -> datetime | None:
    """When the customer's date trait next comes round for this trigger, in their zone."""
    tz = resolve_zone(trigger.timezone, state.traits.get("timezone"), policy.default_timezone)
    return next_date_trait(
        now,
        state.traits.get(trigger.date_trait),
        offset=trigger.offset,
        at=trigger.at,
        tz=tz,
        yearly=trigger.yearly,
        after=after,
    )


def _entry_name(journey_id: str, key: str | None) -> str:
    """Where ``CustomerState.entries`` keeps the last entry (a journey id has no ':')."""
    return journey_id if key is None else f"{journey_id}:{key}"


def _may_enter(state: CustomerState, journey: Journey, key: str | None, now: datetime) -> bool:
    for instance in state.instances.values():
        if instance.journey_id == journey.id and instance.active and instance.key == key:
            return False  # one active run per journey (per key value, for keyed journeys)
    last = state.entries.get(_entry_name(journey.id, key))
    if last is None or journey.reentry == "always":
        return True
    if isinstance(journey.reentry, ReentryAfter):
        return now - last >= journey.reentry.after
    return False  # never


def _enter(
    state: CustomerState,
    changes: Changes,
    journey: Journey,
    trigger: Mapping[str, Any],
    key: str | None,
    cause_id: str,
    policy: engine.Policy,
    now: datetime,
) -> None:
    run_id = engine.run_id_for(
        journey, workspace_id=state.workspace_id, customer_id=state.customer_id, event_id=cause_id
    )
    if run_id in state.instances:
        return  # the same cause again (a replayed timer): already entered
    state.entries[journey.id] = now
    if key is not None and journey.reentry != "always":
        reentry = journey.reentry
        if isinstance(reentry, ReentryAfter):
            # Keys whose re-entry delay has passed no longer decide anything: forget them, so
            # that a customer's carts do not pile up.
            prefix = f"{journey.id}:"
            for name, at in list(state.entries.items()):
                if name.startswith(prefix) and now - at >= reentry.after:
                    del state.entries[name]
        state.entries[_entry_name(journey.id, key)] = now
    outcome = engine.enter(
        journey,
        workspace_id=state.workspace_id,
        customer_id=state.customer_id,
        run_id=run_id,
        trigger=trigger,
        key=key,
        customer=state.customer(),
        policy=policy,
        ledger=state.ledger,
        now=now,
    )
    _apply(state, changes, journey, outcome)


def _apply(
    state: CustomerState, changes: Changes, journey: Journey | None, outcome: engine.Outcome
) -> None:
    instance = outcome.instance
    state.ledger = outcome.ledger
    for effect in outcome.effects:
        if isinstance(effect, engine.Record):
            changes.activity.append(
                Activity(
                    at=effect.at,
                    workspace_id=instance.workspace_id,
                    customer_id=instance.customer_id,
                    journey_id=instance.journey_id,
                    version=instance.version,
                    run_id=instance.run_id,
                    kind=effect.kind,
                    step=effect.step,
                    reason=effect.reason,
                    detail=effect.detail,
                )
            )
        elif isinstance(effect, engine.Send):
            changes.messages.append(Outgoing(send=effect, instance=instance))
        elif isinstance(effect, engine.SetTraitEffect):
            state.traits[effect.name] = effect.value
            if state.now is not None:
                state.trait_times[effect.name] = utc_text(state.now)
            state.traits_set = True
            state.facts.touched.add(f"customer.{effect.name}")
        elif isinstance(effect, engine.AddScoreEffect):
            state.scores[effect.name] = state.scores.get(effect.name, 0) + effect.by
        elif isinstance(effect, engine.SetScoreEffect):
            state.scores[effect.name] = effect.value
    changes.instances[instance.run_id] = instance
    if instance.tracked(instance.updated_at):
        state.instances[instance.run_id] = instance
    else:
        state.instances.pop(instance.run_id, None)


def _priority(journeys: WorkspaceJourneys, journey_id: str) -> int:
    current = journeys.get(journey_id)
    return current[0].priority if current else 0


def _by_priority(
    state: CustomerState, journeys: WorkspaceJourneys, catalog: JourneyCatalog
) -> list[engine.Instance]:
    def rank(instance: engine.Instance) -> tuple[int, datetime, str]:
        return (-_priority(journeys, instance.journey_id), instance.entered_at, instance.run_id)

    return sorted(state.instances.values(), key=rank)


def _archived(journeys: WorkspaceJourneys, instance: engine.Instance) -> bool:
    current = journeys.get(instance.journey_id)
    return current is not None and current[1] == "archived" and instance.active


def _end(
    state: CustomerState,
    changes: Changes,
    journey: Journey | None,
    instance: engine.Instance,
    now: datetime,
) -> None:
    """A run whose journey was archived, or whose version no longer exists (a file journey
    deleted): an active run exits at once; a finished one is no longer tracked."""
    if instance.active:
        reason = "archived" if journey is not None else "journey_removed"
        _apply(state, changes, journey, _stop(state, instance, reason, now))
    else:
        state.instances.pop(instance.run_id, None)


def _stop(
    state: CustomerState, instance: engine.Instance, reason: str, now: datetime
) -> engine.Outcome:
    """``engine.stop``, keeping the customer's send ledger: ``_apply`` stores an outcome's
    ledger, and a stop sends nothing (its outcome carries an empty one)."""
    return replace(engine.stop(instance, reason=reason, now=now), ledger=state.ledger)


def drop_untracked(state: CustomerState, now: datetime) -> None:
    """Forget runs whose goal window has closed (they stay in the database for stats)."""
    for run_id, instance in list(state.instances.items()):
        if not instance.tracked(now):
            del state.instances[run_id]


__all__ = [
    "INTEL_TIMER",
    "Activity",
    "Changes",
    "CustomerState",
    "Outgoing",
    "apply_event",
    "apply_insights",
    "apply_timer",
    "archive",
    "drop_untracked",
    "event_view",
    "merge_into",
    "reconsider",
    "schedule_all",
]
