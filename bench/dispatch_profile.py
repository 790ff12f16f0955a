"""Where a dispatch process's CPU goes: the counts of ``bench/sampler.py`` summed by step of
the dispatcher and by library, for ``bench/dispatch.py``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

# Steps of the dispatch process, matched from the innermost frame outwards: the first match wins.
STEPS = (
    ("send: SendGridProvider.send (httpx)", ("providers/sendgrid.py:SendGridProvider.send",)),
    ("render (Liquid, unsubscribe links)", ("Dispatcher._prepare",)),
    (
        "claim: ledger and suppression lookups, insert",
        (
            "MessageLedger.statuses",
            "MessageLedger.insert",
            "Dispatcher._suppressions",
            "Dispatcher._claim",
        ),
    ),
    ("record outcomes and outbox rows", ("Dispatcher._finish",)),
    ("workspace routes and policies", ("ConfiguredRoutes.", "Dispatcher._lookups")),
    ("decode MessageRequests (pydantic)", ("MessageRequest.from_json",)),
    ("bus: poll and commit offsets", ("embedded_consumer.py:", "ConsumerRunner._measure_lag")),
    ("outbox relay to the bus", ("shared/outbox.py:",)),
    ("held-message poller", ("DispatchWorker._release_loop",)),
    ("dispatcher, other", ("Dispatcher.handle", "Dispatcher._send")),
)
_HTTP = (
    "httpx/",
    "httpcore/",
    "h11/",
    "anyio/",
    "aiohttp/",
    "providers/transport.py",
    "providers/network.py",
)
# Stacks no step claims: the HTTP client's protocol callbacks run from the loop, not the send.
FALLBACK_STEPS = (("send: HTTP client I/O callbacks", _HTTP),)
LIBRARIES = (
    ("HTTP client (httpx, httpcore, h11, anyio; the providers' transport)", _HTTP),
    ("failed `import sniffio` (httpcore, per lock)", ("<frozen importlib",)),
    ("SQLAlchemy", ("sqlalchemy/",)),
    ("database driver (asyncpg, aiosqlite)", ("asyncpg/", "aiosqlite/", "sqlite3/")),
    ("pydantic", ("pydantic",)),
    ("Liquid", ("liquid/",)),
    ("Ciclo code", ("main/services/", "main/shared/")),
    ("asyncio", (".11/asyncio/",)),
    ("Python standard library (json, contextlib, …)", (".11/",)),
    ("prometheus_client", ("prometheus_client/",)),
)
_LOOP_LEAVES = ("asyncio/runners.py:Runner.run", "uvicorn/server.py:Server.serve")


def analyse_profile(raw: dict[str, Any]) -> dict[str, Any]:
    """Shares of the process's CPU samples by step and by library (of the innermost frame);
    CPU seconds of every thread over the window."""
    steps: Counter[str] = Counter()
    libraries: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    for stack, n in raw.get("stacks", {}).items():
        frames = stack.split(";")
        leaf = frames[-1]
        if leaf.endswith(_LOOP_LEAVES):
            # uvloop's own C code, or another thread's CPU while the loop waited.
            steps["event loop (uvloop C code) and other threads"] += n
            libraries["uvloop C code and other threads"] += n
            functions[leaf] += n
            continue
        steps[_first(frames, STEPS) or _first(frames, FALLBACK_STEPS) or "event loop, other"] += n
        sniffing = "_synchronization.py:current_async_library" in stack
        libraries[LIBRARIES[1][0] if sniffing else _library(leaf)] += n
        functions[leaf] += n
    total = sum(steps.values())
    share = _shares(total)
    return {
        "seconds": raw.get("seconds"),
        "samples": total,
        "steps": share(steps),
        "libraries": share(libraries),
        "top_functions": share(Counter(dict(functions.most_common(12)))),
        "thread_cpu_s": {
            name: used for name, used in raw.get("threads_cpu_s", {}).items() if used >= 0.05
        },
    }


def _first(frames: list[str], table: tuple[tuple[str, tuple[str, ...]], ...]) -> str | None:
    for frame in reversed(frames):
        for label, needles in table:
            if any(needle in frame for needle in needles):
                return label
    return None


def _library(leaf: str) -> str:
    for label, prefixes in LIBRARIES:
        if any(leaf.startswith(p) or f"/{p}" in leaf for p in prefixes):
            return label
    return "other"


def _shares(total: int) -> Callable[[Counter[str]], dict[str, float]]:
    def share(counts: Counter[str]) -> dict[str, float]:
        if not total:
            return {}
        return {k: round(n / total, 3) for k, n in counts.most_common() if n / total >= 0.005}

    return share
