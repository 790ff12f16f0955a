"""The event consumer's ``StateCache`` on SQLite and PostgreSQL: a state taken from it is the
state its row gives (``verify`` reads every row anyway and raises on a difference), a row
changed by anyone else is read again, and a failed transaction leaves nothing behind."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Text, cast, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from services.journey.adapters.files import load_catalog
from services.journey.adapters.repository import StateCacheMismatch
from services.journey.adapters.state_cache import StateCache
from services.journey.adapters.tables import customers, outbox
from services.journey.domain.catalog import JourneyCatalog
from services.journey.domain.policy import WorkspacePolicy
from services.journey.service_layer.handlers import handle_events
from services.journey.service_layer.sources import StaticCatalogs, StaticPolicies
from services.journey.service_layer.uow import JourneyUnitOfWork
from services.journey.timer_poller import TimerPoller
from shared.clock import VirtualClock
from shared.contracts.events import EventEnvelope
from shared.db.engine import session_factory
from tests.integration.conftest import _migrated

START = datetime(2026, 11, 23, 9, tzinfo=UTC)
JOURNEYS = Path(__file__).resolve().parents[2] / "journeys"


def _event(n: int, customer: str, type_: str, at: datetime, **properties: Any) -> EventEnvelope:
    traits: dict[str, Any] = {}
    if type_ in ("signup", "identify"):
        traits = {"email": f"{customer}@example.com", "first_name": customer.title()}
    return EventEnvelope.model_validate(
        {
            "event_id": f"e{n}",
            "workspace_id": "demo",
            "customer_id": customer,
            "type": type_,
            "occurred_at": at,
            "received_at": at,
            "properties": properties,
            "traits": traits,
        }
    )


def _stream(customers_: int, events: int, seed: int) -> list[tuple[str, str, dict[str, Any]]]:
    """Sessions of signups, views, cart updates, checkouts, orders and email engagement, each
    customer's events interleaved with the others' as a partition delivers them."""
    rng = random.Random(seed)
    out: list[tuple[str, str, dict[str, Any]]] = []
    carts: dict[str, int] = {}
    while len(out) < events:
        customer = f"c{rng.randrange(customers_)}"
        kind = rng.random()
        if kind < 0.15:
            out.append((customer, "signup", {}))
        elif kind < 0.45:
            out.append((customer, "product_viewed", {"product_id": f"p{rng.randrange(20)}"}))
        elif kind < 0.7:
            carts[customer] = carts.get(customer, 0) + (rng.random() < 0.3)
            cart = {"cart_id": f"{customer}-{carts.get(customer, 0)}", "total": "25.00"}
            out.append((customer, "cart_updated", {**cart, "currency": "EUR"}))
        elif kind < 0.8:
            cart_id = f"{customer}-{carts.get(customer, 0)}"
            order = {"order_id": f"o{len(out)}", "cart_id": cart_id, "total": "25.00"}
            out.append((customer, "order_completed", {**order, "currency": "EUR"}))
        elif kind < 0.9:
            out.append((customer, "message_opened", {"message_id": f"m{len(out)}"}))
        else:
            out.append((customer, "identify", {}))
    return out


async def _run(
    engine: AsyncEngine, catalog: JourneyCatalog, cache: StateCache | None, *, seed: int
) -> None:
    """The stream in batches of 25 while a virtual day passes, the due timers fired between
    batches (by a poller without the cache, as in ``ciclo serve``)."""
    sessions = session_factory(engine)
    clock = VirtualClock(START)
    poller = TimerPoller(
        engine=engine,
        clock=clock,
        catalogs=StaticCatalogs(catalog),
        policies=StaticPolicies(),
        batch_size=100,
        poll_interval=0.05,
        lease=30,
    )
    stream = _stream(12, 600, seed)
    for start in range(0, len(stream), 25):
        now = clock.now()
        batch = [
            _event(start + i, c, t, now, **p)
            for i, (c, t, p) in enumerate(stream[start : start + 25])
        ]
        async with JourneyUnitOfWork(sessions, cache=cache) as uow:
            await handle_events(
                uow, batch, catalog=catalog, policies={"demo": WorkspacePolicy()}, now=now
            )
        clock.advance(timedelta(minutes=50))
        while await poller.fire_due():
            pass


async def _contents(engine: AsyncEngine) -> tuple[list[tuple[Any, ...]], list[bytes]]:
    """Every customer row (its columns as text, the stamp aside) and every outbox record."""
    columns = [cast(c, Text) for c in customers.columns if c.name != "stamp"]
    async with engine.connect() as conn:
        rows = await conn.execute(select(*columns).order_by(customers.c.customer_id))
        records = await conn.execute(select(outbox.c.value).order_by(outbox.c.id))
        return [tuple(r) for r in rows], [r.value for r in records]


async def test_the_cache_gives_what_the_rows_give(engine: AsyncEngine) -> None:
    catalog = load_catalog(JOURNEYS)
    cache = StateCache(100, verify=True)
    await _run(engine, catalog, cache, seed=3)
    # Most states came from the cache, each checked against its row when taken; the timers
    # fired in between (with new stamps) sent some back to their rows.
    assert cache.hits > 150, (cache.hits, cache.misses)
    assert cache.misses > 12


async def test_with_and_without_the_cache_alike(tmp_path: Path) -> None:
    """The same stream into two databases (SQLite, so that both are compared as the same
    text), one consumer with a cache: the same rows, the same outbox records."""
    catalog = load_catalog(JOURNEYS)
    seen: list[tuple[list[tuple[Any, ...]], list[bytes]]] = []
    for name, cache in (("plain", None), ("cached", StateCache(100))):
        async for engine in _migrated(f"sqlite+aiosqlite:///{tmp_path / name}.db"):
            await _run(engine, catalog, cache, seed=5)
            seen.append(await _contents(engine))
    (rows, records), (cached_rows, cached_records) = seen
    assert len(rows) == 12
    assert len(records) > 50
    assert cached_rows == rows
    assert cached_records == records


def _identify(number: int, customer: str = "c1", **traits: Any) -> EventEnvelope:
    return EventEnvelope.model_validate(
        {
            "event_id": f"s{number}",
            "workspace_id": "demo",
            "customer_id": customer,
            "type": "identify",
            "occurred_at": START,
            "received_at": START,
            "traits": traits,
        }
    )


async def _apply(engine: AsyncEngine, cache: StateCache | None, *events: EventEnvelope) -> None:
    async with JourneyUnitOfWork(session_factory(engine), cache=cache) as uow:
        await handle_events(
            uow,
            list(events),
            catalog=JourneyCatalog([]),
            policies={"demo": WorkspacePolicy()},
            now=START,
        )


async def _traits(engine: AsyncEngine, customer: str = "c1") -> dict[str, Any]:
    async with JourneyUnitOfWork(session_factory(engine)) as uow:
        states = await uow.states.load([("demo", customer)], now=START, lock=False)
    return states[("demo", customer)].traits


async def test_a_state_unlike_its_row_is_caught_by_verify(engine: AsyncEngine) -> None:
    cache = StateCache(10, verify=True)
    await _apply(engine, cache, _identify(1, plan="free"))
    [(_, state)] = list(cache._entries.values())
    state.traits["plan"] = "gold"  # a change no transaction wrote
    with pytest.raises(StateCacheMismatch, match=r"\('demo', 'c1'\).*traits"):
        await _apply(engine, cache, _identify(2, vip=True))


async def test_a_row_saved_by_another_process_is_read_again(engine: AsyncEngine) -> None:
    ours = StateCache(10, verify=True)
    await _apply(engine, ours, _identify(1, plan="free"))
    await _apply(engine, None, _identify(2, plan="gold"))  # another replica, after a rebalance
    await _apply(engine, ours, _identify(3, vip=True))
    assert (ours.hits, ours.misses) == (0, 1)
    assert await _traits(engine) == {"plan": "gold", "vip": True}


async def test_a_row_changed_without_a_stamp_is_read_again(engine: AsyncEngine) -> None:
    """A writer that does not know the stamp (an older replica during a rolling upgrade, SQL
    typed by hand): the j0007 trigger clears the stamp its UPDATE left."""
    ours = StateCache(10, verify=True)
    await _apply(engine, ours, _identify(1, plan="free"))
    async with engine.begin() as conn:
        await conn.execute(
            update(customers).where(customers.c.customer_id == "c1").values(traits={"plan": "gold"})
        )
        stamp = (await conn.execute(select(customers.c.stamp))).scalar_one()
    assert stamp is None
    await _apply(engine, ours, _identify(2, vip=True))
    assert (ours.hits, ours.misses) == (0, 1)
    assert await _traits(engine) == {"plan": "gold", "vip": True}


async def test_the_stamp_moves_with_each_save(engine: AsyncEngine) -> None:
    ours = StateCache(10)
    stamps = []
    for n in range(3):
        await _apply(engine, ours, _identify(n, visits=n))
        async with engine.connect() as conn:
            stamps.append((await conn.execute(select(customers.c.stamp))).scalar_one())
    assert None not in stamps and len(set(stamps)) == 3
    assert (ours.hits, ours.misses) == (2, 0)
    assert await _traits(engine) == {"visits": 2}


async def test_a_failed_transaction_leaves_nothing_in_the_cache(engine: AsyncEngine) -> None:
    ours = StateCache(10, verify=True)
    await _apply(engine, ours, _identify(1, plan="free"))
    async with JourneyUnitOfWork(session_factory(engine), cache=ours) as uow:
        # A batch that loads and saves, then fails before its commit (rolled back on leaving).
        [state] = (await uow.states.load([("demo", "c1")], now=START, lock=True)).values()
        state.traits["plan"] = "gold"
        await uow.states.save([state], timers_before={}, new_runs=[], changed_runs=[])
    assert len(ours) == 0
    await _apply(engine, ours, _identify(3, vip=True))
    assert (ours.hits, ours.misses) == (1, 1)
    assert await _traits(engine) == {"plan": "free", "vip": True}


async def test_an_erased_customer_starts_anew(engine: AsyncEngine) -> None:
    ours = StateCache(10, verify=True)
    await _apply(engine, ours, _identify(1, plan="free"))
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM journey_customers"))
    await _apply(engine, ours, _identify(2, vip=True))
    assert await _traits(engine) == {"vip": True}
    await _apply(engine, ours, _identify(3, seen=2))
    assert await _traits(engine) == {"vip": True, "seen": 2}
    assert ours.hits == 1


async def test_the_cache_holds_at_most_its_size(engine: AsyncEngine) -> None:
    ours = StateCache(3)
    await _apply(engine, ours, *(_identify(k, f"c{k}", n=k) for k in range(5)))
    assert len(ours) == 3
    await _apply(engine, ours, _identify(9, "c0", n=10), _identify(10, "c4", n=11))
    assert (ours.hits, ours.misses) == (1, 1)  # c4 kept, c0 dropped
    assert await _traits(engine, "c0") == {"n": 10}


async def test_an_older_event_moves_first_seen_earlier_in_the_row(engine: AsyncEngine) -> None:
    """A stored customer's ``first_seen_at`` is saved too (it once went in with the insert
    only, and a state held in memory would have shown what its row did not)."""
    await _apply(engine, None, _identify(1))
    older = _identify(2).model_copy(update={"occurred_at": START - timedelta(days=3)})
    await _apply(engine, None, older)
    async with engine.connect() as conn:
        first_seen = (await conn.execute(select(customers.c.first_seen_at))).scalar_one()
    assert first_seen == START - timedelta(days=3)
