from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.components import ALL, components_for
from shared.db.engine import create_engine
from shared.db.migrate import upgrade


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated database (SQLite and PostgreSQL, through the ``database_url`` parameter)."""
    await upgrade(database_url, components_for(ALL))
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def pg_engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated PostgreSQL database, for what only PostgreSQL does (``shared.db.bulk``)."""
    await upgrade(postgres_url, components_for(ALL))
    engine = create_engine(postgres_url)
    yield engine
    await engine.dispose()
