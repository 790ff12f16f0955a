from __future__ import annotations

import pytest
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from services.components import ALL, components_for
from shared.db.migrate import pending, upgrade
from shared.tenancy.keys import KeyStore, Scope, WorkspaceError


async def test_every_component_migrates_and_is_idempotent(
    database_url: str, engine: AsyncEngine
) -> None:
    assert await pending(database_url, components_for(ALL)) == []
    await upgrade(database_url, components_for(ALL))  # a second run changes nothing
    async with engine.connect() as conn:
        tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    assert {
        "tenancy_api_keys",
        "journey_customers",
        "journey_outbox",
        "dispatch_messages",
        "dispatch_sink",
        "alembic_version_journey",
        "alembic_version_dispatch",
        "ingest_webhook_secrets",
        "ingest_webhook_deliveries",
        "ingest_webhook_orders",
    } <= tables


async def test_fresh_database_reports_pending_migrations(database_url: str) -> None:
    assert await pending(database_url, components_for(ALL)) == [
        "tenancy",
        "ingest",
        "journey",
        "dispatch",
    ]


async def test_keys_are_hashed_scoped_and_revocable(engine: AsyncEngine) -> None:
    store = KeyStore(engine, cache_seconds=0)
    assert await store.ensure_workspace("shop-1") is True
    assert await store.ensure_workspace("shop-1") is False
    info, plaintext = await store.create_key("shop-1", Scope.INGEST)

    principal = await store.authenticate(plaintext)
    assert principal is not None
    assert (principal.workspace_id, principal.scope) == ("shop-1", Scope.INGEST)
    assert principal.allows(Scope.INGEST) and not principal.allows(Scope.ADMIN)

    async with engine.connect() as conn:
        stored = (await conn.exec_driver_sql("SELECT hash, prefix FROM tenancy_api_keys")).all()
    assert plaintext not in {v for row in stored for v in row}
    assert plaintext.startswith(stored[0].prefix)

    assert await store.authenticate(plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")) is None
    assert await store.revoke(info.id) is True
    assert await store.authenticate(plaintext) is None
    assert await store.revoke(info.id) is False
    [listed] = await store.list_keys("shop-1")
    assert listed.revoked_at is not None


async def test_keys_need_an_existing_valid_workspace(engine: AsyncEngine) -> None:
    store = KeyStore(engine)
    with pytest.raises(WorkspaceError, match="does not exist"):
        await store.create_key("nobody", Scope.ADMIN)
    with pytest.raises(WorkspaceError, match="workspace id must be"):
        await store.ensure_workspace("Bad Name!")


async def test_concurrent_requests_share_one_key_lookup(engine: AsyncEngine) -> None:
    # An expired cache entry under load must cost one query, not one per request in flight.
    import asyncio

    store = KeyStore(engine, cache_seconds=60)
    await store.ensure_workspace("shop-1")
    _, plaintext = await store.create_key("shop-1", Scope.INGEST)
    queries = 0
    original = store._lookup

    async def counted(digest: str):  # type: ignore[no-untyped-def]
        nonlocal queries
        queries += 1
        await asyncio.sleep(0.05)
        return await original(digest)

    store._lookup = counted  # type: ignore[method-assign]
    principals = await asyncio.gather(*(store.authenticate(plaintext) for _ in range(50)))
    assert queries == 1
    assert [p.workspace_id if p else None for p in principals] == ["shop-1"] * 50
    assert await store.authenticate(plaintext) is not None
    assert queries == 1  # cached now
