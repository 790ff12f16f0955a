"""SIGTERM under load: each service drains, commits and exits 0; nothing acknowledged is lost and
nothing is sent twice (distributed mode, the way Kubernetes stops pods during a rollout)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import httpx
import pytest

from tests.e2e.helpers import assert_each_signup_sent_once, signup
from tests.e2e.stack import Stack
from tests.fixtures.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.postgres]

TOTAL = 450


class Load:
    """Posts TOTAL distinct signups with 8 clients; a client retries its event (same event_id)
    until it gets 202, as a storefront integration does while ingest restarts."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.key = key
        self.acked = 0
        self._lock = threading.Lock()

    def post(self, i: int) -> None:
        body = signup(i)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                answer = httpx.post(
                    f"{self.url}/v1/events",
                    json=body,
                    headers={"Authorization": f"Bearer {self.key}"},
                    timeout=10,
                )
                if answer.status_code == 202:
                    with self._lock:
                        self.acked += 1
                    return
            except httpx.TransportError:
                pass  # ingest is restarting
            time.sleep(0.05)
        raise AssertionError(f"event {i} was never accepted")

    def run(self) -> None:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(self.post, range(TOTAL)))


async def test_sigterm_to_each_service_under_load(stack: Stack) -> None:
    env, key = await stack.prepare(CICLO_JOURNEY_BATCH_SIZE="20")
    names = ("ingest", "journey", "dispatch")
    services = dict(zip(names, await stack.start(env), strict=True))

    load = Load(services["ingest"].url, key)
    running = asyncio.create_task(asyncio.to_thread(load.run))
    for name, after in (("journey", 60), ("dispatch", 160), ("ingest", 260)):
        await wait_for(lambda after=after: load.acked >= after, timeout=60, what=f"{after} acks")
        old = services[name]
        assert await asyncio.to_thread(old.stop) == 0, (
            f"{name} did not stop cleanly:\n{old.output()}"
        )
        # Same port for ingest, so the clients find it again.
        [services[name]] = await stack.start({**env, "CICLO_PORT": str(old.port)}, name)
    await running
    assert load.acked == TOTAL

    await assert_each_signup_sent_once(stack.fake, TOTAL)
