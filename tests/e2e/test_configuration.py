"""A bad setting stops a command at start with one line that names the variable to fix, as
docs/operations.md promises ("a configuration error is printed at start and the process exits"),
rather than a traceback an operator has to read from the bottom."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from tests.fixtures.processes import ciclo, ciclo_env, run_ciclo

pytestmark = pytest.mark.slow

DISTRIBUTED = {
    "CICLO_DATABASE_URL": "postgresql+asyncpg://ciclo@127.0.0.1:9/ciclo",
    "CICLO_BUS_URL": "kafka://127.0.0.1:9",
    "CICLO_AUTO_MIGRATE": "false",
}


@pytest.mark.parametrize(
    ("command", "variable", "value"),
    [
        (["serve", "journey"], "CICLO_BUS_PARTITIONS", "abc"),
        (["serve", "journey"], "CICLO_JOURNEY_BATCH_SIZE", "0"),
        (["serve", "dispatch"], "CICLO_SEND_CONCURRENCY", "-1"),
        (["serve", "ingest"], "CICLO_DATABASE_URL", "not a url"),
        (["serve", "ingest"], "CICLO_LOG_LEVEL", "LOUD"),
        (["serve", "ingest"], "CICLO_BUS_URL", "http://127.0.0.1:9092"),
        (["migrate"], "CICLO_DATABASE_URL", "not a url"),
        (["migrate"], "CICLO_BUS_PARTITIONS", "abc"),
        (["topics", "create"], "CICLO_BUS_REPLICATION_FACTOR", "many"),
    ],
)
def test_a_bad_value_is_named_at_start(command: list[str], variable: str, value: str) -> None:
    done = run_ciclo(*command, env=ciclo_env(**{**DISTRIBUTED, variable: value}))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert f"Error: configuration: {variable}" in done.stderr, done.stderr


def tables_in(database: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(database)) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows}


@pytest.mark.parametrize(
    "command",
    [
        ["workspaces", "create", "shop"],
        ["keys", "create", "--workspace", "shop", "--scope", "ingest"],
        ["keys", "list", "--workspace", "shop"],
        ["webhooks", "list", "--workspace", "shop"],
        ["import", "--workspace", "shop", "--quiet", "{events}"],
    ],
)
def test_a_key_command_does_not_migrate_when_auto_migrate_is_off(
    tmp_path: Path, command: list[str]
) -> None:
    """Run from a newer image against production (CICLO_AUTO_MIGRATE=false, as in compose and
    Helm), a key command must not upgrade the schema as a side effect: it stops, naming the chain
    behind and asking for ``ciclo migrate``, as ``ciclo serve`` does."""
    data = tmp_path / "data"
    manual = ciclo_env(CICLO_DATA_DIR=str(data), CICLO_AUTO_MIGRATE="false")
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"type": "signup", "customer_id": "c1", "occurred_at": "2025-03-01T10:00:00Z"}\n'
    )
    command = [part.replace("{events}", str(events)) for part in command]
    done = run_ciclo(*command, env=manual)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    # One line (the import first says its cut-off, as it always does).
    lines = [line for line in done.stderr.splitlines() if not line.startswith("cut-off ")]
    assert len(lines) == 1, done.stderr
    assert "tenancy at no revision" in done.stderr, done.stderr
    assert "run `ciclo migrate`" in done.stderr, done.stderr
    assert tables_in(data / "ciclo.db") == set()

    # Once migrated, the same command runs without migrating anything.
    ciclo("migrate", env=manual)
    ciclo("workspaces", "create", "shop", env=manual)
    done = run_ciclo(*command, env=manual)
    assert done.returncode == 0, done.stderr


def test_the_quick_start_creates_keys_before_the_server_ever_ran(tmp_path: Path) -> None:
    """README: ``ciclo keys create`` with the defaults (auto-migrate on) on a fresh data dir."""
    env = ciclo_env(CICLO_DATA_DIR=str(tmp_path / "data"))
    ciclo("workspaces", "create", "demo", env=env)
    key = ciclo("keys", "create", "--workspace", "demo", "--scope", "ingest", env=env).strip()
    assert key.startswith("ciclo_ingest_"), key
    assert "tenancy_api_keys" in tables_in(tmp_path / "data" / "ciclo.db")
