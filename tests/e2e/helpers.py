"""What the end-to-end tests do again and again: post numbered signups, wait for a condition."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

import httpx

from tests.fakes.sendgrid import FakeSendGrid
from tests.fixtures.waiting import wait_for


def signup(i: int) -> dict[str, Any]:
    """Signup number ``i``: its own event id, customer and address, so each must yield one email."""
    return {
        "type": "signup",
        "event_id": f"ev-{i}",
        "customer_id": f"c{i}",
        "traits": {"email": f"c{i}@example.com"},
    }


def post_signups(url: str, key: str, total: int, *, clients: int = 16) -> list[int]:
    """POST signups 0..total-1 concurrently; return the HTTP statuses in order."""

    def post(i: int) -> int:
        return httpx.post(
            f"{url}/v1/events",
            headers={"Authorization": f"Bearer {key}"},
            json=signup(i),
            timeout=30,
        ).status_code

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        return list(pool.map(post, range(total)))


async def assert_each_signup_sent_once(fake: FakeSendGrid, total: int) -> None:
    """SendGrid got the welcome email of signups 0..total-1, each exactly once."""
    await wait_for(lambda: len(fake.accepted) >= total, timeout=120, what=f"{total} emails")
    await asyncio.sleep(2.0)  # a duplicate would arrive now
    ids = fake.message_ids()
    assert len(ids) == total
    assert len(set(ids)) == total
    recipients = sorted(m["personalizations"][0]["to"][0]["email"] for m in fake.accepted)
    assert recipients == sorted(f"c{i}@example.com" for i in range(total))
