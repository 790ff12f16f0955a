"""RFM scores: recency, frequency and monetary value as 1-5 quintile scores within a workspace.

A customer's score on each dimension is the quintile of the workspace that holds them, so a 5 is
"in the best fifth of this shop's buyers", whatever the shop sells. Scores are relative: they are
recomputed on a schedule for the whole workspace at once, from the order aggregates of each
profile (last order time, order count, revenue).

- **Recency** is days from the last order to the as-of instant; more recent scores higher.
- **Frequency** is the number of orders; more scores higher.
- **Monetary** is the revenue summed over all orders (lifetime spend); more scores higher.

Quintiles by mid-rank. Each customer's percentile is ``(below + at_or_below) / (2 n)``: the
share of customers with a worse value plus half of those tied with it (itself included). The
score is ``1 + floor(5 * percentile)``, computed in integers so no rounding moves an edge. This
makes ties and small workspaces well defined and deterministic:

- tied customers always get the same score, the one at the middle of their block (if 70 % of a
  shop's buyers have one order, they share the percentile 0.35 and all get F = 2);
- with n distinct values the scores are exact quintiles when n is a multiple of 5, otherwise the
  n customers spread evenly over 1-5 (n = 3 gives 1, 3, 5; n = 2 gives 2, 4; n = 1 gives 3);
- when every customer has the same value, all get 3: nobody is better or worse than the rest.

Customers without an order (order count 0) get no scores (0) and no group; they do not take part
in the quintiles.

Named groups come from recency and the rounded-down mean of frequency and monetary
(``fm = (f + m) // 2``), a reduction of the common 11-segment RFM map to seven names, laid out as
a grid with no overlaps or gaps:

    r \\ fm  1                   2                   3        4          5
    5       potential_loyalist  potential_loyalist  loyal    champions  champions
    4       potential_loyalist  potential_loyalist  loyal    champions  champions
    3       needs_attention     needs_attention     loyal    loyal      loyal
    2       hibernating         hibernating         at_risk  at_risk    at_risk
    1       lost                lost                at_risk  at_risk    at_risk

Of the 11 segments, Recent Customers, Promising and Potential Loyalist become
``potential_loyalist``; About to Sleep and Needing Attention become ``needs_attention``; Can't
Lose Them and At Risk become ``at_risk``; Champions, Loyal, Hibernating and Lost keep their
names. Rounding fm down means a one-time buyer who spent a lot is not a champion on spend alone.

Vectorised with numpy: one sort per dimension, O(n log n). Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
ScoreArray = npt.NDArray[np.int8]

SECONDS_PER_DAY: Final = 86_400.0

GROUPS: Final = (
    "champions",
    "loyal",
    "potential_loyalist",
    "needs_attention",
    "at_risk",
    "hibernating",
    "lost",
)
"""The group names, in the order of their codes (``RfmScores.group`` holds indexes into this)."""

NO_GROUP: Final = -1

_C, _L, _P, _N, _A, _H, _X = range(len(GROUPS))
# _GRID[r - 1][fm - 1]: the table in the module docstring, bottom row first.
_GRID: Final = np.array(
    [
        [_X, _X, _A, _A, _A],  # r = 1
        [_H, _H, _A, _A, _A],  # r = 2
        [_N, _N, _L, _L, _L],  # r = 3
        [_P, _P, _L, _C, _C],  # r = 4
        [_P, _P, _L, _C, _C],  # r = 5
    ],
    dtype=np.int8,
)


class CustomerOrders(NamedTuple):
    """One profile's order aggregates, as the journey service keeps them."""

    customer_id: str
    last_order_at: datetime | None
    order_count: int
    revenue: float


@dataclass(frozen=True, slots=True)
class RfmScores:
    """Scores of one workspace's customers, aligned with the input; customers without an order
    have 0 scores, NaN recency and ``NO_GROUP``."""

    recency_days: FloatArray
    r: ScoreArray
    f: ScoreArray
    m: ScoreArray
    group: ScoreArray

    def group_names(self) -> list[str | None]:
        return [None if code == NO_GROUP else GROUPS[code] for code in self.group.tolist()]


@dataclass(frozen=True, slots=True)
class CustomerRfm:
    customer_id: str
    recency_days: float | None
    r: int
    f: int
    m: int
    group: str | None


