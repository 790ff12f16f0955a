"""A batch dispatched in chunks (``claim_chunk``), on SQLite and PostgreSQL: the next chunk is
claimed while the sends of the previous one are in flight, every message is still sent at most
once, and a claim that fails leaves the sends already started recorded, not stranded."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from services.dispatch.adapters.tables import messages, outbox
from services.dispatch.adapters.templates import TemplateStore
from services.dispatch.domain.messages import Outbound, Receipt, Rendered
from services.dispatch.service_layer.handlers import (
    Dispatcher,
    FileRenderer,
    FixedRoutes,
    Sender,
    lane,
)
from services.dispatch.service_layer.links import SignedLinks
from services.dispatch.service_layer.uow import DispatchUnitOfWork
from shared.clock import SystemClock
from shared.contracts.events import EventEnvelope
from shared.contracts.messages import MessageRequest
from shared.contracts.topics import EVENTS
from shared.db.engine import session_factory
from shared.retry import RetryPolicy

LINKS = SignedLinks(public_url="https://mail.shop.example", secret="test-unsubscribe-secret")
"""The links of every message, as a real send has them."""
TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
NOW = datetime(2026, 11, 23, 9, tzinfo=UTC)


def request(n: int) -> MessageRequest:
    return MessageRequest(
        message_id=f"msg_{n}",
        workspace_id="demo",
        customer_id=f"c{n}",
        channel="email",
        template="welcome-1",
        category="transactional",
        requested_at=NOW,
        recipient={"email": f"c{n}@example.com", "traits": {"first_name": "Ana"}},
    )


class GatedProvider:
    """An HTTP provider whose sends wait until the test opens the gate."""

    name = "gated"

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.gate = asyncio.Event()

    async def send(self, message: Outbound) -> Receipt:
        self.sent.append(message.message_id)
        await self.gate.wait()
        return Receipt(self.name, f"p-{message.message_id}")


class FailingRenderer:
    """Renders from the files, but fails (not a template error: the database, say) for the
    message ids it is given."""

    def __init__(self, failing: set[str]) -> None:
        self.files = FileRenderer(TemplateStore(TEMPLATES))
        self.failing = failing

    async def render(self, session: AsyncSession, **kwargs: Any) -> Rendered:
        if kwargs["message_id"] in self.failing:
            raise RuntimeError("the renderer's database went away")
        return await self.files.render(session, **kwargs)


def dispatcher(
    engine: AsyncEngine,
    provider: object,
    *,
    chunk: int,
    renderer: Any = None,
    policy: Literal["skip", "resend"] = "skip",
) -> Dispatcher:
    sessions = session_factory(engine)
    return Dispatcher(
        uow=lambda: DispatchUnitOfWork(sessions),
        renderer=renderer or FileRenderer(TemplateStore(TEMPLATES)),
        routes=FixedRoutes(lane(provider, concurrency=64)),  # type: ignore[arg-type]
        sender=Sender(email="shop@example.com", name="Shop"),
        retry=RetryPolicy(max_attempts=2, initial_delay=0.01, max_delay=0.05),
        ambiguous_policy=policy,
        clock=SystemClock(),
        links=LINKS,
        claim_chunk=chunk,
    )


async def ledger(engine: AsyncEngine) -> dict[str, str]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(messages.c.message_id, messages.c.status))
        return {r.message_id: r.status for r in rows}


async def sent_events(engine: AsyncEngine, kind: str = "message_sent") -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(outbox.c.value).where(outbox.c.topic == EVENTS))
        envelopes = [EventEnvelope.from_json(r.value) for r in rows]
    return [e.properties["message_id"] for e in envelopes if e.type == kind]


async def eventually(check: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_the_next_chunk_is_claimed_while_the_sends_are_in_flight(
    engine: AsyncEngine,
) -> None:
    provider = GatedProvider()
    d = dispatcher(engine, provider, chunk=2)
    handling = asyncio.create_task(d.handle([request(n) for n in range(7)]))

    async def all_claimed() -> bool:
        return len(provider.sent) == 7

    # No send has been answered, yet every chunk was claimed and its sends started.
    await eventually(all_claimed)
    assert await ledger(engine) == {f"msg_{n}": "sending" for n in range(7)}
    assert not handling.done()
    provider.gate.set()
    await handling
    assert await ledger(engine) == {f"msg_{n}": "sent" for n in range(7)}
    assert Counter(provider.sent) == {f"msg_{n}": 1 for n in range(7)}
    assert sorted(await sent_events(engine)) == sorted(f"msg_{n}" for n in range(7))


async def test_a_failed_claim_records_the_sends_already_started_and_loses_nothing(
    engine: AsyncEngine,
) -> None:
    provider = GatedProvider()
    provider.gate.set()
    batch = [request(n) for n in range(6)]
    failing = dispatcher(engine, provider, chunk=2, renderer=FailingRenderer({"msg_3"}))
    with pytest.raises(RuntimeError, match="went away"):
        await failing.handle(batch)
    # The first chunk went out and is recorded; the failed chunk and the next were not claimed.
    assert await ledger(engine) == {"msg_0": "sent", "msg_1": "sent"}

    # The consumer hands the batch again: the rest is sent, nothing twice.
    await dispatcher(engine, provider, chunk=2).handle(batch)
    assert await ledger(engine) == {f"msg_{n}": "sent" for n in range(6)}
    assert Counter(provider.sent) == {f"msg_{n}": 1 for n in range(6)}
    assert Counter(await sent_events(engine)) == {f"msg_{n}": 1 for n in range(6)}


async def test_a_message_repeated_across_chunks_is_sent_once(engine: AsyncEngine) -> None:
    provider = GatedProvider()
    provider.gate.set()
    d = dispatcher(engine, provider, chunk=1)
    await d.handle([request(1), request(2), request(1), request(3), request(2)])
    assert Counter(provider.sent) == {"msg_1": 1, "msg_2": 1, "msg_3": 1}
    assert await ledger(engine) == {"msg_1": "sent", "msg_2": "sent", "msg_3": "sent"}


async def test_chunks_of_any_size_send_the_whole_batch(engine: AsyncEngine) -> None:
    provider = GatedProvider()
    provider.gate.set()
    for chunk, first in ((1, 0), (3, 10), (100, 20)):
        await dispatcher(engine, provider, chunk=chunk).handle(
            [request(n) for n in range(first, first + 7)]
        )
    assert Counter(provider.sent) == {
        f"msg_{n}": 1 for first in (0, 10, 20) for n in range(first, first + 7)
    }


@pytest.mark.parametrize("policy", ["skip", "resend"])
async def test_a_message_this_process_is_sending_is_left_to_that_send(
    engine: AsyncEngine, policy: Literal["skip", "resend"]
) -> None:
    """Two batches at once (the held-message poller and the consumer, or overlapping batches):
    the second finds the first's ``sending`` row, which is no dead process's leftover."""
    provider = GatedProvider()
    d = dispatcher(engine, provider, chunk=10, policy=policy)
    first = asyncio.create_task(d.handle([request(1), request(2)]))

    async def both_sending() -> bool:
        return len(provider.sent) == 2

    await eventually(both_sending)
    second = asyncio.create_task(d.handle([request(2), request(3)]))

    async def third_sending() -> bool:
        return len(provider.sent) == 3

    await eventually(third_sending)
    provider.gate.set()
    await asyncio.gather(first, second)
    assert Counter(provider.sent) == {"msg_1": 1, "msg_2": 1, "msg_3": 1}
    assert await ledger(engine) == {"msg_1": "sent", "msg_2": "sent", "msg_3": "sent"}
    assert await sent_events(engine, "message_ambiguous") == []
    assert sorted(await sent_events(engine)) == ["msg_1", "msg_2", "msg_3"]


def test_a_chunk_holds_at_least_one_request(engine: AsyncEngine) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        dispatcher(engine, GatedProvider(), chunk=0)
