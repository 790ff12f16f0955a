"""``python -m bench``: run the benchmarks and write ``bench/results.md`` and ``results.json``.

Order: physical baselines (bare FastAPI, raw SQLite, raw aiokafka → Tansu), then Ciclo embedded
(`ciclo run` defaults), then Ciclo distributed (Tansu + a fresh PostgreSQL database), then the
ingest service alone as deployed (`ciclo serve ingest`, Tansu + PostgreSQL: the process the ingest
targets are about). Per mode, on a fresh server: end-to-end latency while idle (not for ingest
alone: nothing downstream), then single-event throughput with wrk; then one fresh server per batch
size. Every load run records the CPU time of the server process (and of Tansu). Then the
journey engine in process (``bench/journey.py``: event throughput, timers, memory), one dispatch
process against a 50 ms provider (``bench/dispatch.py``: messages/s, CPU, profile) and the
purchase predictions
(``bench/predict.py``: RFM and both fits for 100,000 customers), then what customer-intelligence
upkeep adds to the journey engine's cost per event (``bench/intelligence.py``: upkeep off vs on,
pure CPU and with each database), then ``ciclo import`` into the embedded bus
(``bench/backfill.py``: events/s of the backfill, a file in order and shuffled). A section that
fails is recorded in the report and the run goes on; the exit code is 1 then.

``--only journey`` (or any comma-separated list of the SECTIONS) runs just those sections; the
others keep their figures from the previous ``results.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from bench import backfill, baselines, dispatch, intelligence, journey, load, machine, report
from bench.machine import ForeignCpu, wait_quiet
from bench.processes import (
    DEFAULT_POSTGRES,
    KEY_CACHE_SECONDS,
    PINNING,
    PYTHON,
    RATE_LIMIT,
    REPO,
    CicloServer,
    start_ciclo,
    start_tansu,
    temporary_database,
)

OUT_DIR = Path(__file__).resolve().parent
PINNING_NOTE = "server on CPU 0, wrk on CPU 1 (taskset)" if PINNING else "none"
JOURNEY_GROUP = "journey"
INGEST_ALONE = "ingest"  # the mode (and section) of `ciclo serve ingest` on its own
# Modes whose server hosts ingest only: no journey consumer to watch, no sink to reach.
WITHOUT_JOURNEY = (INGEST_ALONE,)
SECTIONS = (
    "baselines",
    "embedded",
    "distributed",
    "ingest",
    "journey",
    "dispatch",
    "predict",
    "intelligence",
    "backfill",
)
# Sections that carry their own date, machine and plan: an --only run of them leaves the HTTP
# sections' header alone.
SELF_CONTAINED = ("journey", "dispatch", "predict", "intelligence", "backfill")
PLAN_KEYS = {
    "journey": "journey",
    "dispatch": "dispatch",
    "predict": "predict_customers",
    "intelligence": "intelligence",
    "backfill": "backfill",
}


@dataclass(frozen=True)
class Plan:
    seconds: float = 6.0
    warmup: float = 2.0
    connections: int = 64
    batch_connections: int = 4
    batch_sizes: tuple[int, ...] = (100, 500)
    e2e_rate: float = 50.0
    e2e_seconds: float = 10.0
    poll_ms: float = 20.0
    observe: float = 10.0
    modes: tuple[str, ...] = ("embedded", "distributed", INGEST_ALONE)
    postgres: str = os.environ.get("CICLO_BENCH_POSTGRES_URL", DEFAULT_POSTGRES)
    sections: tuple[str, ...] = SECTIONS
    journey: journey.JourneyPlan = field(default_factory=journey.JourneyPlan)
    dispatch: dispatch.DispatchPlan = field(default_factory=dispatch.DispatchPlan)
    predict_customers: int = 100_000
    intelligence: intelligence.IntelligencePlan = field(
        default_factory=intelligence.IntelligencePlan
    )
    backfill: backfill.BackfillPlan = field(default_factory=backfill.BackfillPlan)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, plan: Plan, work_dir: Path) -> None:
        self.plan = plan
        self.work_dir = work_dir
        self.log_dir = work_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.results: dict[str, Any] = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine.describe() | {"load_generator": "none", "pinning": PINNING_NOTE},
            "plan": asdict(plan)
            | {"ciclo_rate_limit": RATE_LIMIT, "key_cache_seconds": KEY_CACHE_SECONDS},
            "baselines": {},
            "modes": {},
            "errors": {},
            "sections": {},
        }

    def section(self, name: str, body: Callable[[], None]) -> None:
        """Run one part of the benchmark; record its failure and go on."""
        log(f"{name} …")
        begin = time.monotonic()
        try:
            body()
        except Exception as exc:
            log(f"{name} FAILED: {exc}")
            detail = "".join(traceback.format_exception_only(exc)).strip()
            self.results["errors"][name] = detail
        log(f"{name} done in {time.monotonic() - begin:.1f}s")

    # --- baselines ----------------------------------------------------------------------------

    def fastapi_baseline(self) -> None:
        runs = baselines.fastapi(
            self.log_dir,
            seconds=self.plan.seconds,
            warmup=self.plan.warmup,
            connections=self.plan.connections,
        )
        self.results["baselines"]["fastapi"] = {k: v.as_dict() for k, v in runs.items()}

    def sqlite_baseline(self) -> None:
        seconds = min(self.plan.seconds, 3.0)
        wait_quiet()
        rates = baselines.sqlite_upsert(self.work_dir, seconds=seconds)
        self.results["baselines"]["sqlite_upsert"] = rates

    def kafka_baseline(self) -> None:
        proc, bootstrap = start_tansu(self.log_dir)
        with proc:
            wait_quiet()
            figures = asyncio.run(
                baselines.kafka_produce(bootstrap, seconds=min(self.plan.seconds, 5.0))
            )
        self.results["baselines"]["kafka_produce"] = figures

    # --- Ciclo --------------------------------------------------------------------------------

    @contextmanager
    def ciclo(self, mode: str, tag: str) -> Iterator[CicloServer]:
        """A fresh ``ciclo run``: new data dir (embedded) or new Tansu and database (distributed),
        so no run inherits another's backlog; for ``ingest``, a fresh ``ciclo serve ingest`` on
        a new Tansu and database (what a distributed deployment's ingest replica runs)."""
        name = f"ciclo-{mode}-{tag}"
        command = ("serve", "ingest") if mode == INGEST_ALONE else ("run",)
        data_dir = self.work_dir / name
        try:
            if mode == "embedded":
                server = start_ciclo(name, data_dir=data_dir, log_dir=self.log_dir)
                with server.proc:
                    yield server
                return
            with temporary_database(self.plan.postgres) as database_url:
                tansu, bootstrap = start_tansu(self.log_dir)
                with tansu:
                    server = start_ciclo(
                        name,
                        data_dir=data_dir,
                        log_dir=self.log_dir,
                        database_url=database_url,
                        bus_url=f"kafka://{bootstrap}",
                        command=command,
                        tansu=tansu,
                    )
                    with server.proc:
                        yield server
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)

    def measure(self, mode: str) -> None:
        plan = self.plan
        out: dict[str, Any] = self.results["modes"].setdefault(mode, {})
        journey = mode not in WITHOUT_JOURNEY
        with self.ciclo(mode, "e2e-single" if journey else "single") as server:
            url = f"{server.url}/v1/events"
            if journey:
                out["e2e"] = self.end_to_end(mode, server)
                self._settle(server)
            out["single"] = self.throughput(mode, server, url, 0, plan.connections, journey=journey)
        for n in plan.batch_sizes:
            with self.ciclo(mode, f"batch-{n}") as server:
                batch_url = f"{server.url}/v1/events/batch"
                out[f"batch_{n}"] = self.throughput(
                    mode, server, batch_url, n, plan.batch_connections, journey=journey
                )

    def end_to_end(self, mode: str, server: CicloServer) -> dict[str, Any]:
        """Signups at a fixed rate on the idle server, after a short run that warms it up."""
        plan = self.plan
        warm = asyncio.run(
            load.end_to_end(server, rate=plan.e2e_rate, seconds=1.0, prefix=f"{mode}-e2e-warm")
        )
        if warm.delivered == 0:
            raise RuntimeError(f"no signup reached the sink during the warm-up: {warm.errors}")
        wait_quiet()
        meter = ForeignCpu()
        meter.start()
        e2e = asyncio.run(
            load.end_to_end(
                server,
                rate=plan.e2e_rate,
                seconds=plan.e2e_seconds,
                prefix=f"{mode}-e2e",
                poll_interval=plan.poll_ms / 1000,
            )
        )
        e2e.foreign_cpu = meter.stop()
        log(f"{mode} e2e: POST→sink {e2e.post_to_sink_ms}, errors {e2e.errors[:3]}")
        return e2e.as_dict()

    def throughput(
        self,
        mode: str,
        server: CicloServer,
        url: str,
        batch: int,
        connections: int,
        *,
        journey: bool = True,
    ) -> dict[str, Any]:
        """wrk warm-up, then the measured run (recording the CPU time of the server and of
        Tansu); then, with ``journey``, up to ``observe`` seconds for the journey consumer to
        handle every accepted event (it runs in the same process)."""
        plan = self.plan
        name = f"batch_{batch}" if batch else "single"
        body = {"events": [baselines.SINGLE_BODY]} if batch else baselines.SINGLE_BODY
        key = server.ingest_key
        wrk = partial(
            load.run_wrk,
            url,
            key=key,
            batch=batch,
            connections=connections,
            watch=server.watch(),
        )
        # Verified API keys are cached KEY_CACHE_SECONDS; every expiry costs a lookup under load,
        # so the single-event run spans one expiry and its p99 always includes one.
        seconds = plan.seconds if batch else max(plan.seconds, KEY_CACHE_SECONDS + 1.0)
        if not journey:
            load.check_post(url, body, key=key)
            wrk(seconds=plan.warmup, prefix=f"{mode}-{name}-warm", quiet=False)
            result = wrk(seconds=seconds, prefix=f"{mode}-{name}")
            self._record_failures(mode, name, result)
            log(f"{mode} {name}: {self._summary(result)}")
            return result.as_dict()
        expected = load.consumed(server, JOURNEY_GROUP)
        load.check_post(url, body, key=key)
        expected += 1
        warm = wrk(seconds=plan.warmup, prefix=f"{mode}-{name}-warm", quiet=False)
        expected += warm.ok_requests * warm.events_per_request
        before = load.consumed(server, JOURNEY_GROUP)
        result = wrk(seconds=seconds, prefix=f"{mode}-{name}")
        ended, at_end = time.monotonic(), load.consumed(server, JOURNEY_GROUP)
        events = result.ok_requests * result.events_per_request
        expected += events
        caught_up, handled = load.wait_consumed(
            server, JOURNEY_GROUP, expected, timeout=plan.observe
        )
        waited = time.monotonic() - ended
        self._record_failures(mode, name, result)
        log(
            f"{mode} {name}: {self._summary(result)}; journey "
            f"{'caught up' if caught_up else 'behind'} after {waited:.1f}s"
        )
        return result.as_dict() | {
            "journey": {
                "events": events,
                "caught_up": caught_up,
                "backlog": max(0, round(expected - handled)),
                "waited_s": round(waited, 2),
                # While ingest runs, the journey shares the event loop; after, it runs alone.
                "events_per_s_during": round((at_end - before) / result.seconds, 1),
                "events_per_s_after": round((handled - at_end) / waited, 1) if waited else None,
            }
        }

    def _record_failures(self, mode: str, name: str, result: load.WrkResult) -> None:
        if result.failed:
            self.results["errors"][f"{mode}.{name}"] = (
                f"{result.failed} failed requests: {result.errors}, statuses {result.statuses}, "
                f"first: {result.first_error[:300]}"
            )

    @staticmethod
    def _summary(result: load.WrkResult) -> str:
        cpu = result.cpu_us_per_event()
        unit = "request" if result.events_per_request == 1 else "event"
        cores = ", ".join(
            f"{name} {cores:.2f}"
            for name in result.cpu_s
            if (cores := result.cores(name)) is not None
        )
        return (
            f"{result.req_per_s:,.0f} req/s, {result.events_per_s:,.0f} events/s, "
            f"p50 {result.latency_ms['p50']} ms, p99 {result.latency_ms['p99']} ms, errors "
            f"{result.errors}; server CPU {cpu or 0:,.0f} µs/{unit}; cores: {cores}; other "
            f"processes used {result.foreign_cpu} cores"
        )

    def _settle(self, server: CicloServer, *, quiet: float = 2.0) -> None:
        """Wait until the journey group has handled nothing new for ``quiet`` seconds."""
        deadline = time.monotonic() + self.plan.observe
        last, since = load.consumed(server, JOURNEY_GROUP), time.monotonic()
        while time.monotonic() - since < quiet and time.monotonic() < deadline:
            time.sleep(0.2)
            now = load.consumed(server, JOURNEY_GROUP)
            if now != last:
                last, since = now, time.monotonic()

    # --- the journey engine, in process ------------------------------------------------------

    def journey(self) -> None:
        self.results["journey"] = journey.measure(
            self.plan.journey,
            postgres=self.plan.postgres,
            work_dir=self.work_dir,
            log=log,
            errors=self.results["errors"],
        )

    # --- dispatch, against a 50 ms provider -------------------------------------------------

    def dispatch(self) -> None:
        self.results["dispatch"] = dispatch.run(
            self.plan.dispatch,
            postgres=self.plan.postgres,
            work_dir=self.work_dir,
            log=log,
            errors=self.results["errors"],
        )

    # --- purchase predictions, in a child process of their own -----------------------------

    def predict(self) -> None:
        """``python -m bench.predict``: a fresh process, so its peak RSS is the models' own."""
        argv = [PYTHON, "-m", "bench.predict", "--customers", str(self.plan.predict_customers)]
        date = datetime.now(UTC).isoformat(timespec="seconds")
        done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, check=False)
        try:
            figures: dict[str, Any] = json.loads(done.stdout)
        except ValueError:
            raise RuntimeError(
                f"bench.predict exited with {done.returncode}: {done.stderr[-2000:]}"
            ) from None
        self.results["predict"] = figures | {"date": date, "machine": machine.describe()}
        log(f"predict: {figures['total_s']} s for {figures['customers']:,} customers")

    # --- customer-intelligence upkeep: off vs on, in process -------------------------------

    def intelligence(self) -> None:
        self.results["intelligence"] = intelligence.measure(
            self.plan.intelligence,
            postgres=self.plan.postgres,
            work_dir=self.work_dir,
            log=log,
            errors=self.results["errors"],
        )

    # --- ciclo import into the embedded bus ------------------------------------------------

    def backfill(self) -> None:
        date = datetime.now(UTC).isoformat(timespec="seconds")
        figures = backfill.measure(self.plan.backfill, self.work_dir)
        self.results["backfill"] = figures | {"date": date, "machine": machine.describe()}
        runs = figures["runs"]
        log(
            f"backfill: {runs['in_order']['events_per_s']:,} events/s in order, "
            f"{runs['shuffled']['events_per_s']:,} shuffled"
        )

    def run(self) -> dict[str, Any]:
        sections = self.plan.sections
        stamp = self.results["date"]
        http = [s for s in sections if s not in SELF_CONTAINED]
        wrk_ok = True
        if http:
            try:
                self.results["machine"]["load_generator"] = f"wrk ({load.ensure_wrk()})"
            except load.LoadGeneratorMissing as exc:
                log(f"NO LOAD GENERATOR: {exc}")
                self.results["errors"]["wrk"] = str(exc)
                wrk_ok = False
        if wrk_ok and "baselines" in sections:
            self.section("baselines.fastapi", self.fastapi_baseline)
            self.section("baselines.sqlite_upsert", self.sqlite_baseline)
            self.section("baselines.kafka_produce", self.kafka_baseline)
            self.results["sections"]["baselines"] = stamp
        for mode in self.plan.modes:
            if wrk_ok and mode in sections:
                self.section(mode, partial(self.measure, mode))
                self.results["sections"][mode] = stamp
        for name, body in (
            ("journey", self.journey),
            ("dispatch", self.dispatch),
            ("predict", self.predict),
            ("intelligence", self.intelligence),
            ("backfill", self.backfill),
        ):
            if name in sections:
                self.section(name, body)
                if name in self.results:
                    self.results["sections"][name] = stamp
        return self.results


