"""Write turns on a real SQLite file (``shared.db.turns``): the transactions of one process take
the write lock in the order they asked for it, and every way a transaction ends gives its turn
back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import turns
from shared.db.engine import create_engine, session_factory

HOLD = 0.02
"""How long the busy writer keeps each transaction open (s)."""


@pytest.fixture
def engine(sqlite_writes: AsyncEngine) -> AsyncEngine:
    return sqlite_writes


def _turns(engine: AsyncEngine) -> turns.WriteTurns:
    found = turns.of(engine)
    if found is None:
        raise LookupError("a SQLite engine waits for write turns")
    return found


async def _write(engine: AsyncEngine, who: str, n: int, *, hold: float = 0.0) -> None:
    async with engine.begin() as conn:
        await conn.exec_driver_sql("INSERT INTO writes VALUES (?, ?)", (who, n))
        if hold:
            await asyncio.sleep(hold)


async def test_a_writer_waits_for_no_more_than_the_transaction_in_progress(
    engine: AsyncEngine,
) -> None:
    """A loop that writes back to back (the consumer flat out) and another that writes now
    and then (the timer poller): each of the second's transactions begins after at most the
    one transaction of the first already under way. Left to SQLite's busy handler, which
    sleeps between tries while the busy loop takes the lock again at once, it waits for many."""
    done = 0
    stop, going = asyncio.Event(), asyncio.Event()

    async def busy() -> None:
        nonlocal done
        while not stop.is_set():
            await _write(engine, "busy", done, hold=HOLD)
            done += 1
            if done == 3:
                going.set()

    task = asyncio.create_task(busy())
    try:
        await asyncio.wait_for(going.wait(), 5)
        waited = []
        for n in range(8):
            before = done
            await _write(engine, "other", n)
            waited.append(done - before)
            await asyncio.sleep(HOLD / 2)
    finally:
        stop.set()
        await task
    assert max(waited) <= 1, waited
    assert _turns(engine).holders == 0


async def test_turns_are_taken_in_the_order_asked(engine: AsyncEngine) -> None:
    order: list[int] = []
    first = asyncio.create_task(_write(engine, "first", 0, hold=0.1))
    await asyncio.sleep(0.02)  # the first holds the turn

    async def queued(n: int) -> None:
        async with engine.begin() as conn:
            order.append(n)
            await conn.exec_driver_sql("INSERT INTO writes VALUES ('queued', ?)", (n,))

    queue = _turns(engine)
    waiting = []
    for n in range(5):
        waiting.append(asyncio.create_task(queued(n)))
        async with asyncio.timeout(5):
            # Each asks for its turn before the next is made (the queue has no event to await).
            while queue.waiting < n + 1:  # noqa: ASYNC110
                await asyncio.sleep(0.001)
    await asyncio.gather(first, *waiting)
    assert order == [0, 1, 2, 3, 4]


async def test_no_turn_within_the_timeout_fails_as_a_locked_database(engine: AsyncEngine) -> None:
    queue = _turns(engine)
    queue.timeout = 0.2
    holder = asyncio.create_task(_write(engine, "holder", 0, hold=1.0))
    await asyncio.sleep(0.05)
    with pytest.raises(OperationalError, match="database is locked"):
        await _write(engine, "late", 0)
    await holder
    assert queue.holders == 0
    await _write(engine, "after", 0)  # the engine goes on


async def _failing_write(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.exec_driver_sql("INSERT INTO writes VALUES ('error', 0)")
        raise ZeroDivisionError


@pytest.mark.parametrize("end", ["commit", "error", "no commit", "invalidated", "closed"])
async def test_every_end_of_a_transaction_gives_the_turn_back(
    engine: AsyncEngine, end: str
) -> None:
    queue = _turns(engine)
    queue.timeout = 2.0
    if end == "commit":
        await _write(engine, "commit", 0)
    elif end == "error":
        with pytest.raises(ZeroDivisionError):
            await _failing_write(engine)
    elif end == "no commit":  # a session closed in its transaction: the pool's reset
        async with session_factory(engine)() as session:
            await session.connection()  # begins
            assert queue.holders == 1
    elif end == "invalidated":
        async with engine.connect() as conn:
            await conn.begin()
            assert queue.holders == 1
            await conn.invalidate()
    else:  # closed
        conn = await engine.connect()
        await conn.begin()
        assert queue.holders == 1
        await conn.close()
    assert queue.holders == 0
    await _write(engine, "next", 0)  # within the timeout
    async with engine.connect() as conn:
        rows = (await conn.exec_driver_sql("SELECT who FROM writes")).all()
    assert ("next",) in rows
    assert (("error",) in rows) is False


async def test_engines_of_one_file_share_its_queue(engine: AsyncEngine, tmp_path: Path) -> None:
    other = create_engine(f"sqlite+aiosqlite:///{tmp_path / '.' / 'writes.db'}")
    try:
        assert turns.of(other) is _turns(engine)
        _turns(engine).timeout = 0.2
        holder = asyncio.create_task(_write(engine, "holder", 0, hold=0.6))
        await asyncio.sleep(0.05)
        with pytest.raises(OperationalError, match="no turn to write"):
            await _write(other, "other", 0)
        await holder
    finally:
        await other.dispose()
    elsewhere = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'elsewhere.db'}")
    try:
        assert turns.of(elsewhere) is not _turns(engine)
    finally:
        await elsewhere.dispose()


def test_an_engine_serves_one_event_loop_after_another(tmp_path: Path) -> None:
    """Each loop gets its own lock (an ``asyncio.Lock`` binds to the loop it first waits in)."""
    made = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'loops.db'}")

    async def contended(n: int) -> None:
        if n == 0:
            async with made.begin() as conn:
                await conn.exec_driver_sql("CREATE TABLE writes (who TEXT, n INTEGER)")
        await asyncio.gather(*(_write(made, "loop", n * 10 + i, hold=0.01) for i in range(3)))
        await made.dispose()

    asyncio.run(contended(0))
    asyncio.run(contended(1))
    assert _turns(made).holders == 0


async def test_a_held_turn_keeps_other_writers_out_between_the_tasks_transactions(
    engine: AsyncEngine,
) -> None:
    """The timer poller's round: its lease and its firing, two transactions of one task,
    with no other writer of the process between them."""
    order: list[str] = []
    queue = _turns(engine)

    async def round_() -> None:
        async with turns.held(engine):
            await _write(engine, "lease", 0)
            order.append("lease")
            await asyncio.sleep(0.05)  # the caches, between the two
            async with turns.held(engine):  # held further out: nothing more to wait for
                await _write(engine, "fire", 0)
            order.append("fire")

    async def other() -> None:
        await _write(engine, "other", 0)
        order.append("other")

    poller = asyncio.create_task(round_())
    await asyncio.sleep(0.01)
    consumer = asyncio.create_task(other())
    await asyncio.gather(poller, consumer)
    assert order == ["lease", "fire", "other"]
    assert queue.holders == 0
    await _write(engine, "after", 0)


async def test_a_turn_is_held_by_its_task_alone(engine: AsyncEngine) -> None:
    """Another task's transaction waits for the held turn, even while the holder writes
    nothing, and fails like a locked database when the hold outlasts the timeout."""
    _turns(engine).timeout = 0.2
    inside = asyncio.Event()
    leave = asyncio.Event()

    async def holder() -> None:
        async with turns.held(engine):
            inside.set()
            await leave.wait()

    task = asyncio.create_task(holder())
    await inside.wait()
    with pytest.raises(OperationalError, match="no turn to write"):
        await _write(engine, "other", 0)
    leave.set()
    await task
    await _write(engine, "other", 1)


async def test_nothing_is_held_on_postgresql(postgres_url: str) -> None:
    made = create_engine(postgres_url)
    try:
        assert turns.of(made) is None
        async with turns.held(made), made.connect() as conn:
            assert (await conn.exec_driver_sql("SELECT 1")).scalar() == 1
    finally:
        await made.dispose()
