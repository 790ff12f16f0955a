"""Load generation: wrk for throughput, an asyncio probe for end-to-end latency.

wrk (C, epoll) runs on its own CPU so the load generator is not the bottleneck; the Lua script
``wrk_post.lua`` gives every event a customer id never used before. The end-to-end probe posts
signups at a fixed rate and watches the local sink (``GET /v1/sink/messages``) for the welcome
emails they cause.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.machine import ForeignCpu, ProcessCpu, wait_quiet
from bench.processes import LOAD_CPU, CicloServer, pinned

WRK_SCRIPT = Path(__file__).with_name("wrk_post.lua")


class LoadGeneratorMissing(RuntimeError):
    """wrk is not installed and could not be installed."""


def ensure_wrk() -> str:
    """Path of ``wrk``; install the Debian package when it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    attempts = [["apt-get", "install", "-y", "wrk"], ["apt-get", "update"]]
    attempts.append(attempts[0])
    log: list[str] = []
    for argv in attempts:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.append(f"{' '.join(argv)}: {exc}")
            break
        log.append(f"{' '.join(argv)}: exit {done.returncode} {done.stderr.strip()[-300:]}")
        found = shutil.which("wrk")
        if found:
            return found
    raise LoadGeneratorMissing(
        "wrk is missing and could not be installed (apt-get install -y wrk):\n" + "\n".join(log)
    )


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


# --- wrk ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkResult:
    url: str
    connections: int
    events_per_request: int
    requests: int
    seconds: float
    errors: dict[str, int]
    latency_ms: dict[str, float]
    statuses: dict[str, int]
    first_error: str
    foreign_cpu: float | None  # cores other processes used meanwhile (see bench.machine)
    # CPU seconds of the watched processes of our own (the server, Tansu) over the run, and the
    # wall seconds that span covered (wrk's start-up and exit included).
    cpu_s: dict[str, float] = field(default_factory=dict)
    cpu_wall_s: float | None = None

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    @property
    def ok_requests(self) -> int:
        return max(0, self.requests - self.errors.get("status", 0))

    @property
    def req_per_s(self) -> float:
        return self.ok_requests / self.seconds if self.seconds else 0.0

    @property
    def events_per_s(self) -> float:
        return self.req_per_s * self.events_per_request

    def cores(self, name: str) -> float | None:
        """Cores the watched process ``name`` used during the run."""
        used = self.cpu_s.get(name)
        if used is None or not self.cpu_wall_s:
            return None
        return used / self.cpu_wall_s

    def cpu_us_per_event(self, name: str = "server") -> float | None:
        """µs of CPU of ``name`` per event accepted (per request for single events)."""
        used = self.cpu_s.get(name)
        events = self.ok_requests * self.events_per_request
        if used is None or not events:
            return None
        return used / events * 1e6

    def as_dict(self) -> dict[str, Any]:
        cores = {name: self.cores(name) for name in self.cpu_s}
        per_event = self.cpu_us_per_event()
        return {
            **asdict(self),
            "ok_requests": self.ok_requests,
            "req_per_s": round(self.req_per_s, 1),
            "events_per_s": round(self.events_per_s, 1),
            "cpu_cores": {k: round(v, 3) for k, v in cores.items() if v is not None},
            "server_cpu_us_per_event": None if per_event is None else round(per_event, 1),
        }


