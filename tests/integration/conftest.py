from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.components import ALL, components_for
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
async def pg_engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated PostgreSQL database, for what only PostgreSQL does (``shared.db.bulk``)."""
    async for migrated in _migrated(postgres_url):
        yield migrated
