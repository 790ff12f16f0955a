"""Dispatch throughput: ``python -m bench --only dispatch``, or ``python -m bench.dispatch``.

Target (the dispatch issue): at least 2,000 messages/s per dispatch process against a provider
that answers in 50 ms. Everything runs on 127.0.0.1:

- **The provider**: the test suite's fake SendGrid (``tests/fakes/sendgrid.py``: auth, content
  type and body checked like the real v3 API) answering after 50 ms, served by uvicorn in a
  process of its own pinned to CPU 1 (``bench/fake_provider.py``).
- **Baselines of the same run**, against that fake, with as many requests in flight as dispatch
  may have (its ``send_concurrency``): (1) wrk, a C load generator: the fake's own ceiling (Little's
  law bounds it at concurrency ÷ 50 ms); (2) one Python process that sends the same requests
  through the same client as dispatch (``provider_client``: httpx over the providers' connection
  slots, at most twice send_concurrency connections, ``SendGridProvider.send``, uvloop) and does
  nothing else (``bench/dispatch_load.py``), pinned to CPU 0: the most one dispatch process can
  send with this client; (3) the same through a plain ``httpx.AsyncClient`` (httpx's own pool,
  same limits), the client dispatch had before.
- **Dispatch**: N message requests (welcome and cart-reminder marketing email with unsubscribe
  links, transactional order thanks) are put on the embedded bus first; then one real dispatch
  process, ``python -m services.cli serve dispatch`` (what ``ciclo serve dispatch`` runs), pinned
  to CPU 0, drains them: claim, checks and rendering in one transaction, sends to the fake over
  real HTTP, outcomes and message_sent events in a second transaction, offsets committed, the
  outbox relay publishing to the bus; a batch is claimed in chunks of ``claim_chunk``, the sends
  of one chunk in flight while the next is claimed. State in a SQLite file or a fresh PostgreSQL
  database.
  The rate counts messages recorded as sent, from the ledger's own timestamps (each batch's
  outcome transaction stamps its rows), after a warm-up of the first ``warmup_share`` of them;
  a run ends when every message is recorded or after ``max_seconds``.
- **CPU**: ``/proc`` of the dispatch process, the fake and PostgreSQL every 0.25 s, and what
  other processes used meanwhile.
- **Profile**: the same run once more under ``bench/sampler.py`` (a sampling thread in the
  process; py-spy is not installed): where the dispatch process's time goes, by step and by
  library, over the measured window only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx

from bench import dispatch_load, machine
from bench.dispatch_profile import analyse_profile
from bench.fake_provider import API_KEY
from bench.processes import (
    DEFAULT_POSTGRES,
    HOST,
    LOAD_CPU,
    PYTHON,
    REPO,
    SERVER_CPU,
    Proc,
    ciclo_env,
    free_port,
    pinned,
    temporary_database,
    wait_http,
)
from services.dispatch.settings import DispatchSettings

TARGET = 2000.0  # messages/s per dispatch process
TICKS = os.sysconf("SC_CLK_TCK")
DONE = ("sent", "failed", "skipped", "ambiguous", "held")
Log = Callable[[str], None]


@dataclass(frozen=True)
class DispatchPlan:
    messages: int = 20_000
    databases: tuple[str, ...] = ("sqlite", "postgresql")
    # What an operator sets for a 50 ms provider (2,000/s for 50 ms each: 100 in flight, and
    # room), then send_concurrency's default.
    concurrencies: tuple[int, ...] = (256, 32)
    # 500, as in the figures before: batches of 1,000 work since Suppressions.find_many looks
    # addresses up in IN-lists of 500 (they failed on SQLite when it ORed one clause each).
    batch_size: int = 500
    claim_chunk: int = 100  # CICLO_DISPATCH_CLAIM_CHUNK's default
    latency: float = 0.05
    baseline_seconds: float = 6.0
    max_seconds: float = 40.0
    warmup_share: float = 0.1
    profile: bool = True  # one more run per concurrency, on the first database, under the sampler
    # Messages already in the ledger (another workspace's, sent the day before), analyzed: the
    # steady state of a running deployment. On a fresh, never-analyzed table PostgreSQL settles
    # on a cached sequential-scan plan for the claim's lookup by message_id (prepared statements
    # switch to a generic plan after five executions) until autovacuum's first ANALYZE.
    history: int = 100_000


def _log(message: str) -> None:
    print(f"[bench.dispatch {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ── CPU from /proc ────────────────────────────────────────────────────────────────────────────


def _processes() -> dict[int, tuple[int, str, int]]:
    """pid -> (parent pid, name, CPU ticks of all its threads)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        table[int(entry.name)] = (int(fields[1]), name, int(fields[11]) + int(fields[12]))
    return table


