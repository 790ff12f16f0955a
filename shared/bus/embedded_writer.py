"""The embedded bus's single writer: one thread, one SQLite connection, group commit.

Every write of a process to the bus file goes through here. Callers on the event loop enqueue
work and await a future; the thread takes everything pending, runs it in ONE transaction, commits,
then settles all those futures with a single ``call_soon_threadsafe``. One fsync (or one WAL
append with ``synchronous=NORMAL``) thus covers many concurrent publishes, which is what lets the
log take tens of thousands of small records per second while each publish still returns only once
its records are committed.

Appends from all pending publishes are merged into one insert; other writes (topic creation,
offset commits, leases, pruning) each run in a savepoint so that one failing job does not sink the
rest of the batch.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from shared.bus import embedded_log as log
from shared.bus.ports import OutgoingRecord
from shared.errors import BusClosedError, BusError

T = TypeVar("T")

logger = logging.getLogger(__name__)

# Bounds one transaction so a flood of publishes cannot delay the first of them indefinitely.
MAX_JOBS_PER_TRANSACTION = 2_000


@dataclass(slots=True)
class _Job:
    future: asyncio.Future[Any]
    records: Sequence[OutgoingRecord] | None = None
    work: Callable[[sqlite3.Connection], Any] | None = None


_STOP = object()

# (job, result, error) once the transaction is over.
_Outcome = tuple[_Job, Any, BaseException | None]


class LogWriter:
    """Owns the write connection of one bus file. ``start`` and the submit methods must be called
    from the event loop that awaits the results; ``on_append`` runs on that loop after a commit
    that added records."""

    def __init__(self, path: Path, *, sync: log.Sync, on_append: Callable[[], None]) -> None:
        self._path = path
        self._sync: log.Sync = sync
        self._on_append = on_append
        self._queue: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        # Partition counts by topic, read by the writer thread only. Cleared when a transaction
        # fails, since a topic created in it may not exist after all.
        self._partitions: dict[str, int] = {}

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        # A daemon, so a program that never closes the bus still exits. Killing the thread
        # mid-transaction is safe: SQLite rolls it back, and nothing in it was acknowledged yet.
        self._thread = threading.Thread(
            target=self._run, name=f"bus-writer:{self._path.name}", daemon=True
        )
        self._thread.start()
        await self.execute(log.create_schema)

    def append(self, records: Sequence[OutgoingRecord]) -> asyncio.Future[None]:
        return self._submit(_Job(self._new_future(), records=records))

    def execute(self, work: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Run ``work`` in the next transaction; its exception (if any) is raised to the caller,
        sqlite3 errors as BusError."""
        return self._submit(_Job(self._new_future(), work=work))

    async def close(self) -> None:
        """Finish the work already queued, then stop the thread and close the connection."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(_STOP)
            await asyncio.to_thread(self._thread.join)

    def _new_future(self) -> asyncio.Future[Any]:
        if self._loop is None:
            raise BusError("the embedded bus has not been started")
        return self._loop.create_future()

    def _submit(self, job: _Job) -> asyncio.Future[Any]:
        if self._closed:
            raise BusClosedError("the embedded bus is closed")
        self._queue.put(job)
        return job.future

    # --- the writer thread ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            conn = log.connect(self._path, sync=self._sync)
        except sqlite3.Error as exc:
            self._refuse_all(BusError(f"cannot open the bus file {self._path}: {exc}"))
            return
        try:
            while (jobs := self._take()) is not None:
                self._run_batch(conn, jobs)
        finally:
            conn.close()

    def _take(self) -> list[_Job] | None:
        """Block for one job, then take whatever else is already waiting. None means stop."""
        first = self._queue.get()
        if first is _STOP:
            return None
        assert isinstance(first, _Job)
        jobs = [first]
        while len(jobs) < MAX_JOBS_PER_TRANSACTION:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:
                # Put it back: this batch runs first, the loop stops on the next take.
                self._queue.put(_STOP)
                break
            assert isinstance(job, _Job)
            jobs.append(job)
        return jobs

    def _run_batch(self, conn: sqlite3.Connection, jobs: list[_Job]) -> None:
        outcomes: list[_Outcome] = []
        appended = False
        try:
            # IMMEDIATE takes the write lock now, so another process's writer waits in
            # busy_timeout here rather than failing halfway through the batch.
            conn.execute("BEGIN IMMEDIATE")
            for job in jobs:
                if job.work is not None:
                    outcomes.append(self._run_in_savepoint(conn, job))
            appends: list[_Job] = []
            for job in jobs:
                if job.records is not None:
                    missing = self._missing_topics(conn, job.records)
                    if missing:
                        error = BusError(f"unknown topic(s) {missing}; create them first")
                        outcomes.append((job, None, error))
                    else:
                        appends.append(job)
            if appends:
                log.append(
                    conn,
                    (record for job in appends for record in job.records or ()),
                    partitions=self._partitions,
                    now_ms=time.time_ns() // 1_000_000,
                )
                outcomes.extend((job, None, None) for job in appends)
                appended = True
            conn.execute("COMMIT")
        except Exception as exc:  # whatever went wrong, no job of this batch was written
            if conn.in_transaction:
                try:
                    conn.rollback()
                except sqlite3.Error:
                    logger.exception("rollback of a failed bus transaction failed")
            self._partitions.clear()
            logger.error("bus transaction of %d job(s) failed: %s", len(jobs), exc)
            error = BusError(f"the bus file refused the write: {exc}")
            outcomes = [(job, None, error) for job in jobs]
            appended = False
        self._settle(outcomes, appended)

    def _run_in_savepoint(self, conn: sqlite3.Connection, job: _Job) -> _Outcome:
        assert job.work is not None
        conn.execute("SAVEPOINT job")
        try:
            result = job.work(conn)
        except Exception as exc:
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
            if isinstance(exc, sqlite3.Error):
                return job, None, BusError(f"the bus file refused the write: {exc}")
            return job, None, exc
        conn.execute("RELEASE job")
        return job, result, None

    def _missing_topics(self, conn: sqlite3.Connection, records: Sequence[OutgoingRecord]) -> str:
        missing: list[str] = []
        for topic in {record.topic for record in records}:
            if topic not in self._partitions:
                # Another process (or an earlier job of this batch) may have created it.
                count = log.topic_partitions(conn, topic)
                if count is None:
                    missing.append(topic)
                else:
                    self._partitions[topic] = count
        return ", ".join(sorted(missing))

    def _settle(self, outcomes: list[_Outcome], appended: bool) -> None:
        if self._loop is None:  # pragma: no cover - jobs exist only after start()
            return
        try:
            self._loop.call_soon_threadsafe(self._resolve, outcomes, appended)
        except RuntimeError:
            # The loop is gone (closed without closing the bus); nobody is waiting any more.
            logger.warning("event loop closed before %d bus job(s) were settled", len(outcomes))

    def _resolve(self, outcomes: list[_Outcome], appended: bool) -> None:
        for job, result, error in outcomes:
            if job.future.done():  # the caller was cancelled; the write stands regardless
                continue
            if error is None:
                job.future.set_result(result)
            else:
                job.future.set_exception(error)
        if appended:
            self._on_append()

    def _refuse_all(self, error: BusError) -> None:
        """The connection could not be opened: fail every job until stop is requested."""
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            assert isinstance(item, _Job)
            self._settle([(item, None, error)], appended=False)
