"""Lifecycle stages: every transition, its timing against the customer's own rhythm, the
workspace bounds, and the timer instants the journey service would set.

Time is a plain datetime; no clock, no I/O.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from services.journey.domain.lifecycle import (
    LifecycleRules,
    Stage,
    StageChange,
    next_change_at,
    rhythm,
    stage_at,
    stage_change,
    thresholds,
)
from services.journey.domain.profile import Profile, observe

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
TICK = timedelta(microseconds=1)
RULES = LifecycleRules()


@dataclass(frozen=True)
class Event:
    type: str
    occurred_at: datetime
    properties: dict[str, Any] = field(default_factory=dict)


_ids = iter(range(1_000_000))


def buy(profile: Profile, at: datetime) -> None:
    event = Event(
        "order_completed", at, {"order_id": f"o{next(_ids)}", "total": "10", "currency": "EUR"}
    )
    observe(profile, event, currency="EUR", rates={})


def bought(*days: float) -> Profile:
    p = Profile()
    for d in days:
        buy(p, T0 + d * DAY)
    return p


# ── Rules ─────────────────────────────────────────────────────────────────────────────────────


def test_default_rules_and_their_json_form() -> None:
    data = RULES.model_dump(mode="json")
    assert data == {
        "default_gap": "P45D",
        "at_risk_factor": 2.0,
        "lapsed_factor": 4.0,
        "at_risk_min": "P14D",
        "at_risk_max": "P365D",
        "lapsed_min": "P30D",
        "lapsed_max": "P730D",
    }
    assert LifecycleRules.model_validate(data) == RULES
    assert "default_gap" in LifecycleRules.model_json_schema()["properties"]


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"lapsed_factor": 2.0}, "lapsed_factor (2.0) must be greater than at_risk_factor (2.0)"),
        ({"at_risk_min": "P400D"}, "at_risk_min must not be longer than at_risk_max"),
        ({"lapsed_min": "P10D"}, "lapsed_min must be longer than at_risk_min"),
        ({"lapsed_max": "P300D"}, "lapsed_max must be longer than at_risk_max"),
        ({"at_risk_factor": 0.5}, "greater than or equal to 1"),
        ({"default_gap": "P1M"}, "years and months have no fixed length"),
        ({"lapsed_after": "P1D"}, "Extra inputs are not permitted"),
    ],
)
def test_rules_refuse_inconsistent_thresholds(over: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        LifecycleRules.model_validate(over)


# ── Rhythm and thresholds ─────────────────────────────────────────────────────────────────────


def test_rhythm_is_the_mean_gap_between_orders() -> None:
    assert rhythm(Profile(), RULES) == RULES.default_gap
    assert rhythm(bought(0), RULES) == RULES.default_gap
    assert rhythm(bought(0, 10, 40), RULES) == 20 * DAY
    limits = thresholds(bought(0, 10, 40), RULES)
    assert (limits.at_risk, limits.lapsed) == (40 * DAY, 80 * DAY)


@pytest.mark.parametrize(
    ("gap_days", "at_risk_days", "lapsed_days"),
    [
        (1, 14, 30),  # twice in two days: the floors
        (5, 14, 30),
        (10, 20, 40),
        (45, 90, 180),
        (150, 300, 600),
        (300, 365, 730),  # the ceilings
    ],
)
def test_thresholds_follow_the_rhythm_within_the_bounds(
    gap_days: int, at_risk_days: int, lapsed_days: int
) -> None:
    limits = thresholds(bought(0, gap_days), RULES)
    assert (limits.at_risk, limits.lapsed) == (at_risk_days * DAY, lapsed_days * DAY)


# ── Every transition, at the instant it is due ────────────────────────────────────────────────


def test_a_customer_without_orders_is_a_subscriber_for_good() -> None:
    p = Profile()
    assert stage_at(p, None, T0 + 1000 * DAY, RULES) == "subscriber"
    assert next_change_at(p, "subscriber", T0, RULES) is None
    assert stage_change(p, None, T0, RULES) is None  # starting out is not announced


def test_one_time_buyer_goes_at_risk_then_lapsed_on_the_default_gap() -> None:
    p = bought(0)
    assert stage_at(p, "subscriber", T0, RULES) == "first_time_buyer"
    due = next_change_at(p, "first_time_buyer", T0, RULES)
    assert due == T0 + 90 * DAY  # twice the 45-day default gap
    assert stage_at(p, "first_time_buyer", due - TICK, RULES) == "first_time_buyer"
    assert stage_at(p, "first_time_buyer", due, RULES) == "at_risk"
    lapse = next_change_at(p, "at_risk", due, RULES)
    assert lapse == T0 + 180 * DAY
    assert stage_at(p, "at_risk", lapse - TICK, RULES) == "at_risk"
    assert stage_at(p, "at_risk", lapse, RULES) == "lapsed"
    assert next_change_at(p, "lapsed", lapse, RULES) is None


def test_thresholds_scale_with_each_customers_rhythm() -> None:
    weekly = bought(0, 7, 14, 21)
    monthly = bought(0, 30, 60, 90)
    now = T0 + 21 * DAY
    assert next_change_at(weekly, "active", now, RULES) == T0 + (21 + 14) * DAY
    assert next_change_at(monthly, "active", T0 + 90 * DAY, RULES) == T0 + (90 + 60) * DAY
    # Forty quiet days: the weekly buyer is lapsed (4 x 7 = 28 < 30, so the 30-day floor),
    # the monthly one still active.
    assert stage_at(weekly, "active", T0 + 61 * DAY, RULES) == "lapsed"
    assert stage_at(monthly, "active", T0 + 130 * DAY, RULES) == "active"


def test_second_order_makes_an_active_customer() -> None:
    p = bought(0)
    buy(p, T0 + 20 * DAY)
    change = stage_change(p, "first_time_buyer", T0 + 20 * DAY, RULES)
    assert change == StageChange(
        from_="first_time_buyer",
        to="active",
        at=T0 + 20 * DAY,
        reason="repeat_order",
        rhythm=20 * DAY,
    )
    assert change.properties() == {
        "from": "first_time_buyer",
        "to": "active",
        "reason": "repeat_order",
        "rhythm_days": 20.0,
    }


def test_an_order_while_at_risk_reactivates_and_the_next_one_makes_active_again() -> None:
    p = bought(0, 20, 40)  # rhythm 20 days: at risk after 40 quiet days, lapsed after 80
    at_risk_from = next_change_at(p, "active", T0 + 40 * DAY, RULES)
    assert at_risk_from == T0 + 80 * DAY
    assert stage_at(p, "active", at_risk_from, RULES) == "at_risk"
    buy(p, T0 + 90 * DAY)
    change = stage_change(p, "at_risk", T0 + 90 * DAY, RULES)
    assert change is not None
    assert (change.from_, change.to, change.reason) == ("at_risk", "reactivated", "order_after_gap")
    # Still reactivated until the next order ...
    assert stage_at(p, "reactivated", T0 + 100 * DAY, RULES) == "reactivated"
    buy(p, T0 + 105 * DAY)
    assert stage_change(p, "reactivated", T0 + 105 * DAY, RULES) == StageChange(
        "reactivated", "active", T0 + 105 * DAY, "repeat_order", rhythm=105 * DAY / 4
    )


def test_an_order_while_lapsed_reactivates() -> None:
    p = bought(0, 10)  # rhythm 10: at risk after 20 days, lapsed after 40
    assert stage_at(p, "at_risk", T0 + 50 * DAY, RULES) == "lapsed"
    buy(p, T0 + 200 * DAY)
    assert stage_at(p, "lapsed", T0 + 200 * DAY, RULES) == "reactivated"


def test_a_reactivated_customer_who_stays_quiet_goes_at_risk_on_the_new_rhythm() -> None:
    p = bought(0, 20, 40, 100)  # the last order reactivated them; rhythm now 100 / 3 days
    assert stage_at(p, "at_risk", T0 + 100 * DAY, RULES) == "reactivated"
    due = next_change_at(p, "reactivated", T0 + 100 * DAY, RULES)
    assert due == T0 + 100 * DAY + 2 * (100 * DAY / 3)
    assert stage_at(p, "reactivated", due, RULES) == "at_risk"


def test_cancelling_every_order_makes_a_subscriber_again() -> None:
    p = Profile()
    observe(
        p,
        Event("order_completed", T0, {"order_id": "x", "total": "5", "currency": "EUR"}),
        currency="EUR",
        rates={},
    )
    observe(p, Event("order_cancelled", T0 + DAY, {"order_id": "x"}), currency="EUR", rates={})
    change = stage_change(p, "first_time_buyer", T0 + DAY, RULES)
    assert change is not None
    assert (change.to, change.reason, change.rhythm) == ("subscriber", "orders_cancelled", None)


def test_imported_history_lands_in_the_stage_a_live_customer_would_have() -> None:
    # No previous stage at all: the profile alone tells the last order came after a gap.
    p = bought(0, 20, 40, 100)
    assert stage_at(p, None, T0 + 100 * DAY, RULES) == "reactivated"
    change = stage_change(p, None, T0 + 100 * DAY, RULES)
    assert change is not None
    assert (change.from_, change.to) == ("subscriber", "reactivated")
    steady = bought(0, 20, 40)
    change = stage_change(steady, None, T0 + 40 * DAY, RULES)
    assert change is not None
    assert (change.to, change.reason) == ("active", "orders")


def test_the_recorded_stage_decides_when_the_order_before_the_last_is_forgotten() -> None:
    # Thirty orders, none remembered any more: the profile cannot tell the last gap.
    p = Profile(first_order_at=T0, last_order_at=T0 + 290 * DAY, order_count=30)
    now = T0 + 291 * DAY
    assert p.previous_order_at is None
    assert stage_at(p, "at_risk", now, RULES) == "reactivated"
    assert stage_at(p, "lapsed", now, RULES) == "reactivated"
    assert stage_at(p, "reactivated", now, RULES) == "reactivated"
    assert stage_at(p, "active", now, RULES) == "active"
    assert stage_at(p, None, now, RULES) == "active"


def test_a_stage_behind_the_clock_is_due_at_once() -> None:
    p = bought(0)
    due = next_change_at(p, "first_time_buyer", T0 + 500 * DAY, RULES)
    assert due is not None and due < T0 + 500 * DAY


# ── A customer driven by orders and timers, as the journey service would ──────────────────────


def drive(order_days: list[float], until_days: float) -> list[StageChange]:
    """Feed orders in time order; between them, fire the stage timer whenever it falls due."""
    p = Profile()
    stage: Stage | None = None
    changes: list[StageChange] = []

    def settle(now: datetime) -> bool:
        nonlocal stage
        change = stage_change(p, stage, now, RULES)
        if change is not None:
            changes.append(change)
            stage = change.to
        return change is not None

    def run_timers(until: datetime) -> None:
        while True:
            due = next_change_at(p, stage or "subscriber", until, RULES)
            if due is None or due > until:
                return
            assert settle(due), f"the stage timer at {due} changed nothing"

    for day in sorted(order_days):
        at = T0 + day * DAY
        run_timers(at)
        buy(p, at)
        settle(at)
    run_timers(T0 + until_days * DAY)
    return changes


def test_a_whole_life_with_timers() -> None:
    changes = drive([0, 30, 60, 150, 180], until_days=400)
    summary = [(c.from_, c.to, (c.at - T0) / DAY) for c in changes]
    assert summary == [
        ("subscriber", "first_time_buyer", 0),
        ("first_time_buyer", "active", 30),
        ("active", "at_risk", 120),  # rhythm 30: at risk 60 days after day 60
        ("at_risk", "reactivated", 150),
        ("reactivated", "active", 180),
        ("active", "at_risk", 270),  # rhythm 180 / 4 = 45: 90 days after day 180
        ("at_risk", "lapsed", 360),
    ]


@pytest.mark.parametrize("seed", range(40))
def test_live_stages_agree_with_stages_rebuilt_from_history(seed: int) -> None:
    rng = random.Random(seed)
    days: list[float] = []
    day = 0.0
    for _ in range(rng.randrange(1, 12)):
        days.append(day)
        day += rng.choice([0.5, 3, 10, 25, 40, 90, 200, 400]) * rng.uniform(0.5, 1.5)
    until = day + 100
    changes = drive(days, until_days=until)
    # Each change goes somewhere new, and the chain is continuous.
    for before, after in itertools.pairwise(changes):
        assert before.to == after.from_
        assert before.at <= after.at
    for change in changes:
        assert change.from_ != change.to
    # The stage reached live equals the stage computed from the final profile alone.
    p = bought(*days)
    final = changes[-1].to if changes else "subscriber"
    assert stage_at(p, None, T0 + until * DAY, RULES) == final
    # Reactivation only ever follows at risk or lapsed; active never follows them directly.
    for change in changes:
        if change.to == "reactivated":
            assert change.from_ in ("at_risk", "lapsed")
        if change.from_ in ("at_risk", "lapsed"):
            assert change.to in ("lapsed", "reactivated")
