"""Lead score: declarative, decaying, explainable points per customer.

A workspace declares ``ScoreRules`` (JSON, validated like journeys): each rule gives points,
possibly negative, to events of one type that match an optional condition, at most ``cap.points``
per ``cap.per``. Every point halves in value each ``half_life`` after the event that earned it,
so the score says how engaged a customer is *now*: ``score(t) = Σ points · 2^(-(t - t_event) /
half_life)``.

The state keeps, per rule, one number referenced to one instant (the points of all its events,
decayed to that instant), the number of events that earned them, and the current cap window:
O(1) per event and per rule, however long the history. Decay is computed on read, never stored
step by step, so reading or updating the state at any instants in between never changes a score.

Because every rule decays with the same half-life, the whole score is one exponential
``S(t) = S(now) · 2^(-(t - now) / half_life)``: the instant it crosses a band threshold with no new
event is solved in closed form (``next_band_change_at``), for the journey service's timer.

A cap window opens with the first event that earns the rule points and lasts ``per``; within
it the rule earns at most ``cap.points`` (by magnitude; the event that reaches the cap earns the
rest of it). An event that arrives late, dated before the current window, counts against it.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from importlib import resources
from typing import Any, NamedTuple, Protocol, TypedDict, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from services.journey.domain.conditions import (
    All,
    AnyOf,
    Comparison,
    Condition,
    Not,
    Predicate,
    compile_condition,
    utc_instant,
    utc_text,
)
from services.journey.domain.definitions import EventType, Name
from services.journey.domain.durations import Duration
from services.journey.domain.validation import Problem, not_a_bool, schema_problems

EVENT_TYPE = "lead_band_changed"
_VERSION = 1


# ── Rules ─────────────────────────────────────────────────────────────────────────────────────


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Cap(_Strict):
    points: float = Field(gt=0, allow_inf_nan=False, description="Most points per window.")
    per: Duration = Field(description="Length of a window, e.g. P1D.")

    _points_not_a_bool = field_validator("points", mode="before")(not_a_bool)


class Rule(_Strict):
    id: Name
    event: EventType = Field(description="The event type that earns the points.")
    points: float = Field(
        allow_inf_nan=False, ge=-10_000, le=10_000, description="Negative to take points off."
    )
    where: Condition | None = Field(
        None, description="Filter on the event: fields start with 'event.' (event.properties.…)."
    )
    cap: Cap | None = None
    description: str | None = Field(None, max_length=500)

    @cached_property
    def matches(self) -> Predicate | None:
        """``where`` compiled (``conditions.compile_condition``): every event is tried."""
        return None if self.where is None else compile_condition(self.where)

    _points_not_a_bool = field_validator("points", mode="before")(not_a_bool)

    @field_validator("points")
    @classmethod
    def _not_zero(cls, value: float) -> float:
        if value == 0:
            raise ValueError("a rule gives points: 0 would do nothing")
        return value

    @field_validator("where")
    @classmethod
    def _on_event(cls, value: Condition | None) -> Condition | None:
        for name in _fields(value):
            if name != "event" and not name.startswith("event."):
                raise ValueError(
                    f"field {name!r}: a score rule reads only the event (event.type, "
                    "event.properties.…)"
                )
        return value

    @field_validator("cap")
    @classmethod
    def _cap_fits(cls, value: Cap | None, info: ValidationInfo) -> Cap | None:
        points = info.data.get("points")
        if value is not None and isinstance(points, float) and value.points < abs(points):
            raise ValueError(
                f"cap.points ({value.points:g}) is less than the rule's {abs(points):g} points: "
                "no event could earn them in full"
            )
        return value


def _fields(condition: Condition | None) -> list[str]:
    if condition is None:
        return []
    if isinstance(condition, All):
        return [f for c in condition.all for f in _fields(c)]
    if isinstance(condition, AnyOf):
        return [f for c in condition.any for f in _fields(c)]
    if isinstance(condition, Not):
        return _fields(condition.not_)
    assert isinstance(condition, Comparison)
    return [condition.field]


class Band(_Strict):
    name: Name
    min: float | None = Field(
        None,
        allow_inf_nan=False,
        description="Lowest score in the band; left out for the first band (no lower bound).",
    )

    _min_not_a_bool = field_validator("min", mode="before")(not_a_bool)


DEFAULT_BANDS = (Band(name="cold"), Band(name="warm", min=20), Band(name="hot", min=60))


class ScoreRules(_Strict):
    """A workspace's lead score. The defaults: points halve every 30 days (interest in a shop
    fades over weeks, and a month-old visit should weigh half of today's); bands cold < 20 ≤ warm
    < 60 ≤ hot, which with the default rules puts a browsing customer who added to a cart and
    clicked an email in warm, and one who went through checkout and ordered in hot for about a
    week."""

    half_life: Duration = Field(timedelta(days=30), description="Points halve in value each.")
    bands: list[Band] = Field(
        default_factory=lambda: list(DEFAULT_BANDS),
        min_length=1,
        max_length=20,
        description="Lowest first; each band from its 'min' up to the next band's.",
    )
    rules: list[Rule] = Field(min_length=1, max_length=200)

    # Computed once per rules document (cached properties) rather than for every event.

    @cached_property
    def ids(self) -> frozenset[str]:
        """The ids of the rules declared."""
        return frozenset(rule.id for rule in self.rules)

    @cached_property
    def floors(self) -> tuple[float, ...]:
        """The ``min`` of each band above the lowest, lowest first: strictly increasing (the
        bands are validated so), for ``_floor_index`` to bisect."""
        return tuple(cast(float, b.min) for b in self.bands[1:])

    @cached_property
    def by_event(self) -> dict[str, tuple[Rule, ...]]:
        """Event type → the rules on it, in rule order."""
        found: dict[str, list[Rule]] = {}
        for rule in self.rules:
            found.setdefault(rule.event, []).append(rule)
        return {kind: tuple(rules) for kind, rules in found.items()}

    @field_validator("bands")
    @classmethod
    def _bands_ordered(cls, bands: list[Band]) -> list[Band]:
        if bands[0].min is not None:
            raise ValueError("bands[0] is the lowest band and takes no 'min'")
        seen: dict[str, int] = {}
        for index, band in enumerate(bands):
            if band.name in seen:
                raise ValueError(
                    f"bands[{index}]: name {band.name!r} is already bands[{seen[band.name]}]"
                )
            seen[band.name] = index
            if index == 0:
                continue
            if band.min is None:
                raise ValueError(f"bands[{index}] ({band.name}) needs a 'min'")
            below = bands[index - 1].min
            if below is not None and band.min <= below:
                raise ValueError(
                    f"bands[{index}].min ({band.min:g}) must be greater than bands[{index - 1}]"
                    f".min ({below:g}): bands go from the lowest score up"
                )
        return bands

    @field_validator("rules", mode="before")
    @classmethod
    def _some_rules(cls, rules: Any) -> Any:
        if isinstance(rules, list) and not rules:
            raise ValueError("no rules: a score needs at least one")
        return rules

    @field_validator("rules")
    @classmethod
    def _unique_ids(cls, rules: list[Rule]) -> list[Rule]:
        seen: dict[str, int] = {}
        for index, rule in enumerate(rules):
            if rule.id in seen:
                raise ValueError(
                    f"rules[{index}]: id {rule.id!r} is already rules[{seen[rule.id]}]"
                )
            seen[rule.id] = index
        return rules


def validate_score_rules(document: Mapping[str, Any]) -> list[Problem]:
    """Every problem of a score rules document, with JSON paths; empty when it is valid."""
    try:
        ScoreRules.model_validate(document)
    except ValidationError as exc:
        return schema_problems(exc)
    return []


def default_score_rules() -> ScoreRules:
    """The rules a new workspace starts with (``default_score_rules.json``)."""
    text = resources.files(__package__).joinpath("default_score_rules.json").read_text("utf-8")
    return ScoreRules.model_validate_json(text)


# ── State ─────────────────────────────────────────────────────────────────────────────────────


class ScoreEvent(Protocol):
    """What scoring reads of an event (``EventEnvelope`` has it)."""

    @property
    def type(self) -> str: ...
    @property
    def properties(self) -> dict[str, Any]: ...
    @property
    def occurred_at(self) -> datetime: ...


class RuleState(NamedTuple):
    """One rule's part of a lead (immutable: a tuple, made for every event that earns points,
    where a frozen dataclass costs several times as much to build)."""

    points: float
    """The rule's points, each decayed from its event to ``at``."""
    at: datetime
    """The reference instant: the latest event that earned the rule points."""
    events: int
    """Events that earned the rule points (capped ones that earned nothing are not counted)."""
    window_start: datetime | None = None
    window_points: float = 0.0
    """Points (by magnitude, before decay) earned in the cap window that opened then."""


