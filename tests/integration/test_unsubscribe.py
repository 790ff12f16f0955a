"""Unsubscribe over HTTP on SQLite and PostgreSQL: one-click, the confirmation page, the preference
centre, and what each writes (suppression rows, consent and engagement events in the outbox)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.dispatch.adapters.tables import outbox, suppressions
from services.dispatch.domain.unsubscribe import sign
from services.dispatch.entrypoints.unsubscribe import unsubscribe_router
from services.dispatch.service_layer.erasure import erase_customers
from services.dispatch.service_layer.uow import DispatchUnitOfWork
from shared.clock import VirtualClock
from shared.contracts.erasure import ErasureRequest
from shared.contracts.events import EventEnvelope
from shared.db.engine import session_factory
from shared.http import install_error_handlers

SECRET = "integration-secret"
NOW = datetime(2026, 11, 23, 9, tzinfo=UTC)
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
# The body of RFC 8058's own example.
MULTIPART = (
    b"--FormBoundaryjWmhtjORrn\r\n"
    b'Content-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
    b"One-Click\r\n--FormBoundaryjWmhtjORrn--\r\n"
)


def token(
    *,
    address: str = "ana@example.com",
    channel: str = "email",
    customer_id: str = "cus_1",
    secret: str = SECRET,
) -> str:
    return sign(
        workspace_id="demo",
        customer_id=customer_id,
        channel=channel,  # type: ignore[arg-type]
        address=address,
        message_id="msg_1",
        secret=secret,
    )


async def sent(engine: AsyncEngine, message_id: str = "msg_1", customer_id: str = "cus_1") -> None:
    """The ledger row of a message sent: what every real link was minted for."""
    async with DispatchUnitOfWork(session_factory(engine)) as u:
        await u.ledger.insert(
            [
                {
                    "message_id": message_id,
                    "workspace_id": "demo",
                    "customer_id": customer_id,
                    "channel": "email",
                    "template": "welcome-1",
                    "provider": "sink",
                    "status": "sent",
                    "attempts": 1,
                    "created_at": NOW,
                    "updated_at": NOW,
                }
            ]
        )
        await u.commit()


@pytest.fixture
async def client(engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    sessions = session_factory(engine)
    await sent(engine)
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(
        unsubscribe_router(
            uow=lambda: DispatchUnitOfWork(sessions),
            secret=SECRET,
            clock=VirtualClock(NOW),
            shop_name="Tienda <Ana> & Co",
        )
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="https://shop.example", follow_redirects=False
    ) as c:
        yield c


async def rows(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(select(suppressions).order_by(suppressions.c.address))
        return [dict(r._mapping) for r in result]


async def events(engine: AsyncEngine) -> list[EventEnvelope]:
    async with engine.connect() as conn:
        result = await conn.execute(select(outbox.c.value).order_by(outbox.c.id))
        return [EventEnvelope.from_json(r.value) for r in result]


async def suppress(engine: AsyncEngine, reason: str, address: str = "ana@example.com") -> None:
    async with DispatchUnitOfWork(session_factory(engine)) as u:
        await u.suppressions.add(
            workspace_id="demo",
            channel="email",
            address=address,
            reason=reason,  # type: ignore[arg-type]
            source="sendgrid",
            customer_id="cus_1",
            at=NOW,
        )
        await u.commit()


def unsubscribes(source: str, channel: str = "email") -> float:
    labels = {"source": source, "channel": channel}
    return REGISTRY.get_sample_value("ciclo_unsubscribes_total", labels) or 0.0


def assert_safe_page(response: httpx.Response) -> None:
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "script-src" not in csp  # falls back to default-src: no script at all
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "<script" not in response.text


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"List-Unsubscribe=One-Click", FORM),
        (MULTIPART, {"Content-Type": "multipart/form-data; boundary=FormBoundaryjWmhtjORrn"}),
        (b"", {}),
    ],
    ids=["urlencoded", "multipart", "empty"],
)
async def test_one_click_post_unsubscribes_at_once(
    client: httpx.AsyncClient, engine: AsyncEngine, body: bytes, headers: dict[str, str]
) -> None:
    before = unsubscribes("one-click")
    response = await client.post(f"/u/{token()}", content=body, headers=headers)
    assert response.status_code == 200
    assert "location" not in response.headers
    assert_safe_page(response)
    assert "ana@example.com</strong> gets no more marketing email" in response.text
    [row] = await rows(engine)
    assert (row["workspace_id"], row["channel"], row["address"]) == (
        "demo",
        "email",
        "ana@example.com",
    )
    assert (row["reason"], row["scope"], row["source"], row["customer_id"]) == (
        "unsubscribe",
        "marketing",
        "one-click",
        "cus_1",
    )
    consent, unsubscribed = await events(engine)
    assert (consent.type, consent.customer_id, consent.workspace_id) == (
        "consent_updated",
        "cus_1",
        "demo",
    )
    assert consent.properties == {
        "channel": "email",
        "status": "revoked",
        "category": "marketing",
        "source": "one-click",
        "message_id": "msg_1",
    }
    assert consent.occurred_at == NOW
    assert unsubscribed.type == "message_unsubscribed"
    assert unsubscribed.properties["message_id"] == "msg_1"
    assert unsubscribed.properties["source"] == "one-click"
    assert unsubscribes("one-click") == before + 1


async def test_get_never_unsubscribes(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    for path in (f"/u/{token()}", f"/u/{token()}", f"/preferences/{token()}"):
        response = await client.get(path)
        assert response.status_code == 200
        assert_safe_page(response)
        assert '<form method="post">' in response.text
    assert await rows(engine) == []
    assert await events(engine) == []


async def test_the_confirmation_page_posts_back_and_escapes_what_it_shows(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    odd = token(address="o'brien&co@example.com")
    page = await client.get(f"/u/{odd}")
    assert "o&#x27;brien&amp;co@example.com" in page.text
    assert "Tienda &lt;Ana&gt; &amp; Co" in page.text
    assert "Emails about your orders" in page.text
    assert f'href="../preferences/{odd}"' in page.text
    # What the button sends, as a browser would.
    response = await client.post(f"/u/{odd}", data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    assert [r["address"] for r in await rows(engine)] == ["o'brien&co@example.com"]
    again = await client.get(f"/u/{odd}")
    assert "already unsubscribed" in again.text
    assert "<button" not in again.text


async def test_a_repeated_post_changes_nothing(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    before = unsubscribes("one-click")
    first = await client.post(f"/u/{token()}", data={"List-Unsubscribe": "One-Click"})
    written = await rows(engine), await events(engine)
    second = await client.post(f"/u/{token()}", data={"List-Unsubscribe": "One-Click"})
    assert (first.status_code, second.status_code) == (200, 200)
    assert (await rows(engine), await events(engine)) == written
    assert len(written[1]) == 2
    assert unsubscribes("one-click") == before + 1


async def test_racing_posts_record_one_unsubscribe(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    answers = await asyncio.gather(*(client.post(f"/u/{token()}") for _ in range(4)))
    assert [a.status_code for a in answers] == [200] * 4
    assert len(await rows(engine)) == 1
    assert [e.type for e in await events(engine)] == ["consent_updated", "message_unsubscribed"]


@pytest.mark.parametrize(
    "forged",
    [
        token(secret="someone-elses-secret"),
        token()[:-2] + ("AA" if not token().endswith("AA") else "BB"),
        token().replace("v1.", "v2.", 1),
        "not-a-token",
    ],
    ids=["other-secret", "tampered-mac", "unknown-version", "garbage"],
)
async def test_a_forged_token_is_refused_and_nothing_is_written(
    client: httpx.AsyncClient, engine: AsyncEngine, forged: str
) -> None:
    for method, path in (
        ("POST", f"/u/{forged}"),
        ("GET", f"/u/{forged}"),
        ("GET", f"/preferences/{forged}"),
        ("POST", f"/preferences/{forged}"),
    ):
        response = await client.request(method, path, content=b"channels=email", headers=FORM)
        assert response.status_code == 400, (method, path)
        assert_safe_page(response)
        assert "This link does not work" in response.text
    api = await client.post(f"/u/{forged}", headers={"Accept": "application/json"})
    assert api.status_code == 400
    error = api.json()["error"]
    assert (error["code"], error["field"]) == ("bad_request", "token")
    assert error["message"].startswith("token: ")
    assert await rows(engine) == []
    assert await events(engine) == []


async def test_preference_centre_unsubscribes_and_resubscribes(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    path = f"/preferences/{token()}"
    page = await client.get(path)
    assert 'name="email" value="subscribed" checked' in page.text
    assert "This page manages this one address" in page.text

    before = unsubscribes("preference-centre")
    off = await client.post(path, data={"channels": "email"})
    assert off.status_code == 200
    assert "You get no more marketing email" in off.text
    assert 'value="subscribed">' in off.text  # now unticked
    [row] = await rows(engine)
    assert (row["reason"], row["source"]) == ("unsubscribe", "preference-centre")
    assert unsubscribes("preference-centre") == before + 1

    on = await client.post(path, data={"channels": "email", "email": "subscribed"})
    assert on.status_code == 200
    assert "Welcome back" in on.text
    assert await rows(engine) == []
    revoked, unsubscribed, granted = await events(engine)
    assert (revoked.type, revoked.properties["status"]) == ("consent_updated", "revoked")
    assert revoked.properties["source"] == "preference-centre"
    assert unsubscribed.type == "message_unsubscribed"
    assert (granted.type, granted.properties["status"]) == ("consent_updated", "granted")
    assert granted.properties["source"] == "preference-centre"

    # Saving what is already so records nothing (a box left ticked is not a new consent).
    same = await client.post(path, data={"channels": "email", "email": "subscribed"})
    assert "Nothing changed" in same.text
    assert len(await events(engine)) == 3

    # Unsubscribing again from the same message is a new fact with new event ids.
    await client.post(f"/u/{token()}")
    ids = [e.event_id for e in await events(engine)]
    assert len(ids) == 5
    assert len(set(ids)) == 5


async def test_resubscribe_lifts_an_unsubscribe_but_not_a_hard_bounce(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await suppress(engine, "hard_bounce")
    path = f"/preferences/{token()}"
    page = await client.get(path)
    assert "bounced" in page.text
    assert 'type="checkbox"' not in page.text

    refused = await client.post(path, data={"channels": "email", "email": "subscribed"})
    assert refused.status_code == 409
    assert_safe_page(refused)
    assert "cannot be subscribed again" in refused.text
    as_json = await client.post(
        path,
        data={"channels": "email", "email": "subscribed"},
        headers={"Accept": "application/json"},
    )
    assert as_json.status_code == 409
    assert as_json.json()["error"]["field"] == "email"

    # One-click on a bounced address answers 200 and leaves the stronger suppression alone.
    assert (await client.post(f"/u/{token()}")).status_code == 200
    [row] = await rows(engine)
    assert (row["reason"], row["scope"]) == ("hard_bounce", "all")
    assert await events(engine) == []


async def test_a_complaint_is_explained_on_every_page(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await suppress(engine, "complaint")
    for path in (f"/u/{token()}", f"/preferences/{token()}"):
        page = await client.get(path)
        assert "reported as spam" in page.text
        assert "not even about orders" in page.text


async def test_sms_links_manage_the_phone_number(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    sms = token(channel="sms", address="+49 151 12345678")
    page = await client.get(f"/preferences/{sms}")
    assert "marketing text messages" in page.text
    assert (await client.post(f"/u/{sms}")).status_code == 200
    [row] = await rows(engine)
    assert (row["channel"], row["address"]) == ("sms", "+4915112345678")
    assert {e.properties["channel"] for e in await events(engine)} == {"sms"}


@pytest.mark.parametrize(
    ("content", "headers", "status", "field"),
    [
        (b"channels=sms&sms=subscribed", FORM, 400, "channels"),
        (b"channels=email&email=yes", FORM, 400, "email"),
        (b"channels=email&email=%FF", FORM, 400, "email"),
        (b'{"channels": "email"}', {"Content-Type": "application/json"}, 415, "Content-Type"),
        (b"channels=email&x=" + b"a" * 5000, FORM, 413, "body"),
    ],
    ids=["other-channel", "bad-value", "bad-utf8", "json", "too-large"],
)
async def test_a_bad_preference_form_is_a_clear_4xx_and_writes_nothing(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    content: bytes,
    headers: dict[str, str],
    status: int,
    field: str,
) -> None:
    response = await client.post(
        f"/preferences/{token()}",
        content=content,
        headers={**headers, "Accept": "application/json"},
    )
    assert response.status_code == status
    assert response.json()["error"]["field"] == field
    assert await rows(engine) == []
    assert await events(engine) == []


# ── Addresses as people write them ───────────────────────────────────────────────────────────
# The suppression list keys email addresses case-insensitively; the pages must find what it
# holds for an address with capitals in the part before the @.

CAPITALS = "Ana.Garcia@Example.com"


async def test_a_bounced_address_with_capitals_cannot_subscribe_itself_again(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await suppress(engine, "hard_bounce", CAPITALS)
    link = token(address=CAPITALS)
    page = await client.get(f"/preferences/{link}")
    assert page.status_code == 200
    assert "bounced" in page.text and 'type="checkbox"' not in page.text
    saved = await client.post(
        f"/preferences/{link}", content="channels=email&email=subscribed", headers=FORM
    )
    assert saved.status_code == 409, saved.text


async def test_an_unsubscribed_address_with_capitals_is_shown_unsubscribed(
    client: httpx.AsyncClient,
) -> None:
    link = token(address=CAPITALS)
    done = await client.post(f"/u/{link}", content="List-Unsubscribe=One-Click", headers=FORM)
    assert done.status_code == 200
    confirm = await client.get(f"/u/{link}")
    assert "already unsubscribed" in confirm.text
    centre = await client.get(f"/preferences/{link}")
    assert 'type="checkbox"' in centre.text and " checked" not in centre.text


# ── Links as mail clients, scanners and link trackers handle them ────────────────────────────


async def test_head_answers_like_get_and_changes_nothing(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """Link checkers and mail scanners ask HEAD before (or instead of) GET: a 405 reads as a
    broken link, and a HEAD must unsubscribe no more than a GET does."""
    for path in (f"/u/{token()}", f"/preferences/{token()}"):
        response = await client.head(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith("text/html")
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["referrer-policy"] == "no-referrer"
    assert (await client.head("/u/not-a-token")).status_code == 400
    assert await rows(engine) == []
    assert await events(engine) == []


@pytest.mark.parametrize("query", ["", "?utm_source=newsletter&utm_medium=email"])
async def test_a_trailing_slash_is_the_same_link_and_never_a_redirect(
    client: httpx.AsyncClient, engine: AsyncEngine, query: str
) -> None:
    """RFC 8058: the one-click POST is answered 200, never redirected (a provider need not
    follow, and a redirect built from the Host header loses a proxy's path prefix)."""
    page = await client.get(f"/u/{token()}/{query}")
    assert page.status_code == 200
    assert '<form method="post">' in page.text
    # The relative link to the preference centre still lands on it from the slashed URL.
    [href] = [h for h in page.text.split('href="')[1:] if "preferences" in h]
    manage = httpx.URL(f"https://shop.example/u/{token()}/{query}").join(href.split('"')[0])
    assert manage.path == f"/preferences/{token()}"
    done = await client.post(
        f"/u/{token()}/{query}", content="List-Unsubscribe=One-Click", headers=FORM
    )
    assert done.status_code == 200
    assert "location" not in done.headers
    [row] = await rows(engine)
    assert row["reason"] == "unsubscribe"
    centre = await client.get(f"/preferences/{token()}/{query}")
    assert centre.status_code == 200
    assert 'type="checkbox"' in centre.text and " checked" not in centre.text
    back = await client.post(
        f"/preferences/{token()}/{query}", content="channels=email&email=subscribed", headers=FORM
    )
    assert back.status_code == 200
    assert "Welcome back" in back.text
    assert await rows(engine) == []


# ── A link of an erased customer ─────────────────────────────────────────────────────────────
# Mail stays in inboxes after the shop erased the customer (GDPR art. 17). Pressing its
# unsubscribe must still stop mail to the address, but must not bring the person back: an event
# naming the customer would rebuild a profile in the journey service.


async def erase(engine: AsyncEngine, customer_id: str = "cus_1") -> None:
    request = ErasureRequest(
        erasure_id="era_test",
        workspace_id="demo",
        customer_id=customer_id,
        requested_at=NOW,
    )
    await erase_customers(lambda: DispatchUnitOfWork(session_factory(engine)), [request])


async def test_an_erased_customers_link_suppresses_the_address_and_names_nobody(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await erase(engine)
    before = unsubscribes("one-click")
    done = await client.post(f"/u/{token()}", content="List-Unsubscribe=One-Click", headers=FORM)
    assert done.status_code == 200
    assert "gets no more marketing email" in done.text
    [row] = await rows(engine)
    assert (row["address"], row["reason"], row["scope"]) == (
        "ana@example.com",
        "unsubscribe",
        "marketing",
    )
    assert row["customer_id"] is None
    assert await events(engine) == []
    assert unsubscribes("one-click") == before + 1

    # The preference centre: re-subscribing lifts the suppression, still naming nobody.
    back = await client.post(
        f"/preferences/{token()}", content="channels=email&email=subscribed", headers=FORM
    )
    assert "Welcome back" in back.text
    assert await rows(engine) == []
    off = await client.post(f"/preferences/{token()}", content="channels=email", headers=FORM)
    assert "no more marketing email" in off.text
    [row] = await rows(engine)
    assert row["customer_id"] is None
    assert await events(engine) == []


async def test_a_customer_who_came_back_after_an_erasure_is_named_by_new_links(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """Only the links of messages sent before the erasure name nobody: a message sent after
    (the person signed up again) is in the ledger, and its link works as any other."""
    await erase(engine)
    await sent(engine, "msg_2")
    link = sign(
        workspace_id="demo",
        customer_id="cus_1",
        channel="email",
        address="ana@example.com",
        message_id="msg_2",
        secret=SECRET,
    )
    assert (await client.post(f"/u/{link}")).status_code == 200
    [row] = await rows(engine)
    assert row["customer_id"] == "cus_1"
    consent, unsubscribed = await events(engine)
    assert (consent.type, consent.customer_id) == ("consent_updated", "cus_1")
    assert consent.properties["message_id"] == "msg_2"
    assert unsubscribed.type == "message_unsubscribed"
