"""The external merge sort of an import: validated events back in (occurred_at, line) order.

Up to ``run_bytes`` of envelopes are sorted in memory; past that, each full buffer is sorted and
written to a temporary file as a *run*, and reading merges all runs (``heapq.merge``, one record of
each run in memory at a time). Memory thus stays around ``run_bytes`` plus one validated chunk
whatever the file size; temporary disk use is about the size of the envelopes; there is one open
temporary file per run (64 MiB each by default: a 10 GB import holds about 160).
"""

from __future__ import annotations

import heapq
import struct
import tempfile
from collections.abc import Iterator
from typing import IO

Item = tuple[int, int, str, bytes, bytes]
"""One valid event: (occurred_at in µs since the epoch, line number, record key, CloudEvents
headers as JSON, envelope as JSON). Tuples compare on the first two, which are unique together."""

# Envelope bytes kept in memory before a sorted run is spilled to a temporary file.
RUN_BYTES = 64 * 2**20

# A run on disk: per item, this head (occurred_at, line, and the three lengths), then the bytes.
_HEAD = struct.Struct("<qqIII")


class SortedRuns:
    """Items handed back in (occurred_at, line) order, holding at most ``run_bytes`` of envelopes
    (plus one chunk) in memory: past that, the buffer is sorted and spilled to a temporary file,
    and iteration merges the spilled runs with the last one."""

    def __init__(self, *, run_bytes: int = RUN_BYTES) -> None:
        self.run_bytes = run_bytes
        self.count = 0
        self.spilled_runs = 0
        self._buffer: list[Item] = []
        self._buffered = 0
        self._spilled: list[IO[bytes]] = []

    def add(self, items: list[Item]) -> None:
        self._buffer.extend(items)
        self.count += len(items)
        self._buffered += sum(len(item[2]) + len(item[3]) + len(item[4]) for item in items)
        if self._buffered >= self.run_bytes:
            self._spill()

    def __iter__(self) -> Iterator[Item]:
        self._buffer.sort()
        if not self._spilled:
            return iter(self._buffer)
        for run in self._spilled:
            run.seek(0)
        return heapq.merge(self._buffer, *(_read_run(run) for run in self._spilled))

    def close(self) -> None:
        for run in self._spilled:
            run.close()
        self._spilled.clear()
        self._buffer = []

    def _spill(self) -> None:
        self._buffer.sort()
        # Kept open until close(): the file is deleted as soon as it is closed.
        run = tempfile.TemporaryFile(prefix="ciclo-import-")  # noqa: SIM115
        try:
            for occurred, line, key, headers, value in self._buffer:
                key_bytes = key.encode()
                run.write(_HEAD.pack(occurred, line, len(key_bytes), len(headers), len(value)))
                run.write(key_bytes)
                run.write(headers)
                run.write(value)
            run.flush()
        except BaseException:
            run.close()
            raise
        self._spilled.append(run)
        self.spilled_runs += 1
        self._buffer = []
        self._buffered = 0


def _read_run(run: IO[bytes]) -> Iterator[Item]:
    read, unpack, size = run.read, _HEAD.unpack, _HEAD.size
    while head := read(size):
        occurred, line, key_len, headers_len, value_len = unpack(head)
        yield occurred, line, read(key_len).decode(), read(headers_len), read(value_len)
