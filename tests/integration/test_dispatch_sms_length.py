"""An SMS's length where it is decided, on SQLite and PostgreSQL over real HTTP: at save (the
sample render must fit the strictest SMS provider), at render (nothing longer than any provider
takes), and at send (the chosen provider's own limit, refused before any request and without
touching its circuit breaker). And a send Twilio refuses because the number replied STOP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.dispatch.adapters.providers.twilio import TwilioProvider
from services.dispatch.adapters.providers.vonage import VonageProvider
from services.dispatch.adapters.suppressions import Suppressions
from services.dispatch.adapters.tables import messages, outbox
from services.dispatch.adapters.templates import TemplateStore
from services.dispatch.domain.policy import DispatchPolicy
from services.dispatch.domain.providers import TwilioConfig, VonageConfig
from services.dispatch.service_layer.handlers import (
    Dispatcher,
    FileRenderer,
    FixedRoutes,
    Lane,
    Sender,
)
from services.dispatch.service_layer.links import SignedLinks
from services.dispatch.service_layer.resilience import CircuitBreaker, RateGate
from services.dispatch.service_layer.uow import DispatchUnitOfWork
from shared.clock import VirtualClock
from shared.contracts.events import EventEnvelope
from shared.contracts.messages import MessageRequest
from shared.contracts.topics import EVENTS
from shared.db.engine import session_factory
from shared.retry import RetryPolicy
from tests.fakes.server import serve
from tests.fakes.twilio import FakeTwilio
from tests.fakes.vonage import FakeVonage
from tests.integration.test_templates_api import Api, build_api

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
EMOJI = "\U0001f600"


# ── At save: the sample render against the strictest provider (Vonage, 1000) ─────────────────


@pytest.fixture
async def api(tmp_path: Path, engine: AsyncEngine) -> AsyncIterator[Api]:
    async for built in build_api(tmp_path, engine):
        yield built


def check_refused_at_save(answer: httpx.Response, size: str) -> None:
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert (error["code"], error["field"], error["part"]) == (
        "template_render_failed",
        "parts.sms",
        "sms",
    )
    assert (
        f"renders {size} with the sample; Vonage takes at most 1000 characters"
        in (error["message"])
    )
    assert "Twilio 1600, Vonage 1000" in error["message"]


async def test_a_template_whose_sample_render_exceeds_the_strictest_limit_is_a_422(
    api: Api,
) -> None:
    at_limit = await api.put("/v1/templates/sale", {"channel": "sms", "parts": {"sms": "a" * 1000}})
    assert at_limit.status_code == 201, at_limit.text
    over = await api.put("/v1/templates/sale", {"channel": "sms", "parts": {"sms": "a" * 1001}})
    check_refused_at_save(over, "1001 characters (GSM-7, 7 segments)")
    # An emoji counts 2: 1000 code points are 1001 characters as providers count them.
    emoji = await api.put(
        "/v1/templates/sale", {"channel": "sms", "parts": {"sms": "ж" * 998 + EMOJI + "!"}}
    )
    check_refused_at_save(emoji, "1001 characters (UCS-2, 15 segments)")
    versions = (await api.get("/v1/templates/sale")).json()["versions"]
    assert len(versions) == 1  # only the one at the limit was saved


async def test_the_length_at_save_is_the_sample_render(api: Api) -> None:
    """The source is short; what it renders with the sample is what is measured."""
    source = "Hi {{ customer.first_name | default: 'there' }}, " + "x" * 980
    body: dict[str, Any] = {"channel": "sms", "parts": {"sms": source}}
    assert (await api.put("/v1/templates/hello", body)).status_code == 201
    body["sample"] = {"customer": {"first_name": "A" * 20}}
    check_refused_at_save(
        await api.put("/v1/templates/hello", body), "1005 characters (GSM-7, 7 segments)"
    )


# ── At render and at send: the dispatcher with Twilio (1600) and Vonage (1000) ───────────────


def request(n: int, text: str) -> MessageRequest:
    return MessageRequest(
        message_id=f"msg_{n}",
        workspace_id="shop",
        customer_id=f"c{n}",
        channel="sms",
        template="echo",
        category="transactional",
        requested_at=NOW,
        recipient={"phone": "+34612345678", "traits": {"first_name": text}},
    )


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    folder = tmp_path / "templates" / "echo"
    folder.mkdir(parents=True)
    (folder / "sms.liquid").write_text("{{ customer.first_name }}")
    return folder.parent


@pytest.fixture
def twilio(client: httpx.AsyncClient) -> Iterator[tuple[FakeTwilio, TwilioProvider]]:
    """The fake Twilio, and a provider sending to it."""
    fake = FakeTwilio()
    with serve(fake.app) as url:
        config = TwilioConfig(
            account_sid=fake.account_sid,
            auth_token=fake.auth_token,
            from_number=fake.numbers[0],
            base_url=url,
        )
        yield fake, TwilioProvider(client, config)


@pytest.fixture
def vonage() -> Iterator[tuple[FakeVonage, str]]:
    fake = FakeVonage()
    with serve(fake.app) as url:
        yield fake, url


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(2.0, connect=10.0)) as c:
        yield c


def dispatcher(
    engine: AsyncEngine, templates: Path, provider: Any, clock: VirtualClock
) -> tuple[Dispatcher, Lane]:
    """The dispatcher sending through ``provider``, and its lane, whose breaker (threshold 1,
    cooldown 60 s) runs on the dispatcher's clock."""
    sessions = session_factory(engine)
    chosen = Lane(
        provider,
        CircuitBreaker(
            provider.name, threshold=1, cooldown=60, clock=lambda: clock.now().timestamp()
        ),
        RateGate(rate=None, concurrency=4),
    )
    return Dispatcher(
        uow=lambda: DispatchUnitOfWork(sessions),
        renderer=FileRenderer(TemplateStore(templates)),
        routes=FixedRoutes(chosen, None, DispatchPolicy()),
        sender=Sender(email="shop@example.com", name="Shop"),
        retry=RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.05),
        ambiguous_policy="skip",
        clock=clock,
        links=SignedLinks(public_url="https://mail.shop.example", secret="test-secret"),
    ), chosen


