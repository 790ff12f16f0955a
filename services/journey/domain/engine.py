"""The journey engine: pure functions of (instance, definition, input, now) → (instance, effects).

No clock, randomness or I/O in here. The caller passes ``now``, the customer's traits, the
workspace's policy (send caps, default time zone) and the customer's send ledger; splits and
holdouts hash stable ids instead of drawing random numbers. Replaying the same inputs makes the
same decisions and the same message ids.

An instance is one customer's run through one journey version. It is *active* while it has
steps to run; it blocks on a wait, a wait_for or a held send with ``wake_at`` set (the durable
timer). After it ends it is still *tracked* until its goal window closes, so that a conversion
after the last message is counted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from services.journey.domain.conditions import Condition, Layered, evaluate
from services.journey.domain.definitions import (
    AddScore,
    BranchStep,
    EventCondition,
    ExitStep,
    Goal,
    Journey,
    SendStep,
    SetScore,
    SetTrait,
    SplitStep,
    UntilDate,
    UntilTime,
    UpdateStep,
    WaitForSpec,
    WaitForStep,
    WaitStep,
)
from services.journey.domain.localtime import (
    next_date_trait,
    next_time_of_day,
    parse_date_trait,
    resolve_zone,
    window_opens,
)
from shared.contracts.messages import message_id_for

Status = Literal["active", "completed", "exited", "holdout"]
Waiting = Literal["wait", "wait_for", "held"]
Channel = Literal["email", "sms"]


@dataclass(frozen=True, slots=True)
class Instance:
    """One customer's run through one journey version."""

    workspace_id: str
    customer_id: str
    journey_id: str
    version: int
    run_id: str
    step: str | None
    status: Status
    entered_at: datetime
    updated_at: datetime
    wake_at: datetime | None = None
    """When the run's timer fires (end of a wait, a wait_for timeout, a held send)."""
    waiting: Waiting | None = None
    key: str | None = None
    """Value of the trigger's key property (e.g. the cart id) when the journey is keyed."""
    trigger: Mapping[str, Any] = field(default_factory=dict)
    """The event that started the run: ``{"type", "id", "properties"}``."""
    holdout: bool = False
    goal_until: datetime | None = None
    goal_at: datetime | None = None
    exit_reason: str | None = None
    visits: Mapping[str, int] = field(default_factory=dict)
    """How often each send step was reached, so that a loop back to a send gets a new id."""

    @property
    def active(self) -> bool:
        return self.status == "active"

    def tracked(self, now: datetime) -> bool:
        """Still of interest to incoming events: running, or its goal window is open."""
        return self.active or (
            self.goal_at is None and self.goal_until is not None and now <= self.goal_until
        )


@dataclass(frozen=True, slots=True)
class Cap:
    """At most ``limit`` marketing messages on ``channel`` per ``per``, across journeys."""

    channel: Channel
    limit: int
    per: timedelta


@dataclass(frozen=True, slots=True)
class Policy:
    """What a workspace decides for every journey of it."""

    caps: tuple[Cap, ...] = ()
    default_timezone: str = "UTC"


Ledger = tuple[tuple[datetime, str], ...]
"""The customer's recent marketing sends, (when, channel), oldest first."""


def next_allowed(
    ledger: Ledger, caps: tuple[Cap, ...], channel: str, now: datetime
) -> datetime | None:
    """None when the caps let a marketing message on ``channel`` go at ``now``; otherwise the
    earliest instant at which the oldest send that fills a cap has aged out of it."""
    latest: datetime | None = None
    for cap in caps:
        if cap.channel != channel:
            continue
        recent = [at for at, ch in ledger if ch == channel and at > now - cap.per]
        if len(recent) >= cap.limit:
            frees = recent[len(recent) - cap.limit] + cap.per
            latest = frees if latest is None or frees > latest else latest
    return latest


def prune(ledger: Ledger, caps: tuple[Cap, ...], now: datetime) -> Ledger:
    """The ledger without sends too old to count against any cap."""
    if not caps:
        return ()
    horizon = now - max(cap.per for cap in caps)
    return tuple(entry for entry in ledger if entry[0] > horizon)


@dataclass(frozen=True, slots=True)
class Customer:
    """What the engine may read of a customer."""

    traits: Mapping[str, Any]
    scores: Mapping[str, float] = field(default_factory=dict)
    facts: Mapping[str, Any] = field(default_factory=dict)
    """What customer intelligence adds to conditions: ``profile``, ``lead``, ``stage``,
    ``rfm``, ``predictions``, ``segments`` (``intelligence.FactsView``)."""


