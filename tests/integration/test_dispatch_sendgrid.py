"""Dispatch against a fake SendGrid over real HTTP: at most once, retries, ambiguity policy."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.dispatch.adapters.providers.sendgrid import SendGridProvider
from services.dispatch.adapters.providers.sink import SinkProvider
from services.dispatch.adapters.tables import messages, outbox, sink
from services.dispatch.adapters.templates import TemplateStore
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
from shared.contracts.topics import EVENTS, dead_letter
from shared.db.engine import session_factory
from shared.retry import RetryPolicy
from tests.fakes.sendgrid import FakeSendGrid, Injected
from tests.fakes.server import serve
from tests.fixtures.waiting import wait_for

LINKS = SignedLinks(public_url="https://mail.shop.example", secret="test-unsubscribe-secret")
"""The links of every message, as a real send has them."""
TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
NOW = datetime(2026, 11, 23, 9, tzinfo=UTC)


@pytest.fixture
def sendgrid() -> Iterator[tuple[FakeSendGrid, str]]:
    fake = FakeSendGrid()
    with serve(fake.app) as url:
        yield fake, url


def request(n: int, *, email: str | None = "ana@example.com") -> MessageRequest:
    return MessageRequest(
        message_id=f"msg_{n}",
        workspace_id="demo",
        customer_id=f"c{n}",
        channel="email",
        template="welcome-1",
        journey_id="welcome",
        journey_version=1,
        requested_at=NOW,
        recipient={"email": email, "traits": {"first_name": "Ana"}},
    )


def dispatcher(
    engine: AsyncEngine,
    provider: object,
    *,
    policy: Literal["skip", "resend"] = "skip",
    attempts: int = 3,
) -> Dispatcher:
    sessions = session_factory(engine)
    return Dispatcher(
        uow=lambda: DispatchUnitOfWork(sessions),
        renderer=FileRenderer(TemplateStore(TEMPLATES)),
        routes=FixedRoutes(lane(provider, concurrency=8)),  # type: ignore[arg-type]
        sender=Sender(email="shop@example.com", name="Shop"),
        retry=RetryPolicy(max_attempts=attempts, initial_delay=0.01, max_delay=2),
        ambiguous_policy=policy,
        clock=SystemClock(),
        links=LINKS,
    )


async def ledger(engine: AsyncEngine) -> dict[str, tuple[str, int]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(messages.c.message_id, messages.c.status, messages.c.attempts)
        )
        return {r.message_id: (r.status, r.attempts) for r in rows}


async def emitted(engine: AsyncEngine) -> list[EventEnvelope]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(outbox.c.value).where(outbox.c.topic == EVENTS).order_by(outbox.c.id)
        )
        return [EventEnvelope.from_json(r.value) for r in rows]


async def dead_letters(engine: AsyncEngine) -> list[tuple[MessageRequest, dict[str, str]]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(outbox.c.value, outbox.c.headers)
            .where(outbox.c.topic == dead_letter("dispatch"))
            .order_by(outbox.c.id)
        )
        return [(MessageRequest.from_json(r.value), dict(r.headers)) for r in rows]


@pytest.fixture
async def client() -> httpx.AsyncClient:
    async with httpx.AsyncClient(timeout=0.5) as c:
        yield c  # type: ignore[misc]


async def test_sends_with_sendgrids_wire_format(
    engine: AsyncEngine, sendgrid: tuple[FakeSendGrid, str], client: httpx.AsyncClient
) -> None:
    fake, url = sendgrid
    d = dispatcher(engine, SendGridProvider(client, api_key=fake.api_key, base_url=url))
    await d.handle([request(1)])
    [mail] = fake.accepted
    assert mail["personalizations"][0]["to"] == [{"email": "ana@example.com"}]
    assert mail["subject"] == "Welcome, Ana!"
    assert [c["type"] for c in mail["content"]] == ["text/plain", "text/html"]
    assert mail["custom_args"]["ciclo_message_id"] == "msg_1"
    # A marketing email carries its one-click unsubscribe header and both links in its body.
    assert mail["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe = mail["headers"]["List-Unsubscribe"].strip("<>")
    assert unsubscribe.startswith("https://mail.shop.example/u/v1.")
    preferences = unsubscribe.replace("/u/", "/preferences/")
    for part in mail["content"]:
        assert unsubscribe in part["value"] and preferences in part["value"], part["type"]
    assert (await ledger(engine))["msg_1"] == ("sent", 1)
    [event] = await emitted(engine)
    assert (event.type, event.customer_id, event.source) == ("message_sent", "c1", "dispatch")
    assert event.properties["message_id"] == "msg_1"


async def test_a_redelivered_request_is_never_sent_twice(
    engine: AsyncEngine, sendgrid: tuple[FakeSendGrid, str], client: httpx.AsyncClient
) -> None:
    fake, url = sendgrid
    d = dispatcher(engine, SendGridProvider(client, api_key=fake.api_key, base_url=url))
    await d.handle([request(1), request(2), request(1)])
    await d.handle([request(2), request(1)])
    assert sorted(fake.message_ids()) == ["msg_1", "msg_2"]
    assert fake.requests == 2


async def test_429_is_retried_honouring_retry_after(
    engine: AsyncEngine, sendgrid: tuple[FakeSendGrid, str], client: httpx.AsyncClient
) -> None:
    fake, url = sendgrid
    fake.fail_next(Injected(status=429, headers={"Retry-After": "0"}), Injected(status=503))
    d = dispatcher(engine, SendGridProvider(client, api_key=fake.api_key, base_url=url))
    await d.handle([request(1)])
    assert fake.message_ids() == ["msg_1"]
    assert (await ledger(engine))["msg_1"] == ("sent", 3)


async def test_permanent_errors_are_not_retried(
    engine: AsyncEngine, sendgrid: tuple[FakeSendGrid, str], client: httpx.AsyncClient
) -> None:
    fake, url = sendgrid
    d = dispatcher(engine, SendGridProvider(client, api_key="SG.wrong", base_url=url))
    await d.handle([request(1)])
    assert fake.requests == 1
    status, attempts = (await ledger(engine))["msg_1"]
    assert (status, attempts) == ("failed", 1)
    [event] = await emitted(engine)
    assert event.type == "message_failed"
    assert "401" in event.properties["reason"]
    [(dead, headers)] = await dead_letters(engine)
    assert dead.message_id == "msg_1"
    assert "401" in headers["dlq_reason"]
    assert headers["dlq_provider"] == "sendgrid"


async def test_transient_errors_give_up_after_the_last_attempt(
    engine: AsyncEngine, sendgrid: tuple[FakeSendGrid, str], client: httpx.AsyncClient
) -> None:
    fake, url = sendgrid
    fake.fail_next(*[Injected(status=500)] * 3)
    d = dispatcher(engine, SendGridProvider(client, api_key=fake.api_key, base_url=url), attempts=3)
    await d.handle([request(1)])
    assert (await ledger(engine))["msg_1"] == ("failed", 3)
    assert fake.accepted == []


async def test_timeout_after_the_request_left_is_ambiguous_and_not_resent(
    engine: AsyncEngine, sendgrid: tuple[FakeSendGrid, str], client: httpx.AsyncClient
) -> None:
    fake, url = sendgrid
    fake.fail_next(Injected(status=202, delay=1.0, accept=True))
    d = dispatcher(engine, SendGridProvider(client, api_key=fake.api_key, base_url=url))
    await d.handle([request(1)])
    assert (await ledger(engine))["msg_1"][0] == "ambiguous"
    await d.handle([request(1)])
    # The fake records a request when its thread handles it, which under load can come after
    # the client's timeout.
    await wait_for(lambda: fake.message_ids(), timeout=5, what="the fake to record the send")
    assert fake.message_ids() == ["msg_1"]  # the provider got it once; we did not resend


async def test_resend_policy_retries_an_ambiguous_send(
    engine: AsyncEngine, sendgrid: tuple[FakeSendGrid, str], client: httpx.AsyncClient
) -> None:
    fake, url = sendgrid
    fake.fail_next(Injected(status=202, delay=1.0, accept=True))
    provider = SendGridProvider(client, api_key=fake.api_key, base_url=url)
    await dispatcher(engine, provider, policy="resend").handle([request(1)])
    assert (await ledger(engine))["msg_1"] == ("sent", 2)
    await wait_for(
        lambda: len(fake.message_ids()) == 2, timeout=5, what="the fake to record both sends"
    )
    assert fake.message_ids() == ["msg_1", "msg_1"]  # the documented price of `resend`


async def test_missing_address_is_skipped_and_bad_template_fails_with_a_reason(
    engine: AsyncEngine,
) -> None:
    bad_template = request(2).model_copy(update={"template": "no-such-template"})
    await dispatcher(engine, SinkProvider()).handle([request(1, email=None), bad_template])
    events = {e.properties["message_id"]: e for e in await emitted(engine)}
    assert (events["msg_1"].type, events["msg_1"].properties["reason"]) == (
        "message_skipped",
        "no_address",
    )
    assert events["msg_2"].type == "message_failed"
    assert "subject.liquid is missing" in events["msg_2"].properties["reason"]
    assert {m: s for m, (s, _) in (await ledger(engine)).items()} == {
        "msg_1": "skipped",
        "msg_2": "failed",
    }


async def test_the_sink_receives_each_message_exactly_once(engine: AsyncEngine) -> None:
    d = dispatcher(engine, SinkProvider())
    await d.handle([request(1), request(2)])
    await d.handle([request(1)])
    async with engine.connect() as conn:
        rows = (await conn.execute(select(sink.c.message_id, sink.c.subject))).all()
    assert sorted(rows) == [("msg_1", "Welcome, Ana!"), ("msg_2", "Welcome, Ana!")]
