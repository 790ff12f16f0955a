"""Durable timers on SQLite and PostgreSQL: waits fire through the poller, events and timers of
one customer never race, several pollers never fire a timer twice, the live cut-off holds."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.journey.adapters.tables import (
    activity,
    customers,
    instances,
    outbox,
    step_counts,
    timers,
)
from services.journey.domain.catalog import JourneyCatalog
from services.journey.domain.definitions import Journey
from services.journey.domain.policy import WorkspacePolicy
from services.journey.service_layer.handlers import handle_events
from services.journey.service_layer.sources import StaticCatalogs, StaticPolicies
from services.journey.service_layer.uow import JourneyUnitOfWork
from services.journey.timer_poller import TimerPoller
from shared.clock import VirtualClock
from shared.contracts.events import EventEnvelope
from shared.contracts.messages import MessageRequest
from shared.contracts.topics import MESSAGES
from shared.db.engine import session_factory

START = datetime(2026, 11, 23, 9, tzinfo=UTC)

CART = Journey.model_validate(
    {
        "id": "cart",
        "version": 1,
        "name": "Cart abandonment",
        "trigger": {"event": "cart_updated", "key": "cart_id"},
        "reentry": "always",
        "exit_when": [{"event": "order_completed", "match": "cart_id"}],
        "start": "quiet",
        "steps": {
            "quiet": {
                "wait_for": {"event": "cart_updated", "match": "cart_id", "timeout": "PT1H"},
                "on_event": "quiet",
                "on_timeout": "remind",
            },
            "remind": {"send": {"channel": "email", "template": "cart-1"}, "next": "later"},
            "later": {"wait": "PT23H", "next": "again"},
            "again": {"send": {"channel": "email", "template": "cart-2"}},
        },
    }
)


def cart_event(
    event_id: str, customer: str, cart: str, at: datetime, type_: str = "cart_updated"
) -> EventEnvelope:
    return EventEnvelope.model_validate(
        {
            "event_id": event_id,
            "workspace_id": "demo",
            "customer_id": customer,
            "type": type_,
            "occurred_at": at,
            "received_at": at,
            "properties": {"cart_id": cart},
            "traits": {"email": f"{customer}@example.com"},
        }
    )


async def apply(
    engine: AsyncEngine,
    events: list[EventEnvelope],
    now: datetime,
    policy: WorkspacePolicy | None = None,
) -> None:
    async with JourneyUnitOfWork(session_factory(engine)) as uow:
        await handle_events(
            uow,
            events,
            catalog=JourneyCatalog([CART]),
            policies={"demo": policy or WorkspacePolicy()},
            now=now,
        )


def poller(engine: AsyncEngine, clock: VirtualClock, batch_size: int = 100) -> TimerPoller:
    return TimerPoller(
        engine=engine,
        clock=clock,
        catalogs=StaticCatalogs(JourneyCatalog([CART])),
        policies=StaticPolicies(),
        batch_size=batch_size,
        poll_interval=0.05,
        lease=30,
    )


async def sent(engine: AsyncEngine) -> list[MessageRequest]:
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(outbox.c.value).where(outbox.c.topic == MESSAGES).order_by(outbox.c.id)
            )
        ).all()
    return [MessageRequest.from_json(r.value) for r in rows]


async def pending(engine: AsyncEngine) -> list[tuple[str, str, datetime]]:
    """The journeys' timers (customer intelligence's own ``intel`` timers left out)."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(timers.c.customer_id, timers.c.name, timers.c.due_at)
            .where(timers.c.name != "intel")
            .order_by(timers.c.customer_id)
        )
        return [(r.customer_id, r.name, r.due_at) for r in rows]


async def test_a_wait_fires_through_the_poller_and_the_next_wait_is_durable(
    engine: AsyncEngine,
) -> None:
    clock = VirtualClock(START)
    await apply(engine, [cart_event("e1", "c1", "A", START)], START)
    [(_, name, due)] = await pending(engine)
    assert name.startswith("run:") and due == START + timedelta(hours=1)

    timer_poller = poller(engine, clock)
    assert await timer_poller.fire_due() == 0  # not due yet
    clock.advance(timedelta(hours=1))
    assert await timer_poller.fire_due() == 1
    [first] = await sent(engine)
    assert (first.template, first.customer_id, first.data["event"]["properties"]) == (
        "cart-1",
        "c1",
        {"cart_id": "A"},
    )
    [(_, _, due)] = await pending(engine)  # the 23 h wait, as a new due time on the same timer
    assert due == START + timedelta(hours=24)
    clock.advance(timedelta(hours=23))
    assert await timer_poller.fire_due() == 1
    assert [m.template for m in await sent(engine)] == ["cart-1", "cart-2"]
    assert await pending(engine) == []
    async with engine.connect() as conn:
        status = (await conn.execute(select(instances.c.status))).scalar_one()
    assert status == "completed"


