"""The dispatch, prediction, intelligence and backfill sections of ``bench/results.md``
(``bench/dispatch.py``, ``bench/predict.py``, ``bench/intelligence.py``, ``bench/backfill.py``):
each carries its own date, machine and plan, since ``--only`` runs them
apart from the HTTP sections."""

from __future__ import annotations

from typing import Any

from bench.markdown import met, number, percent, table

DATABASES = (("sqlite", "SQLite"), ("postgresql", "PostgreSQL"))
NOISY = 0.2  # cores other processes used before a figure is flagged


def _machine(machine: dict[str, Any] | None) -> str:
    if not machine:
        return "the machine above"
    return f"{machine['nproc']} CPUs ({machine['cpu']}), Python {machine['python']}"


def _latency(figures: dict[str, Any] | None) -> str:
    lat = (figures or {}).get("latency_ms") or {}
    return f"{number(lat.get('p50'), 1)} / {number(lat.get('p99'), 1)}"


# ── Dispatch ──────────────────────────────────────────────────────────────────────────────────


def render_dispatch(d: dict[str, Any]) -> list[str]:
    plan = d["plan"]
    target = d.get("target_per_s", 2000.0)
    runs = [r for r in d.get("runs", []) if not r.get("profiled")]
    by_key = {(r["database"], r["send_concurrency"]): r for r in runs}
    concurrencies = list(plan["concurrencies"])
    batch = plan["batch_size"]
    latency_ms = round(plan["latency"] * 1000)
    out = [
        "## 7. Dispatch: messages/s of one process (`python -m bench --only dispatch`)",
        "",
        f"Measured {d['date']} on {_machine(d.get('machine'))}, {d.get('elapsed_s', '?')} s. "
        f"The provider is the test suite's fake SendGrid (real wire checks: auth, content type, "
        f"body) answering after **{latency_ms} ms**, in a uvicorn process of its own on CPU 1. "
        f"{plan['messages']:,} message requests (welcome and cart-reminder marketing email "
        "with unsubscribe links, transactional order thanks) are put on the embedded bus first; "
        "then one real dispatch process (`python -m services.cli serve dispatch`, what "
        "`ciclo serve dispatch` runs, on CPU 0) drains them: claim, checks and rendering in one "
        "transaction, the sends over real HTTP, outcomes and `message_sent` events in a second, "
        "offsets committed, the outbox relay publishing to the bus. Settings: "
        f"`CICLO_EMAIL_PROVIDER=sendgrid`, `CICLO_DISPATCH_BATCH_SIZE={batch}`, "
        f"`CICLO_SEND_CONCURRENCY` = {' or '.join(map(str, concurrencies))}, the rest default. "
        + (
            f"The ledger already holds {plan['history']:,} earlier messages (another "
            "workspace's, sent the day before), analyzed: a running deployment's steady state. "
            "On a fresh, never-analyzed ledger PostgreSQL caches a sequential-scan plan for the "
            "claim's lookup by message id (a prepared statement takes a generic plan after five "
            "executions, when the table is still small) and keeps it until autovacuum's first "
            "ANALYZE, up to a minute later: 670 messages/s instead of 994 in a run of "
            "2026-11-23. "
            if plan.get("history")
            else ""
        )
        + "Messages/s = messages recorded as sent ÷ time, from the ledger's own timestamps, "
        f"after the first {plan['warmup_share']:.0%} of them (warm-up); a run stops after "
        f"{plan['max_seconds']:g} s. CPU from `/proc` over the same window.",
        "",
    ]
    rows = []
    for c in concurrencies:
        cells = [by_key.get((db, c)) for db, _ in DATABASES]
        default = c == d.get("default_send_concurrency")
        label = "the default" if default else f"set for a {latency_ms} ms provider"
        rows.append(
            [
                f"**Messages/s sent**, send_concurrency {c} ({label}), batches of {batch}",
                *(number(r["messages_per_s"]) if r else "—" for r in cells),
                f"≥ {target:,.0f}",
                _met_all(cells),
            ]
        )
        rows.append(
            [
                "Dispatch process CPU: cores / µs per message",
                *(
                    f"{number(r['cpu_cores'].get('dispatch'), 2)} / "
                    f"{number(r.get('dispatch_cpu_us_per_message'))}"
                    if r
                    else "—"
                    for r in cells
                ),
                "—",
                "—",
            ]
        )
        rows.append(
            [
                f"Batch of {batch}: claim + render + sends / between two batches, p50 s",
                *(
                    f"{number(r['batch_s']['claim_and_send_p50'], 3)} / "
                    f"{number(r['batch_s']['between_p50'], 3)}"
                    if r
                    else "—"
                    for r in cells
                ),
                "—",
                "—",
            ]
        )
        rows.append(
            [
                "Recorded in the ledger (by status) in the run",
                *(_statuses(r) if r else "—" for r in cells),
                "—",
                "—",
            ]
        )
        rows.append(
            [
                "Cores used meanwhile by the fake / PostgreSQL / other processes",
                *(_others(r) if r else "—" for r in cells),
                "—",
                "—",
            ]
        )
    out += table(["measurement", "SQLite", "PostgreSQL", "target", "met?"], rows)
    out += _dispatch_baselines(d, concurrencies, latency_ms)
    out += _dispatch_profiles(d)
    problems = [(r, p) for r in d.get("runs", []) for p in r.get("log_problems") or []]
    if problems:
        run, first = problems[0]
        out += [
            f"Warnings or errors in a dispatch log ({run['database']}, send_concurrency "
            f"{run['send_concurrency']}): `{first[:300]}`",
            "",
        ]
    return out


