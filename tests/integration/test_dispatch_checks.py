"""Dispatch before and around the send, on SQLite and PostgreSQL over real HTTP: consent,
suppression, quiet hours (held, then sent once), circuit breaker and fallback provider, a long
Retry-After held in the ledger; the admin API for providers, settings and suppressions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.dispatch.adapters.providers.sendgrid import SendGridProvider
from services.dispatch.adapters.providers.sink import SinkProvider
from services.dispatch.adapters.providers.twilio import TwilioProvider
from services.dispatch.adapters.tables import erasures, messages, outbox, providers, sink
from services.dispatch.adapters.templates import TemplateStore
from services.dispatch.domain.policy import DispatchPolicy, QuietHours
from services.dispatch.domain.providers import TwilioConfig
from services.dispatch.service_layer.erasure import KEEP_ERASURES, erase_customers, prune_erasures
from services.dispatch.service_layer.handlers import (
    Dispatcher,
    FileRenderer,
    FixedRoutes,
    Lane,
    Sender,
    lane,
)
from services.dispatch.service_layer.links import SignedLinks
from services.dispatch.service_layer.resilience import CircuitBreaker, RateGate
from services.dispatch.service_layer.uow import DispatchUnitOfWork
from services.dispatch.settings import DispatchSettings
from services.runtime import Runtime
from shared.clock import VirtualClock
from shared.contracts.erasure import ErasureRequest
from shared.contracts.events import EventEnvelope
from shared.contracts.messages import MessageRequest
from shared.contracts.topics import EVENTS
from shared.db.engine import session_factory
from shared.retry import RetryPolicy
from shared.settings import ServerSettings
from shared.tenancy.keys import Scope
from tests.fakes.sendgrid import FakeSendGrid, Injected
from tests.fakes.server import serve
from tests.fakes.twilio import FakeTwilio

LINKS = SignedLinks(public_url="https://mail.shop.example", secret="test-unsubscribe-secret")
"""The links of every message, as a real send has them."""
TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
NIGHT = datetime(2026, 11, 23, 22, 30, tzinfo=UTC)  # 23:30 in Madrid


def request(
    n: int,
    *,
    channel: str = "email",
    category: str = "marketing",
    traits: dict[str, Any] | None = None,
    email: str = "ana@example.com",
) -> MessageRequest:
    return MessageRequest(
        message_id=f"msg_{n}",
        workspace_id="shop",
        customer_id=f"c{n}",
        channel=channel,  # type: ignore[arg-type]
        template="welcome-1" if channel == "email" else "sms-hello",
        category=category,  # type: ignore[arg-type]
        requested_at=NIGHT,
        recipient={
            "email": email,
            "phone": "+34612345678",
            "traits": {"first_name": "Ana", **(traits or {})},
        },
    )


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    folder = tmp_path / "templates"
    for name in ("welcome-1",):
        (folder / name).mkdir(parents=True)
        for part in ("subject", "text"):
            (folder / name / f"{part}.liquid").write_text(
                (TEMPLATES / name / f"{part}.liquid").read_text()
            )
    (folder / "sms-hello").mkdir()
    (folder / "sms-hello" / "sms.liquid").write_text("Hi {{ customer.first_name }}")
    return folder


def make(
    engine: AsyncEngine,
    templates: Path,
    primary: object,
    *,
    fallback: object | None = None,
    clock: VirtualClock | None = None,
    policy: DispatchPolicy | None = None,
    hold_over: float = 60,
    threshold: int = 1,
    cooldown: float = 60,
    retry: RetryPolicy | None = None,
) -> Dispatcher:
    sessions = session_factory(engine)
    return Dispatcher(
        uow=lambda: DispatchUnitOfWork(sessions),
        renderer=FileRenderer(TemplateStore(templates)),
        routes=FixedRoutes(
            lane(primary, threshold=threshold, cooldown=cooldown),  # type: ignore[arg-type]
            lane(fallback) if fallback is not None else None,  # type: ignore[arg-type]
            policy or DispatchPolicy(),
        ),
        sender=Sender(email="shop@example.com", name="Shop"),
        retry=retry or RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.05),
        ambiguous_policy="skip",
        clock=clock or VirtualClock(NIGHT),
        links=LINKS,
        hold_over=hold_over,
    )


async def ledger(engine: AsyncEngine) -> dict[str, tuple[str, str | None]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(messages.c.message_id, messages.c.status, messages.c.error)
        )
        return {r.message_id: (r.status, r.error) for r in rows}


async def events(engine: AsyncEngine) -> list[EventEnvelope]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(outbox.c.value).where(outbox.c.topic == EVENTS).order_by(outbox.c.id)
        )
        return [EventEnvelope.from_json(r.value) for r in rows]


async def suppress(engine: AsyncEngine, address: str, reason: str) -> None:
    async with DispatchUnitOfWork(session_factory(engine)) as uow:
        await uow.suppressions.add(
            workspace_id="shop",
            channel="email",
            address=address,
            reason=reason,  # type: ignore[arg-type]
            source="test",
            customer_id=None,
            at=NIGHT,
        )
        await uow.commit()


@pytest.fixture
def sendgrid() -> Iterator[tuple[FakeSendGrid, str]]:
    fake = FakeSendGrid()
    with serve(fake.app) as url:
        yield fake, url


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=0.5) as c:
        yield c


@pytest.fixture
def on_sendgrid(
    engine: AsyncEngine,
    templates: Path,
    client: httpx.AsyncClient,
    sendgrid: tuple[FakeSendGrid, str],
) -> Callable[..., Dispatcher]:
    """Builds a dispatcher (``make``'s options) sending through the fake SendGrid at any hour
    (no quiet hours)."""
    fake, url = sendgrid
    provider = SendGridProvider(client, api_key=fake.api_key, base_url=url)
    return partial(make, engine, templates, provider, policy=DispatchPolicy(quiet_hours={}))


async def test_refusals_are_recorded_with_their_reason_and_emitted(
    engine: AsyncEngine, templates: Path
) -> None:
    await suppress(engine, "bounced@example.com", "hard_bounce")
    await suppress(engine, "left@example.com", "unsubscribe")
    d = make(engine, templates, SinkProvider())
    await d.handle(
        [
            request(1, traits={"email_marketing_consent": "revoked"}),
            request(2, category="transactional", traits={"email_marketing_consent": "revoked"}),
            request(3, email="Bounced@Example.com", category="transactional"),
            request(4, email="left@example.com"),
            request(5, email="left@example.com", category="transactional"),
            request(6, email="nobody@@example"),
        ]
    )
    assert await ledger(engine) == {
        "msg_1": ("skipped", "no_consent"),
        "msg_2": ("sent", None),
        "msg_3": ("skipped", "suppressed:hard_bounce"),
        "msg_4": ("skipped", "suppressed:unsubscribe"),
        "msg_5": ("sent", None),
        "msg_6": ("skipped", "invalid_address"),
    }
    skipped = {e.properties["message_id"]: e for e in await events(engine)}
    assert skipped["msg_1"].type == "message_skipped"
    assert skipped["msg_1"].properties["reason"] == "no_consent"
    assert skipped["msg_2"].type == "message_sent"


async def test_templates_read_what_customer_intelligence_knew(
    engine: AsyncEngine, templates: Path
) -> None:
    """The recipient snapshot a journey puts on the request (profile, lead, stage, segments,
    RFM, predictions) are template variables; without it (intelligence off) the same template
    renders its defaults instead of failing."""
    (templates / "vip-note").mkdir()
    (templates / "vip-note" / "subject.liquid").write_text("For you")
    (templates / "vip-note" / "text.liquid").write_text(
        "{{ stage | default: 'unknown' }}|{{ lead.band | default: '-' }}|"
        "{{ lead.score | default: 0 }}|{{ profile.order_count | default: 0 }}|"
        "{{ rfm.group | default: '-' }}|{{ predictions.p_alive | default: '-' }}|"
        "{% if segments contains 'vip' %}vip{% else %}regular{% endif %}"
    )
    known = request(1).model_copy(
        update={
            "template": "vip-note",
            "recipient": {
                **request(1).recipient,
                "profile": {"order_count": 4, "revenue": "310.00"},
                "lead": {"score": 42.5, "band": "hot"},
                "stage": "active",
                "segments": ["big_spender", "vip"],
                "rfm": {"group": "champions", "r": 5, "f": 4, "m": 5},
                "predictions": {"p_alive": 0.93},
            },
        }
    )
    unknown = request(2).model_copy(update={"template": "vip-note"})
    await make(engine, templates, SinkProvider()).handle([known, unknown])
    async with engine.connect() as conn:
        rows = await conn.execute(select(sink.c.message_id, sink.c.text))
        texts = {r.message_id: r.text for r in rows}
    assert texts == {
        "msg_1": "active|hot|42.5|4|champions|0.93|vip",
        "msg_2": "unknown|-|0|0|-|-|regular",
    }


def erasure(customer_id: str, *, at: datetime, aliases: tuple[str, ...] = ()) -> ErasureRequest:
    return ErasureRequest(
        erasure_id="era_" + customer_id,
        workspace_id="shop",
        customer_id=customer_id,
        aliases=list(aliases),
        requested_at=at,
    )


async def test_a_request_on_the_bus_at_the_erasure_is_dropped_without_a_trace(
    engine: AsyncEngine, templates: Path
) -> None:
    """Requests made before the customer (or an id merged into them) was erased are neither
    sent nor recorded; one made after (the person signed up again) goes out."""
    uow = partial(DispatchUnitOfWork, session_factory(engine))
    await erase_customers(uow, [erasure("c1", at=NIGHT, aliases=("anon:c2",))])
    old = request(1, category="transactional")
    alias = request(2, category="transactional").model_copy(update={"customer_id": "anon:c2"})
    again = request(3, category="transactional").model_copy(
        update={"customer_id": "c1", "requested_at": NIGHT + timedelta(minutes=5)}
    )
    other = request(4, category="transactional")
    await make(engine, templates, SinkProvider()).handle([old, alias, again, other])

    assert await ledger(engine) == {"msg_3": ("sent", None), "msg_4": ("sent", None)}
    assert sorted(e.properties["message_id"] for e in await events(engine)) == ["msg_3", "msg_4"]
    async with engine.connect() as conn:
        kept = [tuple(r) for r in await conn.execute(select(erasures))]
        sunk = sorted(r.message_id for r in await conn.execute(select(sink.c.message_id)))
    assert sunk == ["msg_3", "msg_4"]
    # Remembered by hash only, never by id; forgotten after KEEP_ERASURES.
    assert len(kept) == 2 and not any("c1" in str(v) or "c2" in str(v) for row in kept for v in row)
    assert await prune_erasures(uow, now=NIGHT + KEEP_ERASURES) == 0
    assert await prune_erasures(uow, now=NIGHT + KEEP_ERASURES + timedelta(seconds=1)) == 2


async def test_a_send_in_flight_during_the_erasure_leaves_no_row_and_no_event(
    engine: AsyncEngine,
    sendgrid: tuple[FakeSendGrid, str],
    on_sendgrid: Callable[..., Dispatcher],
) -> None:
    """The erasure finds the message still ``sending`` (its row is not recorded yet); when the
    send comes back, the outcome is not recorded and no event about it leaves."""
    fake = sendgrid[0]
    fake.faults.latency = 0.3
    uow = partial(DispatchUnitOfWork, session_factory(engine))
    d = on_sendgrid()
    sending = asyncio.create_task(
        d.handle([request(1, category="transactional"), request(2, category="transactional")])
    )
    deadline = asyncio.get_running_loop().time() + 5
    while asyncio.get_running_loop().time() < deadline:
        if (await ledger(engine)).get("msg_1", ("",))[0] == "sending":
            break
        await asyncio.sleep(0.01)
    assert (await ledger(engine))["msg_1"][0] == "sending", "the send never started"
    await erase_customers(uow, [erasure("c1", at=NIGHT)])
    await sending

    assert sorted(fake.message_ids()) == ["msg_1", "msg_2"]  # it had left already
    assert await ledger(engine) == {"msg_2": ("sent", None)}
    assert [e.properties["message_id"] for e in await events(engine)] == ["msg_2"]


async def test_quiet_hours_hold_a_message_and_release_it_once(
    engine: AsyncEngine, templates: Path
) -> None:
    clock = VirtualClock(NIGHT)
    d = make(engine, templates, SinkProvider(), clock=clock)
    sms = request(
        1, channel="sms", traits={"sms_marketing_consent": "granted", "timezone": "Europe/Madrid"}
    )
    await d.handle([sms])
    assert (await ledger(engine))["msg_1"] == ("held", "quiet_hours")
    [held] = await events(engine)
    assert held.type == "message_held"
    assert held.properties["until"] == "2026-11-24T07:00:00+00:00"

    await d.handle([sms])  # redelivered while held: still held, nothing sent
    async with DispatchUnitOfWork(session_factory(engine)) as uow:
        assert await uow.ledger.due_held(now=clock.now(), limit=10) == []
    clock.advance(timedelta(hours=8, minutes=30))  # 07:00 UTC = 08:00 in Madrid
    async with DispatchUnitOfWork(session_factory(engine)) as uow:
        due = await uow.ledger.due_held(now=clock.now(), limit=10)
    assert [MessageRequest.model_validate(r) for r in due] == [sms]
    await d.handle([MessageRequest.model_validate(r) for r in due])
    await d.handle([sms])  # and again: sent once
    assert (await ledger(engine))["msg_1"][0] == "sent"
    async with engine.connect() as conn:
        from services.dispatch.adapters.tables import sink

        sent = (await conn.execute(select(sink.c.to, sink.c.text))).all()
    assert sent == [("+34612345678", "Hi Ana")]


async def test_consent_revoked_while_held_refuses_at_release(
    engine: AsyncEngine, templates: Path
) -> None:
    clock = VirtualClock(NIGHT)
    policy = DispatchPolicy(quiet_hours={"email": QuietHours(start="21:00", end="08:00")})
    d = make(engine, templates, SinkProvider(), clock=clock, policy=policy)
    await d.handle([request(1)])
    assert (await ledger(engine))["msg_1"][0] == "held"
    await suppress(engine, "ana@example.com", "unsubscribe")
    clock.advance(timedelta(hours=12))
    async with DispatchUnitOfWork(session_factory(engine)) as uow:
        due = await uow.ledger.due_held(now=clock.now(), limit=10)
    await d.handle([MessageRequest.model_validate(r) for r in due])
    assert (await ledger(engine))["msg_1"] == ("skipped", "suppressed:unsubscribe")


async def send_two_with_a_backup(
    engine: AsyncEngine,
    templates: Path,
    sendgrid: tuple[FakeSendGrid, str],
    client: httpx.AsyncClient,
    *failures: Injected,
) -> FakeSendGrid:
    """Two transactional messages through the SendGrid fake, whose next answers are
    ``failures``, with a second SendGrid fake as the fallback provider; that fallback."""
    primary_fake, primary_url = sendgrid
    backup = FakeSendGrid(api_key="SG.backup")
    primary_fake.fail_next(*failures)
    with serve(backup.app) as backup_url:
        d = make(
            engine,
            templates,
            SendGridProvider(client, api_key=primary_fake.api_key, base_url=primary_url),
            fallback=SendGridProvider(client, api_key=backup.api_key, base_url=backup_url),
            policy=DispatchPolicy(quiet_hours={}),
        )
        await d.handle([request(1, category="transactional")])
        await d.handle([request(2, category="transactional")])
    return backup


async def test_an_open_circuit_hands_over_to_the_fallback_provider(
    engine: AsyncEngine,
    templates: Path,
    sendgrid: tuple[FakeSendGrid, str],
    client: httpx.AsyncClient,
) -> None:
    primary_fake = sendgrid[0]
    backup = await send_two_with_a_backup(
        engine, templates, sendgrid, client, *[Injected(status=503)] * 5
    )
    # The first 503 opened the breaker (threshold 1): both messages went out through the backup.
    assert primary_fake.accepted == []
    assert sorted(backup.message_ids()) == ["msg_1", "msg_2"]
    assert primary_fake.requests == 1
    sent = {e.properties["message_id"]: e.properties["provider"] for e in await events(engine)}
    assert sent == {"msg_1": "sendgrid", "msg_2": "sendgrid"}


async def test_a_long_retry_after_holds_the_message_instead_of_waiting(
    engine: AsyncEngine,
    sendgrid: tuple[FakeSendGrid, str],
    on_sendgrid: Callable[..., Dispatcher],
) -> None:
    fake = sendgrid[0]
    fake.fail_next(Injected(status=429, headers={"Retry-After": "600"}))
    clock = VirtualClock(NIGHT)
    d = on_sendgrid(clock=clock)
    await d.handle([request(1)])
    status, error = (await ledger(engine))["msg_1"]
    assert status == "held" and error is not None and error.startswith("rate_limited")
    clock.advance(timedelta(minutes=10))
    async with DispatchUnitOfWork(session_factory(engine)) as uow:
        due = await uow.ledger.due_held(now=clock.now(), limit=10)
    await d.handle([MessageRequest.model_validate(r) for r in due])
    assert fake.message_ids() == ["msg_1"]
    assert (await ledger(engine))["msg_1"][0] == "sent"


async def test_a_retry_after_date_is_waited_on_the_dispatchers_clock(
    engine: AsyncEngine,
    sendgrid: tuple[FakeSendGrid, str],
    on_sendgrid: Callable[..., Dispatcher],
) -> None:
    """A Retry-After date 30 s after the (virtual) now is a 30 s wait of that clock, not of the
    wall clock, which is days away from it."""
    fake = sendgrid[0]
    again_at = NIGHT + timedelta(seconds=30)
    fake.fail_next(Injected(status=503, headers={"Retry-After": format_datetime(again_at, True)}))
    clock = VirtualClock(NIGHT)
    d = on_sendgrid(
        clock=clock,
        threshold=5,
        retry=RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=60, jitter=0),
    )
    await d.handle([request(1)])
    assert fake.message_ids() == ["msg_1"]
    assert (await ledger(engine))["msg_1"] == ("sent", None)
    assert clock.now() == again_at


@pytest.mark.parametrize("retry_after", [59, 120, 299])
async def test_a_retry_after_within_the_hold_over_is_waited_in_full(
    engine: AsyncEngine,
    sendgrid: tuple[FakeSendGrid, str],
    retry_after: int,
    on_sendgrid: Callable[..., Dispatcher],
) -> None:
    """With CICLO_SEND_HOLD_OVER above the retry policy's 60 s cap (the policy bootstrap
    builds), a provider asking for 120 s is asked again after 120 s, not 60."""
    fake = sendgrid[0]
    fake.fail_next(Injected(status=429, headers={"Retry-After": str(retry_after)}))
    clock = VirtualClock(NIGHT)
    d = on_sendgrid(
        clock=clock,
        hold_over=300,
        retry=RetryPolicy(max_attempts=3, jitter=0),  # max_delay: the default 60 s
    )
    await d.handle([request(1)])
    assert fake.requests == 2
    assert (await ledger(engine))["msg_1"] == ("sent", None)
    assert clock.now() == NIGHT + timedelta(seconds=retry_after)


async def test_a_retry_after_date_past_the_hold_over_holds_until_that_date(
    engine: AsyncEngine,
    sendgrid: tuple[FakeSendGrid, str],
    on_sendgrid: Callable[..., Dispatcher],
) -> None:
    fake = sendgrid[0]
    again_at = NIGHT + timedelta(minutes=10)
    fake.fail_next(Injected(status=429, headers={"Retry-After": format_datetime(again_at, True)}))
    d = on_sendgrid(clock=VirtualClock(NIGHT))
    await d.handle([request(1)])
    assert fake.message_ids() == []
    async with engine.connect() as conn:
        row = (await conn.execute(select(messages.c.status, messages.c.not_before))).one()
    assert (row.status, row.not_before) == ("held", again_at)


async def test_the_sink_dates_a_message_by_the_dispatchers_clock(
    engine: AsyncEngine, templates: Path
) -> None:
    await make(engine, templates, SinkProvider(), clock=VirtualClock(NIGHT)).handle(
        [request(1, category="transactional")]
    )
    async with engine.connect() as conn:
        stored = (await conn.execute(select(sink.c.message_id, sink.c.created_at))).all()
    assert [(r.message_id, r.created_at) for r in stored] == [("msg_1", NIGHT)]


async def test_a_requests_data_cannot_rename_the_customer_of_a_rendered_message(
    engine: AsyncEngine, templates: Path
) -> None:
    forged = request(1, category="transactional").model_copy(
        update={"data": {"customer": {"first_name": "Mallory"}, "message": {"id": "x"}}}
    )
    await make(engine, templates, SinkProvider()).handle([forged])
    async with engine.connect() as conn:
        subjects = (await conn.execute(select(sink.c.subject))).scalars().all()
    assert subjects == ["Welcome, Ana!"]


async def test_a_throttled_trial_send_does_not_shut_the_provider_for_good(
    engine: AsyncEngine,
    sendgrid: tuple[FakeSendGrid, str],
    on_sendgrid: Callable[..., Dispatcher],
) -> None:
    """A 503 opens the breaker; after the cooldown the trial send gets a 429. The provider is
    throttling, not down: the next send is a trial again and goes, rather than every send of
    the provider waiting for a trial slot that is never given back."""
    fake = sendgrid[0]
    fake.fail_next(Injected(status=503), Injected(status=429))
    d = on_sendgrid(cooldown=0.1)
    async with asyncio.timeout(10):
        await d.handle([request(1)])
    assert fake.message_ids() == ["msg_1"]
    assert (await ledger(engine))["msg_1"] == ("sent", None)


async def test_a_message_refused_before_the_request_is_no_trial_of_the_provider(
    engine: AsyncEngine, templates: Path, client: httpx.AsyncClient
) -> None:
    """Twilio fails three sends and its breaker opens. After the cooldown, an email handed to
    Twilio is refused before any request: that says nothing about Twilio, so the breaker stays
    half-open and the next SMS is the trial; its 503 opens the breaker again at once (the
    message is held) instead of finding a closed breaker and being retried against Twilio."""
    fake = FakeTwilio()
    clock = VirtualClock(NIGHT)
    breaker = CircuitBreaker(
        "twilio", threshold=3, cooldown=30, clock=lambda: clock.now().timestamp()
    )
    with serve(fake.app) as url:
        provider = TwilioProvider(
            client,
            TwilioConfig(
                account_sid=fake.account_sid,
                auth_token=fake.auth_token,
                from_number=fake.numbers[0],
                base_url=url,
            ),
        )
        sessions = session_factory(engine)
        d = Dispatcher(
            uow=lambda: DispatchUnitOfWork(sessions),
            renderer=FileRenderer(TemplateStore(templates)),
            routes=FixedRoutes(Lane(provider, breaker, RateGate(rate=None, concurrency=4))),
            sender=Sender(email="shop@example.com", name="Shop"),
            retry=RetryPolicy(max_attempts=3, initial_delay=1, max_delay=1, jitter=0),
            ambiguous_policy="skip",
            clock=clock,
            links=LINKS,
            hold_over=10,
        )
        consent = {"sms_marketing_consent": "granted"}
        fake.fail_next(*[Injected(status=503)] * 4)
        await d.handle([request(1, channel="sms", traits=consent)])
        assert fake.requests == 3 and str(breaker.state) == "open"
        clock.advance(timedelta(seconds=30))

        await d.handle([request(2, channel="email")])
        assert fake.requests == 3  # never reached Twilio
        assert str(breaker.state) == "half_open"

        await d.handle([request(3, channel="sms", traits=consent)])
    assert fake.requests == 4  # one trial, not three sends to a provider still failing
    assert str(breaker.state) == "open"
    found = await ledger(engine)
    assert found["msg_1"][0] == "failed"
    status, error = found["msg_2"]
    assert status == "failed" and error is not None and "cannot send email" in error
    status, error = found["msg_3"]
    assert status == "held" and error is not None and "circuit open" in error


# ── Admin API ─────────────────────────────────────────────────────────────────────────────────


@pytest.fixture
async def api(
    tmp_path: Path, engine: AsyncEngine, database_url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    runtime = Runtime(
        services=("dispatch",),
        clock=VirtualClock(NIGHT),
        server=ServerSettings(data_dir=tmp_path, database_url=database_url, rate_limit=0),
        dispatch=DispatchSettings(),
    )
    await runtime.keys.ensure_workspace("shop")
    await runtime.keys.ensure_workspace("other")
    _, admin = await runtime.keys.create_key("shop", Scope.ADMIN)
    _, other = await runtime.keys.create_key("other", Scope.ADMIN)
    _, ingest = await runtime.keys.create_key("shop", Scope.INGEST)
    transport = httpx.ASGITransport(app=runtime.app())
    async with httpx.AsyncClient(transport=transport, base_url="http://ciclo") as c:
        yield c, {"admin": admin, "other": other, "ingest": ingest}
    await runtime.engine.dispose()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_providers_are_configured_per_workspace_and_secrets_never_shown(
    api: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    c, keys = api
    listed = await c.get("/v1/providers", headers=auth(keys["admin"]))
    assert [(p["channel"], p["config"]["kind"], p["source"]) for p in listed.json()] == [
        ("email", "sink", "default"),
        ("sms", "sink", "default"),
    ]
    body = {"config": {"kind": "postmark", "server_token": "pm-secret"}, "rate_per_second": 50}
    put = await c.put("/v1/providers/email/primary", headers=auth(keys["admin"]), json=body)
    assert put.status_code == 200, put.text
    assert put.json()["config"]["server_token"] == "***"
    listed = (await c.get("/v1/providers", headers=auth(keys["admin"]))).json()
    assert [(p["channel"], p["config"]["kind"]) for p in listed] == [
        ("email", "postmark"),
        ("sms", "sink"),
    ]
    assert "pm-secret" not in str(listed)
    other = (await c.get("/v1/providers", headers=auth(keys["other"]))).json()
    assert other[0]["config"]["kind"] == "sink"

    wrong = await c.put(
        "/v1/providers/sms/primary",
        headers=auth(keys["admin"]),
        json={"config": {"kind": "postmark", "server_token": "x"}},
    )
    assert wrong.status_code == 422 and wrong.json()["error"]["field"] == "config.kind"
    missing = await c.put(
        "/v1/providers/sms/primary",
        headers=auth(keys["admin"]),
        json={"config": {"kind": "twilio", "auth_token": "x"}},
    )
    assert missing.status_code == 422 and "account_sid" in missing.text
    forbidden = await c.get("/v1/providers", headers=auth(keys["ingest"]))
    assert forbidden.status_code == 403
    gone = await c.delete("/v1/providers/email/primary", headers=auth(keys["admin"]))
    assert gone.status_code == 204
    again = await c.delete("/v1/providers/email/primary", headers=auth(keys["admin"]))
    assert again.status_code == 404


async def test_dispatch_settings_and_the_suppression_list_over_http(
    api: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    c, keys = api
    default = (await c.get("/v1/dispatch-settings", headers=auth(keys["admin"]))).json()
    assert default["quiet_hours"] == {"sms": {"start": "21:00", "end": "08:00"}}
    put = await c.put(
        "/v1/dispatch-settings",
        headers=auth(keys["admin"]),
        json={
            "quiet_hours": {"email": {"start": "22:00", "end": "07:30"}},
            "timezone": "Europe/Madrid",
        },
    )
    assert put.status_code == 200, put.text
    assert put.json()["timezone"] == "Europe/Madrid"
    stored = (await c.get("/v1/dispatch-settings", headers=auth(keys["admin"]))).json()
    assert (stored["quiet_hours"], stored["timezone"]) == (
        {"email": {"start": "22:00", "end": "07:30"}},
        "Europe/Madrid",
    )
    bad = await c.put(
        "/v1/dispatch-settings",
        headers=auth(keys["admin"]),
        json={"quiet_hours": {"sms": {"start": "9pm", "end": "08:00"}}},
    )
    assert bad.status_code == 422 and "HH:MM" in bad.text
    # From a time to the same time: no quiet hours at all, surely not what was meant.
    empty = await c.put(
        "/v1/dispatch-settings",
        headers=auth(keys["admin"]),
        json={"quiet_hours": {"email": {"start": "22:00", "end": "22:00"}}},
    )
    assert empty.status_code == 422, empty.text
    assert empty.json()["error"]["field"] == "quiet_hours.email"
    assert "no length" in empty.json()["error"]["message"]
    kept = (await c.get("/v1/dispatch-settings", headers=auth(keys["admin"]))).json()
    assert kept["quiet_hours"] == {"email": {"start": "22:00", "end": "07:30"}}

    add = await c.put(
        "/v1/suppressions/email/Ana@Example.COM",
        headers=auth(keys["admin"]),
        json={"reason": "manual"},
    )
    assert add.status_code == 204
    page = (await c.get("/v1/suppressions", headers=auth(keys["admin"]))).json()
    assert [(s["address"], s["scope"]) for s in page["suppressions"]] == [
        ("ana@example.com", "all")
    ]
    invalid = await c.put("/v1/suppressions/sms/not-a-phone", headers=auth(keys["admin"]), json={})
    assert invalid.status_code == 422, invalid.text
    assert invalid.json()["error"]["field"] == "address", invalid.text
    other = (await c.get("/v1/suppressions", headers=auth(keys["other"]))).json()
    assert other["suppressions"] == []
    lifted = await c.delete("/v1/suppressions/email/ana@example.com", headers=auth(keys["admin"]))
    assert lifted.status_code == 204
    page = (await c.get("/v1/suppressions", headers=auth(keys["admin"]))).json()
    assert page["suppressions"] == []
    again = await c.delete("/v1/suppressions/email/ana@example.com", headers=auth(keys["admin"]))
    assert again.status_code == 404


async def test_a_batch_of_two_thousand_checks_the_suppression_list_at_once(
    engine: AsyncEngine, templates: Path
) -> None:
    """SQLite bounds bound parameters and expression depth: the lookup must still work for a
    batch larger than those bounds."""
    await suppress(engine, "u1999@example.com", "hard_bounce")
    batch = [request(n, email=f"u{n}@example.com", category="transactional") for n in range(2000)]
    await make(engine, templates, SinkProvider()).handle(batch)
    statuses = await ledger(engine)
    assert statuses["msg_1999"] == ("skipped", "suppressed:hard_bounce")
    assert sum(1 for s, _ in statuses.values() if s == "sent") == 1999


@pytest.mark.parametrize("retry_after", ["1.5", "soon", "Mon, 32 Foo 2026 25:00:00 GMT"])
async def test_a_retry_after_that_is_no_time_retries_with_backoff(
    engine: AsyncEngine,
    sendgrid: tuple[FakeSendGrid, str],
    retry_after: str,
    on_sendgrid: Callable[..., Dispatcher],
) -> None:
    """Gateways and proxies in front of a provider send Retry-After values that are neither
    seconds nor an HTTP date: the send is still a transient failure, retried, not an error that
    stops the batch with the message left ``sending`` (never resent under policy skip)."""
    fake = sendgrid[0]
    fake.fail_next(Injected(status=503, headers={"Retry-After": retry_after}))
    d = on_sendgrid(
        threshold=5,  # one 503 must not open the breaker: this is about the retry
    )
    await d.handle([request(1)])
    assert fake.message_ids() == ["msg_1"]
    assert (await ledger(engine))["msg_1"] == ("sent", None)


async def test_a_429_without_retry_after_does_not_open_the_breaker(
    engine: AsyncEngine,
    templates: Path,
    sendgrid: tuple[FakeSendGrid, str],
    client: httpx.AsyncClient,
) -> None:
    """A throttling 429 is the provider working, not failing, with or without a Retry-After
    (Twilio's 20429 and Mailgun's 429 often have none): the message is retried on the primary
    and the fallback provider is not used."""
    primary_fake = sendgrid[0]
    backup = await send_two_with_a_backup(engine, templates, sendgrid, client, Injected(status=429))
    assert backup.accepted == []
    assert sorted(primary_fake.message_ids()) == ["msg_1", "msg_2"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("from_email", "not-an-email"),
        ("from_email", "shop@"),
        ("from_name", "Shop\r\nBcc: everyone@example.com"),
    ],
)
async def test_a_sender_that_cannot_go_in_a_from_header_is_refused_at_save(
    api: tuple[httpx.AsyncClient, dict[str, str]], field: str, value: str
) -> None:
    """Every email of the workspace would fail at the provider (or carry a forged header): the
    save is a 422 naming the field, and the settings in force stay as they were."""
    c, keys = api
    good = {"from_email": "hola@shop.example", "from_name": "Shop"}
    put = await c.put("/v1/dispatch-settings", headers=auth(keys["admin"]), json=good)
    assert put.status_code == 200, put.text
    bad = await c.put(
        "/v1/dispatch-settings", headers=auth(keys["admin"]), json={**good, field: value}
    )
    assert bad.status_code == 422, bad.text
    assert bad.json()["error"]["field"] == field
    stored = (await c.get("/v1/dispatch-settings", headers=auth(keys["admin"]))).json()
    assert (stored["from_email"], stored["from_name"]) == ("hola@shop.example", "Shop")


TWILIO_SID = "AC" + "0" * 32


@pytest.mark.parametrize(
    ("channel", "config", "field"),
    [
        (
            "sms",
            {"kind": "vonage", "api_key": "k", "api_secret": "s", "from_number": "Shop Sales Dept"},
            "config.vonage.from_number",
        ),
        (
            "sms",
            {"kind": "twilio", "account_sid": TWILIO_SID, "auth_token": "t", "from_number": "shop"},
            "config.twilio.from_number",
        ),
        (
            "sms",
            {
                "kind": "twilio",
                "account_sid": TWILIO_SID,
                "auth_token": "t",
                "from_number": "+14155550100",
                "status_callback": "ciclo.example.com/v1/webhooks/providers/twilio/shop",
            },
            "config.twilio.status_callback",
        ),
        (
            "email",
            {"kind": "sendgrid", "api_key": "SG.x", "base_url": "api.sendgrid.com"},
            "config.sendgrid.base_url",
        ),
    ],
)
async def test_a_provider_configuration_every_send_would_fail_with_is_refused(
    api: tuple[httpx.AsyncClient, dict[str, str]],
    channel: str,
    config: dict[str, Any],
    field: str,
) -> None:
    """A sender that is no number nor sender id, a callback or API URL without a scheme: saved,
    every message would fail at the send. The save is a 422 naming the field, and the provider
    in force stays."""
    c, keys = api
    bad = await c.put(
        f"/v1/providers/{channel}/primary", headers=auth(keys["admin"]), json={"config": config}
    )
    assert bad.status_code == 422, bad.text
    assert bad.json()["error"]["field"] == field
    listed = (await c.get("/v1/providers", headers=auth(keys["admin"]))).json()
    assert {p["channel"]: p["config"]["kind"] for p in listed}[channel] == "sink"


@pytest.mark.parametrize("sender", ["+14155550100", "14155550100", "Shop", "MY SHOP 24"])
async def test_vonage_takes_a_number_or_an_alphanumeric_sender_id(
    api: tuple[httpx.AsyncClient, dict[str, str]], sender: str
) -> None:
    c, keys = api
    config = {"kind": "vonage", "api_key": "k", "api_secret": "s", "from_number": sender}
    put = await c.put(
        "/v1/providers/sms/primary", headers=auth(keys["admin"]), json={"config": config}
    )
    assert put.status_code == 200, put.text


async def test_an_sms_longer_than_any_provider_takes_is_refused_at_save(
    api: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    c, keys = api
    long = await c.put(
        "/v1/templates/flash-sale",
        headers=auth(keys["admin"]),
        json={"channel": "sms", "parts": {"sms": "Sale! " + "All shoes 20% off. " * 90}},
    )
    assert long.status_code == 422, long.text
    error = long.json()["error"]
    assert (error["code"], error["field"]) == ("template_render_failed", "parts.sms")
    assert "1600" in error["message"]
    # 1,525 characters: Twilio would take it, Vonage (1,000) would not, and a message may go
    # through either (primary or fallback).
    between = await c.put(
        "/v1/templates/flash-sale",
        headers=auth(keys["admin"]),
        json={"channel": "sms", "parts": {"sms": "Sale! " + "All shoes 20% off. " * 80}},
    )
    assert between.status_code == 422, between.text
    assert "Vonage takes at most 1000 characters" in between.json()["error"]["message"]
    short = await c.put(
        "/v1/templates/flash-sale",
        headers=auth(keys["admin"]),
        json={"channel": "sms", "parts": {"sms": "Sale! " + "All shoes 20% off. " * 50}},
    )
    assert short.status_code == 201, short.text


async def test_an_sms_that_renders_too_long_fails_before_the_provider(
    engine: AsyncEngine, templates: Path
) -> None:
    """The text grows with the message's data: the message fails with the reason, and nothing
    is handed to the provider (which would refuse it, or bill two dozen segments)."""
    batch = [
        request(1, channel="sms", category="transactional"),
        request(2, channel="sms", category="transactional", traits={"first_name": "A" * 1600}),
    ]
    await make(engine, templates, SinkProvider()).handle(batch)
    statuses = await ledger(engine)
    assert statuses["msg_1"] == ("sent", None)
    status, error = statuses["msg_2"]
    assert status == "failed" and error is not None and "1600" in error
    async with engine.connect() as conn:
        sunk = (await conn.execute(select(sink.c.message_id))).scalars().all()
    assert sunk == ["msg_1"]


async def test_a_provider_read_back_and_saved_again_keeps_its_secrets(
    api: tuple[httpx.AsyncClient, dict[str, str]], engine: AsyncEngine
) -> None:
    """The API shows secrets as ``***``: an SRE who reads the configuration, changes the rate
    and puts it back must not replace the API key with three asterisks."""
    c, keys = api
    body = {
        "config": {
            "kind": "mailgun",
            "api_key": "key-live",
            "domain": "mg.shop.example",
            "webhook_signing_key": "signing-live",
        },
        "rate_per_second": 50,
    }
    put = await c.put("/v1/providers/email/primary", headers=auth(keys["admin"]), json=body)
    assert put.status_code == 200, put.text
    shown = next(
        p
        for p in (await c.get("/v1/providers", headers=auth(keys["admin"]))).json()
        if p["channel"] == "email"
    )
    again = {"config": shown["config"], "rate_per_second": 20}
    put = await c.put("/v1/providers/email/primary", headers=auth(keys["admin"]), json=again)
    assert put.status_code == 200, put.text
    assert put.json()["rate_per_second"] == 20
    async with engine.connect() as conn:
        stored = (await conn.execute(select(providers.c.config))).scalar_one()
    assert (stored["api_key"], stored["webhook_signing_key"]) == ("key-live", "signing-live")

    # With no stored secret to keep, "***" is refused rather than saved as the key.
    fresh = {"config": {"kind": "postmark", "server_token": "***"}}
    refused = await c.put("/v1/providers/email/fallback", headers=auth(keys["admin"]), json=fresh)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["field"] == "config.postmark.server_token"


async def test_a_webhook_provider_read_back_and_saved_again_keeps_its_secret(
    api: tuple[httpx.AsyncClient, dict[str, str]], engine: AsyncEngine
) -> None:
    """The generic webhook's secret needs 16 characters; the ``***`` GET shows in its place is
    three, and stands for the stored secret all the same."""
    c, keys = api
    secret = "whsec-0123456789abcdef"
    body = {
        "config": {"kind": "webhook", "url": "https://hooks.shop.example/send", "secret": secret}
    }
    put = await c.put("/v1/providers/sms/primary", headers=auth(keys["admin"]), json=body)
    assert put.status_code == 200, put.text
    shown = next(
        p
        for p in (await c.get("/v1/providers", headers=auth(keys["admin"]))).json()
        if p["channel"] == "sms"
    )
    assert shown["config"]["secret"] == "***"
    again = {"config": shown["config"], "rate_per_second": 5}
    put = await c.put("/v1/providers/sms/primary", headers=auth(keys["admin"]), json=again)
    assert put.status_code == 200, put.text
    async with engine.connect() as conn:
        stored = (await conn.execute(select(providers.c.config))).scalar_one()
    assert stored["secret"] == secret

    # A new secret still needs its 16 characters, and "***" with nothing stored is refused.
    short = {"config": {**shown["config"], "secret": "too-short"}}
    put = await c.put("/v1/providers/sms/primary", headers=auth(keys["admin"]), json=short)
    assert put.status_code == 422, put.text
    fresh = {"config": shown["config"]}
    put = await c.put("/v1/providers/sms/fallback", headers=auth(keys["admin"]), json=fresh)
    assert put.status_code == 422, put.text
    assert put.json()["error"]["field"] == "config.webhook.secret"
