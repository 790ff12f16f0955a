"""The SQLite store behind the embedded bus: schema, partitioning and every SQL statement.

Everything here is synchronous and takes the connection it works on; the caller decides which thread
runs it (sqlite3 connections are bound to the thread that opened them). Writes run inside the
writer's transaction (:mod:`shared.bus.embedded_writer`); reads run on a consumer's own connection.

Tables::

    topics        (name, partitions)                        created by ensure_topics
    log_ends      (topic, partition, next_offset)           the offset the next record will get
    records       (topic, partition, offset, key, value, headers, timestamp_ms)
    group_offsets (group, topic, partition, next_offset)    committed positions of each group
    group_leases  (group, owner, expires_ms)                the one member consuming a group

``log_ends`` is kept apart from ``records`` so that pruning every record of a partition cannot make
offsets start again at 0, and so that an idle consumer finds out there is nothing new with one
small query.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import orjson

from shared.bus.partitioning import partition_for
from shared.bus.ports import ConsumedRecord, OutgoingRecord, TopicSpec

Sync = Literal["normal", "full"]
TopicPartition = tuple[str, int]

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (
    name TEXT PRIMARY KEY,
    partitions INTEGER NOT NULL CHECK (partitions > 0)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log_ends (
    topic TEXT NOT NULL,
    "partition" INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, "partition")
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    topic TEXT NOT NULL,
    "partition" INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    headers TEXT NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    PRIMARY KEY (topic, "partition", "offset")
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS group_offsets (
    "group" TEXT NOT NULL,
    topic TEXT NOT NULL,
    "partition" INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY ("group", topic, "partition")
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS group_leases (
    "group" TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_ms INTEGER NOT NULL
) WITHOUT ROWID;
"""


