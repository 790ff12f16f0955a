"""The per-customer processor: entries, re-entry, keys, timers, priority, triggers, archiving.

Time is a plain datetime passed in as ``now``: no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.journey.domain import engine
from services.journey.domain.catalog import JourneyCatalog
from services.journey.domain.customer import (
    INTEL_TIMER,
    Changes,
    CustomerState,
    apply_event,
    apply_timer,
    archive,
    drop_untracked,
    merge_into,
    schedule_all,
)
from services.journey.domain.definitions import Journey

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday
DAY = timedelta(days=1)
NO_CAPS = engine.Policy()
ONE_EMAIL_A_DAY = engine.Policy(caps=(engine.Cap("email", 1, DAY),))


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


def journey(journey_id: str = "j", steps: dict[str, Any] | None = None, **over: Any) -> Journey:
    doc: dict[str, Any] = {
        "id": journey_id,
        "version": 1,
        "name": journey_id,
        "trigger": {"event": "signup"},
        "steps": steps or {"hello": {"send": {"channel": "email", "template": f"{journey_id}-1"}}},
    }
    doc["start"] = next(iter(doc["steps"]))
    doc.update(over)
    return Journey.model_validate(doc)


def waiting(journey_id: str = "j", **over: Any) -> Journey:
    """Sends, waits three days, sends again."""
    return journey(
        journey_id,
        {
            "a": {"send": {"channel": "email", "template": f"{journey_id}-1"}, "next": "w"},
            "w": {"wait": "P3D", "next": "b"},
            "b": {"send": {"channel": "email", "template": f"{journey_id}-2"}},
        },
        **over,
    )


def state() -> CustomerState:
    return CustomerState("w", "c1")


def event_in(
    s: CustomerState,
    catalog: JourneyCatalog,
    event: Event,
    *,
    now: datetime | None = None,
    policy: engine.Policy = NO_CAPS,
    live: bool = True,
) -> Changes:
    return apply_event(
        s, event, catalog=catalog, policy=policy, now=now or event.occurred_at, live=live
    )


def fire(
    s: CustomerState,
    catalog: JourneyCatalog,
    name: str,
    now: datetime,
    policy: engine.Policy = NO_CAPS,
) -> Changes:
    return apply_timer(s, name, catalog=catalog, policy=policy, now=now)


def templates(changes: Changes) -> list[str]:
    return [m.send.template for m in changes.messages]


def activity(changes: Changes, *kinds: str) -> list[tuple[str, str, str | None, str | None]]:
    return [
        (a.journey_id, a.kind, a.step, a.reason)
        for a in changes.activity
        if not kinds or a.kind in kinds
    ]


def run_timer(s: CustomerState) -> tuple[str, datetime]:
    [(name, due)] = [(n, d) for n, d in s.timers().items() if n.startswith("run:")]
    return name, due


# ── entering ──────────────────────────────────────────────────────────────────────────────────


def test_an_event_enters_the_journeys_it_triggers() -> None:
    catalog = JourneyCatalog([waiting(), journey("other", trigger={"event": "order"})])
    s = state()
    changes = event_in(s, catalog, ev("signup", traits={"email": "ana@example.com"}))
    assert templates(changes) == ["j-1"]
    assert activity(changes, "entered") == [("j", "entered", "a", None)]
    [run] = s.instances.values()
    assert (run.journey_id, run.step, run.waiting) == ("j", "w", "wait")
    assert changes.instances == {run.run_id: run}
    assert s.entries == {"j": T0}
    assert s.traits == {"email": "ana@example.com"}
    assert s.timers() == {f"run:{run.run_id}": T0 + 3 * DAY}
    assert changes.messages[0].instance.customer_id == "c1"


def test_a_trigger_filter_reads_the_event_and_the_customer() -> None:
    where = {
        "all": [
            {"field": "event.properties.plan", "op": "eq", "value": "pro"},
            {"field": "customer.country", "op": "eq", "value": "ES"},
        ]
    }
    catalog = JourneyCatalog([journey(trigger={"event": "signup", "where": where})])
    s = state()
    assert (
        templates(event_in(s, catalog, ev("signup", plan="free", traits={"country": "ES"}))) == []
    )
    assert templates(event_in(s, catalog, ev("signup", plan="pro", traits={"country": "FR"}))) == []
    # The event's own traits are merged before the filter reads them.
    assert templates(event_in(s, catalog, ev("signup", plan="pro", traits={"country": "ES"}))) == [
        "j-1"
    ]


def test_a_segment_trigger_enters_on_its_segment_only() -> None:
    catalog = JourneyCatalog([journey(trigger={"segment": "vip"})])
    s = state()
    assert templates(event_in(s, catalog, ev("segment_entered", segment="other"))) == []
    assert templates(event_in(s, catalog, ev("segment_exited", segment="vip"))) == []
    assert templates(event_in(s, catalog, ev("segment_entered", segment="vip"))) == ["j-1"]


def test_history_builds_the_profile_but_moves_no_run() -> None:
    catalog = JourneyCatalog([waiting()])
    s = state()
    changes = event_in(s, catalog, ev("signup", traits={"plan": "pro"}), live=False)
    assert (changes.messages, changes.activity, s.instances) == ([], [], {})
    assert s.traits == {"plan": "pro"}
    assert s.first_seen_at == s.last_seen_at == T0


def test_traits_merge_and_none_clears() -> None:
    s = state()
    catalog = JourneyCatalog()
    event_in(s, catalog, ev("x", traits={"a": 1, "b": 2}))
    event_in(s, catalog, ev("x", T0 - DAY, traits={"a": 3, "c": 4}))  # older: fills c only
    assert s.traits == {"a": 1, "b": 2, "c": 4}
    assert (s.first_seen_at, s.last_seen_at) == (T0 - DAY, T0)
    event_in(s, catalog, ev("x", T0 + DAY, traits={"a": 3, "b": None}))
    assert s.traits == {"a": 3, "c": 4}


def test_the_event_that_starts_a_run_is_not_an_input_to_it() -> None:
    j = journey(
        steps={
            "w": {"wait_for": {"event": "signup", "timeout": "P1D"}, "on_event": "got"},
            "got": {"send": {"channel": "email", "template": "got"}},
        },
    )
    s = state()
    changes = event_in(s, JourneyCatalog([j]), ev("signup"))
    assert templates(changes) == []
    assert len(s.instances) == 1


# ── re-entry ──────────────────────────────────────────────────────────────────────────────────


def test_reentry_never() -> None:
    catalog = JourneyCatalog([journey(reentry="never")])
    s = state()
    assert templates(event_in(s, catalog, ev("signup"))) == ["j-1"]
    assert templates(event_in(s, catalog, ev("signup", T0 + 400 * DAY))) == []


def test_reentry_always_but_one_active_run_at_a_time() -> None:
    catalog = JourneyCatalog([waiting(reentry="always")])
    s = state()
    assert templates(event_in(s, catalog, ev("signup"))) == ["j-1"]
    assert templates(event_in(s, catalog, ev("signup", T0 + DAY))) == []  # still waiting
    name, due = run_timer(s)
    assert templates(fire(s, catalog, name, due)) == ["j-2"]
    assert s.instances == {}
    assert templates(event_in(s, catalog, ev("signup", T0 + 4 * DAY))) == ["j-1"]
    assert s.entries == {"j": T0 + 4 * DAY}


def test_reentry_after_a_duration_since_the_last_entry() -> None:
    catalog = JourneyCatalog([journey(reentry={"after": "P30D"})])
    s = state()
    assert templates(event_in(s, catalog, ev("signup"))) == ["j-1"]
    assert templates(event_in(s, catalog, ev("signup", T0 + 30 * DAY - timedelta(1)))) == []
    assert templates(event_in(s, catalog, ev("signup", T0 + 30 * DAY))) == ["j-1"]
    assert templates(event_in(s, catalog, ev("signup", T0 + 59 * DAY))) == []


def test_a_replayed_cause_does_not_enter_twice() -> None:
    catalog = JourneyCatalog([waiting(reentry="always")])
    s = state()
    signup = ev("signup")
    event_in(s, catalog, signup)
    assert templates(event_in(s, catalog, signup, now=T0 + timedelta(minutes=5))) == []
    assert len(s.instances) == 1


# ── keyed journeys ────────────────────────────────────────────────────────────────────────────


def cart_journey(**over: Any) -> Journey:
    return journey(
        "cart",
        {
            "remind": {
                "wait_for": {"event": "order_completed", "match": "cart_id", "timeout": "PT24H"},
                "on_timeout": "reminder",
            },
            "reminder": {"send": {"channel": "email", "template": "cart-reminder"}},
        },
        trigger={"event": "cart_updated", "key": "cart_id"},
        **over,
    )


def test_a_keyed_journey_runs_once_per_key_value() -> None:
    catalog = JourneyCatalog([cart_journey()])
    s = state()
    event_in(s, catalog, ev("cart_updated", cart_id="A"))
    event_in(s, catalog, ev("cart_updated", T0 + timedelta(hours=1), cart_id="A"))  # same cart
    event_in(s, catalog, ev("cart_updated", T0 + timedelta(hours=2), cart_id="B"))
    event_in(s, catalog, ev("cart_updated", T0 + timedelta(hours=3)))  # no cart id: no run
    runs = sorted(s.instances.values(), key=lambda i: i.entered_at)
    assert [(r.key, r.entered_at) for r in runs] == [("A", T0), ("B", T0 + timedelta(hours=2))]
    # Cart A's order ends only cart A's wait; cart B is reminded.
    changes = event_in(s, catalog, ev("order_completed", T0 + timedelta(hours=5), cart_id="A"))
    assert activity(changes, "waited") == [("cart", "waited", "remind", "event")]
    [b] = s.instances.values()
    assert b.key == "B"
    name, due = run_timer(s)
    assert due == T0 + timedelta(hours=26)
    assert templates(fire(s, catalog, name, due)) == ["cart-reminder"]
    assert s.instances == {}


def test_reentry_of_a_keyed_journey_counts_per_key_value() -> None:
    catalog = JourneyCatalog([cart_journey()])  # reentry "never": once per cart
    s = state()
    event_in(s, catalog, ev("cart_updated", cart_id="A"))
    event_in(s, catalog, ev("order_completed", T0 + timedelta(hours=1), cart_id="A"))
    assert s.instances == {}
    # Cart A again: never re-entered. A new cart gets its own run.
    event_in(s, catalog, ev("cart_updated", T0 + timedelta(hours=2), cart_id="A"))
    assert s.instances == {}
    event_in(s, catalog, ev("cart_updated", T0 + timedelta(hours=3), cart_id="B"))
    assert [i.key for i in s.instances.values()] == ["B"]


def test_a_numeric_key_is_compared_as_text() -> None:
    catalog = JourneyCatalog([cart_journey()])
    s = state()
    event_in(s, catalog, ev("cart_updated", cart_id=42))
    event_in(s, catalog, ev("cart_updated", T0 + timedelta(hours=1), cart_id=42))
    assert [i.key for i in s.instances.values()] == ["42"]


# ── exit_when, goals, holdout ─────────────────────────────────────────────────────────────────


def test_exit_when_cancels_a_pending_wait_and_its_timer_at_once() -> None:
    catalog = JourneyCatalog([waiting(exit_when=[{"event": "order_completed"}])])
    s = state()
    event_in(s, catalog, ev("signup"))
    name, _ = run_timer(s)
    changes = event_in(s, catalog, ev("order_completed", T0 + DAY))
    assert activity(changes) == [("j", "exited", "w", "exit_when")]
    # The run's timer is gone; only customer intelligence's own timer (the next time-based
    # band, stage or segment change after the order) remains.
    assert set(s.timers()) == {INTEL_TIMER}
    assert s.instances == {}
    [ended] = changes.instances.values()
    assert (ended.status, ended.wake_at) == ("exited", None)
    # A timer that was already leased finds nothing to do.
    late = fire(s, catalog, name, T0 + 3 * DAY)
    assert (late.messages, late.activity) == ([], [])


def test_a_goal_is_counted_within_its_window_even_after_the_run_ended() -> None:
    catalog = JourneyCatalog([journey(goal={"event": "order_completed", "within": "P7D"})])
    s = state()
    event_in(s, catalog, ev("signup"))
    [run] = s.instances.values()
    assert run.status == "completed"  # kept for its goal window
    assert s.timers() == {}
    changes = event_in(s, catalog, ev("order_completed", T0 + 6 * DAY))
    assert activity(changes) == [("j", "goal", None, None)]
    assert s.instances == {}  # converted: nothing more to watch
    [converted] = changes.instances.values()
    assert converted.goal_at == T0 + 6 * DAY


def test_a_goal_after_its_window_is_not_counted() -> None:
    catalog = JourneyCatalog([journey(goal={"event": "order_completed", "within": "P7D"})])
    s = state()
    event_in(s, catalog, ev("signup"))
    changes = event_in(s, catalog, ev("order_completed", T0 + 8 * DAY))
    assert activity(changes) == []
    drop_untracked(s, T0 + 8 * DAY)
    assert s.instances == {}


def test_drop_untracked_keeps_open_goal_windows() -> None:
    catalog = JourneyCatalog([journey(goal={"event": "order_completed", "within": "P7D"})])
    s = state()
    event_in(s, catalog, ev("signup"))
    drop_untracked(s, T0 + 7 * DAY)
    assert len(s.instances) == 1
    drop_untracked(s, T0 + 7 * DAY + timedelta(seconds=1))
    assert s.instances == {}


def test_the_journey_holdout_enters_without_sends_and_counts_its_goal() -> None:
    j = journey(holdout_percent=50, goal={"event": "order_completed", "within": "P7D"})
    held = next(c for c in (f"c{n}" for n in range(1000)) if engine.in_holdout(j, "w", c))
    catalog = JourneyCatalog([j])
    s = CustomerState("w", held)
    changes = event_in(s, catalog, ev("signup"))
    assert templates(changes) == []
    assert activity(changes) == [("j", "entered", "hello", None), ("j", "exited", None, "holdout")]
    assert s.entries == {"j": T0}
    assert event_in(s, catalog, ev("signup", T0 + DAY)).activity == []  # reentry never
    goal = event_in(s, catalog, ev("order_completed", T0 + 2 * DAY))
    assert activity(goal) == [("j", "goal", None, None)]


def test_updates_change_the_customer_state() -> None:
    j = journey(
        steps={
            "flag": {"update": {"set_trait": "welcomed", "value": True}, "next": "add"},
            "add": {"update": {"add_score": "engagement", "by": 5}, "next": "set"},
            "set": {"update": {"set_score": "risk", "value": 2}},
        }
    )
    s = state()
    s.scores["engagement"] = 1
    event_in(s, JourneyCatalog([j]), ev("signup"))
    assert s.traits["welcomed"] is True
    assert s.scores == {"engagement": 6, "risk": 2}


# ── consent ───────────────────────────────────────────────────────────────────────────────────


def test_a_consent_update_stops_marketing_but_not_transactional_sends() -> None:
    j = journey(
        steps={
            "offer": {"send": {"channel": "email", "template": "offer"}, "next": "receipt"},
            "receipt": {
                "send": {"channel": "email", "template": "receipt", "category": "transactional"}
            },
        },
        reentry="always",
    )
    catalog = JourneyCatalog([j])
    s = state()
    event_in(s, catalog, ev("consent_updated", channel="email", status="revoked"))
    assert s.traits["email_marketing_consent"] == "revoked"
    changes = event_in(s, catalog, ev("signup", T0 + DAY))
    assert templates(changes) == ["receipt"]
    assert activity(changes, "skipped") == [("j", "skipped", "offer", "no_consent")]
    event_in(s, catalog, ev("consent_updated", T0 + 2 * DAY, channel="email", status="granted"))
    assert templates(event_in(s, catalog, ev("signup", T0 + 3 * DAY))) == ["offer", "receipt"]


# ── priority and frequency caps ───────────────────────────────────────────────────────────────


def test_the_higher_priority_journey_takes_the_one_send_the_cap_allows() -> None:
    low = journey("low", priority=1, frequency_cap="skip")
    high = journey("high", priority=10)
    deferred = journey("deferred", priority=0)
    catalog = JourneyCatalog([low, deferred, high])
    s = state()
    changes = event_in(s, catalog, ev("signup"), policy=ONE_EMAIL_A_DAY)
    assert templates(changes) == ["high-1"]
    assert activity(changes, "skipped", "held") == [
        ("low", "skipped", "hello", "frequency_cap"),
        ("deferred", "held", "hello", "frequency_cap"),
    ]
    assert s.ledger == ((T0, "email"),)
    name, due = run_timer(s)
    assert due == T0 + DAY
    assert templates(fire(s, catalog, name, due, ONE_EMAIL_A_DAY)) == ["deferred-1"]
    assert s.ledger == ((T0 + DAY, "email"),)


def test_priority_also_orders_runs_under_way_against_new_entries() -> None:
    # A low-priority run waiting for "order" and a high-priority journey entered by "order"
    # both want to send on the same event: the cap's one send goes to the higher priority.
    thanks = journey(
        "thanks",
        steps={
            "w": {"wait_for": {"event": "order", "timeout": "P7D"}, "on_event": "t"},
            "t": {"send": {"channel": "email", "template": "thanks-1"}},
        },
        priority=1,
        frequency_cap="skip",
    )
    cross = journey("cross", trigger={"event": "order"}, priority=5)
    catalog = JourneyCatalog([thanks, cross])
    s = state()
    event_in(s, catalog, ev("signup"), policy=ONE_EMAIL_A_DAY)
    changes = event_in(s, catalog, ev("order", T0 + DAY), policy=ONE_EMAIL_A_DAY)
    assert templates(changes) == ["cross-1"]
    assert activity(changes, "skipped") == [("thanks", "skipped", "t", "frequency_cap")]


def test_runs_under_way_go_before_entries_of_equal_priority() -> None:
    # A restart journey: a new signup ends the current run (exit_when) and starts a new one.
    j = waiting(reentry="always", exit_when=[{"event": "signup"}])
    catalog = JourneyCatalog([j])
    s = state()
    event_in(s, catalog, ev("signup"))
    changes = event_in(s, catalog, ev("signup", T0 + DAY))
    assert activity(changes, "exited", "entered") == [
        ("j", "exited", "w", "exit_when"),
        ("j", "entered", "a", None),
    ]
    assert [i.entered_at for i in s.instances.values()] == [T0 + DAY]


# ── date and inactivity triggers ──────────────────────────────────────────────────────────────


def birthday_journey(**trigger: Any) -> Journey:
    return journey(
        "bday",
        trigger={"date_trait": "birthday", "at": "09:00", **trigger},
        reentry="always",
    )


def test_a_birthday_is_scheduled_in_the_customer_zone_and_fires_every_year() -> None:
    catalog = JourneyCatalog([birthday_journey()])
    s = state()
    event_in(s, catalog, ev("x", traits={"birthday": "1990-05-17", "timezone": "Europe/Madrid"}))
    first = datetime(2026, 5, 17, 7, 0, tzinfo=UTC)  # 09:00 CEST
    assert s.timers() == {"trigger:bday": first}
    # Not before it is due.
    assert fire(s, catalog, "trigger:bday", first - timedelta(minutes=1)).activity == []
    assert s.schedules == {"bday": first}
    changes = fire(s, catalog, "trigger:bday", first)
    assert templates(changes) == ["bday-1"]
    [entered] = [a for a in changes.activity if a.kind == "entered"]
    assert entered.detail == {"trigger": "date_trait"}
    assert s.schedules == {"bday": datetime(2027, 5, 17, 7, 0, tzinfo=UTC)}
    # Next year's is a new run, not a replay of this year's.
    changes = fire(s, catalog, "trigger:bday", datetime(2027, 5, 17, 7, 0, tzinfo=UTC))
    assert templates(changes) == ["bday-1"]


def test_a_29_february_birthday_comes_on_the_28th_in_other_years() -> None:
    catalog = JourneyCatalog([birthday_journey(timezone="UTC")])
    s = state()
    event_in(s, catalog, ev("x", traits={"birthday": "2000-02-29"}))
    assert s.schedules == {"bday": datetime(2027, 2, 28, 9, 0, tzinfo=UTC)}
    fire(s, catalog, "trigger:bday", datetime(2027, 2, 28, 9, 0, tzinfo=UTC))
    assert s.schedules == {"bday": datetime(2028, 2, 29, 9, 0, tzinfo=UTC)}


def test_a_date_schedule_follows_the_trait_and_the_zone() -> None:
    catalog = JourneyCatalog([birthday_journey(offset="-P7D")])
    s = state()
    event_in(s, catalog, ev("x", traits={"birthday": "1990-05-17"}))
    assert s.schedules == {"bday": datetime(2026, 5, 10, 9, 0, tzinfo=UTC)}  # workspace: UTC
    event_in(s, catalog, ev("x", T0 + DAY, traits={"timezone": "America/New_York"}))
    assert s.schedules == {"bday": datetime(2026, 5, 10, 13, 0, tzinfo=UTC)}
    event_in(s, catalog, ev("x", T0 + 2 * DAY, traits={"birthday": "1990-06-17"}))
    assert s.schedules == {"bday": datetime(2026, 6, 10, 13, 0, tzinfo=UTC)}
    event_in(s, catalog, ev("x", T0 + 3 * DAY, traits={"birthday": None}))
    assert s.schedules == {}


def test_the_workspace_zone_places_a_date_without_a_customer_zone() -> None:
    catalog = JourneyCatalog([birthday_journey()])
    s = state()
    policy = engine.Policy(default_timezone="Asia/Tokyo")
    event_in(s, catalog, ev("x", traits={"birthday": "1990-05-17"}), policy=policy)
    assert s.schedules == {"bday": datetime(2026, 5, 17, 0, 0, tzinfo=UTC)}


def test_a_one_off_date_fires_once() -> None:
    catalog = JourneyCatalog([birthday_journey(yearly=False, timezone="UTC")])
    s = state()
    event_in(s, catalog, ev("x", traits={"birthday": "2026-04-01"}))
    due = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
    assert s.schedules == {"bday": due}
    assert templates(fire(s, catalog, "trigger:bday", due)) == ["bday-1"]
    assert s.schedules == {}
    event_in(s, catalog, ev("x", due + DAY, traits={"birthday": "2025-04-01"}))
    assert s.schedules == {}


def test_schedule_all_computes_dates_for_a_newly_published_journey() -> None:
    s = state()
    s.traits.update({"birthday": "--05-17", "timezone": "Europe/Madrid"})
    catalog = JourneyCatalog([birthday_journey()])
    schedule_all(s, catalog, NO_CAPS, T0)
    assert s.schedules == {"bday": datetime(2026, 5, 17, 7, 0, tzinfo=UTC)}


def test_a_paused_date_journey_takes_no_entry_but_keeps_next_year() -> None:
    catalog = JourneyCatalog([birthday_journey(timezone="UTC")])
    s = state()
    event_in(s, catalog, ev("x", traits={"birthday": "1990-05-17"}))
    due = datetime(2026, 5, 17, 9, 0, tzinfo=UTC)
    catalog.add(birthday_journey(timezone="UTC"), status="paused")
    assert fire(s, catalog, "trigger:bday", due).activity == []
    assert s.schedules == {"bday": due.replace(year=2027)}


def test_an_inactivity_trigger_fires_after_the_quiet_period() -> None:
    j = journey("winback", trigger={"inactivity": {"event": "order", "for": "P60D"}})
    catalog = JourneyCatalog([j])
    s = state()
    event_in(s, catalog, ev("order"))
    assert s.timers() == {"trigger:winback": T0 + 60 * DAY}
    # A later order pushes it back; an older (backfilled) one does not pull it forward.
    event_in(s, catalog, ev("order", T0 + 10 * DAY))
    event_in(s, catalog, ev("order", T0 - 5 * DAY), now=T0 + 11 * DAY, live=False)
    assert s.schedules == {"winback": T0 + 70 * DAY}
    assert fire(s, catalog, "trigger:winback", T0 + 60 * DAY).activity == []
    changes = fire(s, catalog, "trigger:winback", T0 + 70 * DAY)
    assert templates(changes) == ["winback-1"]
    [run] = changes.instances.values()
    assert run.trigger["type"] == "inactivity"
    assert run.trigger["properties"] == {"event": "order", "since": (T0 + 10 * DAY).isoformat()}
    assert s.schedules == {}  # once per quiet period


def test_an_old_backfilled_order_schedules_no_inactivity() -> None:
    j = journey("winback", trigger={"inactivity": {"event": "order", "for": "P60D"}})
    s = state()
    event_in(s, JourneyCatalog([j]), ev("order", T0 - 90 * DAY), now=T0, live=False)
    assert s.schedules == {}


# ── archiving ─────────────────────────────────────────────────────────────────────────────────


def test_archiving_stops_active_runs_and_keeps_the_send_ledger() -> None:
    catalog = JourneyCatalog([waiting(), waiting("other", trigger={"event": "signup"})])
    s = state()
    event_in(s, catalog, ev("signup"), policy=ONE_EMAIL_A_DAY)
    ledger = s.ledger
    assert ledger == ((T0, "email"),)
    changes = archive(s, "j", now=T0 + DAY)
    assert activity(changes) == [("j", "exited", "w", "archived")]
    assert [i.journey_id for i in s.instances.values()] == ["other"]
    assert s.ledger == ledger


def test_an_archived_journey_stops_its_runs_on_the_next_event_or_timer() -> None:
    catalog = JourneyCatalog([waiting()])
    s = state()
    event_in(s, catalog, ev("signup"), policy=ONE_EMAIL_A_DAY)
    name, due = run_timer(s)
    catalog.add(waiting(), status="archived")
    changes = fire(s, catalog, name, due, ONE_EMAIL_A_DAY)
    assert (templates(changes), activity(changes)) == ([], [("j", "exited", "w", "archived")])
    assert s.timers() == {}
    assert s.ledger == ((T0, "email"),)
    # And it takes no new entries.
    assert event_in(s, catalog, ev("signup", due + DAY)).activity == []


def test_an_archived_journey_stops_a_run_on_an_unrelated_event() -> None:
    catalog = JourneyCatalog([waiting()])
    s = state()
    event_in(s, catalog, ev("signup"), policy=ONE_EMAIL_A_DAY)
    catalog.add(waiting(), status="archived")
    changes = event_in(s, catalog, ev("page_view", T0 + DAY), policy=ONE_EMAIL_A_DAY)
    assert activity(changes) == [("j", "exited", "w", "archived")]
    assert s.ledger == ((T0, "email"),)


def test_a_paused_journey_lets_runs_finish_but_takes_no_entries() -> None:
    catalog = JourneyCatalog([waiting(reentry="always")])
    s = state()
    event_in(s, catalog, ev("signup"))
    catalog.add(waiting(reentry="always"), status="paused")
    name, due = run_timer(s)
    assert templates(fire(s, catalog, name, due)) == ["j-2"]
    assert event_in(s, catalog, ev("signup", due + DAY)).activity == []


def test_a_run_of_a_removed_journey_ends() -> None:
    s = state()
    event_in(s, JourneyCatalog([waiting()]), ev("signup"))
    name, due = run_timer(s)
    changes = fire(s, JourneyCatalog(), name, due)
    assert activity(changes) == [("j", "exited", "w", "journey_removed")]
    assert s.instances == {}


def test_runs_finish_on_the_version_they_entered() -> None:
    catalog = JourneyCatalog([waiting()])
    s = state()
    event_in(s, catalog, ev("signup"))
    v2 = journey("j", {"x": {"send": {"channel": "email", "template": "v2"}}}, version=2)
    catalog.add(v2)
    name, due = run_timer(s)
    assert templates(fire(s, catalog, name, due)) == ["j-2"]


@pytest.mark.parametrize("timer_name", ["run:nope", "trigger:nope"])
def test_unknown_timers_do_nothing(timer_name: str) -> None:
    changes = fire(state(), JourneyCatalog([waiting()]), timer_name, T0)
    assert (changes.activity, changes.messages, changes.instances) == ([], [], {})


# ── Traits: the value given later wins ────────────────────────────────────────────────────────


def test_an_older_event_arriving_late_never_overwrites_a_newer_trait() -> None:
    s, catalog = state(), JourneyCatalog([])
    now = T0 + DAY
    event_in(s, catalog, ev("identify", T0, traits={"email": "new@x.io", "plan": "pro"}), now=now)
    # History imported after the live event: the address changed since, and the plan too.
    old = ev("identify", T0 - DAY, traits={"email": "old@x.io", "first_name": "Ana"})
    event_in(s, catalog, old, now=now, live=False)
    assert s.traits == {"email": "new@x.io", "plan": "pro", "first_name": "Ana"}
    # A newer value wins, and so does one given at the same instant (the later processed).
    event_in(s, catalog, ev("identify", T0, traits={"plan": "team"}), now=now)
    event_in(s, catalog, ev("identify", T0 + timedelta(seconds=1), traits={"email": "n@x.io"}))
    assert (s.traits["plan"], s.traits["email"]) == ("team", "n@x.io")


def test_a_consent_revoked_is_not_granted_again_by_an_older_event() -> None:
    s, catalog = state(), JourneyCatalog([])
    consent = {"channel": "email", "category": "marketing"}
    event_in(s, catalog, ev("consent_updated", T0, **consent, status="revoked"))
    event_in(s, catalog, ev("consent_updated", T0 - DAY, **consent, status="granted"), now=T0)
    assert s.traits["email_marketing_consent"] == "revoked"
    event_in(s, catalog, ev("consent_updated", T0 + DAY, **consent, status="granted"))
    assert s.traits["email_marketing_consent"] == "granted"


def test_a_trait_removed_stays_removed_against_an_older_value() -> None:
    s, catalog = state(), JourneyCatalog([])
    event_in(s, catalog, ev("identify", T0, traits={"phone": "+4930901820"}))
    event_in(s, catalog, ev("identify", T0 + DAY, traits={"phone": None}))
    event_in(s, catalog, ev("identify", T0, traits={"phone": "+4930901820"}), now=T0 + DAY)
    assert "phone" not in s.traits
    # Fractions of a second are compared as instants, not as text ("…01.5Z" is after "…01Z").
    t = T0 + 3 * DAY
    event_in(s, catalog, ev("identify", t + timedelta(seconds=1), traits={"phone": "+1"}))
    event_in(s, catalog, ev("identify", t + timedelta(seconds=1.5), traits={"phone": "+2"}))
    event_in(s, catalog, ev("identify", t + timedelta(seconds=1.2), traits={"phone": "+3"}))
    assert s.traits["phone"] == "+2"


def test_a_merge_keeps_each_trait_given_later() -> None:
    catalog = JourneyCatalog([])
    known, visitor = state(), CustomerState("w", "anon-1")
    event_in(known, catalog, ev("identify", T0, traits={"email": "a@x.io", "first_name": "Ana"}))
    event_in(visitor, catalog, ev("identify", T0 - DAY, traits={"email": "old@x.io"}))
    event_in(visitor, catalog, ev("identify", T0 + DAY, traits={"first_name": "Anna", "x": 1}))
    merge_into(known, visitor, catalog=catalog, policy=NO_CAPS, now=T0 + DAY, live=True)
    assert known.traits == {"email": "a@x.io", "first_name": "Anna", "x": 1}
    assert known.trait_times["first_name"] == known.trait_times["x"] == "2026-03-03T10:00:00Z"
