"""Customer intelligence through the journey service's handlers on SQLite and PostgreSQL: the
facts stored and loaded back, segment membership and the order log kept in their tables, derived
events published through the outbox, the ``intel`` timer fired by the poller, and insights.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.journey.adapters.tables import (
    customers,
    orders,
    outbox,
    processed_events,
    segment_members,
    timers,
)
from services.journey.domain import builtin_segments, intelligence, scoring
from services.journey.domain import engine as journey_engine
from services.journey.domain.catalog import JourneyCatalog
from services.journey.domain.customer import INTEL_TIMER, CustomerState, apply_event
from services.journey.domain.definitions import Journey
from services.journey.domain.intelligence import Intelligence
from services.journey.domain.policy import WorkspacePolicy
from services.journey.service_layer.handlers import (
    handle_events,
    handle_insights,
    raised_here_record,
)
from services.journey.service_layer.sources import StaticCatalogs, StaticIntel, StaticPolicies
from services.journey.service_layer.uow import JourneyUnitOfWork
from services.journey.timer_poller import TimerPoller
from shared.clock import VirtualClock
from shared.contracts.events import EventEnvelope
from shared.contracts.messages import MessageRequest
from shared.contracts.topics import EVENTS, MESSAGES
from shared.db.engine import session_factory

START = datetime(2026, 11, 23, 9, tzinfo=UTC)
DAY = timedelta(days=1)
QUIET = Intelligence(
    score_rules=scoring.ScoreRules.model_validate(
        {"rules": [{"id": "view", "event": "product_viewed", "points": 1}]}
    )
)
"""Orders earn no points: after an order only lifecycle and segments change with time."""
BROWSING = Intelligence(
    segments=intelligence.with_segments(intelligence.builtin(), builtin_segments.examples())
)
"""The defaults plus the documented window segment ``viewed_product_3x_7d`` (not built in)."""


def journey(journey_id: str, trigger: dict[str, Any]) -> Journey:
    return Journey.model_validate(
        {
            "id": journey_id,
            "version": 1,
            "name": journey_id,
            "trigger": trigger,
            "start": "hello",
            "steps": {"hello": {"send": {"channel": "email", "template": journey_id}}},
        }
    )


WINBACK = journey("winback", {"segment": "no_order_90d"})
FIRST = journey(
    "first",
    {
        "event": "lifecycle_stage_changed",
        "where": {"field": "event.properties.to", "op": "eq", "value": "first_time_buyer"},
    },
)
VIP = journey("vip", {"segment": "vip"})
CATALOG = JourneyCatalog([WINBACK, FIRST, VIP])


def event(
    event_id: str,
    type_: str,
    at: datetime = START,
    *,
    customer: str | None = "c1",
    anonymous: str | None = None,
    historical: bool = False,
    **properties: Any,
) -> EventEnvelope:
    return EventEnvelope.model_validate(
        {
            "event_id": event_id,
            "workspace_id": "demo",
            "customer_id": customer,
            "anonymous_id": anonymous,
            "type": type_,
            "occurred_at": at,
            "received_at": at,
            "properties": properties,
            "traits": {"email": f"{customer}@example.com"} if customer else {},
            "historical": historical,
        }
    )


def order(
    event_id: str, order_id: str, at: datetime = START, total: str = "50.00", **kw: Any
) -> EventEnvelope:
    return event(
        event_id, "order_completed", at, order_id=order_id, total=total, currency="USD", **kw
    )


async def apply(
    engine: AsyncEngine,
    events: Sequence[EventEnvelope],
    now: datetime = START,
    intel: Intelligence | None = None,
) -> int:
    return await _handled(engine, handle_events, events, now, intel)


async def insights(
    engine: AsyncEngine,
    found: dict[tuple[str, str], dict[str, Any]],
    now: datetime,
    intel: Intelligence | None = None,
) -> int:
    return await _handled(engine, handle_insights, found, now, intel)


async def _handled(
    engine: AsyncEngine,
    handler: Callable[..., Awaitable[int]],
    items: Any,
    now: datetime,
    intel: Intelligence | None,
) -> int:
    """``handler`` (a journey handler) of ``items`` in one unit of work, workspace "demo"."""
    async with JourneyUnitOfWork(session_factory(engine)) as uow:
        return await handler(
            uow,
            items,
            catalog=CATALOG,
            policies={"demo": WorkspacePolicy()},
            now=now,
            intel={"demo": intel} if intel else None,
        )


async def load(engine: AsyncEngine, customer: str, now: datetime) -> CustomerState:
    async with JourneyUnitOfWork(session_factory(engine)) as uow:
        states = await uow.states.load({("demo", customer)}, now=now, lock=False)
        await uow.commit()
    return states[("demo", customer)]


async def published(engine: AsyncEngine) -> list[EventEnvelope]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(outbox.c.key, outbox.c.value, outbox.c.headers)
            .where(outbox.c.topic == EVENTS)
            .order_by(outbox.c.id)
        )
        found = []
        for r in rows:
            envelope = EventEnvelope.from_json(r.value)
            assert r.key == envelope.key
            assert r.headers["ce_id"] == envelope.event_id
            assert r.headers["ce_type"] == f"ciclo.event.{envelope.type}"
            found.append(envelope)
        return found


async def messages(engine: AsyncEngine) -> list[MessageRequest]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(outbox.c.value).where(outbox.c.topic == MESSAGES).order_by(outbox.c.id)
        )
        return [MessageRequest.from_json(r.value) for r in rows]


async def members(engine: AsyncEngine) -> set[tuple[str, str, datetime]]:
    t = segment_members
    async with engine.connect() as conn:
        rows = await conn.execute(select(t.c.customer_id, t.c.segment_id, t.c.entered_at))
        return {(r.customer_id, r.segment_id, r.entered_at) for r in rows}


async def intel_timers(engine: AsyncEngine) -> dict[str, datetime]:
    t = timers
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(t.c.customer_id, t.c.due_at).where(t.c.name == INTEL_TIMER)
        )
        return {r.customer_id: r.due_at for r in rows}


def in_memory(
    events: Sequence[EventEnvelope],
    now: datetime,
    customer: str,
    intel: Intelligence | None = None,
) -> CustomerState:
    """The same events applied to a state that never saw a database."""
    state = CustomerState("demo", customer)
    for e in events:
        apply_event(
            state,
            e,
            catalog=CATALOG,
            policy=journey_engine.Policy(),
            now=now,
            live=True,
            intel=intel,
        )
    return state


# ── Storage ───────────────────────────────────────────────────────────────────────────────────


async def test_the_facts_survive_a_save_and_load_round_trip(engine: AsyncEngine) -> None:
    history = [
        order("e1", "A", START - 2 * DAY, discount="5.00"),
        event("e2", "checkout_started", START - DAY),
        event("e3", "product_viewed", START, product_id="p1"),
        event("e4", "product_viewed", START, product_id="p2"),
        event("e5", "product_viewed", START, product_id="p3"),
    ]
    for e in history:  # one batch each: every save and load in between counts
        await apply(engine, [e], intel=BROWSING)
    found = {
        "rfm": {"r": 5, "f": 1, "m": 3, "group": "new", "recency_days": 2},
        "predictions": {"p_alive": 0.71},
        "computed_at": "2026-11-23T09:00:00Z",
    }
    assert await insights(engine, {("demo", "c1"): found}, START, BROWSING) == 1

    stored = await load(engine, "c1", START)
    expected = in_memory(history, START, "c1", BROWSING)
    expected.facts.insights = found
    assert stored.facts.to_json() == expected.facts.to_json()
    facts = stored.facts
    assert facts.profile.order_count == 1 and facts.profile.discounted_orders == 1
    assert facts.lead == expected.facts.lead
    assert (facts.band, facts.stage) == ("warm", "first_time_buyer")
    assert set(facts.segments.members) == {"one_time_buyer", "viewed_product_3x_7d"}
    assert facts.segments.windows == expected.facts.segments.windows
    assert facts.insights == found
    assert facts.timeline == expected.facts.timeline
    # Derived events are timed when they were raised (START), after the backdated checkout.
    assert [kind for _, kind, _ in facts.timeline][:3] == [
        "order_completed",
        "checkout_started",
        "lead_band_changed",
    ]
    assert facts.due == expected.facts.due is not None
    stored.bind(intelligence.default(), START)
    assert (
        stored.recipient()["lead"]
        == expected.recipient()["lead"]
        == {
            "score": round(scoring.score(facts.lead, scoring.default_score_rules(), START), 2),
            "band": "warm",
        }
    )

    async with engine.connect() as conn:
        row = (await conn.execute(select(customers))).one()
    assert (row.stage, row.lead_band, row.order_count) == ("first_time_buyer", "warm", 1)
    assert (row.first_order_at, row.last_order_at) == (START - 2 * DAY, START - 2 * DAY)
    assert row.revenue == 50.0

    # The loaded facts carry on exactly as the ones kept in memory.
    more = [order("e6", "B", START + DAY)]
    await apply(engine, more, START + DAY)
    for e in more:
        apply_event(
            expected,
            e,
            catalog=CATALOG,
            policy=journey_engine.Policy(),
            now=START + DAY,
            live=True,
        )
    again = await load(engine, "c1", START + DAY)
    assert again.facts.to_json() == expected.facts.to_json()
    assert again.facts.stage == "active"


async def test_json_columns_read_back_exactly_as_written(engine: AsyncEngine) -> None:
    """JSON columns are read by orjson where it reads what ``json.loads`` reads: an integer
    beyond 64 bits, which orjson would read as a float, comes back as the integer."""
    traits = {
        "loyalty_number": 2**70,
        "negative": -(2**63) - 1,
        "largest": 2**64 - 1,
        "ratio": 0.1,
        "note": "caf\u00e9 \U0001f600",
    }
    identify = event("i1", "identify").model_copy(update={"traits": traits})
    assert await apply(engine, [identify]) == 1
    state = await load(engine, "c1", START)
    assert {k: (v, type(v)) for k, v in state.traits.items() if k in traits} == {
        k: (v, type(v)) for k, v in traits.items()
    }


async def test_segment_member_rows_follow_membership(engine: AsyncEngine) -> None:
    await apply(engine, [order("e1", "A", START)])
    assert await members(engine) == {("c1", "one_time_buyer", START)}
    await apply(engine, [order("e2", "B", START + DAY)], START + DAY)
    assert await members(engine) == {("c1", "occasional", START + DAY)}
    # A cancellation takes the customer back: one order, one-time buyer again.
    later = START + 2 * DAY
    await apply(engine, [event("e3", "order_cancelled", later, order_id="B")], later)
    assert await members(engine) == {("c1", "one_time_buyer", later)}


async def test_the_order_log_has_each_order_once_and_marks_cancellations(
    engine: AsyncEngine,
) -> None:
    await apply(
        engine,
        [
            order("e1", "A", START),
            order("e2", "A", START),  # the shop reported it twice
            order("e3", "B", START + DAY, total="20.00"),
            event("e4", "order_cancelled", START + DAY, order_id="B"),  # in the same batch
            order("e5", "C", START + DAY, total="10.00", customer="c2"),
        ],
        START + DAY,
    )
    later = START + 3 * DAY
    await apply(engine, [event("e6", "order_cancelled", later, order_id="A")], later)
    await apply(engine, [order("e7", "A", later)], later)  # and once more, after all that
    async with engine.connect() as conn:
        rows = await conn.execute(select(orders).order_by(orders.c.customer_id, orders.c.order_id))
        log = [(r.customer_id, r.order_id, r.placed_at, r.value, r.cancelled) for r in rows]
    assert log == [
        ("c1", "A", START, 50.0, True),
        ("c1", "B", START + DAY, 20.0, True),
        ("c2", "C", START + DAY, 10.0, False),
    ]


# ── Derived events on the events topic ────────────────────────────────────────────────────────


async def test_derived_events_are_published_and_skipped_when_they_come_back(
    engine: AsyncEngine,
) -> None:
    views = [
        event(f"v{i}", "product_viewed", START, customer=None, anonymous="visitor-9")
        for i in range(3)
    ]
    past = START - 30 * DAY
    await apply(
        engine,
        [order("e1", "A", START), *views, order("h1", "H", past, customer="c2", historical=True)],
        intel=BROWSING,
    )
    records = await published(engine)
    by_subject: dict[str, list[EventEnvelope]] = {}
    for e in records:
        by_subject.setdefault(e.subject, []).append(e)
        assert (e.workspace_id, e.source, e.received_at) == ("demo", "journey", START)
        assert e.occurred_at == START
        assert e.type in intelligence.DERIVED_TYPES
    assert [
        (e.type, e.properties.get("to") or e.properties.get("segment")) for e in by_subject["c1"]
    ] == [
        ("lead_band_changed", "warm"),
        ("lifecycle_stage_changed", "first_time_buyer"),
        ("segment_entered", "one_time_buyer"),
    ]
    assert not any(e.historical for e in by_subject["c1"])
    [anonymous] = by_subject["anon:visitor-9"]
    assert (anonymous.customer_id, anonymous.anonymous_id) == (None, "visitor-9")
    assert anonymous.properties == {"segment": "viewed_product_3x_7d"}
    assert anonymous.key == "demo:anon:visitor-9"
    assert by_subject["c2"] and all(e.historical for e in by_subject["c2"])
    # The stage change of c1 started its journey; the historical one of c2 started nothing.
    assert [(m.customer_id, m.journey_id) for m in await messages(engine)] == [("c1", "first")]

    # Applied where they were raised, so no idempotency mark is written for them ...
    async with engine.connect() as conn:
        marked = set(await conn.scalars(select(processed_events.c.event_id)))
    assert marked == {"e1", "v0", "v1", "v2", "h1"}
    # ... and the consumer knows them by their CloudEvents headers, before decoding them.
    async with engine.connect() as conn:
        headers = list(await conn.scalars(select(outbox.c.headers).where(outbox.c.topic == EVENTS)))
    assert headers and all(raised_here_record(h) for h in headers)
    assert not raised_here_record(order("x1", "X", START).headers())

    # Back from the events topic: skipped, nothing changes.
    assert await apply(engine, records, START + DAY) == 0
    assert len(await published(engine)) == len(records)
    assert len(await messages(engine)) == 1
    before = await load(engine, "c1", START + DAY)
    assert before.facts.timeline[-1][1] == "segment_entered"

    # An event of a derived type from any other source is a storefront's, applied as such.
    posted = records[0].model_copy(update={"event_id": "posted-1", "source": "api"})
    assert await apply(engine, [posted], START + DAY) == 1
    after = await load(engine, "c1", START + DAY)
    assert after.facts.timeline[-1][1:] == (posted.type, "posted-1")


# ── The intel timer ───────────────────────────────────────────────────────────────────────────


async def test_the_intel_timer_is_stored_and_the_poller_fires_it_on_day_90(
    engine: AsyncEngine,
) -> None:
    await apply(engine, [order("e1", "A", START)], intel=QUIET)
    assert await intel_timers(engine) == {"c1": START + 90 * DAY}

    clock = VirtualClock(START + 90 * DAY - timedelta(seconds=1))
    poller = TimerPoller(
        engine=engine,
        clock=clock,
        catalogs=StaticCatalogs(CATALOG),
        policies=StaticPolicies(),
        intel=StaticIntel(QUIET),
        batch_size=100,
        poll_interval=0.05,
        lease=30,
    )
    assert await poller.fire_due() == 0
    before = await published(engine)
    clock.advance(timedelta(seconds=1))
    assert await poller.fire_due() == 1
    fired = (await published(engine))[len(before) :]
    assert [(e.type, e.properties.get("segment") or e.properties["to"]) for e in fired] == [
        ("lifecycle_stage_changed", "at_risk"),
        ("segment_entered", "no_order_90d"),
    ]
    assert all(e.occurred_at == START + 90 * DAY and not e.historical for e in fired)
    assert [m.journey_id for m in await messages(engine)] == ["first", "winback"]
    assert ("c1", "no_order_90d", START + 90 * DAY) in await members(engine)
    # Next: lapsed, at four times the one-time buyer's default gap.
    assert await intel_timers(engine) == {"c1": START + 180 * DAY}
    state = await load(engine, "c1", START + 90 * DAY)
    assert state.facts.stage == "at_risk"
    # Nothing else is due: another round fires nothing.
    assert await poller.fire_due() == 0


async def test_an_order_moves_the_intel_timer(engine: AsyncEngine) -> None:
    await apply(engine, [order("e1", "A", START)], intel=QUIET)
    later = START + 40 * DAY
    await apply(engine, [order("e2", "B", later)], later, intel=QUIET)
    # Rhythm 40 days: at risk after 80 days without an order; no_order_90d after 90.
    assert await intel_timers(engine) == {"c1": later + 80 * DAY}


# ── Insights ──────────────────────────────────────────────────────────────────────────────────


async def test_insights_are_stored_and_move_customers_in_and_out_of_vip(
    engine: AsyncEngine,
) -> None:
    await apply(engine, [order("e1", "A"), order("e2", "B", customer="c2")])
    champions = {
        "rfm": {"r": 5, "f": 5, "m": 4, "group": "champions"},
        "predictions": {"p_alive": 0.93, "expected_orders_90d": 2.1},
        "computed_at": "2026-11-24T03:00:00Z",
    }
    ordinary = {
        "rfm": {"r": 3, "f": 1, "m": 2, "group": "potential"},
        "predictions": {"p_alive": 0.4},
        "computed_at": "2026-11-24T03:00:00Z",
    }
    run = START + DAY
    count = await insights(
        engine,
        {("demo", "c1"): champions, ("demo", "c2"): ordinary, ("demo", "ghost"): champions},
        run,
    )
    assert count == 2  # a customer the service does not know is skipped
    async with engine.connect() as conn:
        stored = {
            r.customer_id: r.insights
            for r in await conn.execute(select(customers.c.customer_id, customers.c.insights))
        }
    assert stored == {"c1": champions, "c2": ordinary}
    assert {(c, s) for c, s, _ in await members(engine)} == {
        ("c1", "one_time_buyer"),
        ("c1", "vip"),
        ("c2", "one_time_buyer"),
    }
    entered = [e for e in await published(engine) if e.type == "segment_entered"]
    assert (entered[-1].customer_id, entered[-1].properties) == ("c1", {"segment": "vip"})
    assert [(m.customer_id, m.journey_id) for m in await messages(engine)][-1] == ("c1", "vip")

    slipped = champions | {
        "rfm": {"r": 2, "f": 5, "m": 4, "group": "at_risk"},
        "computed_at": "2026-12-01T03:00:00Z",
    }
    await insights(engine, {("demo", "c1"): slipped}, START + 8 * DAY)
    assert ("c1", "vip") not in {(c, s) for c, s, _ in await members(engine)}
    last = (await published(engine))[-1]
    assert (last.type, last.customer_id, last.properties["segment"]) == (
        "segment_exited",
        "c1",
        "vip",
    )
    state = await load(engine, "c1", START + 8 * DAY)
    assert state.facts.insights == slipped
    state.bind(intelligence.default(), START + 8 * DAY)
    assert state.recipient()["rfm"]["group"] == "at_risk"
