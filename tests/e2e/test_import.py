"""A backfill into the running system: history builds profiles, sends nothing; live still sends."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.fixtures.processes import REPO, CicloProcess, ciclo_env

pytestmark = pytest.mark.slow

HISTORY = 30
IMPORT = "from services.ingest.import_cli import import_events; import_events()"


def sink(base: str, admin_key: str) -> list[dict[str, Any]]:
    page = httpx.get(
        f"{base}/v1/sink/messages",
        params={"limit": 1000},
        headers={"Authorization": f"Bearer {admin_key}"},
        timeout=10,
    ).json()
    messages: list[dict[str, Any]] = page["messages"]
    return messages


def query(data: Path, sql: str) -> Any:
    with sqlite3.connect(data / "ciclo.db") as db:
        return db.execute(sql).fetchall()


def processed_imports(data: Path) -> int:
    """Imported events the journey service has handled (their ids are derived: ``imp_…``)."""
    rows = query(data, "SELECT count(*) FROM journey_processed_events WHERE event_id LIKE 'imp_%'")
    return int(rows[0][0])


def wait_for(predicate: Any, *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_imported_signups_build_profiles_but_only_a_live_signup_is_welcomed(
    tmp_path: Path, processes: list[CicloProcess]
) -> None:
    data = tmp_path / "data"
    env = ciclo_env(CICLO_DATA_DIR=str(data))
    app = CicloProcess(["run"], env=env, log_dir=tmp_path).start()
    processes.append(app)
    keys = app.demo_keys()

    history = tmp_path / "signups.jsonl"
    history.write_bytes(
        b"".join(
            orjson.dumps(
                {
                    "type": "signup",
                    "customer_id": f"old{i}",
                    "occurred_at": f"2025-03-{i % 28 + 1:02d}T10:00:00+01:00",
                    "traits": {"email": f"old{i}@example.com", "first_name": "Old"},
                }
            )
            + b"\n"
            for i in range(HISTORY)
        )
    )
    # The import writes to the bus file while `ciclo run` consumes it (SQLite WAL).
    done = subprocess.run(
        [sys.executable, "-c", IMPORT, str(history), "--quiet"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"imported {HISTORY} ({HISTORY} historical, 0 live), rejected 0" in done.stdout
    assert "cut-off " in done.stderr

    live = httpx.post(
        f"{app.url}/v1/events",
        headers={"Authorization": f"Bearer {keys['ingest']}"},
        json={"type": "signup", "customer_id": "new", "traits": {"email": "new@example.com"}},
    )
    assert live.status_code == 202, live.text

    [welcome] = wait_for(lambda: sink(app.url, keys["admin"]), timeout=30, what="a welcome email")
    assert welcome["to"] == "new@example.com"
    # Every imported signup was handled: a profile each, and not one journey entered for them.
    wait_for(
        lambda: processed_imports(data) == HISTORY,
        timeout=30,
        what="the journey service to handle the whole history",
    )
    profiles = dict(query(data, "SELECT customer_id, traits FROM journey_customers"))
    assert len(profiles) == HISTORY + 1
    assert orjson.loads(profiles["old7"])["email"] == "old7@example.com"
    assert query(
        data, "SELECT customer_id FROM journey_instances WHERE journey_id = 'welcome'"
    ) == [("new",)]
    time.sleep(1.0)  # a message requested for history would reach the sink by now
    assert [m["to"] for m in sink(app.url, keys["admin"])] == ["new@example.com"]
    assert app.stop() == 0
