"""Ratios, ``bench/results.json`` (everything, raw) and ``bench/results.md`` (tables)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

# REFERENCE.md, "Physical baselines on a 2-core machine of this kind".
REFERENCE = {
    "fastapi_const_req_per_s": 6800.0,
    "fastapi_model_req_per_s": 5200.0,
    "kafka_produce_msg_per_s": 97000.0,
    "sqlite_upsert_1_per_tx": 33000.0,
    "sqlite_upsert_500_per_tx": 155000.0,
}
FOREIGN = "other procs, cores"
NOISY = 0.2  # cores used by other processes during a measurement before the report warns
INGEST_TARGET = 0.70  # ingest single-event req/s ÷ bare FastAPI req/s, the ingest issue's goal

MODES = ("embedded", "distributed")


def _get(data: dict[str, Any], *path: str) -> float | None:
    node: Any = data
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return float(node) if isinstance(node, int | float) else None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return None
    return round(a / b, 3)


def baseline_figures(results: dict[str, Any]) -> dict[str, float | None]:
    b = results.get("baselines", {})
    return {
        "fastapi_const_req_per_s": _get(b, "fastapi", "const", "req_per_s"),
        "fastapi_model_req_per_s": _get(b, "fastapi", "model", "req_per_s"),
        "kafka_produce_msg_per_s": _get(b, "kafka_produce", "pipelined_msg_per_s"),
        "sqlite_upsert_1_per_tx": _get(b, "sqlite_upsert", "rows_per_s_1_per_tx"),
        "sqlite_upsert_500_per_tx": _get(b, "sqlite_upsert", "rows_per_s_500_per_tx"),
    }


def compute_ratios(results: dict[str, Any]) -> dict[str, Any]:
    base = baseline_figures(results)
    ratios: dict[str, Any] = {
        "baseline_vs_reference": {k: _ratio(v, REFERENCE[k]) for k, v in base.items()}
    }
    for mode in MODES:
        data = results.get("modes", {}).get(mode)
        if not data:
            continue
        single = _get(data, "single", "req_per_s")
        mode_ratios: dict[str, Any] = {
            "single_vs_fastapi_const": _ratio(single, base["fastapi_const_req_per_s"]),
            "single_vs_fastapi_model": _ratio(single, base["fastapi_model_req_per_s"]),
        }
        for run in sorted(k for k in data if k.startswith("batch_")):
            events = _get(data, run, "events_per_s")
            mode_ratios[f"{run}_vs_kafka_produce"] = _ratio(events, base["kafka_produce_msg_per_s"])
            mode_ratios[f"{run}_vs_sqlite_500_per_tx"] = _ratio(
                events, base["sqlite_upsert_500_per_tx"]
            )
        ratios[mode] = mode_ratios
    return ratios


# --- Markdown -------------------------------------------------------------------------------------


def _n(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _errors(run: dict[str, Any]) -> str:
    errors = run.get("errors") or {}
    bad = [f"{k} {v}" for k, v in errors.items() if v]
    statuses = run.get("statuses") or {}
    bad += [f"HTTP {code}: {n}" for code, n in sorted(statuses.items()) if not code.startswith("2")]
    return ", ".join(bad) or "0"


def render(results: dict[str, Any]) -> str:
    machine, plan = results["machine"], results["plan"]
    ratios = results["ratios"]
    base = baseline_figures(results)
    modes = results.get("modes", {})
    out = [
        "# Ciclo benchmark results",
        "",
        "Written by `make bench` (`python -m bench`) from one real run; raw figures in "
        "`bench/results.json`.",
        "",
        f"- Date: {results['date']}",
        f"- Machine: {machine['nproc']} CPUs ({machine['cpu']}), Python {machine['python']}, "
        f"{machine['platform']}",
        f"- Load generator: {machine['load_generator']}; pinning: {machine['pinning']}",
        f"- Each throughput figure: {plan['seconds']:g} s (single events: at least "
        f"{plan.get('key_cache_seconds', 10) + 1} s, so the run spans one expiry of the "
        f"{plan.get('key_cache_seconds', 10)} s API-key cache) after a {plan['warmup']:g} s "
        "warm-up; "
        f"{plan['connections']} connections for single events, {plan['batch_connections']} "
        "for batches. Every event has a customer id never used before.",
        f"- Modes: embedded = `ciclo run` defaults (SQLite state, embedded SQLite bus); "
        f"distributed = `ciclo run` with Tansu (Kafka protocol, in-memory) and PostgreSQL "
        f"({plan.get('postgres', '?')}), Kafka idempotence off. Ciclo runs with "
        f"`CICLO_LOG_LEVEL=WARNING` and `CICLO_RATE_LIMIT={plan.get('ciclo_rate_limit', '?')}` "
        "(the limiter stays in the path but never refuses; its default, 1,000 req/s per key, "
        "is below single-event capacity).",
        "- Before each measurement the harness waits (up to 10 s) for other processes to use "
        f"< {NOISY:g} cores; the column '{FOREIGN}' is what they used during it.",
        *_noise_warning(results),
        "",
        "## 1. Ingest: single events (`POST /v1/events`)",
        "",
    ]
    rows = []
    for mode in MODES:
        run = modes.get(mode, {}).get("single")
        if run:
            lat = run["latency_ms"]
            rows.append(
                [
                    mode,
                    _n(run["req_per_s"]),
                    _n(lat["p50"], 1),
                    _n(lat["p99"], 1),
                    _errors(run),
                    _n(run.get("foreign_cpu"), 2),
                    _pct(ratios.get(mode, {}).get("single_vs_fastapi_const")),
                    _pct(ratios.get(mode, {}).get("single_vs_fastapi_model")),
                ]
            )
    out += _table(
        [
            "mode",
            "req/s",
            "p50 ms",
            "p99 ms",
            "errors",
            FOREIGN,
            "÷ bare FastAPI",
            "÷ FastAPI + pydantic",
        ],
        rows,
    )
    out += [
        f"Target of the ingest issue: ≥ {INGEST_TARGET:.0%} of bare FastAPI (reported, not "
        "enforced).",
        "",
        "## 2. Ingest: batches (`POST /v1/events/batch`)",
        "",
    ]
    rows = []
    for mode in MODES:
        for name, run in sorted(modes.get(mode, {}).items()):
            if not name.startswith("batch_"):
                continue
            lat = run["latency_ms"]
            r = ratios.get(mode, {})
            rows.append(
                [
                    mode,
                    str(run["events_per_request"]),
                    _n(run["req_per_s"], 1),
                    _n(run["events_per_s"]),
                    _n(lat["p50"], 1),
                    _n(lat["p99"], 1),
                    _errors(run),
                    _n(run.get("foreign_cpu"), 2),
                    _pct(r.get(f"{name}_vs_kafka_produce")),
                    _pct(r.get(f"{name}_vs_sqlite_500_per_tx")),
                ]
            )
    out += _table(
        [
            "mode",
            "events/request",
            "req/s",
            "events/s",
            "p50 ms",
            "p99 ms",
            "errors",
            FOREIGN,
            "÷ raw Kafka produce",
            "÷ raw SQLite 500/tx",
        ],
        rows,
    )
    out += [
        "The physical bound that applies: raw Kafka produce for distributed, raw SQLite "
        "500-per-transaction for embedded.",
        "",
        "## 3. End to end: `POST /v1/events` (signup) → welcome email in the local sink",
        "",
    ]
    rows = []
    for mode in MODES:
        e2e = modes.get(mode, {}).get("e2e")
        if e2e:
            rows.append(
                [
                    mode,
                    f"{e2e['rate_per_s']:g}/s x {e2e['seconds']:g} s",
                    f"{e2e['delivered']}/{e2e['accepted']}/{e2e['sent']}",
                    f"{_n(e2e['post_ms'].get('p50'), 1)} / {_n(e2e['post_ms'].get('p99'), 1)}",
                    _pair(e2e["post_to_sink_ms"]),
                    _pair(e2e["ack_to_sink_ms"]),
                    _pair(e2e["post_to_visible_ms"]),
                    _n(e2e.get("foreign_cpu"), 2),
                ]
            )
    out += _table(
        [
            "mode",
            "load",
            "delivered/accepted/sent",
            "POST→202 p50/p99 ms",
            "POST→sink p50/p99 ms",
            "202→sink p50/p99 ms",
            "POST→seen by poller p50/p99 ms",
            FOREIGN,
        ],
        rows,
    )
    out += [
        "POST→sink = sink row `created_at` (server clock) minus client send time (same host's "
        f"clock). The poller reads `GET /v1/sink/messages` every {plan['poll_ms']:g} ms.",
        "",
        "## 4. The journey consumer under each load run (same process as ingest)",
        "",
    ]
    rows = []
    for mode in MODES:
        for name, run in modes.get(mode, {}).items():
            j = run.get("journey") if isinstance(run, dict) else None
            if j:
                rows.append(
                    [
                        mode,
                        name,
                        _n(j["events"]),
                        _n(j["events_per_s_during"]),
                        _n(j["events_per_s_after"]) if not j["caught_up"] else "(caught up)",
                        f"yes, {j['waited_s']:.1f} s" if j["caught_up"] else "no",
                        _n(j["backlog"]),
                    ]
                )
    out += _table(
        [
            "mode",
            "run",
            "events accepted",
            "journey events/s during the run",
            "journey events/s after it (alone)",
            f"caught up within {plan['observe']:g} s",
            "backlog left (incl. warm-up)",
        ],
        rows,
    )
    out += [
        "`ciclo run` hosts ingest, journey and dispatch on one event loop: during a run the "
        "journey gets what ingest leaves of the CPU; after the run it has the process alone.",
        "",
    ]
    out += ["## 5. Physical baselines (same run)", ""]
    names = {
        "fastapi_const_req_per_s": "bare FastAPI POST → constant, req/s",
        "fastapi_model_req_per_s": "FastAPI POST with a small pydantic body, req/s",
        "kafka_produce_msg_per_s": "aiokafka → Tansu, 200 B JSON, acks=all, pipelined, msg/s",
        "sqlite_upsert_1_per_tx": "SQLite WAL NORMAL upsert, 1 row/tx, rows/s",
        "sqlite_upsert_500_per_tx": "SQLite WAL NORMAL upsert, 500 rows/tx, rows/s",
    }
    rows = [
        [
            label,
            _n(base[key]),
            _n(REFERENCE[key]),
            _pct(ratios["baseline_vs_reference"].get(key)),
        ]
        for key, label in names.items()
    ]
    one = _get(results.get("baselines", {}), "kafka_produce", "one_in_flight_msg_per_s")
    rows.append(["aiokafka → Tansu, one record in flight (await each), msg/s", _n(one), "—", "—"])
    hop = results.get("baselines", {}).get("kafka_produce", {}).get("produce_to_consume_ms")
    if hop:
        label = "Tansu, one hop produce → poll, 50 msg/s, default fetch wait: p50 / p99 ms"
        rows.append([label, f"{hop['p50']} / {hop['p99']}", "—", "—"])
    for key in ("const", "model"):
        run = results.get("baselines", {}).get("fastapi", {}).get(key, {})
        if run:
            lat = run["latency_ms"]
            rows.append(
                [
                    f"FastAPI {key}: latency p50 / p99 ms ({_n(run.get('foreign_cpu'), 2)} "
                    "cores used by other processes meanwhile)",
                    f"{lat['p50']} / {lat['p99']}",
                    "—",
                    "—",
                ]
            )
    out += _table(["baseline", "this run", "REFERENCE.md", "this ÷ reference"], rows)
    if results.get("errors"):
        out += ["## Errors", ""]
        out += [f"- **{where}**: {_one_line(msg)}" for where, msg in results["errors"].items()]
        out += [""]
    return "\n".join(out)


def _foreign(results: dict[str, Any]) -> dict[str, float]:
    """Cores other processes used during each measurement, by measurement."""
    found: dict[str, float] = {}
    for key, run in results.get("baselines", {}).get("fastapi", {}).items():
        found[f"baseline FastAPI {key}"] = run.get("foreign_cpu") or 0.0
    for mode, runs in results.get("modes", {}).items():
        for name, run in runs.items():
            found[f"{mode} {name}"] = run.get("foreign_cpu") or 0.0
    return found


def _noise_warning(results: dict[str, Any]) -> list[str]:
    noisy = {k: v for k, v in _foreign(results).items() if v > NOISY}
    if not noisy:
        return [f"- Other processes used ≤ {NOISY:g} cores during every measurement."]
    worst = ", ".join(f"{k} {v:.2f}" for k, v in sorted(noisy.items(), key=lambda kv: -kv[1]))
    return [
        f"- **Noisy run**: other processes (not this benchmark, not PostgreSQL) used more than "
        f"{NOISY:g} cores during: {worst}. Compare those figures with care; run again on an "
        "idle machine."
    ]


def _pair(summary: dict[str, float]) -> str:
    return f"{_n(summary.get('p50'), 1)} / {_n(summary.get('p99'), 1)}"


def _one_line(message: str) -> str:
    text = " ".join(message.split())
    return text if len(text) <= 600 else text[:600] + " …"


def write(results: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    results["ratios"] = compute_ratios(results)
    json_path, md_path = directory / "results.json", directory / "results.md"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    md_path.write_text(render(results))
    return json_path, md_path
