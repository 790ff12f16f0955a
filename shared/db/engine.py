"""Async SQLAlchemy engines for SQLite (aiosqlite) and PostgreSQL (asyncpg).

SQLite runs in WAL mode and opens every transaction with ``BEGIN IMMEDIATE``: the embedded mode runs
several writers in one process, and a deferred transaction that later upgrades to a write lock can
fail with "database is locked" without waiting for the busy timeout. Within one process the
transactions of a database file take the write lock in arrival order (:mod:`shared.db.turns`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from shared.db import checkpoints
from shared.db.turns import file_of
from shared.db.turns import install as install_turns
from shared.errors import ConfigurationError


def dumps_json(value: Any) -> str:
    """JSON columns' text, by orjson (several times faster than ``json.dumps``, and JSON columns
    are written for every customer of every batch). What orjson refuses (an integer beyond 64
    bits) goes through ``json.dumps``, which also raises what it would have raised before."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value)


_DIGIT_MASK = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
"""``bytes.translate`` table: each ASCII digit to ``0``, every other byte to a space."""
_LONG_RUN = b"0" * 19


def _long_digits(text: str | bytes) -> bool:
    """Whether ``text`` holds a run of 19 ASCII digits or more: one that may be an integer
    orjson would read as a float (beyond 64 bits). A translation and a substring search, both
    C loops: a regular expression took 8 times as long (it tries a match at every position),
    several µs per column, more than orjson's whole decode. In UTF-8 no byte of a multi-byte
    character is an ASCII digit, and JSON numbers are ASCII: the bytes tell exactly."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return _LONG_RUN in data.translate(_DIGIT_MASK)


def loads_json(text: str | bytes) -> Any:
    """JSON columns' values, by orjson (three times faster than ``json.loads``; every customer
    row of every batch has several), giving exactly what ``json.loads`` gives. orjson reads an
    integer beyond 64 bits as a float: a text with a run of 19 digits or more (anywhere, even
    inside a string) goes to ``json.loads``, as does a text orjson refuses (NaN, Infinity, a
    lone surrogate), which ``json.loads`` then reads or rejects as it always did."""
    return json.loads(text) if _long_digits(text) else loads_json_within_64_bits(text)


def loads_json_within_64_bits(text: str | bytes) -> Any:
    """``loads_json`` for a text known to hold no integer beyond 64 bits (its writer writes
    none), without the search for long digit runs: orjson, and ``json.loads`` for what orjson
    refuses (NaN, Infinity, a lone surrogate)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> AsyncEngine:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.drivername != "sqlite+aiosqlite":
            raise ConfigurationError("SQLite URLs must use the async driver: sqlite+aiosqlite:///…")
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            url,
            echo=echo,
            connect_args={"timeout": _BUSY_SECONDS},
            json_serializer=dumps_json,
            json_deserializer=loads_json,
        )
        _configure_sqlite(engine, parsed.database)
        return engine
    if backend == "postgresql":
        if parsed.drivername != "postgresql+asyncpg":
            raise ConfigurationError(
                "PostgreSQL URLs must use the async driver: postgresql+asyncpg://…"
            )
        return create_async_engine(
            url,
            echo=echo,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            json_serializer=dumps_json,
            json_deserializer=loads_json,
        )
    raise ConfigurationError(f"unsupported database {backend!r}: use SQLite or PostgreSQL")


_BUSY_SECONDS = 30
"""How long a SQLite transaction waits for the write lock: its turn in this process, then
SQLite's busy timeout against other processes."""


def _configure_sqlite(engine: AsyncEngine, database: str | None) -> None:
    turns = install_turns(engine, database, timeout=_BUSY_SECONDS)
    path = file_of(database)
    if path is not None:
        _checkpoint_after_commits(engine, checkpoints.of_file(path))

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN IMMEDIATE below is the only BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={_BUSY_SECONDS * 1000}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # The checkpointer's thread copies the log after commits; a commit does at this size.
        if path is not None:
            cursor.execute(f"PRAGMA wal_autocheckpoint={checkpoints.FALLBACK_PAGES}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # After ``install_turns``'s own ``begin`` handler: this process's turn is taken.
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            turns.give_back(connection.connection.dbapi_connection)
            raise


def _checkpoint_after_commits(engine: AsyncEngine, checkpointer: checkpoints.Checkpointer) -> None:
    """Nudge ``checkpointer`` once each commit of ``engine`` is done (its dialect is its own)."""
    dialect = engine.sync_engine.dialect
    commit = dialect.do_commit

    def do_commit(connection: Any) -> None:
        commit(connection)
        checkpointer.nudge()

    dialect.do_commit = do_commit  # type: ignore[method-assign,assignment]


def session_factory(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
