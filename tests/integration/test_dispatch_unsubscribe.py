"""The unsubscribe pages for an address as people write it, capitals in the part before the @
(``Ana.Garcia@Example.com``): the suppression list keys email addresses case-insensitively, and
the pages must find what it holds for them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from services.dispatch.domain.unsubscribe import sign
from services.dispatch.entrypoints.unsubscribe import unsubscribe_router
from services.dispatch.service_layer.uow import DispatchUnitOfWork
from shared.clock import VirtualClock
from shared.db.engine import session_factory
from shared.http import install_error_handlers

SECRET = "dispatch-unsubscribe-secret"
NOW = datetime(2026, 11, 23, 9, tzinfo=UTC)
ADDRESS = "Ana.Garcia@Example.com"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def token() -> str:
    return sign(
        workspace_id="demo",
        customer_id="cus_1",
        channel="email",
        address=ADDRESS,
        message_id="msg_1",
        secret=SECRET,
    )


@pytest.fixture
async def client(engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    sessions = session_factory(engine)
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(
        unsubscribe_router(
            uow=lambda: DispatchUnitOfWork(sessions), secret=SECRET, clock=VirtualClock(NOW)
        )
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://shop.example") as c:
        yield c


async def suppress(engine: AsyncEngine, reason: str) -> None:
    async with DispatchUnitOfWork(session_factory(engine)) as u:
        await u.suppressions.add(
            workspace_id="demo",
            channel="email",
            address=ADDRESS,
            reason=reason,  # type: ignore[arg-type]
            source="sendgrid",
            customer_id="cus_1",
            at=NOW,
        )
        await u.commit()


async def test_a_bounced_address_with_capitals_cannot_subscribe_itself_again(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await suppress(engine, "hard_bounce")
    page = await client.get(f"/preferences/{token()}")
    assert page.status_code == 200
    assert "bounced" in page.text and 'type="checkbox"' not in page.text
    saved = await client.post(
        f"/preferences/{token()}", content="channels=email&email=subscribed", headers=FORM
    )
    assert saved.status_code == 409, saved.text


async def test_an_unsubscribed_address_with_capitals_is_shown_unsubscribed(
    client: httpx.AsyncClient,
) -> None:
    done = await client.post(f"/u/{token()}", content="List-Unsubscribe=One-Click", headers=FORM)
    assert done.status_code == 200
    confirm = await client.get(f"/u/{token()}")
    assert "already unsubscribed" in confirm.text
    centre = await client.get(f"/preferences/{token()}")
    assert 'type="checkbox"' in centre.text and " checked" not in centre.text
