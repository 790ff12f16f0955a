"""A sampling profiler for a benchmark's child process: ``python -m bench.sampler --out FILE -m
MODULE ARGS...`` runs ``python -m MODULE ARGS...`` and samples its main thread's Python stack.

py-spy would do this from outside; where it is missing, the process does it itself, the way
statprof and plop do: ``setitimer(ITIMER_PROF)`` sends SIGPROF every ``interval`` seconds of CPU
the process uses, and the handler, run by the main thread between two bytecodes, counts the stack
it interrupted (outermost first, ``file:function`` per frame). Samples are thus proportional to
CPU time. (A sampling *thread* is not: it gets the GIL mostly when the main thread releases it,
so blocking C calls such as ``poll()`` would be over-counted.) Time spent in C, including
uvloop's own, counts for the Python frame that is current; CPU used by other threads while the
main thread waits in the event loop shows as the loop's frame. SIGPROF is installed with
SA_RESTART, so no system call of the process fails with EINTR because of it. Cost: one short
Python call per sample (well under 1 % of a core at the default 200 Hz of CPU time).

The measured window is the caller's: SIGUSR1 starts it afresh (the start-up and warm-up stay
out), SIGUSR2 ends it. When the module returns or raises (SIGTERM handled by uvicorn included),
the counts go to ``FILE`` as JSON: ``{"interval": s, "seconds": s, "stacks": {"a;b;c": n},
"threads_cpu_s": {name: s}}``, the CPU time of each thread over the window from ``/proc``.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

MAX_DEPTH = 80
_MARKERS = ("site-packages/", "/lib/python3", "/work/", "/main/")


def _frame_name(frame: FrameType) -> str:
    code = frame.f_code
    path = code.co_filename
    for marker in _MARKERS:
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{path}:{getattr(code, 'co_qualname', code.co_name)}"


def _stack(frame: FrameType | None) -> str:
    names: list[str] = []
    while frame is not None and len(names) < MAX_DEPTH:
        names.append(_frame_name(frame))
        frame = frame.f_back
    return ";".join(reversed(names))


def _threads_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) of each live thread of this process, by native id."""
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    found = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            raw = (task / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        native = int(task.name)
        used = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        found[native] = (names.get(native, f"native-{native}"), used)
    return found


class Sampler:
    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.stacks: Counter[str] = Counter()
        self._active = True
        self._begin = self._end = time.monotonic()
        self._cpu_start: dict[int, tuple[str, float]] = {}
        self._cpu_end: dict[int, tuple[str, float]] | None = None

    def start(self) -> None:
        signal.signal(signal.SIGPROF, self._sample)
        signal.siginterrupt(signal.SIGPROF, False)
        signal.signal(signal.SIGUSR1, lambda *_: self.restart())
        signal.signal(signal.SIGUSR2, lambda *_: self.freeze())
        self.restart()
        signal.setitimer(signal.ITIMER_PROF, self.interval, self.interval)

    def _sample(self, signum: int, frame: FrameType | None) -> None:
        if self._active:
            self.stacks[_stack(frame)] += 1

    def restart(self) -> None:
        """Forget what was counted so far: the measured window begins now."""
        self.stacks.clear()
        self._cpu_start = _threads_cpu()
        self._cpu_end = None
        self._begin = time.monotonic()
        self._active = True

    def freeze(self) -> None:
        if self._active:
            self._active = False
            self._end = time.monotonic()
            self._cpu_end = _threads_cpu()

    def stop(self) -> dict[str, Any]:
        signal.setitimer(signal.ITIMER_PROF, 0)
        self.freeze()
        cpu: dict[str, float] = {}
        for native, (name, used) in (self._cpu_end or {}).items():
            before = self._cpu_start.get(native, (name, 0.0))[1]
            cpu[name] = round(cpu.get(name, 0.0) + used - before, 2)
        return {
            "interval": self.interval,
            "seconds": round(self._end - self._begin, 3),
            "stacks": dict(self.stacks),
            "threads_cpu_s": cpu,
        }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sampler", description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--interval", type=float, default=0.005, help="CPU seconds per sample")
    parser.add_argument("-m", dest="module", required=True, help="the module to run")
    args, rest = parser.parse_known_args()
    sys.argv = [args.module, *rest]
    sampler = Sampler(args.interval)
    sampler.start()
    try:
        runpy.run_module(args.module, run_name="__main__", alter_sys=True)
    finally:
        args.out.write_text(json.dumps(sampler.stop()))


if __name__ == "__main__":
    main()