def _met_all(cells: list[dict[str, Any] | None]) -> str:
    known = [r["met"] for r in cells if r]
    if not known:
        return "—"
    return met(all(known))


def _statuses(run: dict[str, Any]) -> str:
    counts = run.get("statuses") or {}
    return ", ".join(f"{status} {number(n)}" for status, n in sorted(counts.items())) or "none"


def _others(run: dict[str, Any]) -> str:
    cores = run.get("cpu_cores") or {}
    foreign = cores.get("foreign")
    flag = " (**noisy**)" if foreign is not None and foreign > NOISY else ""
    return (
        f"{number(cores.get('fake'), 2)} / {number(cores.get('postgres'), 2)} / "
        f"{number(foreign, 2)}{flag}"
    )


def _dispatch_baselines(d: dict[str, Any], concurrencies: list[int], latency_ms: int) -> list[str]:
    base = d.get("baselines") or {}
    columns = [base.get(f"c{c}") for c in concurrencies]
    if not any(columns):
        return []
    rows = [
        [
            f"Bound: in flight ÷ {latency_ms} ms, requests/s",
            *(number(b["bound_per_s"]) if b else "—" for b in columns),
        ],
        [
            "The fake alone, wrk (C): requests/s (p50 / p99 ms)",
            *(
                f"{number(b['wrk']['requests_per_s'])} ({_latency(b['wrk'])})" if b else "—"
                for b in columns
            ),
        ],
        [
            "One Python process sending only (httpx + `SendGridProvider.send`, uvloop): "
            "messages/s (p50 / p99 ms)",
            *(
                f"{number(b['httpx_only']['messages_per_s'])} ({_latency(b['httpx_only'])})"
                if b
                else "—"
                for b in columns
            ),
        ],
        [
            "… its CPU: cores / µs per send",
            *(
                f"{number(b['httpx_only']['cpu_cores'], 2)} / "
                f"{number(b['httpx_only']['cpu_us_per_message'])}"
                if b
                else "—"
                for b in columns
            ),
        ],
    ]
    return [
        "Baselines of the same run, against the same fake, as many requests in flight as "
        "dispatch may have: wrk shows what the fake can answer; the Python process sends the "
        "same requests through the same client as dispatch (httpx with `DispatchWorker`'s "
        "limits: max connections = twice send_concurrency) and does nothing else, on the "
        "dispatch CPU — the most one dispatch process can send with this client.",
        "",
        *table(["baseline", *(f"{c} in flight" for c in concurrencies)], rows),
    ]


