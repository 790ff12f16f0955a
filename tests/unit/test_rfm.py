"""RFM quintile scores, their ties and tiny workspaces, and the named groups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from services.journey.domain.rfm import (
    GROUPS,
    CustomerOrders,
    group_codes,
    group_of,
    quintile_scores,
    score_customers,
    score_rfm,
)

AS_OF = datetime(2024, 6, 30, 12, tzinfo=UTC)


def test_distinct_values_fall_into_exact_quintiles() -> None:
    values = np.arange(100, dtype=float)
    scores = quintile_scores(values)
    assert np.bincount(scores, minlength=6).tolist() == [0, 20, 20, 20, 20, 20]
    # Each quintile holds the next 20 values: the edges sit between 19|20, 39|40, …
    for edge in (20, 40, 60, 80):
        assert scores[edge] == scores[edge - 1] + 1


def test_ten_values_give_two_per_score() -> None:
    scores = quintile_scores([5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 10.0, 4.0, 8.0, 6.0])
    by_value = dict(zip([5, 1, 9, 3, 7, 2, 10, 4, 8, 6], scores.tolist(), strict=True))
    assert [by_value[v] for v in range(1, 11)] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def test_scores_do_not_depend_on_input_order() -> None:
    rng = np.random.default_rng(7)
    values = rng.integers(0, 30, 500).astype(float)  # many ties
    order = rng.permutation(values.size)
    assert np.array_equal(quintile_scores(values)[order], quintile_scores(values[order]))


def test_ties_share_the_score_of_the_middle_of_their_block() -> None:
    # 70 one-order customers share the percentile 0.35: all get 2, not a spread of 1s and 2s.
    counts = np.array([1.0] * 70 + [2.0] * 15 + [3.0] * 10 + [8.0] * 5)
    scores = quintile_scores(counts)
    assert set(scores[:70].tolist()) == {2}
    assert set(scores[70:85].tolist()) == {4}  # percentile (70 + 85) / 200 = 0.775
    assert set(scores[85:95].tolist()) == {5}  # 0.9
    assert set(scores[95:].tolist()) == {5}


def test_a_tie_on_an_edge_goes_to_the_higher_score() -> None:
    # Percentile exactly 0.4 (= 2/5): 1 + floor(5 · 0.4) = 3, computed in integers.
    scores = quintile_scores([1.0, 1.0, 1.0, 1.0, 2.0])
    assert scores.tolist() == [3, 3, 3, 3, 5]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], []),
        ([42.0], [3]),
        ([1.0, 2.0], [2, 4]),
        ([1.0, 2.0, 3.0], [1, 3, 5]),
        ([1.0, 2.0, 3.0, 4.0], [1, 2, 4, 5]),
        ([7.0, 7.0, 7.0], [3, 3, 3]),
    ],
)
def test_tiny_workspaces_spread_over_the_scale(values: list[float], expected: list[int]) -> None:
    assert quintile_scores(values).tolist() == expected


def test_quintile_scores_reject_non_finite_values() -> None:
    with pytest.raises(ValueError, match="finite"):
        quintile_scores([1.0, float("nan")])


def test_recent_frequent_big_spenders_score_high() -> None:
    scores = score_rfm(
        recency_days=[1.0, 400.0, 30.0, 5.0, 200.0],
        order_count=[12, 1, 3, 2, 1],
        revenue=[900.0, 20.0, 150.0, 60.0, 35.0],
    )
    assert scores.r.tolist() == [5, 1, 3, 4, 2]
    assert scores.f.tolist() == [5, 2, 4, 3, 2]  # the two one-order customers tie
    assert scores.m.tolist() == [5, 1, 4, 3, 2]
    assert scores.group_names() == ["champions", "lost", "loyal", "loyal", "hibernating"]


def test_customers_without_orders_are_left_out_of_the_quintiles() -> None:
    scores = score_rfm(
        recency_days=[float("nan"), 3.0, 10.0, float("nan")],
        order_count=[0, 2, 1, 0],
        revenue=[0.0, 80.0, 20.0, 0.0],
    )
    assert scores.r.tolist() == [0, 4, 2, 0]
    assert scores.f.tolist() == [0, 4, 2, 0]
    assert np.isnan(scores.recency_days[[0, 3]]).all()
    assert scores.group_names()[0] is None
    assert scores.group_names()[3] is None


def test_an_order_stamped_after_as_of_counts_as_today() -> None:
    scores = score_rfm(recency_days=[-0.5, 0.0], order_count=[1, 1], revenue=[10.0, 10.0])
    assert scores.recency_days.tolist() == [0.0, 0.0]
    assert scores.r.tolist() == [3, 3]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"recency_days": [1.0], "order_count": [1.5], "revenue": [1.0]}, "order_count"),
        ({"recency_days": [1.0], "order_count": [-1], "revenue": [1.0]}, "order_count"),
        ({"recency_days": [1.0], "order_count": [1], "revenue": [float("inf")]}, "revenue"),
        ({"recency_days": [float("nan")], "order_count": [1], "revenue": [1.0]}, "recency_days"),
        ({"recency_days": [1.0, 2.0], "order_count": [1], "revenue": [1.0]}, "order_count"),
    ],
)
def test_bad_input_names_the_field(kwargs: dict[str, list[float]], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        score_rfm(**kwargs)


# The grid of the module docstring, row by row (r = 5 first), columns fm = 1 … 5.
GRID = {
    5: ["potential_loyalist"] * 2 + ["loyal"] + ["champions"] * 2,
    4: ["potential_loyalist"] * 2 + ["loyal"] + ["champions"] * 2,
    3: ["needs_attention"] * 2 + ["loyal"] * 3,
    2: ["hibernating"] * 2 + ["at_risk"] * 3,
    1: ["lost"] * 2 + ["at_risk"] * 3,
}


@pytest.mark.parametrize(
    ("r", "f", "m", "group"),
    [
        (5, 5, 5, "champions"),
        (4, 4, 5, "champions"),
        (5, 1, 5, "loyal"),  # one big order: fm = 3, not a champion on spend alone
        (5, 2, 3, "potential_loyalist"),
        (4, 1, 1, "potential_loyalist"),
        (3, 3, 3, "loyal"),
        (3, 2, 2, "needs_attention"),
        (2, 5, 5, "at_risk"),
        (1, 4, 3, "at_risk"),
        (2, 1, 2, "hibernating"),
        (1, 1, 1, "lost"),
        (1, 2, 3, "lost"),
    ],
)
def test_named_groups(r: int, f: int, m: int, group: str) -> None:
    assert group_of(r, f, m) == group


def test_every_score_combination_maps_to_the_documented_grid() -> None:
    r, f, m = (a.ravel() for a in np.meshgrid(*[np.arange(1, 6)] * 3, indexing="ij"))
    codes = group_codes(r, f, m)
    for ri, fi, mi, code in zip(r.tolist(), f.tolist(), m.tolist(), codes.tolist(), strict=True):
        assert GROUPS[code] == GRID[ri][(fi + mi) // 2 - 1]
    assert set(codes.tolist()) == set(range(len(GROUPS)))  # every group is reachable


def test_group_of_rejects_scores_outside_one_to_five() -> None:
    with pytest.raises(ValueError, match="between 1 and 5"):
        group_of(0, 3, 3)


def test_score_customers_from_profiles() -> None:
    rows = [
        CustomerOrders("c1", AS_OF - timedelta(days=2), 6, 540.0),
        CustomerOrders("c2", AS_OF - timedelta(days=300), 1, 25.0),
        CustomerOrders("c3", None, 0, 0.0),
        CustomerOrders("c4", AS_OF - timedelta(days=40, hours=12), 2, 90.0),
    ]
    scored = score_customers(rows, AS_OF)
    assert [s.customer_id for s in scored] == ["c1", "c2", "c3", "c4"]
    assert scored[0].recency_days == pytest.approx(2.0)
    assert scored[3].recency_days == pytest.approx(40.5)
    assert (scored[0].r, scored[0].f, scored[0].m, scored[0].group) == (5, 5, 5, "champions")
    assert (scored[1].r, scored[1].f, scored[1].m, scored[1].group) == (1, 1, 1, "lost")
    assert (scored[2].recency_days, scored[2].r, scored[2].group) == (None, 0, None)
    assert (scored[3].r, scored[3].f, scored[3].m) == (3, 3, 3)


def test_naive_times_are_refused() -> None:
    rows = [CustomerOrders("c1", datetime(2024, 6, 1), 1, 10.0)]
    with pytest.raises(ValueError, match="timezone-aware"):
        score_customers(rows, AS_OF)
    with pytest.raises(ValueError, match="as_of"):
        score_customers([], datetime(2024, 6, 30))
