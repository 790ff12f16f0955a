"""Customer intelligence inside the journey engine: what each event and the passing of time do to
a customer's profile, lead score, lifecycle stage and segments, and the events that announce it.

``Facts`` is the part of ``CustomerState`` this module owns. Two pure functions change it:

- ``observe`` folds one event in (profile aggregates, score points, segment window counts, the
  recent timeline) and reports the order it recorded, if any;
- ``refresh`` decides, at ``now``, the lead band, the lifecycle stage and segment membership;
  every change becomes a ``Derived`` event (``lead_band_changed``, ``lifecycle_stage_changed``,
  ``segment_entered`` / ``segment_exited``), and ``Facts.due`` is set to the next instant at
  which time alone changes any of them (the customer's ``intel`` timer).

The engine feeds derived events to the customer's journeys like any other event (segment and
band triggers), and the service also publishes them to the events topic. ``context`` is what
conditions of journeys and segments read: ``customer``, ``profile``, ``lead``, ``stage``,
``rfm``, ``predictions``, ``segments`` and ``now``.

Work per event is O(1) in the customer's history and O(definitions) in the workspace's rules.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any, Protocol

from services.journey.domain import builtin_segments, conditions, lifecycle, scoring, segments
from services.journey.domain.lifecycle import LifecycleRules, Stage
from services.journey.domain.profile import Profile
from services.journey.domain.profile import observe as observe_profile
from services.journey.domain.scoring import ScoreRules, ScoreState
from services.journey.domain.segments import SegmentDefinition, SegmentState

TIMELINE = 20
"""Recent events kept per customer for the customer API (type, id, when)."""

class IntelEvent(Protocol):
    @property
    def event_id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def properties(self) -> dict[str, Any]: ...
    @property
    def occurred_at(self) -> datetime: ...


@cache
def _builtin() -> tuple[SegmentDefinition, ...]:
    return tuple(builtin_segments.load())


@dataclass(frozen=True, slots=True)
class Intelligence:
    """A workspace's rules for its customers (``CICLO`` defaults when it set none)."""

    currency: str = "USD"
    rates: Mapping[str, Decimal] = field(default_factory=dict)
    score_rules: ScoreRules = field(default_factory=scoring.default_score_rules)
    lifecycle: LifecycleRules = field(default_factory=LifecycleRules)
    segments: tuple[SegmentDefinition, ...] = field(default_factory=lambda: _builtin())
    enabled: bool = True
    revision: int = 0
    """The stored rules' revision (0: never changed): customers are re-decided when it moves."""
    """False keeps no profile, score, stage or segments at all (the benchmark's baseline)."""

    def segment(self, segment_id: str) -> SegmentDefinition | None:
        for definition in self.segments:
            if definition.id == segment_id:
                return definition
        return None


def builtin() -> tuple[SegmentDefinition, ...]:
    """The built-in segments (loaded once)."""
    return _builtin()


@cache
def default() -> Intelligence:
    return Intelligence()


def with_segments(
    base: tuple[SegmentDefinition, ...], own: list[SegmentDefinition]
) -> tuple[SegmentDefinition, ...]:
    """A workspace's segments: the built-in ones, each replaced by the workspace's segment of
    the same id, then the workspace's others in id order."""
    mine = {d.id: d for d in own}
    merged = [mine.pop(d.id, d) for d in base]
    merged.extend(mine[i] for i in sorted(mine))
    return tuple(merged)


