"""A consumer-group member of the embedded bus, and the reader thread it reads through.

In embedded mode one member owns every partition of its topics. That is enforced across processes
by a lease row per group (owner + expiry, renewed while the member polls or commits): a second
member of the same group, in this process or another one on the same file, gets empty polls until
the lease is released by ``stop()`` or expires (``lease_ttl`` after the holder last polled or
committed). It then resumes from the committed offsets, like a Kafka member after a rebalance.
A member that lost its lease gets BusError from ``commit`` and restarts from the committed offsets
too, so records may be delivered twice but never skipped: at-least-once, as with Kafka.

The reader thread owns the member's read connection; WAL lets it read while the writer writes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from shared.bus import embedded_log as log
from shared.bus.ports import ConsumedRecord
from shared.errors import BusClosedError, BusError

if TYPE_CHECKING:
    from shared.bus.embedded import EmbeddedBus

T = TypeVar("T")

logger = logging.getLogger(__name__)


def _holder_is_dead(owner: str) -> bool:
    """True when the lease holder is a process on this host that no longer exists."""
    parts = owner.rsplit(":", 3)
    if len(parts) != 4 or parts[1] != socket.gethostname() or not parts[2].isdigit():
        return False
    pid = int(parts[2])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # exists, owned by someone else
    return False


def _now_ms() -> int:
    # Wall clock, not monotonic: lease expiries are compared by different processes.
    return time.time_ns() // 1_000_000


class LogReader:
    """A read connection living on its own thread (sqlite3 connections are thread-bound)."""

    def __init__(self, path: Path, *, sync: log.Sync, name: str) -> None:
        self._path = path
        self._sync: log.Sync = sync
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._conn: sqlite3.Connection | None = None

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._executor, self._call, work)
        except RuntimeError as exc:  # the executor was shut down by close()
            raise BusClosedError("the bus reader is closed") from exc
        try:
            return await future
        except sqlite3.Error as exc:
            raise BusError(f"cannot read the bus file {self._path}: {exc}") from exc

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_connection)
        self._executor.shutdown(wait=True)

    def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            self._conn = log.connect(self._path, sync=self._sync)
        return work(self._conn)

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class EmbeddedConsumer:
    """Implements the Consumer port. One ``poll`` at a time; ``commit`` may interleave."""

    def __init__(self, bus: EmbeddedBus, *, group: str, topics: Sequence[str]) -> None:
        if not topics:
            raise ValueError("a consumer needs at least one topic")
        self._bus = bus
        self._group = group
        self._topics = tuple(dict.fromkeys(topics))
        # host and pid let a restarted process see that the previous holder is dead (kill -9)
        # and take over at once instead of waiting out the lease.
        self._owner = f"{group}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        self._ttl_ms = int(bus.lease_ttl * 1000)
        self._reader: LogReader | None = None
        self._closed = False
        self._holding = False
        self._lease_until_ms = 0
        # Next offset to hand out per partition; reset to the committed offsets on every
        # (re)acquisition of the lease.
        self._positions: dict[log.TopicPartition, int] = {}
        self._rotation = 0

    @property
    def group(self) -> str:
        return self._group

    async def start(self) -> None:
        if self._reader is not None:
            return
        self._reader = LogReader(
            self._bus.path, sync=self._bus.sync, name=f"bus-reader:{self._group}"
        )
        self._bus.register(self)
        await self._hold_lease()

    async def poll(
        self,
        *,
        max_records: int,
        timeout: float,
    ) -> list[ConsumedRecord]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            reader = self._live_reader()  # again after each wait: stop() may have run meanwhile
            # Taken before reading, so a commit landing between the read and the wait still
            # wakes us: no lost wake-up.
            appended = self._bus.appended_signal()
            if await self._hold_lease():
                records = await reader.run(
                    partial(
                        log.fetch,
                        topics=self._topics,
                        positions=dict(self._positions),
                        max_records=max_records,
                        rotation=self._rotation,
                    )
                )
                if records:
                    self._rotation += 1
                    for record in records:
                        self._positions[(record.topic, record.partition)] = record.offset + 1
                    return records
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            # Same-process publishes wake us at once; another process's only show up on the
            # next look, every poll_interval. A member waiting for the lease just looks again.
            wait = min(remaining, self._bus.poll_interval)
            try:
                async with asyncio.timeout(wait):
                    if self._holding:
                        await appended.wait()
                    else:
                        await asyncio.sleep(wait)
            except TimeoutError:
                pass

    async def commit(self, records: Sequence[ConsumedRecord]) -> None:
        self._live_reader()
        offsets: dict[log.TopicPartition, int] = {}
        for record in records:
            tp = (record.topic, record.partition)
            offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
        if not offsets:
            return
        now = _now_ms()
        stored = await self._bus.writer.execute(
            partial(
                log.commit_offsets,
                group=self._group,
                owner=self._owner,
                offsets=offsets,
                now_ms=now,
                ttl_ms=self._ttl_ms,
            )
        )
        if not stored:
            self._lose_lease()
            raise BusError(
                f"consumer of group {self._group!r} lost its lease before committing; "
                "records since the last commit will be delivered again"
            )
        self._lease_until_ms = now + self._ttl_ms

    async def lag(self) -> dict[str, int]:
        if not self._holding or self._reader is None:
            return {}
        ends = await self._reader.run(partial(log.log_ends, topics=self._topics))
        behind: dict[str, int] = {}
        for (topic, partition), end in ends.items():
            position = self._positions.get((topic, partition), 0)
            behind[topic] = behind.get(topic, 0) + max(0, end - position)
        return behind

    async def stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._bus.unregister(self)
        try:
            if self._holding:
                await self._bus.writer.execute(
                    partial(log.release_lease, group=self._group, owner=self._owner)
                )
        except BusClosedError:
            pass  # the lease simply expires after lease_ttl
        finally:
            self._holding = False
            if self._reader is not None:
                await self._reader.close()

    def _live_reader(self) -> LogReader:
        if self._closed:
            raise BusClosedError(f"consumer of group {self._group!r} is stopped")
        if self._reader is None:
            raise BusError(f"consumer of group {self._group!r} has not been started")
        return self._reader

    async def _hold_lease(self) -> bool:
        """Make sure we hold the group's lease, renewing it when half of it is used up."""
        now = _now_ms()
        if self._holding and self._lease_until_ms - now > self._ttl_ms // 2:
            return True
        if self._holding:
            renewed = await self._bus.writer.execute(
                partial(
                    log.renew_lease,
                    group=self._group,
                    owner=self._owner,
                    now_ms=now,
                    ttl_ms=self._ttl_ms,
                )
            )
            if renewed:
                self._lease_until_ms = now + self._ttl_ms
                return True
            self._lose_lease()
        reader = self._live_reader()
        # A read first: a waiting member should not queue a write every poll_interval.
        holder = await reader.run(partial(log.lease_holder, group=self._group, now_ms=now))
        dead_holder = None
        if holder is not None and holder != self._owner:
            if not _holder_is_dead(holder):
                return False
            dead_holder = holder
            logger.warning("taking over group %r from dead member %s", self._group, holder)
        acquired = await self._bus.writer.execute(
            partial(
                log.acquire_lease,
                group=self._group,
                owner=self._owner,
                topics=self._topics,
                now_ms=now,
                ttl_ms=self._ttl_ms,
                dead_owner=dead_holder,
            )
        )
        if not acquired:
            return False
        self._positions = await reader.run(
            partial(log.committed_offsets, group=self._group, topics=self._topics)
        )
        self._holding = True
        self._lease_until_ms = now + self._ttl_ms
        logger.info("consumer %s holds group %r", self._owner, self._group)
        return True

    def _lose_lease(self) -> None:
        logger.warning("consumer %s lost the lease of group %r", self._owner, self._group)
        self._holding = False
        self._positions = {}
