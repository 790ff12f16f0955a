from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.components import ALL, components_for
from services.journey.adapters.state_cache import StateCache
from services.journey.service_layer.uow import JourneyUnitOfWork
from shared.db.engine import create_engine
from shared.db.migrate import upgrade


async def _migrated(url: str) -> AsyncIterator[AsyncEngine]:
    await upgrade(url, components_for(ALL))
    engine = create_engine(url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated database (SQLite and PostgreSQL, through the ``database_url`` parameter)."""
    async for migrated in _migrated(database_url):
        yield migrated


@pytest.fixture
async def sqlite_writes(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A SQLite file (``writes.db``), not migrated, with one table ``writes (who, n)``: for
    what a SQLite engine does around every transaction (``shared.db.turns``,
    ``shared.db.checkpoints``)."""
    made = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'writes.db'}")
    async with made.begin() as conn:
        await conn.exec_driver_sql("CREATE TABLE writes (who TEXT, n INTEGER)")
    yield made
    await made.dispose()


@pytest.fixture
async def pg_engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated PostgreSQL database, for what only PostgreSQL does (``shared.db.bulk``)."""
    async for migrated in _migrated(postgres_url):
        yield migrated


@pytest.fixture(autouse=True)
def journey_state_cache_checked(monkeypatch: pytest.MonkeyPatch) -> StateCache:
    """Every journey unit of work in these tests runs with a ``StateCache`` in check mode: the
    event consumer's own, or one shared by the others (timers, backfills, the tests' own
    handler calls). Each state taken from a cache is compared with what its row gives, and a
    difference fails the test (``StateCacheMismatch``): every scenario here is also a test
    that the cache changes nothing."""
    shared = StateCache(10_000, verify=True)
    original = JourneyUnitOfWork.__init__

    def checked(self: JourneyUnitOfWork, sessions: Any, *, cache: StateCache | None = None) -> None:
        cache = shared if cache is None else cache
        cache.verify = True
        original(self, sessions, cache=cache)

    monkeypatch.setattr(JourneyUnitOfWork, "__init__", checked)
    return shared
