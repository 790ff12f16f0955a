"""WAL checkpoints of a SQLite database, in a thread of their own instead of in a commit.

In WAL mode a commit appends the pages it changed to the write-ahead log; a checkpoint copies
them back into the database file and syncs it. By default SQLite checkpoints in the commit that
takes the log past 1,000 pages (``wal_autocheckpoint``): that commit copies every page of the log
before it returns, while it still holds this process's write turn (:mod:`shared.db.turns`).
On bench §6's event stream in batches of 2,000, the journey consumer's commits took 25 µs per
event with the automatic checkpoints, 7 µs with none.

So each database file of the process gets one :class:`Checkpointer`: every commit nudges it, and
its thread runs ``PRAGMA wal_checkpoint(PASSIVE)`` on a connection of its own, at most once per
``interval``. A passive checkpoint never waits for a writer or a reader (it copies what no reader
still needs), and sqlite3 releases the GIL while it runs, so the copy takes the machine's other
core rather than the writer's time. SQLite's automatic checkpoint stays on, at
:data:`FALLBACK_PAGES`, and has a second use beside covering for a thread that fails or falls
behind. The log starts over from its beginning only in a transaction that began when all of it was
copied; under a steady stream of writes the next transaction has always begun before the thread's
checkpoint is done, so the log grows until a commit finds it at that size, checkpoints the pages
the thread has not copied yet (those of the last transaction or two), and the next transaction
starts it over. The thread ends after ``idle`` seconds without a commit, closing its
connection, and the next commit starts it again.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

FALLBACK_PAGES = 10_000
"""``wal_autocheckpoint`` of every connection: the log size (pages) at which a commit
checkpoints itself, should the checkpointer not keep the log below it (10 times SQLite's
default of 1,000 pages: about 40 MB of 4 KiB pages)."""


class Checkpointer:
    """Checkpoints of one database file: ``nudge`` after a commit; a daemon thread copies the
    log back into the database at most once per ``interval`` seconds."""

    def __init__(self, path: str, *, interval: float = 0.05, idle: float = 2.0) -> None:
        self.path = path
        self.interval = interval
        self.idle = idle
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.checkpoints = 0
        """Checkpoints run."""
        self.last: tuple[int, int, int] | None = None
        """What the last one returned: (busy, pages in the log, pages of it in the database)."""

    def nudge(self) -> None:
        """A commit added pages to the log: have them copied (soon, off the caller's thread)."""
        self._wake.set()
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run,
                        name=f"sqlite-checkpoint:{Path(self.path).name}",
                        daemon=True,
                    )
                    self._thread.start()

    @property
    def running(self) -> bool:
        """Whether the thread is there (it ends after ``idle`` seconds without a commit)."""
        return self._thread is not None

    def _run(self) -> None:
        connection: sqlite3.Connection | None = None
        try:
            while True:
                if not self._wake.wait(self.idle):
                    with self._lock:
                        if not self._wake.is_set():  # no commit since: end, a nudge restarts
                            self._thread = None
                            return
                self._wake.clear()
                began = time.monotonic()
                try:
                    if connection is None:
                        connection = _connect(self.path)
                    self.checkpoint(connection)
                except sqlite3.Error:
                    # The commit path checkpoints by itself at FALLBACK_PAGES; try again later.
                    log.warning("checkpoint of %s failed", self.path, exc_info=True)
                    if connection is not None:
                        connection.close()
                        connection = None
                rest = self.interval - (time.monotonic() - began)
                if rest > 0:
                    time.sleep(rest)
        finally:
            if connection is not None:
                connection.close()

    def checkpoint(self, connection: sqlite3.Connection) -> None:
        busy, pages, copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.checkpoints += 1
        self.last = (busy, pages, copied)


def _connect(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=5, isolation_level=None)
    # No automatic checkpoint of its own: it writes nothing, and checkpoints by hand.
    connection.execute("PRAGMA wal_autocheckpoint=0")
    return connection


_CHECKPOINTERS: dict[str, Checkpointer] = {}
"""One checkpointer per database file of this process, whichever engine opens it."""


def of_file(path: str) -> Checkpointer:
    """The checkpointer of a database file (its absolute path, ``turns.file_of``): the engines
    of a file share it, as they share its write turns."""
    checkpointer = _CHECKPOINTERS.get(path)
    if checkpointer is None:
        checkpointer = _CHECKPOINTERS[path] = Checkpointer(path)
    return checkpointer