def _dispatch_profiles(d: dict[str, Any]) -> list[str]:
    profiled = [r for r in d.get("runs", []) if r.get("profiled") and r.get("profile")]
    if not profiled:
        return []
    labels = [
        f"{dict(DATABASES).get(r['database'], r['database'])}, {r['send_concurrency']} in flight "
        f"({number(r['messages_per_s'])}/s)"
        for r in profiled
    ]
    out = [
        "### Where the dispatch process's CPU goes",
        "",
        "The runs once more under `bench/sampler.py` (py-spy is not installed: SIGPROF every "
        "5 ms of CPU, the interrupted Python stack counted), over the measured window. A step "
        "is the innermost of: the provider send; rendering (`Dispatcher._prepare`: Liquid and "
        "unsubscribe links); the claim's lookups and insert; recording outcomes and outbox "
        "rows; decoding; the bus; the outbox relay. Library = the innermost frame's package.",
        "",
    ]
    for key, title in (("steps", "step"), ("libraries", "library (innermost frame)")):
        shares: dict[str, list[float | None]] = {}
        for i, run in enumerate(profiled):
            for name, share in run["profile"].get(key, {}).items():
                shares.setdefault(name, [None] * len(profiled))[i] = share
        order = sorted(shares, key=lambda k: -max(v or 0.0 for v in shares[k]))
        rows = [[name, *(percent(v) for v in shares[name])] for name in order]
        out += table([f"share of CPU samples, by {title}", *labels], rows)
    threads = [
        ", ".join(
            f"{name} {used:g} s" for name, used in r["profile"].get("thread_cpu_s", {}).items()
        )
        for r in profiled
    ]
    out += [
        "CPU by thread over the window: "
        + "; ".join(f"{label}: {t}" for label, t in zip(labels, threads, strict=True))
        + ".",
        "",
    ]
    return out


# ── Predictions ───────────────────────────────────────────────────────────────────────────────

STAGES = (
    ("rfm", "RFM scores and groups"),
    ("bgnbd_fit", "BG/NBD fit (with covariance, 90-day check)"),
    ("gamma_gamma_fit", "Gamma-Gamma fit"),
    ("predictions", "Predictions: P(alive), purchases 30/90 d, order value, 365-day CLV"),
    ("fit_quality", "Fit-quality report (not in the total)"),
)


def render_predict(p: dict[str, Any]) -> list[str]:
    stages = p.get("stages", {})
    target = p.get("target_s", 60.0)
    out = [
        "## 8. Purchase predictions (`python -m bench --only predict`)",
        "",
        f"Measured {p.get('date', '?')} on {_machine(p.get('machine'))}. "
        f"{p['customers']:,} customers ({number(p.get('with_repeats'))} with repeat orders) "
        "simulated from the models themselves (`bench/predict.py`), every stage timed in one "
        f"process pinned to one CPU (CPU {p.get('pinned_cpu', '?')}).",
        "",
    ]
    rows = [
        [
            label,
            number(stages.get(key, {}).get("wall_s"), 2),
            number(stages.get(key, {}).get("cpu_s"), 2),
            "",
            "",
        ]
        for key, label in STAGES
        if key in stages
    ]
    rows.append(
        [
            f"**RFM + BG/NBD + Gamma-Gamma + predictions, {p['customers']:,} customers**",
            f"**{number(p.get('total_s'), 2)}**",
            number(p.get("total_cpu_s"), 2),
            f"< {target:g} s on one core",
            met(p.get("met")),
        ]
    )
    out += table(["stage", "wall s", "CPU s", "target", "met?"], rows)
    rows = []
    for model in ("bgnbd", "gamma_gamma"):
        fit = p.get(model) or {}
        for name, true in (fit.get("true") or {}).items():
            fitted = (fit.get("fitted") or {}).get(name)
            rows.append([f"{model} {name}", f"{true:g}", number(fitted, 3)])
    out += table(["parameter", "drawn from", "fitted"], rows)
    bg, gg = p.get("bgnbd") or {}, p.get("gamma_gamma") or {}
    out += [
        f"BG/NBD: {bg.get('iterations', '?')} iterations, converged {bg.get('converged')}, "
        f"reliable {bg.get('reliable')}; Gamma-Gamma: {gg.get('iterations', '?')} iterations, "
        f"converged {gg.get('converged')}. Peak RSS {number(p.get('peak_rss_mb'))} MiB.",
        "",
    ]
    return out


# ── Customer-intelligence upkeep ──────────────────────────────────────────────────────────────

INTEL_TOP = 10  # rows of the hotspot tables


def _us(value: float | None) -> str:
    return number(value, 1)


def _added_share(share: float | None) -> str:
    return "—" if share is None else f"+{share:.0%}" if share >= 0 else f"{share:.0%}"


