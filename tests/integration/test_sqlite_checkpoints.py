"""WAL checkpoints of a real SQLite file (``shared.db.checkpoints``): commits leave the copy
into the database file to the checkpointer's thread, which does it soon after them."""

from __future__ import annotations

import logging
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import checkpoints
from tests.fixtures.waiting import wait_for


@pytest.fixture
def engine(sqlite_writes: AsyncEngine) -> AsyncEngine:
    return sqlite_writes


async def _write(engine: AsyncEngine, count: int) -> None:
    for n in range(count):
        async with engine.begin() as conn:
            await conn.exec_driver_sql("INSERT INTO writes VALUES ('checkpointed', ?)", (n,))


async def check_copied_all(checkpointer: checkpoints.Checkpointer, *, after: int) -> None:
    """Wait until a checkpoint after the first ``after`` found the whole log copied."""

    def copied() -> bool:
        last = checkpointer.last
        return checkpointer.checkpoints > after and last is not None and last[1] == last[2]

    await wait_for(copied, timeout=10, what="a checkpoint that copied the whole log")


def _rows_in_database_file(path: Path, tmp_path: Path) -> int:
    """The rows of ``writes`` in the database file alone, its log left out: what checkpoints
    copied into it."""
    copy = tmp_path / "copy.db"
    shutil.copyfile(path, copy)
    with sqlite3.connect(copy) as connection:
        found = connection.execute("SELECT name FROM sqlite_master WHERE name = 'writes'")
        if found.fetchone() is None:
            return 0
        return int(connection.execute("SELECT count(*) FROM writes").fetchone()[0])


async def test_commits_are_copied_into_the_database_file_by_the_checkpointer(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """A few small commits, far below the log size at which a commit checkpoints by itself:
    the checkpointer's thread copies them into the database file all the same."""
    path = tmp_path / "writes.db"
    await _write(engine, 20)
    await wait_for(
        lambda: _rows_in_database_file(path, tmp_path) >= 20,
        timeout=10,
        what="20 rows in the database file",
    )
    assert _rows_in_database_file(path, tmp_path) == 20


async def test_a_commit_leaves_the_checkpoint_to_the_thread(engine: AsyncEngine) -> None:
    """Every connection checkpoints by itself only at the fallback size, 10 times SQLite's
    default; the thread is named after the database file."""
    async with engine.connect() as conn:
        pages = (await conn.exec_driver_sql("PRAGMA wal_autocheckpoint")).scalar_one()
    assert pages == checkpoints.FALLBACK_PAGES == 10_000
    await _write(engine, 1)
    names = {t.name for t in threading.enumerate()}
    assert "sqlite-checkpoint:writes.db" in names


async def test_the_thread_ends_when_idle_and_starts_again_with_the_next_commit(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    checkpointer = checkpoints.of_file(str((tmp_path / "writes.db").resolve()))
    checkpointer.idle = 0.1
    await _write(engine, 1)
    assert checkpointer.running
    await wait_for(lambda: not checkpointer.running, timeout=10, what="the idle thread to end")
    before = checkpointer.checkpoints
    await _write(engine, 3)
    assert checkpointer.running
    await check_copied_all(checkpointer, after=before)


async def test_a_failed_checkpoint_is_logged_and_the_thread_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A database the thread cannot open: a warning naming it; the next nudge, once the file
    is there, checkpoints it."""
    path = tmp_path / "later" / "wal.db"
    checkpointer = checkpoints.Checkpointer(str(path), interval=0.01, idle=5)
    with caplog.at_level(logging.WARNING, logger="shared.db.checkpoints"):
        checkpointer.nudge()
        await wait_for(lambda: bool(caplog.records), timeout=10, what="a warning")
    assert caplog.records[0].getMessage() == f"checkpoint of {path} failed"
    assert checkpointer.checkpoints == 0
    path.parent.mkdir()
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE t (n INTEGER)")
    checkpointer.nudge()
    await check_copied_all(checkpointer, after=0)
    assert checkpointer.running