async def ledger(engine: AsyncEngine) -> dict[str, tuple[str, str | None]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(messages.c.message_id, messages.c.status, messages.c.error)
        )
        return {r.message_id: (r.status, r.error) for r in rows}


async def test_vonage_refuses_a_text_over_1000_before_the_request_and_keeps_its_breaker(
    engine: AsyncEngine,
    templates: Path,
    vonage: tuple[FakeVonage, str],
    client: httpx.AsyncClient,
) -> None:
    fake, url = vonage
    provider = VonageProvider(
        client,
        VonageConfig(
            api_key=fake.api_key, api_secret=fake.api_secret, from_number="Shop", base_url=url
        ),
    )
    clock = VirtualClock(NOW)
    d, chosen = dispatcher(engine, templates, provider, clock)
    # Vonage failed once (threshold 1): after the cooldown the next send is the trial.
    chosen.breaker.failure()
    clock.advance(timedelta(seconds=60))
    await d.handle([request(1, "a" * 1200)])
    found = await ledger(engine)
    assert found["msg_1"] == (
        "failed",
        "vonage: the text is 1200 characters (GSM-7, 8 segments); vonage takes at most 1000 "
        "characters and refuses longer ones (a 422 on text): shorten the template",
    )
    assert fake.requests == 0
    # Vonage was not asked: the trial is over without a verdict, neither closed nor opened.
    assert str(chosen.breaker.state) == "half_open"
    await d.handle([request(2, "a" * 1000)])
    assert (await ledger(engine))["msg_2"] == ("sent", None)
    assert fake.message_ids() == ["msg_2"]
    assert str(chosen.breaker.state) == "closed"


async def test_twilio_sends_what_vonage_refuses_and_nothing_goes_over_1600(
    engine: AsyncEngine,
    templates: Path,
    twilio: tuple[FakeTwilio, TwilioProvider],
) -> None:
    fake, provider = twilio
    d, _ = dispatcher(engine, templates, provider, VirtualClock(NOW))
    await d.handle([request(1, "a" * 1200), request(2, "a" * 1599 + EMOJI)])
    found = await ledger(engine)
    assert found["msg_1"] == ("sent", None)
    # 1601 as providers count: no provider takes it, so it fails at render, before any.
    status, error = found["msg_2"]
    assert status == "failed"
    assert error == (
        "template echo sms: renders 1601 characters (UCS-2, 24 segments); no SMS provider "
        "takes more than 1600 characters (Twilio's limit): shorten it"
    )
    assert fake.requests == 1


# ── A number that replied STOP: Twilio refuses at once with 21610 ────────────────────────────


async def test_a_twilio_21610_refusal_suppresses_the_number_and_revokes_its_consent(
    engine: AsyncEngine,
    templates: Path,
    twilio: tuple[FakeTwilio, TwilioProvider],
) -> None:
    """What a status callback with 21610 does, a refusal with 21610 does too: without it, every
    later message to the number was tried and refused, and journeys kept asking for them."""
    fake, provider = twilio
    fake.unsubscribed.add("+34612345678")
    d, chosen = dispatcher(engine, templates, provider, VirtualClock(NOW))
    await d.handle([request(1, "Flash sale")])
    status, error = (await ledger(engine))["msg_1"]
    assert status == "failed" and error is not None and "21610" in error
    assert chosen.breaker.allow()  # Twilio answered: it is healthy
    async with session_factory(engine)() as session:
        [suppression] = await Suppressions(session).list("shop")
    assert (suppression.address, suppression.reason, suppression.scope) == (
        "+34612345678",
        "unsubscribe",
        "marketing",
    )
    assert suppression.customer_id == "c1"
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(outbox.c.value).where(outbox.c.topic == EVENTS).order_by(outbox.c.id)
        )
        events = [EventEnvelope.from_json(r.value) for r in rows]
    assert [(e.type, e.customer_id) for e in events] == [
        ("message_failed", "c1"),
        ("message_unsubscribed", "c1"),
        ("consent_updated", "c1"),
    ]
    assert events[2].properties["channel"] == "sms"
    assert events[2].properties["status"] == "revoked"
    # A marketing SMS to the number is now refused by Ciclo itself, before Twilio is asked.
    before = fake.requests
    marketing = request(2, "Flash sale").model_copy(update={"category": "marketing"})
    await d.handle([marketing])
    assert (await ledger(engine))["msg_2"][0] == "skipped"
    assert fake.requests == before
