"""The machine: what it is, and how much of it other processes used during a measurement.

The benchmark may share its machine with other work (test suites, builds). ``ForeignCpu`` reads
``/proc`` before and after a measurement: all busy CPU time, minus this process tree's, minus
PostgreSQL's (which the distributed mode drives itself), is what other processes took.
``ProcessCpu`` reads the CPU time of named processes of our own (the server under test, Tansu)
over the same span, since ``ForeignCpu`` counts them as ours.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PROC = Path("/proc")
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def describe() -> dict[str, Any]:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in (PROC / "cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _busy_ticks() -> int:
    """Busy CPU time of the whole machine (user, nice, system, irq, softirq, steal)."""
    fields = (PROC / "stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return user + nice + system + irq + softirq + steal


def _own_ticks() -> int:
    """CPU time of this process tree (with reaped children) and of PostgreSQL's processes."""
    table: dict[int, tuple[int, str, int]] = {}  # pid -> (ppid, name, ticks)
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        ticks = sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
        table[int(entry.name)] = (int(fields[1]), name, ticks)
    mine = {os.getpid()}
    grew = True
    while grew:
        grew = False
        for pid, (ppid, _, _) in table.items():
            if ppid in mine and pid not in mine:
                mine.add(pid)
                grew = True
    return sum(t for pid, (_, name, t) in table.items() if pid in mine or name == "postgres")


class ForeignCpu:
    """CPU share (in cores) that processes other than ours used between start() and stop()."""

    def __init__(self) -> None:
        self._busy = self._own = 0
        self._begin = 0.0

    def start(self) -> None:
        self._busy, self._own = _busy_ticks(), _own_ticks()
        self._begin = _uptime()

    def stop(self) -> float | None:
        try:
            busy, own, elapsed = _busy_ticks(), _own_ticks(), _uptime() - self._begin
        except OSError:
            return None
        if elapsed <= 0:
            return None
        foreign = (busy - self._busy) - (own - self._own)
        return round(max(0.0, foreign / TICKS / elapsed), 2)


def process_ticks(pid: int) -> int | None:
    """utime + stime of one process (every thread of it), in clock ticks; None once it is gone."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


class ProcessCpu:
    """CPU seconds each of some named processes used between start() and stop()."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self._pids = dict(pids)
        self._ticks: dict[str, int | None] = {}
        self._begin = 0.0

    def start(self) -> None:
        self._ticks = {name: process_ticks(pid) for name, pid in self._pids.items()}
        self._begin = _uptime()

    def stop(self) -> tuple[dict[str, float], float]:
        """(CPU seconds per name, wall seconds elapsed); a process gone meanwhile is left out."""
        elapsed = _uptime() - self._begin
        used: dict[str, float] = {}
        for name, pid in self._pids.items():
            before, after = self._ticks.get(name), process_ticks(pid)
            if before is not None and after is not None:
                used[name] = round((after - before) / TICKS, 3)
        return used, round(elapsed, 3)


def _uptime() -> float:
    return float((PROC / "uptime").read_text().split()[0])


def wait_quiet(*, below: float = 0.2, window: float = 1.0, max_wait: float = 10.0) -> float | None:
    """Wait (at most ``max_wait`` s) for a ``window`` in which other processes use less than
    ``below`` cores; return the last reading."""
    deadline = time.monotonic() + max_wait
    reading = None
    while True:
        meter = ForeignCpu()
        meter.start()
        time.sleep(window)
        reading = meter.stop()
        if reading is None or reading < below or time.monotonic() >= deadline:
            return reading
