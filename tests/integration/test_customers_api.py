"""The customer API over HTTP (httpx against the ASGI app) on SQLite and PostgreSQL: a customer
built by the journey handler from real events, read back with profile, lead score and its
explanation, stage, segments, insights, active runs and timeline; identity resolution; the
data-subject export."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from services.components import components_for
from services.dispatch.adapters.tables import messages, suppressions
from services.journey.adapters.files import load_catalog
from services.journey.adapters.tables import identities
from services.journey.domain.policy import WorkspacePolicy
from services.journey.service_layer.handlers import handle_events, handle_insights
from services.journey.service_layer.uow import JourneyUnitOfWork
from services.journey.settings import JourneySettings
from services.runtime import Runtime
from shared.clock import VirtualClock
from shared.contracts.events import EventEnvelope
from shared.db.engine import session_factory
from shared.db.migrate import upgrade
from shared.settings import ServerSettings
from shared.tenancy.keys import Scope

NOW = datetime(2026, 11, 23, 9, tzinfo=UTC)

WELCOME = {
    "id": "welcome",
    "version": 1,
    "name": "Welcome",
    "trigger": {"event": "signup"},
    "goal": {"event": "order_completed", "within": "P14D"},
    "start": "wait",
    "steps": {
        "wait": {"wait": "P3D", "next": "hello"},
        "hello": {"send": {"channel": "email", "template": "welcome-1"}, "next": "end"},
        "end": {"exit": True},
    },
}
NURTURE = {
    "id": "nurture",
    "version": 2,
    "name": "Nurture until the first order",
    "trigger": {"event": "signup"},
    "exit_when": [{"event": "order_completed"}],
    "start": "wait",
    "steps": {
        "wait": {"wait": "P1D", "next": "hello"},
        "hello": {"send": {"channel": "email", "template": "welcome-1"}, "next": "end"},
        "end": {"exit": True},
    },
}


def event(
    event_id: str,
    type_: str,
    at: datetime,
    *,
    customer: str | None = "cust-ana",
    anonymous: str | None = None,
    **kw: Any,
) -> EventEnvelope:
    return EventEnvelope.model_validate(
        {
            "event_id": event_id,
            "workspace_id": "shop",
            "customer_id": customer,
            "anonymous_id": anonymous,
            "type": type_,
            "occurred_at": at,
            "received_at": at,
            **kw,
        }
    )


ANA = [
    event(
        "e-signup",
        "signup",
        NOW - timedelta(hours=3),
        traits={"email": "ana@example.com", "first_name": "Ana"},
    ),
    event(
        "e-order",
        "order_completed",
        NOW - timedelta(hours=2),
        properties={"order_id": "o-1", "total": 120, "currency": "USD"},
    ),
    event("e-identify", "identify", NOW - timedelta(hours=1), traits={"city": "Madrid"}),
]


@dataclass
class Api:
    client: httpx.AsyncClient
    runtime: Runtime
    engine: AsyncEngine
    keys: dict[str, str]
    other_admin: str
    journeys_dir: Path

    def auth(self, scope: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[scope]}"}

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        headers = kw.pop("headers", None) or self.auth()
        return await self.client.get(path, headers=headers, **kw)

    async def apply(self, events: list[EventEnvelope], *, now: datetime = NOW) -> None:
        async with JourneyUnitOfWork(session_factory(self.engine)) as uow:
            await handle_events(
                uow,
                events,
                catalog=load_catalog(self.journeys_dir),
                policies={"shop": WorkspacePolicy()},
                now=now,
            )

    async def insights(self, customer: str, values: dict[str, Any]) -> None:
        async with JourneyUnitOfWork(session_factory(self.engine)) as uow:
            await handle_insights(
                uow,
                {("shop", customer): values},
                catalog=load_catalog(self.journeys_dir),
                policies={"shop": WorkspacePolicy()},
                now=NOW,
            )


def journeys_folder(tmp_path: Path) -> tuple[Path, Path]:
    journeys = tmp_path / "journeys"
    journeys.mkdir()
    for document in (WELCOME, NURTURE):
        (journeys / f"{document['id']}.json").write_text(json.dumps(document))
    templates = tmp_path / "templates"
    (templates / "welcome-1").mkdir(parents=True)
    return journeys, templates


@pytest.fixture
async def api(tmp_path: Path, engine: AsyncEngine, database_url: str) -> AsyncIterator[Api]:
    journeys, templates = journeys_folder(tmp_path)
    runtime = Runtime(
        services=("journey",),
        clock=VirtualClock(NOW),
        server=ServerSettings(data_dir=tmp_path, database_url=database_url, rate_limit=0),
        journey=JourneySettings(journeys_dir=journeys, templates_dir=templates),
    )
    await runtime.keys.ensure_workspace("shop")
    await runtime.keys.ensure_workspace("other")
    keys = {scope.value: (await runtime.keys.create_key("shop", scope))[1] for scope in Scope}
    _, other_admin = await runtime.keys.create_key("other", Scope.ADMIN)
    transport = httpx.ASGITransport(app=runtime.app())
    async with httpx.AsyncClient(transport=transport, base_url="http://ciclo") as client:
        yield Api(client, runtime, engine, keys, other_admin, journeys)
    await runtime.engine.dispose()


async def merge(engine: AsyncEngine, alias: str, into: str, at: datetime = NOW) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            insert(identities).values(
                workspace_id="shop", alias=alias, customer_id=into, merged_at=at
            )
        )


# ── Auth ──────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/customers/cust-ana"),
        ("GET", "/v1/customers/cust-ana/export"),
        ("DELETE", "/v1/customers/cust-ana"),
    ],
)
async def test_admin_key_is_required(api: Api, method: str, path: str) -> None:
    anonymous = await api.client.request(method, path)
    assert anonymous.status_code == 401
    ingest = await api.client.request(method, path, headers=api.auth("ingest"))
    assert ingest.status_code == 403
    assert ingest.json()["error"]["field"] == "Authorization"


# ── Reading ───────────────────────────────────────────────────────────────────────────────────


async def test_a_customer_shows_profile_lead_stage_segments_runs_and_timeline(api: Api) -> None:
    await api.apply(ANA)
    answer = await api.get("/v1/customers/cust-ana")
    assert answer.status_code == 200, answer.text
    body = answer.json()

    assert body["id"] == "cust-ana"
    assert body["merged_from"] == []
    assert body["traits"] == {"email": "ana@example.com", "first_name": "Ana", "city": "Madrid"}
    assert body["first_seen_at"] == "2026-11-23T06:00:00Z"
    assert body["last_seen_at"] >= "2026-11-23T08:00:00Z"

    profile = body["profile"]
    assert profile["order_count"] == 1
    assert profile["last_order_id"] == "o-1"
    assert profile["first_order_at"] == "2026-11-23T07:00:00Z"
    assert profile["first_seen_at"] == "2026-11-23T06:00:00Z"

    lead = body["lead"]
    rules = {line["rule"]: line for line in lead["explanation"]}
    assert set(rules) == {"order-completed"}
    assert rules["order-completed"]["events"] == 1
    assert rules["order-completed"]["last_event_at"] == "2026-11-23T07:00:00Z"
    # 40 points two hours ago, half-life 30 days: the explanation adds up to the score.
    assert lead["score"] == pytest.approx(40 * 0.5 ** (2 / (30 * 24)), abs=0.01)
    assert math.isclose(lead["score"], sum(r["points_now"] for r in rules.values()), abs_tol=0.02)
    assert lead["band"] == "warm"
    # Decays below "warm" (20) one half-life after the order.
    changes_at = datetime.fromisoformat(lead["next_band_change_at"])
    assert abs(changes_at - (NOW - timedelta(hours=2) + timedelta(days=30))) < timedelta(seconds=1)

    stage = body["stage"]
    assert stage["name"] == "first_time_buyer"
    assert (stage["rhythm_days"], stage["at_risk_after"], stage["lapsed_after"]) == (
        45.0,
        90.0,
        180.0,
    )
    assert stage["next_change_at"] == "2027-02-21T07:00:00Z"  # the order + 90 days

    assert [(s["id"], s["name"]) for s in body["segments"]] == [
        ("one_time_buyer", "One-time buyer")
    ]
    assert body["segments"][0]["entered_at"] == "2026-11-23T09:00:00Z"

    [run] = body["journeys"]  # nurture exited on the order; welcome waits
    assert (run["journey_id"], run["version"], run["step"], run["status"]) == (
        "welcome",
        1,
        "wait",
        "active",
    )
    assert run["waiting"] == "wait"
    assert run["wake_at"] == "2026-11-26T09:00:00Z"

    timeline = body["timeline"]
    moments = [e["at"] for e in timeline]
    assert moments == sorted(moments, reverse=True)
    # At 09:00 (when the batch ran) the journeys' decisions, then the events the service raised
    # itself (newest first); then the customer's own events.
    assert [(e["source"], e["type"], e["journey_id"]) for e in timeline[:2]] in (
        [("journey", "exited", "nurture"), ("journey", "goal", "welcome")],
        [("journey", "goal", "welcome"), ("journey", "exited", "nurture")],
    )
    exited = next(e for e in timeline if e["type"] == "exited")
    assert (exited["reason"], exited["detail"]) == ("exit_when", {"event": "order_completed"})
    derived = [e["type"] for e in timeline[2:] if e["at"] == "2026-11-23T09:00:00Z"]
    assert set(derived) == {"lead_band_changed", "lifecycle_stage_changed", "segment_entered"}
    assert all(e["source"] == "event" for e in timeline[2:])
    assert [(e["type"], e["event_id"]) for e in timeline[-3:]] == [
        ("identify", "e-identify"),
        ("order_completed", "e-order"),
        ("signup", "e-signup"),
    ]


async def test_rfm_and_predictions_come_from_the_scheduled_job(api: Api) -> None:
    await api.apply(ANA)
    before = (await api.get("/v1/customers/cust-ana")).json()
    assert (before["rfm"], before["predictions"], before["insights_computed_at"]) == (
        None,
        None,
        None,
    )
    await api.insights(
        "cust-ana",
        {
            "rfm": {"r": 5, "f": 1, "m": 5},
            "predictions": {"purchase_probability_90d": 0.42, "clv_365d": "310.50"},
            "computed_at": "2026-11-23T08:30:00Z",
        },
    )
    body = (await api.get("/v1/customers/cust-ana")).json()
    assert body["rfm"] == {"r": 5, "f": 1, "m": 5}
    assert body["predictions"]["purchase_probability_90d"] == 0.42
    assert body["insights_computed_at"] == "2026-11-23T08:30:00Z"
    # The monetary score 5 puts her in the built-in "big spender" segment.
    assert {s["id"] for s in body["segments"]} == {"one_time_buyer", "big_spender"}


async def test_the_score_decays_with_the_clock(api: Api) -> None:
    await api.apply(ANA)
    first = (await api.get("/v1/customers/cust-ana")).json()["lead"]
    api.runtime.clock.advance(timedelta(days=30))  # type: ignore[attr-defined]
    later = (await api.get("/v1/customers/cust-ana")).json()
    assert later["lead"]["score"] == pytest.approx(first["score"] / 2, abs=0.01)
    assert later["lead"]["band"] == "cold"
    assert later["profile"]["days_since_last_order"] == 30


async def test_an_alias_answers_for_the_customer_it_was_merged_into(api: Api) -> None:
    await api.apply(ANA)
    await merge(api.engine, "anon:visitor-7", "cust-ana")
    await merge(api.engine, "old-id", "anon:visitor-7")  # a merge of a merge
    for path in ("/v1/customers/anon%3Avisitor-7", "/v1/customers/old-id"):
        body = (await api.get(path)).json()
        assert body["id"] == "cust-ana", path
        assert body["merged_from"] == ["anon:visitor-7", "old-id"]
    direct = (await api.get("/v1/customers/cust-ana")).json()
    assert direct["merged_from"] == ["anon:visitor-7", "old-id"]


async def test_an_anonymous_customer_is_addressed_as_anon(api: Api) -> None:
    await api.apply(
        [
            event(
                "v-1",
                "product_viewed",
                NOW - timedelta(minutes=5),
                customer=None,
                anonymous="visitor-9",
            )
        ]
    )
    body = (await api.get("/v1/customers/anon%3Avisitor-9")).json()
    assert body["id"] == "anon:visitor-9"
    assert body["lead"]["explanation"][0]["rule"] == "product-viewed"
    assert body["stage"]["name"] == "subscriber"
    assert (await api.get("/v1/customers/visitor-9")).status_code == 404


async def test_an_id_with_slashes_is_addressable_as_it_is_or_encoded(api: Api) -> None:
    """Shopify's customer ids are ``gid://shopify/Customer/<n>``: the path takes them whole,
    and the sub-resources after them still resolve."""
    gid = "gid://shopify/Customer/7208335310865"
    await api.apply([event("e-gid", "signup", NOW - timedelta(hours=1), customer=gid)])
    for path in (f"/v1/customers/{gid}", "/v1/customers/" + gid.replace("/", "%2F")):
        answer = await api.get(path)
        assert answer.status_code == 200, (path, answer.text)
        assert answer.json()["id"] == gid
    export = await api.get(f"/v1/customers/{gid}/export")
    assert export.status_code == 200 and export.json()["customer_id"] == gid
    runs = await api.get(f"/v1/customers/{gid}/journeys")
    assert runs.status_code == 200, runs.text
    assert {r["journey_id"] for r in runs.json()["runs"]} == {"welcome", "nurture"}
    erased = await api.client.delete(f"/v1/customers/{gid}", headers=api.auth())
    assert erased.status_code == 202
    assert (await api.get(f"/v1/customers/{gid}")).status_code == 404


async def test_an_unknown_customer_is_404_naming_it(api: Api) -> None:
    await api.apply(ANA)
    for path in ("/v1/customers/nobody", "/v1/customers/nobody/export"):
        answer = await api.get(path)
        assert answer.status_code == 404
        error = answer.json()["error"]
        assert error["code"] == "not_found"
        assert error["field"] == "customer_id"
        assert "'nobody'" in error["message"]


async def test_another_workspace_never_sees_the_customer(api: Api) -> None:
    await api.apply(ANA)
    headers = {"Authorization": f"Bearer {api.other_admin}"}
    assert (await api.get("/v1/customers/cust-ana", headers=headers)).status_code == 404
    assert (await api.get("/v1/customers/cust-ana/export", headers=headers)).status_code == 404


# ── Export ────────────────────────────────────────────────────────────────────────────────────


async def test_the_export_holds_every_journey_row_and_dispatch_in_its_own_section(
    api: Api,
) -> None:
    await api.apply(ANA)
    await api.apply(
        [event("v-1", "page_viewed", NOW - timedelta(hours=5), customer=None, anonymous="v-1")]
    )
    await merge(api.engine, "anon:v-1", "cust-ana")
    async with api.engine.begin() as conn:
        await conn.execute(
            insert(messages).values(
                message_id="msg_1",
                workspace_id="shop",
                customer_id="cust-ana",
                channel="email",
                template="welcome-1",
                provider="sink",
                status="sent",
                attempts=1,
                created_at=NOW,
                updated_at=NOW,
            )
        )
        await conn.execute(
            insert(suppressions).values(
                workspace_id="shop",
                channel="email",
                address="ana@example.com",
                scope="marketing",
                reason="unsubscribe",
                source="one-click",
                customer_id="cust-ana",
                created_at=NOW,
            )
        )

    answer = await api.get("/v1/customers/anon%3Av-1/export")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["workspace_id"], body["customer_id"]) == ("shop", "cust-ana")
    assert body["customer"]["traits"]["email"] == "ana@example.com"

    journey = body["journey"]
    assert {r["customer_id"] for r in journey["journey_customers"]} == {"cust-ana", "anon:v-1"}
    [order] = journey["journey_orders"]
    assert (order["order_id"], order["value"], order["cancelled"]) == ("o-1", 120.0, False)
    runs = {(r["journey_id"], r["status"]) for r in journey["journey_instances"]}
    assert runs == {("welcome", "active"), ("nurture", "exited")}
    assert {a["kind"] for a in journey["journey_activity"]} == {"exited", "goal"}
    assert [t["name"] for t in journey["journey_timers"] if t["name"].startswith("run:")]
    assert {m["segment_id"] for m in journey["journey_segment_members"]} == {"one_time_buyer"}
    assert [(i["alias"], i["customer_id"]) for i in journey["journey_identities"]] == [
        ("anon:v-1", "cust-ana")
    ]

    dispatch = body["dispatch"]
    assert [m["message_id"] for m in dispatch["dispatch_messages"]] == ["msg_1"]
    assert [s["address"] for s in dispatch["dispatch_suppressions"]] == ["ana@example.com"]
    assert dispatch["dispatch_sink"] == [] and dispatch["dispatch_discount_codes"] == []


async def test_without_dispatch_tables_the_export_says_so(
    tmp_path: Path, database_url: str
) -> None:
    # A journey-only database, as in a distributed deployment with dispatch's own database.
    await upgrade(database_url, components_for(("journey",)))
    journeys, templates = journeys_folder(tmp_path)
    runtime = Runtime(
        services=("journey",),
        clock=VirtualClock(NOW),
        server=ServerSettings(data_dir=tmp_path, database_url=database_url, rate_limit=0),
        journey=JourneySettings(journeys_dir=journeys, templates_dir=templates),
    )
    try:
        await runtime.keys.ensure_workspace("shop")
        _, admin = await runtime.keys.create_key("shop", Scope.ADMIN)
        api = Api(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=runtime.app()), base_url="http://c"
            ),
            runtime,
            runtime.engine,
            {"admin": admin},
            "",
            journeys,
        )
        await api.apply(ANA)
        body = (await api.get("/v1/customers/cust-ana/export")).json()
        await api.client.aclose()
    finally:
        await runtime.engine.dispose()
    assert body["dispatch"] is None
    assert [o["order_id"] for o in body["journey"]["journey_orders"]] == ["o-1"]
