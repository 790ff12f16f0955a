"""The segments and intelligence-settings API over HTTP (httpx against the ASGI app), on SQLite
and PostgreSQL; the worker's view of the same tables (``DatabaseIntel``) and membership kept by
the journey handler with the saved rules."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.journey.adapters.intelligence_config import DatabaseIntel
from services.journey.adapters.tables import intelligence_settings, segment_members
from services.journey.domain import builtin_segments
from services.journey.domain.catalog import JourneyCatalog
from services.journey.domain.lifecycle import LifecycleRules
from services.journey.domain.policy import WorkspacePolicy
from services.journey.domain.scoring import ScoreRules, default_score_rules
from services.journey.domain.segments import parse_segment
from services.journey.service_layer.handlers import handle_events
from services.journey.service_layer.uow import JourneyUnitOfWork
from services.journey.settings import JourneySettings
from services.runtime import Runtime
from shared.clock import VirtualClock
from shared.contracts.events import EventEnvelope
from shared.db.engine import session_factory
from shared.settings import ServerSettings
from shared.tenancy.keys import Scope

NOW = datetime(2026, 11, 23, 9, tzinfo=UTC)
BUILTIN_IDS = sorted(d.id for d in builtin_segments.load())


def pro_plan(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": "Pro plan",
        "description": "Customers on the pro plan.",
        "condition": {"field": "customer.plan", "op": "eq", "value": "pro"},
    }
    document.update(changes)
    return document


SCORE_RULES = {
    "half_life": "P14D",
    "bands": [{"name": "cold"}, {"name": "keen", "min": 10}],
    "rules": [
        {"id": "viewed", "event": "product_viewed", "points": 3},
        {
            "id": "big-order",
            "event": "order_completed",
            "points": 50,
            "where": {"field": "event.properties.total", "op": "gte", "value": 100},
        },
    ],
}


@dataclass
class Api:
    client: httpx.AsyncClient
    runtime: Runtime
    engine: AsyncEngine
    clock: VirtualClock
    keys: dict[str, str]
    other_admin: str

    def auth(self, scope: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[scope]}"}

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        headers = kw.pop("headers", None) or self.auth()
        return await self.client.get(path, headers=headers, **kw)

    async def put(self, path: str, body: Any, **kw: Any) -> httpx.Response:
        headers = kw.pop("headers", None) or self.auth()
        return await self.client.put(path, headers=headers, json=body, **kw)

    async def post(self, path: str, body: Any, **kw: Any) -> httpx.Response:
        headers = kw.pop("headers", None) or self.auth()
        return await self.client.post(path, headers=headers, json=body, **kw)

    async def delete(self, path: str, **kw: Any) -> httpx.Response:
        headers = kw.pop("headers", None) or self.auth()
        return await self.client.delete(path, headers=headers, **kw)


@pytest.fixture
async def api(tmp_path: Path, engine: AsyncEngine, database_url: str) -> AsyncIterator[Api]:
    (tmp_path / "journeys").mkdir()
    (tmp_path / "templates").mkdir()
    clock = VirtualClock(NOW)
    runtime = Runtime(
        services=("journey",),
        clock=clock,
        server=ServerSettings(data_dir=tmp_path, database_url=database_url, rate_limit=0),
        journey=JourneySettings(
            journeys_dir=tmp_path / "journeys", templates_dir=tmp_path / "templates"
        ),
    )
    await runtime.keys.ensure_workspace("shop")
    await runtime.keys.ensure_workspace("other")
    keys = {scope.value: (await runtime.keys.create_key("shop", scope))[1] for scope in Scope}
    _, other_admin = await runtime.keys.create_key("other", Scope.ADMIN)
    transport = httpx.ASGITransport(app=runtime.app())
    async with httpx.AsyncClient(transport=transport, base_url="http://ciclo") as client:
        yield Api(client, runtime, engine, clock, keys, other_admin)
    await runtime.engine.dispose()


def problems(answer: httpx.Response) -> dict[str, str]:
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "validation_failed"
    assert error["field"] == error["problems"][0]["path"]
    assert error["message"].startswith(error["field"] + ": ")
    return {p["path"]: p["message"] for p in error["problems"]}


async def revision(engine: AsyncEngine, workspace: str = "shop") -> int | None:
    async with engine.connect() as conn:
        found = await conn.scalar(
            select(intelligence_settings.c.revision).where(
                intelligence_settings.c.workspace_id == workspace
            )
        )
    return None if found is None else int(found)


# ── Auth ──────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/segments"),
        ("GET", "/v1/segments/vip"),
        ("PUT", "/v1/segments/pro"),
        ("DELETE", "/v1/segments/pro"),
        ("POST", "/v1/segments/validate"),
        ("GET", "/v1/segments/vip/members"),
        ("GET", "/v1/segments/vip/count"),
        ("GET", "/v1/intelligence-settings"),
        ("PUT", "/v1/intelligence-settings"),
        ("GET", "/v1/score-rules/default"),
        ("POST", "/v1/score-rules/validate"),
    ],
)
async def test_an_admin_key_is_required(api: Api, method: str, path: str) -> None:
    body: dict[str, Any] = {"json": {"currency": "EUR"}} if method in ("POST", "PUT") else {}
    anonymous = await api.client.request(method, path, **body)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["field"] == "Authorization"
    ingest = await api.client.request(method, path, headers=api.auth("ingest"), **body)
    assert ingest.status_code == 403
    assert "'admin' is needed" in ingest.json()["error"]["message"]
    assert await revision(api.engine) is None  # nothing was written


# ── Segments ──────────────────────────────────────────────────────────────────────────────────


async def test_the_built_in_segments_are_listed_with_their_documents(api: Api) -> None:
    answer = await api.get("/v1/segments")
    assert answer.status_code == 200, answer.text
    listed = answer.json()["segments"]
    assert [s["id"] for s in listed] == BUILTIN_IDS
    for segment in listed:
        assert (segment["builtin"], segment["overrides_builtin"]) == (True, False)
        assert segment["members"] == 0
        assert segment["definition"]["id"] == segment["id"]
        assert segment["name"] == segment["definition"]["name"]
    vip = await api.get("/v1/segments/vip")
    assert vip.status_code == 200
    assert vip.json()["definition"]["condition"]["any"][1] == {
        "field": "customer.vip",
        "op": "eq",
        "value": True,
    }
    missing = await api.get("/v1/segments/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert "'nope'" in missing.json()["error"]["message"]


async def test_a_segment_is_created_replaced_and_deleted(api: Api) -> None:
    created = await api.put("/v1/segments/pro", pro_plan())
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/v1/segments/pro"
    body = created.json()
    assert (body["id"], body["name"], body["builtin"], body["members"]) == (
        "pro",
        "Pro plan",
        False,
        0,
    )
    assert body["definition"] == {**pro_plan(), "id": "pro"}
    assert body["created_at"] == body["updated_at"] == "2026-11-23T09:00:00Z"
    assert await revision(api.engine) == 1

    api.clock.advance(timedelta(hours=1))
    replaced = await api.put("/v1/segments/pro", pro_plan(id="pro", name="Pro customers"))
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["name"] == "Pro customers"
    assert replaced.json()["created_at"] == "2026-11-23T09:00:00Z"
    assert replaced.json()["updated_at"] == "2026-11-23T10:00:00Z"
    assert await revision(api.engine) == 2

    listed = (await api.get("/v1/segments")).json()["segments"]
    assert [s["id"] for s in listed] == sorted([*BUILTIN_IDS, "pro"])
    assert (await api.get("/v1/segments/pro")).json()["name"] == "Pro customers"

    # Another workspace sees none of it.
    other = {"Authorization": f"Bearer {api.other_admin}"}
    assert (await api.get("/v1/segments/pro", headers=other)).status_code == 404
    other_list = (await api.get("/v1/segments", headers=other)).json()["segments"]
    assert [s["id"] for s in other_list] == BUILTIN_IDS

    assert (await api.delete("/v1/segments/pro")).status_code == 204
    assert await revision(api.engine) == 3
    assert (await api.get("/v1/segments/pro")).status_code == 404
    assert (await api.get("/v1/segments/pro/count")).status_code == 404
    again = await api.delete("/v1/segments/pro")
    assert again.status_code == 404
    assert await revision(api.engine) == 3


async def test_an_invalid_segment_is_422_naming_every_problem(api: Api) -> None:
    document = pro_plan(
        name="",
        windows=[
            {"name": "views", "event": "product_viewed", "within": "P1M"},
            {"name": "adds", "event": "cart_updated", "within": "P7D"},
        ],
        condition={
            "all": [
                {"field": "counts.clicks", "op": "gte", "value": 2},
                {"field": "profle.order_count", "op": "gte", "value": 1},
            ]
        },
    )
    found = problems(await api.put("/v1/segments/pro", document))
    assert set(found) == {"$.name", "$.windows[0].within"}  # the schema pass first
    assert found["$.windows[0].within"].startswith("bad duration 'P1M'")

    document["name"] = "Pro"
    document["windows"][0]["within"] = "P7D"
    found = problems(await api.put("/v1/segments/pro", document))
    assert found["$.condition.all[0].field"].startswith("unknown window 'clicks'")
    assert found["$.condition.all[1].field"].startswith("unknown field 'profle.order_count'")
    assert found["$.windows[0]"].startswith("window 'views' is never read")

    mismatch = problems(await api.put("/v1/segments/pro", pro_plan(id="other")))
    assert mismatch == {"$.id": "must be 'pro' (the segment in the path)"}

    typo = pro_plan(condition={"field": "stage", "op": "in", "value": ["at_risk", "lapsd"]})
    found = problems(await api.put("/v1/segments/pro", typo))
    assert list(found) == ["$.condition.value"]
    assert found["$.condition.value"].startswith("no stage is 'lapsd'")
    assert (await api.get("/v1/segments/pro")).status_code == 404  # nothing was saved

    assert (await api.get("/v1/segments/pro")).status_code == 404  # nothing was saved
    assert await revision(api.engine) is None

    bad_id = await api.put("/v1/segments/Not%20an%20id", pro_plan())
    assert bad_id.status_code == 422
    assert bad_id.json()["error"]["field"] == "path.segment_id"


async def test_validate_reports_problems_without_saving(api: Api) -> None:
    answer = await api.post(
        "/v1/segments/validate",
        {"id": "x", "name": "X", "condition": {"field": "event.type", "op": "eq", "value": "a"}},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["valid"] is False
    [problem] = body["problems"]
    assert problem["path"] == "$.condition.field"
    assert "cannot read the event at hand" in problem["message"]

    good = await api.post("/v1/segments/validate", {**pro_plan(), "id": "pro"})
    assert good.json() == {"valid": True, "problems": []}
    assert (await api.get("/v1/segments/pro")).status_code == 404

    not_json = await api.client.post("/v1/segments/validate", headers=api.auth(), content=b"id=x")
    assert not_json.status_code == 415


async def test_a_workspace_segment_overrides_a_built_in_until_deleted(api: Api) -> None:
    builtin = (await api.get("/v1/segments/vip")).json()
    assert builtin["builtin"] is True

    refused = await api.delete("/v1/segments/vip")
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["code"] == "conflict"
    assert "built in" in error["message"]
    assert "PUT /v1/segments/vip" in error["message"]

    mine = {
        "name": "Our VIPs",
        "condition": {"field": "customer.tier", "op": "eq", "value": "gold"},
    }
    created = await api.put("/v1/segments/vip", mine)
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["builtin"], body["overrides_builtin"]) == (False, True)
    listed = {s["id"]: s for s in (await api.get("/v1/segments")).json()["segments"]}
    assert [s for s in listed if s == "vip"] == ["vip"]  # once, the override
    assert listed["vip"]["name"] == "Our VIPs"
    assert listed["vip"]["definition"]["condition"]["field"] == "customer.tier"

    # The worker sees the override in place of the built-in.
    [intel] = (await DatabaseIntel(api.engine).for_workspaces(["shop"])).values()
    vip = intel.segment("vip")
    assert vip is not None
    assert vip.name == "Our VIPs"
    assert [d.id for d in intel.segments].count("vip") == 1

    assert (await api.delete("/v1/segments/vip")).status_code == 204
    back = (await api.get("/v1/segments/vip")).json()
    assert (back["builtin"], back["name"]) == (True, builtin["name"])
    assert (await api.delete("/v1/segments/vip")).status_code == 409


# ── Members ───────────────────────────────────────────────────────────────────────────────────


async def test_members_are_paged_by_customer_id_and_counted(api: Api) -> None:
    ids = [f"c{n:02d}" for n in range(25)]
    async with api.engine.begin() as conn:
        await conn.execute(
            insert(segment_members),
            [
                {
                    "workspace_id": "shop",
                    "segment_id": "vip",
                    "customer_id": c,
                    "entered_at": NOW - timedelta(minutes=n),
                }
                for n, c in enumerate(ids)
            ]
            + [
                {
                    "workspace_id": "other",
                    "segment_id": "vip",
                    "customer_id": "x1",
                    "entered_at": NOW,
                },
                {
                    "workspace_id": "shop",
                    "segment_id": "regular",
                    "customer_id": "c00",
                    "entered_at": NOW,
                },
            ],
        )

    seen: list[str] = []
    after: str | None = None
    sizes = []
    while True:
        params: dict[str, Any] = {"limit": 10, **({"after": after} if after else {})}
        answer = await api.get("/v1/segments/vip/members", params=params)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        assert page["segment"] == "vip"
        sizes.append(len(page["members"]))
        seen.extend(m["customer_id"] for m in page["members"])
        after = page["next"]
        if after is None:
            break
        assert after == page["members"][-1]["customer_id"]
    assert sizes == [10, 10, 5]
    assert seen == ids
    first = (await api.get("/v1/segments/vip/members", params={"limit": 1})).json()
    assert first["members"] == [{"customer_id": "c00", "entered_at": "2026-11-23T09:00:00Z"}]

    exact = (await api.get("/v1/segments/vip/members", params={"limit": 25})).json()
    assert (len(exact["members"]), exact["next"]) == (25, None)
    default = (await api.get("/v1/segments/vip/members")).json()
    assert len(default["members"]) == 25

    count = await api.get("/v1/segments/vip/count")
    assert count.json() == {"segment": "vip", "members": 25}
    listed = {s["id"]: s["members"] for s in (await api.get("/v1/segments")).json()["segments"]}
    assert (listed["vip"], listed["regular"], listed["one_time_buyer"]) == (25, 1, 0)
    other = {"Authorization": f"Bearer {api.other_admin}"}
    other_count = await api.get("/v1/segments/vip/count", headers=other)
    assert other_count.json()["members"] == 1

    for limit in (0, 1001):
        wrong = await api.get("/v1/segments/vip/members", params={"limit": limit})
        assert wrong.status_code == 422
        assert wrong.json()["error"]["field"] == "query.limit"
    assert (await api.get("/v1/segments/nope/members")).status_code == 404
    nul = await api.get("/v1/segments/vip/members", params={"after": "c\x00"})
    assert nul.status_code == 422  # PostgreSQL text cannot hold it: no cursor of ours has it
    assert nul.json()["error"]["field"] == "query.after"
    past = await api.get("/v1/segments/vip/members", params={"after": "c24"})
    assert past.json() == {"segment": "vip", "members": [], "next": None}


async def test_a_saved_segment_fills_as_events_are_processed(api: Api) -> None:
    assert (await api.put("/v1/segments/pro", pro_plan())).status_code == 201
    intel_source = DatabaseIntel(api.engine)

    def signup(event_id: str, customer: str, plan: str, at: datetime) -> EventEnvelope:
        return EventEnvelope(
            event_id=event_id,
            workspace_id="shop",
            customer_id=customer,
            type="identify",
            occurred_at=at,
            received_at=at,
            traits={"plan": plan},
        )

    async def process(events: list[EventEnvelope], now: datetime) -> None:
        intel = await intel_source.for_workspaces(["shop"])
        async with JourneyUnitOfWork(session_factory(api.engine)) as uow:
            await handle_events(
                uow,
                events,
                catalog=JourneyCatalog([]),
                policies={"shop": WorkspacePolicy()},
                now=now,
                intel=intel,
            )

    await process(
        [
            signup("e1", "ana", "pro", NOW),
            signup("e2", "bo", "free", NOW),
            signup("e3", "cy", "pro", NOW),
        ],
        NOW,
    )
    page = (await api.get("/v1/segments/pro/members")).json()
    assert page["members"] == [
        {"customer_id": "ana", "entered_at": "2026-11-23T09:00:00Z"},
        {"customer_id": "cy", "entered_at": "2026-11-23T09:00:00Z"},
    ]
    assert (await api.get("/v1/segments/pro/count")).json()["members"] == 2

    # A new rule applies to each customer at their next event; the others keep their
    # membership until then (no retroactive pass).
    later = NOW + timedelta(hours=1)
    replaced = await api.put(
        "/v1/segments/pro",
        pro_plan(condition={"field": "customer.plan", "op": "eq", "value": "free"}),
    )
    assert replaced.status_code == 200
    intel_source.forget("shop")
    await process([signup("e4", "ana", "pro", later), signup("e5", "bo", "free", later)], later)
    page = (await api.get("/v1/segments/pro/members")).json()
    assert [(m["customer_id"], m["entered_at"]) for m in page["members"]] == [
        ("bo", "2026-11-23T10:00:00Z"),
        ("cy", "2026-11-23T09:00:00Z"),
    ]


# ── Workspace rules ───────────────────────────────────────────────────────────────────────────


async def test_settings_show_the_defaults_until_set(api: Api) -> None:
    answer = await api.get("/v1/intelligence-settings")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["currency"] == "USD"
    assert body["rates"] == {}
    assert ScoreRules.model_validate(body["score_rules"]) == default_score_rules()
    assert LifecycleRules.model_validate(body["lifecycle"]) == LifecycleRules()
    assert body["inherited"] == ["currency", "rates", "score_rules", "lifecycle"]
    assert (body["revision"], body["updated_at"]) == (0, None)

    default = await api.get("/v1/score-rules/default")
    assert default.status_code == 200
    assert ScoreRules.model_validate(default.json()) == default_score_rules()
    assert default.json()["rules"][0]["points"] == 2  # the file as written


async def test_settings_round_trip_and_reach_the_worker(api: Api) -> None:
    ticks = [0.0]
    intel_source = DatabaseIntel(api.engine, refresh_seconds=60, monotonic=lambda: ticks[0])
    [before] = (await intel_source.for_workspaces(["shop"])).values()
    assert before.currency == "USD"

    answer = await api.put(
        "/v1/intelligence-settings",
        {"currency": "eur", "rates": {"usd": 0.92, "GBP": "1.17", "JPY": "6.1e-3"}},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["currency"] == "EUR"
    assert body["rates"] == {"GBP": "1.17", "JPY": "0.0061", "USD": "0.92"}
    assert body["inherited"] == ["score_rules", "lifecycle"]
    assert body["revision"] == 1
    assert body["updated_at"] == "2026-11-23T09:00:00Z"

    api.clock.advance(timedelta(minutes=5))
    lifecycle = {"default_gap": "P30D", "at_risk_factor": 3, "lapsed_factor": 5}
    answer = await api.put(
        "/v1/intelligence-settings", {"score_rules": SCORE_RULES, "lifecycle": lifecycle}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["currency"], body["inherited"], body["revision"]) == ("EUR", [], 2)
    assert ScoreRules.model_validate(body["score_rules"]) == ScoreRules.model_validate(SCORE_RULES)
    assert body["lifecycle"]["default_gap"] == "P30D"
    assert body["lifecycle"]["at_risk_min"] == "P14D"  # a default filled in
    assert (await api.get("/v1/intelligence-settings")).json() == body

    # Cached in the worker until forgotten or expired.
    [cached] = (await intel_source.for_workspaces(["shop"])).values()
    assert cached is before
    intel_source.forget("shop")
    [after] = (await intel_source.for_workspaces(["shop"])).values()
    assert after.currency == "EUR"
    assert after.rates == {"USD": Decimal("0.92"), "GBP": Decimal("1.17"), "JPY": Decimal("0.0061")}
    assert [r.id for r in after.score_rules.rules] == ["viewed", "big-order"]
    assert [b.name for b in after.score_rules.bands] == ["cold", "keen"]
    assert after.lifecycle == LifecycleRules.model_validate(lifecycle)

    # null resets one field; the others stay.
    answer = await api.put("/v1/intelligence-settings", {"score_rules": None, "currency": None})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["inherited"] == ["currency", "score_rules"]
    assert body["currency"] == "USD"
    assert body["rates"]["GBP"] == "1.17"
    assert ScoreRules.model_validate(body["score_rules"]) == default_score_rules()
    assert body["revision"] == 3

    ticks[0] = 59.0
    [still] = (await intel_source.for_workspaces(["shop"])).values()
    assert still is after
    ticks[0] = 60.0
    [expired] = (await intel_source.for_workspaces(["shop"])).values()
    assert expired.currency == "USD"
    assert expired.score_rules == default_score_rules()
    assert expired.rates["GBP"] == Decimal("1.17")

    other = {"Authorization": f"Bearer {api.other_admin}"}
    assert (await api.get("/v1/intelligence-settings", headers=other)).json()["currency"] == "USD"


async def test_invalid_settings_are_422_naming_each_field(api: Api) -> None:
    bad_rules = {
        "bands": [{"name": "cold"}, {"name": "warm", "min": 20}],
        "rules": [{"id": "x", "event": "product_viewed", "points": 0}],
    }
    found = problems(
        await api.put(
            "/v1/intelligence-settings",
            {
                "currency": "EURO",
                "rates": {"USD": -1, "usd": "1", "GBP": "abc", "E1": 2, "CHF": True},
                "score_rules": bad_rules,
                "lifecycle": {"at_risk_factor": 5, "lapsed_factor": 2},
                "colour": "red",
                "revision": 3,
            },
        )
    )
    assert set(found) == {
        "$.currency",
        "$.rates.USD",
        "$.rates.GBP",
        "$.rates['E1']",
        "$.rates.CHF",
        "$.score_rules.rules[0].points",
        "$.lifecycle",
        "$.colour",
        "$.revision",
    }
    assert "ISO-4217" in found["$.currency"]
    assert "positive decimal" in found["$.rates.USD"]
    assert "0 would do nothing" in found["$.score_rules.rules[0].points"]
    assert "lapsed_factor" in found["$.lifecycle"]
    assert "unknown setting 'colour'" in found["$.colour"]
    assert "read-only" in found["$.revision"]

    twice = problems(await api.put("/v1/intelligence-settings", {"rates": {"USD": 1, "usd": 2}}))
    assert twice == {"$.rates.usd": "USD is given twice"}
    shape = problems(await api.put("/v1/intelligence-settings", {"score_rules": [1]}))
    assert shape == {"$.score_rules": "score rules are a JSON object"}

    body = (await api.get("/v1/intelligence-settings")).json()
    assert (body["currency"], body["revision"]) == ("USD", 0)  # nothing was saved
    assert await revision(api.engine) is None


async def test_a_currency_with_a_trailing_newline_is_refused(api: Api) -> None:
    # "EUR\n" is not three letters: saved, it would be a workspace currency (or a rate) that no
    # order's currency ever equals, so no revenue would be counted or converted.
    found = problems(
        await api.put(
            "/v1/intelligence-settings", {"currency": "EUR\n", "rates": {"USD\n": "0.92"}}
        )
    )
    assert set(found) == {"$.currency", "$.rates['USD\\n']"}
    assert "ISO-4217" in found["$.currency"]
    body = (await api.get("/v1/intelligence-settings")).json()
    assert (body["currency"], body["rates"], body["revision"]) == ("USD", {}, 0)


async def test_true_is_not_a_number_in_the_lifecycle_or_the_score_rules(api: Api) -> None:
    # JSON true was read as 1.0: a customer became at risk after one rhythm instead of two,
    # and a rule gave 1 point, with a 200 that hid the mistake.
    found = problems(
        await api.put(
            "/v1/intelligence-settings",
            {
                "lifecycle": {"at_risk_factor": True},
                "score_rules": {
                    "bands": [{"name": "cold"}, {"name": "warm", "min": True}],
                    "rules": [
                        {
                            "id": "viewed",
                            "event": "product_viewed",
                            "points": True,
                            "cap": {"points": True, "per": "P1D"},
                        }
                    ],
                },
            },
        )
    )
    assert found == {
        "$.lifecycle.at_risk_factor": "must be a number such as 5, not true",
        "$.score_rules.bands[1].min": "must be a number such as 5, not true",
        "$.score_rules.rules[0].points": "must be a number such as 5, not true",
        "$.score_rules.rules[0].cap.points": "must be a number such as 5, not true",
    }
    body = (await api.get("/v1/intelligence-settings")).json()
    assert (body["lifecycle"]["at_risk_factor"], body["revision"]) == (2.0, 0)
    checked = await api.post(
        "/v1/score-rules/validate",
        {"rules": [{"id": "viewed", "event": "product_viewed", "points": False}]},
    )
    assert checked.json()["problems"] == [
        {"path": "$.rules[0].points", "message": "must be a number such as 5, not false"}
    ]
    numbers = await api.put("/v1/intelligence-settings", {"lifecycle": {"at_risk_factor": 3}})
    assert numbers.status_code == 200, numbers.text
    assert numbers.json()["lifecycle"]["at_risk_factor"] == 3.0


async def test_score_rules_validate_without_saving(api: Api) -> None:
    answer = await api.post(
        "/v1/score-rules/validate",
        {
            "half_life": "P1M",
            "rules": [
                {
                    "id": "v",
                    "event": "product_viewed",
                    "points": 5,
                    "where": {"field": "customer.plan", "op": "eq", "value": "pro"},
                }
            ],
        },
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["valid"] is False
    paths = {p["path"]: p["message"] for p in body["problems"]}
    assert set(paths) == {"$.half_life", "$.rules[0].where"}
    assert "reads only the event" in paths["$.rules[0].where"]

    good = await api.post("/v1/score-rules/validate", SCORE_RULES)
    assert good.json() == {"valid": True, "problems": []}
    default = (await api.get("/v1/score-rules/default")).json()
    assert (await api.post("/v1/score-rules/validate", default)).json()["valid"] is True
    assert await revision(api.engine) is None


async def test_stored_documents_round_trip_as_written(api: Api) -> None:
    """What PUT stored is what GET shows, also for a built-in read from its file."""
    document = json.loads(json.dumps(pro_plan(windows=[], description="")))
    await api.put("/v1/segments/pro", document)
    assert (await api.get("/v1/segments/pro")).json()["definition"] == {**document, "id": "pro"}
    for segment in builtin_segments.load():
        shown = (await api.get(f"/v1/segments/{segment.id}")).json()["definition"]
        assert parse_segment(shown) == segment
