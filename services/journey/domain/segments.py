"""Segments: named conditions on a customer, kept up to date as events arrive and time passes.

A ``SegmentDefinition`` is a condition in the shared predicate language over what the journey
service knows of a customer — traits, order aggregates, lead score, lifecycle stage, RFM,
predictions — plus ``windows``: per-customer counters of recent events ("product_viewed in the
last 7 days"), read as ``counts.<window>``.

Per customer a ``SegmentState`` (stored as JSON) holds the segments they are in and, per window,
the times of the latest matching events. It is changed by three pure functions:

- ``observe`` records an event in the windows it matches;
- ``evaluate`` decides membership now and returns the entries and exits (``Transition``), which
  the caller turns into ``segment_entered`` / ``segment_exited`` events that start journeys;
- ``next_change_at`` says when membership next changes with no new event: a time-relative
  comparison passing its boundary ("no order in 90 days" on day 90) or an event falling out of a
  window. The caller sets a timer there and calls ``evaluate`` when it fires.

Work per event is a pass over the workspace's definitions; nothing reads other customers. State
stays small: a window keeps only as many event times as its largest comparison needs (a
"3 or more" needs at most four), and times that left the window are dropped.
"""

from __future__ import annotations

import math
from bisect import bisect_right, insort
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.journey.domain import conditions
from services.journey.domain.conditions import TIME_OPS, All, AnyOf, Comparison, Condition
from services.journey.domain.definitions import EventType, Name
from services.journey.domain.durations import Duration
from services.journey.domain.lifecycle import STAGES
from services.journey.domain.validation import Problem, json_path, schema_problems

MAX_COUNT = 100
"""The largest number a condition may compare a window's count with. A window keeps one event
time more than its largest comparison, so this bounds every window at 101 times."""

MAX_WINDOWS = 10

CONTEXT_ROOTS = ("customer", "profile", "lead", "stage", "rfm", "predictions", "counts")
"""What a segment condition may read; ``counts`` is filled from the segment's own windows."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Window(_Strict):
    """Events of one type (matching ``where``) in the last ``within``, counted per customer."""

    name: Name = Field(description="Read by the condition as counts.<name>.")
    event: EventType
    where: Condition | None = Field(
        None, description="Filter on the event: event.type, event.properties.<name>."
    )
    within: Duration = Field(description="How far back events count, e.g. P7D.")
    min_count: int | None = Field(
        None,
        ge=1,
        le=MAX_COUNT,
        description="Shorthand: the customer is in the segment only with at least this many "
        "such events (the same as adding counts.<name> gte min_count to the condition).",
    )

    @cached_property
    def matches(self) -> conditions.Predicate | None:
        """``where`` compiled (``conditions.compile_condition``): every event is tried."""
        return None if self.where is None else conditions.compile_condition(self.where)


class SegmentDefinition(_Strict):
    """A segment: who is in it (``condition`` and the windows' ``min_count``), and what to count."""

    id: Name
    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=2000)
    condition: Condition | None = Field(
        None, description="Who is in the segment; may be left out when a window has min_count."
    )
    windows: list[Window] = Field(default_factory=list, max_length=MAX_WINDOWS)

    # Computed once per definition and kept in the instance's __dict__ (cached_property):
    # these are read for every customer and event, where pydantic's attribute machinery for
    # private attributes cost more than the evaluation itself.

    @cached_property
    def rule(self) -> Condition | None:
        """The whole membership test: the condition and every window's min_count."""
        parts: list[Condition] = [self.condition] if self.condition is not None else []
        parts.extend(
            Comparison(field=f"counts.{w.name}", op="gte", value=w.min_count)
            for w in self.windows
            if w.min_count is not None
        )
        return None if not parts else parts[0] if len(parts) == 1 else All(all=parts)

    @cached_property
    def test(self) -> conditions.Predicate | None:
        """``rule`` compiled (``conditions.compile_condition``): decided for every event."""
        return None if self.rule is None else conditions.compile_condition(self.rule)

    @cached_property
    def boundaries(self) -> Callable[[Mapping[str, Any]], set[datetime]]:
        """``conditions.boundaries`` of ``rule``, compiled."""
        if self.rule is None:
            return lambda context: set()
        return conditions.boundary_finder(self.rule)

    @cached_property
    def moves_with_time(self) -> bool:
        """Whether time alone can change membership: a time-relative comparison or a window
        (whose events leave it). Without either, ``next_change`` need not look."""
        rule = self.rule
        if rule is None:
            return False
        return bool(self.windows) or any(c.op in TIME_OPS for c in conditions.comparisons(rule))

    @cached_property
    def fades_only(self) -> bool:
        """Whether membership reads only window counts, each compared as at least a number
        (``gte``, ``gt``; under ``all`` and ``any``): counts only fall as time passes, so a
        customer outside cannot come in by time alone (``next_change`` need not try)."""
        return self.rule is not None and bool(self.windows) and _rises_with_counts(self.rule)

    @cached_property
    def threshold(self) -> tuple[Window, int] | None:
        """``(window, n)`` when membership is exactly "at least n events in this window" (a
        lone ``counts.<w>`` ``gte``/``gt`` comparison, or a window's ``min_count`` alone): then
        membership is one count and its end is in closed form (``_holds``, ``_change``), with
        no context read. None for any other test."""
        rule = self.rule
        if not isinstance(rule, Comparison) or len(self.windows) != 1:
            return None
        window, value = self.windows[0], rule.value
        if rule.field != f"counts.{window.name}" or rule.op not in ("gte", "gt"):
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if not math.isfinite(value):
            return None
        least = math.ceil(value) if rule.op == "gte" else math.floor(value) + 1
        return (window, least) if least >= 1 else None

    @cached_property
    def window_names(self) -> frozenset[str]:
        """The names of the segment's windows: a kept window under any other name is stale."""
        return frozenset(w.name for w in self.windows)

    @cached_property
    def window_sizes(self) -> dict[str, int]:
        return _window_sizes(self.rule, [w.name for w in self.windows])

    @cached_property
    def reads(self) -> frozenset[str]:
        """What the membership test reads, as ``root.name`` (``profile.order_count``,
        ``customer.vip``, ``counts.views``) or a bare root (``stage``): membership can change
        on an event only when one of these did (or with time, which timers cover)."""
        rule = self.rule
        if rule is None:
            return frozenset()
        return frozenset(".".join(c.field.split(".")[:2]) for c in conditions.comparisons(rule))

    def keep(self, window: str) -> int:
        """How many event times the window keeps (see ``_window_sizes``)."""
        return self.window_sizes.get(window, 1)