def _runs(repeats: int) -> str:
    """How the end-to-end runs of section 9 went, in words."""
    if repeats <= 1:
        return "off then on"
    return (
        f"{repeats} runs of each, alternating which goes first; the run with the median "
        "events/s is the one reported"
    )


def render_intelligence(i: dict[str, Any]) -> list[str]:
    plan = i["plan"]
    target = i.get("target", 0.30)
    summary = i.get("summary") or {}
    cpu = i.get("cpu") or {}
    out = [
        "## 9. Customer-intelligence upkeep (`python -m bench --only intelligence`)",
        "",
        f"Measured {i['date']} (code {i.get('code', '?')}) on {_machine(i.get('machine'))}, "
        f"{i.get('elapsed_s', '?')} s. What profile, lead-score, lifecycle-stage and segment "
        "upkeep (with the derived events it raises) adds to the journey engine's cost per event. "
        "Every figure has its baseline from the same run, on the same event stream: upkeep "
        "**off** (`Intelligence(enabled=False)`) vs **on** (the defaults: the "
        f"{i.get('builtin_segments', '?')} built-in segments, none of them counting events in a "
        "window, the default score rules, lifecycle thresholds; workspace currency EUR, the "
        "stream's). The stream: sessions of signups, identifies, page and product views, cart "
        "updates, checkouts, orders (order_id, total, currency) and, in a fifth of them, a "
        "marketing email sent, delivered, opened (60 %) and clicked (40 % of those) "
        "(`bench.journey.EventStream(email=True)`); the six journeys of section 6 in both.",
        "",
        f"- **Pure CPU** (`bench/intelligence.py`, a child process pinned to one CPU, no I/O): "
        f"{number(plan['cpu_events'])} events over {number(plan['cpu_customers'])} customers "
        "(90 % start with traits), customer states in memory, `apply_event` batch by batch "
        f"({plan['batch_size']} events) once per configuration, the configurations interleaved "
        "(alternating order) on a virtual clock; CPU time of the process, the first 5 % of "
        "batches left out as warm-up; automatic garbage collection off, each timed part ending "
        "with a collection of the young generations (each configuration pays for its own "
        "garbage; no full collection of all four configurations' states lands in one of "
        "them). Besides "
        "`apply_event`, the work the handler does around it is timed apart: the facts' JSON "
        "round trip of each customer of a batch (what save and load do) and the recipient "
        "snapshot of each message request. Upkeep on runs twice: with the known customers "
        "never decided (each decided in full, every segment, on its first event) and with them "
        "decided when first met, outside the timing, as the database runs seed them.",
        f"- **End to end**: the event run of section 6 ({number(plan['events'])} events, "
        f"{number(plan['customers'])} customers, 90 % of them seeded, `handle_events` with the "
        "real unit of work, batches of 500, decode + handle + commit timed, cold start "
        f"excluded), upkeep off and on, {_runs(plan.get('repeats', 1))}, each on a fresh "
        f"database (PostgreSQL: ANALYZEd after {number(plan.get('analyze_after'))} events, as "
        "in section 6, and checkpointed then, so that every measured stretch starts after a "
        "checkpoint). With upkeep on the seeded customers carry the facts upkeep decided for "
        "them at their import "
        "(`seed-customers --facts`: the real `intelligence.refresh` over their traits, with "
        "their segment rows and intel timers), as in a deployment that ran upkeep all along; "
        "with it off they carry none, as such a deployment has. Either way a seeded customer "
        "has no events yet (no profile aggregates, score or windows), and the customers new to "
        "the stream are decided in full on their first event. Also the CPU time the journey "
        "process used per event over the same batches: less disturbed than events/s when "
        "other processes load the machine.",
        "",
    ]
    rows: list[list[str]] = []
    cpu_summary = summary.get("cpu") or {}
    for key, label in (
        (
            "apply",
            "Pure CPU: `apply_event`, six journeys, known customers never decided (each decided "
            "in full on its first event), µs per event",
        ),
        (
            "apply_decided",
            "Pure CPU: the same, known customers already decided (band, stage and segments "
            "stored, as the database runs seed them): only what an event touches is decided "
            "again, µs per event",
        ),
        (
            "total",
            "Pure CPU: `apply_event` + the handler's per-customer work (facts JSON round trip, "
            "recipient snapshots), known customers never decided, µs per event",
        ),
        (
            "total_decided",
            "Pure CPU: the same, known customers already decided, µs per event",
        ),
    ):
        s = cpu_summary.get(key)
        if s:
            rows.append(
                [
                    label,
                    _us(s["off_us"]),
                    _us(s["on_us"]),
                    f"{_us(s['us_per_event'])} µs ({_added_share(s['share'])})",
                    "—",
                    "—",
                ]
            )
    alone = (cpu.get("added") or {}).get("apply_no_journeys")
    if alone:
        rows.append(
            [
                "Pure CPU: `apply_event` with no journey (the upkeep alone), µs per event",
                _us(alone["off_us"]),
                _us(alone["on_us"]),
                f"{_us(alone['us_per_event'])} µs ({_added_share(alone['share'])})",
                "—",
                "—",
            ]
        )
    for kind, label in DATABASES:
        s = (summary.get("e2e") or {}).get(kind)
        if not s:
            continue
        rows.append(
            [
                f"{label}, end to end: events/s (µs per event)",
                f"{number(s['off_events_per_s'])} ({_us(s['off_us'])})",
                f"{number(s['on_events_per_s'])} ({_us(s['on_us'])})",
                f"{_us(s['us_per_event'])} µs ({_added_share(s['share'])})",
                f"< +{target:.0%}",
                met(s["met"]),
            ]
        )
        c = s.get("cpu") or {}
        if c.get("share") is not None:
            rows.append(
                [
                    f"{label}, end to end: CPU of the journey process, µs per event "
                    + (
                        "(aiosqlite's thread included)"
                        if kind == "sqlite"
                        else "(the server's not included)"
                    ),
                    _us(c["off_us"]),
                    _us(c["on_us"]),
                    f"{_us(c['us_per_event'])} µs ({_added_share(c['share'])})",
                    f"< +{target:.0%}",
                    met(c["share"] < target),
                ]
            )
    out += table(["measurement", "upkeep off", "upkeep on", "added", "target", "met?"], rows)
    spread = [
        f"{label} off {', '.join(number(x) for x in runs['off']['runs_events_per_s'])}; "
        f"on {', '.join(number(x) for x in runs['on']['runs_events_per_s'])}"
        for kind, label in DATABASES
        if (runs := (i.get("e2e") or {}).get(kind))
        and all("runs_events_per_s" in (runs.get(x) or {}) for x in ("off", "on"))
    ]
    if spread:
        out += ["Every end-to-end run, events/s in run order: " + " — ".join(spread) + ".", ""]
    flags = [r[-1] for r in rows if r[-1] != "—"]
    if flags:
        verdict = "met" if all(f == "**yes**" for f in flags) else "**not met**"
        out += [
            f"Target (upkeep adds under {target:.0%} to the journey engine's per-event cost, "
            "end to end on each database, by events/s and by CPU): "
            + verdict
            + ("." if verdict == "met" else " — see where the time goes below."),
            "",
            "The pure-CPU rows carry no target: they compare upkeep with `apply_event` alone (or "
            "with it and the handler's per-customer work), without decoding, the database or "
            "the commit that make up the engine's per-event cost. They show what upkeep itself "
            "costs and where that time goes (below).",
            "",
        ]
    out += _intel_noise(i)
    out += _intel_volume(cpu)
    out += _intel_breakdown(cpu)
    out += _intel_cprofile(cpu)
    out += _intel_e2e_steps(summary.get("e2e") or {})
    return out


