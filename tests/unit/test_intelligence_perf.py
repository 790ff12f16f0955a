"""The shortcuts that keep customer-intelligence upkeep cheap give the answers of the plain code.

Compiled conditions, the lazy profile view, the cached instant texts, the segment index and the
scoring shortcuts each replace a straightforward computation that the rest of the suite pins
down; here each is compared with that computation on the cases where they could part ways.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from pydantic import TypeAdapter

from services.journey.domain import builtin_segments, conditions, intelligence, scoring, segments
from services.journey.domain.conditions import Condition, Layered
from services.journey.domain.intelligence import Facts, FactsView, Intelligence
from services.journey.domain.profile import OrderEntry, Profile, ProfileView
from services.journey.domain.scoring import RuleState, ScoreRules, ScoreState
from services.journey.domain.segments import SegmentState, parse_segment

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
CONDITION: TypeAdapter[Condition] = TypeAdapter(Condition)


def condition(document: dict[str, Any]) -> Condition:
    return CONDITION.validate_python(document)


# ── Compiled conditions ───────────────────────────────────────────────────────────────────────

VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    2,
    2.5,
    -3,
    "2",
    "63.90",
    "abc",
    "",
    [1, "a"],
    {"k": 1},
    Decimal("2"),
    "2026-08-01T09:00:00Z",
    NOW - 100 * DAY,
    "not a date",
]
"""What a field may hold: numbers, booleans, decimal strings, words, lists, maps, instants."""

LITERALS: dict[str, list[Any]] = {
    "eq": [1, 2, 2.5, "2", True, False, None, "abc", [1, "a"]],
    "ne": [1, "abc", True, None],
    "gt": [1, 2, 2.5, "2", "abc"],
    "gte": [2, 0, "63.9", "a"],
    "lt": [2, 3.5, "b"],
    "lte": [2, -3, "abc"],
    "in": [[1, 2], ["abc", True], [None, 2.5]],
    "contains": ["a", 1, True],
    "exists": [None, True, False],
    "older_than": ["P90D", "PT1H"],
    "within": ["P90D", "P1D"],
}


def contexts(value: Any) -> list[Any]:
    """The same field value seen through each kind of mapping a condition meets: plain dicts,
    ``Layered`` chains (segments, journeys), and a value missing at each level."""
    plain = {"p": {"x": value}, "now": NOW}
    return [
        plain,
        Layered({"now": NOW}, {"p": {"x": value}}),
        Layered({"now": NOW}, Layered({"p": Layered({}, {"x": value})}, {})),
        {"p": {}, "now": NOW},
        {"now": NOW},
        {"p": value, "now": NOW},
        {"p": {"x": value}},  # no now: time comparisons are false
    ]


def test_every_comparison_compiles_to_what_evaluate_answers() -> None:
    checked = 0
    for op, literals in LITERALS.items():
        for literal, value in itertools.product(literals, VALUES):
            c = condition({"field": "p.x", "op": op, "value": literal})
            compiled = conditions.compile_condition(c)
            for context in contexts(value):
                assert compiled(context) == conditions.evaluate(c, context), (op, literal, value)
                checked += 1
    assert checked > 1000


def test_all_any_and_not_compile_to_what_evaluate_answers() -> None:
    c = condition(
        {
            "all": [
                {"field": "p.x", "op": "gte", "value": 2},
                {
                    "any": [
                        {"field": "p.y", "op": "eq", "value": "a"},
                        {"not": {"field": "p.z", "op": "exists"}},
                    ]
                },
            ]
        }
    )
    compiled = conditions.compile_condition(c)
    outcomes = set()
    for x, y, z in itertools.product([1, 2, "3", None], ["a", "b"], [None, 1]):
        p: dict[str, Any] = {"x": x, "y": y}
        if z is not None:
            p["z"] = z
        context = Layered({"now": NOW}, {"p": p})
        expected = conditions.evaluate(c, context)
        assert compiled(context) == expected
        outcomes.add(expected)
    assert outcomes == {True, False}


def test_a_compiled_condition_reads_through_a_non_dict_mapping() -> None:
    c = condition({"field": "profile.order_count", "op": "eq", "value": 1})
    profile = Profile(order_count=1)
    context = Layered({"now": NOW}, {"profile": ProfileView(profile, NOW)})
    assert conditions.compile_condition(c)(context) is True
    assert conditions.evaluate(c, context) is True


def test_boundary_finder_finds_what_boundaries_finds() -> None:
    c = condition(
        {
            "any": [
                {"field": "p.a", "op": "older_than", "value": "P90D"},
                {"not": {"field": "p.b", "op": "within", "value": "PT1H"}},
                {"field": "p.c", "op": "gte", "value": 1},
            ]
        }
    )
    find = conditions.boundary_finder(c)
    for a, b in itertools.product(
        [None, "2026-10-01T00:00:00Z", NOW, "garbage", datetime(9999, 12, 31, tzinfo=UTC)],
        [None, NOW - DAY, "2026-11-01"],
    ):
        context = {"p": {"a": a, "b": b, "c": 2}}
        assert find(context) == conditions.boundaries(c, context)


# ── The lazy profile view ─────────────────────────────────────────────────────────────────────


def a_profile() -> Profile:
    first, last = NOW - 40 * DAY, NOW - 3 * DAY
    return Profile(
        first_order_at=first,
        last_order_at=last,
        order_count=2,
        revenue=Decimal("80.5"),
        revenue_original={"USD": Decimal("10"), "EUR": Decimal("70.5")},
        discounted_orders=1,
        refunded=Decimal("1.25"),
        last_open_at=NOW - DAY,
        last_engaged_at=NOW - DAY,
        marketing_sends_since_engaged=2,
        recent_orders=[
            OrderEntry("o1", first, "EUR", Decimal("70.5"), Decimal(1)),
            OrderEntry("o2", last, "USD", Decimal("10"), None),
        ],
    )


@pytest.mark.parametrize("profile", [Profile(), a_profile()], ids=["empty", "two orders"])
@pytest.mark.parametrize("seen", [None, (NOW - 60 * DAY, NOW - DAY)], ids=["unseen", "seen"])
def test_profile_view_reads_each_name_as_the_view_has_it(
    profile: Profile, seen: tuple[datetime, datetime] | None
) -> None:
    first, last = seen or (None, None)
    eager = profile.view(NOW, first_seen_at=first, last_seen_at=last)
    lazy = ProfileView(profile, NOW, first_seen_at=first, last_seen_at=last)
    assert list(lazy) == list(eager)
    assert len(lazy) == len(eager)
    assert {name: lazy[name] for name in reversed(list(eager))} == eager
    assert dict(lazy) == eager
    assert "nope" not in lazy
    assert lazy.get("nope", 7) == 7
    with pytest.raises(KeyError):
        lazy["nope"]


def test_refresh_decides_on_the_lazy_view_as_on_the_eager_one() -> None:
    """A workspace segment on profile names, decided by ``refresh`` (lazy view), agrees with
    the same condition over ``context`` (eager view)."""
    segment = parse_segment(
        {
            "id": "lapsing_spender",
            "name": "Lapsing spender",
            "condition": {
                "all": [
                    {"field": "profile.revenue", "op": "gte", "value": 50},
                    {"field": "profile.last_order_at", "op": "older_than", "value": "P2D"},
                    {"field": "profile.last_seen_at", "op": "exists"},
                ]
            },
        }
    )
    intel = Intelligence(segments=(segment,))
    facts = Facts(profile=a_profile())
    derived = intelligence.refresh(
        facts,
        traits={},
        first_seen_at=NOW - 60 * DAY,
        last_seen_at=NOW - DAY,
        intel=intel,
        now=NOW,
        cause="e",
        workspace_id="w",
        customer_id="c",
    )
    eager = intelligence.context(
        facts,
        traits={},
        first_seen_at=NOW - 60 * DAY,
        last_seen_at=NOW - DAY,
        intel=intel,
        now=NOW,
    )
    assert segment.condition is not None and conditions.evaluate(segment.condition, eager)
    assert "lapsing_spender" in facts.segments.members
    assert [d.type for d in derived if d.type.startswith("segment_")] == ["segment_entered"]


def test_facts_view_get_is_its_mapping() -> None:
    view = FactsView(
        Facts(), first_seen_at=None, last_seen_at=None, intel=Intelligence(), now=NOW, lazy=True
    )
    assert isinstance(view["profile"], ProfileView)
    assert view.get("stage") == "subscriber"
    assert view.get("customer", "absent") == "absent"
    eager = FactsView(Facts(), first_seen_at=None, last_seen_at=None, intel=Intelligence(), now=NOW)
    assert isinstance(eager["profile"], dict)
    assert dict(view["profile"]) == eager["profile"]


# ── Instants as text ──────────────────────────────────────────────────────────────────────────


def test_utc_text_is_the_rfc3339_text_in_utc_whatever_the_zone() -> None:
    at = datetime(2026, 11, 2, 9, 0, 1, 500000, tzinfo=UTC)
    paris = at.astimezone(timezone(timedelta(hours=1)))
    assert conditions.utc_text(paris) == "2026-11-02T09:00:01.500000Z"
    assert conditions.utc_text(at) == "2026-11-02T09:00:01.500000Z"  # cached by the instant
    assert conditions.utc_text(at.replace(microsecond=0)) == "2026-11-02T09:00:01Z"
    for instant in (paris, at, NOW - 3 * DAY):
        assert conditions.utc_text(instant) == (
            instant.astimezone(UTC).isoformat().replace("+00:00", "Z")
        )


def test_facts_round_trip_through_json_with_cached_texts() -> None:
    facts = Facts(profile=a_profile())
    facts.timeline = [(NOW - DAY, "page_viewed", "e1"), (NOW, "order_completed", "e2")]
    facts.segments = SegmentState(
        members={"one_time_buyer": NOW},
        windows={"viewed_product_3x_7d": {"views": [NOW - DAY, NOW]}},
    )
    facts.lead = ScoreState({"product-viewed": RuleState(2.0, NOW, 1, NOW, 2.0)})
    stored = facts.to_json()
    assert stored["timeline"][1] == ["2026-11-02T09:00:00Z", "order_completed", "e2"]
    again = Facts.from_row(**stored, stage=None, due=None)
    assert again.to_json() == stored
    assert again.timeline == facts.timeline
    assert again.segments == facts.segments
    assert again.lead == facts.lead


# ── Profiles read back ────────────────────────────────────────────────────────────────────────


def test_a_stored_profile_with_nothing_yet_reads_as_a_new_one() -> None:
    assert Profile().to_json() == {"v": 1}
    assert Profile.from_json({"v": 1}) == Profile()
    assert Profile.from_json({}) == Profile()
    # One name and no version: still read in full, not taken for an empty profile.
    assert Profile.from_json({"order_count": 3}).order_count == 3
    with pytest.raises(ValueError, match="unknown profile version"):
        Profile.from_json({"v": 2})


# ── Scoring ───────────────────────────────────────────────────────────────────────────────────


class Event:
    def __init__(self, kind: str, properties: dict[str, Any] | None = None) -> None:
        self.type = kind
        self.properties = properties or {}
        self.occurred_at = NOW


def rules() -> ScoreRules:
    return ScoreRules.model_validate(
        {
            "rules": [
                {"id": "a", "event": "product_viewed", "points": 2},
                {"id": "big", "event": "order_completed", "points": 40},
                {
                    "id": "b",
                    "event": "product_viewed",
                    "points": 3,
                    "where": {"field": "event.properties.sale", "op": "eq", "value": True},
                },
            ]
        }
    )


def test_score_rules_index_their_rules_by_event_in_rule_order() -> None:
    r = rules()
    assert r.ids == {"a", "big", "b"}
    assert [rule.id for rule in r.by_event["product_viewed"]] == ["a", "b"]
    assert "page_viewed" not in r.by_event


def test_apply_matches_rules_in_order_with_their_where() -> None:
    sale = Event("product_viewed", {"sale": True})
    state, earned = scoring.apply(ScoreState(), rules(), sale, NOW)
    assert [c.rule for c in earned] == ["a", "b"]
    assert set(state.rules) == {"a", "b"}
    state, earned = scoring.apply(ScoreState(), rules(), Event("product_viewed", {}), NOW)
    assert [c.rule for c in earned] == ["a"]


def test_an_event_no_rule_scores_leaves_the_state_as_it_is() -> None:
    before = ScoreState({"a": RuleState(2.0, NOW - DAY, 1)})
    after, earned = scoring.apply(before, rules(), Event("page_viewed"), NOW)
    assert after == before and earned == []


def test_an_event_no_rule_scores_still_drops_rules_no_longer_declared() -> None:
    before = ScoreState({"a": RuleState(2.0, NOW - DAY, 1), "gone": RuleState(9.0, NOW, 1)})
    after, earned = scoring.apply(before, rules(), Event("page_viewed"), NOW)
    assert set(after.rules) == {"a"} and earned == []


@pytest.mark.parametrize("points", [0.0, 5.0, 19.999, 20.0, 61.0, -4.0])
def test_band_decisions_given_the_score_are_those_that_compute_it(points: float) -> None:
    r = ScoreRules.model_validate(
        {
            "bands": [{"name": "cold"}, {"name": "warm", "min": 20}, {"name": "hot", "min": 60}],
            "rules": [{"id": "a", "event": "x", "points": 1}],
        }
    )
    state = ScoreState({"a": RuleState(points, NOW - DAY, 1)}) if points else ScoreState()
    value = scoring.score(state, r, NOW)
    for previous in (None, "cold", "warm", "hot"):
        assert scoring.band_change(previous, state, r, NOW, value=value) == (
            scoring.band_change(previous, state, r, NOW)
        )
    assert scoring.next_band_change_at(state, r, NOW, value=value) == (
        scoring.next_band_change_at(state, r, NOW)
    )


# ── Segments ──────────────────────────────────────────────────────────────────────────────────


def own_segments() -> tuple[segments.SegmentDefinition, ...]:
    extra = [
        parse_segment(
            {
                "id": "warm_vip",
                "name": "Warm VIP",
                "condition": {
                    "all": [
                        {"field": "customer.vip", "op": "eq", "value": True},
                        {"field": "lead.band", "op": "eq", "value": "warm"},
                    ]
                },
            }
        ),
        parse_segment(
            {
                "id": "carts",
                "name": "Carts",
                "windows": [
                    {"name": "carts", "event": "cart_updated", "within": "P1D", "min_count": 2}
                ],
            }
        ),
    ]
    return intelligence.with_segments(intelligence.builtin(), extra)


def test_affected_is_every_segment_that_reads_what_was_touched() -> None:
    intel = Intelligence(segments=own_segments())
    keys = {key for d in intel.segments for key in d.reads} | {f"#{d.id}" for d in intel.segments}
    keys |= {"profile.last_seen_at", "customer.email", "#nope"}
    for size in (0, 1, 2, 3):
        for touched in itertools.combinations(sorted(keys), size):
            expected = {
                d.id
                for d in intel.segments
                if f"#{d.id}" in touched or not d.reads.isdisjoint(touched)
            }
            assert intel.affected(set(touched)) == expected


def test_window_events_are_the_types_some_window_counts() -> None:
    intel = Intelligence(segments=own_segments())
    assert intel.window_events == {"product_viewed", "cart_updated"}


def test_segments_that_time_cannot_change_are_known() -> None:
    moving = {d.id for d in own_segments() if d.moves_with_time}
    assert moving == {"no_order_90d", "occasional", "regular", "viewed_product_3x_7d", "carts"}


def test_next_change_skipping_timeless_segments_is_the_change_of_all() -> None:
    """``next_change`` looks only at segments time can change; the answer is the earliest over
    all segments, each tried with ``_change``."""
    definitions = own_segments()
    state = SegmentState(windows={"viewed_product_3x_7d": {"views": [NOW - 5 * DAY, NOW - DAY]}})
    for last_order in (None, NOW - 80 * DAY, NOW - 2 * DAY):
        profile = Profile(order_count=3 if last_order else 0, last_order_at=last_order)
        context = Layered(
            {"customer": {"vip": True}, "now": NOW},
            {"profile": profile.view(NOW), "lead": {"score": 0.0, "band": "cold"}},
        )
        found = segments.next_change(state, definitions, context, NOW)
        changes = [
            (at, d.id)
            for d in definitions
            if (at := segments._change(state, d, context, NOW, before=None)) is not None
        ]
        assert found == (min(changes) if changes else None)


def test_refresh_after_an_event_that_touches_no_segment_keeps_the_next_change() -> None:
    """No segment decided and the kept change still ahead: nothing about segments moves."""
    intel = Intelligence(segments=tuple(builtin_segments.load()))
    facts = Facts(profile=Profile(order_count=1, last_order_at=NOW - 10 * DAY))

    def decide(now: datetime, cause: str) -> list[intelligence.Derived]:
        return intelligence.refresh(
            facts,
            traits={},
            first_seen_at=NOW - 20 * DAY,
            last_seen_at=NOW,
            intel=intel,
            now=now,
            cause=cause,
            workspace_id="w",
            customer_id="c",
        )

    decide(NOW, "first")
    kept, members = facts.segment_next, dict(facts.segments.members)
    assert kept is not None and kept[1] == "no_order_90d"
    facts.touched.add("profile.last_seen_at")  # read by no built-in segment
    assert decide(NOW + DAY, "second") == []
    assert facts.segment_next == kept
    assert facts.segments.members == members
    assert facts.due == kept[0]
