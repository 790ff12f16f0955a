"""The whole system in embedded mode, as `make run` starts it: HTTP in, sink message out."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import post_signups
from tests.fixtures.processes import CicloProcess, ciclo, ciclo_env

pytestmark = pytest.mark.slow


def sink_messages(base: str, admin_key: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = 0
    while True:
        page = httpx.get(
            f"{base}/v1/sink/messages",
            params={"after": after, "limit": 1000},
            headers={"Authorization": f"Bearer {admin_key}"},
            timeout=10,
        ).json()
        out.extend(page["messages"])
        if page["next_after"] is None:
            return out
        after = page["next_after"]


def wait_for(predicate: Any, *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_signup_to_welcome_email_in_the_sink(tmp_path: Path, processes: list[CicloProcess]) -> None:
    env = ciclo_env(CICLO_DATA_DIR=str(tmp_path / "data"))
    app = CicloProcess(["run"], env=env, log_dir=tmp_path).start()
    processes.append(app)
    keys = app.demo_keys()

    # The README tour creates its own keys with the CLI while the server runs.
    write_key = ciclo("keys", "create", "--workspace", "demo", "--scope", "ingest", env=env).strip()
    answer = httpx.post(
        f"{app.url}/v1/events",
        headers={"Authorization": f"Bearer {write_key}"},
        json={
            "type": "signup",
            "customer_id": "c1",
            "traits": {"email": "ana@example.com", "first_name": "Ana"},
        },
    )
    assert answer.status_code == 202, answer.text
    event_id = answer.json()["event_id"]

    [message] = wait_for(
        lambda: sink_messages(app.url, keys["admin"]), timeout=20, what="the welcome email"
    )
    assert message["to"] == "ana@example.com"
    assert message["subject"] == "Welcome, Ana!"
    assert "Hi Ana," in message["text"]

    # The same event again (a client retry) changes nothing.
    again = httpx.post(
        f"{app.url}/v1/events",
        headers={"Authorization": f"Bearer {write_key}"},
        json={
            "type": "signup",
            "event_id": event_id,
            "customer_id": "c1",
            "traits": {"email": "ana@example.com"},
        },
    )
    assert again.status_code == 202
    time.sleep(1.0)
    assert len(sink_messages(app.url, keys["admin"])) == 1

    # A write key may not read; no key is 401, not 403.
    forbidden = httpx.get(
        f"{app.url}/v1/sink/messages", headers={"Authorization": f"Bearer {write_key}"}
    )
    assert forbidden.status_code == 403
    assert httpx.get(f"{app.url}/v1/sink/messages").status_code == 401
    assert app.stop() == 0


def test_acknowledged_events_survive_kill_9_exactly_once(
    tmp_path: Path, processes: list[CicloProcess]
) -> None:
    data = tmp_path / "data"
    env = ciclo_env(
        CICLO_DATA_DIR=str(data),
        # One event per transaction keeps processing slower than ingest, so the kill lands mid-way.
        CICLO_JOURNEY_BATCH_SIZE="1",
        CICLO_DISPATCH_BATCH_SIZE="1",
    )
    app = CicloProcess(["run"], env=env, log_dir=tmp_path).start()
    processes.append(app)
    keys = app.demo_keys()
    total = 400

    statuses = post_signups(app.url, keys["ingest"], total)
    assert statuses == [202] * total
    app.kill()

    with sqlite3.connect(data / "ciclo.db") as db:
        delivered_before = db.execute("SELECT count(*) FROM dispatch_sink").fetchone()[0]
    assert delivered_before < total, "the kill came after everything was processed: nothing proven"

    restarted = CicloProcess(["run"], env=env, log_dir=tmp_path).start()
    processes.append(restarted)
    wait_for(
        lambda: len(sink_messages(restarted.url, keys["admin"])) >= total,
        timeout=120,
        what=f"{total} welcome emails",
    )
    time.sleep(1.0)  # anything sent twice would show up now
    messages = sink_messages(restarted.url, keys["admin"])
    assert len(messages) == total
    assert sorted(m["to"] for m in messages) == sorted(f"c{i}@example.com" for i in range(total))
    assert len({m["message_id"] for m in messages}) == total
    assert restarted.stop() == 0
