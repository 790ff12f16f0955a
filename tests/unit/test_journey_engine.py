"""The journey engine as pure functions: every step kind, holdouts, windows, caps and ids.

Time is a plain datetime passed in as ``now``: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.journey.domain import engine
from services.journey.domain.definitions import Journey
from shared.contracts.messages import message_id_for

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
"""A Monday, 10:00 UTC (11:00 in Madrid, 05:00 in New York)."""
DAY = timedelta(days=1)
NO_POLICY = engine.Policy()
EMAIL_CAP = engine.Policy(caps=(engine.Cap("email", 1, DAY),))


def journey(steps: dict[str, Any] | None = None, **overrides: object) -> Journey:
    doc: dict[str, Any] = {
        "id": "j",
        "version": 1,
        "name": "J",
        "trigger": {"event": "signup"},
        "start": "hello",
        "steps": steps
        or {
            "hello": {"send": {"channel": "email", "template": "welcome-1"}, "next": "end"},
            "end": {"exit": True},
        },
    }
    if steps is not None and "start" not in overrides:
        doc["start"] = next(iter(steps))
    doc.update(overrides)
    return Journey.model_validate(doc)


def send(template: str, next: str | None = None, **spec: object) -> dict[str, Any]:
    step: dict[str, Any] = {"send": {"channel": "email", "template": template, **spec}}
    if next is not None:
        step["next"] = next
    return step


def event(type: str = "signup", id: str = "e1", **properties: object) -> dict[str, Any]:
    return {"type": type, "id": id, "properties": properties}


def enter(
    j: Journey,
    *,
    customer_id: str = "c1",
    run_id: str = "r1",
    traits: Mapping[str, Any] | None = None,
    scores: Mapping[str, float] | None = None,
    trigger: Mapping[str, Any] | None = None,
    key: str | None = None,
    policy: engine.Policy = NO_POLICY,
    ledger: engine.Ledger = (),
    now: datetime = T0,
) -> engine.Outcome:
    return engine.enter(
        j,
        workspace_id="w",
        customer_id=customer_id,
        run_id=run_id,
        trigger=trigger if trigger is not None else event(),
        key=key,
        customer=engine.Customer(traits=traits or {}, scores=scores or {}),
        policy=policy,
        ledger=ledger,
        now=now,
    )


def timer(
    outcome: engine.Outcome,
    j: Journey,
    now: datetime,
    *,
    traits: Mapping[str, Any] | None = None,
    policy: engine.Policy = NO_POLICY,
    ledger: engine.Ledger | None = None,
) -> engine.Outcome | None:
    return engine.on_timer(
        outcome.instance,
        j,
        customer=engine.Customer(traits=traits or {}),
        policy=policy,
        ledger=outcome.ledger if ledger is None else ledger,
        now=now,
    )


def deliver(
    outcome: engine.Outcome,
    j: Journey,
    ev: Mapping[str, Any],
    now: datetime,
    *,
    traits: Mapping[str, Any] | None = None,
) -> engine.Outcome | None:
    return engine.on_event(
        outcome.instance,
        j,
        ev,
        customer=engine.Customer(traits=traits or {}),
        policy=engine.Policy(),
        ledger=outcome.ledger,
        now=now,
    )


def sends(outcome: engine.Outcome | None) -> list[str]:
    assert outcome is not None
    return [e.template for e in outcome.effects if isinstance(e, engine.Send)]


def records(outcome: engine.Outcome | None, *kinds: str) -> list[tuple[str, str | None, Any]]:
    assert outcome is not None
    return [
        (e.kind, e.step, e.reason)
        for e in outcome.effects
        if isinstance(e, engine.Record) and (not kinds or e.kind in kinds)
    ]


def customers_where(predicate: Any, count: int) -> list[str]:
    """The first ``count`` customer ids c0, c1, … for which ``predicate(id)`` holds."""
    found: list[str] = []
    n = 0
    while len(found) < count:
        if predicate(f"c{n}"):
            found.append(f"c{n}")
        n += 1
        assert n < 10_000, "no such customers"
    return found


# ── send and exit ─────────────────────────────────────────────────────────────────────────────


def test_a_send_asks_for_its_message_and_an_exit_step_ends_the_run() -> None:
    out = enter(journey())
    [message] = [e for e in out.effects if isinstance(e, engine.Send)]
    assert (message.step, message.channel, message.template, message.category) == (
        "hello",
        "email",
        "welcome-1",
        "marketing",
    )
    assert records(out) == [
        ("entered", "hello", None),
        ("sent", "hello", None),
        ("exited", "end", "exit_step"),
    ]
    assert (out.instance.status, out.instance.exit_reason) == ("completed", "exit_step")
    assert out.instance.entered_at == T0
    assert out.instance.wake_at is None
    assert not out.instance.active


def test_a_step_without_next_completes_the_run() -> None:
    out = enter(journey({"a": send("t1", next="b"), "b": send("t2", category="transactional")}))
    assert sends(out) == ["t1", "t2"]
    assert records(out)[-1] == ("exited", None, "completed")
    assert out.instance.exit_reason == "completed"


def test_an_exit_step_stops_before_later_steps() -> None:
    j = journey(
        {
            "a": {"branch": {"field": "customer.x", "op": "exists"}, "then": "end", "else": "b"},
            "b": send("t"),
            "end": {"exit": True},
        }
    )
    assert sends(enter(j, traits={"x": 1})) == []
    assert sends(enter(j, traits={})) == ["t"]


# ── wait ──────────────────────────────────────────────────────────────────────────────────────


def test_a_duration_wait_blocks_until_its_timer() -> None:
    j = journey({"a": send("t1", next="w"), "w": {"wait": "P3D", "next": "b"}, "b": send("t2")})
    out = enter(j)
    assert sends(out) == ["t1"]
    assert (out.instance.step, out.instance.waiting) == ("w", "wait")
    assert out.instance.wake_at == T0 + 3 * DAY
    assert out.instance.active
    assert timer(out, j, T0 + 3 * DAY - timedelta(seconds=1)) is None
    later = timer(out, j, T0 + 3 * DAY)
    assert sends(later) == ["t2"]
    assert later is not None
    assert later.instance.status == "completed"
    assert later.instance.wake_at is None


def test_a_late_timer_still_moves_on() -> None:
    j = journey({"w": {"wait": "PT1H", "next": "b"}, "b": send("t")})
    out = enter(j)
    assert sends(timer(out, j, T0 + 10 * DAY)) == ["t"]


def test_wait_until_a_time_of_day_in_the_customer_zone() -> None:
    j = journey({"w": {"wait": {"until": "10:00"}, "next": "b"}, "b": send("t")})
    # 05:00 in New York: 10:00 New York (EST, UTC-5) comes the same day at 15:00 UTC.
    out = enter(j, traits={"timezone": "America/New_York"})
    assert out.instance.wake_at == datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
    # 11:00 in Madrid: 10:00 Madrid has passed, so tomorrow at 09:00 UTC.
    out = enter(j, traits={"timezone": "Europe/Madrid"})
    assert out.instance.wake_at == datetime(2026, 3, 3, 9, 0, tzinfo=UTC)


def test_wait_until_falls_back_to_the_workspace_zone() -> None:
    j = journey({"w": {"wait": {"until": "10:00"}, "next": "b"}, "b": send("t")})
    policy = engine.Policy(default_timezone="Asia/Tokyo")  # 19:00 in Tokyo
    for traits in ({}, {"timezone": "Not/AZone"}, {"timezone": 5}):
        out = enter(j, traits=traits, policy=policy)
        assert out.instance.wake_at == datetime(2026, 3, 3, 1, 0, tzinfo=UTC), traits


def test_wait_until_a_time_on_given_weekdays() -> None:
    j = journey(
        {
            "w": {"wait": {"until": "10:00", "weekdays": ["sat", "sun"]}, "next": "b"},
            "b": send("t"),
        }
    )
    out = enter(j, traits={"timezone": "America/New_York"})  # Monday
    assert out.instance.wake_at == datetime(2026, 3, 7, 15, 0, tzinfo=UTC)  # Saturday 10:00 EST
    assert out.instance.wake_at.astimezone(UTC).weekday() == 5
    # On Saturday after 10:00 the next one is Sunday.
    saturday_noon = datetime(2026, 3, 7, 17, 0, tzinfo=UTC)
    out = enter(j, traits={"timezone": "America/New_York"}, now=saturday_noon)
    assert out.instance.wake_at == datetime(2026, 3, 8, 14, 0, tzinfo=UTC)  # Sunday, now EDT


def test_wait_until_in_a_named_zone_ignores_the_customer_zone() -> None:
    j = journey(
        {
            "w": {"wait": {"until": "10:00", "timezone": "Europe/Madrid"}, "next": "b"},
            "b": send("t"),
        }
    )
    out = enter(j, traits={"timezone": "America/New_York"})
    assert out.instance.wake_at == datetime(2026, 3, 3, 9, 0, tzinfo=UTC)


def test_wait_until_a_date_trait_with_an_offset() -> None:
    j = journey(
        {
            "w": {
                "wait": {"until_trait": "birthday", "offset": "-P1D", "at": "09:00"},
                "next": "b",
            },
            "b": send("t"),
        }
    )
    madrid = {"timezone": "Europe/Madrid"}
    # The day before 10 March, 09:00 in Madrid (CET, UTC+1).
    out = enter(j, traits={**madrid, "birthday": "1990-03-10"})
    assert out.instance.wake_at == datetime(2026, 3, 9, 8, 0, tzinfo=UTC)
    assert out.instance.waiting == "wait"
    # 1 March has passed this year: next year's, 28 February 09:00.
    out = enter(j, traits={**madrid, "birthday": "1990-03-01"})
    assert out.instance.wake_at == datetime(2027, 2, 28, 8, 0, tzinfo=UTC)
    # In summer Madrid is UTC+2.
    out = enter(j, traits={**madrid, "birthday": "--07-02"})
    assert out.instance.wake_at == datetime(2026, 7, 1, 7, 0, tzinfo=UTC)


def test_wait_until_a_missing_or_bad_date_skips_the_wait() -> None:
    j = journey(
        {"w": {"wait": {"until_trait": "birthday"}, "next": "b"}, "b": send("t")},
    )
    for traits in ({}, {"birthday": "soon"}, {"birthday": 19900310}):
        out = enter(j, traits=traits)
        assert records(out, "skipped") == [("skipped", "w", "no_date")], traits
        assert sends(out) == ["t"]


def test_a_one_off_date_wait_waits_for_the_date_itself() -> None:
    j = journey(
        {
            "w": {
                "wait": {
                    "until_trait": "trial_end",
                    "offset": "-P1D",
                    "at": "09:00",
                    "yearly": False,
                },
                "next": "b",
            },
            "b": send("trial-ends-tomorrow"),
        }
    )
    # Ahead: the day before, 09:00 UTC.
    out = enter(j, traits={"trial_end": "2026-03-10"})
    assert out.instance.wake_at == datetime(2026, 3, 9, 9, 0, tzinfo=UTC)
    assert sends(out) == []
    # Past (T0 is 2 March, 10:00, after 09:00 the day before 3 March): no waiting a year for
    # it to come round; the wait ends and the next step runs now.
    for past in ("2026-03-03", "2025-03-03"):
        out = enter(j, traits={"trial_end": past})
        assert records(out, "skipped") == [("skipped", "w", "date_passed")], past
        assert sends(out) == ["trial-ends-tomorrow"]
    # A date without a year has no one-off instant.
    out = enter(j, traits={"trial_end": "--03-10"})
    assert records(out, "skipped") == [("skipped", "w", "no_date")]
    # The same wait yearly (the default) comes round next year.
    yearly = journey(
        {
            "w": {"wait": {"until_trait": "trial_end", "offset": "-P1D"}, "next": "b"},
            "b": send("trial-ends-tomorrow"),
        }
    )
    out = enter(yearly, traits={"trial_end": "2026-03-03"})
    assert out.instance.wake_at == datetime(2027, 3, 2, 9, 0, tzinfo=UTC)


def test_a_loop_whose_date_wait_cannot_wait_ends_instead_of_spinning() -> None:
    j = journey(
        {
            "greet": send("happy-birthday", next="w"),
            "w": {"wait": {"until_trait": "birthday"}, "next": "greet"},
        }
    )
    out = enter(j)  # no birthday: the wait is skipped and the loop would resend forever
    assert sends(out) == ["happy-birthday"]
    assert records(out)[-2:] == [("skipped", "w", "no_date"), ("exited", "greet", "loop")]
    assert (out.instance.status, out.instance.exit_reason) == ("exited", "loop")
    # With a birthday it is a yearly loop.
    out = enter(j, traits={"birthday": "1990-05-17"})
    assert out.instance.wake_at == datetime(2026, 5, 17, 9, 0, tzinfo=UTC)
    again = timer(
        out, j, datetime(2026, 5, 17, 9, 0, tzinfo=UTC), traits={"birthday": "1990-05-17"}
    )
    assert sends(again) == ["happy-birthday"]
    assert again is not None
    assert again.instance.wake_at == datetime(2027, 5, 17, 9, 0, tzinfo=UTC)


# ── wait_for ──────────────────────────────────────────────────────────────────────────────────


def cart_journey(**overrides: object) -> Journey:
    return journey(
        {
            "remind": {
                "wait_for": {"event": "order_completed", "match": "cart_id", "timeout": "PT24H"},
                "on_event": "thanks",
                "on_timeout": "reminder",
            },
            "thanks": send("thanks"),
            "reminder": send("cart-reminder"),
        },
        trigger={"event": "cart_updated", "key": "cart_id"},
        **overrides,
    )


def test_wait_for_takes_on_event_when_the_matching_event_comes() -> None:
    j = cart_journey()
    out = enter(j, trigger=event("cart_updated", cart_id="A"), key="A")
    assert (out.instance.waiting, out.instance.wake_at) == ("wait_for", T0 + DAY)
    assert out.instance.key == "A"
    # Another cart's order, or an event of another type, does not concern this run.
    assert deliver(out, j, event("order_completed", "e2", cart_id="B"), T0 + 1 * DAY / 2) is None
    assert deliver(out, j, event("order_completed", "e2"), T0 + DAY / 2) is None
    assert deliver(out, j, event("cart_updated", "e2", cart_id="A"), T0 + DAY / 2) is None
    done = deliver(out, j, event("order_completed", "e3", cart_id="A"), T0 + DAY / 2)
    assert sends(done) == ["thanks"]
    assert records(done, "waited") == [("waited", "remind", "event")]
    assert done is not None
    assert done.instance.status == "completed"
    # The timeout no longer fires.
    assert timer(done, j, T0 + DAY) is None


def test_wait_for_takes_on_timeout_when_the_event_does_not_come() -> None:
    j = cart_journey()
    out = enter(j, trigger=event("cart_updated", cart_id="A"), key="A")
    assert timer(out, j, T0 + DAY - timedelta(minutes=1)) is None
    late = timer(out, j, T0 + DAY)
    assert sends(late) == ["cart-reminder"]
    assert records(late, "waited") == [("waited", "remind", "timeout")]


def test_wait_for_match_needs_the_property_on_the_triggering_event() -> None:
    j = cart_journey()
    out = enter(j, trigger=event("cart_updated"))  # no cart id to match against
    assert deliver(out, j, event("order_completed", "e2", cart_id="A"), T0) is None
    assert deliver(out, j, event("order_completed", "e2"), T0) is None


def test_wait_for_applies_its_where_filter() -> None:
    j = journey(
        {
            "w": {
                "wait_for": {
                    "event": "order_completed",
                    "where": {"field": "event.properties.total", "op": "gte", "value": 50},
                    "timeout": "P1D",
                },
                "on_event": "big",
            },
            "big": send("big"),
        }
    )
    out = enter(j)
    assert deliver(out, j, event("order_completed", "e2", total=10), T0) is None
    assert sends(deliver(out, j, event("order_completed", "e3", total=60), T0)) == ["big"]


def test_wait_for_without_a_next_step_ends_the_run() -> None:
    j = journey({"w": {"wait_for": {"event": "x", "timeout": "P1D"}}})
    out = enter(j)
    done = deliver(out, j, event("x", "e2"), T0)
    assert done is not None
    assert done.instance.status == "completed"
    late = timer(out, j, T0 + DAY)
    assert late is not None
    assert late.instance.status == "completed"


# ── branch, split, update ─────────────────────────────────────────────────────────────────────


def test_a_branch_reads_traits_scores_and_the_triggering_event() -> None:
    j = journey(
        {
            "vip": {
                "branch": {"field": "customer.vip", "op": "eq", "value": True},
                "then": "gold",
                "else": "plan",
            },
            "plan": {
                "branch": {"field": "event.properties.plan", "op": "eq", "value": "pro"},
                "then": "pro",
                "else": "score",
            },
            "score": {
                "branch": {"field": "scores.engagement", "op": "gte", "value": 10},
                "then": "engaged",
                "else": "basic",
            },
            "gold": send("gold"),
            "pro": send("pro"),
            "engaged": send("engaged"),
            "basic": send("basic"),
        }
    )
    assert sends(enter(j, traits={"vip": True})) == ["gold"]
    assert sends(enter(j, traits={"vip": "yes"})) == ["basic"]
    assert sends(enter(j, trigger=event(plan="pro"))) == ["pro"]
    assert sends(enter(j, scores={"engagement": 12})) == ["engaged"]
    out = enter(j)
    assert records(out, "branched")[0] == ("branched", "vip", None)
    branched = [e for e in out.effects if isinstance(e, engine.Record) and e.kind == "branched"]
    branches = [e.detail["branch"] for e in branched]
    assert branches == ["else", "else", "else"]


def split_journey(control: int = 30, journey_id: str = "j") -> Journey:
    return journey(
        {
            "ab": {
                "split": {
                    "control": {"percent": control, "next": "a"},
                    "offer": {"percent": 100 - control, "next": "b"},
                }
            },
            "a": send("control"),
            "b": send("offer"),
        },
        id=journey_id,
    )


def test_a_split_is_stable_per_customer() -> None:
    j = split_journey()
    for customer in ("c1", "c2", "c3", "c4", "c5"):
        first = sends(enter(j, customer_id=customer, run_id="r1"))
        again = sends(enter(j, customer_id=customer, run_id="r2", now=T0 + 30 * DAY))
        revised = sends(enter(journey_version(j, 2), customer_id=customer, run_id="r3"))
        assert first == again == revised


def journey_version(j: Journey, version: int) -> Journey:
    return j.model_copy(update={"version": version})


def test_a_split_divides_customers_roughly_by_its_percentages() -> None:
    j = split_journey(control=30)
    chosen = [sends(enter(j, customer_id=f"c{n}"))[0] for n in range(4000)]
    share = chosen.count("control") / len(chosen)
    assert 0.27 < share < 0.33
    # Each journey splits on its own: another journey's split is not the same partition.
    other = split_journey(control=30, journey_id="other")
    again = [sends(enter(other, customer_id=f"c{n}"))[0] for n in range(4000)]
    agree = sum(a == b for a, b in zip(chosen, again, strict=True)) / len(chosen)
    assert agree < 0.7  # independent 30/70 splits agree on about 58%


def test_a_split_at_0_and_100_percent() -> None:
    j = split_journey(control=0)
    assert {sends(enter(j, customer_id=f"c{n}"))[0] for n in range(200)} == {"offer"}
    j = split_journey(control=100)
    assert {sends(enter(j, customer_id=f"c{n}"))[0] for n in range(200)} == {"control"}


def test_updates_emit_effects_and_later_steps_see_them() -> None:
    j = journey(
        {
            "flag": {"update": {"set_trait": "welcomed", "value": True}, "next": "add"},
            "add": {"update": {"add_score": "engagement", "by": 5}, "next": "add2"},
            "add2": {"update": {"add_score": "engagement", "by": 2.5}, "next": "set"},
            "set": {"update": {"set_score": "risk", "value": 0.5}, "next": "check"},
            "check": {
                "branch": {
                    "all": [
                        {"field": "customer.welcomed", "op": "eq", "value": True},
                        {"field": "scores.engagement", "op": "eq", "value": 8.5},
                        {"field": "scores.risk", "op": "eq", "value": 0.5},
                    ]
                },
                "then": "yes",
                "else": "no",
            },
            "yes": send("yes"),
            "no": send("no"),
        }
    )
    out = enter(j, scores={"engagement": 1, "risk": 9})
    updates = [e for e in out.effects if not isinstance(e, engine.Record | engine.Send)]
    assert updates == [
        engine.SetTraitEffect("welcomed", True),
        engine.AddScoreEffect("engagement", 5),
        engine.AddScoreEffect("engagement", 2.5),
        engine.SetScoreEffect("risk", 0.5),
    ]
    assert sends(out) == ["yes"]
    assert [r[0] for r in records(out, "updated")] == ["updated"] * 4


# ── exit_when and goal ────────────────────────────────────────────────────────────────────────


def test_exit_when_cancels_a_pending_wait_at_once() -> None:
    j = journey(
        {"a": send("t1", next="w"), "w": {"wait": "P3D", "next": "b"}, "b": send("t2")},
        exit_when=[{"event": "order_completed"}],
    )
    out = enter(j)
    assert out.instance.wake_at is not None
    gone = deliver(out, j, event("order_completed", "e2"), T0 + DAY)
    assert gone is not None
    assert (gone.instance.status, gone.instance.exit_reason) == ("exited", "exit_when")
    assert (gone.instance.wake_at, gone.instance.waiting) == (None, None)
    assert records(gone) == [("exited", "w", "exit_when")]
    assert timer(gone, j, T0 + 3 * DAY) is None
    # An ended run ignores further exit events.
    assert deliver(gone, j, event("order_completed", "e3"), T0 + DAY) is None


def test_exit_when_where_and_match() -> None:
    j = cart_journey(
        exit_when=[
            {"event": "cart_emptied", "match": "cart_id"},
            {
                "event": "unsubscribe",
                "where": {"field": "event.properties.all", "op": "eq", "value": True},
            },
        ]
    )
    out = enter(j, trigger=event("cart_updated", cart_id="A"), key="A")
    assert deliver(out, j, event("cart_emptied", "e2", cart_id="B"), T0) is None
    assert deliver(out, j, event("unsubscribe", "e2", all=False), T0) is None
    gone = deliver(out, j, event("cart_emptied", "e2", cart_id="A"), T0)
    assert gone is not None
    assert gone.instance.status == "exited"
    gone = deliver(out, j, event("unsubscribe", "e3", all=True), T0)
    assert gone is not None
    assert gone.instance.status == "exited"


def test_exit_when_also_cancels_a_wait_for_and_a_held_send() -> None:
    j = cart_journey(exit_when=[{"event": "logout"}])
    out = enter(j, trigger=event("cart_updated", cart_id="A"), key="A")
    gone = deliver(out, j, event("logout", "e2"), T0)
    assert gone is not None
    assert gone.instance.status == "exited"
    held_journey = journey(
        send_window={"from": "09:00", "to": "10:00", "timezone": "UTC"},
        exit_when=[{"event": "logout"}],
    )
    held = enter(held_journey)
    assert held.instance.waiting == "held"
    gone = deliver(held, held_journey, event("logout", "e2"), T0)
    assert gone is not None
    assert (gone.instance.status, gone.instance.wake_at) == ("exited", None)


def goal_journey(**overrides: object) -> Journey:
    return journey(
        {"a": send("t1", next="w"), "w": {"wait": "P3D", "next": "b"}, "b": send("t2")},
        goal={
            "event": "order_completed",
            "where": {"field": "event.properties.total", "op": "gt", "value": 0},
            "within": "P7D",
        },
        **overrides,
    )


def test_a_goal_within_its_window_is_counted_once() -> None:
    j = goal_journey()
    out = enter(j)
    assert out.instance.goal_until == T0 + 7 * DAY
    assert deliver(out, j, event("order_completed", "e2", total=0), T0 + DAY) is None
    hit = deliver(out, j, event("order_completed", "e2", total=5), T0 + DAY)
    assert hit is not None
    assert records(hit) == [("goal", "w", None)]
    assert hit.instance.goal_at == T0 + DAY
    assert hit.instance.active  # a goal does not end the run; exit_when does
    assert deliver(hit, j, event("order_completed", "e3", total=5), T0 + 2 * DAY) is None


def test_a_goal_after_the_run_completed_still_counts_until_the_window_closes() -> None:
    j = goal_journey()
    out = enter(j)
    done = timer(out, j, T0 + 3 * DAY)
    assert done is not None
    assert done.instance.status == "completed"
    assert done.instance.tracked(T0 + 7 * DAY)
    assert not done.instance.tracked(T0 + 7 * DAY + timedelta(seconds=1))
    hit = deliver(done, j, event("order_completed", "e2", total=5), T0 + 7 * DAY)
    assert hit is not None
    assert hit.instance.goal_at == T0 + 7 * DAY
    assert not hit.instance.tracked(T0 + 7 * DAY)


def test_a_goal_after_its_window_is_not_counted() -> None:
    j = goal_journey()
    done = timer(enter(j), j, T0 + 3 * DAY)
    assert done is not None
    assert deliver(done, j, event("order_completed", "e2", total=5), T0 + 8 * DAY) is None


def test_an_event_that_is_goal_and_exit_counts_the_goal_and_ends_the_run() -> None:
    j = goal_journey(exit_when=[{"event": "order_completed"}])
    out = enter(j)
    hit = deliver(out, j, event("order_completed", "e2", total=5), T0 + DAY)
    assert hit is not None
    assert [r[0] for r in records(hit)] == ["goal", "exited"]
    assert (hit.instance.status, hit.instance.goal_at) == ("exited", T0 + DAY)


def test_without_a_goal_a_finished_run_is_not_tracked() -> None:
    out = enter(journey())
    assert out.instance.goal_until is None
    assert not out.instance.tracked(T0)


# ── holdouts ──────────────────────────────────────────────────────────────────────────────────


def test_a_journey_holdout_enters_but_sends_nothing_and_still_counts_the_goal() -> None:
    j = goal_journey(holdout_percent=30)
    [held, treated] = (
        customers_where(lambda c: engine.in_holdout(j, "w", c), 1)[0],
        customers_where(lambda c: not engine.in_holdout(j, "w", c), 1)[0],
    )
    out = enter(j, customer_id=held)
    assert sends(out) == []
    assert records(out) == [("entered", "a", None), ("exited", None, "holdout")]
    assert (out.instance.status, out.instance.holdout, out.instance.step) == ("holdout", True, None)
    assert out.instance.wake_at is None
    assert not out.instance.active
    assert out.instance.tracked(T0 + DAY)
    hit = deliver(out, j, event("order_completed", "e2", total=5), T0 + DAY)
    assert hit is not None
    assert records(hit) == [("goal", None, None)]
    assert sends(enter(j, customer_id=treated)) == ["t1"]


def test_the_journey_holdout_is_stable_and_roughly_its_share() -> None:
    j = journey(holdout_percent=10)
    group = [engine.in_holdout(j, "w", f"c{n}") for n in range(5000)]
    assert 0.08 < sum(group) / len(group) < 0.12
    # The same customers stay held out when the journey is revised.
    revised = journey_version(j, 7)
    assert group == [engine.in_holdout(revised, "w", f"c{n}") for n in range(5000)]
    assert not any(engine.in_holdout(journey(), "w", f"c{n}") for n in range(500))
    assert all(engine.in_holdout(journey(holdout_percent=100), "w", f"c{n}") for n in range(500))


def test_the_journey_holdout_is_independent_of_a_split_named_holdout() -> None:
    j = journey(
        {
            "holdout": {
                "split": {"a": {"percent": 50, "next": "x"}, "b": {"percent": 50, "next": "y"}}
            },
            "x": send("x"),
            "y": send("y"),
        },
        holdout_percent=50,
    )
    chosen = [sends(enter(j, customer_id=f"c{n}")) for n in range(2000)]
    treated = [s[0] for s in chosen if s]
    assert 0.4 < len(treated) / len(chosen) < 0.6
    # Were the split bucketed like the journey holdout, every treated customer would take "b".
    assert 0.4 < treated.count("x") / len(treated) < 0.6


def test_a_step_holdout_skips_only_that_send_for_a_stable_share() -> None:
    j = journey({"a": send("t1", next="b", holdout_percent=25), "b": send("t2")})
    outcomes = [enter(j, customer_id=f"c{n}") for n in range(4000)]
    skipped = [o for o in outcomes if sends(o) == ["t2"]]
    assert all(sends(o) in (["t1", "t2"], ["t2"]) for o in outcomes)
    assert 0.22 < len(skipped) / len(outcomes) < 0.28
    assert records(skipped[0], "skipped") == [("skipped", "a", "step_holdout")]
    again = [enter(j, customer_id=f"c{n}", run_id="r2") for n in range(200)]
    assert [sends(o) for o in again] == [sends(o) for o in outcomes[:200]]


# ── send window ───────────────────────────────────────────────────────────────────────────────


def windowed(window: dict[str, str], **overrides: Any) -> Journey:
    return journey(send_window=window, **overrides)


def test_a_send_outside_the_window_is_held_until_it_opens() -> None:
    j = windowed({"from": "09:00", "to": "20:00"})
    ny = {"timezone": "America/New_York"}
    out = enter(j, traits=ny)  # 05:00 in New York
    opens = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
    assert sends(out) == []
    assert (out.instance.waiting, out.instance.wake_at, out.instance.step) == (
        "held",
        opens,
        "hello",
    )
    [held] = [e for e in out.effects if isinstance(e, engine.Record) and e.kind == "held"]
    assert (held.reason, held.detail) == ("send_window", {"until": opens})
    assert timer(out, j, opens - timedelta(seconds=1), traits=ny) is None
    sent = timer(out, j, opens, traits=ny)
    assert sends(sent) == ["welcome-1"]
    # The message keeps the id it would have had if sent at once.
    assert sent is not None
    [message] = [e for e in sent.effects if isinstance(e, engine.Send)]
    assert message.message_id == message_id_for(
        workspace_id="w", journey_id="j", version=1, run_id="r1", step="hello"
    )


def test_the_window_holds_marketing_but_not_a_transactional_send() -> None:
    """An order confirmation at 05:00 goes at once; the cross-sell after it waits for 09:00."""
    j = windowed(
        {"from": "09:00", "to": "20:00"},
        steps={
            "thanks": send("thanks", "cross", category="transactional"),
            "cross": send("cross-sell"),
        },
    )
    out = enter(j, traits={"timezone": "America/New_York"})  # 05:00 in New York
    assert sends(out) == ["thanks"]
    assert (out.instance.waiting, out.instance.step) == ("held", "cross")


def test_inside_the_window_a_send_goes_at_once() -> None:
    j = windowed({"from": "09:00", "to": "20:00"})
    assert sends(enter(j, traits={"timezone": "Europe/Madrid"})) == ["welcome-1"]  # 11:00
    # The window's end is exclusive: 20:00 in Madrid is held until 09:00 the next day.
    out = enter(j, traits={"timezone": "Europe/Madrid"}, now=datetime(2026, 3, 2, 19, tzinfo=UTC))
    assert out.instance.wake_at == datetime(2026, 3, 3, 8, 0, tzinfo=UTC)


def test_a_window_across_midnight() -> None:
    j = windowed({"from": "22:00", "to": "06:00", "timezone": "Europe/Madrid"})
    # Madrid is UTC+1 in early March.
    for hour_utc, sent in [(20, False), (21, True), (23, True), (2, True), (4, True), (5, False)]:
        now = datetime(2026, 3, 2, hour_utc, 0, tzinfo=UTC)
        out = enter(j, now=now, traits={"timezone": "America/New_York"})
        assert (sends(out) == ["welcome-1"]) is sent, hour_utc
        if not sent:
            assert out.instance.wake_at == datetime(2026, 3, 2, 21, 0, tzinfo=UTC)


def test_a_window_across_midnight_in_the_customer_zone() -> None:
    j = windowed({"from": "22:00", "to": "06:00"})
    tokyo = {"timezone": "Asia/Tokyo"}  # UTC+9
    out = enter(j, traits=tokyo)  # 19:00 in Tokyo
    opens = datetime(2026, 3, 2, 13, 0, tzinfo=UTC)
    assert (sends(out), out.instance.wake_at) == ([], opens)
    assert sends(timer(out, j, opens, traits=tokyo)) == ["welcome-1"]
    assert sends(enter(j, traits=tokyo, now=datetime(2026, 3, 2, 20, 59, tzinfo=UTC))) == [
        "welcome-1"
    ]  # 05:59 the next morning in Tokyo
    out = enter(j, traits=tokyo, now=datetime(2026, 3, 2, 21, 0, tzinfo=UTC))  # 06:00: closed
    assert out.instance.wake_at == datetime(2026, 3, 3, 13, 0, tzinfo=UTC)


def test_the_window_uses_the_workspace_zone_when_the_customer_has_none() -> None:
    j = windowed({"from": "09:00", "to": "20:00"})
    policy = engine.Policy(default_timezone="Asia/Tokyo")  # 19:00 in Tokyo: open
    assert sends(enter(j, policy=policy)) == ["welcome-1"]
    late = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # 21:00 in Tokyo: held until 00:00 UTC
    assert enter(j, policy=policy, now=late).instance.wake_at == datetime(
        2026, 3, 3, 0, 0, tzinfo=UTC
    )


# ── frequency caps ────────────────────────────────────────────────────────────────────────────


def test_next_allowed_and_prune() -> None:
    caps = (engine.Cap("email", 2, DAY), engine.Cap("email", 3, 7 * DAY))
    ledger: engine.Ledger = ((T0 - 5 * DAY, "email"), (T0 - 2 * DAY, "email"))
    assert engine.next_allowed(ledger, caps, "email", T0) is None
    ledger = (*ledger, (T0 - timedelta(hours=1), "email"))
    # The weekly cap is full until the oldest send is 7 days old.
    assert engine.next_allowed(ledger, caps, "email", T0) == T0 + 2 * DAY
    ledger = (*ledger, (T0, "email"))
    # Both caps full: the later of the two frees it.
    assert engine.next_allowed(ledger, caps, "email", T0) == T0 + 5 * DAY
    assert engine.next_allowed(ledger, caps, "sms", T0) is None
    # Sends older than the longest cap's period no longer count.
    assert engine.prune(ledger, caps, T0 + 3 * DAY) == ledger[1:]
    assert engine.prune(ledger, caps, T0 + 6 * DAY) == ledger[2:]
    assert engine.prune(ledger, (), T0) == ()


def test_a_capped_send_is_deferred_until_the_cap_frees() -> None:
    j = journey()
    ledger: engine.Ledger = ((T0 - timedelta(hours=20), "email"),)
    out = enter(j, policy=EMAIL_CAP, ledger=ledger)
    frees = T0 + timedelta(hours=4)
    assert sends(out) == []
    assert records(out, "held") == [("held", "hello", "frequency_cap")]
    assert (out.instance.waiting, out.instance.wake_at) == ("held", frees)
    assert out.ledger == ledger
    sent = timer(out, j, frees, policy=EMAIL_CAP)
    assert sends(sent) == ["welcome-1"]
    assert sent is not None
    assert sent.ledger == ((frees, "email"),)  # the old send has aged out


def test_a_deferred_send_is_held_again_if_the_cap_filled_meanwhile() -> None:
    j = journey()
    out = enter(j, policy=EMAIL_CAP, ledger=((T0 - timedelta(hours=20), "email"),))
    frees = T0 + timedelta(hours=4)
    again = timer(out, j, frees, policy=EMAIL_CAP, ledger=((frees, "email"),))
    assert again is not None
    assert sends(again) == []
    assert again.instance.wake_at == frees + DAY


def test_a_capped_send_is_skipped_when_the_journey_says_skip() -> None:
    j = journey(
        {"a": send("t1", next="b"), "b": send("t2", next="c"), "c": {"exit": True}},
        frequency_cap="skip",
    )
    out = enter(j, policy=EMAIL_CAP)
    assert sends(out) == ["t1"]
    assert records(out, "skipped") == [("skipped", "b", "frequency_cap")]
    assert out.instance.status == "completed"
    assert out.ledger == ((T0, "email"),)


def test_caps_count_marketing_per_channel_and_spare_transactional_sends() -> None:
    j = journey(
        {
            "a": send("m1", next="b"),
            "b": {"send": {"channel": "sms", "template": "s1"}, "next": "c"},
            "c": send("t1", category="transactional", next="d"),
            "d": send("m2"),
        },
        frequency_cap="skip",
    )
    policy = engine.Policy(caps=(engine.Cap("email", 1, DAY), engine.Cap("sms", 1, DAY)))
    out = enter(j, policy=policy)
    assert sends(out) == ["m1", "s1", "t1"]
    assert records(out, "skipped") == [("skipped", "d", "frequency_cap")]
    assert out.ledger == ((T0, "email"), (T0, "sms"))


def test_without_caps_the_ledger_is_left_alone() -> None:
    out = enter(journey(), ledger=((T0 - DAY, "email"),))
    assert out.ledger == ((T0 - DAY, "email"),)


# ── consent and sunset ────────────────────────────────────────────────────────────────────────


def consent_journey() -> Journey:
    return journey(
        {
            "m": send("marketing", next="t"),
            "t": send("receipt", category="transactional", next="s"),
            "s": {"send": {"channel": "sms", "template": "sms-offer"}},
        }
    )


@pytest.mark.parametrize(
    ("traits", "expected", "reason"),
    [
        ({}, ["marketing", "receipt", "sms-offer"], None),
        ({"email_marketing_consent": "granted"}, ["marketing", "receipt", "sms-offer"], None),
        ({"email_marketing_consent": "revoked"}, ["receipt", "sms-offer"], "no_consent"),
        ({"email_sunset": True}, ["receipt", "sms-offer"], "sunset"),
        ({"email_sunset": False}, ["marketing", "receipt", "sms-offer"], None),
        ({"sms_marketing_consent": "revoked"}, ["marketing", "receipt"], "no_consent"),
        ({"email_transactional_consent": "revoked"}, ["marketing", "receipt", "sms-offer"], None),
    ],
)
def test_consent_and_sunset_stop_marketing_but_not_transactional_sends(
    traits: dict[str, Any], expected: list[str], reason: str | None
) -> None:
    out = enter(consent_journey(), traits=traits)
    assert sends(out) == expected
    assert {r[2] for r in records(out, "skipped")} == ({reason} if reason else set())


def test_consent_revoked_while_a_send_was_held_skips_it() -> None:
    j = windowed({"from": "09:00", "to": "20:00", "timezone": "UTC"})
    out = enter(j, now=datetime(2026, 3, 2, 6, tzinfo=UTC))
    assert out.instance.waiting == "held"
    later = timer(out, j, datetime(2026, 3, 2, 9, tzinfo=UTC), traits={"email_sunset": True})
    assert sends(later) == []
    assert records(later, "skipped") == [("skipped", "hello", "sunset")]


# ── message ids ───────────────────────────────────────────────────────────────────────────────


def message_ids(outcome: engine.Outcome | None) -> list[str]:
    assert outcome is not None
    return [e.message_id for e in outcome.effects if isinstance(e, engine.Send)]


def test_message_ids_are_deterministic() -> None:
    j = journey({"a": send("t1", next="b"), "b": send("t2")})
    first = message_ids(enter(j))
    assert first == message_ids(enter(j, now=T0 + 5 * DAY))  # a replay, later
    assert len(set(first)) == 2
    assert first[0] == message_id_for(
        workspace_id="w", journey_id="j", version=1, run_id="r1", step="a"
    )
    assert set(first).isdisjoint(message_ids(enter(j, run_id="r2")))
    assert set(first).isdisjoint(message_ids(enter(journey_version(j, 2))))


def test_run_ids_are_deterministic_per_cause() -> None:
    j = journey()
    a = engine.run_id_for(j, workspace_id="w", customer_id="c1", event_id="e1")
    assert a == engine.run_id_for(j, workspace_id="w", customer_id="c1", event_id="e1")
    assert a != engine.run_id_for(j, workspace_id="w", customer_id="c1", event_id="e2")
    assert a != engine.run_id_for(j, workspace_id="w", customer_id="c2", event_id="e1")
    revised = journey_version(j, 2)
    assert a != engine.run_id_for(revised, workspace_id="w", customer_id="c1", event_id="e1")


def test_a_loop_back_to_a_send_gets_a_new_message_id_each_time() -> None:
    j = journey(
        {
            "nudge": send("nudge", next="w"),
            "w": {
                "wait_for": {"event": "clicked", "timeout": "P1D"},
                "on_event": "done",
                "on_timeout": "nudge",
            },
            "done": {"exit": True},
        }
    )
    out = enter(j)
    ids = message_ids(out)
    for day in (1, 2):
        nxt = timer(out, j, T0 + day * DAY)
        assert nxt is not None
        ids += message_ids(nxt)
        out = nxt
    assert len(ids) == len(set(ids)) == 3
    assert ids[1] == message_id_for(
        workspace_id="w", journey_id="j", version=1, run_id="r1", step="nudge#2"
    )
    assert out.instance.visits == {"nudge": 3}


# ── stop ──────────────────────────────────────────────────────────────────────────────────────


def test_stop_ends_a_waiting_run() -> None:
    j = goal_journey()
    out = enter(j)
    stopped = engine.stop(out.instance, reason="archived", now=T0 + DAY)
    assert (stopped.instance.status, stopped.instance.exit_reason) == ("exited", "archived")
    assert stopped.instance.wake_at is None
    assert records(stopped) == [("exited", "w", "archived")]
    assert timer(stopped, j, T0 + 3 * DAY) is None


def test_a_branch_compares_an_instant_with_now() -> None:
    j = journey(
        {
            "old": {
                "branch": {"field": "customer.last_order_at", "op": "older_than", "value": "P90D"},
                "then": "miss",
                "else": "thanks",
            },
            "miss": send("miss-you"),
            "thanks": send("thanks"),
        }
    )
    day_90 = (T0 - timedelta(days=90)).isoformat()
    day_89 = (T0 - timedelta(days=89)).isoformat()
    assert sends(enter(j, traits={"last_order_at": day_90})) == ["miss-you"]
    assert sends(enter(j, traits={"last_order_at": day_89})) == ["thanks"]
    assert sends(enter(j)) == ["thanks"]  # never ordered: not "older than"