def _rises_with_counts(condition: Condition) -> bool:
    """Whether ``condition`` reads only ``counts.<window>`` and can only turn true as a count
    grows (never as one falls)."""
    if isinstance(condition, All):
        return all(_rises_with_counts(c) for c in condition.all)
    if isinstance(condition, AnyOf):
        return all(_rises_with_counts(c) for c in condition.any)
    if isinstance(condition, Comparison):
        value = condition.value
        return (
            condition.field.startswith("counts.")
            and condition.op in ("gt", "gte")
            and isinstance(value, int | float)
            and not isinstance(value, bool)
        )
    return False  # a ``not`` turns a rise into a fall


def _window_sizes(rule: Condition | None, windows: list[str]) -> dict[str, int]:
    """Per window, one more than the largest number its count is compared with.

    Keeping the k latest times gives ``min(true count, k)``, which compares with any number
    below k exactly as the true count would: both are at least n, equal to n or above n together.
    And the k-th latest time is the first to leave the window (older ones left before it), so
    the reported count drops when the true count does.
    """
    keep = dict.fromkeys(windows, 1)
    for c in conditions.comparisons(rule) if rule is not None else ():
        name = c.field.removeprefix("counts.")
        if name == c.field or name not in keep:
            continue
        values = c.value if isinstance(c.value, list) else [c.value]
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isfinite(value):  # an infinite bound is refused by validation anyway
                keep[name] = max(keep[name], min(max(math.floor(value), 0), MAX_COUNT) + 1)
    return keep


# ── State ─────────────────────────────────────────────────────────────────────────────────────


