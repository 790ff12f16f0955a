"""Provider webhooks over HTTP (httpx against a FastAPI app with the router and the shared error
handlers), on SQLite and PostgreSQL: signed requests of every provider become engagement events
in ``dispatch_outbox`` for the customer of the message, once; bounces and complaints suppress;
forged requests write nothing."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.dispatch.adapters.suppressions import Suppression, Suppressions
from services.dispatch.adapters.tables import messages, outbox, webhook_events
from services.dispatch.domain.providers import (
    MailgunConfig,
    PostmarkConfig,
    ProviderConfig,
    SendGridConfig,
    TwilioConfig,
    VonageConfig,
)
from services.dispatch.entrypoints.webhooks import provider_webhooks_router
from services.dispatch.service_layer.uow import DispatchUnitOfWork
from services.dispatch.webhooks.recorder import prune_webhook_events
from shared.clock import VirtualClock
from shared.contracts.events import EventEnvelope
from shared.db.engine import create_engine, session_factory
from shared.http import install_error_handlers

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
TS = int(NOW.timestamp())
BASE = "https://ciclo.example.com/v1/webhooks/providers"
MAILGUN_KEY = "mailgun-signing-key-0123456789abcdef"
TWILIO_TOKEN = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
VONAGE_SECRET = "q7Vw2pZr9sLk4mXb8nTc3yHd6fGj1aEu"
SENDGRID_PRIVATE = ec.generate_private_key(ec.SECP256R1())
SENDGRID_PUBLIC = base64.b64encode(
    SENDGRID_PRIVATE.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()

CONFIGS: dict[tuple[str, str], ProviderConfig] = {
    ("shop", "sendgrid"): SendGridConfig(api_key="SG.x", webhook_public_key=SENDGRID_PUBLIC),
    ("shop", "mailgun"): MailgunConfig(
        api_key="key", domain="mg.shop.example", webhook_signing_key=MAILGUN_KEY
    ),
    ("shop", "postmark"): PostmarkConfig(
        server_token="t", webhook_username="ciclo", webhook_password="pm-secret"
    ),
    ("shop", "twilio"): TwilioConfig(
        account_sid="AC" + "0" * 32, auth_token=TWILIO_TOKEN, from_number="+15005550006"
    ),
    ("shop", "vonage"): VonageConfig(
        api_key="k", api_secret="s", from_number="Shop", signature_secret=VONAGE_SECRET
    ),
    ("other", "sendgrid"): SendGridConfig(api_key="SG.y", webhook_public_key=SENDGRID_PUBLIC),
}

SENT = [
    # message_id, workspace, customer, channel, template, provider
    ("msg_ana", "shop", "c-ana", "email", "welcome-1", "sendgrid"),
    ("msg_bo", "shop", "c-bo", "email", "winback-2", "mailgun"),
    ("msg_cy", "shop", "c-cy", "email", "cart-1", "postmark"),
    ("msg_sms", "shop", "c-dee", "sms", "cart-sms", "twilio"),
    ("msg_vonage", "shop", "c-eve", "sms", "cart-sms", "vonage"),
    ("msg_elsewhere", "other", "c-x", "email", "welcome-1", "sendgrid"),
]


async def configs(workspace_id: str, kind: str) -> ProviderConfig | None:
    return CONFIGS.get((workspace_id, kind))


class Ciclo:
    def __init__(self, engine: AsyncEngine, client: httpx.AsyncClient) -> None:
        self.engine = engine
        self.client = client
        self.notified = 0

    async def events(self) -> list[EventEnvelope]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(outbox.c.value).order_by(outbox.c.id))
            return [EventEnvelope.from_json(r.value) for r in rows]

    async def recorded(self) -> list[tuple[str, str]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(webhook_events.c.provider, webhook_events.c.event_id))
            return sorted((r.provider, r.event_id) for r in rows)

    async def suppressions(self, workspace: str = "shop") -> list[Suppression]:
        async with session_factory(self.engine)() as session:
            return await Suppressions(session).list(workspace)


@pytest.fixture
async def ciclo(engine: AsyncEngine) -> AsyncIterator[Ciclo]:
    async with engine.begin() as conn:
        await conn.execute(
            insert(messages),
            [
                {
                    "message_id": m,
                    "workspace_id": w,
                    "customer_id": c,
                    "channel": ch,
                    "template": t,
                    "provider": p,
                    "status": "sent",
                    "attempts": 1,
                    "created_at": NOW - timedelta(minutes=5),
                    "updated_at": NOW - timedelta(minutes=5),
                }
                for m, w, c, ch, t, p in SENT
            ],
        )
    sessions = session_factory(engine)
    app = FastAPI()
    install_error_handlers(app)
    state: dict[str, Ciclo] = {}

    def notify() -> None:
        state["ciclo"].notified += 1

    app.include_router(
        provider_webhooks_router(
            uow=lambda: DispatchUnitOfWork(sessions),
            configs=configs,
            clock=VirtualClock(NOW),
            notify=notify,
        )
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://ciclo.example.com") as c:
        state["ciclo"] = Ciclo(engine, c)
        yield state["ciclo"]


# ── Signing as each provider does ────────────────────────────────────────────────────────────


def sendgrid_request(events: list[dict[str, Any]], *, timestamp: int = TS) -> dict[str, Any]:
    body = json.dumps(events).encode()
    signature = SENDGRID_PRIVATE.sign(str(timestamp).encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "content": body,
        "headers": {
            "Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": str(timestamp),
        },
    }


def sendgrid_event(event: str, message_id: str = "msg_ana", **fields: Any) -> dict[str, Any]:
    return {
        "email": "ana@example.com",
        "timestamp": TS - 60,
        "event": event,
        "sg_event_id": f"sg-{event}-{message_id}",
        "sg_message_id": "sgmid.filter0001",
        "ciclo_message_id": message_id,
        "ciclo_workspace_id": "shop",
        **fields,
    }


def mailgun_request(event_data: dict[str, Any], *, token: str = "a" * 50) -> dict[str, Any]:
    signature = hmac.new(MAILGUN_KEY.encode(), f"{TS}{token}".encode(), hashlib.sha256)
    block = {"timestamp": str(TS), "token": token, "signature": signature.hexdigest()}
    return {"json": {"signature": block, "event-data": event_data}}


def twilio_signature(url: str, params: list[tuple[str, str]]) -> str:
    data = url + "".join(k + v for k, v in sorted(params))
    mac = hmac.new(TWILIO_TOKEN.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(mac).decode()


def vonage_request(status: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps(status).encode()

    def b64url(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64url(b'{"alg":"HS256","typ":"JWT"}')
    claims = {"iat": TS - 2, "jti": "j1", "iss": "Vonage"}
    payload = b64url(
        json.dumps({**claims, "payload_hash": hashlib.sha256(body).hexdigest()}).encode()
    )
    mac = hmac.new(VONAGE_SECRET.encode(), f"{header}.{payload}".encode(), hashlib.sha256)
    token = f"{header}.{payload}.{b64url(mac.digest())}"
    return {
        "content": body,
        "headers": {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    }


# ── Tests ────────────────────────────────────────────────────────────────────────────────────


async def test_sendgrid_engagements_become_events_of_the_messages_customer(ciclo: Ciclo) -> None:
    batch = [
        sendgrid_event("processed"),
        sendgrid_event("delivered"),
        sendgrid_event("open", timestamp=TS - 30),
        sendgrid_event("click", timestamp=TS - 20, url="https://shop.example/p/1"),
    ]
    answer = await ciclo.client.post(f"{BASE}/sendgrid/shop", **sendgrid_request(batch))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "status": "accepted",
        "received": 3,
        "emitted": 3,
        "duplicates": 0,
        "unknown": 0,
        "suppressed": 0,
        "invalid": 0,
        "errors": [],
    }
    events = await ciclo.events()
    assert [e.type for e in events] == ["message_delivered", "message_opened", "message_clicked"]
    assert {(e.workspace_id, e.customer_id, e.source) for e in events} == {
        ("shop", "c-ana", "dispatch")
    }
    delivered, _, clicked = events
    assert delivered.occurred_at == NOW - timedelta(seconds=60)  # SendGrid's time, not ours
    assert delivered.received_at == NOW
    assert delivered.properties == {
        "message_id": "msg_ana",
        "channel": "email",
        "template": "welcome-1",
        "provider": "sendgrid",
        "provider_status": "delivered",
        "provider_message_id": "sgmid.filter0001",
    }
    assert clicked.properties["url"] == "https://shop.example/p/1"
    assert len({e.event_id for e in events}) == 3
    assert await ciclo.recorded() == [
        ("sendgrid", "sg-click-msg_ana"),
        ("sendgrid", "sg-delivered-msg_ana"),
        ("sendgrid", "sg-open-msg_ana"),
    ]
    assert ciclo.notified == 1


async def test_a_retried_webhook_produces_nothing_new(ciclo: Ciclo) -> None:
    batch = [sendgrid_event("delivered"), sendgrid_event("open")]
    first = await ciclo.client.post(f"{BASE}/sendgrid/shop", **sendgrid_request(batch))
    assert first.json()["emitted"] == 2
    before = await ciclo.events()
    # SendGrid's retry: the same events, signed anew a minute later, plus one new event.
    retry = [*batch, sendgrid_event("click", url="https://shop.example")]
    again = await ciclo.client.post(
        f"{BASE}/sendgrid/shop", **sendgrid_request(retry, timestamp=TS + 60)
    )
    assert again.status_code == 200
    assert (again.json()["emitted"], again.json()["duplicates"]) == (1, 2)
    after = await ciclo.events()
    assert after[:2] == before
    assert [e.type for e in after[2:]] == ["message_clicked"]


async def test_concurrent_deliveries_of_one_event_emit_it_once(ciclo: Ciclo) -> None:
    request = sendgrid_request([sendgrid_event("delivered")])
    answers = await asyncio.gather(
        *(ciclo.client.post(f"{BASE}/sendgrid/shop", **request) for _ in range(3))
    )
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert sorted(a.json()["emitted"] for a in answers) == [0, 0, 1]
    assert len(await ciclo.events()) == 1


async def test_hard_bounces_and_complaints_suppress_the_address(ciclo: Ciclo) -> None:
    batch = [
        sendgrid_event("bounce", sg_event_id="b1", type="blocked", reason="try later"),
        sendgrid_event("bounce", sg_event_id="b2", type="bounce", email="Ana@Example.COM"),
    ]
    answer = await ciclo.client.post(f"{BASE}/sendgrid/shop", **sendgrid_request(batch))
    assert answer.json()["suppressed"] == 1
    complaint = {
        "RecordType": "SpamComplaint",
        "ID": 42,
        "Type": "SpamComplaint",
        "TypeCode": 100001,
        "MessageID": "pm-1",
        "Email": "cy@example.com",
        "BouncedAt": "2026-11-23T08:59:00Z",
        "Metadata": {"ciclo_message_id": "msg_cy"},
    }
    answer = await ciclo.client.post(
        f"{BASE}/postmark/shop", json=complaint, auth=("ciclo", "pm-secret")
    )
    assert answer.status_code == 200, answer.text
    suppressed = {(s.address, s.scope, s.reason, s.customer_id) for s in await ciclo.suppressions()}
    assert suppressed == {
        ("ana@example.com", "all", "hard_bounce", "c-ana"),
        ("cy@example.com", "all", "complaint", "c-cy"),
    }
    events = await ciclo.events()
    assert [(e.type, e.customer_id, e.properties.get("bounce")) for e in events] == [
        ("message_bounced", "c-ana", "soft"),
        ("message_bounced", "c-ana", "hard"),
        ("message_complained", "c-cy", None),
        ("consent_updated", "c-cy", None),
    ]
    assert events[3].properties == {
        "channel": "email",
        "status": "revoked",
        "category": "marketing",
        "source": "postmark",
        "message_id": "msg_cy",
    }


async def test_a_provider_unsubscribe_revokes_marketing_consent(ciclo: Ciclo) -> None:
    event = {
        "id": "mg-ev-1",
        "timestamp": TS - 5.5,
        "event": "unsubscribed",
        "recipient": "bo@example.com",
        "user-variables": {"ciclo_message_id": "msg_bo"},
    }
    answer = await ciclo.client.post(f"{BASE}/mailgun/shop", **mailgun_request(event))
    assert answer.status_code == 200, answer.text
    unsubscribed, consent = await ciclo.events()
    assert (unsubscribed.type, unsubscribed.customer_id) == ("message_unsubscribed", "c-bo")
    assert (consent.type, consent.properties["status"], consent.properties["source"]) == (
        "consent_updated",
        "revoked",
        "mailgun",
    )
    [suppression] = await ciclo.suppressions()
    assert (suppression.address, suppression.scope, suppression.reason) == (
        "bo@example.com",
        "marketing",
        "unsubscribe",
    )


async def test_a_replayed_mailgun_token_is_refused(ciclo: Ciclo) -> None:
    event = {"id": "mg-ev-2", "timestamp": TS - 1, "event": "opened", "recipient": "bo@example.com"}
    event["user-variables"] = {"ciclo_message_id": "msg_bo"}
    first = await ciclo.client.post(f"{BASE}/mailgun/shop", **mailgun_request(event))
    assert first.status_code == 200
    # The captured signature again, now on another event: refused, nothing written.
    replay = {**event, "id": "mg-ev-3", "event": "clicked", "url": "https://evil.example"}
    second = await ciclo.client.post(f"{BASE}/mailgun/shop", **mailgun_request(replay))
    assert second.status_code == 401
    assert second.json()["error"]["field"] == "signature.token"
    assert [e.type for e in await ciclo.events()] == ["message_opened"]
    assert ("mailgun-token", "a" * 50) in await ciclo.recorded()


@pytest.mark.parametrize("case", ["forged", "stale", "unsigned"])
async def test_forged_webhooks_are_401_and_write_nothing(ciclo: Ciclo, case: str) -> None:
    refused = REGISTRY.get_sample_value(
        "ciclo_provider_webhook_events_total", {"provider": "sendgrid", "outcome": "refused"}
    )
    request = sendgrid_request(
        [sendgrid_event("spamreport")], timestamp=TS - 600 if case == "stale" else TS
    )
    if case == "forged":
        request["content"] = request["content"].replace(b"spamreport", b"unsubscribe")
    if case == "unsigned":
        del request["headers"]["X-Twilio-Email-Event-Webhook-Signature"]
    answer = await ciclo.client.post(f"{BASE}/sendgrid/shop", **request)
    assert answer.status_code == 401
    error = answer.json()["error"]
    assert error["code"] == "unauthorized"
    assert error["field"].startswith("X-Twilio-Email-Event-Webhook-")
    assert ("stale" in error["message"]) is (case == "stale")
    assert await ciclo.events() == []
    assert await ciclo.recorded() == []
    assert await ciclo.suppressions() == []
    after = REGISTRY.get_sample_value(
        "ciclo_provider_webhook_events_total", {"provider": "sendgrid", "outcome": "refused"}
    )
    assert after == (refused or 0) + 1


async def test_wrong_credentials_of_each_provider_are_401(ciclo: Ciclo) -> None:
    record = {"RecordType": "Open", "MessageID": "pm-2", "ReceivedAt": "2026-11-23T08:59:00Z"}
    postmark = await ciclo.client.post(f"{BASE}/postmark/shop", json=record, auth=("ciclo", "x"))
    other_key = mailgun_request({"event": "opened"})
    other_key["json"]["signature"]["signature"] = "0" * 64
    mailgun = await ciclo.client.post(f"{BASE}/mailgun/shop", **other_key)
    twilio = await ciclo.client.post(
        f"{BASE}/twilio/shop",
        data={"MessageSid": "SM1", "MessageStatus": "delivered"},
        headers={"X-Twilio-Signature": "bm90IGl0"},
    )
    vonage = await ciclo.client.post(
        f"{BASE}/vonage/shop", json={"status": "delivered"}, headers={"Authorization": "Bearer x"}
    )
    assert [a.status_code for a in (postmark, mailgun, twilio, vonage)] == [401] * 4
    assert await ciclo.events() == []


async def test_messages_ciclo_did_not_send_are_200_and_emit_nothing(ciclo: Ciclo) -> None:
    batch = [
        sendgrid_event("delivered", message_id="msg_nobody_sent"),
        sendgrid_event("delivered", message_id="msg_elsewhere"),  # another workspace's message
        {k: v for k, v in sendgrid_event("open").items() if k != "ciclo_message_id"},
    ]
    answer = await ciclo.client.post(f"{BASE}/sendgrid/shop", **sendgrid_request(batch))
    assert answer.status_code == 200
    assert (answer.json()["unknown"], answer.json()["emitted"]) == (3, 0)
    assert await ciclo.events() == []
    assert await ciclo.recorded() == []
    # The other workspace's own webhook reaches its message.
    answer = await ciclo.client.post(
        f"{BASE}/sendgrid/other",
        **sendgrid_request([sendgrid_event("delivered", message_id="msg_elsewhere")]),
    )
    assert answer.json()["emitted"] == 0  # ciclo_workspace_id says shop: not other's event
    ours = {
        **sendgrid_event("delivered", message_id="msg_elsewhere"),
        "ciclo_workspace_id": "other",
    }
    answer = await ciclo.client.post(f"{BASE}/sendgrid/other", **sendgrid_request([ours]))
    assert answer.json()["emitted"] == 1
    [event] = await ciclo.events()
    assert (event.workspace_id, event.customer_id) == ("other", "c-x")


@pytest.mark.parametrize(
    "path",
    ["/sparkpost/shop", "/sendgrid/nobody", "/mailgun/other", "/sendgrid/Not%20A%20Workspace"],
)
async def test_unknown_providers_and_workspaces_are_404(ciclo: Ciclo, path: str) -> None:
    answer = await ciclo.client.post(BASE + path, **sendgrid_request([]))
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"


def invalid_count(provider: str) -> float:
    value = REGISTRY.get_sample_value(
        "ciclo_provider_webhook_events_total", {"provider": provider, "outcome": "invalid"}
    )
    return value or 0


@pytest.mark.parametrize("body", [b"not json", b'{"event": "delivered"}'])
async def test_a_body_that_is_not_sendgrids_format_is_400(ciclo: Ciclo, body: bytes) -> None:
    invalid = invalid_count("sendgrid")
    request = sendgrid_request([])
    signature = SENDGRID_PRIVATE.sign(str(TS).encode() + body, ec.ECDSA(hashes.SHA256()))
    request["content"] = body
    request["headers"]["X-Twilio-Email-Event-Webhook-Signature"] = base64.b64encode(
        signature
    ).decode()
    answer = await ciclo.client.post(f"{BASE}/sendgrid/shop", **request)
    assert answer.status_code == 400
    assert answer.json()["error"]["field"] == "body"
    assert await ciclo.events() == []
    assert invalid_count("sendgrid") == invalid + 1


async def test_a_malformed_event_is_skipped_and_the_rest_of_its_batch_recorded(
    ciclo: Ciclo, caplog: pytest.LogCaptureFixture
) -> None:
    invalid = invalid_count("sendgrid")
    no_time = sendgrid_event("open", sg_event_id="bad-1")
    del no_time["timestamp"]
    batch = [
        sendgrid_event("delivered"),
        sendgrid_event("unsubscribe"),
        sendgrid_event("bounce", type="bounce", email="ana.work@example.com"),
        no_time,
        {"timestamp": TS, "email": "ana@example.com"},  # no event
        "not an event",
        sendgrid_event("click", url="https://shop.example/p/1"),
    ]
    with caplog.at_level("WARNING", logger="services.dispatch.entrypoints.webhooks"):
        answer = await ciclo.client.post(f"{BASE}/sendgrid/shop", **sendgrid_request(batch))
    assert answer.status_code == 200, answer.text
    receipt = answer.json()
    assert (receipt["received"], receipt["emitted"], receipt["suppressed"]) == (4, 4, 2)
    assert receipt["invalid"] == 3
    assert [(e["index"], e["field"]) for e in receipt["errors"]] == [
        (3, "[3].timestamp"),
        (4, "[4].event"),
        (5, "[5]"),
    ]
    assert all(e["message"] for e in receipt["errors"])
    types = [e.type for e in await ciclo.events()]
    assert types == [
        "message_delivered",
        "message_unsubscribed",
        "consent_updated",
        "message_bounced",
        "message_clicked",
    ]
    assert {(s.address, s.reason) for s in await ciclo.suppressions()} == {
        ("ana@example.com", "unsubscribe"),
        ("ana.work@example.com", "hard_bounce"),
    }
    assert ("sendgrid", "bad-1") not in await ciclo.recorded()
    skipped = [r for r in caplog.records if r.levelname == "WARNING" and "skipped" in r.message]
    assert [r.getMessage().split(": ")[1] for r in skipped] == ["[3].timestamp", "[4].event", "[5]"]
    assert invalid_count("sendgrid") == invalid + 3
    # SendGrid's retry of the same batch: the good events are duplicates now, the bad still bad.
    again = await ciclo.client.post(
        f"{BASE}/sendgrid/shop", **sendgrid_request(batch, timestamp=TS + 60)
    )
    assert (again.status_code, again.json()["duplicates"], again.json()["invalid"]) == (200, 4, 3)


async def test_a_batch_of_only_malformed_events_is_200_so_sendgrid_stops_retrying(
    ciclo: Ciclo,
) -> None:
    answer = await ciclo.client.post(
        f"{BASE}/sendgrid/shop",
        **sendgrid_request([{"event": "delivered"}, {"event": "open", "timestamp": "soon"}]),
    )
    assert answer.status_code == 200, answer.text
    assert (answer.json()["received"], answer.json()["invalid"]) == (0, 2)
    assert [e["field"] for e in answer.json()["errors"]] == ["[0].timestamp", "[1].timestamp"]
    assert await ciclo.events() == []


async def test_a_malformed_single_event_is_422(ciclo: Ciclo) -> None:
    invalid = invalid_count("mailgun")
    event = {"id": "mg-ev-9", "event": "opened", "recipient": "bo@example.com"}  # no timestamp
    answer = await ciclo.client.post(f"{BASE}/mailgun/shop", **mailgun_request(event))
    assert answer.status_code == 422
    assert answer.json()["error"]["field"] == "event-data.timestamp"
    assert "event-data.timestamp" in answer.json()["error"]["message"]
    assert await ciclo.events() == []
    assert invalid_count("mailgun") == invalid + 1


async def test_twilio_behind_a_proxy_signs_the_public_url(ciclo: Ciclo) -> None:
    params = [
        ("MessageSid", "SM" + "1" * 32),
        ("MessageStatus", "undelivered"),
        ("ErrorCode", "30005"),
        ("To", "+4915123456789"),
        ("From", "+15017122661"),
        ("AccountSid", "AC" + "0" * 32),
    ]
    query = "ciclo_message_id=msg_sms&ciclo_workspace_id=shop"
    public = f"https://hooks.shop.example/v1/webhooks/providers/twilio/shop?{query}"
    answer = await ciclo.client.post(
        # What reaches Ciclo: plain HTTP from the proxy, to an internal host name.
        f"http://ciclo-dispatch:8000/v1/webhooks/providers/twilio/shop?{query}",
        content=urlencode(params),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Forwarded-Proto": "https, http",
            "X-Forwarded-Host": "hooks.shop.example",
            "X-Twilio-Signature": twilio_signature(public, params),
        },
    )
    assert answer.status_code == 200, answer.text
    [bounce] = await ciclo.events()
    assert (bounce.type, bounce.customer_id, bounce.occurred_at) == (
        "message_bounced",
        "c-dee",
        NOW,
    )
    assert bounce.properties["bounce"] == "hard"
    assert bounce.properties["error_code"] == "30005"
    [suppression] = await ciclo.suppressions()
    assert (suppression.channel, suppression.address, suppression.reason) == (
        "sms",
        "+4915123456789",
        "hard_bounce",
    )
    # Without the forwarded headers the URL Ciclo sees is not the one Twilio signed.
    stripped = await ciclo.client.post(
        f"http://ciclo-dispatch:8000/v1/webhooks/providers/twilio/shop?{query}",
        content=urlencode(params),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": twilio_signature(public, params),
        },
    )
    assert stripped.status_code == 401


async def test_vonage_status_becomes_an_event(ciclo: Ciclo) -> None:
    status = {
        "message_uuid": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
        "to": "4915123456789",
        "from": "Shop",
        "timestamp": "2026-11-23T08:59:58.010Z",
        "status": "delivered",
        "channel": "sms",
        "client_ref": "msg_vonage",
    }
    answer = await ciclo.client.post(f"{BASE}/vonage/shop", **vonage_request(status))
    assert answer.status_code == 200, answer.text
    [event] = await ciclo.events()
    assert (event.type, event.customer_id) == ("message_delivered", "c-eve")
    assert event.occurred_at == datetime(2026, 11, 23, 8, 59, 58, 10000, tzinfo=UTC)
    tampered = vonage_request({**status, "status": "rejected"})
    tampered["content"] = json.dumps({**status, "status": "read"}).encode()
    refused = await ciclo.client.post(f"{BASE}/vonage/shop", **tampered)
    assert refused.status_code == 401
    assert "payload_hash" in refused.json()["error"]["message"]


async def test_a_batch_repeating_an_event_counts_it_once(ciclo: Ciclo) -> None:
    batch = [
        sendgrid_event("open"),
        sendgrid_event("click", url="https://a"),
        sendgrid_event("open"),
    ]
    answer = await ciclo.client.post(f"{BASE}/sendgrid/shop", **sendgrid_request(batch))
    assert (answer.json()["received"], answer.json()["duplicates"]) == (3, 1)
    assert [e.type for e in await ciclo.events()] == ["message_opened", "message_clicked"]


async def test_an_unreachable_database_is_503_so_the_provider_retries() -> None:
    down = create_engine("postgresql+asyncpg://ciclo@127.0.0.1:1/ciclo")
    sessions = session_factory(down)
    app = FastAPI()
    install_error_handlers(app)
    router = provider_webhooks_router(
        uow=lambda: DispatchUnitOfWork(sessions), configs=configs, clock=VirtualClock(NOW)
    )
    app.include_router(router)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:
            answer = await client.post(
                f"{BASE}/sendgrid/shop", **sendgrid_request([sendgrid_event("delivered")])
            )
    finally:
        await down.dispose()
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "10"
    assert answer.json()["error"]["code"] == "unavailable"


async def test_pruning_forgets_events_older_than_a_week(ciclo: Ciclo, engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            insert(webhook_events),
            [
                {"provider": "sendgrid", "event_id": "old", "received_at": NOW - timedelta(days=8)},
                {
                    "provider": "sendgrid",
                    "event_id": "recent",
                    "received_at": NOW - timedelta(days=6),
                },
            ],
        )
    sessions = session_factory(engine)
    removed = await prune_webhook_events(lambda: DispatchUnitOfWork(sessions), now=NOW)
    assert removed == 1
    assert await ciclo.recorded() == [("sendgrid", "recent")]
    async with engine.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(webhook_events))).scalar()
    assert count == 1