@dataclass(frozen=True, slots=True)
class ScoreState:
    rules: Mapping[str, RuleState] = field(default_factory=dict)
    """Rule id → its state; only rules that have earned points."""

    def to_json(self) -> dict[str, Any]:
        """``{"v": 1, "rules": {id: [points, at, events, window_start|null, window_points]}}``:
        floats as JSON numbers (exact round trip), instants RFC 3339."""
        return {
            "v": _VERSION,
            "rules": {
                rule_id: [
                    s.points,
                    _instant(s.at),
                    s.events,
                    None if s.window_start is None else _instant(s.window_start),
                    s.window_points,
                ]
                for rule_id, s in self.rules.items()
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ScoreState:
        if data.get("v", _VERSION) != _VERSION:
            raise ValueError(f"unknown score state version {data.get('v')!r}")
        return cls(
            rules={
                rule_id: RuleState(
                    points=float(points),
                    at=utc_instant(at),
                    events=int(events),
                    window_start=None if start is None else utc_instant(start),
                    window_points=float(window_points),
                )
                for rule_id, (points, at, events, start, window_points) in data.get(
                    "rules", {}
                ).items()
            }
        )


class Contribution(NamedTuple):
    """What one rule made of one event (a tuple, made for every matching event)."""

    rule: str
    points: float
    """Earned, before decay; less than the rule's points (possibly 0) when capped."""
    at: datetime
    capped: bool = False


def _decay(elapsed: timedelta, half_life: timedelta) -> float:
    return math.pow(0.5, elapsed / half_life)


def apply(
    state: ScoreState, rules: ScoreRules, event: ScoreEvent, now: datetime
) -> tuple[ScoreState, list[Contribution]]:
    """The state after ``event``, and what each matching rule made of it (in rule order).

    Points date from when the event happened, so a backfilled event from long ago adds little;
    an event dated after ``now`` (clock skew) counts as of ``now``. State of rules no longer in
    ``rules`` is dropped."""
    on_event = rules.by_event.get(event.type, ())
    ids, before = rules.ids, state.rules
    known = ids.issuperset(before)
    if not on_event and known:
        return state, []  # nothing to earn and nothing to drop: the state as it is
    at = min(event.occurred_at, now)
    context: dict[str, Any] | None = None  # made for the first rule with a ``where``
    if known:
        current = dict(before)
    else:
        current = {rule_id: s for rule_id, s in before.items() if rule_id in ids}
    applied: list[Contribution] = []
    for rule in on_event:
        where = rule.matches
        if where is not None:
            if context is None:
                context = {"event": {"type": event.type, "properties": event.properties}}
            if not where(context):
                continue
        prior = current.get(rule.id)
        earned, capped = rule.points, False
        window_start = None if prior is None else prior.window_start
        window_points = 0.0 if prior is None else prior.window_points
        if rule.cap is not None:
            if window_start is None or at >= window_start + rule.cap.per:
                window_start, window_points = at, 0.0
            room = max(rule.cap.points - window_points, 0.0)
            magnitude = min(abs(rule.points), room)
            capped = magnitude < abs(rule.points)
            earned = math.copysign(magnitude, rule.points)
            window_points += magnitude
        applied.append(Contribution(rule.id, earned, at, capped))
        if earned == 0:
            continue
        if prior is None:
            points, reference, events = earned, at, 1
        elif at >= prior.at:
            points = prior.points * _decay(at - prior.at, rules.half_life) + earned
            reference, events = at, prior.events + 1
        else:
            points = prior.points + earned * _decay(prior.at - at, rules.half_life)
            reference, events = prior.at, prior.events + 1
        current[rule.id] = RuleState(points, reference, events, window_start, window_points)
    return ScoreState(current), applied


def rule_points(state: ScoreState, rules: ScoreRules, now: datetime) -> dict[str, float]:
    """Each rule's points at ``now`` (rules no longer declared count nothing)."""
    ids = rules.ids
    return {
        rule_id: s.points * _decay(now - s.at, rules.half_life)
        for rule_id, s in state.rules.items()
        if rule_id in ids
    }


def score(state: ScoreState, rules: ScoreRules, now: datetime) -> float:
    if not state.rules:
        return 0.0  # what the sum of no points is, without building it
    # ``rule_points`` summed without building its dict (fsum is exact: the order is free).
    ids, half_life, pow_ = rules.ids, rules.half_life, math.pow
    return math.fsum(
        s.points * pow_(0.5, (now - s.at) / half_life)
        for rule_id, s in state.rules.items()
        if rule_id in ids
    )


def band(value: float, rules: ScoreRules) -> str:
    """The band a score falls in: the highest whose ``min`` it reaches."""
    return rules.bands[_floor_index(value, rules.floors)].name


def _band_index(value: float, bands: Sequence[Band]) -> int:
    index = 0
    for i, b in enumerate(bands[1:], start=1):
        if b.min is not None and value >= b.min:
            index = i
    return index


def _floor_index(value: float, floors: tuple[float, ...]) -> int:
    """``_band_index`` on ``ScoreRules.floors`` (read for every event): how many floors
    ``value`` reaches, found by bisection in C instead of a loop over the bands."""
    return bisect_right(floors, value)


class Explanation(TypedDict):
    rule: str
    points_now: float
    """The rule's share of the score at ``now``, to two decimals."""
    events: int
    last_event_at: str


def explain(state: ScoreState, rules: ScoreRules, now: datetime) -> list[Explanation]:
    """Which rules make up the score and how much, largest share first."""
    shares = rule_points(state, rules, now)
    lines = [
        Explanation(
            rule=rule_id,
            points_now=round(points, 2),
            events=state.rules[rule_id].events,
            last_event_at=_instant(state.rules[rule_id].at),
        )
        for rule_id, points in shares.items()
    ]
    lines.sort(key=lambda line: (-abs(shares[line["rule"]]), line["rule"]))
    return lines


def next_band_change_at(
    state: ScoreState, rules: ScoreRules, now: datetime, *, value: float | None = None
) -> datetime | None:
    """The first instant after ``now`` at which decay alone moves the score into another band;
    None when it never does (decay only brings a score closer to 0 and never across it).

    Solves ``S · 2^(-t / half_life) = threshold`` for t: ``t = half_life · log2(S / threshold)``,
    then steps to the first microsecond at which the band really differs, so that a timer set for
    it always finds the change. ``value``: the score at ``now``, when the caller has it."""
    if value is None:
        value = score(state, rules, now)
    if value == 0:
        return None
    bands = rules.bands
    floors = rules.floors
    current = _floor_index(value, floors)
    if value > 0:
        target = bands[current].min  # decays down to the band's floor
        if target is None or target <= 0:
            return None
    else:
        if current + 1 >= len(bands):
            return None
        target = bands[current + 1].min  # rises up to the next band's floor
        if target is None or target >= 0:
            return None
    seconds = rules.half_life.total_seconds() * math.log2(value / target)
    when = now + timedelta(microseconds=math.ceil(seconds * 1_000_000))
    step = timedelta(microseconds=1)
    for _ in range(64):  # floating-point rounding can leave the score a hair on the near side
        if _floor_index(score(state, rules, when), floors) != current:
            return when
        when += step
        step *= 2
    return when  # pragma: no cover - 2^64 µs is beyond any datetime


@dataclass(frozen=True, slots=True)
class BandChange:
    """A move between bands: the journey service emits it as ``lead_band_changed``."""

    from_: str
    to: str
    score: float
    at: datetime

    def properties(self) -> dict[str, Any]:
        return {"from": self.from_, "to": self.to, "score": round(self.score, 2)}


def band_change(
    previous: str | None,
    state: ScoreState,
    rules: ScoreRules,
    now: datetime,
    *,
    value: float | None = None,
) -> BandChange | None:
    """The change to announce at ``now`` given the band last announced (None: never announced,
    i.e. the band of a score of 0, where every customer starts), or None when it stays.
    ``value``: the score at ``now``, when the caller has it."""
    if value is None:
        value = score(state, rules, now)
    before = previous if previous is not None else band(0.0, rules)
    after = band(value, rules)
    if after == before:
        return None
    return BandChange(from_=before, to=after, score=value, at=now)


def _instant(value: datetime) -> str:
    return utc_text(value)


__all__ = [
    "EVENT_TYPE",
    "Band",
    "BandChange",
    "Cap",
    "Contribution",
    "Explanation",
    "Rule",
    "RuleState",
    "ScoreRules",
    "ScoreState",
    "apply",
    "band",
    "band_change",
    "default_score_rules",
    "explain",
    "next_band_change_at",
    "rule_points",
    "score",
    "validate_score_rules",
]