# ── Effects ───────────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class Send:
    message_id: str
    step: str
    channel: Channel
    template: str
    category: Literal["marketing", "transactional"]


@dataclass(frozen=True, slots=True)
class Record:
    """A line of the run's timeline: entered, waited, branched, sent, skipped, held, updated,
    exited or goal."""

    kind: str
    step: str | None
    at: datetime
    reason: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SetTraitEffect:
    name: str
    value: Any


@dataclass(frozen=True, slots=True)
class AddScoreEffect:
    name: str
    by: float


@dataclass(frozen=True, slots=True)
class SetScoreEffect:
    name: str
    value: float


Effect = Send | Record | SetTraitEffect | AddScoreEffect | SetScoreEffect


@dataclass(frozen=True, slots=True)
class Outcome:
    instance: Instance
    effects: list[Effect]
    ledger: Ledger


# ── Ids and stable buckets ────────────────────────────────────────────────────────────────────


def run_id_for(journey: Journey, *, workspace_id: str, customer_id: str, event_id: str) -> str:
    raw = f"{workspace_id}\x1f{customer_id}\x1f{journey.id}\x1f{journey.version}\x1f{event_id}"
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def bucket(*parts: str) -> float:
    """A number in [0, 100) fixed by ``parts``: the same customer always lands in the same
    split branch or holdout group, on every replica and every replay."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


def in_holdout(journey: Journey, workspace_id: str, customer_id: str) -> bool:
    # Keyed on the journey id, not the version: a customer stays in (or out of) the holdout
    # group when the journey is revised. ":holdout" cannot be a step name, so a split step named
    # "holdout" (bucketed on its name) does not fall on the same partition.
    return bucket(workspace_id, customer_id, journey.id, ":holdout") < journey.holdout_percent


# ── Matching events ───────────────────────────────────────────────────────────────────────────


def context(
    customer: Customer, event: Mapping[str, Any], now: datetime | None = None
) -> Mapping[str, Any]:
    """What conditions read: ``customer.<trait>``, ``scores.<name>``, ``event.type``,
    ``event.properties.<name>``, ``now`` for the time-relative comparisons (``older_than``,
    ``within``), and the customer's facts: ``profile.``, ``lead.``, ``stage``, ``rfm.``,
    ``predictions.``, ``segments``."""
    return _layered_context(customer.facts, customer.traits, customer.scores, event, now)


def _layered_context(
    facts: Mapping[str, Any],
    traits: Mapping[str, Any],
    scores: Mapping[str, float],
    event: Mapping[str, Any],
    now: datetime | None,
) -> Mapping[str, Any]:
    """The condition context without copying the facts (they compute lazily)."""
    return Layered({"customer": traits, "scores": scores, "event": event, "now": now}, facts)


def event_matches(
    event_type: str,
    where: Condition | None,
    match: str | None,
    event: Mapping[str, Any],
    customer: Customer,
    trigger: Mapping[str, Any],
    now: datetime | None = None,
) -> bool:
    if event.get("type") != event_type:
        return False
    if match is not None:
        wanted = trigger.get("properties", {}).get(match)
        if wanted is None or event.get("properties", {}).get(match) != wanted:
            return False
    return where is None or evaluate(where, context(customer, event, now))


def _exit_matches(
    conditions: list[EventCondition],
    event: Mapping[str, Any],
    customer: Customer,
    trigger: Mapping[str, Any],
    now: datetime,
) -> EventCondition | None:
    for condition in conditions:
        if event_matches(
            condition.event, condition.where, condition.match, event, customer, trigger, now
        ):
            return condition
    return None


def _goal_matches(goal: Goal, event: Mapping[str, Any], customer: Customer, now: datetime) -> bool:
    return event_matches(goal.event, goal.where, None, event, customer, {}, now)


# ── Transitions ───────────────────────────────────────────────────────────────────────────────


def enter(
    journey: Journey,
    *,
    workspace_id: str,
    customer_id: str,
    run_id: str,
    trigger: Mapping[str, Any],
    key: str | None,
    customer: Customer,
    policy: Policy,
    ledger: Ledger,
    now: datetime,
) -> Outcome:
    """Start a run. A customer in the journey's holdout group is entered (and counted) but
    runs no step: the holdout is the comparison group for the journey's lift."""
    holdout = in_holdout(journey, workspace_id, customer_id)
    instance = Instance(
        workspace_id=workspace_id,
        customer_id=customer_id,
        journey_id=journey.id,
        version=journey.version,
        run_id=run_id,
        step=journey.start,
        status="holdout" if holdout else "active",
        entered_at=now,
        updated_at=now,
        key=key,
        trigger=dict(trigger),
        holdout=holdout,
        goal_until=now + journey.goal.within if journey.goal is not None else None,
    )
    effects: list[Effect] = [
        Record("entered", journey.start, now, detail={"trigger": trigger.get("type")})
    ]
    if holdout:
        effects.append(Record("exited", None, now, reason="holdout"))
        return Outcome(replace(instance, step=None, exit_reason="holdout"), effects, ledger)
    return _run(instance, journey, customer, policy, ledger, now, effects)