async def test_a_new_update_of_the_cart_restarts_its_hour(engine: AsyncEngine) -> None:
    await apply(engine, [cart_event("e1", "c1", "A", START)], START)
    later = START + timedelta(minutes=40)
    await apply(engine, [cart_event("e2", "c1", "A", later)], later)
    [(_, _, due)] = await pending(engine)
    assert due == later + timedelta(hours=1)
    async with engine.connect() as conn:
        runs = (await conn.execute(select(func.count()).select_from(instances))).scalar_one()
    assert runs == 1  # keyed on the cart: the second update did not start a second run


async def test_the_reminder_shows_the_cart_as_its_last_update_left_it(
    engine: AsyncEngine,
) -> None:
    """The update that re-arms the wait becomes the run's trigger, and is stored as such: the
    reminder, fired in a later transaction from the stored run, shows the cart as it is now."""
    clock = VirtualClock(START)
    first = cart_event("e1", "c1", "A", START)
    await apply(engine, [first.model_copy(update={"properties": {"cart_id": "A", "n": 1}})], START)
    later = START + timedelta(minutes=40)
    second = cart_event("e2", "c1", "A", later)
    await apply(engine, [second.model_copy(update={"properties": {"cart_id": "A", "n": 2}})], later)
    clock.advance(timedelta(minutes=40, hours=1))
    assert await poller(engine, clock).fire_due() == 1
    [reminder] = await sent(engine)
    assert reminder.data["event"]["id"] == "e2"
    assert reminder.data["event"]["properties"] == {"cart_id": "A", "n": 2}


async def test_an_order_of_the_cart_cancels_the_pending_reminder_at_once(
    engine: AsyncEngine,
) -> None:
    clock = VirtualClock(START)
    await apply(
        engine, [cart_event("e1", "c1", "A", START), cart_event("e2", "c1", "B", START)], START
    )
    assert len(await pending(engine)) == 2
    at = START + timedelta(minutes=10)
    await apply(engine, [cart_event("o1", "c1", "A", at, type_="order_completed")], at)
    assert len(await pending(engine)) == 1  # only cart B's timer is left
    clock.advance(timedelta(hours=2))
    await poller(engine, clock).fire_due()
    [only] = await sent(engine)
    assert only.data["event"]["properties"]["cart_id"] == "B"
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(activity.c.kind, activity.c.reason).where(activity.c.kind == "exited")
            )
        ).all()
    assert [(r.kind, r.reason) for r in rows] == [("exited", "exit_when")]


async def test_a_timer_leased_before_an_exit_event_does_not_send(engine: AsyncEngine) -> None:
    """The race: a poller leases a due timer, an order of the cart commits, then the poller
    fires. It re-reads the state under the customer's lock and finds nothing due."""
    clock = VirtualClock(START + timedelta(hours=2))
    await apply(engine, [cart_event("e1", "c1", "A", START)], START)
    async with JourneyUnitOfWork(session_factory(engine)) as uow:
        leased = await uow.timers.lease_due(now=clock.now(), limit=10, lease=timedelta(seconds=30))
        await uow.commit()
    assert len(leased) == 1
    at = clock.now()
    await apply(engine, [cart_event("o1", "c1", "A", at, type_="order_completed")], at)
    from services.journey.service_layer.handlers import Fired, handle_timers

    async with JourneyUnitOfWork(session_factory(engine)) as uow:
        fired = await handle_timers(
            uow,
            [Fired(*row) for row in leased],
            catalog=JourneyCatalog([CART]),
            policies={},
            now=clock.now(),
        )
    assert fired == 0
    assert await sent(engine) == []


async def test_pollers_running_side_by_side_fire_each_timer_once(engine: AsyncEngine) -> None:
    customers_n = 120
    await apply(
        engine, [cart_event(f"e{i}", f"c{i}", "A", START) for i in range(customers_n)], START
    )
    clock = VirtualClock(START + timedelta(hours=1, seconds=1))
    pollers = [poller(engine, clock, batch_size=25) for _ in range(3)]

    async def drain(p: TimerPoller) -> int:
        total = 0
        while (n := await p.fire_due()) > 0:
            total += n
        return total

    await asyncio.gather(*(drain(p) for p in pollers))
    requests = await sent(engine)
    assert len(requests) == customers_n
    assert len({r.message_id for r in requests}) == customers_n
    # every run now waits its 23 hours
    assert {name for _, name, _ in await pending(engine)} == {f"run:{r.run_id}" for r in requests}


