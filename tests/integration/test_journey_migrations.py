"""Data migrations of the journey service, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.components import COMPONENTS
from services.journey.adapters.intelligence_config import intelligence_of, load
from services.journey.adapters.tables import (
    customers,
    intelligence_settings,
    segment_members,
    segments,
)

NOW = datetime(2026, 11, 24, 9, tzinfo=UTC)
WINDOW = "viewed_product_3x_7d"


def customer(workspace: str, customer_id: str) -> dict[str, object]:
    return {
        "workspace_id": workspace,
        "customer_id": customer_id,
        "traits": {},
        "first_seen_at": NOW,
        "last_seen_at": NOW,
        "scores": {},
        "entries": {},
        "ledger": [],
        "schedules": {},
    }


async def test_the_window_segment_leaves_the_built_ins_with_its_members_and_a_new_revision(
    engine: AsyncEngine,
) -> None:
    """``j0006``: members of the former built-in ``viewed_product_3x_7d`` go, except in a
    workspace that saved its own segment of that id; every workspace with customers or settings
    gets a new revision, so that its customers are decided in full again."""
    journey = COMPONENTS["journey"]
    document = {
        "id": WINDOW,
        "name": "Mine",
        "windows": [{"name": "views", "event": "product_viewed", "within": "P7D"}],
        "condition": {"field": "counts.views", "op": "gte", "value": 3},
    }
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: command.downgrade(journey.config(c), "j0005"))
        await conn.execute(insert(customers), [customer("shop", "c1"), customer("mine", "c1")])
        await conn.execute(
            insert(segment_members),
            [
                {"workspace_id": w, "segment_id": s, "customer_id": "c1", "entered_at": NOW}
                for w in ("shop", "mine", "tuned")
                for s in (WINDOW, "one_time_buyer")
            ],
        )
        await conn.execute(
            insert(segments),
            [
                {
                    "workspace_id": "mine",
                    "segment_id": WINDOW,
                    "document": document,
                    "created_at": NOW,
                    "updated_at": NOW,
                }
            ],
        )
        await conn.execute(
            insert(intelligence_settings),
            [{"workspace_id": "tuned", "currency": "EUR", "revision": 4, "updated_at": NOW}],
        )
        await conn.run_sync(lambda c: command.upgrade(journey.config(c), "head"))
        kept = await conn.execute(
            select(segment_members.c.workspace_id, segment_members.c.segment_id)
        )
        revisions = await conn.execute(
            select(intelligence_settings.c.workspace_id, intelligence_settings.c.revision)
        )
        assert sorted(kept) == [
            ("mine", "one_time_buyer"),
            ("mine", WINDOW),
            ("shop", "one_time_buyer"),
            ("tuned", "one_time_buyer"),
        ]
        assert sorted(revisions) == [("mine", 1), ("shop", 1), ("tuned", 5)]
    # The workspaces' rules read as before the migration, at their new revision.
    async with engine.connect() as conn:
        rows, documents = await load(conn, ["tuned", "shop", "mine"])
    tuned = intelligence_of("tuned", rows.get("tuned"), documents.get("tuned", []))
    shop = intelligence_of("shop", rows.get("shop"), documents.get("shop", []))
    mine = intelligence_of("mine", rows.get("mine"), documents.get("mine", []))
    assert (tuned.currency, tuned.revision) == ("EUR", 5)
    assert shop.revision == 1 and WINDOW not in {d.id for d in shop.segments}
    assert mine.revision == 1 and WINDOW in {d.id for d in mine.segments}
