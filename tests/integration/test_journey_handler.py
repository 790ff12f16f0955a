from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.journey.adapters.tables import customers, outbox
from services.journey.domain.catalog import JourneyCatalog
from services.journey.domain.definitions import Journey
from services.journey.domain.policy import WorkspacePolicy
from services.journey.service_layer.handlers import handle_events
from services.journey.service_layer.uow import JourneyUnitOfWork
from shared.contracts.events import EventEnvelope
from shared.contracts.messages import MessageRequest
from shared.contracts.topics import MESSAGES
from shared.db.engine import session_factory

NOW = datetime(2026, 11, 23, 9, tzinfo=UTC)
WELCOME = Journey.model_validate(
    {
        "id": "welcome",
        "version": 1,
        "name": "Welcome",
        "trigger": {"event": "signup"},
        "start": "hello",
        "steps": {"hello": {"send": {"channel": "email", "template": "welcome-1"}}},
    }
)


def event(
    event_id: str, customer: str = "c1", type_: str = "signup", **kw: object
) -> EventEnvelope:
    return EventEnvelope.model_validate(
        {
            "event_id": event_id,
            "workspace_id": "demo",
            "customer_id": customer,
            "type": type_,
            "occurred_at": NOW,
            "received_at": NOW,
            "traits": {"email": f"{customer}@example.com", "first_name": customer.upper()},
            **kw,
        }
    )


async def apply(
    engine: AsyncEngine,
    events: list[EventEnvelope],
    journeys: list[Journey],
    *,
    now: datetime = NOW,
    policy: WorkspacePolicy | None = None,
) -> int:
    async with JourneyUnitOfWork(session_factory(engine)) as uow:
        return await handle_events(
            uow,
            events,
            catalog=JourneyCatalog(journeys),
            policies={"demo": policy or WorkspacePolicy()},
            now=now,
        )


async def outbox_requests(engine: AsyncEngine) -> list[MessageRequest]:
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(outbox.c.value).where(outbox.c.topic == MESSAGES).order_by(outbox.c.id)
            )
        ).all()
    return [MessageRequest.from_json(r.value) for r in rows]


async def test_signup_asks_for_the_welcome_email(engine: AsyncEngine) -> None:
    assert await apply(engine, [event("e1")], [WELCOME]) == 1
    [request] = await outbox_requests(engine)
    assert (request.customer_id, request.template, request.journey_id) == (
        "c1",
        "welcome-1",
        "welcome",
    )
    assert request.recipient["email"] == "c1@example.com"
    assert request.data["event"]["type"] == "signup"


async def test_redelivered_events_change_nothing(engine: AsyncEngine) -> None:
    await apply(engine, [event("e1"), event("e2", "c2")], [WELCOME])
    assert await apply(engine, [event("e1"), event("e2", "c2")], [WELCOME]) == 0
    assert len(await outbox_requests(engine)) == 2


async def test_a_duplicate_inside_one_batch_counts_once(engine: AsyncEngine) -> None:
    assert await apply(engine, [event("e1"), event("e1")], [WELCOME]) == 1
    assert len(await outbox_requests(engine)) == 1


async def test_reentry_never_sends_the_welcome_once_per_customer(engine: AsyncEngine) -> None:
    await apply(engine, [event("e1")], [WELCOME])
    await apply(engine, [event("e9")], [WELCOME])
    assert len(await outbox_requests(engine)) == 1


async def test_reentry_always_starts_a_new_run(engine: AsyncEngine) -> None:
    again = WELCOME.model_copy(update={"reentry": "always"})
    await apply(engine, [event("e1"), event("e9")], [again])
    first, second = await outbox_requests(engine)
    assert first.message_id != second.message_id


async def test_historical_events_build_state_but_never_send(engine: AsyncEngine) -> None:
    await apply(engine, [event("e1", historical=True)], [WELCOME])
    assert await outbox_requests(engine) == []
    async with engine.connect() as conn:
        row = (await conn.execute(select(customers))).one()
    assert row.traits["email"] == "c1@example.com"


async def test_traits_merge_across_events(engine: AsyncEngine) -> None:
    later = NOW + timedelta(days=1)
    await apply(engine, [event("e1", type_="page_viewed")], [WELCOME])
    await apply(
        engine,
        [
            event(
                "e2",
                type_="identify",
                occurred_at=later,
                traits={"first_name": "Ana", "email": None},
            )
        ],
        [WELCOME],
    )
    async with engine.connect() as conn:
        row = (await conn.execute(select(customers))).one()
    assert row.traits == {"first_name": "Ana"}
    assert row.last_seen_at.replace(tzinfo=UTC) == later


async def test_history_imported_after_live_events_keeps_the_newer_traits(
    engine: AsyncEngine,
) -> None:
    consent = {"channel": "email", "category": "marketing"}
    revoked = {**consent, "status": "revoked"}
    await apply(engine, [event("e1", type_="consent_updated", properties=revoked)], [WELCOME])
    # The import arrives later, in another batch: the state comes back from the database.
    older = NOW - timedelta(days=30)
    history = [
        event(
            "h1",
            type_="consent_updated",
            occurred_at=older,
            historical=True,
            properties={**consent, "status": "granted"},
            traits={"email": "old@example.com", "birthday": "1990-04-01"},
        )
    ]
    await apply(engine, history, [WELCOME])
    async with engine.connect() as conn:
        row = (await conn.execute(select(customers))).one()
    assert row.traits == {
        "email": "c1@example.com",
        "first_name": "C1",
        "email_marketing_consent": "revoked",
        "birthday": "1990-04-01",  # unknown until the import: filled in
    }
    assert row.trait_times["email"] == NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert row.trait_times["birthday"] == older.strftime("%Y-%m-%dT%H:%M:%SZ")
