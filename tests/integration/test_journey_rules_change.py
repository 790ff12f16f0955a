"""A segment saved over HTTP (or any change of a workspace's rules) is decided for the customers
already there, in pages, by the idle timer poller: nobody waits for their next event."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.journey.adapters.intelligence_config import DatabaseIntel, save_segment
from services.journey.adapters.tables import backfills, outbox, segment_members
from services.journey.domain.catalog import JourneyCatalog
from services.journey.domain.definitions import Journey
from services.journey.domain.policy import WorkspacePolicy
from services.journey.service_layer.handlers import handle_events
from services.journey.service_layer.sources import StaticCatalogs, StaticPolicies
from services.journey.service_layer.uow import JourneyUnitOfWork
from services.journey.timer_poller import TimerPoller
from shared.clock import VirtualClock
from shared.contracts.events import EventEnvelope
from shared.contracts.topics import EVENTS, MESSAGES
from shared.db.engine import session_factory

NOW = datetime(2026, 11, 23, 9, tzinfo=UTC)
BIG = {
    "id": "big_first_order",
    "name": "First order over 100",
    "condition": {"field": "profile.revenue", "op": "gte", "value": 100},
}
WELCOME_BIG = Journey.model_validate(
    {
        "id": "welcome-big",
        "version": 1,
        "name": "Thanks, big spender",
        "trigger": {"segment": "big_first_order"},
        "start": "hello",
        "steps": {"hello": {"send": {"channel": "email", "template": "thanks"}}},
    }
)


def order(i: int, total: str) -> EventEnvelope:
    return EventEnvelope.model_validate(
        {
            "event_id": f"o{i}",
            "workspace_id": "demo",
            "customer_id": f"c{i:02d}",
            "type": "order_completed",
            "occurred_at": NOW,
            "received_at": NOW,
            "properties": {"order_id": f"A-{i}", "total": total, "currency": "USD"},
            "traits": {"email": f"c{i}@example.com"},
        }
    )


async def test_a_new_segment_is_decided_for_existing_customers_in_pages(
    engine: AsyncEngine,
) -> None:
    catalog = JourneyCatalog([WELCOME_BIG])
    events = [order(i, "150.00" if i % 3 == 0 else "20.00") for i in range(12)]
    async with JourneyUnitOfWork(session_factory(engine)) as uow:
        await handle_events(
            uow, events, catalog=catalog, policies={"demo": WorkspacePolicy()}, now=NOW
        )
    clock = VirtualClock(NOW + timedelta(minutes=5))
    intel = DatabaseIntel(engine, refresh_seconds=0)
    poller = TimerPoller(
        engine=engine,
        clock=clock,
        catalogs=StaticCatalogs(catalog),
        policies=StaticPolicies(),
        intel=intel,
        batch_size=5,
        poll_interval=0.05,
        lease=30,
    )
    assert await poller.rules_step() is False  # no rules changed yet: nothing to do

    async with engine.begin() as conn:
        await save_segment(conn, "demo", BIG, now=clock.now())
    steps = 0
    while await poller.rules_step():
        steps += 1
    assert steps == 3  # 12 customers in pages of 5
    assert await poller.rules_step() is False  # finished for this revision

    async with engine.connect() as conn:
        members = sorted(
            r.customer_id
            for r in await conn.execute(
                select(segment_members.c.customer_id).where(
                    segment_members.c.segment_id == "big_first_order"
                )
            )
        )
        records = (await conn.execute(select(outbox.c.topic, outbox.c.value))).all()
        progress = (await conn.execute(select(backfills))).all()
    assert members == ["c00", "c03", "c06", "c09"]
    entered = [r for r in records if r.topic == EVENTS and b'"segment_entered"' in r.value]
    assert sum(b'"big_first_order"' in r.value for r in entered) == 4
    # The segment-triggered journey ran for exactly those customers.
    assert sum(r.topic == MESSAGES for r in records) == 4
    assert [(p.scope, p.version) for p in progress] == [("demo", 1)]
    assert progress[0].finished_at is not None

    # Changing the rule again re-decides everyone once more under the new revision.
    async with engine.begin() as conn:
        await save_segment(
            conn,
            "demo",
            {**BIG, "condition": {"field": "profile.revenue", "op": "gte", "value": 10}},
            now=clock.now(),
        )
    while await poller.rules_step():
        pass
    async with engine.connect() as conn:
        count = len(
            (
                await conn.execute(
                    select(segment_members.c.customer_id).where(
                        segment_members.c.segment_id == "big_first_order"
                    )
                )
            ).all()
        )
    assert count == 12