def parse_args(argv: list[str] | None) -> Plan:
    default = Plan()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--seconds", type=float, default=default.seconds)
    parser.add_argument("--warmup", type=float, default=default.warmup)
    parser.add_argument("--connections", type=int, default=default.connections)
    parser.add_argument("--batch-connections", type=int, default=default.batch_connections)
    parser.add_argument(
        "--batch-sizes", default=",".join(map(str, default.batch_sizes)), help="e.g. 100,500"
    )
    parser.add_argument("--e2e-rate", type=float, default=default.e2e_rate)
    parser.add_argument("--e2e-seconds", type=float, default=default.e2e_seconds)
    parser.add_argument(
        "--observe", type=float, default=default.observe, help="s to wait for the journey"
    )
    parser.add_argument(
        "--modes", default=",".join(default.modes), help="embedded,distributed,ingest"
    )
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"sections to run, of {','.join(SECTIONS)}; the others keep their last figures",
    )
    jp = journey.JourneyPlan()
    group = parser.add_argument_group("journey engine (bench/journey.py)")
    group.add_argument("--journey-databases", default=",".join(jp.databases))
    group.add_argument("--journey-customers", type=int, default=jp.customers)
    group.add_argument("--journey-events", type=int, default=jp.events)
    group.add_argument(
        "--journey-memory-customers",
        default=",".join(map(str, jp.memory_customers)),
        help="customer counts of the memory runs, besides --journey-customers",
    )
    group.add_argument("--journey-timer-databases", default=",".join(jp.timer_databases))
    group.add_argument("--journey-timers", type=int, default=jp.timers)
    group.add_argument(
        "--journey-timer-rate", type=float, default=jp.timer_rate, help="timers/s demanded"
    )
    group.add_argument(
        "--journey-timer-seconds",
        type=float,
        default=jp.timer_seconds,
        help="seconds of the window measured on time",
    )
    group.add_argument("--journey-catchup-seconds", type=float, default=jp.catchup_seconds)
    group.add_argument("--journey-pollers", type=int, default=jp.pollers)
    dp = dispatch.DispatchPlan()
    group = parser.add_argument_group("dispatch (bench/dispatch.py)")
    group.add_argument("--dispatch-messages", type=int, default=dp.messages)
    group.add_argument("--dispatch-databases", default=",".join(dp.databases))
    group.add_argument(
        "--dispatch-concurrencies",
        default=",".join(map(str, dp.concurrencies)),
        help="CICLO_SEND_CONCURRENCY of each run; the first is the headline",
    )
    group.add_argument("--dispatch-batch-size", type=int, default=dp.batch_size)
    group.add_argument(
        "--dispatch-max-seconds", type=float, default=dp.max_seconds, help="s per run, at most"
    )
    group.add_argument("--dispatch-no-profile", action="store_true", help="skip the profiled runs")
    group = parser.add_argument_group("purchase predictions (bench/predict.py)")
    group.add_argument("--predict-customers", type=int, default=100_000)
    group = parser.add_argument_group("backfill (bench/backfill.py)")
    group.add_argument("--backfill-events", type=int, default=backfill.BackfillPlan().events)
    args = parser.parse_args(argv)
    sections = tuple(s for s in args.only.split(",") if s)
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    journey_plan = journey.JourneyPlan(
        databases=_names(args.journey_databases),
        customers=args.journey_customers,
        events=args.journey_events,
        memory_customers=tuple(int(n) for n in _names(args.journey_memory_customers)),
        timer_databases=_names(args.journey_timer_databases),
        timers=args.journey_timers,
        timer_rate=args.journey_timer_rate,
        timer_seconds=args.journey_timer_seconds,
        catchup_seconds=args.journey_catchup_seconds,
        pollers=args.journey_pollers,
    )
    return Plan(
        seconds=args.seconds,
        warmup=args.warmup,
        connections=args.connections,
        batch_connections=args.batch_connections,
        batch_sizes=tuple(int(n) for n in args.batch_sizes.split(",") if n),
        e2e_rate=args.e2e_rate,
        e2e_seconds=args.e2e_seconds,
        observe=args.observe,
        modes=tuple(m for m in args.modes.split(",") if m),
        sections=sections,
        journey=journey_plan,
        dispatch=dispatch.DispatchPlan(
            messages=args.dispatch_messages,
            databases=_names(args.dispatch_databases),
            concurrencies=tuple(int(c) for c in _names(args.dispatch_concurrencies)),
            batch_size=args.dispatch_batch_size,
            max_seconds=args.dispatch_max_seconds,
            profile=not args.dispatch_no_profile,
        ),
        predict_customers=args.predict_customers,
        backfill=backfill.BackfillPlan(events=args.backfill_events),
    )


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def merge_previous(results: dict[str, Any], sections: tuple[str, ...]) -> dict[str, Any]:
    """Keep the figures of the sections not run this time from the previous results.json."""
    if set(SECTIONS) <= set(sections):
        return results
    path = OUT_DIR / "results.json"
    try:
        previous: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return results
    merged = dict(previous)
    merged.pop("ratios", None)
    previous_sections = dict(previous.get("sections") or {})
    if not previous_sections:  # written before sections were recorded: one run, one date
        previous_sections = {s: previous.get("date") for s in SECTIONS if s not in SELF_CONTAINED}
    merged["sections"] = previous_sections | results["sections"]
    errors = {
        k: v
        for k, v in (previous.get("errors") or {}).items()
        if k.split(".", 1)[0] not in sections and k != "wrk"
    }
    merged["errors"] = errors | results["errors"]
    if "baselines" in sections:
        merged["baselines"] = results["baselines"]
    merged["modes"] = dict(previous.get("modes") or {})
    for mode in ("embedded", "distributed", INGEST_ALONE):
        if mode in sections and mode in results["modes"]:
            merged["modes"][mode] = results["modes"][mode]
    if any(s not in SELF_CONTAINED for s in sections):
        merged["machine"] = results["machine"]
        merged["plan"] = results["plan"]
        merged["date"] = results["date"]
    else:
        merged.setdefault("machine", results["machine"])
        merged.setdefault("plan", results["plan"])
        for name in sections:
            merged["plan"][PLAN_KEYS[name]] = results["plan"][PLAN_KEYS[name]]
    for name in SELF_CONTAINED:
        if name not in sections:
            continue
        # A failed section leaves no stale figures behind.
        merged.pop(name, None)
        merged["sections"].pop(name, None)
        if name in results:
            merged[name] = results[name]
            merged["sections"][name] = results["sections"][name]
    return merged


def main(argv: list[str] | None = None) -> int:
    plan = parse_args(argv)
    work_dir = Path(tempfile.mkdtemp(prefix="ciclo-bench-"))
    begin = time.monotonic()
    results = Bench(plan, work_dir).run()
    elapsed = round(time.monotonic() - begin, 1)
    results["elapsed_s"] = elapsed
    results = merge_previous(results, plan.sections)
    json_path, md_path = report.write(results, OUT_DIR)
    log(f"wrote {md_path} and {json_path} in {elapsed}s")
    if results["errors"]:
        log(f"errors in: {', '.join(results['errors'])}; logs kept in {work_dir / 'logs'}")
        return 1
    shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