def on_event(
    instance: Instance,
    journey: Journey,
    event: Mapping[str, Any],
    *,
    customer: Customer,
    policy: Policy,
    ledger: Ledger,
    now: datetime,
) -> Outcome | None:
    """Apply an event of the customer to a tracked run; None when it does not concern it.

    ``event`` is ``{"type", "id", "properties"}``. The goal is counted first (also for a run
    that has ended but whose goal window is open, and for an event that also ends the run);
    then exit_when, which ends the run at once, cancelling whatever it was waiting for; then a
    wait_for.
    """
    effects: list[Effect] = []
    current = instance
    if (
        journey.goal is not None
        and current.goal_at is None
        and current.goal_until is not None
        and now <= current.goal_until
        and _goal_matches(journey.goal, event, customer, now)
    ):
        current = replace(current, goal_at=now, updated_at=now)
        effects.append(Record("goal", current.step, now, detail={"event": event.get("type")}))
    if current.active:
        exit_condition = _exit_matches(journey.exit_when, event, customer, current.trigger, now)
        if exit_condition is not None:
            effects.append(
                Record(
                    "exited",
                    current.step,
                    now,
                    reason="exit_when",
                    detail={"event": exit_condition.event},
                )
            )
            current = replace(
                current,
                status="exited",
                wake_at=None,
                waiting=None,
                exit_reason="exit_when",
                updated_at=now,
            )
            return Outcome(current, effects, ledger)
        step = journey.steps.get(current.step) if current.step is not None else None
        if current.waiting == "wait_for" and isinstance(step, WaitForStep):
            spec: WaitForSpec = step.wait_for
            if event_matches(
                spec.event, spec.where, spec.match, event, customer, current.trigger, now
            ):
                effects.append(
                    Record(
                        "waited", current.step, now, reason="event", detail={"event": spec.event}
                    )
                )
                # An event matched on the run's key (the same cart, updated) is the run's
                # latest word on it: later messages show the cart as it is now.
                latest = dict(event) if spec.match is not None else current.trigger
                current = replace(
                    current,
                    step=step.on_event,
                    wake_at=None,
                    waiting=None,
                    updated_at=now,
                    trigger=latest,
                )
                return _run(current, journey, customer, policy, ledger, now, effects)
    if not effects:
        return None
    return Outcome(current, effects, ledger)


def on_timer(
    instance: Instance,
    journey: Journey,
    *,
    customer: Customer,
    policy: Policy,
    ledger: Ledger,
    now: datetime,
) -> Outcome | None:
    """The run's timer fired; None when it is not due (or no longer set)."""
    if not instance.active or instance.wake_at is None or instance.wake_at > now:
        return None
    step = journey.steps.get(instance.step) if instance.step is not None else None
    effects: list[Effect] = []
    current = replace(instance, wake_at=None, waiting=None, updated_at=now)
    if instance.waiting == "wait" and isinstance(step, WaitStep):
        current = replace(current, step=step.next)
    elif instance.waiting == "wait_for" and isinstance(step, WaitForStep):
        effects.append(
            Record(
                "waited",
                instance.step,
                now,
                reason="timeout",
                detail={"event": step.wait_for.event},
            )
        )
        current = replace(current, step=step.on_timeout)
    # "held": run the same send step again; it sends now or is held again.
    return _run(current, journey, customer, policy, ledger, now, effects)


def stop(instance: Instance, *, reason: str, now: datetime) -> Outcome:
    """End a run from outside (its journey archived, the customer erased)."""
    effects: list[Effect] = [Record("exited", instance.step, now, reason=reason)]
    return Outcome(
        replace(
            instance,
            status="exited",
            wake_at=None,
            waiting=None,
            exit_reason=reason,
            updated_at=now,
        ),
        effects,
        (),
    )