@dataclass(slots=True)
class SegmentState:
    """One customer's segments: membership and the window counters."""

    members: dict[str, datetime] = field(default_factory=dict)
    """Segment id → when the customer entered it."""
    windows: dict[str, dict[str, list[datetime]]] = field(default_factory=dict)
    """Segment id → window name → times of the latest matching events, oldest first."""

    def to_json(self) -> dict[str, Any]:
        return {
            "members": {s: _text(at) for s, at in self.members.items()},
            "windows": {
                s: {w: [_text(at) for at in times] for w, times in by_name.items()}
                for s, by_name in self.windows.items()
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SegmentState:
        """The state ``to_json`` wrote; ValueError on anything else."""
        members = data.get("members", {})
        windows = data.get("windows", {})
        if not isinstance(members, Mapping) or not isinstance(windows, Mapping):
            raise ValueError("segment state: 'members' and 'windows' are objects")
        state = cls(members={str(s): _read(at) for s, at in members.items()})
        for segment, by_name in windows.items():
            if not isinstance(by_name, Mapping):
                raise ValueError(f"segment state: windows of {segment!r} are not an object")
            for name, times in by_name.items():
                if not isinstance(times, list):
                    raise ValueError(f"segment state: window {segment}.{name} is not a list")
                state.windows.setdefault(str(segment), {})[str(name)] = sorted(
                    _read(at) for at in times
                )
        return state


def _text(at: datetime) -> str:
    return conditions.utc_text(at)


def _read(value: Any) -> datetime:
    at = conditions.as_instant(value) if isinstance(value, str) else None
    if at is None:
        raise ValueError(f"segment state: {value!r} is not an RFC 3339 instant")
    return at.astimezone(UTC)


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("segment times must be timezone-aware")
    return at.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Transition:
    """A customer entered or left a segment: the caller publishes it as an event."""

    segment: str
    kind: Literal["entered", "exited"]
    at: datetime
    entered_at: datetime | None = None
    """For an exit, when the customer had entered."""

    @property
    def event_type(self) -> str:
        """``segment_entered`` or ``segment_exited``: what segment triggers of journeys hear."""
        return f"segment_{self.kind}"

    def properties(self) -> dict[str, Any]:
        props: dict[str, Any] = {"segment": self.segment}
        if self.entered_at is not None:
            props["entered_at"] = _text(self.entered_at)
        return props


# ── Evaluation ────────────────────────────────────────────────────────────────────────────────


def observe(
    state: SegmentState,
    definitions: Sequence[SegmentDefinition],
    event: Mapping[str, Any],
    at: datetime,
    *,
    matched_ids: set[str] | None = None,
) -> bool:
    """Count an event (``{"type", "id", "properties"}``) in every window it matches; whether it
    matched any. ``at`` is when it happened, so a late event counts at its own time.

    The caller drops a redelivered event before this (the journey service records processed
    event ids): counting the same event twice would count it twice.
    """
    counting = windows_by_event(definitions).get(str(event.get("type")), ())
    return count(state, counting, event, at, matched_ids=matched_ids)


def windows_by_event(
    definitions: Sequence[SegmentDefinition],
) -> dict[str, tuple[tuple[SegmentDefinition, Window], ...]]:
    """Event type → the windows that count it, each with its segment, in segment order (what
    ``count`` takes)."""
    found: dict[str, list[tuple[SegmentDefinition, Window]]] = {}
    for d in definitions:
        for w in d.windows:
            found.setdefault(w.event, []).append((d, w))
    return {kind: tuple(pairs) for kind, pairs in found.items()}


def count(
    state: SegmentState,
    windows: Sequence[tuple[SegmentDefinition, Window]],
    event: Mapping[str, Any],
    at: datetime,
    *,
    matched_ids: set[str] | None = None,
) -> bool:
    """``observe`` with the windows on the event's type already picked, each with its segment
    (``Intelligence.windows_on``, built once per workspace's rules)."""
    at = _utc(at)
    context: dict[str, Any] | None = None  # made for the first window with a ``where``
    matched = False
    for definition, window in windows:
        where = window.matches
        if where is not None:
            if context is None:
                context = {"event": event}
            if not where(context):
                continue
        times = state.windows.setdefault(definition.id, {}).setdefault(window.name, [])
        insort(times, at)
        del times[: -definition.keep(window.name)]
        matched = True
        if matched_ids is not None:
            matched_ids.add(definition.id)
    return matched


def counts(state: SegmentState, definition: SegmentDefinition, now: datetime) -> dict[str, int]:
    """The segment's window counts at ``now`` (capped at what its conditions need)."""
    kept = state.windows.get(definition.id, {})
    return {w.name: _count(kept.get(w.name, ()), now - w.within) for w in definition.windows}


def _count(times: Sequence[datetime], since: datetime) -> int:
    # An event exactly one window-length ago has just left: "within 7 days" is "less than".
    return len(times) - bisect_right(times, since)


def evaluate(
    state: SegmentState,
    definitions: Sequence[SegmentDefinition],
    context: Mapping[str, Any],
    now: datetime,
    *,
    only: Collection[str] | None = None,
    held: dict[str, bool] | None = None,
) -> list[Transition]:
    """Decide membership at ``now`` and record it in ``state``; the entries and exits.

    ``definitions`` are all the workspace's segments: the state of a segment not among them
    (deleted) is forgotten without an exit event, since the customer did not leave it. Event
    times that left their window are dropped here. ``context`` is what conditions read (see
    ``CONTEXT_ROOTS``); ``counts`` and ``now`` are filled in per segment. ``only`` limits the
    decision to those segment ids (the ones whose inputs changed); nothing is forgotten then.
    ``held`` receives each decided segment's test result, for ``next_change`` to reuse.
    """
    now = _utc(now)
    if only is None:
        _forget(state, {d.id for d in definitions})
    # A segment without windows reads nothing of its own: when ``context`` has this ``now``
    # already, its test reads ``context`` as it is, with no layer on top.
    plain = context.get("now") == now
    transitions = []
    for definition in definitions:
        if only is not None and definition.id not in only:
            continue
        _expire(state, definition, now)
        if plain and not definition.windows and definition.test is not None:
            inside = definition.test(context)
        else:
            inside = _holds(state, definition, context, now)
        if held is not None:
            held[definition.id] = inside
        since = state.members.get(definition.id)
        if inside and since is None:
            state.members[definition.id] = now
            transitions.append(Transition(definition.id, "entered", now))
        elif not inside and since is not None:
            del state.members[definition.id]
            transitions.append(Transition(definition.id, "exited", now, entered_at=since))
    return transitions


def next_change_at(
    state: SegmentState,
    definitions: Sequence[SegmentDefinition],
    context: Mapping[str, Any],
    now: datetime,
) -> datetime | None:
    """The earliest instant after ``now`` at which some segment's membership test changes with
    no new event, or None. Call it after ``evaluate``; set one timer for the answer.

    A segment can change only where a time-relative comparison crosses its boundary or a kept
    event leaves its window; those instants are tried in order, and the first at which the
    test differs from now is the answer. Instants that change nothing set no timer.
    """
    found = next_change(state, definitions, context, now)
    return None if found is None else found[0]


def next_change(
    state: SegmentState,
    definitions: Sequence[SegmentDefinition],
    context: Mapping[str, Any],
    now: datetime,
    *,
    only: Collection[str] | None = None,
    held: Mapping[str, bool] | None = None,
) -> tuple[datetime, str] | None:
    """``next_change_at`` with the id of the segment that changes then; ``only`` limits it to
    those segment ids, and ``held`` is what ``evaluate`` just found at ``now`` (same state,
    same context), so that those tests are not run again."""
    now = _utc(now)
    earliest: tuple[datetime, str] | None = None
    for definition in definitions:
        if not definition.moves_with_time:
            continue  # _change would find no instant to try
        if only is not None and definition.id not in only:
            continue
        at = _change(
            state,
            definition,
            context,
            now,
            before=None if earliest is None else earliest[0],
            inside=None if held is None else held.get(definition.id),
        )
        if at is not None:
            earliest = (at, definition.id)
    return earliest


def _change(
    state: SegmentState,
    definition: SegmentDefinition,
    context: Mapping[str, Any],
    now: datetime,
    *,
    before: datetime | None,
    inside: bool | None = None,
) -> datetime | None:
    """``inside``: the test's result at ``now``, when known."""
    if definition.rule is None:
        return None
    if inside is False and definition.fades_only:
        return None  # its counts only fall from here: it stays out until an event comes
    threshold = definition.threshold
    if threshold is not None:  # "n or more in the window": out when the n-th latest leaves
        if inside is None:
            inside = _holds(state, definition, context, now)
        if not inside:
            return None
        window, least = threshold
        times = state.windows.get(definition.id, {}).get(window.name, ())
        try:
            leaves = times[-least] + window.within
        except OverflowError:
            return None
        return None if before is not None and leaves >= before else leaves
    candidates = {b for b in definition.boundaries(context) if b > now}
    kept = state.windows.get(definition.id, {})
    for window in definition.windows:
        for at in kept.get(window.name, ()):
            try:
                leaves = at + window.within
            except OverflowError:
                continue
            if leaves > now:
                candidates.add(leaves)
    if not candidates:
        return None
    if inside is None:
        inside = _holds(state, definition, context, now)
    if not inside and definition.fades_only:
        return None  # its counts only fall from here: it stays out until an event comes
    for at in sorted(candidates):
        if before is not None and at >= before:
            return None
        if _holds(state, definition, context, at) != inside:
            return at
    return None


def _holds(
    state: SegmentState, definition: SegmentDefinition, context: Mapping[str, Any], now: datetime
) -> bool:
    threshold = definition.threshold
    if threshold is not None:
        window, least = threshold
        times = state.windows.get(definition.id, {}).get(window.name, ())
        return _count(times, now - window.within) >= least
    test = definition.test
    if test is None:
        return False
    # A chain, not a copy: the context may compute its parts only when a condition reads them.
    own = {"now": now, "counts": counts(state, definition, now) if definition.windows else {}}
    return test(conditions.Layered(own, context))


def _expire(state: SegmentState, definition: SegmentDefinition, now: datetime) -> None:
    kept = state.windows.get(definition.id)
    if kept is None:
        return
    for window in definition.windows:
        times = kept.get(window.name)
        if times is None:
            continue
        del times[: bisect_right(times, now - window.within)]
        del times[: -definition.keep(window.name)]  # a definition may have lowered its comparisons
        if not times:
            del kept[window.name]
    names = definition.window_names
    if not names.issuperset(kept):  # a window the definition no longer has
        for name in [n for n in kept if n not in names]:
            del kept[name]
    if not kept:
        del state.windows[definition.id]


def _forget(state: SegmentState, known: set[str]) -> None:
    for segment in [s for s in state.members if s not in known]:
        del state.members[segment]
    for segment in [s for s in state.windows if s not in known]:
        del state.windows[segment]


# ── Validation ────────────────────────────────────────────────────────────────────────────────


class InvalidSegment(ValueError):
    """A segment document with problems; ``problems`` lists each with its JSON path."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


def parse_segment(document: Mapping[str, Any]) -> SegmentDefinition:
    """The definition of a valid document; ``InvalidSegment`` with every problem otherwise."""
    try:
        definition = SegmentDefinition.model_validate(document)
    except ValidationError as exc:
        raise InvalidSegment(schema_problems(exc)) from exc
    problems = definition_problems(definition)
    if problems:
        raise InvalidSegment(problems)
    return definition


def validate_segment(document: Mapping[str, Any]) -> list[Problem]:
    """Every problem of a segment document; empty when it is valid. Besides what
    ``parse_segment`` refuses, a value no customer can have (``stage eq 'activ'``) is refused
    here, when a segment is saved: one stored before this check keeps loading as it was."""
    try:
        definition = parse_segment(document)
    except InvalidSegment as exc:
        return exc.problems
    return _value_problems(definition)


def _value_problems(definition: SegmentDefinition) -> list[Problem]:
    problems = []
    for path, c in _located(definition.condition, ["condition"]) if definition.condition else ():
        if c.field != "stage" or c.op not in ("eq", "ne", "in"):
            continue
        values = c.value if isinstance(c.value, list) else [c.value]
        unknown = [v for v in values if v not in STAGES]
        if unknown:
            message = (
                f"no stage is {unknown[0]!r} (a condition on it would never hold): stages are "
                f"{', '.join(STAGES)}"
            )
            problems.append(Problem(json_path([*path, "value"]), message))
    return problems


def validate_segments(documents: Sequence[Mapping[str, Any]]) -> list[Problem]:
    """Every problem of a list of segment documents (paths ``$[i]…``), duplicate ids included."""
    problems: list[Problem] = []
    first: dict[str, int] = {}
    for i, document in enumerate(documents):
        problems.extend(
            Problem(f"$[{i}]{p.path.removeprefix('$')}", p.message)
            for p in validate_segment(document)
        )
        segment_id = document.get("id") if isinstance(document, Mapping) else None
        if not isinstance(segment_id, str):
            continue
        if segment_id in first:
            message = f"duplicate segment id {segment_id!r} (also at $[{first[segment_id]}])"
            problems.append(Problem(f"$[{i}].id", message))
        else:
            first[segment_id] = i
    return problems


def definition_problems(definition: SegmentDefinition) -> list[Problem]:
    """Checks across fields: windows named once and read, conditions reading what exists."""
    problems: list[Problem] = []
    names: dict[str, int] = {}
    for i, window in enumerate(definition.windows):
        if window.name in names:
            message = (
                f"duplicate window name {window.name!r} (also at windows[{names[window.name]}])"
            )
            problems.append(Problem(json_path(["windows", i, "name"]), message))
        else:
            names[window.name] = i
        if window.where is not None:
            for path, c in _located(window.where, ["windows", i, "where"]):
                if not c.field.startswith("event."):
                    message = (
                        f"a window's where reads only the event, not {c.field!r}: use "
                        "event.type or event.properties.<name>"
                    )
                    problems.append(Problem(json_path([*path, "field"]), message))
    if definition.rule is None:
        message = "a segment needs a condition, or a window with min_count"
        return [*problems, Problem("$.condition", message)]
    read: set[str] = set()
    for path, c in _located(definition.condition, ["condition"]) if definition.condition else ():
        problem = _field_problem(c, names)
        if problem is not None:
            problems.append(Problem(json_path([*path, problem[0]]), problem[1]))
        if c.field.startswith("counts."):
            read.add(c.field.removeprefix("counts."))
    for name, i in names.items():
        if name not in read and definition.windows[i].min_count is None:
            message = (
                f"window {name!r} is never read: compare counts.{name} in the condition, or "
                "give the window a min_count"
            )
            problems.append(Problem(json_path(["windows", i]), message))
    return problems


def _field_problem(c: Comparison, windows: Mapping[str, int]) -> tuple[str, str] | None:
    """What is wrong with a comparison of a segment condition, as (key, message), or None."""
    root, _, rest = c.field.partition(".")
    if root == "event":
        return "field", (
            "a segment condition cannot read the event at hand (membership would change with "
            "every event): count events with a window and compare counts.<name>"
        )
    if root not in CONTEXT_ROOTS:
        return "field", (
            f"unknown field {c.field!r}: a segment reads customer.<trait>, profile.<name>, "
            "lead.score, lead.band, stage, rfm.<name>, predictions.<name> or counts.<window>"
        )
    if root == "stage" and rest:
        return "field", "stage is a word (subscriber, active, …), it has no parts"
    if c.field.rpartition(".")[2].startswith("days_since_"):
        # It moves every day but is only read again on the customer's next event or timer.
        instant = c.field.replace("days_since_", "", 1) + "_at"
        return "field", (
            f"{c.field} is not re-read as days pass: compare the instant instead, e.g. "
            f"{{field: {instant!r}, op: 'older_than', value: 'P90D'}}"
        )
    if root != "counts":
        return None
    if not rest:
        return "field", "counts needs a window name: counts.<window>"
    if rest not in windows:
        known = ", ".join(windows) if windows else "this segment has none"
        return "field", f"unknown window {rest!r} in {c.field!r} (windows: {known})"
    if c.op in TIME_OPS:
        return "op", f"{c.field} is a number; '{c.op}' compares an instant"
    values = c.value if isinstance(c.value, list) else [c.value]
    if any(
        isinstance(v, int | float) and not isinstance(v, bool) and v > MAX_COUNT for v in values
    ):
        return "value", (
            f"counts compare with at most {MAX_COUNT} (a window keeps only as many events as "
            "its largest comparison needs)"
        )
    return None


def _located(
    condition: Condition, path: list[str | int]
) -> list[tuple[list[str | int], Comparison]]:
    """Each comparison with its path in the document (``condition.all[0].not``)."""
    if isinstance(condition, Comparison):
        return [(path, condition)]
    if isinstance(condition, All):
        children = [([*path, "all", i], c) for i, c in enumerate(condition.all)]
    elif isinstance(condition, AnyOf):
        children = [([*path, "any", i], c) for i, c in enumerate(condition.any)]
    else:
        children = [([*path, "not"], condition.not_)]
    return [found for child_path, c in children for found in _located(c, child_path)]


__all__ = [
    "CONTEXT_ROOTS",
    "MAX_COUNT",
    "InvalidSegment",
    "SegmentDefinition",
    "SegmentState",
    "Transition",
    "Window",
    "count",
    "counts",
    "definition_problems",
    "evaluate",
    "next_change_at",
    "observe",
    "parse_segment",
    "validate_segment",
    "validate_segments",
    "windows_by_event",
]
