"""Lifecycle stages measured against each customer's own buying rhythm.

* subscriber → first_time_buyer: the first order;
* first_time_buyer → active: a second order;
* first_time_buyer, active, reactivated → at_risk: no order for the at-risk threshold;
* at_risk → lapsed: no order for the lapsed threshold;
* at_risk, lapsed → reactivated: an order;
* reactivated → active: the next order;
* any → subscriber: every order cancelled.

A customer's *rhythm* is their mean gap between orders, ``(last - first) / (count - 1)``, once
they have two; before that, the workspace's ``default_gap``. They are at risk after
``at_risk_factor`` times their rhythm without an order and lapsed after ``lapsed_factor`` times
it, each clamped to the workspace's bounds: with the defaults a weekly buyer is at risk after two
quiet weeks, a quarterly one after half a year.

An order placed while at risk or lapsed makes the customer *reactivated*; the next order (within
their rhythm) makes them active again. Whether an order reactivated someone is read from the
profile itself: the gap between their last two orders against the threshold their rhythm before
that order gave. So a stage is a function of the profile, the rules and ``now``, and a customer
rebuilt from imported history lands in the same stage as one followed live.

Stages move on events (an order) and on time alone (no order for long enough):
``next_change_at`` gives the instant of the latter, for the journey service's timer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.journey.domain.durations import Duration
from services.journey.domain.profile import Profile
from services.journey.domain.validation import not_a_bool

Stage = Literal["subscriber", "first_time_buyer", "active", "at_risk", "lapsed", "reactivated"]
STAGES: tuple[Stage, ...] = (
    "subscriber",
    "first_time_buyer",
    "active",
    "at_risk",
    "lapsed",
    "reactivated",
)
START: Stage = "subscriber"
"""Where every customer starts; reaching it is not announced."""
EVENT_TYPE = "lifecycle_stage_changed"


class LifecycleRules(BaseModel):
    """A workspace's thresholds. The defaults suit a general online shop:

    * ``default_gap`` 45 days: a one-time buyer is at risk after 90 days and lapsed after 180,
      the thresholds win-back programmes commonly use when nothing else is known.
    * factors 2 and 4: at risk once a customer has let about one expected order pass, lapsed
      after about three.
    * at risk between 14 and 365 days: someone who bought twice in one day is not at risk the
      next morning, and a customer silent for a year is at risk whatever their rhythm.
    * lapsed between 30 and 730 days, for the same reasons one stage further.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_gap: Duration = Field(
        timedelta(days=45), description="The rhythm assumed for a customer with one order."
    )
    at_risk_factor: float = Field(2.0, ge=1, le=100, allow_inf_nan=False)
    lapsed_factor: float = Field(4.0, ge=1, le=100, allow_inf_nan=False)
    at_risk_min: Duration = timedelta(days=14)
    at_risk_max: Duration = timedelta(days=365)
    lapsed_min: Duration = timedelta(days=30)
    lapsed_max: Duration = timedelta(days=730)

    _factors_not_a_bool = field_validator("at_risk_factor", "lapsed_factor", mode="before")(
        not_a_bool
    )

    @model_validator(mode="after")
    def _ordered(self) -> LifecycleRules:
        # These orderings guarantee at_risk < lapsed after clamping, for every rhythm.
        if self.lapsed_factor <= self.at_risk_factor:
            raise ValueError(
                f"lapsed_factor ({self.lapsed_factor}) must be greater than at_risk_factor "
                f"({self.at_risk_factor})"
            )
        for low, high in (("at_risk_min", "at_risk_max"), ("lapsed_min", "lapsed_max")):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"{low} must not be longer than {high}")
        for at_risk, lapsed in (("at_risk_min", "lapsed_min"), ("at_risk_max", "lapsed_max")):
            if getattr(self, lapsed) <= getattr(self, at_risk):
                raise ValueError(f"{lapsed} must be longer than {at_risk}")
        return self


@dataclass(frozen=True, slots=True)
class Thresholds:
    rhythm: timedelta
    at_risk: timedelta
    """Time without an order after which the customer is at risk."""
    lapsed: timedelta


def rhythm(profile: Profile, rules: LifecycleRules) -> timedelta:
    """The customer's mean gap between orders, or the default gap with fewer than two."""
    if profile.order_count < 2 or profile.first_order_at is None or profile.last_order_at is None:
        return rules.default_gap
    return (profile.last_order_at - profile.first_order_at) / (profile.order_count - 1)


def thresholds(profile: Profile, rules: LifecycleRules) -> Thresholds:
    return _thresholds(rhythm(profile, rules), rules)