def connect(path: Path, *, sync: Sync) -> sqlite3.Connection:
    """Open a connection in autocommit mode: the writer issues BEGIN/COMMIT itself."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # WAL: readers never block the writer, and a commit is one append to the -wal file.
        # NORMAL survives a crash of the process (the WAL is in the OS cache); FULL also fsyncs
        # on every commit and so survives power loss.
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {sync.upper()}")
    except BaseException:
        conn.close()
        raise
    return conn


def create_schema(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(
            f"bus file has schema version {version}; this Ciclo knows up to {SCHEMA_VERSION}"
        )
    # Statement by statement: executescript() would COMMIT the writer's open transaction.
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


# --- topics -------------------------------------------------------------------------------------


def create_topics(conn: sqlite3.Connection, specs: Sequence[TopicSpec]) -> None:
    for spec in specs:
        if spec.partitions < 1:
            raise ValueError(f"topic {spec.name!r} needs at least one partition")
        conn.execute(
            "INSERT OR IGNORE INTO topics (name, partitions) VALUES (?, ?)",
            (spec.name, spec.partitions),
        )
        count = topic_partitions(conn, spec.name)
        conn.executemany(
            'INSERT OR IGNORE INTO log_ends (topic, "partition", next_offset) VALUES (?, ?, 0)',
            [(spec.name, p) for p in range(count or 0)],
        )


def topic_partitions(conn: sqlite3.Connection, topic: str) -> int | None:
    row = conn.execute("SELECT partitions FROM topics WHERE name = ?", (topic,)).fetchone()
    return None if row is None else int(row[0])


# --- the log ------------------------------------------------------------------------------------


def append(
    conn: sqlite3.Connection,
    records: Iterable[OutgoingRecord],
    *,
    partitions: Mapping[str, int],
    now_ms: int,
) -> None:
    """Give each record the next offset of its partition and insert it. ``partitions`` must know
    every record's topic; runs inside the caller's transaction."""
    rows: list[tuple[str, int, int, str, bytes, str, int]] = []
    ends: dict[TopicPartition, int] = {}
    for record in records:
        tp = (record.topic, partition_for(record.key, partitions[record.topic]))
        offset = ends.get(tp)
        if offset is None:
            offset = _log_end(conn, tp)
        ends[tp] = offset + 1
        headers = orjson.dumps(dict(record.headers)).decode() if record.headers else "{}"
        rows.append((tp[0], tp[1], offset, record.key, record.value, headers, now_ms))
    conn.executemany(
        'INSERT INTO records (topic, "partition", "offset", key, value, headers, timestamp_ms) '
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.executemany(
        'UPDATE log_ends SET next_offset = ? WHERE topic = ? AND "partition" = ?',
        [(end, topic, partition) for (topic, partition), end in ends.items()],
    )


def _log_end(conn: sqlite3.Connection, tp: TopicPartition) -> int:
    row = conn.execute(
        'SELECT next_offset FROM log_ends WHERE topic = ? AND "partition" = ?', tp
    ).fetchone()
    # A topic row without its log_ends rows cannot happen (same transaction), but a missing row
    # must not silently restart offsets, so treat it as corruption.
    if row is None:
        raise sqlite3.DatabaseError(f"no log end for {tp[0]}[{tp[1]}]")
    return int(row[0])


def log_ends(conn: sqlite3.Connection, topics: Sequence[str]) -> dict[TopicPartition, int]:
    marks = ", ".join("?" * len(topics))
    rows = conn.execute(
        f'SELECT topic, "partition", next_offset FROM log_ends WHERE topic IN ({marks})',
        tuple(topics),
    )
    return {(topic, partition): end for topic, partition, end in rows}


def read_partition(
    conn: sqlite3.Connection, tp: TopicPartition, start: int, limit: int
) -> list[ConsumedRecord]:
    rows = conn.execute(
        'SELECT "offset", key, value, headers, timestamp_ms FROM records '
        'WHERE topic = ? AND "partition" = ? AND "offset" >= ? ORDER BY "offset" LIMIT ?',
        (tp[0], tp[1], start, limit),
    )
    return [
        ConsumedRecord(
            topic=tp[0],
            partition=tp[1],
            offset=offset,
            key=key,
            value=value,
            headers=orjson.loads(headers),
            timestamp_ms=timestamp_ms,
        )
        for offset, key, value, headers, timestamp_ms in rows
    ]


def fetch(
    conn: sqlite3.Connection,
    topics: Sequence[str],
    positions: Mapping[TopicPartition, int],
    *,
    max_records: int,
    rotation: int,
) -> list[ConsumedRecord]:
    """Up to ``max_records`` records from ``positions`` onward, shared fairly among partitions.

    Each partition with news first gets an equal share; what is left goes to those that filled
    theirs. ``rotation`` turns the starting partition so leftovers do not always favour the first.
    Records of one partition stay together and in offset order.
    """
    ends = log_ends(conn, topics)
    ready = sorted(tp for tp, end in ends.items() if end > positions.get(tp, 0))
    if not ready or max_records < 1:
        return []
    turn = rotation % len(ready)
    ready = ready[turn:] + ready[:turn]
    share = max(1, -(-max_records // len(ready)))
    budget = max_records
    batches: dict[TopicPartition, list[ConsumedRecord]] = {}
    for tp in ready:
        if budget == 0:
            break
        batch = read_partition(conn, tp, positions.get(tp, 0), min(share, budget))
        batches[tp] = batch
        budget -= len(batch)
    for tp in ready:
        batch = batches.get(tp, [])
        if budget == 0:
            break
        if len(batch) == share:
            more = read_partition(conn, tp, batch[-1].offset + 1, budget)
            batch.extend(more)
            budget -= len(more)
    return [record for tp in ready for record in batches.get(tp, [])]


# --- consumer groups ----------------------------------------------------------------------------


def lease_holder(conn: sqlite3.Connection, group: str, now_ms: int) -> str | None:
    """The member holding the group's lease, or None when it is free or expired."""
    row = conn.execute(
        'SELECT owner FROM group_leases WHERE "group" = ? AND expires_ms > ?', (group, now_ms)
    ).fetchone()
    return None if row is None else str(row[0])