def _intel_noise(i: dict[str, Any]) -> list[str]:
    foreign = [
        run.get("foreign_cpu")
        for runs in (i.get("e2e") or {}).values()
        for run in runs.values()
        if run.get("foreign_cpu") is not None
    ]
    cpu = i.get("cpu") or {}
    if cpu.get("foreign_cpu") is not None:
        foreign.append(cpu["foreign_cpu"])
    if not foreign:
        return []
    worst = max(foreign)
    flag = " (**noisy**: compare with care)" if worst > NOISY else ""
    return [f"Other processes used at most {worst:g} cores during these measurements{flag}.", ""]


def _intel_volume(cpu: dict[str, Any]) -> list[str]:
    on = (cpu.get("configs") or {}).get("journeys-on")
    off = (cpu.get("configs") or {}).get("journeys-off")
    if not on:
        return []
    per = on["per_1000_events"]
    derived = ", ".join(f"{kind} {n:g}" for kind, n in per["derived"].items()) or "none"
    size = on.get("facts_json_bytes") or {}
    size_off = (off or {}).get("facts_json_bytes") or {}
    mix = ", ".join(f"{kind} {share:.1%}" for kind, share in (cpu.get("event_mix") or {}).items())
    first = on.get("customers")
    events = cpu.get("events")
    firsts = (
        [
            f"{number(first)} customers appear in the {number(events)} events: "
            f"{first / events:.0%} of the events are a customer's first, which decides every "
            "segment when the customer was never decided (the rows 'known customers never "
            "decided', and customers new to the stream); the others decide only the segments "
            "whose inputs the event touched.",
            "",
        ]
        if first and events
        else []
    )
    return [
        *([f"The stream's event types: {mix}.", ""] if mix else []),
        *firsts,
        f"With upkeep on, per 1,000 events of the stream: derived events {derived}; orders "
        f"recorded {per['orders']:g}; message requests {per['messages']:g} (off: "
        f"{(off or {}).get('per_1000_events', {}).get('messages', '—')}); runs entered "
        f"{per['runs_entered']:g}. A customer's facts as JSON: {number(size.get('mean'))} bytes "
        f"on average, {number(size.get('max'))} at most (off: {number(size_off.get('mean'))}).",
        "",
    ]