async def test_a_crashed_pollers_lease_passes_to_another(engine: AsyncEngine) -> None:
    await apply(engine, [cart_event("e1", "c1", "A", START)], START)
    clock = VirtualClock(START + timedelta(hours=1))
    async with JourneyUnitOfWork(session_factory(engine)) as uow:  # leases, then "dies"
        assert (
            len(await uow.timers.lease_due(now=clock.now(), limit=10, lease=timedelta(seconds=30)))
            == 1
        )
        await uow.commit()
    other = poller(engine, clock)
    assert await other.fire_due() == 0
    clock.advance(timedelta(seconds=31))
    assert await other.fire_due() == 1
    assert len(await sent(engine)) == 1


async def test_events_past_the_cut_off_build_state_but_never_start_runs(
    engine: AsyncEngine,
) -> None:
    policy = WorkspacePolicy(max_event_age=timedelta(days=1), live_from=START - timedelta(days=30))
    stale = cart_event("e1", "c1", "A", START - timedelta(days=2))
    before_live = cart_event("e2", "c2", "A", START - timedelta(days=40))
    await apply(engine, [stale, before_live], START, policy)
    assert await pending(engine) == []
    async with engine.connect() as conn:
        profiles = (await conn.execute(select(func.count()).select_from(customers))).scalar_one()
        runs = (await conn.execute(select(func.count()).select_from(instances))).scalar_one()
    assert (profiles, runs) == (2, 0)
    live = cart_event("e3", "c1", "B", START - timedelta(hours=2))
    await apply(engine, [live], START, policy)
    assert len(await pending(engine)) == 1


async def test_step_counters_add_up_across_batches(engine: AsyncEngine) -> None:
    await apply(engine, [cart_event("e1", "c1", "A", START)], START)
    await apply(engine, [cart_event("e2", "c2", "A", START)], START)
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(step_counts.c.step, step_counts.c.kind, step_counts.c.count).order_by(
                    step_counts.c.kind
                )
            )
        ).all()
    assert [(r.step, r.kind, r.count) for r in rows] == [
        ("quiet", "entered", 2),
        ("quiet", "waited", 2),
    ]


BIRTHDAY = Journey.model_validate(
    {
        "id": "birthday",
        "version": 1,
        "name": "Birthday",
        "trigger": {"date_trait": "birthday", "at": "09:00:00"},
        "reentry": "always",
        "start": "greet",
        "steps": {"greet": {"send": {"channel": "email", "template": "birthday-1"}}},
    }
)


async def test_customers_already_there_get_birthday_schedules_when_the_journey_arrives(
    engine: AsyncEngine,
) -> None:
    profiles = [
        EventEnvelope.model_validate(
            {
                "event_id": f"i{i}",
                "workspace_id": "demo",
                "customer_id": f"c{i:02d}",
                "type": "identify",
                "occurred_at": START,
                "received_at": START,
                "traits": {
                    "email": f"c{i}@example.com",
                    "birthday": "1990-11-25" if i % 3 else "not a date",
                    "timezone": "Europe/Madrid",
                },
            }
        )
        for i in range(12)
    ]
    await apply(engine, profiles, START)  # no birthday journey yet: no schedules
    assert await pending(engine) == []

    clock = VirtualClock(START)
    catalog = JourneyCatalog([CART, BIRTHDAY])
    backfiller = TimerPoller(
        engine=engine,
        clock=clock,
        catalogs=StaticCatalogs(catalog),
        policies=StaticPolicies(),
        batch_size=5,  # three chunks for twelve customers
        poll_interval=0.05,
        lease=30,
    )
    chunks = 0
    while await backfiller.backfill_step():
        chunks += 1
    assert chunks == 3
    assert await backfiller.backfill_step() is False  # finished, remembered
    due = await pending(engine)
    assert len(due) == 8  # the four with no real date get none
    # 09:00 in Madrid (UTC+1 in November) on the 25th
    assert {d for _, _, d in due} == {datetime(2026, 11, 25, 8, tzinfo=UTC)}

    clock.advance(due[0][2] - START)
    assert [await backfiller.fire_due() for _ in range(3)] == [5, 3, 0]
    assert [m.template for m in await sent(engine)] == ["birthday-1"] * 8
    # and next year's greeting is already scheduled
    assert {d for _, _, d in await pending(engine)} == {datetime(2027, 11, 25, 8, tzinfo=UTC)}


async def test_the_backlog_gauge_counts_what_is_due_and_not_fired(engine: AsyncEngine) -> None:
    from services.journey.timer_poller import TIMERS_DUE

    await apply(engine, [cart_event(f"e{i}", f"c{i}", "A", START) for i in range(60)], START)
    clock = VirtualClock(START + timedelta(hours=2))
    timer_poller = poller(engine, clock, batch_size=25)
    assert await timer_poller.fire_due() == 25
    assert TIMERS_DUE._value.get() == 35
    await timer_poller.fire_due()  # counted at most every 5 s: unchanged
    assert TIMERS_DUE._value.get() == 35
    assert await timer_poller.fire_due() == 10  # the last round takes all that is due
    assert TIMERS_DUE._value.get() == 0