def acquire_lease(
    conn: sqlite3.Connection,
    *,
    group: str,
    owner: str,
    topics: Sequence[str],
    now_ms: int,
    ttl_ms: int,
    dead_owner: str | None = None,
) -> bool:
    """Take the lease if it is free, expired or already ours — or held by ``dead_owner``, a
    member the caller knows has died. On success the group is registered on every existing
    partition of ``topics`` (offset 0 where it has none), so that pruning keeps the records it has
    not consumed yet."""
    if dead_owner is not None:
        conn.execute(
            'UPDATE group_leases SET owner = ?, expires_ms = ? WHERE "group" = ? AND owner = ?',
            (owner, now_ms + ttl_ms, group, dead_owner),
        )
    conn.execute(
        'INSERT INTO group_leases ("group", owner, expires_ms) VALUES (?, ?, ?) '
        'ON CONFLICT ("group") DO UPDATE SET owner = excluded.owner, '
        "expires_ms = excluded.expires_ms "
        "WHERE group_leases.owner = excluded.owner OR group_leases.expires_ms <= ?",
        (group, owner, now_ms + ttl_ms, now_ms),
    )
    if not _holds(conn, group, owner):
        return False
    marks = ", ".join("?" * len(topics))
    conn.execute(
        'INSERT OR IGNORE INTO group_offsets ("group", topic, "partition", next_offset) '
        f'SELECT ?, topic, "partition", 0 FROM log_ends WHERE topic IN ({marks})',
        (group, *topics),
    )
    return True


def renew_lease(
    conn: sqlite3.Connection, *, group: str, owner: str, now_ms: int, ttl_ms: int
) -> bool:
    """Extend our lease; False when another member took it over in the meantime."""
    cursor = conn.execute(
        'UPDATE group_leases SET expires_ms = ? WHERE "group" = ? AND owner = ?',
        (now_ms + ttl_ms, group, owner),
    )
    return cursor.rowcount == 1


def release_lease(conn: sqlite3.Connection, *, group: str, owner: str) -> None:
    conn.execute('DELETE FROM group_leases WHERE "group" = ? AND owner = ?', (group, owner))


def commit_offsets(
    conn: sqlite3.Connection,
    *,
    group: str,
    owner: str,
    offsets: Mapping[TopicPartition, int],
    now_ms: int,
    ttl_ms: int,
) -> bool:
    """Store the group's positions, fenced by the lease: a member that lost the lease must not
    move offsets its successor relies on. Returns False (and stores nothing) in that case."""
    if not renew_lease(conn, group=group, owner=owner, now_ms=now_ms, ttl_ms=ttl_ms):
        return False
    conn.executemany(
        'INSERT INTO group_offsets ("group", topic, "partition", next_offset) '
        "VALUES (?, ?, ?, ?) "
        'ON CONFLICT ("group", topic, "partition") '
        "DO UPDATE SET next_offset = excluded.next_offset",
        [(group, topic, partition, offset) for (topic, partition), offset in offsets.items()],
    )
    return True


def committed_offsets(
    conn: sqlite3.Connection, group: str, topics: Sequence[str]
) -> dict[TopicPartition, int]:
    marks = ", ".join("?" * len(topics))
    rows = conn.execute(
        'SELECT topic, "partition", next_offset FROM group_offsets '
        f'WHERE "group" = ? AND topic IN ({marks})',
        (group, *topics),
    )
    return {(topic, partition): offset for topic, partition, offset in rows}


def _holds(conn: sqlite3.Connection, group: str, owner: str) -> bool:
    row = conn.execute('SELECT owner FROM group_leases WHERE "group" = ?', (group,)).fetchone()
    return row is not None and row[0] == owner


# --- retention ----------------------------------------------------------------------------------


def prune(conn: sqlite3.Connection, *, older_than_ms: int) -> int:
    """Delete records older than ``older_than_ms`` that every group consuming their partition has
    committed past. A partition no group consumes keeps only its retention window. Returns the
    number of records deleted."""
    partitions = conn.execute(
        'SELECT e.topic, e."partition", e.next_offset, min(g.next_offset) FROM log_ends e '
        'LEFT JOIN group_offsets g ON g.topic = e.topic AND g."partition" = e."partition" '
        'GROUP BY e.topic, e."partition"'
    ).fetchall()
    deleted = 0
    for topic, partition, end, floor in partitions:
        cursor = conn.execute(
            'DELETE FROM records WHERE topic = ? AND "partition" = ? AND "offset" < ? '
            "AND timestamp_ms < ?",
            (topic, partition, end if floor is None else floor, older_than_ms),
        )
        deleted += cursor.rowcount
    return deleted


def check_readable(conn: sqlite3.Connection) -> None:
    conn.execute("SELECT count(*) FROM topics").fetchone()
