"""Lead score: rule validation, points and filters, caps per window, exact decay, bands moved by
events and by decay alone, explanations and the stored state.

Time is a plain datetime; no clock, no I/O. Random histories use seeded ``random.Random``.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.journey.domain.scoring import (
    BandChange,
    Contribution,
    ScoreRules,
    ScoreState,
    apply,
    band,
    band_change,
    default_score_rules,
    explain,
    next_band_change_at,
    score,
    validate_score_rules,
)

T0 = datetime(2026, 4, 1, 8, 0, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class Event:
    type: str
    occurred_at: datetime
    properties: dict[str, Any] = field(default_factory=dict)


def rules(*rule_docs: dict[str, Any], **over: Any) -> ScoreRules:
    return ScoreRules.model_validate({"rules": list(rule_docs), **over})


VIEW = {"id": "view", "event": "product_viewed", "points": 10}
CLICK = {
    "id": "click",
    "event": "message_clicked",
    "points": 5,
    "cap": {"points": 15, "per": "P7D"},
}
UNSUB = {"id": "unsub", "event": "message_unsubscribed", "points": -30}


def run(
    r: ScoreRules, events: list[Event], state: ScoreState | None = None
) -> tuple[ScoreState, list[Contribution]]:
    state = state or ScoreState()
    applied: list[Contribution] = []
    for event in events:
        state, made = apply(state, r, event, event.occurred_at)
        applied.extend(made)
    return state, applied


# ── Rules ─────────────────────────────────────────────────────────────────────────────────────


def test_default_rules_file_is_valid_and_covers_the_shop_basics() -> None:
    r = default_score_rules()
    assert r.half_life == 30 * DAY
    assert [(b.name, b.min) for b in r.bands] == [("cold", None), ("warm", 20), ("hot", 60)]
    by_event = {rule.event: rule.points for rule in r.rules}
    for kind in ("product_viewed", "cart_updated", "checkout_started", "order_completed"):
        assert by_event[kind] > 0
    assert by_event["message_opened"] > 0 and by_event["message_clicked"] > 0
    assert by_event["message_unsubscribed"] == -30
    assert by_event["message_bounced"] == -20
    assert by_event["message_complained"] == -50


def test_default_rules_put_a_full_purchase_funnel_in_hot_for_about_a_week() -> None:
    r = default_score_rules()
    funnel = [
        *(Event("product_viewed", T0 + i * HOUR / 10, {"product_id": f"p{i}"}) for i in range(8)),
        Event("cart_updated", T0 + HOUR, {"cart_id": "c"}),
        Event("checkout_started", T0 + 2 * HOUR, {"total": "50", "currency": "EUR"}),
        Event("order_completed", T0 + 3 * HOUR, {"order_id": "o", "total": "50"}),
    ]
    state, _ = run(r, funnel)
    assert band(score(state, r, T0 + 3 * HOUR), r) == "hot"
    cooled = next_band_change_at(state, r, T0 + 3 * HOUR)
    assert cooled is not None
    assert 5 * DAY < cooled - T0 < 9 * DAY


def test_a_soft_bounce_costs_nothing_and_a_hard_one_does() -> None:
    r = default_score_rules()
    state, applied = run(r, [Event("message_bounced", T0, {"bounce": "soft"})])
    assert applied == [] and score(state, r, T0) == 0
    state, applied = run(r, [Event("message_bounced", T0, {"bounce": "hard"})])
    assert applied == [Contribution("bounced-hard", -20, T0)]


@pytest.mark.parametrize(
    ("doc", "path", "message"),
    [
        ({"rules": []}, "$.rules", "no rules: a score needs at least one"),
        (
            {"rules": [VIEW, {**CLICK, "id": "view"}]},
            "$.rules",
            "rules[1]: id 'view' is already rules[0]",
        ),
        (
            {
                "rules": [VIEW],
                "bands": [
                    {"name": "cold"},
                    {"name": "warm", "min": 60},
                    {"name": "hot", "min": 20},
                ],
            },
            "$.bands",
            "bands[2].min (20) must be greater than bands[1].min (60)",
        ),
        (
            {"rules": [VIEW], "bands": [{"name": "cold", "min": 0}, {"name": "hot", "min": 5}]},
            "$.bands",
            "bands[0] is the lowest band and takes no 'min'",
        ),
        (
            {"rules": [VIEW], "bands": [{"name": "cold"}, {"name": "hot"}]},
            "$.bands",
            "bands[1] (hot) needs a 'min'",
        ),
        (
            {"rules": [VIEW], "bands": [{"name": "cold"}, {"name": "cold", "min": 5}]},
            "$.bands",
            "bands[1]: name 'cold' is already bands[0]",
        ),
        (
            {"rules": [{**VIEW, "cap": {"points": 5, "per": "P1D"}}]},
            "$.rules[0].cap",
            "cap.points (5) is less than the rule's 10 points",
        ),
        (
            {"rules": [{**VIEW, "where": {"field": "customer.vip", "op": "eq", "value": True}}]},
            "$.rules[0].where",
            "field 'customer.vip': a score rule reads only the event",
        ),
        ({"rules": [{**VIEW, "points": 0}]}, "$.rules[0].points", "0 would do nothing"),
        (
            {"rules": [{**VIEW, "cap": {"points": 20, "per": "P1M"}}]},
            "$.rules[0].cap.per",
            "years and months",
        ),
        ({"rules": [VIEW], "half_life": "PT0S"}, "$.half_life", "must be longer than zero"),
        ({"rules": [{**VIEW, "id": "Bad Id"}]}, "$.rules[0].id", "String should match pattern"),
        ({"rules": [{**VIEW, "weight": 2}]}, "$.rules[0].weight", "Extra inputs are not permitted"),
    ],
)
def test_validation_names_the_field_and_the_problem(
    doc: dict[str, Any], path: str, message: str
) -> None:
    problems = validate_score_rules(doc)
    assert any(p.path == path and message in p.message for p in problems), problems


def test_valid_rules_have_no_problems_and_a_json_schema() -> None:
    assert validate_score_rules({"rules": [VIEW, CLICK, UNSUB]}) == []
    schema = ScoreRules.model_json_schema()
    assert schema["required"] == ["rules"]
    assert json.dumps(schema)
    r = rules(VIEW, CLICK)
    assert ScoreRules.model_validate(r.model_dump(mode="json", exclude_none=True)) == r


# ── Points, filters and caps ──────────────────────────────────────────────────────────────────


def test_matching_rules_add_points_and_say_so() -> None:
    big = {
        "id": "big-order",
        "event": "order_completed",
        "points": 20,
        "where": {"field": "event.properties.total", "op": "gte", "value": 100},
    }
    order = {"id": "order", "event": "order_completed", "points": 10}
    r = rules(order, big)
    state, applied = run(r, [Event("order_completed", T0, {"total": "150.00"})])
    assert applied == [Contribution("order", 10, T0), Contribution("big-order", 20, T0)]
    assert score(state, r, T0) == 30
    state, applied = run(r, [Event("order_completed", T0, {"total": "99.99"})], state)
    assert [c.rule for c in applied] == ["order"]
    assert run(r, [Event("page_viewed", T0)])[1] == []


def test_the_cap_clips_the_event_that_reaches_it_and_then_earns_nothing() -> None:
    r = rules(CLICK)
    clicks = [Event("message_clicked", T0 + i * HOUR) for i in range(5)]
    state, applied = run(r, clicks)
    assert [c.points for c in applied] == [5, 5, 5, 0, 0]
    assert [c.capped for c in applied] == [False, False, False, True, True]
    assert state.rules["click"].events == 3
    # A new window opens with the first click a week after the window opened.
    state, applied = run(r, [Event("message_clicked", T0 + 7 * DAY)], state)
    assert applied == [Contribution("click", 5, T0 + 7 * DAY)]


def test_a_cap_smaller_than_a_multiple_of_the_points_is_reached_exactly() -> None:
    r = rules(
        {"id": "v", "event": "product_viewed", "points": 4, "cap": {"points": 10, "per": "P1D"}}
    )
    _, applied = run(r, [Event("product_viewed", T0 + i * HOUR) for i in range(4)])
    assert [c.points for c in applied] == [4, 4, 2, 0]


def test_negative_points_are_capped_by_their_size() -> None:
    r = rules(
        {"id": "b", "event": "message_bounced", "points": -20, "cap": {"points": 30, "per": "P1D"}}
    )
    state, applied = run(r, [Event("message_bounced", T0 + i * HOUR) for i in range(3)])
    assert [c.points for c in applied] == [-20, -10, 0]
    hours = 30 * 24  # in the default half-life
    expected = -20 * 0.5 ** (2 / hours) - 10 * 0.5 ** (1 / hours)
    assert score(state, r, T0 + 2 * HOUR) == pytest.approx(expected, rel=1e-12)


def _windows(times: list[datetime], per: timedelta) -> list[list[datetime]]:
    """Events grouped into fixed windows, each opened by the first event after the last one
    closed (a different formulation of the rule the scorer applies one event at a time)."""
    groups: list[list[datetime]] = []
    for t in sorted(times):
        if groups and t < groups[-1][0] + per:
            groups[-1].append(t)
        else:
            groups.append([t])
    return groups


@pytest.mark.parametrize("seed", range(25))
def test_cap_windows_on_random_histories(seed: int) -> None:
    rng = random.Random(seed)
    points = rng.choice([1, 2, 3, 5])
    cap = points * rng.choice([1, 2, 3]) + rng.choice([0, 0.5])
    per = rng.choice([HOUR, DAY, 7 * DAY])
    r = rules(
        {
            "id": "x",
            "event": "e",
            "points": points,
            "cap": {"points": cap, "per": f"PT{int(per.total_seconds())}S"},
        }
    )
    times = sorted(
        T0 + timedelta(minutes=rng.randrange(0, 60 * 24 * 30)) for _ in range(rng.randrange(1, 80))
    )
    state = ScoreState()
    earned: list[tuple[datetime, float]] = []
    for t in times:
        # Stored and loaded between events, as the journey service does per batch.
        state = ScoreState.from_json(json.loads(json.dumps(state.to_json())))
        state, applied = apply(state, r, Event("e", t), t)
        earned.extend((c.at, c.points) for c in applied)
    # Each window earns the rule's points up to the cap, and nothing beyond it.
    for group in _windows(times, per):
        start = group[0]
        inside = math.fsum(p for t, p in earned if start <= t < start + per)
        assert inside == pytest.approx(min(cap, len(group) * points))
    assert state.rules["x"].events == sum(1 for _, p in earned if p > 0)


# ── Decay ─────────────────────────────────────────────────────────────────────────────────────


def test_points_halve_every_half_life() -> None:
    r = rules(VIEW, half_life="P10D")
    state, _ = run(r, [Event("product_viewed", T0)])
    assert score(state, r, T0) == 10
    assert score(state, r, T0 + 10 * DAY) == pytest.approx(5)
    assert score(state, r, T0 + 30 * DAY) == pytest.approx(1.25)


def test_a_backfilled_event_counts_from_when_it_happened_and_a_future_one_from_now() -> None:
    r = rules(VIEW, half_life="P10D")
    state, _ = apply(ScoreState(), r, Event("product_viewed", T0 - 20 * DAY), T0)
    assert score(state, r, T0) == pytest.approx(2.5)
    state, applied = apply(ScoreState(), r, Event("product_viewed", T0 + DAY), T0)
    assert applied[0].at == T0
    assert score(state, r, T0) == 10


def _closed_form(r: ScoreRules, contributions: list[Contribution], now: datetime) -> float:
    return math.fsum(c.points * 0.5 ** ((now - c.at) / r.half_life) for c in contributions)


@pytest.mark.parametrize("seed", range(25))
def test_decay_is_exact_however_often_and_in_whatever_order_events_arrive(seed: int) -> None:
    rng = random.Random(seed)
    r = rules(
        VIEW,
        CLICK,
        UNSUB,
        {"id": "order", "event": "order_completed", "points": 25},
        half_life=f"P{rng.randrange(1, 60)}D",
    )
    kinds = [
        "product_viewed",
        "message_clicked",
        "message_unsubscribed",
        "order_completed",
        "page_viewed",
    ]
    events = [
        Event(rng.choice(kinds), T0 + timedelta(minutes=rng.randrange(0, 60 * 24 * 90)))
        for _ in range(rng.randrange(5, 60))
    ]
    now = max(e.occurred_at for e in events) + timedelta(days=rng.randrange(0, 40))
    # In time order, processed as they happen.
    in_order, applied = run(r, sorted(events, key=lambda e: e.occurred_at))
    expected = _closed_form(r, applied, now)
    assert score(in_order, r, now) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    # Reading the score at any instants in between, or storing and loading the state, changes
    # nothing: no decay is ever written back.
    state = ScoreState()
    for event in sorted(events, key=lambda e: e.occurred_at):
        score(state, r, event.occurred_at - HOUR)
        state, _ = apply(state, r, event, event.occurred_at)
        state = ScoreState.from_json(json.loads(json.dumps(state.to_json())))
    assert state == in_order
    # Uncapped rules do not depend on order: shuffled, processed late (all at `now`), the same.
    uncapped = rules(
        VIEW,
        UNSUB,
        {"id": "order", "event": "order_completed", "points": 25},
        half_life=r.half_life,
    )
    shuffled = events[:]
    rng.shuffle(shuffled)
    late = ScoreState()
    for event in shuffled:
        late, _ = apply(late, uncapped, event, now)
    sorted_state, made = run(uncapped, sorted(events, key=lambda e: e.occurred_at))
    assert score(late, uncapped, now) == pytest.approx(
        score(sorted_state, uncapped, now), rel=1e-9, abs=1e-9
    )
    assert score(late, uncapped, now) == pytest.approx(
        _closed_form(uncapped, made, now), rel=1e-9, abs=1e-9
    )


# ── Bands ─────────────────────────────────────────────────────────────────────────────────────


BANDS = [{"name": "cold"}, {"name": "warm", "min": 20}, {"name": "hot", "min": 60}]


def test_bands_take_the_highest_threshold_reached() -> None:
    r = rules(VIEW)
    assert [band(v, r) for v in (-5, 0, 19.99, 20, 59.9, 60, 1000)] == [
        "cold",
        "cold",
        "cold",
        "warm",
        "warm",
        "hot",
        "hot",
    ]


def test_events_move_the_band_and_announce_it() -> None:
    r = rules(VIEW, UNSUB, bands=BANDS)
    state, _ = run(r, [Event("product_viewed", T0)])
    assert band_change(None, state, r, T0) is None  # 10: still cold, where everyone starts
    state, _ = run(r, [Event("product_viewed", T0)], state)
    change = band_change("cold", state, r, T0)
    assert change is not None
    assert (change.from_, change.to, change.at) == ("cold", "warm", T0)
    assert change.properties() == {"from": "cold", "to": "warm", "score": 20}
    state, _ = run(r, [Event("message_unsubscribed", T0 + 2 * HOUR)], state)
    assert band_change("warm", state, r, T0 + 2 * HOUR) == BandChange(
        "warm", "cold", score(state, r, T0 + 2 * HOUR), T0 + 2 * HOUR
    )


def test_decay_moves_the_band_at_the_instant_next_band_change_at_gives() -> None:
    r = rules(VIEW, half_life="P30D", bands=BANDS)
    state, _ = run(r, [Event("product_viewed", T0 + i * HOUR) for i in range(8)])
    now = T0 + 8 * HOUR
    value = score(state, r, now)
    assert band(value, r) == "hot"
    when = next_band_change_at(state, r, now)
    assert when is not None
    # The closed form: 60 = S · 2^(-t / 30 days).
    expected = 30 * DAY.total_seconds() * math.log2(value / 60)
    assert (when - now).total_seconds() == pytest.approx(expected, abs=2e-6)
    assert score(state, r, when) == pytest.approx(60, rel=1e-9)
    assert band(score(state, r, when), r) == "warm"
    assert band(score(state, r, when - timedelta(milliseconds=1)), r) == "hot"
    change = band_change("hot", state, r, when)
    assert change is not None and (change.from_, change.to) == ("hot", "warm")
    # Then on to cold, then nothing more: decay never takes a positive score below zero.
    later = next_band_change_at(state, r, when)
    assert later is not None and score(state, r, later) == pytest.approx(20, rel=1e-9)
    assert next_band_change_at(state, r, later) is None


def test_a_score_exactly_on_a_threshold_leaves_the_band_a_moment_later() -> None:
    r = rules(VIEW, bands=BANDS)
    state, _ = run(r, [Event("product_viewed", T0), Event("product_viewed", T0)])
    assert score(state, r, T0) == 20
    assert band(20, r) == "warm"
    when = next_band_change_at(state, r, T0)
    assert when == T0 + timedelta(microseconds=1)
    assert band(score(state, r, when), r) == "cold"


def test_a_negative_score_rises_towards_zero_across_negative_thresholds() -> None:
    r = rules(
        UNSUB,
        half_life="P10D",
        bands=[{"name": "blocked"}, {"name": "neutral", "min": -10}, {"name": "warm", "min": 20}],
    )
    state, _ = run(r, [Event("message_unsubscribed", T0)])
    assert band(score(state, r, T0), r) == "blocked"
    when = next_band_change_at(state, r, T0)
    assert when is not None
    expected = 10 * DAY.total_seconds() * math.log2(3)
    assert (when - T0).total_seconds() == pytest.approx(expected, abs=2e-6)
    assert score(state, r, when) == pytest.approx(-10, rel=1e-9)
    assert band(score(state, r, when), r) == "neutral"
    assert next_band_change_at(state, r, when) is None  # never reaches 20 from below zero


def test_no_band_change_without_points_or_below_the_first_threshold() -> None:
    r = rules(VIEW, bands=BANDS)
    assert next_band_change_at(ScoreState(), r, T0) is None
    state, _ = run(r, [Event("product_viewed", T0)])
    assert next_band_change_at(state, r, T0) is None  # cold: the lowest band has no floor


@pytest.mark.parametrize("seed", range(25))
def test_next_band_change_at_on_random_states(seed: int) -> None:
    rng = random.Random(seed)
    r = rules(
        VIEW,
        CLICK,
        UNSUB,
        half_life=f"P{rng.randrange(1, 90)}D",
        bands=[{"name": "lost"}, {"name": "cold", "min": -15}, *BANDS[1:]],
    )
    state = ScoreState()
    for _ in range(rng.randrange(1, 30)):
        at = T0 + timedelta(minutes=rng.randrange(0, 60 * 24 * 20))
        kind = rng.choice(["product_viewed", "message_clicked", "message_unsubscribed"])
        state, _ = apply(state, r, Event(kind, at), at)
    now = T0 + 20 * DAY
    seen = [band(score(state, r, now), r)]
    for _ in range(5):
        when = next_band_change_at(state, r, now)
        if when is None:
            break
        assert when > now
        assert band(score(state, r, when), r) != seen[-1]
        assert band(score(state, r, when - timedelta(milliseconds=1)), r) == seen[-1]
        threshold = min(
            (b.min for b in r.bands if b.min is not None),
            key=lambda m: abs(m - score(state, r, when)),
        )
        assert score(state, r, when) == pytest.approx(threshold, rel=1e-9)
        seen.append(band(score(state, r, when), r))
        now = when


# ── Explanation and storage ───────────────────────────────────────────────────────────────────


def test_explain_lists_each_rules_share_largest_first() -> None:
    r = rules(VIEW, CLICK, UNSUB, half_life="P10D")
    state, _ = run(
        r,
        [
            Event("product_viewed", T0),
            Event("product_viewed", T0 + DAY),
            Event("message_clicked", T0 + 2 * DAY),
            Event("message_unsubscribed", T0 + 3 * DAY),
        ],
    )
    now = T0 + 10 * DAY
    lines = explain(state, r, now)
    assert [line["rule"] for line in lines] == ["unsub", "view", "click"]
    assert lines[0] == {
        "rule": "unsub",
        "points_now": round(-30 * 0.5**0.7, 2),
        "events": 1,
        "last_event_at": "2026-04-04T08:00:00Z",
    }
    assert lines[1]["events"] == 2
    assert lines[1]["points_now"] == round(10 * 0.5 + 10 * 0.5**0.9, 2)
    assert math.fsum(line["points_now"] for line in lines) == pytest.approx(
        score(state, r, now), abs=0.02
    )


def test_removed_rules_stop_counting_and_their_state_is_dropped() -> None:
    r = rules(VIEW, CLICK)
    state, _ = run(r, [Event("product_viewed", T0), Event("message_clicked", T0)])
    fewer = rules(CLICK)
    assert score(state, fewer, T0) == 5
    assert [line["rule"] for line in explain(state, fewer, T0)] == ["click"]
    state, _ = apply(state, fewer, Event("message_clicked", T0 + HOUR), T0 + HOUR)
    assert set(state.rules) == {"click"}


def test_state_json_round_trip_is_exact() -> None:
    r = rules(VIEW, CLICK, half_life="P7D")
    state, _ = run(
        r,
        [
            Event("product_viewed", T0 + timedelta(microseconds=123)),
            Event("message_clicked", T0 + HOUR),
            Event("product_viewed", T0 + 3 * DAY),
        ],
    )
    data = json.loads(json.dumps(state.to_json()))
    assert ScoreState.from_json(data) == state
    assert score(ScoreState.from_json(data), r, T0 + 9 * DAY) == score(state, r, T0 + 9 * DAY)
    assert ScoreState.from_json({"v": 1}) == ScoreState()
    with pytest.raises(ValueError, match="version"):
        ScoreState.from_json({"v": 2, "rules": {}})


def test_state_stays_one_entry_per_rule_however_long_the_history() -> None:
    r = rules(VIEW, CLICK)
    kinds = ("product_viewed", "message_clicked")
    events = [Event(kinds[i % 2], T0 + i * HOUR) for i in range(5000)]
    state, _ = run(r, events)
    assert len(json.dumps(state.to_json())) < 400