def _thresholds(gap: timedelta, rules: LifecycleRules) -> Thresholds:
    return Thresholds(
        rhythm=gap,
        at_risk=_clamp(gap * rules.at_risk_factor, rules.at_risk_min, rules.at_risk_max),
        lapsed=_clamp(gap * rules.lapsed_factor, rules.lapsed_min, rules.lapsed_max),
    )


def _clamp(value: timedelta, low: timedelta, high: timedelta) -> timedelta:
    return min(max(value, low), high)


def stage_at(
    profile: Profile, previous: Stage | None, now: datetime, rules: LifecycleRules
) -> Stage:
    """The customer's stage at ``now``.

    ``previous`` (the stage last recorded) decides only when the profile cannot: a customer with
    many orders whose order before the last is no longer remembered stays reactivated, or
    becomes it when they were at risk or lapsed."""
    last = profile.last_order_at
    if profile.order_count <= 0 or last is None:
        return "subscriber"
    limits = thresholds(profile, rules)
    quiet = now - last
    if quiet >= limits.lapsed:
        return "lapsed"
    if quiet >= limits.at_risk:
        return "at_risk"
    if profile.order_count == 1:
        return "first_time_buyer"
    came_back = _came_back(profile, rules)
    if came_back is None:
        return "reactivated" if previous in ("at_risk", "lapsed", "reactivated") else "active"
    return "reactivated" if came_back else "active"


def _came_back(profile: Profile, rules: LifecycleRules) -> bool | None:
    """Whether the last order came after the customer had gone at risk, measured on the rhythm
    of the orders before it; None when the order before the last is not known."""
    before, last, first = profile.previous_order_at, profile.last_order_at, profile.first_order_at
    if before is None or last is None or first is None:
        return None
    earlier = profile.order_count - 1  # orders up to and including ``before``
    gap = (before - first) / (earlier - 1) if earlier >= 2 else rules.default_gap
    return last - before >= _thresholds(gap, rules).at_risk


def next_change_at(
    profile: Profile, stage: Stage, now: datetime, rules: LifecycleRules
) -> datetime | None:
    """When ``stage`` moves on if no event comes: at risk, then lapsed. None for stages that
    only an order changes. At or before ``now`` when ``stage`` is already behind: due at once."""
    last = profile.last_order_at
    if last is None or stage in ("subscriber", "lapsed"):
        return None
    limits = thresholds(profile, rules)
    if stage == "at_risk":
        return last + limits.lapsed
    return last + limits.at_risk


_REASONS: dict[Stage, str] = {
    "subscriber": "orders_cancelled",
    "first_time_buyer": "first_order",
    "active": "repeat_order",
    "at_risk": "no_recent_order",
    "lapsed": "no_recent_order",
    "reactivated": "order_after_gap",
}


@dataclass(frozen=True, slots=True)
class StageChange:
    """A move between stages: the journey service emits it as ``lifecycle_stage_changed``."""

    from_: Stage
    to: Stage
    at: datetime
    reason: str
    """first_order, repeat_order, order_after_gap, no_recent_order, orders_cancelled, or
    orders (active reached in one step from imported history)."""
    rhythm: timedelta | None = None
    """The customer's rhythm when it happened (None for a subscriber)."""

    def properties(self) -> dict[str, Any]:
        """The event's properties, e.g. ``{"from": "active", "to": "at_risk", "reason":
        "no_recent_order", "rhythm_days": 30.0}``."""
        days = None if self.rhythm is None else round(self.rhythm / timedelta(days=1), 2)
        return {"from": self.from_, "to": self.to, "reason": self.reason, "rhythm_days": days}


def stage_change(
    profile: Profile, previous: Stage | None, now: datetime, rules: LifecycleRules
) -> StageChange | None:
    """The change to announce at ``now``, or None when the stage stays. ``previous`` None is a
    customer never staged: they start as subscriber."""
    before = previous or START
    after = stage_at(profile, previous, now, rules)
    if after == before:
        return None
    reason = _REASONS[after]
    if after == "active" and before in ("subscriber", "at_risk", "lapsed"):
        reason = "orders"  # reached in one step from history (an import), not by one order
    gap = rhythm(profile, rules) if profile.order_count > 0 else None
    return StageChange(from_=before, to=after, at=now, reason=reason, rhythm=gap)


__all__ = [
    "EVENT_TYPE",
    "STAGES",
    "START",
    "LifecycleRules",
    "Stage",
    "StageChange",
    "Thresholds",
    "next_change_at",
    "rhythm",
    "stage_at",
    "stage_change",
    "thresholds",
]