@dataclass(slots=True)
class Facts:
    """What the journey service knows of a customer beyond traits and runs."""

    profile: Profile = field(default_factory=Profile)
    lead: ScoreState = field(default_factory=ScoreState)
    band: str | None = None
    """The band last announced (None: the band of a zero score, where everyone starts)."""
    stage: Stage | None = None
    """The stage last announced (None: subscriber, never announced)."""
    segments: SegmentState = field(default_factory=SegmentState)
    insights: dict[str, Any] = field(default_factory=dict)
    """``{"rfm": {...}, "predictions": {...}, "computed_at": ...}`` from the scheduled job."""
    timeline: list[tuple[datetime, str, str]] = field(default_factory=list)
    due: datetime | None = None
    """When time alone next changes the band, the stage or a segment."""

    def to_json(self) -> dict[str, Any]:
        """The JSON columns of the customer row."""
        return {
            "profile": self.profile.to_json(),
            "lead": {"state": self.lead.to_json(), "band": self.band},
            "segment_state": self.segments.to_json(),
            "insights": self.insights or None,
            "timeline": [[_text(at), kind, event_id] for at, kind, event_id in self.timeline],
        }

    @classmethod
    def from_row(
        cls,
        *,
        profile: Mapping[str, Any] | None,
        lead: Mapping[str, Any] | None,
        segment_state: Mapping[str, Any] | None,
        insights: Mapping[str, Any] | None,
        timeline: list[Any] | None,
        stage: str | None,
        due: datetime | None,
    ) -> Facts:
        facts = cls(stage=stage if stage in lifecycle.STAGES else None, due=due)
        if profile:
            facts.profile = Profile.from_json(profile)
        if lead:
            facts.lead = ScoreState.from_json(lead.get("state") or {})
            band = lead.get("band")
            facts.band = band if isinstance(band, str) else None
        if segment_state:
            facts.segments = SegmentState.from_json(segment_state)
        if insights:
            facts.insights = dict(insights)
        if timeline:
            facts.timeline = [(_read(at), str(kind), str(i)) for at, kind, i in timeline]
        return facts


@dataclass(frozen=True, slots=True)
class Derived:
    """An event the journey service itself raises about a customer (a band, stage or segment
    change). It reads like a storefront event to the engine (``EventLike``)."""

    event_id: str
    type: str
    properties: dict[str, Any]
    occurred_at: datetime
    traits: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OrderRecord:
    """An order as the models keep it (``journey_orders``); ``cancelled`` marks a cancellation
    of an order already recorded."""

    order_id: str
    placed_at: datetime
    value: float | None
    cancelled: bool = False


# ── Updating ──────────────────────────────────────────────────────────────────────────────────


def observe(
    facts: Facts, event: IntelEvent, intel: Intelligence, now: datetime
) -> OrderRecord | None:
    """Fold one (new, not redelivered) event into the facts; the order it recorded, if any."""
    if not intel.enabled:
        return None
    revenue, unconverted = facts.profile.revenue, facts.profile.unconverted_orders
    changed = observe_profile(facts.profile, event, currency=intel.currency, rates=intel.rates)
    # An order (or cancellation) reported again changes nothing in the profile: it earns no
    # points and is not counted again in segment windows either.
    duplicate = event.type in _ORDER_EVENTS and not changed
    if not duplicate:
        facts.lead, _ = scoring.apply(facts.lead, intel.score_rules, event, now)
        view = {"type": event.type, "id": event.event_id, "properties": event.properties}
        segments.observe(facts.segments, intel.segments, view, event.occurred_at)
    _remember(facts, event)
    if duplicate:
        return None
    record = _order_record(facts.profile, event, changed)
    if record is None and event.type == "order_completed" and changed:
        # Counted, but older than every order the profile remembers (a late or out-of-order
        # import): the profile did not keep it, the order log still needs it.
        order_id = _order_id(event.properties.get("order_id"))
        if order_id is not None:
            converted = facts.profile.unconverted_orders == unconverted
            value = float(facts.profile.revenue - revenue) if converted else None
            record = OrderRecord(order_id, event.occurred_at, value)
    return record


_ORDER_EVENTS = frozenset({"order_completed", "order_cancelled"})