def _run(
    instance: Instance,
    journey: Journey,
    customer: Customer,
    policy: Policy,
    ledger: Ledger,
    now: datetime,
    effects: list[Effect],
) -> Outcome:
    """Run steps from the instance's current one until it blocks or ends."""
    traits = dict(customer.traits)
    scores = dict(customer.scores)
    visits = dict(instance.visits)
    current = instance
    seen: set[str] = set()
    # A pass runs each step at most once (``seen``), so it blocks or ends within
    # len(steps) + 1 turns; the bound turns a bug into an error instead of a hang.
    for _ in range(4 * len(journey.steps) + 4):
        name = current.step
        if name is None:
            effects.append(Record("exited", None, now, reason="completed"))
            return Outcome(
                replace(
                    current,
                    status="completed",
                    exit_reason="completed",
                    updated_at=now,
                    visits=visits,
                ),
                effects,
                ledger,
            )
        if name in seen:
            # Back at a step in the same instant: the loop's wait did not wait (a wait until a
            # date trait the customer lacks is skipped). Going round again would resend at once
            # and forever, so the run ends here.
            effects.append(Record("exited", name, now, reason="loop"))
            return Outcome(
                replace(
                    current, status="exited", exit_reason="loop", updated_at=now, visits=visits
                ),
                effects,
                ledger,
            )
        seen.add(name)
        step = journey.steps[name]
        if isinstance(step, ExitStep):
            effects.append(Record("exited", name, now, reason="exit_step"))
            return Outcome(
                replace(
                    current,
                    status="completed",
                    exit_reason="exit_step",
                    updated_at=now,
                    visits=visits,
                ),
                effects,
                ledger,
            )
        if isinstance(step, SendStep):
            spec = step.send
            if (
                spec.holdout_percent
                and bucket(current.workspace_id, current.customer_id, journey.id, name, "holdout")
                < spec.holdout_percent
            ):
                effects.append(Record("skipped", name, now, reason="step_holdout"))
                current = replace(current, step=step.next)
                continue
            refusal = _refusal(spec.channel, spec.category, traits)
            if refusal is not None:
                effects.append(Record("skipped", name, now, reason=refusal))
                current = replace(current, step=step.next)
                continue
            if journey.send_window is not None and spec.category == "marketing":
                window = journey.send_window
                tz = resolve_zone(window.timezone, traits.get("timezone"), policy.default_timezone)
                opens = window_opens(now, window.from_, window.to, tz)
                if opens is not None:
                    effects.append(
                        Record("held", name, now, reason="send_window", detail={"until": opens})
                    )
                    return _block(current, "held", opens, now, effects, ledger, visits)
            if spec.category == "marketing":
                allowed = next_allowed(ledger, policy.caps, spec.channel, now)
                if allowed is not None:
                    if journey.frequency_cap == "skip":
                        effects.append(Record("skipped", name, now, reason="frequency_cap"))
                        current = replace(current, step=step.next)
                        continue
                    effects.append(
                        Record("held", name, now, reason="frequency_cap", detail={"until": allowed})
                    )
                    return _block(current, "held", allowed, now, effects, ledger, visits)
                ledger = (
                    (*prune(ledger, policy.caps, now), (now, spec.channel))
                    if policy.caps
                    else ledger
                )
            visits[name] = visits.get(name, 0) + 1
            step_id = name if visits[name] == 1 else f"{name}#{visits[name]}"
            message_id = message_id_for(
                workspace_id=current.workspace_id,
                journey_id=journey.id,
                version=journey.version,
                run_id=current.run_id,
                step=step_id,
            )
            effects.append(Send(message_id, name, spec.channel, spec.template, spec.category))
            effects.append(
                Record(
                    "sent",
                    name,
                    now,
                    detail={
                        "channel": spec.channel,
                        "template": spec.template,
                        "message_id": message_id,
                    },
                )
            )
            current = replace(current, step=step.next)
            continue
        if isinstance(step, WaitStep):
            until = _wait_until(step, traits, policy, now)
            if until is None:
                effects.append(Record("skipped", name, now, reason=_no_wait(step, traits)))
                current = replace(current, step=step.next)
                continue
            effects.append(Record("waited", name, now, detail={"until": until}))
            return _block(current, "wait", until, now, effects, ledger, visits)
        if isinstance(step, WaitForStep):
            until = now + step.wait_for.timeout
            effects.append(
                Record("waited", name, now, detail={"event": step.wait_for.event, "until": until})
            )
            return _block(current, "wait_for", until, now, effects, ledger, visits)
        if isinstance(step, BranchStep):
            holds = evaluate(
                step.branch, _layered_context(customer.facts, traits, scores, current.trigger, now)
            )
            effects.append(
                Record("branched", name, now, detail={"branch": "then" if holds else "else"})
            )
            current = replace(current, step=step.then if holds else step.else_)
            continue
        if isinstance(step, SplitStep):
            chosen = _split(
                step, bucket(current.workspace_id, current.customer_id, journey.id, name)
            )
            effects.append(Record("branched", name, now, detail={"branch": chosen}))
            current = replace(current, step=step.split[chosen].next)
            continue
        if isinstance(step, UpdateStep):
            update = step.update
            if isinstance(update, SetTrait):
                traits[update.set_trait] = update.value
                effects.append(SetTraitEffect(update.set_trait, update.value))
                detail: dict[str, Any] = {"trait": update.set_trait}
            elif isinstance(update, SetScore):
                scores[update.set_score] = update.value
                effects.append(SetScoreEffect(update.set_score, update.value))
                detail = {"score": update.set_score, "value": update.value}
            else:
                assert isinstance(update, AddScore)
                scores[update.add_score] = scores.get(update.add_score, 0) + update.by
                effects.append(AddScoreEffect(update.add_score, update.by))
                detail = {"score": update.add_score, "by": update.by}
            effects.append(Record("updated", name, now, detail=detail))
            current = replace(current, step=step.next)
            continue
        raise AssertionError(f"unknown step kind at {name!r}")  # pragma: no cover
    raise RuntimeError(f"journey {journey.id!r} ran too many steps without waiting")


