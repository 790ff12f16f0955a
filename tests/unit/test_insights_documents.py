"""The pure parts of services/journey/insights.py: ``--as-of`` parsing and the per-customer
insights documents, chunked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from services.journey import insights
from services.journey.domain import predictions, rfm

NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-31", datetime(2026, 3, 31, tzinfo=UTC)),
        ("2026-03-31T12:00:00Z", datetime(2026, 3, 31, 12, tzinfo=UTC)),
        ("2026-03-31T12:00:00+02:00", datetime(2026, 3, 31, 10, tzinfo=UTC)),
        ("2026-03-31T12:00:00", datetime(2026, 3, 31, 12, tzinfo=UTC)),
        (" 2026-11-23T09:30:00z ", NOW),
    ],
)
def test_as_of_reads_dates_and_instants_in_utc(text: str, expected: datetime) -> None:
    assert insights.parse_as_of(text, now=NOW) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("yesterday", "is not a date"),
        ("2026-02-30", "is not a date"),
        ("2026-11-23T09:30:01Z", "is in the future"),
        ("2026-11-24", "is in the future"),
    ],
)
def test_as_of_refuses_what_is_not_a_past_instant(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        insights.parse_as_of(text, now=NOW)


def workspace(
    counts: list[int], last_days: list[float], first_days: list[float], revenue: list[float]
) -> insights.WorkspaceInsights:
    count = np.asarray(counts, dtype=np.float64)
    money = np.asarray(revenue, dtype=np.float64)
    last = np.asarray(last_days, dtype=np.float64)
    history = predictions.purchase_history(
        first_order_days_ago=first_days,
        last_order_days_ago=last,
        order_count=count,
        revenue=money,
    )
    report = predictions.fit_models(history)
    return insights.WorkspaceInsights(
        workspace_id="w",
        as_of=NOW,
        currency="EUR",
        customer_ids=[f"c{i}" for i in range(len(counts))],
        scores=rfm.score_rfm(recency_days=last, order_count=count, revenue=money),
        history=history,
        report=report,
        forecasts=predictions.predict(report.bgnbd, report.gamma_gamma, history),
        profiles=len(counts) + 2,
        clear=["z1", "z2"],
    )


def test_documents_hold_scores_group_recency_and_predictions() -> None:
    # Three distinct values spread over 1, 3, 5 on each dimension.
    w = workspace([1, 2, 3], [30.0, 10.0, 1.256], [30.0, 40.0, 50.0], [10.0, 50.0, 90.0])
    docs = dict(w.documents(0, 3, NOW + timedelta(minutes=1)))
    assert [docs[c]["rfm"] for c in ("c0", "c1", "c2")] == [
        {"r": 1, "f": 1, "m": 1, "group": "lost", "recency_days": 30.0},
        {"r": 3, "f": 3, "m": 3, "group": "loyal", "recency_days": 10.0},
        {"r": 5, "f": 5, "m": 5, "group": "champions", "recency_days": 1.26},
    ]
    assert {d["computed_at"] for d in docs.values()} == {"2026-11-23T09:31:00Z"}
    whole = w.forecasts
    assert whole is not None
    assert [
        {k: v for k, v in d["predictions"].items() if k != "reliable"} for d in docs.values()
    ] == (whole.fields())
    assert {d["predictions"]["reliable"] for d in docs.values()} == {False}  # three customers


def test_a_slice_is_the_same_as_the_whole() -> None:
    w = workspace(
        [1, 2, 3, 1, 4], [3.0, 9.0, 27.0, 81.0, 5.0], [90.0] * 5, [5.0, 6.0, 7.0, 8.0, 9.0]
    )
    whole = w.documents(0, 5, NOW)
    assert w.documents(1, 4, NOW) == whole[1:4]


def test_chunks_cover_buyers_then_customers_without_orders() -> None:
    w = workspace(
        [1, 2, 3, 1, 4], [3.0, 9.0, 27.0, 81.0, 5.0], [90.0] * 5, [5.0, 6.0, 7.0, 8.0, 9.0]
    )
    chunks = list(w.chunks(2, NOW))
    assert [[c for c, _ in chunk] for chunk in chunks] == [
        ["c0", "c1"],
        ["c2", "c3"],
        ["c4"],
        ["z1", "z2"],
    ]
    empty = chunks[-1][0][1]
    assert empty == {
        "rfm": {"r": 0, "f": 0, "m": 0, "group": None, "recency_days": None},
        "predictions": {},
        "computed_at": "2026-11-23T09:30:00Z",
    }
    named = [d["rfm"]["group"] for chunk in chunks[:-1] for _, d in chunk]
    assert w.groups() == {g: named.count(g) for g in rfm.GROUPS}
