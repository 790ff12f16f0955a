"""The distributed mode as an SRE sets it up: the three services as separate processes over a
Kafka-protocol broker and PostgreSQL, sending through a fake SendGrid over real HTTP."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from tests.fakes.sendgrid import FakeSendGrid
from tests.fixtures.processes import CicloProcess, ciclo, ciclo_env


async def count(url: str, sql: str) -> int:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


def distributed_env(broker: str, database: str, sendgrid_url: str, **extra: str) -> dict[str, str]:
    return ciclo_env(
        CICLO_DATABASE_URL=database,
        CICLO_BUS_URL=f"kafka://{broker}",
        CICLO_KAFKA_IDEMPOTENCE="false",  # the test broker has no idempotent producer
        CICLO_KAFKA_SESSION_TIMEOUT_MS="1000",
        CICLO_KAFKA_HEARTBEAT_INTERVAL_MS="100",
        CICLO_BUS_PARTITIONS="4",
        CICLO_EMAIL_PROVIDER="sendgrid",
        CICLO_SENDGRID_API_KEY="SG.test-key",
        CICLO_SENDGRID_BASE_URL=sendgrid_url,
        CICLO_AUTO_MIGRATE="false",  # the migration job does it, as in compose and Helm
        CICLO_DEMO="false",
        **extra,
    )


def setup_stack(env: dict[str, str]) -> str:
    """What the one-shot job and the operator do before the services start; returns a write key."""
    ciclo("migrate", env=env)
    ciclo("topics", "create", env=env)
    ciclo("workspaces", "create", "shop", env=env)
    return ciclo("keys", "create", "--workspace", "shop", "--scope", "ingest", env=env).strip()


@dataclass
class Stack:
    """One test's broker, database, fake SendGrid and the processes it starts (the ``stack``
    fixture stops them whatever happens)."""

    tmp_path: Path
    processes: list[CicloProcess]
    broker: str
    database: str
    fake: FakeSendGrid
    sendgrid_url: str

    async def prepare(self, **extra: str) -> tuple[dict[str, str], str]:
        """The services' environment (``extra`` settings added) and a write key, after the
        migration job and the operator's set-up have run."""
        env = distributed_env(self.broker, self.database, self.sendgrid_url, **extra)
        return env, await asyncio.to_thread(setup_stack, env)

    async def start(self, env: dict[str, str], *names: str) -> list[CicloProcess]:
        """``ciclo serve NAME`` for each name (by default ingest, journey and dispatch), each
        ready; every one is in ``processes`` before it starts."""
        started = []
        for name in names or ("ingest", "journey", "dispatch"):
            process = CicloProcess(["serve", name], env=env, log_dir=self.tmp_path)
            self.processes.append(process)
            started.append(await asyncio.to_thread(process.start))
        return started

    async def count(self, sql: str) -> int:
        return await count(self.database, sql)
