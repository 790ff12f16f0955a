"""Write turns for a SQLite database: the transactions of one process take it in arrival order.

SQLite lets one transaction write at a time, and every Ciclo transaction on SQLite takes the
write lock as it begins (``BEGIN IMMEDIATE``, see :mod:`shared.db.engine`). Left to SQLite, a
transaction that finds the lock taken waits in the busy handler, which sleeps between tries (up
to 100 ms a sleep) without a queue, while the holder, once it commits, begins its next
transaction at once and usually takes the lock again. Two loops of one process writing flat out
(the journey consumer and its timer poller, or ingest beside both in ``ciclo run``) then share the
database unfairly: bench §6 measured timers about 2 s late beside a saturated consumer, and its
batches' p99 ten times their median (with the turns, and the poller's round ``held``: 0.64 s, and
a p99 1.4 times the median).

So within one process the transactions of a database file wait for their turn in a queue
(``asyncio.Lock`` wakes its waiters first come, first served) before they ask SQLite for the lock,
and give the turn back once they have committed or rolled back. SQLite's own lock and busy
timeout still order this process against others (``ciclo import``, a second server). A turn not
given within the busy timeout fails the transaction as SQLite would have: "database is locked".
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import weakref
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import await_


class WriteTurns:
    """The queue of one SQLite database within this process: one lock per event loop (an
    ``asyncio.Lock`` belongs to the loop it first waits in; tests run several loops), and the
    DB-API connections now holding a turn."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._held: dict[int, asyncio.Lock | None] = {}
        """``id`` of a DB-API connection → the lock of the turn it holds (None: the turn its
        task ``held``)."""
        self._owners: dict[asyncio.Lock, asyncio.Task[Any] | None] = {}
        """A lock → the task that ``held`` it."""

    def take(self, dbapi_connection: Any) -> None:
        """Wait for this process's turn to write, from the sync code SQLAlchemy runs on behalf
        of a coroutine (a greenlet of the running loop); fails like SQLite after ``timeout``."""
        key = id(dbapi_connection)
        if key in self._held:  # a connection holds at most one turn
            return
        lock = self._lock()
        owner = self._owners.get(lock)
        if owner is not None and owner is asyncio.current_task():
            self._held[key] = None  # within the task's ``held`` turn: nothing to wait for
            return
        await_(self._acquire(lock))
        self._held[key] = lock

    def _lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock

    async def _acquire(self, lock: asyncio.Lock) -> None:
        try:
            # A deadline on the wait, without the task ``wait_for`` makes for every transaction.
            async with asyncio.timeout(self.timeout):
                await lock.acquire()
        except TimeoutError:
            # What SQLAlchemy makes of SQLite's own "database is locked" (which callers retry).
            raise OperationalError(
                "BEGIN IMMEDIATE",
                None,
                sqlite3.OperationalError(
                    f"database is locked: no turn to write within {self.timeout:g} s"
                ),
            ) from None

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Keep the turn for the current task across several transactions, one after the
        other (the timer poller's lease and firing): the task's transactions inside take no
        turn of their own, so no other writer of the process comes between them."""
        lock = self._lock()
        task = asyncio.current_task()
        if task is not None and self._owners.get(lock) is task:
            yield  # held already, further out
            return
        await self._acquire(lock)
        self._owners[lock] = task
        try:
            yield
        finally:
            del self._owners[lock]
            lock.release()

    def give_back(self, dbapi_connection: Any) -> None:
        """End the turn of ``dbapi_connection``, if it holds one; the next in line goes on."""
        lock = self._held.pop(id(dbapi_connection), None)
        if lock is not None:  # a turn of its own, not its task's
            lock.release()

    @property
    def holders(self) -> int:
        """How many connections hold a turn now (at most one per event loop, and those of the
        task that ``held`` it)."""
        return len(self._held)

    @property
    def waiting(self) -> int:
        """How many transactions of the running event loop wait for their turn."""
        lock = self._locks.get(asyncio.get_running_loop())
        waiters = None if lock is None else lock._waiters
        return 0 if not waiters else sum(1 for w in waiters if not w.done())


_TURNS: dict[str, WriteTurns] = {}
"""One queue per database file of this process, whichever engine opens it."""
_OF_ENGINE: weakref.WeakKeyDictionary[Any, WriteTurns] = weakref.WeakKeyDictionary()
"""A SQLite engine (its sync engine) → the turns it waits for."""


def of(engine: AsyncEngine) -> WriteTurns | None:
    """The write turns ``engine`` waits for (None: not a SQLite engine)."""
    return _OF_ENGINE.get(engine.sync_engine)


def held(engine: AsyncEngine) -> contextlib.AbstractAsyncContextManager[None]:
    """``WriteTurns.held`` of ``engine``'s database; nothing to hold on PostgreSQL, where
    writers of different rows do not wait for each other."""
    turns = of(engine)
    return contextlib.nullcontext() if turns is None else turns.held()


def file_of(database: str | None) -> str | None:
    """The absolute path of a SQLite URL's database file; None for an in-memory database
    (one per connection) or a ``file:`` URI."""
    if database and database != ":memory:" and not database.startswith("file:"):
        return str(Path(database).resolve())
    return None


def install(engine: AsyncEngine, database: str | None, *, timeout: float) -> WriteTurns:
    """Make every transaction of ``engine`` (a SQLite engine whose ``begin`` handler issues
    ``BEGIN IMMEDIATE`` after this one's) wait for its write turn. Engines of one file share a
    queue; an in-memory database (one per connection) gets its own."""
    name = file_of(database)
    if name is not None:
        turns = _TURNS.get(name)
        if turns is None:
            turns = _TURNS[name] = WriteTurns(timeout)
    else:
        turns = WriteTurns(timeout)
    sync = engine.sync_engine
    _OF_ENGINE[sync] = turns
    dialect = sync.dialect

    def then_give_back(end: Callable[[Any], None]) -> Callable[[Any], None]:
        def ended(connection: Any) -> None:
            try:
                end(connection)
            finally:
                # ``do_commit`` and ``do_rollback`` get the pool's proxy of the DB-API connection.
                turns.give_back(getattr(connection, "dbapi_connection", connection))

        return ended

    # The dialect belongs to this engine alone: the turn ends once COMMIT or ROLLBACK is done
    # (the ``commit`` and ``rollback`` events fire before it is), whether a transaction ends it
    # or the pool's reset of a connection handed back in one.
    dialect.do_commit = then_give_back(dialect.do_commit)  # type: ignore[method-assign,assignment]
    dialect.do_rollback = then_give_back(dialect.do_rollback)  # type: ignore[method-assign,assignment]

    @event.listens_for(sync, "begin")
    def _take(connection: Any) -> None:
        turns.take(connection.connection.dbapi_connection)

    # A connection closed or dropped in a transaction never commits nor rolls back.
    @event.listens_for(sync.pool, "checkin")
    def _checked_in(dbapi_connection: Any, _record: Any) -> None:
        if dbapi_connection is not None:
            turns.give_back(dbapi_connection)

    @event.listens_for(sync.pool, "invalidate")
    def _invalidated(dbapi_connection: Any, _record: Any, _exc: Any) -> None:
        turns.give_back(dbapi_connection)

    @event.listens_for(sync.pool, "close")
    def _closed(dbapi_connection: Any, _record: Any) -> None:
        turns.give_back(dbapi_connection)

    return turns
