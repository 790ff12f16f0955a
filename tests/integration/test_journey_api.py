"""The journey management, settings and stats API over HTTP (httpx against the ASGI app), on
SQLite and PostgreSQL; the catalog and policies the worker reads from the same tables."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from services.dispatch.adapters.tables import templates as dispatch_templates
from services.journey.adapters.definitions import DatabaseCatalogs
from services.journey.adapters.files import load_catalog
from services.journey.adapters.tables import activity, instances, step_counts
from services.journey.adapters.workspace_settings import DatabasePolicies
from services.journey.domain.engine import Cap
from services.journey.settings import JourneySettings
from services.runtime import Runtime
from shared.clock import VirtualClock
from shared.settings import ServerSettings
from shared.tenancy.keys import Scope

NOW = datetime(2026, 11, 23, 9, tzinfo=UTC)

FILE_JOURNEY = {
    "id": "welcome",
    "version": 3,
    "name": "Welcome from a file",
    "trigger": {"event": "signup"},
    "start": "hello",
    "steps": {"hello": {"send": {"channel": "email", "template": "welcome-1"}}},
}


def cart(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": "cart",
        "name": "Cart reminder",
        "trigger": {"event": "cart_updated", "key": "cart_id"},
        "goal": {"event": "order_completed", "within": "P7D"},
        "start": "wait",
        "steps": {
            "wait": {"wait": "PT4H", "next": "remind"},
            "remind": {"send": {"channel": "email", "template": "reminder"}, "next": "end"},
            "end": {"exit": True},
        },
    }
    document.update(changes)
    return document


@dataclass
class Api:
    client: httpx.AsyncClient
    runtime: Runtime
    engine: AsyncEngine
    keys: dict[str, str]
    other_admin: str
    journeys_dir: Path
    settings: JourneySettings

    def auth(self, scope: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[scope]}"}

    async def post(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        headers = kw.pop("headers", None) or self.auth()
        if body is None:
            return await self.client.post(path, headers=headers, **kw)
        return await self.client.post(path, headers=headers, json=body, **kw)

    async def put(self, path: str, body: Any, **kw: Any) -> httpx.Response:
        headers = kw.pop("headers", None) or self.auth()
        return await self.client.put(path, headers=headers, json=body, **kw)

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        headers = kw.pop("headers", None) or self.auth()
        return await self.client.get(path, headers=headers, **kw)

    def catalogs(self, refresh_seconds: float = 0) -> DatabaseCatalogs:
        return DatabaseCatalogs(
            self.engine, load_catalog(self.journeys_dir), refresh_seconds=refresh_seconds
        )


@pytest.fixture
async def api(tmp_path: Path, engine: AsyncEngine, database_url: str) -> AsyncIterator[Api]:
    journeys_dir = tmp_path / "journeys"
    journeys_dir.mkdir()
    (journeys_dir / "welcome.json").write_text(json.dumps(FILE_JOURNEY))
    templates = tmp_path / "templates"
    for name in ("welcome-1", "reminder"):
        (templates / name).mkdir(parents=True)
    settings = JourneySettings(
        journeys_dir=journeys_dir,
        templates_dir=templates,
        journey_max_event_age="PT12H",
        journey_frequency_caps=[{"channel": "email", "limit": 2, "per": "P1D"}],
    )
    runtime = Runtime(
        services=("journey",),
        clock=VirtualClock(NOW),
        server=ServerSettings(data_dir=tmp_path, database_url=database_url, rate_limit=0),
        journey=settings,
    )
    # No runtime.start(): the API needs the database only (migrated by the engine fixture).
    await runtime.keys.ensure_workspace("shop")
    await runtime.keys.ensure_workspace("other")
    keys = {scope.value: (await runtime.keys.create_key("shop", scope))[1] for scope in Scope}
    _, other_admin = await runtime.keys.create_key("other", Scope.ADMIN)
    transport = httpx.ASGITransport(app=runtime.app())
    async with httpx.AsyncClient(transport=transport, base_url="http://ciclo") as client:
        yield Api(client, runtime, engine, keys, other_admin, journeys_dir, settings)
    await runtime.engine.dispose()


# ── Auth ──────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/journeys"),
        ("POST", "/v1/journeys"),
        ("GET", "/v1/journeys/cart"),
        ("PUT", "/v1/journeys/cart/draft"),
        ("POST", "/v1/journeys/cart/versions/1/publish"),
        ("POST", "/v1/journeys/cart/pause"),
        ("GET", "/v1/journeys/cart/stats"),
        ("GET", "/v1/journey-settings"),
        ("PUT", "/v1/journey-settings"),
        ("GET", "/v1/customers/c1/journeys"),
    ],
)
async def test_admin_key_is_required(api: Api, method: str, path: str) -> None:
    body = {"json": cart()} if method in ("POST", "PUT") else {}
    anonymous = await api.client.request(method, path, **body)  # type: ignore[arg-type]
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    ingest = await api.client.request(method, path, headers=api.auth("ingest"), **body)  # type: ignore[arg-type]
    assert ingest.status_code == 403
    assert "'admin' is needed" in ingest.json()["error"]["message"]


# ── Drafts, validation, publishing ────────────────────────────────────────────────────────────


async def test_a_draft_is_created_with_the_next_version(api: Api) -> None:
    answer = await api.post("/v1/journeys", cart(version=7))
    assert answer.status_code == 201, answer.text
    assert answer.headers["location"] == "/v1/journeys/cart"
    body = answer.json()
    assert body["id"] == "cart"
    assert body["name"] == "Cart reminder"
    assert (body["source"], body["status"]) == ("workspace", "draft")
    assert (body["current_version"], body["draft_version"]) == (None, 1)
    [version] = body["versions"]
    assert (version["version"], version["state"], version["current"]) == (1, "draft", False)
    assert version["document"]["version"] == 1  # assigned, whatever the body said
    assert version["document"]["steps"]["wait"] == {"wait": "PT4H", "next": "remind"}

    again = await api.post("/v1/journeys", cart())
    assert again.status_code == 409
    assert "already has a draft (version 1)" in again.json()["error"]["message"]


async def test_an_invalid_journey_is_422_with_every_problem(api: Api) -> None:
    graph = cart(start="nope")
    graph["steps"]["remind"] = {"send": {"channel": "email", "template": "missing"}, "next": "zz"}
    answer = await api.post("/v1/journeys", graph)
    assert answer.status_code == 422
    error = answer.json()["error"]
    problems = {(p["path"], p["message"]) for p in error["problems"]}
    assert ("$.start", "unknown step 'nope'") in problems
    assert ("$.steps.remind.next", "unknown step 'zz'") in problems
    assert ("$.steps.remind.send.template", "unknown template 'missing'") in problems
    assert error["code"] == "validation_failed"
    assert error["field"] == error["problems"][0]["path"]
    assert error["message"].startswith(error["field"] + ": ")

    schema = cart(name="")
    del schema["trigger"]
    schema["steps"]["wait"]["wait"] = "P3X"
    answer = await api.post("/v1/journeys", schema)
    assert answer.status_code == 422
    paths = {p["path"]: p["message"] for p in answer.json()["error"]["problems"]}
    assert set(paths) == {"$.name", "$.trigger", "$.steps.wait.wait"}
    assert paths["$.steps.wait.wait"].startswith("bad duration 'P3X'")

    assert (await api.get("/v1/journeys/cart")).status_code == 404  # nothing was saved


async def test_what_json_parsing_hides_is_422_and_nothing_is_saved(api: Api) -> None:
    text = json.dumps(cart())
    twice = text.replace('"steps": {', '"steps": {"wait": {"exit": true}, ', 1)
    headers = {**api.auth(), "Content-Type": "application/json"}
    answer = await api.client.post("/v1/journeys", content=twice, headers=headers)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["problems"] == [
        {"path": "$.steps.wait", "message": "given twice in one object; JSON keeps only the last"}
    ]
    assert (await api.get("/v1/journeys/cart")).status_code == 404
    huge = text.replace(
        '"within": "P7D"}',
        '"within": "P7D", "where": {"field": "event.properties'
        '.total", "op": "gt", "value": 1e400}}',
        1,
    )
    answer = await api.client.post("/v1/journeys", content=huge, headers=headers)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["problems"] == [
        {"path": "$.goal.where.value", "message": "not a finite number"}
    ]
    # The same holds for a draft replaced over PUT.
    assert (await api.post("/v1/journeys", cart())).status_code == 201
    answer = await api.client.put("/v1/journeys/cart/draft", content=twice, headers=headers)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == "$.steps.wait"
    answer = await api.client.put("/v1/journeys/cart/versions/1", content=twice, headers=headers)
    assert answer.status_code == 422, answer.text
    draft = (await api.get("/v1/journeys/cart")).json()["versions"][0]["document"]
    assert draft["steps"]["wait"] == cart()["steps"]["wait"]


async def test_a_body_that_is_not_json_is_415_or_400(api: Api) -> None:
    answer = await api.client.post(
        "/v1/journeys", headers={**api.auth(), "Content-Type": "text/plain"}, content=b"{}"
    )
    assert answer.status_code == 415
    headers = {**api.auth(), "Content-Type": "application/json"}
    answer = await api.client.post("/v1/journeys", headers=headers, content=b'{"id":')
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_body", "body")
    assert error["message"] == "the body is not valid JSON: Expecting value at character 6"
    answer = await api.client.post("/v1/journeys", headers=headers, content=b"")
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == {
        "status": 400,
        "code": "invalid_body",
        "message": "the body is empty: send a JSON object",
        "field": "body",
    }


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[" * 5000 + b"]" * 5000, "its arrays and objects nest too deeply"),
        ('{"id": "caf\u00e9"}'.encode("latin-1"), "it is not UTF-8 text"),
    ],
    ids=["nested", "latin-1"],
)
async def test_a_body_json_cannot_parse_says_why(api: Api, content: bytes, message: str) -> None:
    headers = {**api.auth(), "Content-Type": "application/json"}
    answer = await api.client.post("/v1/journeys", headers=headers, content=content)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == {
        "status": 400,
        "code": "invalid_body",
        "message": f"the body is not valid JSON: {message}",
        "field": "body",
    }


@pytest.mark.parametrize(
    ("coding", "content"),
    [("gzip", gzip.compress(b"{}")), ("br", b"{}"), ("GZIP, identity", gzip.compress(b"{}"))],
    ids=["gzip", "br-sent-plain", "gzip-then-identity"],
)
async def test_a_compressed_body_is_a_415_naming_the_encoding(
    api: Api, coding: str, content: bytes
) -> None:
    """The admin routes read JSON as sent: a body in an encoding (even one labelled but sent
    plain, which was read as if unlabelled) is refused, not parsed as JSON."""
    headers = {**api.auth(), "Content-Type": "application/json", "Content-Encoding": coding}
    answer = await api.client.post("/v1/journeys", headers=headers, content=content)
    assert answer.status_code == 415, answer.text
    error = answer.json()["error"]
    assert (error["code"], error["field"]) == ("unsupported_media_type", "Content-Encoding")
    assert repr(coding) in error["message"]
    assert answer.headers["x-request-id"]
    assert (await api.get("/v1/journeys/cart")).status_code == 404
    identity = {**headers, "Content-Encoding": "identity"}
    answer = await api.client.post("/v1/journeys", headers=identity, content=json.dumps(cart()))
    assert answer.status_code == 201, answer.text


@pytest.mark.parametrize("body", [b"[1]", b"null", b'"cart"', b"7"])
async def test_a_body_that_is_json_but_not_an_object_is_a_journey_problem(
    api: Api, body: bytes
) -> None:
    headers = {**api.auth(), "Content-Type": "application/json"}
    assert (await api.post("/v1/journeys", cart())).status_code == 201
    for method, path in [
        ("POST", "/v1/journeys"),
        ("PUT", "/v1/journeys/cart/draft"),
        ("PUT", "/v1/journeys/cart/versions/1"),
    ]:
        answer = await api.client.request(method, path, headers=headers, content=body)
        assert answer.status_code == 422, (method, path, answer.text)
        error = answer.json()["error"]
        assert (error["code"], error["field"]) == ("validation_failed", "$"), error
        assert error["problems"] == [{"path": "$", "message": "a journey is a JSON object"}]
    draft = (await api.get("/v1/journeys/cart")).json()["versions"][0]["document"]
    assert draft["steps"] == cart()["steps"]  # the draft is as it was


async def test_publish_makes_a_version_immutable(api: Api) -> None:
    await api.post("/v1/journeys", cart())
    published = await api.post("/v1/journeys/cart/versions/1/publish")
    assert published.status_code == 200, published.text
    body = published.json()
    assert (body["status"], body["current_version"], body["draft_version"]) == (
        "published",
        1,
        None,
    )
    assert body["versions"][0]["published_at"] is not None
    assert body["versions"][0]["current"] is True

    edited = cart(name="Changed")
    put = await api.put("/v1/journeys/cart/versions/1", edited)
    assert put.status_code == 409
    assert "published and immutable" in put.json()["error"]["message"]
    put = await api.put("/v1/journeys/cart/draft", {**edited, "version": 1})
    assert put.status_code == 409
    assert "published and immutable" in put.json()["error"]["message"]

    # The change goes into a new draft: version 2. The published version is unchanged.
    draft = await api.put("/v1/journeys/cart/draft", edited)
    assert draft.status_code == 200, draft.text
    assert (draft.json()["current_version"], draft.json()["draft_version"]) == (1, 2)
    assert draft.json()["name"] == "Cart reminder"  # named by the current version
    again = await api.put("/v1/journeys/cart/draft", cart(name="Changed twice", version=2))
    assert again.status_code == 200
    assert [v["document"]["name"] for v in again.json()["versions"]] == [
        "Cart reminder",
        "Changed twice",
    ]
    replaced = await api.put("/v1/journeys/cart/versions/2", cart(name="Third"))
    assert replaced.status_code == 200
    assert replaced.json()["versions"][1]["document"]["name"] == "Third"

    second = await api.post("/v1/journeys/cart/versions/2/publish")
    assert second.status_code == 200
    assert (second.json()["current_version"], second.json()["name"]) == (2, "Third")
    assert (await api.post("/v1/journeys/cart/versions/2/publish")).status_code == 200
    old = await api.post("/v1/journeys/cart/versions/1/publish")
    assert old.status_code == 409
    assert "superseded by version 2" in old.json()["error"]["message"]
    assert (await api.post("/v1/journeys/cart/versions/9/publish")).status_code == 404


async def test_a_journey_may_name_a_template_saved_over_http_in_its_workspace(
    api: Api,
) -> None:
    promo = cart(id="promo")
    promo["steps"]["remind"]["send"]["template"] = "promo-x"
    refused = await api.post("/v1/journeys", promo)
    assert refused.status_code == 422
    assert refused.json()["error"]["field"] == "$.steps.remind.send.template"

    async def save_template(workspace: str) -> None:
        async with api.engine.begin() as conn:
            await conn.execute(
                insert(dispatch_templates).values(
                    workspace_id=workspace,
                    template_id="promo-x",
                    version=1,
                    channel="email",
                    parts={"subject": "Hi", "text": "Hello"},
                    sample=None,
                    created_at=NOW,
                )
            )

    await save_template("other")  # another workspace's template does not count
    assert (await api.post("/v1/journeys", promo)).status_code == 422
    await save_template("shop")
    created = await api.post("/v1/journeys", promo)
    assert created.status_code == 201, created.text
    published = await api.post("/v1/journeys/promo/versions/1/publish")
    assert published.status_code == 200, published.text


async def test_a_draft_whose_template_disappeared_is_not_published(api: Api) -> None:
    await api.post("/v1/journeys", cart())
    (api.settings.templates_dir / "reminder").rmdir()
    answer = await api.post("/v1/journeys/cart/versions/1/publish")
    assert answer.status_code == 422
    assert answer.json()["error"]["problems"] == [
        {"path": "$.steps.remind.send.template", "message": "unknown template 'reminder'"}
    ]
    assert (await api.get("/v1/journeys/cart")).json()["status"] == "draft"


async def test_a_draft_can_be_discarded(api: Api) -> None:
    await api.post("/v1/journeys", cart())
    await api.post("/v1/journeys/cart/versions/1/publish")
    await api.put("/v1/journeys/cart/draft", cart(name="Next"))
    answer = await api.client.delete("/v1/journeys/cart/draft", headers=api.auth())
    assert answer.status_code == 204
    body = (await api.get("/v1/journeys/cart")).json()
    assert [v["version"] for v in body["versions"]] == [1]
    assert (await api.client.delete("/v1/journeys/cart/draft", headers=api.auth())).status_code == (
        404
    )
    # A journey that never had anything but a draft goes away with it.
    await api.post("/v1/journeys", cart(id="other"))
    await api.client.delete("/v1/journeys/other/draft", headers=api.auth())
    assert (await api.get("/v1/journeys/other")).status_code == 404


async def test_the_path_decides_the_id(api: Api) -> None:
    await api.post("/v1/journeys", cart())
    answer = await api.put("/v1/journeys/cart/draft", cart(id="another"))
    assert answer.status_code == 422
    assert answer.json()["error"]["field"] == "$.id"
    unknown = await api.put("/v1/journeys/nope/draft", cart(id="nope"))
    assert unknown.status_code == 404
    bad = await api.get("/v1/journeys/Not%20An%20Id")
    assert bad.status_code == 422


# ── Listing, file journeys, workspaces ────────────────────────────────────────────────────────


async def test_list_and_get_show_workspace_and_file_journeys(api: Api) -> None:
    await api.post("/v1/journeys", cart())
    await api.post("/v1/journeys/cart/versions/1/publish")
    listed = (await api.get("/v1/journeys")).json()["journeys"]
    assert [(j["id"], j["source"], j["status"], j["current_version"]) for j in listed] == [
        ("cart", "workspace", "published", 1),
        ("welcome", "file", "published", 3),
    ]
    welcome = (await api.get("/v1/journeys/welcome")).json()
    assert welcome["source"] == "file"
    [version] = welcome["versions"]
    assert version["document"]["steps"] == FILE_JOURNEY["steps"]
    assert version["document"]["name"] == "Welcome from a file"

    # Another workspace sees the file journey, not this workspace's own.
    other = {"Authorization": f"Bearer {api.other_admin}"}
    theirs = (await api.get("/v1/journeys", headers=other)).json()["journeys"]
    assert [j["id"] for j in theirs] == ["welcome"]
    assert (await api.get("/v1/journeys/cart", headers=other)).status_code == 404


async def test_file_journeys_are_read_only(api: Api) -> None:
    for path in (
        "/v1/journeys/welcome/pause",
        "/v1/journeys/welcome/archive",
        "/v1/journeys/welcome/versions/3/publish",
    ):
        answer = await api.post(path)
        assert answer.status_code == 409, path
        assert "read-only" in answer.json()["error"]["message"]
    answer = await api.put("/v1/journeys/welcome/draft", FILE_JOURNEY)
    assert answer.status_code == 409


async def test_a_workspace_journey_replaces_the_file_one_in_its_workspace(api: Api) -> None:
    own = {**FILE_JOURNEY, "name": "Our own welcome"}
    created = await api.post("/v1/journeys", own)
    assert created.status_code == 201
    # Numbered after the file's version 3: runs in flight on it keep finding it.
    assert (created.json()["draft_version"], created.json()["file_version"]) == (4, 3)
    catalogs = api.catalogs()
    assert (await catalogs.current()).view("shop").get("welcome")[0].version == 3  # type: ignore[index]

    await api.post("/v1/journeys/welcome/versions/4/publish")
    catalog = await catalogs.current()
    journey, status = catalog.view("shop").get("welcome")  # type: ignore[misc]
    assert (journey.version, journey.name, status) == (4, "Our own welcome", "published")
    assert catalog.view("other").get("welcome")[0].version == 3  # type: ignore[index]
    assert catalog.version("shop", "welcome", 3) is not None  # runs in flight finish on it
    listed = (await api.get("/v1/journeys")).json()["journeys"]
    assert [(j["id"], j["source"]) for j in listed] == [("welcome", "workspace")]


# ── Status and the catalog the worker reads ───────────────────────────────────────────────────


async def test_pause_resume_archive_change_the_catalog(api: Api) -> None:
    catalogs = api.catalogs()
    signup = {"type": "cart_updated", "id": "e1", "properties": {"cart_id": "k1"}}
    ctx: dict[str, Any] = {"customer": {}, "scores": {}, "event": signup}

    async def state() -> tuple[int, str] | None:
        current = (await catalogs.current()).view("shop").get("cart")
        return None if current is None else (current[0].version, current[1])

    async def entries() -> list[str]:
        return [j.id for j in (await catalogs.current()).view("shop").entries_for(signup, ctx)]

    assert (await api.post("/v1/journeys/cart/pause")).status_code == 404
    await api.post("/v1/journeys", cart())
    assert await state() is None  # a draft is not in the catalog
    assert (await api.post("/v1/journeys/cart/pause")).status_code == 409  # nothing published

    await api.post("/v1/journeys/cart/versions/1/publish")
    assert await state() == (1, "published")
    assert await entries() == ["cart"]

    paused = await api.post("/v1/journeys/cart/pause")
    assert paused.status_code == 200
    assert paused.json()["status"] == "paused"
    assert await state() == (1, "paused")
    assert await entries() == []
    assert (await api.post("/v1/journeys/cart/pause")).json()["status"] == "paused"  # no-op

    assert (await api.post("/v1/journeys/cart/resume")).json()["status"] == "published"
    assert await entries() == ["cart"]

    assert (await api.post("/v1/journeys/cart/archive")).json()["status"] == "archived"
    assert await state() == (1, "archived")
    assert await entries() == []
    assert (await catalogs.current()).version("shop", "cart", 1) is not None
    resume = await api.post("/v1/journeys/cart/resume")
    assert resume.status_code == 409
    assert "archived" in resume.json()["error"]["message"]

    # A new version brings an archived journey back.
    await api.put("/v1/journeys/cart/draft", cart(name="Back"))
    await api.post("/v1/journeys/cart/versions/2/publish")
    assert await state() == (2, "published")
    assert (await api.get("/v1/journeys")).json()["journeys"][0]["status"] == "published"


@pytest.mark.parametrize(
    ("action", "advice"), [("pause", "resume it"), ("archive", "save its document as a new draft")]
)
async def test_publishing_the_current_version_of_a_stopped_journey_is_409_saying_how(
    api: Api, action: str, advice: str
) -> None:
    # It answered 200, "published" in the request and the old status in the body: nothing
    # went live, and a client checking the status code believed it had.
    await api.post("/v1/journeys", cart())
    await api.post("/v1/journeys/cart/versions/1/publish")
    stopped = (await api.post(f"/v1/journeys/cart/{action}")).json()["status"]
    again = await api.post("/v1/journeys/cart/versions/1/publish")
    assert again.status_code == 409
    message = again.json()["error"]["message"]
    assert f"the journey is {stopped}" in message
    assert advice in message
    assert (await api.get("/v1/journeys/cart")).json()["status"] == stopped  # nothing changed


async def test_the_catalog_is_cached_between_checks(api: Api) -> None:
    clock = [0.0]
    catalogs = DatabaseCatalogs(
        api.engine, load_catalog(api.journeys_dir), refresh_seconds=2, monotonic=lambda: clock[0]
    )
    first = await catalogs.current()
    assert first.view("shop").get("cart") is None
    await api.post("/v1/journeys", cart())
    await api.post("/v1/journeys/cart/versions/1/publish")
    assert await catalogs.current() is first  # within refresh_seconds: no query
    clock[0] = 2.5
    second = await catalogs.current()
    assert second is not first
    assert second.view("shop").get("cart") is not None
    clock[0] = 5.0
    assert await catalogs.current() is second  # the marker did not move: no rebuild
    await api.put("/v1/journeys/cart/draft", cart(name="Draft only"))
    clock[0] = 7.5
    assert await catalogs.current() is second  # drafts do not change the catalog


# ── Workspace settings ────────────────────────────────────────────────────────────────────────


async def test_settings_default_then_saved(api: Api) -> None:
    defaults = (await api.get("/v1/journey-settings")).json()
    assert defaults == {
        "live_from": None,
        "max_event_age": "PT12H",
        "default_timezone": "UTC",
        "frequency_caps": [{"channel": "email", "limit": 2, "per": "P1D"}],
        "inherited": ["live_from", "max_event_age", "default_timezone", "frequency_caps"],
        "updated_at": None,
    }
    saved = await api.put(
        "/v1/journey-settings",
        {
            "live_from": "2026-11-20T10:00:00+01:00",
            "default_timezone": "Europe/Madrid",
            "frequency_caps": [
                {"channel": "email", "limit": 1, "per": "PT24H"},
                {"channel": "sms", "limit": 3, "per": "P1W"},
            ],
        },
    )
    assert saved.status_code == 200, saved.text
    body = saved.json()
    assert body["live_from"].startswith("2026-11-20T09:00:00")
    assert (body["max_event_age"], body["default_timezone"]) == ("PT12H", "Europe/Madrid")
    assert body["frequency_caps"] == [
        {"channel": "email", "limit": 1, "per": "P1D"},
        {"channel": "sms", "limit": 3, "per": "P7D"},
    ]
    assert body["inherited"] == ["max_event_age"]
    assert (await api.get("/v1/journey-settings")).json() == body

    policies = DatabasePolicies(api.engine, api.settings.default_policy(), refresh_seconds=0)
    found = await policies.for_workspaces(["shop", "other"])
    shop, other = found["shop"], found["other"]
    assert shop.live_from == datetime(2026, 11, 20, 9, tzinfo=UTC)
    assert shop.max_event_age == timedelta(hours=12)
    assert shop.policy.default_timezone == "Europe/Madrid"
    assert shop.policy.caps == (
        Cap("email", 1, timedelta(days=1)),
        Cap("sms", 3, timedelta(days=7)),
    )
    assert other.policy.caps == (Cap("email", 2, timedelta(days=1)),)
    assert other.live_from is None

    # No caps at all is a choice of its own, not the default.
    cleared = await api.put("/v1/journey-settings", {"frequency_caps": []})
    assert cleared.json()["frequency_caps"] == []
    assert "frequency_caps" not in cleared.json()["inherited"]
    assert (await policies.for_workspaces(["shop"]))["shop"].policy.caps == ()


async def test_policies_are_cached_briefly(api: Api) -> None:
    clock = [0.0]
    policies = DatabasePolicies(
        api.engine,
        api.settings.default_policy(),
        refresh_seconds=2,
        monotonic=lambda: clock[0],
    )
    assert (await policies.for_workspaces(["shop"]))["shop"].policy.default_timezone == "UTC"
    await api.put("/v1/journey-settings", {"default_timezone": "Asia/Tokyo"})
    assert (await policies.for_workspaces(["shop"]))["shop"].policy.default_timezone == "UTC"
    clock[0] = 3
    assert (await policies.for_workspaces(["shop"]))["shop"].policy.default_timezone == (
        "Asia/Tokyo"
    )


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"max_event_age": "P3X"}, "max_event_age", "bad duration 'P3X'"),
        ({"max_event_age": "P1M"}, "max_event_age", "years and months"),
        ({"max_event_age": "PT0S"}, "max_event_age", "longer than zero"),
        ({"max_event_age": "P999999999999W"}, "max_event_age", "longer than 100 years"),
        ({"max_event_age": "P400D"}, "max_event_age", "at most P366D"),
        ({"default_timezone": "Mars/Olympus"}, "default_timezone", "time zone 'Mars/Olympus':"),
        ({"default_timezone": "customer"}, "default_timezone", "unknown time zone 'customer':"),
        ({"live_from": "2026-11-20T10:00:00"}, "live_from", "timezone"),
        ({"live_from": "yesterday"}, "live_from", "datetime"),
        ({"frequency_caps": [{"channel": "push", "limit": 1, "per": "P1D"}]},
         "frequency_caps.0.channel", "'email' or 'sms'"),
        ({"frequency_caps": [{"channel": "email", "limit": 0, "per": "P1D"}]},
         "frequency_caps.0.limit", "greater than or equal to 1"),
        ({"frequency_caps": [{"channel": "email", "limit": 1}]},
         "frequency_caps.0.per", "Field required"),
        ({"frequency_caps": [{"channel": "email", "limit": True, "per": "P1D"}]},
         "frequency_caps.0.limit", "valid integer"),
        ({"frequency_caps": [{"channel": "email", "limit": "3", "per": "P1D"}]},
         "frequency_caps.0.limit", "valid integer"),
        ({"frequency_caps": [{"channel": "email", "limit": 1, "per": "P1D"},
                             {"channel": "sms", "limit": 1, "per": "P1D"},
                             {"channel": "email", "limit": 3, "per": "PT24H"}]},
         "frequency_caps", "caps 0 and 2 both limit email over the same window"),
        ({"frequency_caps": {"channel": "email"}}, "frequency_caps", "valid list"),
        ({"max_age": "P1D"}, "max_age", "Extra inputs"),
    ],
)  # fmt: skip
async def test_invalid_settings_are_422_naming_the_field(
    api: Api, body: dict[str, Any], field: str, message: str
) -> None:
    answer = await api.put("/v1/journey-settings", body)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["field"] == field
    assert message in error["message"]


# ── Stats ─────────────────────────────────────────────────────────────────────────────────────


def run(
    n: int, *, version: int, holdout: bool = False, goal: bool = False, active: str | None = None
) -> dict[str, Any]:
    return {
        "workspace_id": "shop",
        "run_id": f"r{version}-{holdout:d}-{goal:d}-{active}-{n}",
        "customer_id": f"c{n}",
        "journey_id": "cart",
        "version": version,
        "step": active,
        "status": "active" if active else ("holdout" if holdout else "completed"),
        "entered_at": NOW,
        "updated_at": NOW,
        "trigger": {},
        "holdout": holdout,
        "goal_at": NOW + timedelta(days=1) if goal else None,
        "visits": {},
        "wake_at": None,
        "waiting": None,
        "exit_reason": None,
    }


async def test_stats_count_runs_steps_and_lift(api: Api) -> None:
    await api.post("/v1/journeys", cart(holdout_percent=10))
    await api.post("/v1/journeys/cart/versions/1/publish")
    rows = (
        [run(i, version=1, goal=True) for i in range(30)]
        + [run(i, version=1) for i in range(60)]
        + [run(i, version=1, active="wait") for i in range(8)]
        + [run(i, version=1, active="remind") for i in range(2)]
        + [run(i, version=1, holdout=True, goal=True) for i in range(2)]
        + [run(i, version=1, holdout=True) for i in range(8)]
    )
    counters = [
        ("wait", "entered", "", 110),
        ("wait", "waited", "", 100),
        ("remind", "sent", "", 85),
        ("remind", "skipped", "frequency_cap", 3),
        ("remind", "skipped", "no_consent", 2),
        ("remind", "held", "send_window", 4),
        ("end", "exited", "exit_step", 80),
        ("", "exited", "holdout", 10),
        ("wait", "exited", "exit_when", 10),
        ("remind", "goal", "", 32),
    ]
    async with api.engine.begin() as conn:
        await conn.execute(insert(instances), rows)
        await conn.execute(insert(instances), [run(0, version=9, goal=True)])
        await conn.execute(
            insert(step_counts),
            [
                {
                    "workspace_id": "shop",
                    "journey_id": "cart",
                    "version": 1,
                    "step": step,
                    "kind": kind,
                    "reason": reason,
                    "count": count,
                }
                for step, kind, reason, count in counters
            ],
        )

    answer = await api.get("/v1/journeys/cart/stats", params={"version": 1})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["total"] is None
    [v1] = body["versions"]
    assert v1["version"] == 1
    assert (v1["entered"], v1["active"], v1["goal_reached"]) == (110, 10, 32)
    assert v1["exited"] == {
        "total": 100,
        "reasons": {"exit_step": 80, "exit_when": 10, "holdout": 10},
    }
    steps = {s["step"]: s for s in v1["steps"]}
    assert [s["step"] for s in v1["steps"]] == ["wait", "remind", "end"]  # the journey's order
    assert steps["wait"]["active"] == 8
    assert steps["wait"]["counts"]["entered"] == {"total": 110, "reasons": {}}
    assert steps["remind"]["active"] == 2
    assert steps["remind"]["counts"]["sent"]["total"] == 85
    assert steps["remind"]["counts"]["skipped"] == {
        "total": 5,
        "reasons": {"frequency_cap": 3, "no_consent": 2},
    }
    assert steps["remind"]["counts"]["held"]["reasons"] == {"send_window": 4}
    assert "sent" not in steps["wait"]["counts"]
    assert v1["treated"] == {"runs": 100, "converted": 30, "rate": 0.3}
    assert v1["holdout"] == {"runs": 10, "converted": 2, "rate": 0.2}
    assert v1["lift"]["difference"] == pytest.approx(0.1)
    # Newcombe's interval from the Wilson bounds, worked out by hand: 30/100 in
    # (0.21895, 0.39585), 2/10 in (0.05668, 0.50984).
    assert (v1["lift"]["low"], v1["lift"]["high"]) == pytest.approx((-0.22026, 0.27242), abs=1e-5)
    assert v1["lift"]["confidence"] == 0.95
    assert v1["lift"]["significant"] is False

    everything = (await api.get("/v1/journeys/cart/stats")).json()
    assert [v["version"] for v in everything["versions"]] == [1, 9]
    assert everything["versions"][1]["lift"] is None  # no holdout runs in version 9
    total = everything["total"]
    assert (total["version"], total["entered"], total["goal_reached"]) == (None, 111, 33)
    assert total["treated"] == {"runs": 101, "converted": 31, "rate": pytest.approx(31 / 101)}


async def test_stats_of_a_journey_without_runs_are_zeros(api: Api) -> None:
    answer = await api.get("/v1/journeys/cart/stats")
    assert answer.status_code == 404
    assert answer.json()["error"]["message"] == "no journey 'cart' in this workspace"
    assert (await api.post("/v1/journeys", cart())).status_code == 201  # a draft only
    answer = await api.get("/v1/journeys/cart/stats")
    assert answer.status_code == 404
    assert answer.json()["error"]["message"] == (
        "journey 'cart' has no published version yet: stats are kept per published version"
    )
    body = (await api.get("/v1/journeys/welcome/stats")).json()
    [v3] = body["versions"]
    assert (v3["version"], v3["entered"], v3["lift"]) == (3, 0, None)
    assert v3["treated"] == {"runs": 0, "converted": 0, "rate": None}
    assert [s["step"] for s in v3["steps"]] == ["hello"]
    assert (await api.get("/v1/journeys/welcome/stats", params={"version": 2})).status_code == 404


# ── A customer's runs ─────────────────────────────────────────────────────────────────────────


async def test_a_customers_runs_with_their_latest_activity(api: Api) -> None:
    waiting = {
        **run(1, version=1, active="wait"),
        "run_id": "run-a",
        "waiting": "wait",
        "wake_at": NOW + timedelta(hours=4),
    }
    done = {
        **run(1, version=1),
        "run_id": "run-b",
        "entered_at": NOW - timedelta(days=2),
        "exit_reason": "exit_step",
    }
    records = [
        ("run-b", "entered", "wait", None, NOW - timedelta(days=2)),
        ("run-b", "sent", "remind", None, NOW - timedelta(days=2, hours=-4)),
        ("run-b", "exited", "end", "exit_step", NOW - timedelta(days=2, hours=-4)),
        ("run-a", "entered", "wait", None, NOW),
        ("run-a", "waited", "wait", None, NOW),
    ]
    async with api.engine.begin() as conn:
        await conn.execute(insert(instances), [waiting, done, {**run(9, version=1), "run_id": "x"}])
        await conn.execute(
            insert(activity),
            [
                {
                    "workspace_id": "shop",
                    "customer_id": "c1",
                    "journey_id": "cart",
                    "version": 1,
                    "run_id": run_id,
                    "step": step,
                    "kind": kind,
                    "reason": reason,
                    "detail": {"n": i},
                    "at": at,
                }
                for i, (run_id, kind, step, reason, at) in enumerate(records)
            ],
        )
    answer = await api.get("/v1/customers/c1/journeys", params={"activity": 2})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["customer_id"] == "c1"
    assert [r["run_id"] for r in body["runs"]] == ["run-a", "run-b"]
    first, second = body["runs"]
    assert (first["status"], first["step"], first["waiting"]) == ("active", "wait", "wait")
    assert first["wake_at"].startswith("2026-11-23T13:00:00")
    assert [a["kind"] for a in first["activity"]] == ["waited", "entered"]
    assert (second["status"], second["exit_reason"]) == ("completed", "exit_step")
    assert [(a["kind"], a["reason"]) for a in second["activity"]] == [
        ("exited", "exit_step"),
        ("sent", None),
    ]
    # One record per run: run-a's two newest records must not take run-b's share.
    answer = await api.get("/v1/customers/c1/journeys", params={"activity": 1, "limit": 2})
    assert [[a["kind"] for a in r["activity"]] for r in answer.json()["runs"]] == [
        ["waited"],
        ["exited"],
    ]
    other = {"Authorization": f"Bearer {api.other_admin}"}
    assert (await api.get("/v1/customers/c1/journeys", headers=other)).json()["runs"] == []


async def test_odd_text_is_stored_or_refused_never_a_server_error(api: Api) -> None:
    created = await api.post("/v1/journeys", cart(name="nul \x00 and emoji \U0001f600"))
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "nul \x00 and emoji \U0001f600"
    lone = await api.client.post(
        "/v1/journeys",
        headers={**api.auth(), "Content-Type": "application/json"},
        content=json.dumps(cart(id="lone")).replace("Cart reminder", "\\ud800").encode(),
    )
    assert lone.status_code == 422
    assert lone.json()["error"]["field"] == "$"
    huge = cart(id="huge")
    huge["steps"]["wait"]["wait"] = "P99999999999999W"
    answer = await api.post("/v1/journeys", huge)
    assert answer.status_code == 422