def _tree(table: dict[int, tuple[int, str, int]], root: int) -> set[int]:
    found = {root}
    grew = True
    while grew:
        grew = False
        for pid, (ppid, _, _) in table.items():
            if ppid in found and pid not in found:
                found.add(pid)
                grew = True
    return found


def _busy_ticks() -> int:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return user + nice + system + irq + softirq + steal


@dataclass(frozen=True)
class Sample:
    """One look during a run: the ledger's counts and the CPU ticks used so far."""

    at: float  # time.time()
    done: int
    sent: int
    ticks: dict[str, int]


def _cpu_ticks(*, dispatch: int, fake: int) -> dict[str, int]:
    table = _processes()
    mine = _tree(table, os.getpid())
    postgres = sum(t for _, name, t in table.values() if name == "postgres")
    return {
        "dispatch": table.get(dispatch, (0, "", 0))[2],
        "fake": sum(table[p][2] for p in _tree(table, fake) if p in table),
        "postgres": postgres,
        "foreign": _busy_ticks() - sum(table[p][2] for p in mine) - postgres,
    }


def _cores(first: Sample, last: Sample) -> dict[str, float | None]:
    elapsed = last.at - first.at
    if elapsed <= 0:
        return {}
    return {
        k: round(max(0.0, (last.ticks[k] - first.ticks[k]) / TICKS / elapsed), 2)
        for k in first.ticks
    }


# ── The fake provider and the baselines ───────────────────────────────────────────────────────


@contextmanager
def fake_provider(log_dir: Path, *, latency: float) -> Iterator[tuple[Proc, str]]:
    port = free_port()
    argv = [PYTHON, "-m", "bench.fake_provider", "--port", str(port), "--latency", str(latency)]
    proc = Proc(f"fake-sendgrid-{port}", argv, log_dir=log_dir, cpu=LOAD_CPU)
    url = f"http://{HOST}:{port}"
    with proc:
        wait_http(proc, f"{url}/health", timeout=30)
        yield proc, url


def wrk_ceiling(url: str, body: Path, *, connections: int, seconds: float) -> dict[str, Any]:
    """wrk POSTing one SendGrid request with ``connections`` in flight, on the dispatch CPU."""
    from bench.load import run_wrk

    result = run_wrk(
        f"{url}/v3/mail/send",
        seconds=seconds,
        connections=connections,
        key=API_KEY,
        body_file=body,
        cpu=SERVER_CPU,
        quiet=False,
    )
    return {
        "connections": connections,
        "seconds": round(result.seconds, 2),
        "requests_per_s": round(result.req_per_s, 1),
        "latency_ms": {k: round(v, 1) for k, v in result.latency_ms.items()},
        "errors": {k: v for k, v in result.errors.items() if v},
        "statuses": result.statuses,
        "first_error": result.first_error,
    }


def http_only(
    url: str, *, concurrency: int, seconds: float, client: str = "dispatch"
) -> dict[str, Any]:
    argv = [
        PYTHON,
        "-m",
        "bench.dispatch_load",
        "--url",
        url,
        "--api-key",
        API_KEY,
        "--concurrency",
        str(concurrency),
        "--seconds",
        str(seconds),
        "--client",
        client,
    ]
    done = subprocess.run(
        pinned(argv, SERVER_CPU),
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=False,
        cwd=REPO,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"bench.dispatch_load failed ({done.returncode}):\n{done.stderr[-3000:]}"
        )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def sendgrid_body(path: Path) -> Path:
    """The request body dispatch sends for the first message of the mix, for wrk."""
    from services.dispatch.adapters.providers.sendgrid import SendGridProvider
    from services.dispatch.adapters.templates import TemplateStore
    from services.dispatch.service_layer.links import SignedLinks

    request = dispatch_load.message_request(0, now=datetime.now(UTC))
    message = dispatch_load.outbound(
        request,
        TemplateStore(REPO / "templates"),
        SignedLinks(public_url=dispatch_load.PUBLIC_URL, secret=dispatch_load.SECRET),
    )
    # body() only reads the message: no client is needed to build it.
    provider = SendGridProvider(cast(httpx.AsyncClient, None), api_key=API_KEY, base_url=HOST)
    path.write_text(json.dumps(provider.body(message)))
    return path


