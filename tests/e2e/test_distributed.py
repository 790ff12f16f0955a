"""The three services as separate processes over a Kafka-protocol broker and PostgreSQL, sending
through a fake SendGrid over real HTTP — the distributed mode, set up the way an SRE would."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.e2e.helpers import assert_each_signup_sent_once, post_signups
from tests.e2e.stack import Stack
from tests.fixtures.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.postgres]


async def test_signup_to_sendgrid_across_three_processes(stack: Stack) -> None:
    fake = stack.fake
    env, write_key = await stack.prepare()
    ingest, _, _ = await stack.start(env)

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
    await wait_for(lambda: stack.count(sql), timeout=30, what="message_sent at journey")
    for p in stack.processes:
        assert await asyncio.to_thread(p.stop) == 0, p.output()


async def test_journey_killed_mid_stream_loses_nothing_and_sends_nothing_twice(
    stack: Stack,
) -> None:
    fake = stack.fake
    # One event per transaction keeps the journey slower than ingest, so the kill lands mid-way.
    env, write_key = await stack.prepare(CICLO_JOURNEY_BATCH_SIZE="1")
    ingest, journey, _ = await stack.start(env)
    total = 300

    assert await asyncio.to_thread(post_signups, ingest.url, write_key, total) == [202] * total
    journey.kill()
    entered = await stack.count(
        "SELECT count(*) FROM journey_instances WHERE journey_id = 'welcome'"
    )
    assert entered < total, "the kill came after everything was processed: nothing proven"

    await stack.start(env, "journey")
    await assert_each_signup_sent_once(fake, total)
    assert (
        await stack.count("SELECT count(*) FROM journey_instances WHERE journey_id = 'welcome'")
        == total
    )