def quintile_scores(values: npt.ArrayLike) -> ScoreArray:
    """1-5 scores of ``values`` (higher value, higher score) by mid-rank percentile."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"values must be one-dimensional, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError("values must be finite numbers")
    n = v.size
    if n == 0:
        return np.zeros(0, dtype=np.int8)
    ordered = np.sort(v)
    below = np.searchsorted(ordered, v, side="left").astype(np.int64)
    at_or_below = np.searchsorted(ordered, v, side="right").astype(np.int64)
    scores: npt.NDArray[np.int64] = 1 + (5 * (below + at_or_below)) // (2 * n)
    return np.minimum(scores, 5).astype(np.int8)


def group_codes(r: npt.ArrayLike, f: npt.ArrayLike, m: npt.ArrayLike) -> ScoreArray:
    """Group code (index into ``GROUPS``) per customer; ``NO_GROUP`` where a score is 0."""
    ra, fa, ma = (np.asarray(s, dtype=np.int64) for s in (r, f, m))
    for name, s in (("r", ra), ("f", fa), ("m", ma)):
        if s.shape != ra.shape:
            raise ValueError(f"{name} must have the shape of r, {ra.shape}")
        if np.any((s < 0) | (s > 5)):
            raise ValueError(f"{name} scores must be between 0 and 5")
    scored = (ra > 0) & (fa > 0) & (ma > 0)
    fm = (fa + ma) // 2
    codes = np.full(ra.shape, NO_GROUP, dtype=np.int8)
    codes[scored] = _GRID[ra[scored] - 1, fm[scored] - 1]
    return codes


def group_of(r: int, f: int, m: int) -> str:
    """The named group of one customer's scores (each 1-5)."""
    if not all(1 <= s <= 5 for s in (r, f, m)):
        raise ValueError(f"scores must be between 1 and 5, got r={r} f={f} m={m}")
    return GROUPS[int(_GRID[r - 1, (f + m) // 2 - 1])]


def score_rfm(
    *,
    recency_days: npt.ArrayLike,
    order_count: npt.ArrayLike,
    revenue: npt.ArrayLike,
) -> RfmScores:
    """RFM scores of one workspace from arrays aligned by customer.

    ``recency_days`` is days since the last order (NaN for a customer who never ordered). A
    negative value, an order stamped after the as-of instant by clock skew, counts as 0.
    """
    rec = np.asarray(recency_days, dtype=np.float64)
    count = np.asarray(order_count, dtype=np.float64)
    money = np.asarray(revenue, dtype=np.float64)
    n = rec.size
    for name, arr in (("recency_days", rec), ("order_count", count), ("revenue", money)):
        if arr.ndim != 1 or arr.size != n:
            raise ValueError(f"{name} must be a one-dimensional array of {n} values")
    if not np.all(np.isfinite(count)) or np.any(count < 0) or np.any(count != np.floor(count)):
        raise ValueError("order_count must hold whole numbers ≥ 0")
    if not np.all(np.isfinite(money)):
        raise ValueError("revenue must be finite")
    buyers = count > 0
    if np.any(buyers & ~np.isfinite(rec)):
        raise ValueError("recency_days must be finite for every customer with orders")
    rec = np.where(buyers, np.maximum(rec, 0.0), np.nan)

    r = np.zeros(n, dtype=np.int8)
    f = np.zeros(n, dtype=np.int8)
    m = np.zeros(n, dtype=np.int8)
    r[buyers] = quintile_scores(-rec[buyers])
    f[buyers] = quintile_scores(count[buyers])
    m[buyers] = quintile_scores(money[buyers])
    return RfmScores(recency_days=rec, r=r, f=f, m=m, group=group_codes(r, f, m))


def days_before(as_of: datetime, instants: Iterable[datetime | None]) -> FloatArray:
    """Days from each instant to ``as_of`` (NaN for None).

    Instants must carry a time zone: a naive one would be read in the server's zone and move
    every recency by hours.
    """
    _require_aware(as_of, "as_of")
    end = as_of.timestamp()
    out: list[float] = []
    for instant in instants:
        if instant is None:
            out.append(np.nan)
            continue
        _require_aware(instant, "order time")
        out.append((end - instant.timestamp()) / SECONDS_PER_DAY)
    return np.asarray(out, dtype=np.float64)


def score_customers(rows: Sequence[CustomerOrders], as_of: datetime) -> list[CustomerRfm]:
    """RFM scores of one workspace's profiles as of ``as_of``."""
    scores = score_rfm(
        recency_days=days_before(as_of, (row.last_order_at for row in rows)),
        order_count=np.asarray([row.order_count for row in rows], dtype=np.float64),
        revenue=np.asarray([row.revenue for row in rows], dtype=np.float64),
    )
    names = scores.group_names()
    recency = scores.recency_days.tolist()
    r, f, m = scores.r.tolist(), scores.f.tolist(), scores.m.tolist()
    return [
        CustomerRfm(
            customer_id=row.customer_id,
            recency_days=None if np.isnan(recency[i]) else recency[i],
            r=r[i],
            f=f[i],
            m=m[i],
            group=names[i],
        )
        for i, row in enumerate(rows)
    ]


def _require_aware(instant: datetime, name: str) -> None:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {instant.isoformat()}")
