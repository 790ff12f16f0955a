"""``shared.db.bulk`` on SQLite: the executemany it hands the driver (each statement compiled
once, each row's values bound by its column type's processor) stores the rows SQLAlchemy's own
statements store, column by column as SQLite keeps them; the conflict clauses keep their
meaning; a row SQLAlchemy refuses is refused; a statement with a Python-side column default
takes SQLAlchemy's path and gets its default."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.journey.adapters.repository import _RUN_CHANGES, _RUN_KEYS
from services.journey.adapters.tables import instances, timers
from shared.db import bulk
from shared.db.engine import create_engine, session_factory
from tests.integration.conftest import _migrated
from tests.integration.test_bulk_writes import AT, CASES, _instance, changed_run


@pytest.fixture
async def sqlite_engine(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    async for migrated in _migrated(sqlite_url):
        yield migrated


async def _stored(engine: AsyncEngine, table: Table, workspace: str, order: tuple[str, ...]) -> Any:
    """Every column but a generated id, as SQLite keeps it (no type processing on the way
    out): the text of a JSON or an instant, the storage class of a number."""
    names = [c.name for c in table.columns if c.name not in ("id", "workspace_id")]
    async with engine.connect() as conn:
        rows = await conn.exec_driver_sql(
            f"SELECT {', '.join(f'{n}, typeof({n})' for n in names)} FROM {table.name} "
            f"WHERE workspace_id = ? ORDER BY {', '.join(order)}",
            (workspace,),
        )
        return [tuple(r) for r in rows]


@pytest.mark.parametrize(("table", "make", "order"), CASES, ids=[t.name for t, _, _ in CASES])
async def test_bulk_insert_stores_what_sqlalchemy_stored(
    sqlite_engine: AsyncEngine, table: Table, make: Any, order: tuple[str, ...]
) -> None:
    async with sqlite_engine.begin() as conn:
        await conn.execute(insert(table), [make("orm", n) for n in range(3)])
    async with session_factory(sqlite_engine)() as session, session.begin():
        await bulk.insert_rows(session, table, [make("bulk", n) for n in range(3)])
    expected = await _stored(sqlite_engine, table, "orm", order)
    assert len(expected) == 3
    assert await _stored(sqlite_engine, table, "bulk", order) == expected


async def test_bulk_update_writes_what_the_sqlalchemy_executemany_wrote(
    sqlite_engine: AsyncEngine,
) -> None:
    async with sqlite_engine.begin() as conn:
        for workspace in ("orm", "bulk"):
            await conn.execute(insert(instances), [_instance(workspace, n) for n in range(3)])

    async with sqlite_engine.begin() as conn:
        each = bulk.update_each(instances, _RUN_KEYS, _RUN_CHANGES)
        await conn.execute(each, [changed_run("orm", n) for n in range(3)])
    async with session_factory(sqlite_engine)() as session, session.begin():
        rows = [changed_run("bulk", n) for n in range(3)]
        await bulk.update_rows(session, instances, rows, keys=_RUN_KEYS, columns=_RUN_CHANGES)
    expected = await _stored(sqlite_engine, instances, "orm", ("run_id",))
    assert [r[10] for r in expected] == ["active", "exited", "exited"]  # status
    assert await _stored(sqlite_engine, instances, "bulk", ("run_id",)) == expected


async def test_a_saved_timer_moves_and_loses_its_lease(sqlite_engine: AsyncEngine) -> None:
    def timer(due: datetime, leased: datetime | None) -> dict[str, Any]:
        return {
            "workspace_id": "w",
            "customer_id": "c1",
            "name": "run:1",
            "due_at": due,
            "leased_until": leased,
        }

    moved = bulk.OnConflict(("workspace_id", "customer_id", "name"), ("due_at",), ("leased_until",))
    async with session_factory(sqlite_engine)() as session, session.begin():
        await bulk.insert_rows(session, timers, [timer(AT, AT)], on_conflict=moved)
        await bulk.insert_rows(
            session, timers, [timer(AT + timedelta(hours=1), None)], on_conflict=moved
        )
    async with sqlite_engine.connect() as conn:
        row = (await conn.execute(select(timers.c.due_at, timers.c.leased_until))).one()
    assert row == (AT + timedelta(hours=1), None)
    # The upsert's constant (``leased_until = NULL``) is bound once: no fallback for it.
    assert bulk._EXECUTEMANY[("insert", timers, moved, tuple(timer(AT, None)), "sqlite")]


async def test_a_naive_instant_is_refused_as_sqlalchemy_refuses_it(
    sqlite_engine: AsyncEngine,
) -> None:
    rows = [_instance("w", 0) | {"updated_at": datetime(2026, 11, 23, 9)}]
    async with session_factory(sqlite_engine)() as session, session.begin():
        with pytest.raises(ValueError, match="naive datetime"):
            await bulk.insert_rows(session, instances, rows)


async def test_a_python_side_default_is_applied_by_sqlalchemy(sqlite_url: str) -> None:
    """A column left out of the rows whose default SQLAlchemy computes: the rows take
    SQLAlchemy's own executemany, which fills it in."""
    metadata = MetaData()
    table = Table(
        "defaults_kept",
        metadata,
        Column("workspace_id", String(64), primary_key=True),
        Column("n", Integer, primary_key=True),
        Column("label", String(16), default="fresh"),
    )
    engine = create_engine(sqlite_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        async with session_factory(engine)() as session, session.begin():
            rows = [{"workspace_id": "w", "n": n} for n in range(3)]
            await bulk.insert_rows(session, table, rows)
        async with engine.connect() as conn:
            stored = (await conn.execute(text("SELECT n, label FROM defaults_kept"))).all()
        assert sorted(tuple(r) for r in stored) == [(0, "fresh"), (1, "fresh"), (2, "fresh")]
        plan = bulk._EXECUTEMANY[("insert", table, None, ("workspace_id", "n"), "sqlite")]
        assert plan is None
    finally:
        await engine.dispose()
