"""The transactional outbox: records written in the same transaction as the state change, published
by a relay after commit.

A crash between publish and delete republishes a record; consumers are idempotent on event_id and
message_id, so that costs a duplicate delivery, never a duplicate effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from prometheus_client import Counter, Gauge
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    delete,
    func,
    select,
)
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from shared.bus.ports import OutgoingRecord, Publisher
from shared.db import bulk
from shared.db.types import UtcDateTime

log = logging.getLogger(__name__)

OUTBOX_PUBLISHED = Counter(
    "ciclo_outbox_published_total", "Records relayed from an outbox to the bus", ["outbox"]
)
OUTBOX_DEPTH = Gauge("ciclo_outbox_depth", "Records waiting in an outbox", ["outbox"])
_DEPTH_EVERY = 5.0  # seconds between depth counts: a count(*) per relay tick would cost too much


def outbox_table(metadata: MetaData, name: str) -> Table:
    return Table(
        name,
        metadata,
        # INTEGER PRIMARY KEY on SQLite is the rowid: monotonic, which keeps the relay in order.
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        Column("topic", String(200), nullable=False),
        Column("key", String(500), nullable=False),
        Column("value", LargeBinary, nullable=False),
        Column("headers", JSON, nullable=False),
        Column("created_at", UtcDateTime(), nullable=False),
    )


async def add_to_outbox(
    session: AsyncSession, table: Table, records: Sequence[OutgoingRecord]
) -> None:
    if not records:
        return
    now = datetime.now(UTC)
    rows = [
        {
            "topic": r.topic,
            "key": r.key,
            "value": r.value,
            "headers": dict(r.headers),
            "created_at": now,
        }
        for r in records
    ]
    # On PostgreSQL one statement over arrays, rows numbered in the order given.
    await bulk.insert_rows(session, table, rows)


class OutboxRelay:
    """Publishes an outbox table in id order and deletes what the bus acknowledged."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        table: Table,
        publisher: Publisher,
        batch_size: int = 500,
        idle_interval: float = 0.5,
    ) -> None:
        self._engine = engine
        self._table = table
        self._publisher = publisher
        self._batch_size = batch_size
        self._idle_interval = idle_interval
        self._wake = asyncio.Event()
        self._stopping = False

    def notify(self) -> None:
        """Something was committed to the outbox: relay it now rather than at the next tick."""
        self._wake.set()

    async def depth(self) -> int:
        async with self._engine.connect() as conn:
            return int(
                (await conn.execute(select(func.count()).select_from(self._table))).scalar_one()
            )

    async def relay_once(self) -> int:
        t = self._table
        async with self._engine.begin() as conn:
            query = select(t).order_by(t.c.id).limit(self._batch_size)
            if conn.dialect.name == "postgresql":
                # Several replicas may relay the same table; each takes rows nobody else holds.
                query = query.with_for_update(skip_locked=True)
            rows = (await conn.execute(query)).all()
            if not rows:
                return 0
            await self._publisher.publish(
                [
                    OutgoingRecord(topic=r.topic, key=r.key, value=r.value, headers=r.headers)
                    for r in rows
                ]
            )
            await conn.execute(delete(t).where(t.c.id.in_([r.id for r in rows])))
        OUTBOX_PUBLISHED.labels(t.name).inc(len(rows))
        return len(rows)

    async def run(self) -> None:
        measured = 0.0
        while not self._stopping:
            if time.monotonic() - measured > _DEPTH_EVERY:
                measured = time.monotonic()
                with contextlib.suppress(Exception):  # a gauge must never stop the relay
                    OUTBOX_DEPTH.labels(self._table.name).set(await self.depth())
            try:
                moved = await self.relay_once()
            except Exception:  # bus or database down: the rows stay in the outbox; try again
                log.exception("outbox relay failed; retrying", extra={"outbox": self._table.name})
                moved = 0
                await asyncio.sleep(1.0)
            if moved == self._batch_size:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._idle_interval)

    async def drain(self) -> None:
        """Publish everything committed so far (used on shutdown)."""
        while await self.relay_once():
            pass

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
