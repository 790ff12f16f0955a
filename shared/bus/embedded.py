"""The embedded bus: a durable, partitioned log in one SQLite file (WAL), for one machine.

:class:`EmbeddedBus` implements the :class:`~shared.bus.ports.Bus` port. The SQL lives in
:mod:`shared.bus.embedded_log`, the group-commit writer thread in :mod:`shared.bus.embedded_writer`
and the consumer-group member in :mod:`shared.bus.embedded_consumer`.

Guarantees: ``publish`` returns once its records are committed to the file, so an acknowledged
record survives ``kill -9`` (``sync="normal"``) or also a power cut (``sync="full"``). Records are
partitioned exactly like Kafka's default partitioner, so switching modes keeps per-key order.
Consumers get at-least-once delivery from their group's committed offsets; one member per group
consumes at a time (see :mod:`shared.bus.embedded_consumer`). A bus belongs to the event loop that
started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from datetime import timedelta
from functools import partial
from pathlib import Path

from shared.bus import embedded_log as log
from shared.bus.embedded_consumer import EmbeddedConsumer, LogReader
from shared.bus.embedded_writer import LogWriter
from shared.bus.ports import OutgoingRecord, TopicSpec
from shared.errors import BusClosedError, BusError

logger = logging.getLogger(__name__)


class EmbeddedBus:
    """``partitions`` is the partition count the embedded deployment uses for its topics; it is
    kept to build both adapters from the same settings, and ``ensure_topics`` honours each
    TopicSpec's own count."""

    def __init__(
        self,
        path: Path,
        *,
        partitions: int,
        sync: log.Sync,
        poll_interval: float = 0.05,
        lease_ttl: float = 10.0,
        retention: timedelta = timedelta(days=7),
        prune_interval: float = 3600.0,
    ) -> None:
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        self.path = path
        self.partitions = partitions
        self.sync: log.Sync = sync
        self.poll_interval = poll_interval
        self.lease_ttl = lease_ttl
        self.retention = retention
        self.prune_interval = prune_interval
        self.writer = LogWriter(path, sync=sync, on_append=self._wake_consumers)
        self._reader: LogReader | None = None
        self._appended = asyncio.Event()
        self._consumers: set[EmbeddedConsumer] = set()
        self._pruner: asyncio.Task[None] | None = None
        self._started = False
        self.closed = False

    async def start(self) -> None:
        if self._started:
            return
        if self.closed:
            raise BusClosedError("the embedded bus is closed")
        self._started = True
        self._reader = LogReader(self.path, sync=self.sync, name="bus-reader:ping")
        try:
            await self.writer.start()
        except BaseException:
            await self.close()
            raise
        self._pruner = asyncio.create_task(self._prune_periodically(), name="bus-prune")

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._pruner is not None:
            self._pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruner
        # Consumers left running would keep their threads alive; stopping them before the writer
        # also frees their leases for the next process.
        for consumer in list(self._consumers):
            await consumer.stop()
        await self.writer.close()
        if self._reader is not None:
            await self._reader.close()

    async def ensure_topics(self, topics: Sequence[TopicSpec]) -> None:
        self._check_open()
        await self.writer.execute(partial(log.create_topics, specs=list(topics)))

    def publisher(self) -> EmbeddedBus:
        return self

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        self._check_open()
        if records:
            await self.writer.append(list(records))

    def consumer(self, *, group: str, topics: Sequence[str]) -> EmbeddedConsumer:
        self._check_open()
        return EmbeddedConsumer(self, group=group, topics=topics)

    async def ping(self) -> None:
        self._check_open()
        assert self._reader is not None
        if not self.path.exists():
            # An open connection still reads a deleted file; the next process would not.
            raise BusError(f"the bus file {self.path} is gone")
        await self._reader.run(log.check_readable)

    async def prune(self, retention: timedelta) -> int:
        """Delete records older than ``retention`` that every group consuming them has committed
        past; returns how many. Runs in the writer's transaction, between publishes."""
        self._check_open()
        cutoff = time.time_ns() // 1_000_000 - int(retention.total_seconds() * 1000)
        deleted: int = await self.writer.execute(partial(log.prune, older_than_ms=cutoff))
        return deleted

    # --- for EmbeddedConsumer -------------------------------------------------------------------

    def appended_signal(self) -> asyncio.Event:
        """An event set by the next commit that adds records."""
        return self._appended

    def register(self, consumer: EmbeddedConsumer) -> None:
        self._consumers.add(consumer)

    def unregister(self, consumer: EmbeddedConsumer) -> None:
        self._consumers.discard(consumer)

    # --- internals ------------------------------------------------------------------------------

    def _wake_consumers(self) -> None:
        # Replace before setting: waiters hold the old event and wake; the next ones wait anew.
        event, self._appended = self._appended, asyncio.Event()
        event.set()

    def _check_open(self) -> None:
        if self.closed:
            raise BusClosedError("the embedded bus is closed")
        if not self._started:
            raise BusError("the embedded bus has not been started")

    async def _prune_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.prune_interval)
            try:
                deleted = await self.prune(self.retention)
            except BusError:
                logger.exception("pruning the embedded bus failed; will retry")
            else:
                if deleted:
                    logger.info("pruned %d record(s) from the embedded bus", deleted)
