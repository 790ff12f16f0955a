"""Time-relative comparisons (older_than, within) and next_change_at, on a fixed clock."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from services.journey.domain.conditions import (
    Condition,
    boundaries,
    evaluate,
    next_change_at,
)
from services.journey.domain.validation import validate_journey

ORDERED = datetime(2024, 1, 10, 8, 30, tzinfo=UTC)
DAY = timedelta(days=1)
TICK = timedelta(microseconds=1)


def condition(doc: dict[str, Any]) -> Condition:
    return TypeAdapter(Condition).validate_python(doc)


def rfc(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def context(now: datetime, **profile: Any) -> dict[str, Any]:
    return {"now": rfc(now), "profile": profile, "customer": {}}


NO_ORDER_90D = condition({"field": "profile.last_order_at", "op": "older_than", "value": "P90D"})
ORDERED_30D = condition({"field": "profile.last_order_at", "op": "within", "value": "P30D"})


@pytest.mark.parametrize(
    ("elapsed", "older", "within"),
    [
        (timedelta(0), False, True),
        (90 * DAY - TICK, False, True),
        (90 * DAY, True, False),  # the boundary belongs to older_than: day 90 is "90 days ago"
        (400 * DAY, True, False),
        (-DAY, False, True),  # an instant in the future (clock skew) is recent, not old
    ],
)
def test_older_than_and_within_are_opposites_around_the_boundary(
    elapsed: timedelta, older: bool, within: bool
) -> None:
    ctx = context(ORDERED + elapsed, last_order_at=rfc(ORDERED))
    assert evaluate(NO_ORDER_90D, ctx) is older
    recent = condition({"field": "profile.last_order_at", "op": "within", "value": "P90D"})
    assert evaluate(recent, ctx) is within


@pytest.mark.parametrize(
    "value",
    [None, "not a time", 1_704_875_400, True, {"at": "2024-01-10"}],
    ids=["null", "text", "number", "bool", "object"],
)
def test_a_missing_or_unreadable_instant_is_neither_old_nor_recent(value: Any) -> None:
    ctx = context(ORDERED + 400 * DAY, last_order_at=value)
    assert evaluate(NO_ORDER_90D, ctx) is False
    assert evaluate(ORDERED_30D, ctx) is False
    never = condition({"field": "profile.last_order_at", "op": "exists", "value": False})
    assert evaluate(never, ctx) is (value is None)


def test_a_missing_field_or_now_makes_the_comparison_false() -> None:
    assert evaluate(NO_ORDER_90D, context(ORDERED + 400 * DAY)) is False
    assert evaluate(NO_ORDER_90D, {"profile": {"last_order_at": rfc(ORDERED)}}) is False
    # ... so "not older_than" holds for a customer who never ordered.
    assert evaluate(condition({"not": NO_ORDER_90D.model_dump()}), context(ORDERED)) is True


def test_instants_are_read_with_offsets_dates_and_datetimes() -> None:
    # 09:30+01:00 is 08:30Z: exactly 90 days before now.
    now = ORDERED + 90 * DAY
    assert evaluate(NO_ORDER_90D, context(now, last_order_at="2024-01-10T09:30:00+01:00"))
    assert not evaluate(NO_ORDER_90D, context(now, last_order_at="2024-01-10T09:30:01+01:00"))
    # A bare date is midnight UTC; a datetime object (or a naive one, read as UTC) works too.
    assert evaluate(
        NO_ORDER_90D, context(datetime(2024, 4, 9, tzinfo=UTC), last_order_at="2024-01-10")
    )
    assert evaluate(NO_ORDER_90D, {"now": now, "profile": {"last_order_at": ORDERED}})
    naive = ORDERED.replace(tzinfo=None)
    assert evaluate(NO_ORDER_90D, {"now": now, "profile": {"last_order_at": naive}})
    assert evaluate(NO_ORDER_90D, {"now": now, "profile": {"last_order_at": date(2024, 1, 10)}})


def test_durations_with_a_time_part() -> None:
    cond = condition({"field": "profile.last_click_at", "op": "within", "value": "PT2H30M"})
    clicked = rfc(ORDERED)
    assert evaluate(
        cond, {"now": rfc(ORDERED + timedelta(hours=2)), "profile": {"last_click_at": clicked}}
    )
    assert not evaluate(
        cond,
        {
            "now": rfc(ORDERED + timedelta(hours=2, minutes=30)),
            "profile": {"last_click_at": clicked},
        },
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("P3X", "bad duration 'P3X': expected PnW"),
        ("P1M", "years and months have no fixed length"),
        (90, "'older_than' takes a duration such as 'P90D'"),
        (None, "'older_than' takes a duration such as 'P90D'"),
        ("P0D", "'older_than' takes a duration longer than zero, got 'P0D'"),
        ("-P1D", "'older_than' takes a duration longer than zero, got '-P1D'"),
    ],
)
def test_bad_durations_are_refused(value: Any, message: str) -> None:
    doc: dict[str, Any] = {"field": "profile.last_order_at", "op": "older_than"}
    if value is not None:
        doc["value"] = value
    with pytest.raises(ValidationError, match=message):
        condition(doc)


def test_a_bad_duration_is_reported_at_its_value_in_a_journey() -> None:
    where = {"all": [{"field": "customer.signed_up_at", "op": "within", "value": "P3X"}]}
    doc = {
        "id": "j",
        "version": 1,
        "name": "J",
        "trigger": {"event": "signup", "where": where},
        "start": "s",
        "steps": {"s": {"exit": True}},
    }
    problems = [str(p) for p in validate_journey(doc)]
    assert len(problems) == 1
    assert problems[0].startswith("$.trigger.where.all[0].value: bad duration 'P3X'")


# ── next_change_at ───────────────────────────────────────────────────────────────────────────


def test_next_change_is_the_instant_plus_the_duration_and_evaluating_there_flips() -> None:
    now = ORDERED + 10 * DAY
    ctx = context(now, last_order_at=rfc(ORDERED))
    at = next_change_at(NO_ORDER_90D, ctx, now)
    assert at == ORDERED + 90 * DAY
    assert evaluate(NO_ORDER_90D, {**ctx, "now": rfc(at - TICK)}) is False
    assert evaluate(NO_ORDER_90D, {**ctx, "now": rfc(at)}) is True
    # Once past, nothing more changes without a new order.
    assert next_change_at(NO_ORDER_90D, ctx, at) is None


def test_no_time_relative_comparison_no_change() -> None:
    cond = condition({"field": "profile.order_count", "op": "gte", "value": 3})
    assert next_change_at(cond, context(ORDERED, order_count=5), ORDERED) is None
    assert next_change_at(NO_ORDER_90D, context(ORDERED), ORDERED) is None  # never ordered


def test_a_boundary_that_changes_nothing_asks_for_no_timer() -> None:
    vip_lapsed = condition(
        {"all": [{"field": "customer.vip", "op": "eq", "value": True}, NO_ORDER_90D.model_dump()]}
    )
    ctx = context(ORDERED, last_order_at=rfc(ORDERED))
    assert boundaries(vip_lapsed, ctx) == {ORDERED + 90 * DAY}
    assert next_change_at(vip_lapsed, ctx, ORDERED) is None  # not a VIP: stays out
    ctx["customer"] = {"vip": True}
    assert next_change_at(vip_lapsed, ctx, ORDERED) == ORDERED + 90 * DAY


def test_the_first_boundary_that_flips_the_whole_condition_wins() -> None:
    clicked = ORDERED + 5 * DAY
    # Holds while either the order (30 days) or the click (60 days) is recent.
    recent = condition(
        {
            "any": [
                ORDERED_30D.model_dump(),
                {"field": "profile.last_click_at", "op": "within", "value": "P60D"},
            ]
        }
    )
    ctx = context(clicked, last_order_at=rfc(ORDERED), last_click_at=rfc(clicked))
    # The order leaves its 30 days first, but the click keeps the condition true until day 65.
    assert next_change_at(recent, ctx, clicked) == clicked + 60 * DAY


def test_an_instant_near_the_end_of_time_has_no_boundary() -> None:
    ctx = context(ORDERED, last_order_at="9999-12-31T00:00:00Z")
    assert next_change_at(NO_ORDER_90D, ctx, ORDERED) is None
    assert evaluate(NO_ORDER_90D, ctx) is False
    assert evaluate(ORDERED_30D, ctx) is True