def _intel_breakdown(cpu: dict[str, Any]) -> list[str]:
    b = cpu.get("breakdown")
    if not b or not b.get("parts"):
        return []
    called = {label: p for label, p in b["parts"].items() if p["calls_per_event"]}
    idle = [label for label, p in b["parts"].items() if not p["calls_per_event"]]
    parts = called
    upkeep = sum(p["us_per_event"] for p in parts.values())
    off = ((cpu.get("configs") or {}).get("journeys-off") or {}).get("apply_us_per_event")
    rows = [
        [
            label,
            number(p["us_per_event"], 1),
            number(p["calls_per_event"], 2),
            percent(p["us_per_event"] / upkeep if upkeep else None),
        ]
        for label, p in parts.items()
    ]
    rows.append(["**all upkeep functions**", f"**{number(upkeep, 1)}**", "", "100%"])
    gone = b.get("not_found") or []
    missing = []
    if idle:
        missing += [f"Wrapped but not called by this version of the code: {', '.join(idle)}."]
    if gone:
        missing += [f"Not in this version of the code: {', '.join(f'`{g}`' for g in gone)}."]
    if missing:
        missing.append("")
    return [
        "### Where the added CPU goes",
        "",
        f"Upkeep on once more (known customers already decided, as in the database runs), "
        f"{number(b['events'])} events, each upkeep function wrapped "
        "(exclusive time: its own, the wrapped functions it calls not included; calls per event "
        "include those for derived events). `apply_event` took "
        f"{number(b['apply_us_per_event'], 1)} µs per event so instrumented (upkeep off, not "
        f'instrumented: {number(off, 1)}). "derived events: applied" is `_follow`: the engine '
        "applying the band, stage and segment events to the customer's journeys (their own "
        "upkeep calls are in the other rows).",
        "",
        *table(["upkeep function", "µs per event", "calls per event", "share"], rows),
        *missing,
    ]


def _intel_cprofile(cpu: dict[str, Any]) -> list[str]:
    c = cpu.get("cprofile")
    if not c or not c.get("functions"):
        return []
    rows = [
        [
            f"`{f['function']}`",
            number(f["us_per_event"], 1),
            number(f["calls_per_event"], 1),
            percent(f["share_of_added"]),
        ]
        for f in c["functions"][:INTEL_TOP]
    ]
    files = [
        [f"`{f['file']}`", number(f["us_per_event"], 1), percent(f["share_of_added"])]
        for f in c["files"][:INTEL_TOP]
    ]
    us = c["us_per_event"]
    return [
        f"cProfile of both configurations (upkeep on: known customers already decided) over "
        f"the first {number(c['events'])} events "
        f"(interleaved; cProfile inflates every call: {number(us['off'], 1)} → "
        f"{number(us['on'], 1)} µs per event under it): the functions whose own time (tottime) "
        "grew most with upkeep on, and the same by file.",
        "",
        *table(
            ["function (own time)", "added µs per event", "added calls per event", "share"], rows
        ),
        *table(["file", "added µs per event", "share"], files),
    ]


