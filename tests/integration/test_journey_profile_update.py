"""PostgreSQL saves a batch's known customers in one ``UPDATE … FROM unnest(…)``; SQLite, and
PostgreSQL before, in an executemany of ``bulk.update_each``'s statement. Both must leave the
same rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Text, cast, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.journey.adapters.repository import (
    _KEYS,
    _PROFILE_COLUMNS,
    CustomerStates,
    profile_row,
)
from services.journey.adapters.tables import customers
from services.journey.domain import engine as journey_engine
from services.journey.domain.catalog import JourneyCatalog
from services.journey.domain.customer import CustomerState, apply_event
from shared.contracts.events import EventEnvelope
from shared.db.bulk import update_each
from shared.db.engine import session_factory

pytestmark = pytest.mark.postgres

START = datetime(2026, 11, 23, 9, tzinfo=UTC)
BERLIN = timezone(timedelta(hours=1))


def _event(n: int, customer: str, kind: str, **properties: Any) -> EventEnvelope:
    return EventEnvelope.model_validate(
        {
            "event_id": f"e{n}-{customer}",
            "workspace_id": "demo",
            "type": kind,
            "customer_id": customer,
            "occurred_at": (START + timedelta(minutes=n)).isoformat(),
            "received_at": (START + timedelta(minutes=n)).isoformat(),
            "properties": properties,
        }
    )


def _states(workspace: str) -> list[CustomerState]:
    """Customers with every kind of value a profile row holds: nested and non-ASCII traits,
    empty and full facts, orders (revenue, order dates), a stage, instants in other zones."""
    out = []
    for i, traits in enumerate(
        [
            {"email": "ada@example.com", "first_name": "Chloé", "tags": ["vip", "ß"], "n": 1.5},
            {},
            {"nested": {"a": [1, 2, {"b": None}]}, "big": 2**40},
        ]
    ):
        state = CustomerState(
            workspace_id=workspace,
            customer_id=f"c{i}",
            traits=traits,
            first_seen_at=START,
            last_seen_at=START,
        )
        out.append(state)
    catalog = JourneyCatalog([])
    policy = journey_engine.Policy()
    # c0 orders twice and views a product; c2 only views; c1 stays as created.
    for n, (who, kind, props) in enumerate(
        [
            ("c0", "order_completed", {"order_id": "o1", "total": "50.00", "currency": "EUR"}),
            ("c0", "product_viewed", {"product_id": "p1"}),
            ("c0", "order_completed", {"order_id": "o2", "total": "19.99", "currency": "EUR"}),
            ("c2", "product_viewed", {"product_id": "p2"}),
        ]
    ):
        state = next(s for s in out if s.customer_id == who)
        apply_event(
            state,
            _event(n, who, kind, **props),
            catalog=catalog,
            policy=policy,
            now=START + timedelta(minutes=n),
            live=True,
        )
    out[1].entries = {"welcome": START.astimezone(BERLIN)}
    out[1].ledger = ((START.astimezone(BERLIN), "email"),)
    out[1].schedules = {"birthday": START + timedelta(days=30)}
    out[1].scores = {"engagement": 3.25}
    out[0].facts.insights = {"rfm": {"r": 5, "group": "champions"}, "computed_at": "x"}
    assert out[0].facts.profile.order_count == 2
    return out


async def _rows(engine: AsyncEngine, workspace: str) -> dict[str, tuple[Any, ...]]:
    """Each profile column as the database shows it as text (JSON exactly as stored)."""
    columns = [cast(customers.c[name], Text) for name in _PROFILE_COLUMNS]
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(customers.c.customer_id, *columns).where(customers.c.workspace_id == workspace)
        )
        return {r[0]: tuple(r[1:]) for r in rows}


async def test_one_unnest_update_writes_what_the_executemany_wrote(pg_engine: AsyncEngine) -> None:
    sessions = session_factory(pg_engine)
    first = _states("w")
    async with sessions() as session, session.begin():
        await CustomerStates(session).save(first, timers_before={}, new_runs=[], changed_runs=[])
    changed = _states("w")
    for state in changed:
        state.stored = True
        state.traits = {**state.traits, "changed": state.customer_id}
        state.last_seen_at = START + timedelta(hours=2)
        state.facts.stage = "active" if state.customer_id == "c0" else None

    async def save(states: list[CustomerState]) -> dict[str, tuple[Any, ...]]:
        async with sessions() as session, session.begin():
            await CustomerStates(session).save(
                states, timers_before={}, new_runs=[], changed_runs=[]
            )
        return await _rows(pg_engine, "w")

    bulk = await save(changed)  # PostgreSQL's path: one statement for the batch
    scribbled = await save(first)  # every column back to other values, the same way
    assert all(bulk[k] != scribbled[k] for k in bulk)
    async with sessions() as session, session.begin():
        # The same rows through the executemany statement, as SQLite still writes them.
        each = update_each(customers, _KEYS, _PROFILE_COLUMNS)
        await session.execute(each, [profile_row(s) for s in changed])
    many = await _rows(pg_engine, "w")
    assert set(bulk) == {"c0", "c1", "c2"}
    for key in bulk:
        for name, a, b in zip(_PROFILE_COLUMNS, bulk[key], many[key], strict=True):
            assert a == b, (key, name, a, b)
    assert bulk["c0"][_PROFILE_COLUMNS.index("stage")] == "active"
    assert bulk["c1"][_PROFILE_COLUMNS.index("stage")] is None
    assert bulk["c0"][_PROFILE_COLUMNS.index("insights")] is not None
    # What the facts columns hold loads back as the facts that were saved.
    async with sessions() as session:
        loaded = await CustomerStates(session).load(
            [("w", "c0"), ("w", "c1")], now=START + timedelta(hours=2), lock=False
        )
    for state in changed[:2]:
        assert loaded[("w", state.customer_id)].facts.to_json() == state.facts.to_json()
        assert loaded[("w", state.customer_id)].traits == state.traits


async def test_a_naive_instant_is_refused_as_before(pg_engine: AsyncEngine) -> None:
    sessions = session_factory(pg_engine)
    states = _states("w")
    async with sessions() as session, session.begin():
        await CustomerStates(session).save(states, timers_before={}, new_runs=[], changed_runs=[])
    states[0].last_seen_at = datetime(2026, 11, 23, 9)  # no zone
    async with sessions() as session, session.begin():
        with pytest.raises(ValueError, match="naive datetime"):
            await CustomerStates(session).save(
                states, timers_before={}, new_runs=[], changed_runs=[]
            )
