"""The three services as separate processes over a Kafka-protocol broker and PostgreSQL, sending
through a fake SendGrid over real HTTP — the distributed mode, set up the way an SRE would."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.e2e.helpers import assert_each_signup_sent_once, post_signups
from tests.fakes.sendgrid import FakeSendGrid
from tests.fixtures.processes import CicloProcess, ciclo, ciclo_env
from tests.fixtures.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.postgres]


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


async def start_services(
    env: dict[str, str], tmp_path: Path, processes: list[CicloProcess], *names: str
) -> list[CicloProcess]:
    """``ciclo serve NAME`` for each name (by default ingest, journey and dispatch), each ready;
    every one is in ``processes`` before it starts, so the fixture stops it whatever happens."""
    started = []
    for name in names or ("ingest", "journey", "dispatch"):
        process = CicloProcess(["serve", name], env=env, log_dir=tmp_path)
        processes.append(process)
        started.append(await asyncio.to_thread(process.start))
    return started


async def test_signup_to_sendgrid_across_three_processes(
    tmp_path: Path,
    processes: list[CicloProcess],
    fresh_broker: str,
    postgres_url: str,
    sendgrid: tuple[FakeSendGrid, str],
) -> None:
    fake, sendgrid_url = sendgrid
    env = distributed_env(fresh_broker, postgres_url, sendgrid_url)
    write_key = await asyncio.to_thread(setup_stack, env)
    ingest, _, _ = await start_services(env, tmp_path, processes)

    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"{ingest.url}/v1/events",
            headers={"Authorization": f"Bearer {write_key}"},
            json={
                "type": "signup",
                "customer_id": "c1",
                "traits": {"email": "ana@example.com", "first_name": "Ana"},
            },
        )
    assert answer.status_code == 202, answer.text

    await wait_for(lambda: fake.accepted, timeout=60, what="the welcome email at SendGrid")
    [mail] = fake.accepted
    assert mail["personalizations"][0]["to"] == [{"email": "ana@example.com"}]
    assert mail["subject"] == "Welcome, Ana!"
    message_id = mail["custom_args"]["ciclo_message_id"]

    # The outcome travels back through the events topic and the journey service records it.
    sql = f"SELECT count(*) FROM journey_processed_events WHERE event_id = '{message_id}:sent'"
    await wait_for(lambda: count(postgres_url, sql), timeout=30, what="message_sent at journey")
    for p in processes:
        assert await asyncio.to_thread(p.stop) == 0, p.output()


async def test_journey_killed_mid_stream_loses_nothing_and_sends_nothing_twice(
    tmp_path: Path,
    processes: list[CicloProcess],
    fresh_broker: str,
    postgres_url: str,
    sendgrid: tuple[FakeSendGrid, str],
) -> None:
    fake, sendgrid_url = sendgrid
    # One event per transaction keeps the journey slower than ingest, so the kill lands mid-way.
    env = distributed_env(fresh_broker, postgres_url, sendgrid_url, CICLO_JOURNEY_BATCH_SIZE="1")
    write_key = await asyncio.to_thread(setup_stack, env)
    ingest, journey, _ = await start_services(env, tmp_path, processes)
    total = 300

    assert await asyncio.to_thread(post_signups, ingest.url, write_key, total) == [202] * total
    journey.kill()
    entered = await count(
        postgres_url, "SELECT count(*) FROM journey_instances WHERE journey_id = 'welcome'"
    )
    assert entered < total, "the kill came after everything was processed: nothing proven"

    restarted = CicloProcess(["serve", "journey"], env=env, log_dir=tmp_path)
    processes.append(await asyncio.to_thread(restarted.start))
    await assert_each_signup_sent_once(fake, total)
    assert (
        await count(
            postgres_url, "SELECT count(*) FROM journey_instances WHERE journey_id = 'welcome'"
        )
        == total
    )