# ── The ledger ────────────────────────────────────────────────────────────────────────────────


class Ledger:
    """Counts of dispatch_messages by status while the dispatch process writes: a read-only
    SQLite connection (the service's engine opens every transaction with BEGIN IMMEDIATE, which
    would contend with the writer), or asyncpg. Empty until the process has created the table."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._sqlite: sqlite3.Connection | None = None
        self._pg: Any = None

    async def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
        if self._pg is not None:
            await self._pg.close()

    async def counts(self) -> dict[str, int]:
        sql = (
            "SELECT status, count(*) FROM dispatch_messages "
            f"WHERE workspace_id = '{dispatch_load.WORKSPACE}' GROUP BY status"
        )
        if self.url.startswith("sqlite"):
            try:
                if self._sqlite is None:
                    path = self.url.split("///", 1)[1]
                    self._sqlite = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
                return dict(self._sqlite.execute(sql).fetchall())
            except sqlite3.OperationalError:  # no file or no table yet
                return {}
        import asyncpg  # type: ignore[import-untyped]

        if self._pg is None:
            self._pg = await asyncpg.connect(self.url.replace("+asyncpg", ""), timeout=10)
        try:
            return {r[0]: r[1] for r in await self._pg.fetch(sql)}
        except asyncpg.UndefinedTableError:
            return {}


HISTORY_WORKSPACE = "history"
HISTORY_COLUMNS = (
    "message_id",
    "workspace_id",
    "customer_id",
    "channel",
    "template",
    "provider",
    "status",
    "attempts",
    "provider_message_id",
    "created_at",
    "updated_at",
)


async def seed_history(url: str, count: int) -> float:
    """Migrate the dispatch schema and put ``count`` earlier messages of another workspace in
    the ledger (ids shaped as the journey service derives them), then ANALYZE; its seconds."""
    import hashlib
    from datetime import timedelta

    from services.components import COMPONENTS
    from shared.db.migrate import upgrade

    began = time.monotonic()
    await upgrade(url, [COMPONENTS["dispatch"]])
    day = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)

    def row(i: int) -> tuple[Any, ...]:
        at = day + timedelta(seconds=i % 86_400)
        digest = hashlib.md5(f"history:{i}".encode(), usedforsecurity=False).hexdigest()
        return (
            f"msg_{digest}",
            HISTORY_WORKSPACE,
            f"customer-{i % 50_000}",
            "email",
            "welcome",
            "sendgrid",
            "sent",
            1,
            f"sg-{digest[:16]}",
            at,
            at,
        )

    rows = [row(i) for i in range(count)]
    if url.startswith("sqlite"):
        from sqlalchemy import insert, text

        from services.dispatch.adapters.tables import messages
        from shared.db.engine import create_engine

        engine = create_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    insert(messages), [dict(zip(HISTORY_COLUMNS, r, strict=True)) for r in rows]
                )
            async with engine.begin() as conn:
                await conn.execute(text("ANALYZE"))
        finally:
            await engine.dispose()
    else:
        import asyncpg

        conn = await asyncpg.connect(url.replace("+asyncpg", "", 1))
        try:
            await conn.copy_records_to_table(
                "dispatch_messages", records=rows, columns=HISTORY_COLUMNS
            )
            await conn.execute("VACUUM ANALYZE dispatch_messages")
        finally:
            await conn.close()
    return time.monotonic() - began


async def ledger_rows(url: str) -> list[tuple[str, datetime, datetime, str | None]]:
    """(status, created_at, updated_at, error) of every message of the run (not the seeded
    history), once the process has stopped."""
    from sqlalchemy import select

    from services.dispatch.adapters.tables import messages
    from shared.db.engine import create_engine

    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            c = messages.c
            rows = await conn.execute(
                select(c.status, c.created_at, c.updated_at, c.error).where(
                    c.workspace_id == dispatch_load.WORKSPACE
                )
            )
            return [(r.status, r.created_at, r.updated_at, r.error) for r in rows]
    finally:
        await engine.dispose()


# ── One dispatch run ──────────────────────────────────────────────────────────────────────────


@dataclass
class Run:
    database: str
    concurrency: int
    batch_size: int
    messages: int
    profiled: bool = False
    claim_chunk: int = 100
    samples: list[Sample] = field(default_factory=list)


def dispatch_env(
    *,
    url: str,
    bus: Path,
    fake: str,
    concurrency: int,
    batch_size: int,
    data_dir: Path,
    claim_chunk: int = 100,
) -> dict[str, str]:
    """The settings of the dispatch process: an operator's for a 50 ms SendGrid."""
    return ciclo_env(
        CICLO_DATABASE_URL=url,
        CICLO_BUS_URL=f"sqlite:///{bus}",  # an absolute path: four slashes
        CICLO_DATA_DIR=str(data_dir),
        CICLO_PORT=str(free_port()),
        CICLO_EMAIL_PROVIDER="sendgrid",
        CICLO_SENDGRID_API_KEY=API_KEY,
        CICLO_SENDGRID_BASE_URL=fake,
        CICLO_SEND_CONCURRENCY=str(concurrency),
        CICLO_DISPATCH_BATCH_SIZE=str(batch_size),
        CICLO_DISPATCH_CLAIM_CHUNK=str(claim_chunk),
    )


