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
from functools import cache, cached_property
from typing import Any, Protocol

from services.journey.domain import builtin_segments, conditions, lifecycle, scoring, segments
from services.journey.domain.lifecycle import LifecycleRules, Stage
from services.journey.domain.profile import Profile, ProfileView
from services.journey.domain.profile import observe as observe_profile
from services.journey.domain.scoring import ScoreRules, ScoreState
from services.journey.domain.segments import SegmentDefinition, SegmentState, Window

TIMELINE = 20
"""Recent events kept per customer for the customer API (type, id, when)."""

DERIVED_TYPES = frozenset(
    {scoring.EVENT_TYPE, lifecycle.EVENT_TYPE, "segment_entered", "segment_exited"}
)
"""The event types the journey service raises itself."""


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


@dataclass(frozen=True)
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

    @cached_property
    def score_comparisons(self) -> tuple[conditions.Comparison, ...]:
        """The segments' orderings on ``lead.score``: decay alone flips them (timer)."""
        return tuple(
            c
            for d in self.segments
            if d.rule is not None
            for c in conditions.comparisons(d.rule)
            if c.field == "lead.score" and c.op in _ORDERINGS
        )

    @cached_property
    def windows_on(self) -> dict[str, tuple[tuple[SegmentDefinition, Window], ...]]:
        """Event type → the segments' windows that count it (in segment order): an event of
        a type no window counts looks at no segment."""
        return segments.windows_by_event(self.segments)

    @cached_property
    def readers(self) -> dict[str, frozenset[str]]:
        """What a segment's membership test reads (``root.name``, and ``#<segment id>`` for its
        windows) → the ids of the segments that read it: looked up per event."""
        index: dict[str, set[str]] = {}
        for d in self.segments:
            for key in (f"#{d.id}", *d.reads):
                index.setdefault(key, set()).add(d.id)
        return {key: frozenset(ids) for key, ids in index.items()}

    def affected(self, touched: set[str]) -> set[str]:
        """The segments whose membership test reads something in ``touched`` (``root.name``
        keys, and ``#<segment id>`` for an event counted in the segment's windows)."""
        readers = self.readers
        found: set[str] = set()
        for key in touched:
            ids = readers.get(key)
            if ids is not None:
                found |= ids
        return found

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
    lines: list[list[str]] = field(default_factory=list)
    """The recent timeline as it is stored: ``[at, type, id]``, ``at`` RFC 3339 in UTC
    (``conditions.utc_text``), oldest first. Kept as text: an event appends one line, and a
    customer loaded and saved again needs none of the others read or written as instants
    (``timeline`` reads them)."""
    due: datetime | None = None
    segment_next: tuple[datetime, str] | None = None
    """The earliest instant at which time alone changes a segment, and which segment: kept so
    that deciding only some segments after an event still knows the others' next change."""
    revision: int = 0
    """The revision of the rules every segment was last decided under: a customer processed
    after the rules changed is decided in full."""
    touched: set[str] = field(default_factory=set)
    """What changed since segments were last decided (``root.name`` keys, ``#<segment>`` for
    a window count); not stored."""
    decided: bool = False
    """Segments were decided for this customer before (a stored customer): a refresh may then
    look only at the segments whose inputs were touched."""
    """When time alone next changes the band, the stage or a segment."""
    banded: tuple[datetime, ScoreState, Intelligence, float, datetime | None] | None = field(
        default=None, compare=False, repr=False
    )
    """What the last refresh found of the lead: ``(now, lead, rules, score at now, next band
    change)``. A refresh at the same ``now`` of the same (immutable) lead under the same rules
    finds the same, and the band it announced then is the band now; not stored."""

    @property
    def timeline(self) -> list[tuple[datetime, str, str]]:
        """The recent events ``(at, type, id)``, oldest first, at most ``TIMELINE``."""
        return [(_read(at), str(kind), str(i)) for at, kind, i in self.lines]

    @timeline.setter
    def timeline(self, value: Sequence[tuple[datetime, str, str]]) -> None:
        self.lines = [[_text(at), kind, event_id] for at, kind, event_id in value]

    def to_json(self) -> dict[str, Any]:
        """The JSON columns of the customer row."""
        return {
            "profile": self.profile.to_json(),
            "lead": {"state": self.lead.to_json(), "band": self.band},
            "segment_state": {
                **self.segments.to_json(),
                "next": None
                if self.segment_next is None
                else [_text(self.segment_next[0]), self.segment_next[1]],
                "revision": self.revision,
            },
            "insights": self.insights or None,
            "timeline": list(self.lines),
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
        # Built in one go: parts left to their defaults only when nothing is stored.
        score_state: ScoreState | None = None
        band: Any = None
        if lead:
            score_state = ScoreState.from_json(lead.get("state") or {})
            band = lead.get("band")
        revision, segment_next = 0, None
        if segment_state:
            revision = int(segment_state.get("revision") or 0)
            upcoming = segment_state.get("next")
            if isinstance(upcoming, list) and len(upcoming) == 2:
                segment_next = (_read(upcoming[0]), str(upcoming[1]))
        return cls(
            profile=Profile.from_json(profile) if profile else Profile(),
            lead=ScoreState() if score_state is None else score_state,
            band=band if isinstance(band, str) else None,
            stage=stage if stage in lifecycle.STAGES else None,
            segments=SegmentState.from_json(segment_state) if segment_state else SegmentState(),
            insights=dict(insights) if insights else {},
            # As stored: read as instants only when asked (``timeline``), appended to as text.
            lines=list(timeline) if timeline else [],
            due=due,
            segment_next=segment_next,
            revision=revision,
            decided=segment_state is not None,
        )


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


@dataclass(frozen=True, slots=True)
class Observed:
    """What folding one event into the facts found."""

    order: OrderRecord | None = None
    """The order it recorded or cancelled, for the order log."""
    repeat: bool = False
    """An order or cancellation already recorded, reported again under a new event id (a
    storefront's confirmation page reloaded, a client's retry): news to nobody, journeys
    included."""


def observe(facts: Facts, event: IntelEvent, intel: Intelligence, now: datetime) -> Observed:
    """Fold one (new, not redelivered) event into the facts."""
    if not intel.enabled:
        return Observed()
    revenue, unconverted = facts.profile.revenue, facts.profile.unconverted_orders
    changed = observe_profile(facts.profile, event, currency=intel.currency, rates=intel.rates)
    # An order (or cancellation) reported again changes nothing in the profile: it earns no
    # points and is not counted again in segment windows either.
    duplicate = event.type in _ORDER_EVENTS and not changed
    touched = facts.touched
    if changed:
        touched.update(f"profile.{name}" for name in changed)
    if not duplicate:
        facts.lead, earned = scoring.apply(facts.lead, intel.score_rules, event, now)
        if any(c.points for c in earned):
            touched.add("lead.score")
        counting = intel.windows_on.get(event.type)
        if counting is not None:  # else no window counts it
            view = {"type": event.type, "id": event.event_id, "properties": event.properties}
            matched: set[str] = set()
            segments.count(facts.segments, counting, view, event.occurred_at, matched_ids=matched)
            touched.update(f"#{segment}" for segment in matched)
    _remember(facts, event)
    if duplicate:
        return Observed(repeat=True)
    record = _order_record(facts.profile, event, changed)
    if record is None and event.type == "order_completed" and changed:
        # Counted, but older than every order the profile remembers (a late or out-of-order
        # import): the profile did not keep it, the order log still needs it.
        order_id = _order_id(event.properties.get("order_id"))
        if order_id is not None:
            converted = facts.profile.unconverted_orders == unconverted
            value = float(facts.profile.revenue - revenue) if converted else None
            record = OrderRecord(order_id, event.occurred_at, value)
    return Observed(order=record)


_ORDER_EVENTS = frozenset({"order_completed", "order_cancelled"})


def _order_id(value: Any) -> str | None:
    """An order id as the profile reads it (text or a whole number, trimmed)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    return str(value).strip() or None


def _remember(facts: Facts, event: IntelEvent) -> None:
    at = event.occurred_at.astimezone(UTC)
    text = _text(at)
    line = [text, event.type, event.event_id]
    lines = facts.lines
    if not lines or _not_before(text, at, lines[-1][0]):
        lines.append(line)
    else:  # a late event goes where it belongs
        index = next(i for i, (text, _, _) in enumerate(lines) if _read(text) > at)
        lines.insert(index, line)
    del lines[:-TIMELINE]


def _not_before(text: str, at: datetime, other: str) -> bool:
    """Whether the instant ``at`` (``text``, its ``utc_text``) is not before the stored text
    ``other``. Two ``utc_text`` texts of one length (both with microseconds, or neither) order
    as their instants do; others are read."""
    if len(text) == len(other) and other.endswith("Z"):
        return text >= other
    return at >= _read(other)


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
    full: bool = False,
) -> list[Derived]:
    """Decide band, stage and segments at ``now``; the events announcing what changed (their
    ids derive from ``cause``, the event or timer that led here), and ``facts.due`` set.

    After an event only the segments whose inputs it touched are decided (``facts.touched``),
    and ``facts.due`` keeps what it was for the others. ``full`` decides every segment and
    computes ``due`` from scratch: for a timer, new insights, changed rules, a merge — and
    always for a customer never decided or whose timer is already due."""
    out: list[Derived] = []
    touched, facts.touched = facts.touched, set()
    if not intel.enabled:
        facts.due = None  # a timer set while it was on must not fire again and again
        facts.banded = None
        return out
    previous = facts.due
    full = (
        full
        or not facts.decided
        or facts.revision != intel.revision
        or (previous is not None and previous <= now)
    )
    banded = facts.banded
    settled = banded is not None and _settled(banded, facts.lead, intel, now)
    if settled and not full and _unmoved(touched, intel):
        # Decided at this very instant already (a derived event; another event of the batch)
        # and nothing since moved what decides: the same band, stage, segments and ``due``.
        return out
    facts.decided = True
    if full:
        facts.revision = intel.revision

    def derived(kind: str, properties: dict[str, Any], key: str) -> None:
        digest = hashlib.blake2b(
            f"{workspace_id}\x1f{customer_id}\x1f{cause}\x1f{kind}\x1f{key}".encode(),
            digest_size=12,
        ).hexdigest()
        out.append(Derived(f"{kind}:{digest}", kind, properties, now))

    rules = intel.score_rules
    lead = facts.lead
    if settled:
        # Decided at this instant already, and the lead has not changed since (no points
        # earned): the same score, no band change, the same next change.
        assert banded is not None
        value, band_next = banded[3], banded[4]
    else:
        # The lead does not change while deciding: its score at ``now`` is computed once.
        value = scoring.score(lead, rules, now)
        change = scoring.band_change(facts.band, lead, rules, now, value=value)
        if change is not None:
            facts.band = change.to
            touched.add("lead.band")
            derived(scoring.EVENT_TYPE, change.properties(), change.to)
        band_next = scoring.next_band_change_at(lead, rules, now, value=value)
        facts.banded = (now, lead, intel, value, band_next)
    stage = lifecycle.stage_change(facts.profile, facts.stage, now, intel.lifecycle)
    if stage is not None:
        facts.stage = stage.to
        touched.add("stage")
        derived(lifecycle.EVENT_TYPE, stage.properties(), stage.to)
    only = None if full else intel.affected(touched)
    # The segments' next change by time alone: from all of them after a full decision, or
    # when the segment that held the earliest one was decided again (its instant may have
    # moved later); otherwise the earlier of the one kept and those of the segments decided.
    kept = facts.segment_next
    again = only is None or (kept is not None and (kept[0] <= now or kept[1] in only))
    if again or only:  # else no segment is decided and none is looked at: no context either
        view = FactsView(
            facts,
            first_seen_at=first_seen_at,
            last_seen_at=last_seen_at,
            intel=intel,
            now=now,
            lazy=True,
        )
        # Read-only: conditions only look things up, and the view computes each root when read.
        ctx = conditions.Layered({"customer": traits, "now": now}, view)
        held: dict[str, bool] = {}
        if only is None or only:
            for transition in segments.evaluate(
                facts.segments, intel.segments, ctx, now, only=only, held=held
            ):
                derived(transition.event_type, transition.properties(), transition.segment)
        if again:
            facts.segment_next = segments.next_change(
                facts.segments, intel.segments, ctx, now, held=held
            )
        elif only:
            fresh = segments.next_change(
                facts.segments, intel.segments, ctx, now, only=only, held=held
            )
            if fresh is not None and (kept is None or fresh[0] < kept[0]):
                facts.segment_next = fresh
    candidates = [
        band_next,
        lifecycle.next_change_at(
            facts.profile, facts.stage or lifecycle.START, now, intel.lifecycle
        ),
        facts.segment_next[0] if facts.segment_next is not None else None,
    ]
    if intel.score_comparisons and (full or "lead.score" in touched):
        candidates.append(_score_change_at(facts.lead, rules, intel.score_comparisons, now))
    elif intel.score_comparisons and previous is not None and previous > now:
        candidates.append(previous)  # a lead.score crossing found before may still be ahead
    due = None
    for candidate in candidates:
        if candidate is not None and (due is None or candidate < due):
            due = candidate
    facts.due = due
    return out


def _settled(
    banded: tuple[datetime, ScoreState, Intelligence, float, datetime | None],
    lead: ScoreState,
    intel: Intelligence,
    now: datetime,
) -> bool:
    """Whether ``Facts.banded`` is of this lead, these rules and this instant."""
    return banded[1] is lead and banded[2] is intel and banded[0] == now


_SEEN_KEYS = frozenset({"profile.first_seen_at", "profile.last_seen_at"})
"""What ``touched`` may hold that no stage reads (first and last seen live outside the
profile), though a segment may."""


def _unmoved(touched: set[str], intel: Intelligence) -> bool:
    """Whether a decision with ``touched`` changed since the last one, at the same instant and
    with the same lead, decides nothing anew: no segment reads what was touched, and no
    profile aggregate (which stages read) moved."""
    if not touched:
        return True
    readers = intel.readers
    for key in touched:
        if key in readers or (key.startswith("profile.") and key not in _SEEN_KEYS):
            return False
    return True


_ORDERINGS = frozenset({"gt", "gte", "lt", "lte"})
_MICROSECOND = timedelta(microseconds=1)
_ROUNDS_TO_ZERO = 0.001
"""A score this close to 0 reads as 0.0 (``lead_view`` rounds to two decimals)."""


def _score_change_at(
    state: ScoreState,
    rules: ScoreRules,
    compared: Sequence[conditions.Comparison],
    now: datetime,
) -> datetime | None:
    """The first instant after ``now`` at which decay alone flips a segment's comparison of
    ``lead.score`` (e.g. ``gte 30``, which need not be a band's floor), or None.

    The score read is rounded as ``lead_view`` rounds it and decays monotonically towards 0, so
    each comparison flips at most once: found by bisection to the microsecond."""
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


@conditions.read_by_get
class FactsView(Mapping[str, Any]):
    """``context`` computed lazily, one root at a time: journey conditions that read only
    ``customer.`` and ``event.`` pay nothing for the profile view."""

    __slots__ = ("_args", "_cache", "_lazy")
    _ROOTS = ("profile", "lead", "stage", "rfm", "predictions", "segments")

    def __init__(
        self,
        facts: Facts,
        *,
        first_seen_at: datetime | None,
        last_seen_at: datetime | None,
        intel: Intelligence,
        now: datetime,
        lazy: bool = False,
    ) -> None:
        """``lazy``: ``profile`` is a ``ProfileView`` (each name computed when read) rather
        than a dict: for conditions only, while the facts do not change (``refresh``)."""
        self._args = (facts, first_seen_at, last_seen_at, intel, now)
        self._cache: dict[str, Any] = {}
        self._lazy = lazy

    def __getitem__(self, key: str) -> Any:
        if key in self._cache:
            return self._cache[key]
        facts, first, last, intel, now = self._args
        if key == "profile":
            value: Any = (
                ProfileView(facts.profile, now, first_seen_at=first, last_seen_at=last)
                if self._lazy
                else facts.profile.view(now, first_seen_at=first, last_seen_at=last)
            )
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

    def get(self, key: str, default: Any = None) -> Any:
        cache = self._cache
        if key in cache:  # a root read before: the common case, without a call
            return cache[key]
        return self[key] if key in self._ROOTS else default

    def __iter__(self) -> Iterator[str]:
        return iter(self._ROOTS)

    def __len__(self) -> int:
        return len(self._ROOTS)

    def __contains__(self, key: object) -> bool:
        return key in self._ROOTS


def _text(at: datetime) -> str:
    return conditions.utc_text(at)


def _read(text: str) -> datetime:
    return conditions.utc_instant(text)


__all__ = [
    "DERIVED_TYPES",
    "Derived",
    "Facts",
    "FactsView",
    "Intelligence",
    "Observed",
    "OrderRecord",
    "builtin",
    "context",
    "default",
    "lead_view",
    "observe",
    "refresh",
    "with_segments",
]