def _intel_e2e_steps(e2e: dict[str, Any]) -> list[str]:
    kinds = [(k, label) for k, label in DATABASES if e2e.get(k)]
    if not kinds:
        return []
    out = [
        "### End to end: what upkeep adds per step and per statement",
        "",
        "µs per event, upkeep off → on, each step of a batch as section 6 splits it (whole "
        "stream; orders = `record_orders`, members = `record_membership`), largest addition "
        "first.",
        "",
    ]
    steps: list[str] = []
    for kind, _ in kinds:
        for name in e2e[kind].get("steps", {}):
            if name not in steps:
                steps.append(name)
    rows = [
        [
            step,
            *(
                f"{_us(s['off'])} → {_us(s['on'])} ({_signed(s['added'])})"
                if (s := e2e[kind].get("steps", {}).get(step))
                else "—"
                for kind, _ in kinds
            ),
        ]
        for step in steps
    ]
    out += table(["step", *(label for _, label in kinds)], rows)
    statements: list[str] = []
    for kind, _ in kinds:
        for name, s in e2e[kind].get("statements", {}).items():
            if abs(s["added"]) >= 0.5 and name not in statements:
                statements.append(name)
    if statements:
        rows = [
            [
                f"`{name}`",
                *(
                    f"{_us(s['off'])} → {_us(s['on'])} ({_signed(s['added'])})"
                    if (s := e2e[kind].get("statements", {}).get(name))
                    else "—"
                    for kind, _ in kinds
                ),
            ]
            for name in statements[: 2 * INTEL_TOP]
        ]
        out += [
            "SQL statements whose time per event changed by 0.5 µs or more (after the cold "
            "start), off → on:",
            "",
            *table(["statement", *(label for _, label in kinds)], rows),
        ]
    return out


def _signed(value: float) -> str:
    return f"+{value:,.1f}" if value >= 0 else f"{value:,.1f}"


# ── Backfill ──────────────────────────────────────────────────────────────────────────────────

_BACKFILL_RUNS = (
    ("in_order", "File in `occurred_at` order (streamed: published while validated)"),
    ("shuffled", "The same events shuffled (sorted through temporary files first)"),
)


def render_backfill(b: dict[str, Any]) -> list[str]:
    plan = b["plan"]
    runs = b.get("runs", {})
    target = b.get("target_events_per_s", 50_000)
    out = [
        "## 10. Backfill: `ciclo import` into the embedded bus (`python -m bench --only backfill`)",
        "",
        f"Measured {b.get('date', '?')} on {_machine(b.get('machine'))}. The real command "
        "(`python -m services.cli import FILE --quiet`, what `ciclo import` runs; `--jobs` at its "
        "default, one validating process per core for files over 8 MiB) in a fresh process on a "
        "fresh data directory (SQLite state, the embedded SQLite bus), over a generated JSONL "
        f"file of {plan['events']:,} storefront events of {plan['customers']:,} customers over "
        "the past year (`bench/backfill.py`: 10 % signups with an email, 10 % orders, 10 % cart "
        "updates, 30 % page views, 40 % product views), every event validated by the catalogue "
        "as the API validates it. Events/s: the tool's own summary line (events imported ÷ the "
        "seconds of the import); the whole command's wall time and CPU (its validating "
        "processes included) besides.",
        "",
    ]
    rows = []
    for key, label in _BACKFILL_RUNS:
        run = runs.get(key)
        if not run:
            continue
        headline = key == "in_order"
        rate = number(run.get("events_per_s"))
        rows.append(
            [
                label,
                f"**{rate}**" if headline else rate,
                f"{number(run.get('wall_seconds'), 1)} ({number(run.get('wall_events_per_s'))})",
                number(run.get("cpu_us_per_event"), 1),
                f"{number(run.get('file_bytes', 0) / 1e6, 1)} MB",
                f"≥ {target:,}" if headline else "—",
                met(b.get("met")) if headline else "—",
            ]
        )
    out += table(
        [
            "file",
            "events/s",
            "whole command: wall s (events/s)",
            "CPU µs per event",
            "size",
            "target",
            "met?",
        ],
        rows,
    )
    shuffled = runs.get("shuffled", {})
    if shuffled:
        out += [
            f"Last line of the shuffled run: `{shuffled.get('summary', '')}`. A shuffled file is "
            "validated whole before its first event can be published, so the two costs add up "
            "(docs/ingest-import.md, Throughput).",
            "",
        ]
    return out