async def _watch(
    run: Run, proc: Proc, ledger: Ledger, *, fake_pid: int, plan: DispatchPlan, log: Log
) -> None:
    """Sample every 0.25 s until every message is recorded, ``max_seconds`` after the first one,
    or 20 s without progress. A profiled process is told when the warm-up ends (SIGUSR1) and
    when the run does (SIGUSR2)."""
    begin = time.monotonic()
    first: float | None = None
    warm = round(plan.warmup_share * run.messages)
    started_window = False
    last_done, last_change = -1, time.monotonic()
    try:
        while True:
            proc.check_alive()
            counts = await ledger.counts()
            done = sum(counts.get(s, 0) for s in DONE)
            now = time.monotonic()
            run.samples.append(
                Sample(
                    at=time.time(),
                    done=done,
                    sent=counts.get("sent", 0),
                    ticks=_cpu_ticks(dispatch=proc.popen.pid, fake=fake_pid),
                )
            )
            if done and first is None:
                first = now
            if run.profiled and not started_window and done >= warm:
                proc.popen.send_signal(signal.SIGUSR1)
                started_window = True
            if done != last_done:
                last_done, last_change = done, now
            if done >= run.messages:
                break
            if first is not None and now - first > plan.max_seconds:
                log(f"stopping after {plan.max_seconds:g} s: {done:,} of {run.messages:,} done")
                break
            if now - last_change > 20 or (first is None and now - begin > 90):
                raise RuntimeError(f"no progress for 20 s at {done:,} messages: {counts}")
            await asyncio.sleep(0.25)
    finally:
        if run.profiled:
            proc.popen.send_signal(signal.SIGUSR2)
        await ledger.close()


def measure(
    run: Run, *, url: str, fake: tuple[Proc, str], work_dir: Path, plan: DispatchPlan, log: Log
) -> dict[str, Any]:
    tag = f"{run.database}-c{run.concurrency}{'-profiled' if run.profiled else ''}"
    folder = work_dir / f"dispatch-{tag}"
    folder.mkdir(parents=True, exist_ok=True)
    bus = folder / "bus.db"
    loaded = asyncio.run(dispatch_load.preload(bus, run.messages))
    log(f"{tag}: {run.messages:,} message requests on the bus in {loaded:.1f} s")
    if plan.history:
        seeded = asyncio.run(seed_history(url, plan.history))
        log(f"{tag}: {plan.history:,} earlier messages in the ledger in {seeded:.1f} s")
    env = dispatch_env(
        url=url,
        bus=bus,
        fake=fake[1],
        concurrency=run.concurrency,
        batch_size=run.batch_size,
        data_dir=folder,
        claim_chunk=run.claim_chunk,
    )
    serve = ["-m", "services.cli", "serve", "dispatch"]
    profile = folder / "profile.json"
    argv = [PYTHON, "-m", "bench.sampler", "--out", str(profile), *serve]
    proc = Proc(
        f"dispatch-{tag}",
        argv if run.profiled else [PYTHON, *serve],
        log_dir=work_dir / "logs",
        env=env,
        cpu=SERVER_CPU,
    )
    with proc:
        asyncio.run(_watch(run, proc, Ledger(url), fake_pid=fake[0].popen.pid, plan=plan, log=log))
    rows = asyncio.run(ledger_rows(url))
    result = summarize(run, rows, plan=plan)
    result["log_problems"] = _problems(proc.output())
    if run.profiled and profile.exists():
        result["profile"] = analyse_profile(json.loads(profile.read_text()))
    log(
        f"{tag}: {result['messages_per_s']:,} messages/s sent "
        f"({result['statuses']}), dispatch CPU {result['cpu_cores'].get('dispatch')} cores"
    )
    return result


