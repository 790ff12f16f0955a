"""RFM and purchase-prediction benchmark, in process: ``python -m bench.predict``.

One workspace of N customers (100,000 by default) is simulated from the models themselves:
BG/NBD histories with first orders spread over two years (r = 0.4, alpha = 40 days, a = 0.7,
b = 3) and Gamma-Gamma order values (p = 6.25, q = 3.74, v = 40: a mean order of about 91).
Then, timed stage by stage on one core (the process is pinned to one CPU for the run):

1. RFM scores and groups from the profile aggregates (recency, order count, revenue);
2. the BG/NBD fit (with its covariance and 90-day forecast check);
3. the Gamma-Gamma fit;
4. the per-customer predictions: P(alive), expected purchases in 30 and 90 days, expected order
   value and a 365-day CLV (13 monthly steps);
5. the fit-quality report (repeat histogram against the model).

The target is RFM + both fits + predictions under 60 s. The figures also show how close the
fits came to the parameters the data were drawn from.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from services.journey.domain.predictions import (
    PurchaseHistory,
    fit_bgnbd,
    fit_gamma_gamma,
    fit_quality,
    predict,
    simulate_bgnbd,
    simulate_gamma_gamma,
)
from services.journey.domain.rfm import GROUPS, score_rfm

TARGET_S = 60.0
TRUE_BGNBD = {"r": 0.4, "alpha": 40.0, "a": 0.7, "b": 3.0}
TRUE_GG = {"p": 6.25, "q": 3.74, "v": 40.0}
T = TypeVar("T")


@contextmanager
def one_core() -> Iterator[int | None]:
    """Pin every thread of this process to one CPU (numpy's BLAS pool included: affinity is per
    thread on Linux) for the measurement, and give each its old affinity back."""
    tasks = Path("/proc/self/task")
    if not hasattr(os, "sched_setaffinity") or not tasks.is_dir():
        yield None
        return
    cpu = min(os.sched_getaffinity(0))
    before: dict[int, set[int]] = {}
    for entry in tasks.iterdir():
        tid = int(entry.name)
        try:
            before[tid] = os.sched_getaffinity(tid)
            os.sched_setaffinity(tid, {cpu})
        except OSError:  # the thread ended meanwhile
            continue
    try:
        yield cpu
    finally:
        for tid, cpus in before.items():
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:
                continue


def _timed(stages: dict[str, dict[str, float]], name: str, body: Callable[[], T]) -> T:
    wall, cpu = time.perf_counter(), time.process_time()
    result = body()
    stages[name] = {
        "wall_s": round(time.perf_counter() - wall, 3),
        "cpu_s": round(time.process_time() - cpu, 3),
    }
    return result


def run(n: int = 100_000, *, seed: int = 2024) -> dict[str, Any]:
    """Simulate ``n`` customers, time every stage on one core and return the figures."""
    rng = np.random.default_rng(seed)
    ages = rng.uniform(1.0, 730.0, n)
    r, alpha, a, b = (TRUE_BGNBD[k] for k in ("r", "alpha", "a", "b"))
    p, q, v = (TRUE_GG[k] for k in ("p", "q", "v"))
    sim = simulate_bgnbd(r, alpha, a, b, n, ages, rng)
    monetary = simulate_gamma_gamma(p, q, v, sim.x, rng)
    first_order = simulate_gamma_gamma(p, q, v, np.ones(n), rng)
    history = PurchaseHistory(x=sim.x, t_x=sim.t_x, T=sim.T, monetary=monetary)

    stages: dict[str, dict[str, float]] = {}
    with one_core() as cpu:
        scores = _timed(
            stages,
            "rfm",
            lambda: score_rfm(
                recency_days=sim.T - sim.t_x,
                order_count=sim.x + 1,
                revenue=first_order + sim.x * monetary,
            ),
        )
        bgnbd = _timed(stages, "bgnbd_fit", lambda: fit_bgnbd(sim.x, sim.t_x, sim.T))
        gg = _timed(stages, "gamma_gamma_fit", lambda: fit_gamma_gamma(sim.x, monetary))
        predictions = _timed(stages, "predictions", lambda: predict(bgnbd, gg, history))
        _timed(stages, "fit_quality", lambda: fit_quality(bgnbd, sim.x, sim.t_x, sim.T))

    measured = ("rfm", "bgnbd_fit", "gamma_gamma_fit", "predictions")
    total = round(sum(stages[s]["wall_s"] for s in measured), 3)
    groups = np.bincount(scores.group[scores.group >= 0], minlength=len(GROUPS)).tolist()
    return {
        "customers": n,
        "with_repeats": int(np.count_nonzero(sim.x)),
        "pinned_cpu": cpu,
        "stages": stages,
        "total_s": total,
        "total_cpu_s": round(sum(stages[s]["cpu_s"] for s in measured), 3),
        "target_s": TARGET_S,
        "met": total < TARGET_S,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "bgnbd": {
            "true": TRUE_BGNBD,
            "fitted": {"r": bgnbd.r, "alpha": bgnbd.alpha, "a": bgnbd.a, "b": bgnbd.b},
            "iterations": bgnbd.iterations,
            "converged": bgnbd.converged,
            "reliable": bgnbd.reliable,
        },
        "gamma_gamma": {
            "true": TRUE_GG,
            "fitted": {"p": gg.p, "q": gg.q, "v": gg.v},
            "iterations": gg.info.iterations,
            "converged": gg.converged,
        },
        "rfm_groups": dict(zip(GROUPS, groups, strict=True)),
        "mean_predicted": {
            "probability_alive": round(float(predictions.probability_alive.mean()), 4),
            "purchases_90d": round(float(predictions.purchases_90d.mean()), 4),
            "clv_365d": round(float(predictions.clv.mean()), 2),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.predict", description=__doc__)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args(argv)
    result = run(args.customers, seed=args.seed)
    print(json.dumps(result, indent=2))
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
