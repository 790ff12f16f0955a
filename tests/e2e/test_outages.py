"""Outages of what the services depend on, in the distributed mode: the database refuses
connections for a while, the broker stops answering. docs/operations.md promises that the services
say so on /readyz and carry on once it is back: nothing lost, nothing sent twice."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.e2e.helpers import post_signups
from tests.e2e.stack import Stack
from tests.e2e.test_journey_waits import CART, cart
from tests.fixtures.broker import paused
from tests.fixtures.processes import CicloProcess
from tests.fixtures.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.postgres]

WAIT = 2  # seconds of the cart journey's quiet spell


def journey_files(tmp_path: Path) -> dict[str, str]:
    """A cart journey that waits WAIT seconds, and its template."""
    journeys = tmp_path / "journeys"
    journeys.mkdir()
    quick = json.loads(json.dumps(CART))
    quick["steps"]["quiet"]["wait_for"]["timeout"] = f"PT{WAIT}S"
    (journeys / "cart.json").write_text(json.dumps(quick))
    template = tmp_path / "templates" / "cart-reminder"
    template.mkdir(parents=True)
    (template / "subject.liquid").write_text("Your cart {{ event.properties.cart_id }}")
    (template / "text.liquid").write_text("Your cart is waiting.")
    (template / "html.liquid").write_text("<p>Your cart is waiting.</p>")
    return {
        "CICLO_JOURNEYS_DIR": str(journeys),
        "CICLO_TEMPLATES_DIR": str(tmp_path / "templates"),
    }


@asynccontextmanager
async def database_down(url: str) -> AsyncIterator[None]:
    """The test's database refuses every connection, and its open ones are cut, until the end of
    the block: what the services see while PostgreSQL restarts or fails over."""
    name = make_url(url).database
    admin_dsn = (
        make_url(url)
        .set(drivername="postgresql", database="postgres")
        .render_as_string(hide_password=False)
    )
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        try:
            yield
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
    finally:
        await admin.close()


async def is_ready(process: CicloProcess) -> bool:
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"{process.url}/readyz", timeout=10)
    return answer.status_code == 200


async def test_timers_due_during_a_database_outage_fire_once_it_is_back(stack: Stack) -> None:
    fake = stack.fake
    env, key = await stack.prepare(**journey_files(stack.tmp_path))
    ingest, journey, dispatch = await stack.start(env)

    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"{ingest.url}/v1/events",
            headers={"Authorization": f"Bearer {key}"},
            json=cart("ana", "A"),
        )
    assert answer.status_code == 202, answer.text
    await wait_for(
        lambda: stack.count("SELECT count(*) FROM journey_timers"),
        timeout=30,
        what="the wait's timer",
    )

    async with database_down(stack.database):
        # The timer comes due while the database is away, and the poller's rounds fail.
        await wait_for(
            lambda: "timer round failed" in journey.output(),
            timeout=30,
            what="a failed timer round",
        )
        await asyncio.sleep(WAIT + 1.0)  # several rounds and idle spells fail meanwhile

    for process in (ingest, journey, dispatch):
        await wait_for(
            lambda process=process: is_ready(process),
            timeout=30,
            what=f"{process.args} ready again",
        )
    await wait_for(lambda: fake.accepted, timeout=30, what="the cart reminder")
    await asyncio.sleep(WAIT)  # a second reminder would come now
    assert [m["subject"] for m in fake.accepted] == ["Your cart A"]


async def test_readyz_answers_503_in_time_while_the_broker_hangs(stack: Stack) -> None:
    env, _ = await stack.prepare()
    [journey] = await stack.start(env, "journey")

    with paused(stack.broker):
        # What the chart's and compose's probes allow: 3 s for an answer.
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"{journey.url}/readyz", timeout=3)
        assert answer.status_code == 503, answer.text
        checks = answer.json()["checks"]
        assert checks["database"] == "ok"
        assert checks["bus"].startswith("error: TimeoutError"), checks
    await wait_for(lambda: is_ready(journey), timeout=30, what="journey ready again")
    assert await asyncio.to_thread(journey.stop) == 0, journey.output()


async def test_events_met_by_a_database_outage_wait_for_it_not_the_dead_letter_topic(
    stack: Stack,
) -> None:
    # One event per transaction keeps the consumer busy when the database goes away.
    env, key = await stack.prepare(CICLO_JOURNEY_BATCH_SIZE="1")
    ingest, journey = await stack.start(env, "ingest", "journey")
    total = 200
    assert await asyncio.to_thread(post_signups, ingest.url, key, total) == [202] * total

    welcomed = "SELECT count(*) FROM journey_instances WHERE journey_id = 'welcome'"
    async with database_down(stack.database):
        await wait_for(
            lambda: "outage while handling" in journey.output(),
            timeout=30,
            what="the consumer waiting out the outage",
        )
        assert await asyncio.to_thread(journey.stop) == 0, journey.output()
        # The relay and the bus stopped too: the batch in hand was given up, not the shutdown.
        assert "shutdown failed" not in journey.output(), journey.output()[-3000:]
    assert await stack.count(welcomed) < total, "all done before the outage: no proof"

    await stack.start(env, "journey")
    await wait_for(
        lambda: stack.count(f"SELECT ({welcomed}) = {total}"),
        timeout=60,
        what="every signup welcomed after the restart",
    )
