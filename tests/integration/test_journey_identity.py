"""Identity resolution in the journey service, on SQLite and PostgreSQL: an anonymous visitor who
identifies, and an alias, merge into one customer with their history, runs and orders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.journey.adapters.tables import (
    customers,
    identities,
    instances,
    orders,
    segment_members,
    timers,
)
from services.journey.domain.catalog import JourneyCatalog
from services.journey.domain.definitions import Journey
from services.journey.domain.policy import WorkspacePolicy
from services.journey.service_layer.handlers import handle_events
from services.journey.service_layer.uow import JourneyUnitOfWork
from shared.contracts.events import EventEnvelope
from shared.db.engine import session_factory

NOW = datetime(2026, 11, 23, 9, tzinfo=UTC)
CART = Journey.model_validate(
    {
        "id": "cart",
        "version": 1,
        "name": "Cart reminder",
        "trigger": {"event": "cart_updated", "key": "cart_id"},
        "start": "wait",
        "steps": {
            "wait": {"wait": "PT1H", "next": "remind"},
            "remind": {"send": {"channel": "email", "template": "cart-1"}},
        },
    }
)


def event(
    event_id: str,
    type_: str,
    *,
    customer: str | None = None,
    anonymous: str | None = None,
    at: datetime = NOW,
    **kw: Any,
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
            **kw,
        }
    )


async def apply(engine: AsyncEngine, events: list[EventEnvelope], now: datetime = NOW) -> None:
    async with JourneyUnitOfWork(session_factory(engine)) as uow:
        await handle_events(
            uow,
            events,
            catalog=JourneyCatalog([CART]),
            policies={"demo": WorkspacePolicy()},
            now=now,
        )


async def rows(engine: AsyncEngine, table: Any, customer: str) -> int:
    async with engine.connect() as conn:
        return int(
            (
                await conn.execute(
                    select(func.count()).select_from(table).where(table.c.customer_id == customer)
                )
            ).scalar_one()
        )


async def customer_row(engine: AsyncEngine, customer: str) -> Any:
    async with engine.connect() as conn:
        return (
            await conn.execute(select(customers).where(customers.c.customer_id == customer))
        ).one_or_none()


async def test_an_anonymous_visitor_who_identifies_is_merged_with_their_cart_run_and_order(
    engine: AsyncEngine,
) -> None:
    earlier = NOW - timedelta(minutes=30)
    await apply(
        engine,
        [
            event("p1", "page_viewed", anonymous="v1", at=earlier),
            event(
                "cart1",
                "cart_updated",
                anonymous="v1",
                at=earlier,
                properties={"cart_id": "k1", "items": []},
            ),
            event(
                "o1",
                "order_completed",
                anonymous="v1",
                at=earlier,
                properties={"order_id": "A-1", "total": "40.00", "currency": "USD"},
            ),
        ],
        now=earlier,
    )
    assert await rows(engine, instances, "anon:v1") == 1
    assert await rows(engine, orders, "anon:v1") == 1

    # The customer signs up with the same browser: both ids on one event.
    await apply(
        engine,
        [
            event(
                "s1",
                "signup",
                customer="c1",
                anonymous="v1",
                traits={"email": "ana@example.com"},
            )
        ],
    )
    assert await customer_row(engine, "anon:v1") is None
    merged = await customer_row(engine, "c1")
    assert merged is not None
    assert merged.traits["email"] == "ana@example.com"
    assert merged.order_count == 1
    assert merged.first_seen_at == earlier
    for table in (instances, orders):
        assert await rows(engine, table, "anon:v1") == 0
        assert await rows(engine, table, "c1") == 1
    assert await rows(engine, timers, "anon:v1") == 0
    assert await rows(engine, segment_members, "anon:v1") == 0
    async with engine.connect() as conn:
        run_timers = (
            await conn.execute(
                select(timers.c.name).where(
                    timers.c.customer_id == "c1", timers.c.name.like("run:%")
                )
            )
        ).all()
    assert len(run_timers) == 1  # the cart reminder moved with the run

    # Later events of the anonymous id land on the customer.
    await apply(
        engine,
        [
            event(
                "o2",
                "order_completed",
                anonymous="v1",
                properties={"order_id": "A-2", "total": "10.00", "currency": "USD"},
            )
        ],
    )
    assert await customer_row(engine, "anon:v1") is None
    merged = await customer_row(engine, "c1")
    assert merged.order_count == 2
    assert merged.revenue == 50.0


async def test_an_alias_merges_an_old_customer_id_and_chains_resolve(engine: AsyncEngine) -> None:
    await apply(
        engine,
        [
            event(
                "o1",
                "order_completed",
                customer="old-7",
                properties={"order_id": "B-1", "total": "25.00", "currency": "USD"},
            ),
            event("i1", "identify", customer="old-7", traits={"first_name": "Ana"}),
        ],
    )
    await apply(
        engine,
        [
            event(
                "a1",
                "alias",
                customer="new-7",
                properties={"previous_id": "old-7"},
                traits={"email": "ana@example.com"},
            )
        ],
    )
    assert await customer_row(engine, "old-7") is None
    merged = await customer_row(engine, "new-7")
    assert merged.traits == {"first_name": "Ana", "email": "ana@example.com"}
    assert merged.order_count == 1
    async with engine.connect() as conn:
        links = dict(
            (await conn.execute(select(identities.c.alias, identities.c.customer_id))).all()
        )
    assert links["old-7"] == "new-7"

    # new-7 is merged on into newest-7: old-7 now resolves to newest-7 in one step.
    await apply(
        engine,
        [event("a2", "alias", customer="newest-7", properties={"previous_id": "new-7"})],
    )
    await apply(
        engine,
        [
            event(
                "o2",
                "order_completed",
                customer="old-7",
                properties={"order_id": "B-2", "total": "5.00", "currency": "USD"},
            )
        ],
    )
    assert await customer_row(engine, "old-7") is None
    assert await customer_row(engine, "new-7") is None
    merged = await customer_row(engine, "newest-7")
    assert merged.order_count == 2
    async with engine.connect() as conn:
        links = dict(
            (await conn.execute(select(identities.c.alias, identities.c.customer_id))).all()
        )
    assert links["old-7"] == "newest-7"
    assert links["new-7"] == "newest-7"


async def test_the_same_order_seen_under_both_ids_counts_once(engine: AsyncEngine) -> None:
    order = {"order_id": "C-1", "total": "30.00", "currency": "USD"}
    await apply(
        engine,
        [
            event("o1", "order_completed", anonymous="v9", properties=order),
            event("o1b", "order_completed", customer="c9", properties=order),
        ],
    )
    await apply(engine, [event("i9", "identify", customer="c9", anonymous="v9")])
    merged = await customer_row(engine, "c9")
    assert merged.order_count == 1
    assert merged.revenue == 30.0
    assert await rows(engine, orders, "c9") == 1
