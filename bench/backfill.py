"""``ciclo import`` into the embedded bus: events/s of the backfill, as a user runs it.

Each run is the real command (``python -m services.cli import FILE --quiet``, what ``ciclo import``
runs) in a fresh process on a fresh data directory (SQLite state, the embedded SQLite bus, the
'demo' workspace created first by ``ciclo workspaces create``), over a generated file of mixed
storefront events: 10 % signups with an email, 10 % orders, 10 % cart updates, 30 % page views,
40 % product views, over 100,000 customers and the year before the run. Two files: one already in
``occurred_at`` order (the common case: an export sorted by time, streamed, published while
validated) and the same events shuffled (sorted by the tool through temporary files first).

Measured: the tool's own rate (its summary line: events imported ÷ the seconds of the
import), the wall time of the whole command (start-up included), and the CPU time of the command
and its validating processes (``--jobs``: the default, one per core for files over 8 MiB).

``python -m bench.backfill --events N`` prints the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from bench.processes import PYTHON, REPO

TARGET = 50_000  # events/s into the embedded bus (the ingest issue)
_SUMMARY = re.compile(
    r"read ([\d,]+) line\(s\): imported ([\d,]+) .*rejected ([\d,]+) — in ([\d.]+) s "
    r"\(([\d,]+) events/s"
)


@dataclass(frozen=True)
class BackfillPlan:
    events: int = 500_000
    customers: int = 100_000
    seed: int = 7


def _event(rng: random.Random, index: int, moment: datetime, customers: int) -> dict[str, Any]:
    customer = f"c{rng.randrange(customers)}"
    at = moment.isoformat().replace("+00:00", "Z")
    roll = rng.random()
    if roll < 0.10:
        return {
            "type": "signup",
            "customer_id": customer,
            "occurred_at": at,
            "traits": {"email": f"{customer}@example.com", "first_name": "Ana"},
        }
    if roll < 0.20:
        price = f"{rng.randrange(500, 20_000) / 100:.2f}"
        return {
            "type": "order_completed",
            "customer_id": customer,
            "occurred_at": at,
            "properties": {
                "order_id": f"o{index}",
                "total": price,
                "currency": "EUR",
                "items": [{"product_id": f"p{rng.randrange(500)}", "price": price, "quantity": 1}],
            },
        }
    if roll < 0.30:
        return {
            "type": "cart_updated",
            "customer_id": customer,
            "occurred_at": at,
            "properties": {
                "cart_id": f"cart-{customer}",
                "items": [
                    {"product_id": f"p{rng.randrange(500)}", "price": "19.90", "quantity": 1}
                ],
            },
        }
    if roll < 0.60:
        return {
            "type": "page_viewed",
            "customer_id": customer,
            "occurred_at": at,
            "properties": {"url": f"https://shop.example.com/pages/{rng.randrange(50)}"},
        }
    return {
        "type": "product_viewed",
        "customer_id": customer,
        "occurred_at": at,
        "properties": {"product_id": f"p{rng.randrange(500)}"},
    }


def generate(path: Path, plan: BackfillPlan, *, shuffled: bool) -> int:
    """Write the plan's events as JSONL (in ``occurred_at`` order, or shuffled); return bytes."""
    rng = random.Random(plan.seed)
    start = datetime.now(UTC) - timedelta(days=365)
    step = timedelta(days=364) / plan.events
    lines = [
        orjson.dumps(_event(rng, i, start + step * i, plan.customers)) for i in range(plan.events)
    ]
    if shuffled:
        random.Random(plan.seed + 1).shuffle(lines)
    data = b"\n".join(lines) + b"\n"
    path.write_bytes(data)
    return len(data)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_import(path: Path, work_dir: Path) -> dict[str, Any]:
    """One ``ciclo import`` of ``path`` on a fresh data directory."""
    data_dir = work_dir / f"data-{path.stem}"
    shutil.rmtree(data_dir, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CICLO_")}
    env |= {"CICLO_DATA_DIR": str(data_dir), "CICLO_LOG_LEVEL": "WARNING"}
    cli = [PYTHON, "-m", "services.cli"]
    subprocess.run(
        [*cli, "workspaces", "create", "demo"], env=env, cwd=REPO, check=True, capture_output=True
    )
    cpu_before = _children_cpu()
    begin = time.monotonic()
    done = subprocess.run(
        [*cli, "import", str(path), "--quiet"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.monotonic() - begin
    cpu = _children_cpu() - cpu_before
    match = _SUMMARY.search(done.stdout)
    if done.returncode != 0 or match is None:
        raise RuntimeError(
            f"ciclo import exited with {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
    read, imported, rejected = (int(g.replace(",", "")) for g in match.groups()[:3])
    seconds, rate = float(match.group(4)), int(match.group(5).replace(",", ""))
    shutil.rmtree(data_dir, ignore_errors=True)
    return {
        "read": read,
        "imported": imported,
        "rejected": rejected,
        "tool_seconds": seconds,
        "events_per_s": rate,
        "wall_seconds": round(wall, 2),
        "wall_events_per_s": round(imported / wall, 1),
        "cpu_seconds": round(cpu, 2),
        "cpu_us_per_event": round(cpu / imported * 1e6, 1) if imported else None,
        "summary": done.stdout.strip().splitlines()[-1],
    }


def measure(plan: BackfillPlan, work_dir: Path) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    for name, shuffled in (("in_order", False), ("shuffled", True)):
        path = work_dir / f"backfill-{name}.jsonl"
        size = generate(path, plan, shuffled=shuffled)
        runs[name] = run_import(path, work_dir) | {"file_bytes": size}
        path.unlink()
    headline = runs["in_order"]["events_per_s"]
    return {
        "plan": asdict(plan),
        "runs": runs,
        "target_events_per_s": TARGET,
        "met": headline is not None and headline >= TARGET,
        "cpus": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    default = BackfillPlan()
    parser = argparse.ArgumentParser(prog="python -m bench.backfill", description=__doc__)
    parser.add_argument("--events", type=int, default=default.events)
    parser.add_argument("--customers", type=int, default=default.customers)
    args = parser.parse_args(argv)
    plan = BackfillPlan(events=args.events, customers=args.customers)
    work_dir = Path(tempfile.mkdtemp(prefix="ciclo-backfill-"))
    try:
        print(json.dumps(measure(plan, work_dir), indent=2))
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