def _problems(output: str) -> list[str]:
    lines = [x for x in output.splitlines() if "ERROR" in x or "Traceback" in x]
    return [x[:300] for x in lines[:5]]


def summarize(
    run: Run, rows: list[tuple[str, datetime, datetime, str | None]], *, plan: DispatchPlan
) -> dict[str, Any]:
    """The rate over the measured window, from the ledger's batch timestamps; CPU over the
    samples of about the same window."""
    statuses = Counter(status for status, *_ in rows)
    errors = Counter((error or "")[:200] for status, _, _, error in rows if status != "sent")
    batches: dict[tuple[datetime, datetime], int] = Counter(
        (created, updated) for status, created, updated, _ in rows if status == "sent"
    )
    ordered = sorted(batches.items(), key=lambda kv: kv[0][1])
    total = sum(batches.values())
    # Skip the batches that hold the first warmup_share of the messages (keeping two at least);
    # the window opens when the last skipped batch is recorded.
    skipped = seen = 0
    while skipped < len(ordered) - 2 and seen + ordered[skipped][1] <= plan.warmup_share * total:
        seen += ordered[skipped][1]
        skipped += 1
    kept = ordered[skipped:]
    start: datetime | None = None
    if skipped:
        start = ordered[skipped - 1][0][1]
    elif ordered:
        start = ordered[0][0][0]
    counted = total - seen
    end = ordered[-1][0][1] if ordered else None
    elapsed = (end - start).total_seconds() if start and end else 0.0
    rate = round(counted / elapsed, 1) if elapsed > 0 else 0.0
    inside = [(u - c).total_seconds() for (c, u), _ in kept]
    between = [(kept[i][0][0] - kept[i - 1][0][1]).total_seconds() for i in range(1, len(kept))]
    window = [s for s in run.samples if start and end and start.timestamp() <= s.at]
    window = [s for s in window if end and s.at <= end.timestamp() + 0.3] or run.samples[-2:]
    cores = _cores(window[0], window[-1]) if len(window) >= 2 else {}
    sent_in_samples = window[-1].sent - window[0].sent if len(window) >= 2 else 0
    cpu_s = (
        (window[-1].ticks["dispatch"] - window[0].ticks["dispatch"]) / TICKS
        if len(window) >= 2
        else 0.0
    )
    return {
        "database": run.database,
        "send_concurrency": run.concurrency,
        "batch_size": run.batch_size,
        "claim_chunk": run.claim_chunk,
        "messages": run.messages,
        "recorded": len(rows),
        "statuses": dict(statuses),
        "errors": dict(errors.most_common(3)),
        "messages_per_s": rate,
        "window_s": round(elapsed, 2),
        "window_messages": counted,
        "batches": len(ordered),
        "batch_s": {
            "claim_and_send_p50": _median(inside),
            "between_p50": _median(between),
            "size_mean": round(total / len(ordered), 1) if ordered else None,
        },
        "cpu_cores": cores,
        "dispatch_cpu_us_per_message": (
            round(cpu_s / sent_in_samples * 1e6, 1) if sent_in_samples > 0 else None
        ),
        "met": rate >= TARGET,
    }


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[len(ordered) // 2], 3)


# ── The section ───────────────────────────────────────────────────────────────────────────────


def run(
    plan: DispatchPlan | None = None,
    *,
    postgres: str = DEFAULT_POSTGRES,
    work_dir: Path,
    log: Log = _log,
    errors: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Baselines, then one dispatch process per database and concurrency, then the profiled
    runs; a part that fails is recorded in ``errors`` and the others go on."""
    plan = plan or DispatchPlan()
    errors = {} if errors is None else errors
    log_dir = work_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    out: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine.describe(),
        "plan": asdict(plan),
        "target_per_s": TARGET,
        "default_send_concurrency": DispatchSettings.model_fields["send_concurrency"].default,
        "baselines": {},
        "runs": [],
    }
    with fake_provider(log_dir, latency=plan.latency) as fake:
        body = sendgrid_body(work_dir / "sendgrid-body.json")
        for concurrency in plan.concurrencies:
            key = f"c{concurrency}"
            try:
                machine.wait_quiet()
                wrk = wrk_ceiling(
                    fake[1], body, connections=concurrency, seconds=plan.baseline_seconds
                )
                client = http_only(fake[1], concurrency=concurrency, seconds=plan.baseline_seconds)
                pool = http_only(
                    fake[1],
                    concurrency=concurrency,
                    seconds=plan.baseline_seconds,
                    client="httpx",
                )
            except Exception as exc:
                errors[f"dispatch.baseline.{key}"] = str(exc)[:2000]
                continue
            out["baselines"][key] = {
                "bound_per_s": round(concurrency / plan.latency, 1),
                "wrk": wrk,
                "httpx_only": client,
                "httpx_pool": pool,
            }
            log(
                f"baseline c={concurrency}: fake {wrk['requests_per_s']:,}/s with wrk, "
                f"{client['messages_per_s']:,}/s from one Python process (dispatch's client), "
                f"{client['cpu_us_per_message']} µs CPU per send; httpx's own pool "
                f"{pool['messages_per_s']:,}/s, {pool['cpu_us_per_message']} µs"
            )
        runs = [
            Run(database, concurrency, plan.batch_size, plan.messages, claim_chunk=plan.claim_chunk)
            for concurrency in plan.concurrencies
            for database in plan.databases
        ]
        if plan.profile and plan.databases:
            runs += [
                Run(
                    plan.databases[0],
                    c,
                    plan.batch_size,
                    plan.messages,
                    profiled=True,
                    claim_chunk=plan.claim_chunk,
                )
                for c in plan.concurrencies
            ]
        for one in runs:
            tag = f"{one.database}.c{one.concurrency}{'.profiled' if one.profiled else ''}"
            try:
                machine.wait_quiet()
                with _database(one.database, postgres=postgres, work_dir=work_dir) as url:
                    result = measure(one, url=url, fake=fake, work_dir=work_dir, plan=plan, log=log)
                result["profiled"] = one.profiled
                out["runs"].append(result)
            except Exception as exc:
                log(f"dispatch {tag} FAILED: {exc}")
                errors[f"dispatch.{tag}"] = str(exc)[:2000]
    out["elapsed_s"] = round(time.monotonic() - began, 1)
    return out


@contextmanager
def _database(kind: str, *, postgres: str, work_dir: Path) -> Iterator[str]:
    if kind == "sqlite":
        path = work_dir / f"dispatch-{time.monotonic_ns()}.db"
        yield f"sqlite+aiosqlite:///{path}"
        return
    if kind != "postgresql":
        raise ValueError(f"unknown database {kind!r}: sqlite or postgresql")
    with temporary_database(postgres) as url:
        yield url


def main(argv: list[str] | None = None) -> int:
    import tempfile

    default = DispatchPlan()
    parser = argparse.ArgumentParser(prog="python -m bench.dispatch", description=__doc__)
    parser.add_argument("--messages", type=int, default=default.messages)
    parser.add_argument("--databases", default=",".join(default.databases))
    parser.add_argument("--concurrencies", default=",".join(map(str, default.concurrencies)))
    parser.add_argument("--batch-size", type=int, default=default.batch_size)
    parser.add_argument("--claim-chunk", type=int, default=default.claim_chunk)
    parser.add_argument("--max-seconds", type=float, default=default.max_seconds)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--history", type=int, default=default.history)
    args = parser.parse_args(argv)
    plan = DispatchPlan(
        messages=args.messages,
        databases=tuple(d for d in args.databases.split(",") if d),
        concurrencies=tuple(int(c) for c in args.concurrencies.split(",") if c),
        batch_size=args.batch_size,
        claim_chunk=args.claim_chunk,
        max_seconds=args.max_seconds,
        profile=not args.no_profile,
        history=args.history,
    )
    errors: dict[str, str] = {}
    work_dir = Path(tempfile.mkdtemp(prefix="ciclo-bench-dispatch-"))
    result = run(plan, work_dir=work_dir, errors=errors)
    print(json.dumps(result | {"errors": errors}, indent=2, default=str))
    if errors:
        _log(f"logs kept in {work_dir / 'logs'}")
        return 1
    shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
