"""Segments on a fake clock: entry on events, entry and exit as time passes, bounded state."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.journey.domain import builtin_segments
from services.journey.domain.segments import (
    InvalidSegment,
    SegmentDefinition,
    SegmentState,
    Transition,
    counts,
    evaluate,
    next_change_at,
    observe,
    parse_segment,
    validate_segment,
    validate_segments,
)

START = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
TICK = timedelta(microseconds=1)
BUILTIN = {d.id: d for d in builtin_segments.load()}
EXAMPLES = {d.id: d for d in builtin_segments.examples()}
VIEWED_3X = EXAMPLES["viewed_product_3x_7d"]
"""The documented window segment (not built in): three product views in seven days."""


def rfc(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def segment(**doc: Any) -> SegmentDefinition:
    return parse_segment({"id": "s", "name": "S", **doc})


@dataclass
class Customer:
    """One customer as the journey service would drive them: events observed and evaluated at
    once, and one timer at ``next_change_at`` that evaluates again when the clock reaches it."""

    definitions: list[SegmentDefinition]
    now: datetime = START
    state: SegmentState = field(default_factory=SegmentState)
    profile: dict[str, Any] = field(default_factory=dict)
    timer: datetime | None = None
    log: list[tuple[str, str, datetime]] = field(default_factory=list)

    def context(self) -> dict[str, Any]:
        return {"customer": {}, "profile": self.profile, "now": rfc(self.now)}

    def event(self, type_: str, **properties: Any) -> None:
        view = {"type": type_, "id": f"e{len(self.log)}", "properties": properties}
        if type_ == "order_completed":
            self.profile["last_order_at"] = rfc(self.now)
        observe(self.state, self.definitions, view, self.now)
        self._evaluate()

    def advance(self, by: timedelta) -> None:
        """Let time pass, firing the timer each time the clock reaches it."""
        until = self.now + by
        while self.timer is not None and self.timer <= until:
            self.now = self.timer
            self._evaluate()
        self.now = until

    def _evaluate(self) -> None:
        changes = evaluate(self.state, self.definitions, self.context(), self.now)
        self.log.extend((t.segment, t.kind, t.at) for t in changes)
        self.timer = next_change_at(self.state, self.definitions, self.context(), self.now)


# ── Entry and exit ───────────────────────────────────────────────────────────────────────────


def test_entry_on_the_third_view_and_exit_when_the_first_leaves_the_window() -> None:
    views = VIEWED_3X
    customer = Customer([views])
    customer.event("product_viewed", product_id="p1")
    customer.advance(DAY)
    customer.event("product_viewed", product_id="p2")
    customer.advance(DAY)
    assert customer.log == []
    customer.event("product_viewed", product_id="p1")
    assert customer.log == [("viewed_product_3x_7d", "entered", START + 2 * DAY)]
    # No event: the first view leaves the 7-day window at START + 7 days, and the count drops.
    assert customer.timer == START + 7 * DAY
    customer.advance(6 * DAY)
    assert customer.log[1:] == [("viewed_product_3x_7d", "exited", START + 7 * DAY)]
    assert "viewed_product_3x_7d" not in customer.state.members
    assert customer.state.windows["viewed_product_3x_7d"]["views"] == [
        START + DAY,
        START + 2 * DAY,
    ]


def test_the_count_drops_exactly_when_the_window_passes_an_event() -> None:
    views = VIEWED_3X
    state = SegmentState()
    for day in range(3):
        observe(state, [views], {"type": "product_viewed", "properties": {}}, START + day * DAY)
    ctx: dict[str, Any] = {"profile": {}}
    assert evaluate(state, [views], ctx, START + 2 * DAY) == [
        Transition("viewed_product_3x_7d", "entered", START + 2 * DAY)
    ]
    at = next_change_at(state, [views], ctx, START + 2 * DAY)
    assert at == START + 7 * DAY
    assert counts(state, views, at - TICK) == {"views": 3}
    assert evaluate(state, [views], ctx, at - TICK) == []
    assert counts(state, views, at) == {"views": 2}
    exited = evaluate(state, [views], ctx, at)
    assert exited == [Transition("viewed_product_3x_7d", "exited", at, entered_at=START + 2 * DAY)]
    assert exited[0].event_type == "segment_exited"
    assert exited[0].properties() == {
        "segment": "viewed_product_3x_7d",
        "entered_at": rfc(START + 2 * DAY),
    }


def test_no_order_in_90_days_is_entered_exactly_on_day_90_and_again_after_the_next_order() -> None:
    lapsed = BUILTIN["no_order_90d"]
    customer = Customer([lapsed])
    customer.event("signup")
    assert customer.timer is None  # never ordered: not in it, and nothing to wait for
    customer.event("order_completed", order_id="o1")
    assert customer.timer == START + 90 * DAY
    customer.advance(90 * DAY - TICK)
    assert customer.log == []
    customer.advance(TICK)
    assert customer.log == [("no_order_90d", "entered", START + 90 * DAY)]
    assert customer.timer is None  # stays in until an order comes
    customer.advance(10 * DAY)
    customer.event("order_completed", order_id="o2")
    second = START + 100 * DAY
    assert customer.log[1:] == [("no_order_90d", "exited", second)]
    customer.advance(200 * DAY)
    assert customer.log[2:] == [("no_order_90d", "entered", second + 90 * DAY)]
    assert customer.state.members == {"no_order_90d": second + 90 * DAY}


def test_entered_events_carry_the_segment_for_segment_triggers() -> None:
    state = SegmentState()
    (entered,) = evaluate(
        state, [BUILTIN["one_time_buyer"]], {"profile": {"order_count": 1}}, START
    )
    assert entered.event_type == "segment_entered"
    assert entered.properties() == {"segment": "one_time_buyer"}


def test_evaluating_again_changes_nothing() -> None:
    state = SegmentState()
    ctx = {"profile": {"order_count": 1}}
    assert len(evaluate(state, [BUILTIN["one_time_buyer"]], ctx, START)) == 1
    assert evaluate(state, [BUILTIN["one_time_buyer"]], ctx, START + DAY) == []
    assert state.members == {"one_time_buyer": START}


def test_next_change_is_the_earliest_over_all_segments() -> None:
    regular, lapsed = BUILTIN["regular"], BUILTIN["no_order_90d"]
    ordered = START - 10 * DAY
    ctx = {"profile": {"order_count": 4, "last_order_at": rfc(ordered)}}
    state = SegmentState()
    assert [t.segment for t in evaluate(state, [regular, lapsed], ctx, START)] == ["regular"]
    # Day 90 after the order: the regular leaves and the lapsed segment takes them, same instant.
    assert next_change_at(state, [regular, lapsed], ctx, START) == ordered + 90 * DAY
    changes = evaluate(state, [regular, lapsed], ctx, ordered + 90 * DAY)
    assert [(t.segment, t.kind) for t in changes] == [
        ("regular", "exited"),
        ("no_order_90d", "entered"),
    ]


def test_an_expiry_that_changes_no_membership_sets_no_timer() -> None:
    views = VIEWED_3X
    state = SegmentState()
    observe(state, [views], {"type": "product_viewed", "properties": {}}, START)
    evaluate(state, [views], {}, START)
    # One view: out of the segment, and its leaving the window keeps them out.
    assert next_change_at(state, [views], {}, START) is None


def test_window_where_filters_events_and_late_events_count_at_their_own_time() -> None:
    big_orders = segment(
        windows=[
            {
                "name": "big",
                "event": "order_completed",
                "where": {"field": "event.properties.total", "op": "gte", "value": 100},
                "within": "P30D",
                "min_count": 2,
            }
        ]
    )
    state = SegmentState()

    def order(total: str, at: datetime) -> bool:
        view = {"type": "order_completed", "properties": {"total": total}}
        return observe(state, [big_orders], view, at)

    assert order("150.00", START) is True
    assert order("20.00", START + DAY) is False  # below the filter: not counted
    assert (
        observe(state, [big_orders], {"type": "product_viewed", "properties": {}}, START) is False
    )
    assert evaluate(state, [big_orders], {}, START + DAY) == []
    assert order("250.00", START - 40 * DAY) is True  # backfilled, already out of the window
    assert evaluate(state, [big_orders], {}, START + DAY) == []
    assert state.windows["s"]["big"] == [START]  # the stale one is dropped on evaluation
    assert order("99.99", START + DAY) is False
    order("100", START - 5 * DAY)  # late, but inside the window
    assert [t.kind for t in evaluate(state, [big_orders], {}, START + DAY)] == ["entered"]
    assert next_change_at(state, [big_orders], {}, START + DAY) == START - 5 * DAY + 30 * DAY


# ── Conditions on what other modules compute ──────────────────────────────────────────────────


def test_conditions_on_stage_rfm_lead_and_predictions() -> None:
    slipping = segment(
        condition={
            "all": [
                {"field": "stage", "op": "in", "value": ["at_risk", "lapsed"]},
                {"field": "rfm.m", "op": "gte", "value": 4},
                {"field": "predictions.p_alive", "op": "lt", "value": 0.3},
                {"field": "predictions.clv", "op": "gte", "value": 200},
                {"not": {"field": "lead.band", "op": "eq", "value": "cold"}},
            ]
        }
    )
    ctx = {
        "stage": "at_risk",
        "rfm": {"r": 2, "f": 3, "m": 5, "group": "at_risk"},
        "predictions": {"p_alive": 0.21, "clv": "312.40"},
        "lead": {"score": 40, "band": "warm"},
    }
    state = SegmentState()
    assert [t.kind for t in evaluate(state, [slipping], ctx, START)] == ["entered"]
    recovered = {**ctx, "predictions": {"p_alive": 0.8, "clv": "312.40"}}
    assert [t.kind for t in evaluate(state, [slipping], recovered, START + DAY)] == ["exited"]
    assert evaluate(state, [slipping], {**ctx, "stage": "active"}, START + 2 * DAY) == []


def _profile(now: datetime, **values: Any) -> dict[str, Any]:
    """A profile view with instants given as days before now."""
    view = dict(values)
    for name in ("last_order_at", "first_order_at", "last_engaged_at"):
        if isinstance(view.get(name), int):
            view[name] = rfc(now - view[name] * DAY)
    return view


@pytest.mark.parametrize(
    ("segment_id", "ctx", "member"),
    [
        ("big_spender", {"rfm": {"r": 1, "f": 2, "m": 5, "group": "at_risk"}}, True),
        ("big_spender", {"rfm": {"r": 5, "f": 5, "m": 4, "group": "champions"}}, False),
        ("big_spender", {"rfm": {"r": 0, "f": 0, "m": 0}}, False),  # never ordered
        ("regular", {"profile": {"order_count": 3, "last_order_at": 89}}, True),
        ("regular", {"profile": {"order_count": 12, "last_order_at": 90}}, False),
        ("regular", {"profile": {"order_count": 2, "last_order_at": 1}}, False),
        ("occasional", {"profile": {"order_count": 2, "last_order_at": 200}}, True),
        ("occasional", {"profile": {"order_count": 6, "last_order_at": 120}}, True),
        ("occasional", {"profile": {"order_count": 6, "last_order_at": 20}}, False),  # regular
        ("occasional", {"profile": {"order_count": 2, "last_order_at": 365}}, False),  # lapsed
        ("occasional", {"profile": {"order_count": 1, "last_order_at": 10}}, False),
        ("sale_buyer", {"profile": {"order_count": 4, "discount_share": 0.75}}, True),
        ("sale_buyer", {"profile": {"order_count": 2, "discount_share": 0.5}}, True),
        ("sale_buyer", {"profile": {"order_count": 1, "discount_share": 1.0}}, False),
        ("sale_buyer", {"profile": {"order_count": 5, "discount_share": 0.2}}, False),
        ("sale_buyer", {"profile": {"order_count": 0, "discount_share": None}}, False),
        ("one_time_buyer", {"profile": {"order_count": 1}}, True),
        ("one_time_buyer", {"profile": {"order_count": 0}}, False),
        ("one_time_buyer", {"profile": {"order_count": 2}}, False),
        ("vip", {"rfm": {"group": "champions"}}, True),
        ("vip", {"rfm": {"group": "loyal"}, "customer": {"vip": True}}, True),
        ("vip", {"rfm": {"group": "loyal"}, "customer": {"vip": "yes"}}, False),
        ("vip", {}, False),
        (
            "never_engaged",
            {"profile": {"last_engaged_at": None, "marketing_sends_since_engaged": 5}},
            True,
        ),
        (
            "never_engaged",
            {"profile": {"last_engaged_at": None, "marketing_sends_since_engaged": 4}},
            False,
        ),
        (
            "never_engaged",
            {"profile": {"last_engaged_at": 300, "marketing_sends_since_engaged": 40}},
            False,
        ),
        ("no_order_90d", {"profile": {"order_count": 3, "last_order_at": 90}}, True),
        ("no_order_90d", {"profile": {"order_count": 3, "last_order_at": 89}}, False),
        ("no_order_90d", {"profile": {"order_count": 0, "last_order_at": None}}, False),
    ],
)
def test_builtin_segments(segment_id: str, ctx: dict[str, Any], member: bool) -> None:
    ctx = {**ctx, "profile": _profile(START, **ctx.get("profile", {}))}
    state = SegmentState()
    changes = evaluate(state, [BUILTIN[segment_id]], ctx, START)
    assert [t.kind for t in changes] == (["entered"] if member else [])


def test_example_viewed_product_segment_counts_views_in_seven_days() -> None:
    views = VIEWED_3X
    state = SegmentState()
    for days_ago in (8, 6, 3):
        view = {"type": "product_viewed", "properties": {"product_id": "p"}}
        observe(state, [views], view, START - days_ago * DAY)
    assert evaluate(state, [views], {}, START) == []  # the one 8 days ago no longer counts
    observe(state, [views], {"type": "product_viewed", "properties": {}}, START)
    assert [t.kind for t in evaluate(state, [views], {}, START)] == ["entered"]


def test_builtins_are_all_there_and_valid() -> None:
    assert sorted(BUILTIN) == [
        "big_spender",
        "never_engaged",
        "no_order_90d",
        "occasional",
        "one_time_buyer",
        "regular",
        "sale_buyer",
        "vip",
    ]
    documents = [
        d.model_dump(mode="json", by_alias=True, exclude_none=True) for d in BUILTIN.values()
    ]
    assert validate_segments(documents) == []


def test_the_examples_are_valid_and_none_is_built_in() -> None:
    """A documented example is a segment a workspace may add, never a built-in one: one with a
    built-in id could not be told apart from an override."""
    assert sorted(EXAMPLES) == ["viewed_product_3x_7d"]
    assert not EXAMPLES.keys() & BUILTIN.keys()
    documents = [
        d.model_dump(mode="json", by_alias=True, exclude_none=True) for d in EXAMPLES.values()
    ]
    assert validate_segments(documents) == []


# ── State ─────────────────────────────────────────────────────────────────────────────────────


def test_state_round_trips_through_json() -> None:
    customer = Customer([VIEWED_3X, BUILTIN["no_order_90d"]])
    customer.event("order_completed")
    customer.advance(95 * DAY)
    for _ in range(3):
        customer.advance(timedelta(hours=5, microseconds=250))
        customer.event("product_viewed")
    stored = json.dumps(customer.state.to_json())
    back = SegmentState.from_json(json.loads(stored))
    assert back == customer.state
    assert back.members == {"no_order_90d": START + 90 * DAY, "viewed_product_3x_7d": customer.now}
    assert len(back.windows["viewed_product_3x_7d"]["views"]) == 3
    assert json.loads(stored)["members"]["no_order_90d"] == "2024-05-30T12:00:00Z"
    # The restored state goes on as the original would.
    assert next_change_at(back, customer.definitions, customer.context(), customer.now) == (
        customer.timer
    )


@pytest.mark.parametrize(
    "data",
    [
        {"members": []},
        {"members": {"vip": "yesterday"}},
        {"members": {"vip": 17}},
        {"windows": {"s": ["2024-01-01T00:00:00Z"]}},
        {"windows": {"s": {"views": "2024-01-01T00:00:00Z"}}},
    ],
)
def test_malformed_state_is_refused(data: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="segment state"):
        SegmentState.from_json(data)


def test_windows_keep_only_what_their_comparisons_need() -> None:
    views = VIEWED_3X  # counts.views gte 3: four times suffice
    many = segment(
        windows=[{"name": "views", "event": "product_viewed", "within": "P30D"}],
        condition={"any": [{"field": "counts.views", "op": "in", "value": [2, 10]}]},
    )
    state = SegmentState()
    for minute in range(1000):
        view = {"type": "product_viewed", "properties": {}}
        observe(state, [views, many], view, START + minute * timedelta(minutes=1))
    assert len(state.windows["viewed_product_3x_7d"]["views"]) == 4
    assert len(state.windows["s"]["views"]) == 11
    assert state.windows["s"]["views"][-1] == START + 999 * timedelta(minutes=1)
    now = START + DAY
    assert counts(state, views, now) == {"views": 4}
    assert counts(state, many, now) == {"views": 11}
    assert [t.segment for t in evaluate(state, [views, many], {}, now)] == ["viewed_product_3x_7d"]
    assert len(json.dumps(state.to_json())) < 1000


def test_expired_times_and_deleted_segments_are_forgotten() -> None:
    views, one_time = VIEWED_3X, BUILTIN["one_time_buyer"]
    state = SegmentState()
    observe(state, [views], {"type": "product_viewed", "properties": {}}, START)
    evaluate(state, [views, one_time], {"profile": {"order_count": 1}}, START)
    assert set(state.members) == {"one_time_buyer"}
    # The view left its window: nothing is kept for it.
    evaluate(state, [views, one_time], {"profile": {"order_count": 1}}, START + 7 * DAY)
    assert state.windows == {}
    # one_time_buyer deleted from the workspace: forgotten, without an exit event.
    assert evaluate(state, [views], {"profile": {"order_count": 1}}, START + 8 * DAY) == []
    assert state.members == {}


def test_a_window_the_definition_no_longer_has_is_forgotten() -> None:
    views = VIEWED_3X  # its one window is "views"
    state = SegmentState(
        windows={views.id: {"views": [START - DAY, START], "renamed": [START - DAY, START]}}
    )
    evaluate(state, [views], {}, START)
    assert state.windows == {views.id: {"views": [START - DAY, START]}}
    state.windows[views.id] = {"renamed": [START]}  # only windows it no longer has
    evaluate(state, [views], {}, START)
    assert state.windows == {}


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate(SegmentState(), [], {}, datetime(2024, 1, 1))


# ── Validation ────────────────────────────────────────────────────────────────────────────────

VIEWS = {"name": "views", "event": "product_viewed", "within": "P7D"}
READ_VIEWS = {"field": "counts.views", "op": "gte", "value": 3}


def problems(**doc: Any) -> list[str]:
    return [str(p) for p in validate_segment({"id": "s", "name": "S", **doc})]


def test_a_stored_segment_with_no_such_stage_still_loads() -> None:
    # Refused when saved; one saved before the check keeps running as it did.
    document = {"id": "s", "name": "S", "condition": {"field": "stage", "op": "ne", "value": "x"}}
    assert validate_segment(document)
    assert parse_segment(document).id == "s"


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            {"windows": [VIEWS], "condition": {"field": "counts.vews", "op": "gte", "value": 3}},
            [
                "$.condition.field: unknown window 'vews' in 'counts.vews' (windows: views)",
                "$.windows[0]: window 'views' is never read: compare counts.views in the "
                "condition, or give the window a min_count",
            ],
        ),
        (
            {"condition": {"all": [{"not": READ_VIEWS}]}},
            [
                "$.condition.all[0].not.field: unknown window 'views' in 'counts.views' "
                "(windows: this segment has none)"
            ],
        ),
        (
            {"windows": [{**VIEWS, "within": "P1M"}], "condition": READ_VIEWS},
            [
                "$.windows[0].within: bad duration 'P1M': years and months have no fixed "
                "length; use weeks or days (P4W, P30D)"
            ],
        ),
        (
            {"condition": {"field": "profile.last_order_at", "op": "older_than", "value": "90d"}},
            [
                "$.condition.value: bad duration '90d': a duration starts with 'P', e.g. "
                "'P3D' or 'PT2H'"
            ],
        ),
        (
            {"windows": [VIEWS, VIEWS], "condition": READ_VIEWS},
            ["$.windows[1].name: duplicate window name 'views' (also at windows[0])"],
        ),
        (
            {"condition": {"field": "event.type", "op": "eq", "value": "order_completed"}},
            [
                "$.condition.field: a segment condition cannot read the event at hand "
                "(membership would change with every event): count events with a window and "
                "compare counts.<name>"
            ],
        ),
        (
            {
                "condition": {
                    "any": [READ_VIEWS, {"field": "profle.order_count", "op": "gt", "value": 1}]
                },
                "windows": [VIEWS],
            },
            [
                "$.condition.any[1].field: unknown field 'profle.order_count': a segment reads "
                "customer.<trait>, profile.<name>, lead.score, lead.band, stage, rfm.<name>, "
                "predictions.<name> or counts.<window>"
            ],
        ),
        (
            {
                "windows": [
                    {**VIEWS, "where": {"field": "customer.country", "op": "eq", "value": "ES"}}
                ],
                "condition": READ_VIEWS,
            },
            [
                "$.windows[0].where.field: a window's where reads only the event, not "
                "'customer.country': use event.type or event.properties.<name>"
            ],
        ),
        ({}, ["$.condition: a segment needs a condition, or a window with min_count"]),
        (
            {"windows": [VIEWS], "condition": {"field": "counts.views", "op": "gte", "value": 500}},
            [
                "$.condition.value: counts compare with at most 100 (a window keeps only as "
                "many events as its largest comparison needs)"
            ],
        ),
        (
            {
                "windows": [VIEWS],
                "condition": {"field": "counts.views", "op": "within", "value": "P1D"},
            },
            ["$.condition.op: counts.views is a number; 'within' compares an instant"],
        ),
        (
            {"condition": {"field": "profile.days_since_last_order", "op": "gte", "value": 90}},
            [
                "$.condition.field: profile.days_since_last_order is not re-read as days pass: "
                "compare the instant instead, e.g. {field: 'profile.last_order_at', op: "
                "'older_than', value: 'P90D'}"
            ],
        ),
        (
            {"condition": {"field": "stage.name", "op": "eq", "value": "active"}},
            ["$.condition.field: stage is a word (subscriber, active, …), it has no parts"],
        ),
        (
            {"condition": {"field": "stage", "op": "in", "value": ["at_risk", "activ"]}},
            [
                "$.condition.value: no stage is 'activ' (a condition on it would never hold): "
                "stages are subscriber, first_time_buyer, active, at_risk, lapsed, reactivated"
            ],
        ),
        (
            {"condition": {"not": {"field": "stage", "op": "eq", "value": "Lapsed"}}},
            [
                "$.condition.not.value: no stage is 'Lapsed' (a condition on it would never "
                "hold): stages are subscriber, first_time_buyer, active, at_risk, lapsed, "
                "reactivated"
            ],
        ),
        (
            {"windows": [{**VIEWS, "min_count": 0}]},
            ["$.windows[0].min_count: Input should be greater than or equal to 1"],
        ),
        (
            {"condition": READ_VIEWS, "windows": [VIEWS], "colour": "red"},
            ["$.colour: Extra inputs are not permitted"],
        ),
    ],
)
def test_validation_errors_name_the_path_and_the_problem(
    doc: dict[str, Any], expected: list[str]
) -> None:
    assert problems(**doc) == expected


def test_a_bad_id_and_missing_name_are_schema_errors() -> None:
    found = [str(p) for p in validate_segment({"id": "Big Spender", "condition": READ_VIEWS})]
    assert found[0].startswith("$.id: String should match pattern")
    assert found[1] == "$.name: Field required"


def test_duplicate_ids_in_a_list() -> None:
    one = {"id": "vip", "name": "VIP", "condition": {"field": "rfm.m", "op": "eq", "value": 5}}
    found = [str(p) for p in validate_segments([one, {**one, "name": "Again"}, {"id": 3}])]
    assert found[0] == "$[1].id: duplicate segment id 'vip' (also at $[0])"
    assert "$[2].id: Input should be a valid string" in found


def test_parse_segment_raises_with_every_problem() -> None:
    with pytest.raises(InvalidSegment) as caught:
        parse_segment({"id": "s", "name": "S", "windows": [VIEWS, VIEWS]})
    assert [p.path for p in caught.value.problems] == ["$.windows[1].name", "$.condition"]


def test_min_count_alone_defines_a_segment() -> None:
    browsing = segment(windows=[{**VIEWS, "min_count": 2}])
    state = SegmentState()
    view = {"type": "product_viewed", "properties": {}}
    observe(state, [browsing], view, START)
    assert evaluate(state, [browsing], {}, START) == []
    observe(state, [browsing], view, START + DAY)
    assert [t.kind for t in evaluate(state, [browsing], {}, START + DAY)] == ["entered"]
    assert next_change_at(state, [browsing], {}, START + DAY) == START + 7 * DAY
    assert len(state.windows["s"]["views"]) == 2
    observe(state, [browsing], view, START + 2 * DAY)
    assert len(state.windows["s"]["views"]) == 3  # min_count 2 keeps three