def _order_id(value: Any) -> str | None:
    """An order id as the profile reads it (text or a whole number, trimmed)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    return str(value).strip() or None


def _remember(facts: Facts, event: IntelEvent) -> None:
    line = (event.occurred_at.astimezone(UTC), event.type, event.event_id)
    timeline = facts.timeline
    if not timeline or line[0] >= timeline[-1][0]:
        timeline.append(line)
    else:  # a late event goes where it belongs
        index = next(i for i, (at, _, _) in enumerate(timeline) if at > line[0])
        timeline.insert(index, line)
    del timeline[:-TIMELINE]


def _order_record(profile: Profile, event: IntelEvent, changed: set[str]) -> OrderRecord | None:
    if event.type not in ("order_completed", "order_cancelled") or not changed:
        return None
    order_id = _order_id(event.properties.get("order_id"))
    if order_id is None:
        return None
    entry = profile._entry(order_id)
    if entry is None:
        return None
    if event.type == "order_cancelled":
        return OrderRecord(entry.order_id, entry.at, None, cancelled=True)
    value = None if entry.rate is None else float(entry.total * entry.rate)
    return OrderRecord(entry.order_id, entry.at, value)


def refresh(
    facts: Facts,
    *,
    traits: Mapping[str, Any],
    first_seen_at: datetime | None,
    last_seen_at: datetime | None,
    intel: Intelligence,
    now: datetime,
    cause: str,
    workspace_id: str,
    customer_id: str,
) -> list[Derived]:
    """Decide band, stage and segments at ``now``; the events announcing what changed (their
    ids derive from ``cause``, the event or timer that led here), and ``facts.due`` set."""
    out: list[Derived] = []
    if not intel.enabled:
        facts.due = None  # a timer set while it was on must not fire again and again
        return out

    def derived(kind: str, properties: dict[str, Any], key: str) -> None:
        digest = hashlib.blake2b(
            f"{workspace_id}\x1f{customer_id}\x1f{cause}\x1f{kind}\x1f{key}".encode(),
            digest_size=12,
        ).hexdigest()
        out.append(Derived(f"{kind}:{digest}", kind, properties, now))

    rules = intel.score_rules
    change = scoring.band_change(facts.band, facts.lead, rules, now)
    if change is not None:
        facts.band = change.to
        derived(scoring.EVENT_TYPE, change.properties(), change.to)
    stage = lifecycle.stage_change(facts.profile, facts.stage, now, intel.lifecycle)
    if stage is not None:
        facts.stage = stage.to
        derived(lifecycle.EVENT_TYPE, stage.properties(), stage.to)
    ctx = context(
        facts,
        traits=traits,
        first_seen_at=first_seen_at,
        last_seen_at=last_seen_at,
        intel=intel,
        now=now,
    )
    for transition in segments.evaluate(facts.segments, intel.segments, ctx, now):
        derived(transition.event_type, transition.properties(), transition.segment)
    ctx["segments"] = sorted(facts.segments.members)
    candidates = [
        scoring.next_band_change_at(facts.lead, rules, now),
        lifecycle.next_change_at(
            facts.profile, facts.stage or lifecycle.START, now, intel.lifecycle
        ),
        segments.next_change_at(facts.segments, intel.segments, ctx, now),
        _score_change_at(facts.lead, rules, intel.segments, now),
    ]
    facts.due = min((c for c in candidates if c is not None), default=None)
    return out


_ORDERINGS = frozenset({"gt", "gte", "lt", "lte"})
_MICROSECOND = timedelta(microseconds=1)
_ROUNDS_TO_ZERO = 0.001
"""A score this close to 0 reads as 0.0 (``lead_view`` rounds to two decimals)."""


def _score_change_at(
    state: ScoreState, rules: ScoreRules, definitions: Sequence[SegmentDefinition], now: datetime
) -> datetime | None:
    """The first instant after ``now`` at which decay alone flips a segment's comparison of
    ``lead.score`` (e.g. ``gte 30``, which need not be a band's floor), or None.

    The score read is rounded as ``lead_view`` rounds it and decays monotonically towards 0, so
    each comparison flips at most once: found by bisection to the microsecond."""
    compared = [
        c
        for d in definitions
        if d.rule is not None
        for c in conditions.comparisons(d.rule)
        if c.field == "lead.score" and c.op in _ORDERINGS
    ]
    if not compared:
        return None
    value = scoring.score(state, rules, now)
    if value == 0:
        return None

    def holds(c: conditions.Comparison, at: datetime) -> bool:
        read = round(scoring.score(state, rules, at), 2)
        return conditions.evaluate(c, {"lead": {"score": read}})

    # By then the score reads 0.0 and stays there.
    halvings = max(math.log2(abs(value) / _ROUNDS_TO_ZERO), 0.0) + 1
    try:
        horizon = now + rules.half_life * halvings
    except OverflowError:
        return None
    earliest: datetime | None = None
    for c in compared:
        before = holds(c, now)
        low, high = now, horizon if earliest is None else min(horizon, earliest)
        if holds(c, high) == before:
            continue  # never flips (or not before a change already found)
        while high - low > _MICROSECOND:
            middle = low + (high - low) // 2
            if holds(c, middle) == before:
                low = middle
            else:
                high = middle
        earliest = high
    return earliest


# ── Reading ───────────────────────────────────────────────────────────────────────────────────


def lead_view(facts: Facts, intel: Intelligence, now: datetime) -> dict[str, Any]:
    value = scoring.score(facts.lead, intel.score_rules, now)
    return {"score": round(value, 2), "band": scoring.band(value, intel.score_rules)}


def context(
    facts: Facts,
    *,
    traits: Mapping[str, Any],
    first_seen_at: datetime | None,
    last_seen_at: datetime | None,
    intel: Intelligence,
    now: datetime,
) -> dict[str, Any]:
    """What segment conditions read (``segments.CONTEXT_ROOTS``), plus ``segments``."""
    return {
        "customer": traits,
        "profile": facts.profile.view(now, first_seen_at=first_seen_at, last_seen_at=last_seen_at),
        "lead": lead_view(facts, intel, now),
        "stage": facts.stage or lifecycle.START,
        "rfm": facts.insights.get("rfm") or {},
        "predictions": facts.insights.get("predictions") or {},
        "segments": sorted(facts.segments.members),
        "now": now,
    }


class FactsView(Mapping[str, Any]):
    """``context`` computed lazily, one root at a time: journey conditions that read only
    ``customer.`` and ``event.`` pay nothing for the profile view."""

    __slots__ = ("_args", "_cache")
    _ROOTS = ("profile", "lead", "stage", "rfm", "predictions", "segments")

    def __init__(
        self,
        facts: Facts,
        *,
        first_seen_at: datetime | None,
        last_seen_at: datetime | None,
        intel: Intelligence,
        now: datetime,
    ) -> None:
        self._args = (facts, first_seen_at, last_seen_at, intel, now)
        self._cache: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if key in self._cache:
            return self._cache[key]
        facts, first, last, intel, now = self._args
        if key == "profile":
            value: Any = facts.profile.view(now, first_seen_at=first, last_seen_at=last)
        elif key == "lead":
            value = lead_view(facts, intel, now)
        elif key == "stage":
            value = facts.stage or lifecycle.START
        elif key in ("rfm", "predictions"):
            value = facts.insights.get(key) or {}
        elif key == "segments":
            value = sorted(facts.segments.members)
        else:
            raise KeyError(key)
        self._cache[key] = value
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._ROOTS)

    def __len__(self) -> int:
        return len(self._ROOTS)

    def __contains__(self, key: object) -> bool:
        return key in self._ROOTS


def _text(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _read(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


__all__ = [
    "Derived",
    "Facts",
    "FactsView",
    "Intelligence",
    "OrderRecord",
    "builtin",
    "context",
    "default",
    "lead_view",
    "observe",
    "refresh",
    "with_segments",
]
