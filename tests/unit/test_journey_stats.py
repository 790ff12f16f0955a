"""Conversion rates, Wilson and Newcombe intervals, and the assembly of journey stats."""

from __future__ import annotations

import pytest

from services.journey.adapters.stats import ActiveRow, CountRow, GroupRow, assemble
from services.journey.domain.lift import difference, lift, rate, wilson

# Newcombe RG (1998). Two-sided confidence intervals for the single proportion: comparison of
# seven methods. Statistics in Medicine 17, 857-872. Table I, method 3 (Wilson score, no
# continuity correction).
WILSON = [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0000, 0.1611),
    (1, 29, 0.0061, 0.1718),
]

# Newcombe RG (1998). Interval estimation for the difference between independent proportions:
# comparison of eleven methods. Statistics in Medicine 17, 873-890. Table II, method 10 (score
# interval for each proportion, combined: the hybrid score interval).
NEWCOMBE = [
    ((56, 70, 48, 80), 0.0524, 0.3339),
    ((9, 10, 3, 10), 0.1705, 0.8090),
    ((6, 7, 2, 7), 0.0582, 0.8062),
    ((5, 56, 0, 29), -0.0381, 0.1926),
    ((0, 10, 0, 20), -0.1611, 0.2775),
    ((0, 10, 0, 10), -0.2775, 0.2775),
    ((10, 10, 0, 20), 0.6791, 1.0000),
    ((10, 10, 0, 10), 0.6075, 1.0000),
]


@pytest.mark.parametrize(("successes", "trials", "low", "high"), WILSON)
def test_wilson_matches_the_published_values(
    successes: int, trials: int, low: float, high: float
) -> None:
    interval = wilson(successes, trials)
    assert interval.estimate == successes / trials
    assert (round(interval.low, 4), round(interval.high, 4)) == (low, high)


@pytest.mark.parametrize(("counts", "low", "high"), NEWCOMBE)
def test_newcombe_matches_the_published_values(
    counts: tuple[int, int, int, int], low: float, high: float
) -> None:
    interval = difference(*counts)
    assert interval.estimate == pytest.approx(counts[0] / counts[1] - counts[2] / counts[3])
    assert (round(interval.low, 4), round(interval.high, 4)) == (low, high)


def test_the_edges_are_exact() -> None:
    assert (wilson(0, 5).low, wilson(5, 5).high) == (0.0, 1.0)
    everything = difference(7, 7, 0, 9)
    assert everything.high == 1.0
    one_each = difference(0, 1, 1, 1)
    assert one_each.estimate == -1.0
    assert one_each.low == -1.0
    assert one_each.high > 0  # one run per group proves nothing


def test_the_interval_narrows_with_more_runs_and_other_levels() -> None:
    small = difference(30, 100, 20, 100)
    large = difference(3000, 10000, 2000, 10000)
    assert large.high - large.low < small.high - small.low
    assert large.low > 0  # ten points of lift on 10,000 runs each is clear
    wide = difference(30, 100, 20, 100, confidence=0.99)
    assert wide.low < small.low and wide.high > small.high


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((1, 0), "at least one trial"),
        ((3, 2), "between 0 and 2"),
        ((-1, 2), "between 0 and 2"),
    ],
)
def test_impossible_counts_are_refused(args: tuple[int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        wilson(*args)


def test_confidence_must_be_a_probability() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        wilson(1, 2, confidence=1.0)


def test_lift_needs_both_groups() -> None:
    assert lift(10, 100, 0, 0) is None
    assert lift(0, 0, 1, 10) is None
    measured = lift(30, 100, 2, 10)
    assert measured is not None
    assert measured.difference == pytest.approx(0.1)
    assert not measured.significant
    zero = lift(0, 50, 0, 50)
    assert zero is not None
    assert (zero.difference, zero.significant) == (0.0, False)
    assert zero.low < 0 < zero.high
    clear = lift(500, 1000, 100, 1000)
    assert clear is not None and clear.significant
    assert rate(0, 0) is None
    assert rate(1, 4) == 0.25


def test_assemble_orders_steps_and_adds_up_versions() -> None:
    counts = [
        CountRow(1, "a", "entered", "", 10),
        CountRow(1, "b", "skipped", "frequency_cap", 2),
        CountRow(1, "b", "skipped", "", 1),
        CountRow(1, "", "exited", "completed", 7),
        CountRow(2, "c", "sent", "", 4),
        CountRow(2, "b", "exited", "archived", 1),
    ]
    groups = [
        GroupRow(1, False, 8, 4),
        GroupRow(1, True, 2, 0),
        GroupRow(2, False, 4, 1),
    ]
    active = [ActiveRow(1, "b", 1), ActiveRow(2, "c", 2)]
    stats = assemble(
        "j",
        versions=[1, 3],
        counts=counts,
        groups=groups,
        active=active,
        step_orders={1: ["b", "a"], 3: ["x"]},
        with_total=True,
    )
    assert [v.version for v in stats.versions] == [1, 2, 3]
    v1, v2, v3 = stats.versions
    assert [s.step for s in v1.steps] == ["b", "a"]
    assert v1.steps[0].counts["skipped"].total == 3
    assert v1.steps[0].counts["skipped"].reasons == {"frequency_cap": 2}
    assert (v1.entered, v1.active, v1.goal_reached) == (10, 1, 4)
    assert v1.exited.reasons == {"completed": 7}
    assert (v1.treated.rate, v1.holdout.rate) == (0.5, 0.0)
    assert v1.lift is not None and v1.lift.difference == 0.5
    assert [s.step for s in v2.steps] == ["b", "c"]  # no known order: by name
    assert v2.lift is None
    assert (v3.entered, [s.step for s in v3.steps], v3.lift) == (0, ["x"], None)
    total = stats.total
    assert total is not None
    assert (total.version, total.entered, total.active, total.goal_reached) == (None, 14, 3, 5)
    assert total.exited.total == 8
    assert total.treated.runs == 12
    assert [s.step for s in total.steps][:3] == ["x", "b", "a"]  # newest version's order first
