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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import Any, Protocol

from services.journey.domain import builtin_segments, lifecycle, scoring, segments
from services.journey.domain.lifecycle import LifecycleRules, Stage
from services.journey.domain.profile import Profile
from services.journey.domain.profile import observe as observe_profile
from services.journey.domain.scoring import ScoreRules, ScoreState
from services.journey.domain.segments import SegmentDefinition, SegmentState

TIMELINE = 20
"""Recent events kept per customer for the customer API (type, id, when)."""

DERIVED_TYPES = frozenset(
    {scoring.EVENT_TYPE, lifecycle.EVENT_TYPE, "segment_entered", "segment_exited"}
)


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
    changed = observe_profile(facts.profile, event, currency=intel.currency, rates=intel.rates)
    duplicate = event.type == "order_completed" and not changed
    if not duplicate:
        facts.lead, _ = scoring.apply(facts.lead, intel.score_rules, event, now)
    view = {"type": event.type, "id": event.event_id, "properties": event.properties}
    segments.observe(facts.segments, intel.segments, view, event.occurred_at)
    _remember(facts, event)
    if duplicate:
        return None
    return _order_record(facts.profile, event, changed)


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
    order_id = event.properties.get("order_id")
    if order_id is None:
        return None
    entry = profile._entry(str(order_id))
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
    ]
    facts.due = min((c for c in candidates if c is not None), default=None)
    return out


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
    "DERIVED_TYPES",
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
