"""Customer intelligence wired into the journey engine: lifecycle stages, segments and lead bands
raised as derived events by orders, other events, insights and the customer's ``intel`` timer,
and read by journeys (segment and band triggers, branches, trigger filters, exit_when).

Pure: ``apply_event`` / ``apply_timer`` / ``apply_insights`` on a ``CustomerState`` with a
``JourneyCatalog``, time a plain datetime passed in as ``now``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.journey.domain import engine, intelligence, lifecycle, scoring, segments
from services.journey.domain.catalog import JourneyCatalog
from services.journey.domain.customer import (
    INTEL_TIMER,
    MAX_DERIVED_DEPTH,
    Changes,
    CustomerState,
    apply_event,
    apply_insights,
    apply_timer,
)
from services.journey.domain.definitions import Journey
from services.journey.domain.intelligence import Derived, Intelligence, OrderRecord
from services.journey.domain.profile import RECENT_ORDERS

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
DAY = timedelta(days=1)
US = timedelta(microseconds=1)
POLICY = engine.Policy()
DEFAULT = intelligence.default()
RULES = DEFAULT.score_rules

# Score rules that give orders no points: the only time-only changes after an order are then
# the lifecycle's and the segments' (no band decay in between).
QUIET = Intelligence(
    score_rules=scoring.ScoreRules.model_validate(
        {"rules": [{"id": "view", "event": "product_viewed", "points": 1}]}
    )
)


@dataclass(frozen=True)
class Event:
    event_id: str
    type: str
    occurred_at: datetime
    properties: dict[str, Any] = field(default_factory=dict)
    traits: dict[str, Any] = field(default_factory=dict)


_ids = iter(range(1_000_000))


def ev(type: str, at: datetime = T0, **properties: Any) -> Event:
    traits = properties.pop("traits", {})
    return Event(f"e{next(_ids)}", type, at, properties, traits)


def order(order_id: str, at: datetime = T0, total: str = "50.00", **more: Any) -> Event:
    return ev("order_completed", at, order_id=order_id, total=total, currency="USD", **more)


def journey(journey_id: str, trigger: dict[str, Any], **over: Any) -> Journey:
    doc: dict[str, Any] = {
        "id": journey_id,
        "version": 1,
        "name": journey_id,
        "trigger": trigger,
        "start": "hello",
        "steps": {"hello": {"send": {"channel": "email", "template": journey_id}}},
    }
    doc.update(over)
    return Journey.model_validate(doc)


def stage_is(to: str) -> dict[str, Any]:
    return {
        "event": "lifecycle_stage_changed",
        "where": {"field": "event.properties.to", "op": "eq", "value": to},
    }


def state(customer: str = "c1") -> CustomerState:
    return CustomerState("w", customer, traits={"email": f"{customer}@example.com"})


def feed(
    s: CustomerState,
    catalog: JourneyCatalog,
    event: Event,
    *,
    now: datetime | None = None,
    live: bool = True,
    intel: Intelligence | None = None,
) -> Changes:
    return apply_event(
        s,
        event,
        catalog=catalog,
        policy=POLICY,
        now=now or event.occurred_at,
        live=live,
        intel=intel,
    )


def fire(
    s: CustomerState, catalog: JourneyCatalog, now: datetime, intel: Intelligence | None = None
) -> Changes:
    return apply_timer(s, INTEL_TIMER, catalog=catalog, policy=POLICY, now=now, intel=intel)


def derived(changes: Changes, *types: str) -> list[tuple[str, dict[str, Any]]]:
    return [(e.type, e.properties) for _, e, _ in changes.events if not types or e.type in types]


def sent(changes: Changes) -> list[str]:
    return [m.send.template for m in changes.messages]


def due(s: CustomerState) -> datetime | None:
    return s.timers().get(INTEL_TIMER)


def score_now(s: CustomerState, at: datetime, intel: Intelligence = DEFAULT) -> float:
    return scoring.score(s.facts.lead, intel.score_rules, at)


# ── Lifecycle stages ──────────────────────────────────────────────────────────────────────────


def test_a_first_order_makes_a_first_time_buyer_and_a_second_an_active_customer() -> None:
    catalog = JourneyCatalog(
        [journey("first", stage_is("first_time_buyer")), journey("again", stage_is("active"))]
    )
    s = state()
    first = feed(s, catalog, order("A"))
    assert derived(first, lifecycle.EVENT_TYPE) == [
        (
            "lifecycle_stage_changed",
            {"from": "subscriber", "to": "first_time_buyer", "reason": "first_order"}
            | {"rhythm_days": 45.0},
        )
    ]
    assert s.facts.stage == "first_time_buyer"
    assert sent(first) == ["first"]
    [(_, entered, live)] = [e for e in first.events if e[1].type == lifecycle.EVENT_TYPE]
    assert live and entered.occurred_at == T0

    second = feed(s, catalog, order("B", T0 + 10 * DAY))
    [(_, props)] = derived(second, lifecycle.EVENT_TYPE)
    assert (props["from"], props["to"], props["reason"]) == (
        "first_time_buyer",
        "active",
        "repeat_order",
    )
    assert props["rhythm_days"] == 10.0
    assert s.recipient()["stage"] == "active"
    assert sent(second) == ["again"]  # the first-buyer journey is not entered again


def test_cancelling_the_only_order_takes_the_customer_back_to_subscriber() -> None:
    s = state()
    catalog = JourneyCatalog()
    feed(s, catalog, order("A"))
    changes = feed(s, catalog, ev("order_cancelled", T0 + DAY, order_id="A"))
    [(_, props)] = derived(changes, lifecycle.EVENT_TYPE)
    assert (props["from"], props["to"], props["reason"]) == (
        "first_time_buyer",
        "subscriber",
        "orders_cancelled",
    )
    assert derived(changes, "segment_exited") == [
        ("segment_exited", {"segment": "one_time_buyer", "entered_at": "2026-03-02T10:00:00Z"})
    ]
    # The order log marks the order cancelled (its value stays as logged).
    assert changes.orders == [(s, OrderRecord("A", T0, None, cancelled=True))]


# ── Segment triggers ──────────────────────────────────────────────────────────────────────────


def test_segment_triggers_start_journeys_on_entering_and_on_leaving_a_builtin_segment() -> None:
    catalog = JourneyCatalog(
        [
            journey("nudge", {"segment": "one_time_buyer"}),
            journey("graduated", {"segment": "one_time_buyer", "on": "exited"}),
        ]
    )
    s = state()
    first = feed(s, catalog, order("A"))
    assert derived(first, "segment_entered", "segment_exited") == [
        ("segment_entered", {"segment": "one_time_buyer"})
    ]
    assert sent(first) == ["nudge"]
    assert s.facts.segments.members == {"one_time_buyer": T0}

    second = feed(s, catalog, order("B", T0 + 3 * DAY))
    assert (
        "segment_exited",
        {"segment": "one_time_buyer", "entered_at": "2026-03-02T10:00:00Z"},
    ) in (derived(second))
    assert sent(second) == ["graduated"]
    assert "one_time_buyer" not in s.facts.segments.members
    # Two orders three days apart: occasional (not yet a regular).
    assert ("segment_entered", {"segment": "occasional"}) in derived(second)


def test_a_segment_trigger_on_a_workspace_segment_replacing_a_builtin_one() -> None:
    mine = segments.parse_segment(
        {
            "id": "one_time_buyer",
            "name": "Big first order",
            "condition": {
                "all": [
                    {"field": "profile.order_count", "op": "eq", "value": 1},
                    {"field": "profile.revenue", "op": "gte", "value": 100},
                ]
            },
        }
    )
    intel = Intelligence(segments=intelligence.with_segments(intelligence.builtin(), [mine]))
    assert [d.id for d in intel.segments] == [d.id for d in intelligence.builtin()]
    catalog = JourneyCatalog([journey("nudge", {"segment": "one_time_buyer"})])
    small, big = state("small"), state("big")
    assert sent(feed(small, catalog, order("A", total="20"), intel=intel)) == []
    assert sent(feed(big, catalog, order("A", total="120"), intel=intel)) == ["nudge"]


# ── Time alone: the intel timer ───────────────────────────────────────────────────────────────


def test_no_order_in_90_days_is_entered_by_the_intel_timer_exactly_on_day_90() -> None:
    catalog = JourneyCatalog([journey("winback", {"segment": "no_order_90d"})])
    s = state()
    feed(s, catalog, order("A"), intel=QUIET)
    assert due(s) == T0 + 90 * DAY

    early = fire(s, catalog, T0 + 90 * DAY - US, intel=QUIET)
    assert (early.events, early.messages, early.activity) == ([], [], [])
    assert "no_order_90d" not in s.facts.segments.members
    assert due(s) == T0 + 90 * DAY  # still set for day 90

    on_time = fire(s, catalog, T0 + 90 * DAY, intel=QUIET)
    assert ("segment_entered", {"segment": "no_order_90d"}) in derived(on_time)
    assert sent(on_time) == ["winback"]
    assert s.facts.segments.members["no_order_90d"] == T0 + 90 * DAY
    # The same instant: at risk (a one-time buyer's default gap is 45 days, twice that).
    [(_, props)] = derived(on_time, lifecycle.EVENT_TYPE)
    assert (props["from"], props["to"], props["reason"]) == (
        "first_time_buyer",
        "at_risk",
        "no_recent_order",
    )
    assert all(live for _, _, live in on_time.events)
    # Next: lapsed at four times the gap.
    assert due(s) == T0 + 180 * DAY

    # The timer leased twice (a replay at the same instant) finds nothing more to do.
    again = fire(s, catalog, T0 + 90 * DAY, intel=QUIET)
    assert (again.events, again.messages) == ([], [])

    lapsed = fire(s, catalog, T0 + 180 * DAY, intel=QUIET)
    [(_, props)] = derived(lapsed)
    assert (props["from"], props["to"]) == ("at_risk", "lapsed")
    assert s.facts.stage == "lapsed"
    assert due(s) is None  # nothing changes any more without an event


def test_the_next_order_leaves_no_order_90d_and_reactivates() -> None:
    catalog = JourneyCatalog(
        [
            journey("back", {"segment": "no_order_90d", "on": "exited"}),
            journey("welcome-back", stage_is("reactivated")),
        ]
    )
    s = state()
    feed(s, catalog, order("A"), intel=QUIET)
    fire(s, catalog, T0 + 90 * DAY, intel=QUIET)
    changes = feed(s, catalog, order("B", T0 + 100 * DAY), intel=QUIET)
    assert sorted(sent(changes)) == ["back", "welcome-back"]
    [(_, props)] = derived(changes, lifecycle.EVENT_TYPE)
    assert (props["from"], props["to"], props["reason"]) == (
        "at_risk",
        "reactivated",
        "order_after_gap",
    )


def test_with_the_default_rules_the_timer_walks_through_every_time_only_change() -> None:
    s = state()
    catalog = JourneyCatalog()
    feed(s, catalog, order("A"))  # 40 points: warm
    assert s.facts.band == "warm"
    seen: list[tuple[datetime, str, str]] = []
    while (when := due(s)) is not None:
        for _, e, _ in fire(s, catalog, when).events:
            seen.append((when, e.type, str(e.properties.get("to") or e.properties["segment"])))
    # 40 points halve to the warm floor (20) after one half-life; warm holds at exactly 20.
    assert seen == [
        (T0 + 30 * DAY + US, "lead_band_changed", "cold"),
        (T0 + 90 * DAY, "lifecycle_stage_changed", "at_risk"),
        (T0 + 90 * DAY, "segment_entered", "no_order_90d"),
        (T0 + 180 * DAY, "lifecycle_stage_changed", "lapsed"),
    ]


# ── Lead score ────────────────────────────────────────────────────────────────────────────────


def test_events_earn_points_per_the_default_rules_and_crossing_a_band_is_announced() -> None:
    catalog = JourneyCatalog(
        [
            journey(
                "sales-call",
                {
                    "event": "lead_band_changed",
                    "where": {"field": "event.properties.to", "op": "eq", "value": "hot"},
                },
            )
        ]
    )
    s = state()
    changes = Changes()
    for _ in range(7):  # 2 points each, capped at 10 a day
        changes.extend(feed(s, catalog, ev("product_viewed")))
    assert score_now(s, T0) == 10
    assert derived(changes, scoring.EVENT_TYPE) == []
    assert s.facts.band is None  # cold, where everyone starts, is never announced
    changes = feed(s, catalog, ev("cart_updated"))
    changes.extend(feed(s, catalog, ev("cart_updated")))  # 5 + 5: 20, the warm floor
    assert score_now(s, T0) == 20
    assert derived(changes) == [
        ("lead_band_changed", {"from": "cold", "to": "warm", "score": 20.0})
    ]
    assert sent(changes) == []

    changes = feed(s, catalog, ev("checkout_started"))  # 35
    assert derived(changes) == []
    changes = feed(s, catalog, order("A"))  # 75
    assert derived(changes, scoring.EVENT_TYPE) == [
        ("lead_band_changed", {"from": "warm", "to": "hot", "score": 75.0})
    ]
    assert sent(changes) == ["sales-call"]
    assert intelligence.lead_view(s.facts, DEFAULT, T0) == {"score": 75.0, "band": "hot"}


def test_decay_alone_moves_the_band_down_when_the_intel_timer_fires() -> None:
    catalog = JourneyCatalog(
        [
            journey(
                "cooled",
                {
                    "event": "lead_band_changed",
                    "where": {"field": "event.properties.from", "op": "eq", "value": "hot"},
                },
            )
        ]
    )
    s = state()
    feed(s, catalog, ev("checkout_started"))
    feed(s, catalog, order("A"))  # 15 + 40 = 55: warm
    feed(s, catalog, ev("checkout_started", T0 + DAY))
    assert s.facts.band == "hot"
    value = score_now(s, T0 + DAY)
    # S · 2^(-t / 30 days) = 60
    expected = T0 + DAY + timedelta(days=30) * math.log2(value / 60)
    when = due(s)
    assert when is not None and timedelta(0) <= when - expected < timedelta(milliseconds=1)

    assert fire(s, catalog, when - US).events == []
    assert s.facts.band == "hot"
    changes = fire(s, catalog, when)
    [(_, props)] = derived(changes)
    assert (props["from"], props["to"]) == ("hot", "warm")
    assert props["score"] == pytest.approx(60, abs=0.01)
    assert sent(changes) == ["cooled"]
    assert s.facts.band == "warm"


def test_negative_points_move_the_band_down_at_once() -> None:
    s = state()
    catalog = JourneyCatalog()
    feed(s, catalog, order("A"))
    changes = feed(s, catalog, ev("message_unsubscribed", T0 + DAY))
    [(_, props)] = derived(changes, scoring.EVENT_TYPE)
    assert (props["from"], props["to"]) == ("warm", "cold")
    assert s.facts.band == "cold"


def test_a_segment_on_a_lead_score_between_bands_is_left_when_decay_crosses_it() -> None:
    engaged = segments.parse_segment(
        {
            "id": "engaged",
            "name": "Engaged",
            "condition": {"field": "lead.score", "op": "gte", "value": 30},
        }
    )
    intel = Intelligence(segments=(engaged,))
    s = state()
    catalog = JourneyCatalog()
    feed(s, catalog, order("A"), intel=intel)  # 40 points
    assert "engaged" in s.facts.segments.members
    # 40 decays below 29.995 (lead.score reads two decimals) long before the warm floor.
    crossing = T0 + timedelta(days=30) * math.log2(40 / 29.995)
    when = due(s)
    assert when is not None and abs(when - crossing) < timedelta(milliseconds=1)
    assert fire(s, catalog, when - US, intel=intel).events == []
    assert "engaged" in s.facts.segments.members
    changes = fire(s, catalog, when, intel=intel)
    assert derived(changes) == [
        ("segment_exited", {"segment": "engaged", "entered_at": "2026-03-02T10:00:00Z"})
    ]
    assert intelligence.lead_view(s.facts, intel, when)["score"] < 30


# ── Conditions of journeys on the facts ───────────────────────────────────────────────────────


def _branching(condition: dict[str, Any]) -> JourneyCatalog:
    return JourneyCatalog(
        [
            journey(
                "route",
                {"event": "signup"},
                start="check",
                steps={
                    "check": {"branch": condition, "then": "yes", "else": "no"},
                    "yes": {"send": {"channel": "email", "template": "yes"}},
                    "no": {"send": {"channel": "email", "template": "no"}},
                },
            )
        ]
    )


def _hot(s: CustomerState, catalog: JourneyCatalog) -> None:
    feed(s, catalog, ev("checkout_started", T0 - DAY))
    feed(s, catalog, ev("checkout_started", T0 - DAY))
    feed(s, catalog, order("A", T0 - DAY))  # 70 points


def _active(s: CustomerState, catalog: JourneyCatalog) -> None:
    feed(s, catalog, order("A", T0 - 20 * DAY), intel=QUIET)
    feed(s, catalog, order("B", T0 - 10 * DAY), intel=QUIET)


def _insights(**found: Any) -> Any:
    def prepare(s: CustomerState, catalog: JourneyCatalog) -> None:
        insights = {"rfm": {}, "predictions": {}, "computed_at": "2026-03-01T00:00:00Z"} | found
        apply_insights(s, insights, catalog=catalog, policy=POLICY, now=T0 - DAY)

    return prepare


@pytest.mark.parametrize(
    ("condition", "prepare"),
    [
        ({"field": "lead.band", "op": "eq", "value": "hot"}, _hot),
        ({"field": "stage", "op": "eq", "value": "active"}, _active),
        (
            {"field": "rfm.group", "op": "eq", "value": "champions"},
            _insights(rfm={"r": 5, "f": 5, "m": 5, "group": "champions"}),
        ),
        (
            {"field": "predictions.p_alive", "op": "gte", "value": 0.5},
            _insights(predictions={"p_alive": 0.82, "expected_orders_90d": 1.4}),
        ),
    ],
    ids=["lead.band", "stage", "rfm.group", "predictions.p_alive"],
)
def test_a_branch_reads_the_customers_facts(condition: dict[str, Any], prepare: Any) -> None:
    catalog = _branching(condition)
    known, unknown = state("known"), state("unknown")
    prepare(known, catalog)
    assert sent(feed(known, catalog, ev("signup"))) == ["yes"]
    assert sent(feed(unknown, catalog, ev("signup"))) == ["no"]


def test_a_branch_reads_the_band_as_decayed_when_the_run_gets_there() -> None:
    delayed = journey(
        "route",
        {"event": "signup"},
        start="pause",
        steps={
            "pause": {"wait": "P30D", "next": "check"},
            "check": {
                "branch": {"field": "lead.band", "op": "eq", "value": "hot"},
                "then": "yes",
                "else": "no",
            },
            "yes": {"send": {"channel": "email", "template": "yes"}},
            "no": {"send": {"channel": "email", "template": "no"}},
        },
    )
    catalog = JourneyCatalog([delayed])
    s = state()
    _hot(s, catalog)
    assert sent(feed(s, catalog, ev("signup"))) == []
    [timer] = [n for n in s.timers() if n.startswith("run:")]
    later = apply_timer(s, timer, catalog=catalog, policy=POLICY, now=T0 + 30 * DAY)
    assert sent(later) == ["no"]  # 70 points a month ago are about 34 now: warm


def test_a_trigger_filter_and_exit_when_read_the_profile() -> None:
    first_only = journey(
        "thanks-first",
        {
            "event": "order_completed",
            "where": {"field": "profile.order_count", "op": "eq", "value": 1},
        },
        reentry="always",
    )
    courting = journey(
        "courting",
        {"event": "signup"},
        start="wait",
        steps={
            "wait": {"wait": "P30D", "next": "hello"},
            "hello": {"send": {"channel": "email", "template": "courting"}},
        },
        exit_when=[
            {
                "event": "order_completed",
                "where": {"field": "profile.order_count", "op": "gte", "value": 2},
            }
        ],
    )
    catalog = JourneyCatalog([first_only, courting])
    s = state()
    feed(s, catalog, ev("signup"))
    first = feed(s, catalog, order("A", T0 + DAY))
    assert sent(first) == ["thanks-first"]
    assert [i.journey_id for i in s.instances.values() if i.active] == ["courting"]
    second = feed(s, catalog, order("B", T0 + 2 * DAY))
    assert sent(second) == []  # order_count is 2 when the filter reads it
    exited = [(a.journey_id, a.kind, a.reason) for a in second.activity if a.kind == "exited"]
    assert exited == [("courting", "exited", "exit_when")]
    assert not any(i.active for i in s.instances.values())


# ── Duplicates and history ────────────────────────────────────────────────────────────────────


def test_an_order_reported_twice_counts_once_everywhere() -> None:
    twice = segments.parse_segment(
        {
            "id": "two_orders_30d",
            "name": "Two orders in 30 days",
            "windows": [
                {"name": "orders", "event": "order_completed", "within": "P30D", "min_count": 2}
            ],
        }
    )
    intel = Intelligence(segments=intelligence.with_segments(intelligence.builtin(), [twice]))
    catalog = JourneyCatalog([journey("first", stage_is("first_time_buyer"))])
    s = state()
    first = feed(s, catalog, order("A"), intel=intel)
    again = feed(s, catalog, order("A", T0 + DAY), intel=intel)
    assert s.facts.profile.order_count == 1
    assert score_now(s, T0, intel) == 40  # one order's points, not two
    assert first.orders == [(s, OrderRecord("A", T0, 50.0))]
    assert (again.orders, again.events, again.messages) == ([], [], [])
    assert "two_orders_30d" not in s.facts.segments.members
    # A different order does count.
    other = feed(s, catalog, order("B", T0 + 2 * DAY), intel=intel)
    assert ("segment_entered", {"segment": "two_orders_30d"}) in derived(other)
    assert [r for _, r in other.orders] == [OrderRecord("B", T0 + 2 * DAY, 50.0)]


def test_a_cancellation_reported_twice_earns_its_points_once() -> None:
    rules = scoring.ScoreRules.model_validate(
        {"rules": [{"id": "cancelled", "event": "order_cancelled", "points": -10}]}
    )
    intel = Intelligence(score_rules=rules)
    s = state()
    catalog = JourneyCatalog()
    feed(s, catalog, order("A"), intel=intel)
    once = feed(s, catalog, ev("order_cancelled", T0 + DAY, order_id="A"), intel=intel)
    twice = feed(s, catalog, ev("order_cancelled", T0 + DAY, order_id="A"), intel=intel)
    assert scoring.score(s.facts.lead, rules, T0 + DAY) == -10
    assert [r.cancelled for _, r in once.orders] == [True]
    assert twice.orders == []


def test_history_builds_the_facts_and_raises_derived_events_but_starts_no_run() -> None:
    catalog = JourneyCatalog(
        [
            journey("first", stage_is("first_time_buyer")),
            journey("nudge", {"segment": "one_time_buyer"}),
        ]
    )
    s = state()
    changes = feed(s, catalog, order("A", T0 - 10 * DAY), now=T0, live=False)
    assert (changes.messages, changes.activity, s.instances) == ([], [], {})
    assert s.facts.profile.order_count == 1
    assert s.facts.stage == "first_time_buyer"
    assert set(s.facts.segments.members) == {"one_time_buyer"}
    assert {e.type for _, e, _ in changes.events} == {
        "lead_band_changed",
        "lifecycle_stage_changed",
        "segment_entered",
    }
    assert not any(live for _, _, live in changes.events)
    assert changes.orders == [(s, OrderRecord("A", T0 - 10 * DAY, 50.0))]
    assert s.entries == {}  # nothing entered, so a live event later may still enter


def test_an_order_older_than_every_remembered_one_still_reaches_the_order_log() -> None:
    s = state()
    catalog = JourneyCatalog()
    recorded: list[OrderRecord] = []
    for i in range(RECENT_ORDERS + 1):  # newest first: the last is the oldest
        changes = feed(s, catalog, order(f"A{i}", T0 - i * DAY, total="5"), now=T0, live=False)
        recorded.extend(r for _, r in changes.orders)
    assert s.facts.profile.order_count == RECENT_ORDERS + 1
    assert len(recorded) == RECENT_ORDERS + 1
    assert recorded[-1] == OrderRecord(f"A{RECENT_ORDERS}", T0 - RECENT_ORDERS * DAY, 5.0)


def test_an_order_in_a_currency_without_a_rate_is_logged_without_a_value() -> None:
    s = state()
    changes = feed(
        s, JourneyCatalog(), ev("order_completed", order_id="A", total="10", currency="EUR")
    )
    assert [r for _, r in changes.orders] == [OrderRecord("A", T0, None)]


def test_derived_events_do_not_count_as_the_customer_being_seen() -> None:
    inactive = segments.parse_segment(
        {
            "id": "inactive_30d",
            "name": "Not seen for 30 days",
            "condition": {"field": "profile.last_seen_at", "op": "older_than", "value": "P30D"},
        }
    )
    intel = Intelligence(segments=(inactive,))
    catalog = JourneyCatalog([journey("miss-you", {"segment": "inactive_30d"})])
    s = state()
    feed(s, catalog, ev("page_viewed"), intel=intel)
    assert due(s) == T0 + 30 * DAY
    changes = fire(s, catalog, T0 + 30 * DAY, intel=intel)
    assert derived(changes) == [("segment_entered", {"segment": "inactive_30d"})]
    assert "inactive_30d" in s.facts.segments.members
    assert s.last_seen_at == T0
    assert sent(changes) == ["miss-you"]


def test_a_trait_set_by_a_journey_moves_segments_at_once() -> None:
    mark = journey(
        "mark-vip",
        {"event": "big_purchase"},
        start="set",
        steps={"set": {"update": {"set_trait": "vip", "value": True}}},
    )
    catalog = JourneyCatalog([mark, journey("vip-welcome", {"segment": "vip"})])
    s = state()
    changes = feed(s, catalog, ev("big_purchase"))
    assert s.traits["vip"] is True
    assert derived(changes) == [("segment_entered", {"segment": "vip"})]
    assert sent(changes) == ["vip-welcome"]


# ── Derived event ids and the depth bound ─────────────────────────────────────────────────────


def test_derived_event_ids_are_deterministic_and_distinct_per_change() -> None:
    catalog = JourneyCatalog()
    cause = order("A")
    one, same, other = state("c1"), state("c1"), state("c2")
    ids = [[e.event_id for _, e, _ in feed(s, catalog, cause).events] for s in (one, same, other)]
    assert len(ids[0]) == 3
    assert ids[0] == ids[1]  # the same cause (a redelivery, a replay) gives the same ids
    assert len(set(ids[0])) == len(ids[0])
    assert not set(ids[0]) & set(ids[2])  # another customer, other ids
    assert all(
        i.startswith(t)
        for i, t in zip(
            ids[0], ["lead_band_changed", "lifecycle_stage_changed", "segment_entered"], strict=True
        )
    )

    # A timer's changes: deterministic too, and distinct from the event's.
    fired = [
        [e.event_id for _, e, _ in fire(s, catalog, T0 + 90 * DAY).events] for s in (one, same)
    ]
    assert fired[0] == fired[1] and fired[0]
    assert not set(fired[0]) & set(ids[0])
    # A second order of the same kind of change (a new cause) gets new ids.
    later = [e.event_id for _, e, _ in feed(one, catalog, order("B", T0 + 91 * DAY)).events]
    assert later and not set(later) & (set(ids[0]) | set(fired[0]))


def test_rules_that_feed_each_other_stop_at_the_depth_bound() -> None:
    # Entering "hot_leads" costs points that drop the band out of hot, which leaves the
    # segment, which gives the points back... without a bound this never ends.
    where = {"field": "event.properties.segment", "op": "eq", "value": "hot_leads"}
    rules = scoring.ScoreRules.model_validate(
        {
            "bands": [{"name": "cold"}, {"name": "hot", "min": 50}],
            "rules": [
                {"id": "click", "event": "message_clicked", "points": 60},
                {"id": "in", "event": "segment_entered", "points": -100, "where": where},
                {"id": "out", "event": "segment_exited", "points": 100, "where": where},
            ],
        }
    )
    hot_leads = segments.parse_segment(
        {
            "id": "hot_leads",
            "name": "Hot",
            "condition": {"field": "lead.band", "op": "eq", "value": "hot"},
        }
    )
    intel = Intelligence(score_rules=rules, segments=(hot_leads,))
    catalog = JourneyCatalog([journey("hot", {"segment": "hot_leads"})])
    s = state()
    changes = feed(s, catalog, ev("message_clicked"), intel=intel)
    # Each level raises a band change and a segment change, and applies them one level down.
    assert len(changes.events) == 2 * (MAX_DERIVED_DEPTH + 1)
    ids = [e.event_id for _, e, _ in changes.events]
    assert len(set(ids)) == len(ids)
    # What was announced last is what the facts say.
    last_band = [e for _, e, _ in changes.events if e.type == scoring.EVENT_TYPE][-1]
    last_segment = [e for _, e, _ in changes.events if e.type.startswith("segment_")][-1]
    assert s.facts.band == last_band.properties["to"]
    assert ("hot_leads" in s.facts.segments.members) == (last_segment.type == "segment_entered")
    # Entered once: the journey takes no re-entry.
    assert sent(changes) == ["hot"]


# ── Insights ──────────────────────────────────────────────────────────────────────────────────


def test_insights_move_a_customer_into_vip_and_a_later_run_out_of_it() -> None:
    catalog = JourneyCatalog(
        [
            journey("vip-welcome", {"segment": "vip"}),
            journey("vip-gone", {"segment": "vip", "on": "exited"}),
        ]
    )
    s = state()
    feed(s, catalog, order("A"))
    champions = {
        "rfm": {"r": 5, "f": 5, "m": 5, "group": "champions"},
        "predictions": {"p_alive": 0.9},
        "computed_at": "2026-03-03T00:00:00Z",
    }
    entered = apply_insights(s, champions, catalog=catalog, policy=POLICY, now=T0 + DAY)
    assert sorted(p["segment"] for _, p in derived(entered, "segment_entered")) == [
        "big_spender",  # rfm.m 5
        "vip",  # rfm.group champions
    ]
    assert sent(entered) == ["vip-welcome"]
    assert s.facts.insights == champions
    # The same run applied again: nothing new.
    replay = apply_insights(s, champions, catalog=catalog, policy=POLICY, now=T0 + DAY)
    assert (replay.events, replay.messages) == ([], [])

    slipping = champions | {
        "rfm": {"r": 2, "f": 5, "m": 5, "group": "at_risk"},
        "computed_at": "2026-03-10T00:00:00Z",
    }
    left = apply_insights(s, slipping, catalog=catalog, policy=POLICY, now=T0 + 8 * DAY)
    assert ("segment_exited", {"segment": "vip", "entered_at": "2026-03-03T10:00:00Z"}) in derived(
        left
    )
    assert "big_spender" in s.facts.segments.members  # m is still 5
    assert sent(left) == ["vip-gone"]


# ── What templates and the API read ───────────────────────────────────────────────────────────


def test_the_recipient_carries_the_customers_facts() -> None:
    catalog = JourneyCatalog([journey("first", stage_is("first_time_buyer"))])
    s = state()
    apply_insights(
        s,
        {"rfm": {"group": "new"}, "predictions": {"p_alive": 0.7}, "computed_at": "x"},
        catalog=catalog,
        policy=POLICY,
        now=T0 - DAY,
    )
    changes = feed(s, catalog, order("A", total="63.90"))
    [message] = changes.messages
    recipient = s.recipient()
    assert recipient["email"] == "c1@example.com"
    assert recipient["segments"] == ["one_time_buyer"]
    assert recipient["lead"] == {"score": 40.0, "band": "warm"}
    assert recipient["stage"] == "first_time_buyer"
    assert recipient["rfm"] == {"group": "new"}
    assert recipient["predictions"] == {"p_alive": 0.7}
    profile = recipient["profile"]
    assert (profile["order_count"], profile["revenue"], profile["last_order_at"]) == (
        1,
        "63.90",
        "2026-03-02T10:00:00Z",
    )
    assert message.instance.journey_id == "first"


def test_the_timeline_keeps_the_latest_events_in_order() -> None:
    s = state()
    catalog = JourneyCatalog()
    for i in range(intelligence.TIMELINE + 5):
        feed(s, catalog, ev("page_viewed", T0 + i * DAY))
    late = ev("page_viewed", T0 + 10.5 * DAY)
    feed(s, catalog, late, now=T0 + 30 * DAY)
    timeline = s.facts.timeline
    assert len(timeline) == intelligence.TIMELINE
    assert [at for at, _, _ in timeline] == sorted(at for at, _, _ in timeline)
    assert (T0 + 10.5 * DAY, "page_viewed", late.event_id) in timeline


# ── Switched off ──────────────────────────────────────────────────────────────────────────────


def test_switched_off_it_keeps_no_facts_and_raises_nothing() -> None:
    off = Intelligence(enabled=False)
    catalog = JourneyCatalog([journey("first", stage_is("first_time_buyer"))])
    s = state()
    changes = feed(s, catalog, order("A"), intel=off)
    changes.extend(feed(s, catalog, ev("checkout_started"), intel=off))
    assert (changes.events, changes.orders, changes.messages) == ([], [], [])
    facts = s.facts
    assert facts.profile.order_count == 0 and facts.profile.recent_orders == []
    assert (facts.lead.rules, facts.band, facts.stage) == ({}, None, None)
    assert (facts.segments.members, facts.timeline, facts.due) == ({}, [], None)
    assert INTEL_TIMER not in s.timers()
    assert s.traits == {"email": "c1@example.com"}  # traits are still kept


def test_switching_it_off_drops_a_timer_set_while_it_was_on() -> None:
    s = state()
    catalog = JourneyCatalog()
    feed(s, catalog, order("A"))
    when = due(s)
    assert when is not None
    changes = fire(s, catalog, when, intel=Intelligence(enabled=False))
    assert changes.events == []
    assert INTEL_TIMER not in s.timers()  # else it stays due and fires on every poll


def test_derived_events_read_like_storefront_events() -> None:
    s = state()
    changes = feed(s, JourneyCatalog(), order("A"))
    assert [e.type for _, e, _ in changes.events] == [
        "lead_band_changed",
        "lifecycle_stage_changed",
        "segment_entered",
    ]
    for owner, event, _ in changes.events:
        assert owner is s
        assert isinstance(event, Derived)
        assert event.type in intelligence.DERIVED_TYPES
        assert event.occurred_at == T0 and event.traits == {}