def consent_trait(channel: str, category: str) -> str:
    """The trait holding the customer's latest consent for a channel and category."""
    return f"{channel}_{category}_consent"


def sunset_trait(channel: str) -> str:
    """The trait a sunset journey sets to stop marketing on a channel."""
    return f"{channel}_sunset"


def _refusal(channel: str, category: str, traits: Mapping[str, Any]) -> str | None:
    """Why a send must not go (the customer withdrew consent, or was sunset); None when it may.
    Dispatch checks consent and suppression again at the last moment; refusing here keeps the
    run's timeline honest and spares the message request."""
    if category != "marketing":
        return None
    if traits.get(consent_trait(channel, category)) == "revoked":
        return "no_consent"
    if traits.get(sunset_trait(channel)) is True:
        return "sunset"
    return None


def _block(
    instance: Instance,
    waiting: Waiting,
    until: datetime,
    now: datetime,
    effects: list[Effect],
    ledger: Ledger,
    visits: dict[str, int],
) -> Outcome:
    return Outcome(
        replace(instance, waiting=waiting, wake_at=until, updated_at=now, visits=visits),
        effects,
        ledger,
    )


def _wait_until(
    step: WaitStep, traits: Mapping[str, Any], policy: Policy, now: datetime
) -> datetime | None:
    spec = step.wait
    if isinstance(spec, timedelta):
        return now + spec
    if isinstance(spec, UntilTime):
        tz = resolve_zone(spec.timezone, traits.get("timezone"), policy.default_timezone)
        return next_time_of_day(now, spec.until, tz, spec.weekdays)
    assert isinstance(spec, UntilDate)
    tz = resolve_zone(spec.timezone, traits.get("timezone"), policy.default_timezone)
    return next_date_trait(
        now, traits.get(spec.until_trait), offset=spec.offset, at=spec.at, tz=tz, yearly=spec.yearly
    )


def _no_wait(step: WaitStep, traits: Mapping[str, Any]) -> str:
    """Why a dated wait has nothing to wait for: its one-off date (``yearly`` false) has passed,
    or the trait holds no date (a one-off date needs its year)."""
    assert isinstance(step.wait, UntilDate)
    parsed = parse_date_trait(traits.get(step.wait.until_trait))
    dated = parsed is not None and (step.wait.yearly or parsed[0] is not None)
    return "date_passed" if dated else "no_date"


def _split(step: SplitStep, point: float) -> str:
    total = 0
    for name, branch in step.split.items():
        total += branch.percent
        if point < total:
            return name
    return next(reversed(step.split))  # pragma: no cover - percentages sum to 100
