"""The dispatch and prediction sections of ``bench/results.md`` (``bench/dispatch.py``,
``bench/predict.py``): each carries its own date, machine and plan, since ``--only`` runs them
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
        f"`CICLO_SEND_CONCURRENCY` = {' or '.join(map(str, concurrencies))}, the rest default "
        "(batches of 1,000 fail on SQLite: `Suppressions.find_many` ORs one clause per "
        "address, deeper than SQLite's limit of 1,000, and the consumer then retries the batch "
        "one message at a time). "
        "Messages/s = messages recorded as sent ÷ time, from the ledger's own timestamps, "
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
