"""Migrations as the operator meets them in the distributed mode: ``ciclo migrate`` run again, and
a service started on a database whose schema is older (the migration job did not run) or newer
(a later version's migration, during a rolling upgrade) than its own code."""

from __future__ import annotations

import asyncio
import subprocess

import asyncpg
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from services.components import COMPONENTS
from shared.db.engine import create_engine
from tests.e2e.stack import Stack
from tests.fixtures.processes import CICLO, REPO, ciclo

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.postgres]

JOURNEY = COMPONENTS["journey"]


async def downgrade_journey(url: str) -> str:
    """Take the journey chain one revision back; return that revision."""
    script = ScriptDirectory.from_config(JOURNEY.config())
    head = script.get_revision(script.get_current_head())
    assert head is not None and isinstance(head.down_revision, str)
    previous = head.down_revision
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: command.downgrade(JOURNEY.config(c), previous))
    finally:
        await engine.dispose()
    return previous


async def set_journey_revision(url: str, revision: str) -> None:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"UPDATE {JOURNEY.version_table} SET version_num = $1", revision)
    finally:
        await conn.close()


async def test_a_service_refuses_an_older_schema_and_runs_on_a_newer_one(stack: Stack) -> None:
    env, _ = await stack.prepare()
    await asyncio.to_thread(ciclo, "migrate", env=env)  # twice: nothing to do, no error

    previous = await downgrade_journey(stack.database)
    try:
        done = await asyncio.to_thread(
            subprocess.run,
            [*CICLO, "serve", "journey"],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError("journey started on a schema older than its code") from exc
    assert done.returncode != 0
    assert f"journey at {previous}" in done.stderr, done.stderr
    assert "ciclo migrate" in done.stderr

    # The migration job runs; then a later version migrates further and this one still runs.
    await asyncio.to_thread(ciclo, "migrate", env=env)
    await set_journey_revision(stack.database, "j9999_from_a_later_version")
    [journey] = await stack.start(env, "journey")
    assert await asyncio.to_thread(journey.stop) == 0, journey.output()
