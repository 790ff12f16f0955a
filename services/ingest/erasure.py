"""Erasing a customer from ingest (GDPR art. 17), on the journey service's erasure request.

Ingest keeps one thing about a customer: the owner of each order a Shopify or WooCommerce webhook
announced (``ingest_webhook_orders``: order id → customer id or anonymous id), so that a later
refund or update of the order is attributed to them. Left in place, a refund arriving after the
erasure would be published under the erased customer's id and rebuild a profile in the journey
service. So the erasure deletes the orders of the customer and of every id merged into them
(``anon:<id>`` names an anonymous id); a later webhook about such an order is then attributed as
an order nobody is known to own, as for an order placed before Ciclo was connected.

The requests come from ``ciclo.erasures`` through a consumer group of ingest's own
(``ingest-erasure``), so every ingest process takes its share of the partitions. Delivery ids
(``ingest_webhook_deliveries``) name webhook deliveries, not people, and are pruned anyway. Only
counts are logged, with the erasure id; never the customer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from sqlalchemy import delete, or_
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.tables import webhook_orders
from shared.bus.ports import STOP_TIMEOUT, Bus, ConsumedRecord
from shared.consumer import ConsumerRunner, decode_records
from shared.contracts.erasure import ErasureRequest
from shared.contracts.topics import ERASURES
from shared.worker import check_running, finish

log = logging.getLogger(__name__)

ERASURE_GROUP = "ingest-erasure"
_CHUNK = 500  # ids per IN list


async def erase_orders(engine: AsyncEngine, requests: Sequence[ErasureRequest]) -> list[int]:
    """Delete the order owners of each request's customer, all in one transaction; how many
    orders each request removed, in request order."""
    removed: list[int] = []
    async with engine.begin() as conn:
        for request in requests:
            customers = [s for s in request.subjects if not s.startswith("anon:")]
            anonymous = [s.removeprefix("anon:") for s in request.subjects if s.startswith("anon:")]
            count = 0
            o = webhook_orders
            for start in range(0, max(len(customers), len(anonymous)), _CHUNK):
                owned = or_(
                    o.c.customer_id.in_(customers[start : start + _CHUNK]),
                    o.c.anonymous_id.in_(anonymous[start : start + _CHUNK]),
                )
                result = await conn.execute(
                    delete(o).where(o.c.workspace_id == request.workspace_id, owned)
                )
                count += int(result.rowcount or 0)
            removed.append(count)
    for request, count in zip(requests, removed, strict=True):
        log.info(
            "customer erased from ingest",
            extra={
                "erasure_id": request.erasure_id,
                "workspace_id": request.workspace_id,
                "removed": {webhook_orders.name: count},
            },
        )
    return removed


class IngestErasures:
    """The consumer of ``ciclo.erasures`` in an ingest process."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        bus: Bus,
        max_records: int = 200,
        poll_timeout: float = 0.5,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        self._engine = engine
        self.runner = ConsumerRunner(
            group=ERASURE_GROUP,
            consumer=bus.consumer(group=ERASURE_GROUP, topics=[ERASURES]),
            handler=self.handle,
            dead_letters=bus.publisher(),
            max_records=max_records,
            poll_timeout=poll_timeout,
            stop_timeout=stop_timeout,
        )
        self._task: asyncio.Task[None] | None = None

    async def handle(self, records: Sequence[ConsumedRecord]) -> None:
        await erase_orders(
            self._engine, decode_records(records, ErasureRequest.from_json, "an ErasureRequest v1")
        )

    async def start(self) -> None:
        self._task = asyncio.create_task(self.runner.run(), name=f"{ERASURE_GROUP}-consumer")

    async def check(self) -> None:
        """For /readyz: raise when the consumer loop has died or cannot join its group."""
        check_running(self._task)
        self.runner.check()

    async def stop(self) -> None:
        """Finish the batch in hand, commit it, stop. A consumer that ended on an error is
        logged, not raised: the process's shutdown goes on to close the bus and the database
        (an erasure it did not commit is consumed again)."""
        self.runner.stop()
        await finish(self._task, "its erasures are consumed again")
