"""A bad setting stops a command at start with one line that names the variable to fix, as
docs/operations.md promises ("a configuration error is printed at start and the process exits"),
rather than a traceback an operator has to read from the bottom."""

from __future__ import annotations

import subprocess

import pytest

from tests.fixtures.processes import CICLO, REPO, ciclo_env

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
    env = ciclo_env(**{**DISTRIBUTED, variable: value})
    done = subprocess.run(
        [*CICLO, *command],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert f"Error: configuration: {variable}" in done.stderr, done.stderr
