"""Conversion rates and the lift of a journey over its holdout group, with confidence intervals.

A journey with ``holdout_percent`` keeps a stable share of its customers out of every step; its
lift is the treated group's conversion rate minus the holdout group's. The interval of that
difference is Newcombe's hybrid score interval (Newcombe 1998, "Interval estimation for the
difference between independent proportions: comparison of eleven methods", method 10), built from
the Wilson score interval of each group (Wilson 1927; Newcombe 1998, "Two-sided confidence
intervals for the single proportion", method 3), without continuity correction. Unlike the usual
Wald interval it stays inside [-1, 1], behaves with zero counts and small groups, and its coverage
is close to the nominal level.

Pure functions of counts: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import sqrt
from statistics import NormalDist


@dataclass(frozen=True, slots=True)
class Interval:
    estimate: float
    low: float
    high: float


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def _check(successes: int, trials: int) -> None:
    if trials < 1:
        raise ValueError(f"a proportion needs at least one trial, got {trials}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be between 0 and {trials}, got {successes}")


def wilson(successes: int, trials: int, *, confidence: float = 0.95) -> Interval:
    """The Wilson score interval of ``successes / trials`` (at least one trial)."""
    _check(successes, trials)
    z = _z(confidence)
    p = successes / trials
    z2n = z * z / trials
    centre = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    # Exact at the edges: with no successes the lower limit is 0 (rounding makes it -1e-17).
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return Interval(p, low, high)


def difference(
    successes1: int, trials1: int, successes2: int, trials2: int, *, confidence: float = 0.95
) -> Interval:
    """Newcombe's hybrid score interval of ``p1 - p2`` for two independent proportions."""
    first = wilson(successes1, trials1, confidence=confidence)
    second = wilson(successes2, trials2, confidence=confidence)
    p1, p2 = first.estimate, second.estimate
    delta = p1 - p2
    low = delta - sqrt((p1 - first.low) ** 2 + (second.high - p2) ** 2)
    high = delta + sqrt((first.high - p1) ** 2 + (p2 - second.low) ** 2)
    return Interval(delta, max(-1.0, low), min(1.0, high))


@dataclass(frozen=True, slots=True)
class Lift:
    """Treated conversion rate minus holdout conversion rate, with its interval."""

    difference: float
    low: float
    high: float
    confidence: float

    @property
    def significant(self) -> bool:
        """The interval excludes zero: the journey changed the conversion rate."""
        return self.low > 0 or self.high < 0


def lift(
    treated_converted: int,
    treated: int,
    holdout_converted: int,
    holdout: int,
    *,
    confidence: float = 0.95,
) -> Lift | None:
    """The lift of the treated group over the holdout; None while either group is empty."""
    if treated < 1 or holdout < 1:
        return None
    interval = difference(
        treated_converted, treated, holdout_converted, holdout, confidence=confidence
    )
    return Lift(interval.estimate, interval.low, interval.high, confidence)


def rate(converted: int, runs: int) -> float | None:
    """``converted / runs``; None when there are no runs."""
    return converted / runs if runs else None