def run_wrk(
    url: str,
    *,
    seconds: float,
    connections: int,
    key: str = "",
    prefix: str = "c",
    batch: int = 0,
    body_file: Path | None = None,
    cpu: int = LOAD_CPU,
    quiet: bool = True,
    watch: Mapping[str, int] | None = None,
) -> WrkResult:
    """One wrk run (one thread, pinned to ``cpu``) POSTing ``wrk_post.lua`` bodies, or the
    content of ``body_file`` every time; with ``quiet``, first wait a little for other processes
    on the machine to calm down. ``watch`` names processes (``{"server": pid}``) whose CPU time
    over the run is recorded."""
    argv = pinned(
        [
            ensure_wrk(),
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(WRK_SCRIPT),
            url,
            "--",
            key,
            prefix,
            str(batch),
            str(body_file or ""),
        ],
        cpu,
    )
    if quiet:
        wait_quiet()
    meter = ForeignCpu()
    own = ProcessCpu(watch or {})
    meter.start()
    own.start()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    cpu_s, cpu_wall_s = own.stop()
    foreign = meter.stop()
    match = re.search(r"^WRK_JSON (\{.*\})$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    raw = json.loads(match.group(1))
    return WrkResult(
        url=url,
        connections=connections,
        events_per_request=max(batch, 1),
        requests=raw["requests"],
        seconds=raw["duration_us"] / 1e6,
        errors=raw["errors"],
        latency_ms={k: round(v / 1000, 3) for k, v in raw["latency_us"].items()},
        statuses=raw["statuses"],
        first_error=raw["first_error"],
        foreign_cpu=foreign,
        cpu_s=cpu_s,
        cpu_wall_s=cpu_wall_s if watch else None,
    )


def check_post(url: str, body: dict[str, Any], *, key: str = "") -> None:
    """One request before a load run: fail fast, with the answer, when it is not a 2xx."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    answer = httpx.post(url, json=body, headers=headers, timeout=10)
    if not answer.is_success:
        raise RuntimeError(f"POST {url} answered {answer.status_code}: {answer.text[:500]}")


# --- Journey backlog ------------------------------------------------------------------------------

_RECORDS = re.compile(r"^ciclo_consumer_records_total\{([^}]*)\}\s+([0-9.e+]+)$", re.MULTILINE)


def consumed(server: CicloServer, group: str) -> float:
    """Records the consumer group ``group`` has handled so far, from ``/metrics``."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return sum(float(v) for labels, v in _RECORDS.findall(text) if f'group="{group}"' in labels)


def wait_consumed(
    server: CicloServer, group: str, target: float, *, timeout: float, stall: float = 15.0
) -> tuple[bool, float]:
    """Wait until ``group`` has handled ``target`` records; give up after ``timeout`` seconds or
    ``stall`` seconds without progress. Returns (caught up, records handled)."""
    deadline = time.monotonic() + timeout
    last, last_change = consumed(server, group), time.monotonic()
    while last < target and time.monotonic() < deadline:
        time.sleep(0.2)
        now = consumed(server, group)
        if now != last:
            last, last_change = now, time.monotonic()
        elif time.monotonic() - last_change > stall:
            break
    return last >= target, last


# --- End-to-end latency ---------------------------------------------------------------------------


@dataclass
class E2EResult:
    rate_per_s: float
    seconds: float
    sent: int = 0
    accepted: int = 0
    delivered: int = 0
    post_ms: dict[str, float] = field(default_factory=dict)
    post_to_sink_ms: dict[str, float] = field(default_factory=dict)
    ack_to_sink_ms: dict[str, float] = field(default_factory=dict)
    post_to_visible_ms: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    foreign_cpu: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _summary(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    if not ms:
        return {}
    return {
        "p50": round(percentile(ms, 50), 2),
        "p90": round(percentile(ms, 90), 2),
        "p99": round(percentile(ms, 99), 2),
        "max": round(max(ms), 2),
    }


def _timestamp(iso: str) -> float:
    parsed = datetime.fromisoformat(iso)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


async def end_to_end(
    server: CicloServer,
    *,
    rate: float,
    seconds: float,
    prefix: str,
    drain_timeout: float = 30.0,
    poll_interval: float = 0.02,
) -> E2EResult:
    """Post signups at ``rate``/s for ``seconds``; per message, the time until the welcome email
    is in the sink. Sink ``created_at`` is server wall-clock time, on the same host as the client.
    """
    result = E2EResult(rate_per_s=rate, seconds=seconds)
    count = max(1, round(rate * seconds))
    sent: dict[str, tuple[float, float]] = {}  # email -> (time sent, time of the 202)
    seen: dict[str, tuple[float, float]] = {}  # email -> (sink created_at, time observed)
    ingest = {"Authorization": f"Bearer {server.ingest_key}"}
    admin = {"Authorization": f"Bearer {server.admin_key}"}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=server.url, timeout=10, limits=limits) as client:

        async def sink_page(after: int) -> list[dict[str, Any]]:
            answer = await client.get(
                "/v1/sink/messages", params={"after": after, "limit": 1000}, headers=admin
            )
            answer.raise_for_status()
            messages: list[dict[str, Any]] = answer.json()["messages"]
            return messages

        async def last_sink_id() -> int:
            cursor = 0
            while page := await sink_page(cursor):
                cursor = page[-1]["id"]
            return cursor

        async def post(index: int) -> None:
            email = f"{prefix}-{index}@example.com"
            body = {
                "type": "signup",
                "customer_id": f"{prefix}-{index}",
                "traits": {"email": email},
            }
            started = time.time()
            try:
                answer = await client.post("/v1/events", json=body, headers=ingest)
            except httpx.HTTPError as exc:
                result.errors.append(f"POST: {exc!r}")
                return
            acked = time.time()
            if answer.status_code != 202:
                result.errors.append(f"POST {answer.status_code}: {answer.text[:200]}")
                return
            sent[email] = (started, acked)

        async def send_all() -> None:
            begin = time.monotonic()
            tasks = []
            for index in range(count):
                delay = begin + index / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(post(index)))
            await asyncio.gather(*tasks)

        cursor = await last_sink_id()
        sender = asyncio.create_task(send_all())
        deadline = time.monotonic() + seconds + drain_timeout
        while time.monotonic() < deadline:
            page = await sink_page(cursor)
            observed = time.time()
            for message in page:
                cursor = max(cursor, message["id"])
                seen.setdefault(message["to"], (_timestamp(message["created_at"]), observed))
            if sender.done() and all(email in seen for email in sent):
                break
            if len(page) < 1000:
                await asyncio.sleep(poll_interval)
        await sender

    result.sent = count
    result.accepted = len(sent)
    delivered = [(sent[e], seen[e]) for e in sent if e in seen]
    result.delivered = len(delivered)
    result.post_ms = _summary([acked - started for started, acked in sent.values()])
    result.post_to_sink_ms = _summary([sink - s for (s, _), (sink, _) in delivered])
    result.ack_to_sink_ms = _summary([sink - a for (_, a), (sink, _) in delivered])
    result.post_to_visible_ms = _summary([obs - s for (s, _), (_, obs) in delivered])
    if result.delivered < result.accepted:
        result.errors.append(
            f"{result.accepted - result.delivered} accepted signups never reached the sink "
            f"within {drain_timeout:.0f}s"
        )
    return result
