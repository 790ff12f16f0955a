"""Templates and discount codes over HTTP (httpx against the ASGI app), and the renderer the
dispatcher uses, on SQLite and PostgreSQL: versions, the file fallback, checks at save and at
preview, codes drawn once per message, concurrent draws, workspace isolation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from fastapi import FastAPI
from sqlalchemy import event, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.components import ALL, COMPONENTS, components_for
from services.dispatch.adapters.codes import DiscountCodes
from services.dispatch.adapters.tables import discount_codes
from services.dispatch.adapters.template_repository import SavedTemplates, TemplateRenderer
from services.dispatch.adapters.templates import TemplateStore
from services.dispatch.domain.messages import Rendered
from services.dispatch.domain.template_errors import (
    InvalidTemplate,
    NoCodeLeft,
    TemplateNotFound,
    UndefinedVariable,
)
from services.dispatch.domain.templates import default_sample
from services.dispatch.entrypoints.templates import templates_router
from services.dispatch.service_layer.uow import DispatchUnitOfWork
from shared.clock import VirtualClock
from shared.db.engine import create_engine, session_factory
from shared.db.migrate import upgrade
from shared.http import install_error_handlers
from shared.tenancy.keys import KeyStore, Scope

NOW = datetime(2026, 11, 23, 9, tzinfo=UTC)

WELCOME: dict[str, Any] = {
    "channel": "email",
    "parts": {
        "subject": "Welcome, {{ customer.first_name | default: 'friend' }}!",
        "html": "<h1>Hi {{ customer.first_name | default: 'there' }}</h1>",
        "text": "Hi {{ customer.first_name | default: 'there' }}",
    },
}
PROMO: dict[str, Any] = {
    "channel": "email",
    "parts": {
        "subject": "A gift for you",
        "text": "Your code: {{ codes.welcome10 }}",
        "html": "<p>Your code: <b>{{ codes.welcome10 }}</b></p>",
    },
}


@dataclass
class Api:
    client: httpx.AsyncClient
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    renderer: TemplateRenderer
    clock: VirtualClock
    keys: dict[str, str]

    def auth(self, who: str = "shop") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}

    async def put(self, path: str, body: Any, who: str = "shop") -> httpx.Response:
        return await self.client.put(path, json=body, headers=self.auth(who))

    async def post(self, path: str, body: Any, who: str = "shop") -> httpx.Response:
        return await self.client.post(path, json=body, headers=self.auth(who))

    async def get(self, path: str, who: str = "shop") -> httpx.Response:
        return await self.client.get(path, headers=self.auth(who))

    async def render(
        self,
        template_id: str,
        *,
        workspace: str = "shop",
        message_id: str = "msg_1",
        channel: str = "email",
        variables: dict[str, Any] | None = None,
        renderer: TemplateRenderer | None = None,
    ) -> Rendered:
        """What the dispatcher does: render in a transaction, which commits the codes drawn."""
        async with self.sessions() as session, session.begin():
            return await (renderer or self.renderer).render(
                session,
                workspace_id=workspace,
                template_id=template_id,
                channel=channel,
                variables=variables or {"customer": {"id": "c1"}},
                message_id=message_id,
                now=self.clock.now(),
            )

    async def claimed(self, workspace: str = "shop") -> dict[str, str]:
        """message id → code, for the codes drawn."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(discount_codes.c.message_id, discount_codes.c.code).where(
                    discount_codes.c.workspace_id == workspace,
                    discount_codes.c.message_id.is_not(None),
                )
            )
            return {r.message_id: r.code for r in rows}


def write(folder: Path, template_id: str, **parts: str) -> None:
    (folder / template_id).mkdir(parents=True)
    for name, body in parts.items():
        (folder / template_id / f"{name}.liquid").write_text(body)


@pytest.fixture
async def api(tmp_path: Path, engine: AsyncEngine) -> AsyncIterator[Api]:
    """On SQLite and on PostgreSQL."""
    async for built in build_api(tmp_path, engine):
        yield built


@pytest.fixture
async def sqlite_api(tmp_path: Path, sqlite_url: str) -> AsyncIterator[Api]:
    """For checks of the request alone, which no database changes: SQLite only."""
    await upgrade(sqlite_url, components_for(ALL))
    engine = create_engine(sqlite_url)
    try:
        async for built in build_api(tmp_path, engine):
            yield built
    finally:
        await engine.dispose()


async def build_api(tmp_path: Path, engine: AsyncEngine) -> AsyncIterator[Api]:
    files = tmp_path / "templates"
    write(
        files,
        "welcome",
        subject="Welcome from the file, {{ customer.first_name | default: 'friend' }}",
        text="File body",
    )
    write(files, "order-sms", sms="Order {{ event.properties.order_id }} is on its way")
    clock = VirtualClock(NOW)
    sessions = session_factory(engine)
    renderer = TemplateRenderer(TemplateStore(files), refresh_seconds=30)
    keys = KeyStore(engine, cache_seconds=0)
    plaintexts: dict[str, str] = {}
    for workspace in ("shop", "other"):
        await keys.ensure_workspace(workspace)
        plaintexts[workspace] = (await keys.create_key(workspace, Scope.ADMIN))[1]
    plaintexts["ingest"] = (await keys.create_key("shop", Scope.INGEST))[1]
    app = FastAPI()
    install_error_handlers(app)
    app.state.keys = keys
    app.include_router(
        templates_router(
            uow=lambda: DispatchUnitOfWork(sessions),
            files=files,
            clock=clock,
            renderer=renderer,
        )
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ciclo") as client:
        yield Api(client, engine, sessions, renderer, clock, plaintexts)


async def add_codes(api: Api, pool: str, codes: list[str], **body: Any) -> httpx.Response:
    answer = await api.post(f"/v1/discount-pools/{pool}/codes", {"codes": codes, **body})
    assert answer.status_code == 200, answer.text
    return answer


# ── Auth ──────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/templates"),
        ("GET", "/v1/templates/welcome"),
        ("PUT", "/v1/templates/welcome"),
        ("POST", "/v1/templates/welcome/preview"),
        ("GET", "/v1/discount-pools/welcome10"),
        ("POST", "/v1/discount-pools/welcome10/codes"),
    ],
)
async def test_an_admin_key_is_required(sqlite_api: Api, method: str, path: str) -> None:
    body = WELCOME if method in ("PUT", "POST") else None
    anonymous = await sqlite_api.client.request(method, path, json=body)
    assert anonymous.status_code == 401
    ingest = await sqlite_api.client.request(
        method, path, headers=sqlite_api.auth("ingest"), json=body
    )
    assert ingest.status_code == 403


# ── Versions and the file fallback ────────────────────────────────────────────────────────────


async def test_each_save_is_a_version_and_the_latest_renders(api: Api) -> None:
    first = await api.put("/v1/templates/welcome", WELCOME)
    assert first.status_code == 201, first.text
    assert first.headers["location"] == "/v1/templates/welcome/versions/1"
    assert (first.json()["version"], first.json()["source"]) == (1, "saved")
    changed = {**WELCOME, "parts": {**WELCOME["parts"], "subject": "v2 for {{ customer.id }}"}}
    second = await api.put("/v1/templates/welcome", changed)
    assert second.status_code == 201
    assert second.json()["version"] == 2

    detail = (await api.get("/v1/templates/welcome")).json()
    assert (detail["version"], detail["channel"], detail["file_fallback"]) == (2, "email", True)
    assert [v["version"] for v in detail["versions"]] == [1, 2]
    assert detail["parts"]["subject"] == "v2 for {{ customer.id }}"
    old = (await api.get("/v1/templates/welcome/versions/1")).json()
    assert old["parts"]["subject"] == WELCOME["parts"]["subject"]
    file = (await api.get("/v1/templates/welcome/versions/0")).json()
    assert (file["source"], file["parts"]["text"]) == ("file", "File body")
    assert (await api.get("/v1/templates/welcome/versions/3")).status_code == 404

    rendered = await api.render("welcome")
    assert rendered.subject == "v2 for c1"
    assert rendered.html == "<h1>Hi there</h1>"


async def test_saving_the_same_content_again_makes_no_version(api: Api) -> None:
    assert (await api.put("/v1/templates/welcome", WELCOME)).status_code == 201
    again = await api.put("/v1/templates/welcome", WELCOME)
    assert again.status_code == 200
    assert again.json()["version"] == 1
    detail = (await api.get("/v1/templates/welcome")).json()
    assert len(detail["versions"]) == 1


async def test_the_file_is_the_fallback_until_the_workspace_saves_one(api: Api) -> None:
    rendered = await api.render("welcome", variables={"customer": {"first_name": "Ana"}})
    assert (rendered.subject, rendered.text) == ("Welcome from the file, Ana", "File body")
    listed = (await api.get("/v1/templates")).json()["templates"]
    assert [(t["id"], t["source"], t["version"], t["channel"]) for t in listed] == [
        ("order-sms", "file", 0, "sms"),
        ("welcome", "file", 0, "email"),
    ]

    assert (await api.put("/v1/templates/welcome", WELCOME)).status_code == 201
    listed = (await api.get("/v1/templates")).json()["templates"]
    welcome = next(t for t in listed if t["id"] == "welcome")
    assert (welcome["source"], welcome["version"], welcome["overrides_file"]) == ("saved", 1, True)
    assert welcome["updated_at"] == "2026-11-23T09:00:00Z"
    assert len(listed) == 2
    assert (await api.render("welcome")).subject == "Welcome, friend!"

    sms = await api.render(
        "order-sms",
        channel="sms",
        variables={"event": {"properties": {"order_id": "1001"}}},
    )
    assert sms.text == "Order 1001 is on its way"


async def test_the_list_comes_a_page_at_a_time(api: Api, tmp_path: Path) -> None:
    """Saved templates and files interleaved, a file with both channels, a saved one replacing
    its file: every page size walks the same list, each entry once, in (id, channel) order."""
    write(tmp_path / "templates", "both", subject="S", text="T", sms="M")
    write(tmp_path / "templates", "zz-file", sms="Z")
    for template_id in ("a-1", "b-2", "both-saved", "c-3", "welcome", "x-9"):
        assert (await api.put(f"/v1/templates/{template_id}", WELCOME)).status_code == 201
    everything = await api.get("/v1/templates")
    assert everything.json()["next"] is None
    expected = [(t["id"], t["channel"], t["source"]) for t in everything.json()["templates"]]
    assert expected == [
        ("a-1", "email", "saved"),
        ("b-2", "email", "saved"),
        ("both", "email", "file"),
        ("both", "sms", "file"),
        ("both-saved", "email", "saved"),
        ("c-3", "email", "saved"),
        ("order-sms", "sms", "file"),
        ("welcome", "email", "saved"),
        ("x-9", "email", "saved"),
        ("zz-file", "sms", "file"),
    ]
    for size in (1, 2, 3, 4, 9, 10):
        walked: list[tuple[str, str, str]] = []
        query = f"/v1/templates?limit={size}"
        for _ in range(len(expected) + 1):
            page = (await api.get(query)).json()
            assert len(page["templates"]) <= size
            walked += [(t["id"], t["channel"], t["source"]) for t in page["templates"]]
            if page["next"] is None:
                break
            query = f"/v1/templates?limit={size}&after={page['next']}"
        assert walked == expected, size


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "query.limit"),
        ("limit=1001", "query.limit"),
        ("limit=ten", "query.limit"),
        ("after=welcome", "query.after"),
        ("after=Welcome:email", "query.after"),
        ("after=welcome:fax", "query.after"),
    ],
)
async def test_a_bad_page_is_422_naming_the_parameter(
    sqlite_api: Api, query: str, field: str
) -> None:
    answer = await sqlite_api.get(f"/v1/templates?{query}")
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == field


async def test_a_template_keeps_its_channel(api: Api) -> None:
    assert (await api.put("/v1/templates/promo", PROMO)).status_code == 201
    answer = await api.put("/v1/templates/promo", {"channel": "sms", "parts": {"sms": "x"}})
    assert answer.status_code == 409
    assert answer.json()["error"]["field"] == "channel"
    with pytest.raises(TemplateNotFound, match="saved as an email template"):
        await api.render("promo", channel="sms")


async def test_a_missing_template_is_not_found(api: Api) -> None:
    assert (await api.get("/v1/templates/nope")).status_code == 404
    assert (await api.post("/v1/templates/nope/preview", {})).status_code == 404
    with pytest.raises(TemplateNotFound, match="no email template 'nope'"):
        await api.render("nope")


async def test_the_latest_version_is_cached_for_the_refresh_interval(api: Api) -> None:
    """A save in another process (straight into the table) shows once the interval passes; the
    latest-version lookup costs one query per interval, not one per message."""
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    renderer = TemplateRenderer(TemplateStore(Path("/nonexistent")), refresh_seconds=30)
    assert (await api.put("/v1/templates/welcome", WELCOME)).status_code == 201
    event.listen(api.engine.sync_engine, "before_cursor_execute", seen)
    try:
        for n in range(20):
            rendered = await api.render("welcome", message_id=f"m{n}", renderer=renderer)
            assert rendered.subject == "Welcome, friend!"
    finally:
        event.remove(api.engine.sync_engine, "before_cursor_execute", seen)
    on_templates = [s for s in statements if "dispatch_templates" in s]
    assert len(on_templates) == 2  # the versions of the workspace, then the version's parts

    async with api.sessions() as session, session.begin():
        await SavedTemplates(session).add(
            "shop",
            "welcome",
            channel="email",
            parts={"subject": "Saved elsewhere", "text": "x"},
            sample=None,
            now=api.clock.now(),
        )
    assert (await api.render("welcome", renderer=renderer)).subject == "Welcome, friend!"
    api.clock.advance(timedelta(seconds=30))
    assert (await api.render("welcome", renderer=renderer)).subject == "Saved elsewhere"


async def test_a_template_saved_elsewhere_is_looked_for_before_a_message_fails(api: Api) -> None:
    renderer = TemplateRenderer(TemplateStore(Path("/nonexistent")), refresh_seconds=30)
    with pytest.raises(TemplateNotFound):
        await api.render("brand-new", renderer=renderer)
    async with api.sessions() as session, session.begin():
        await SavedTemplates(session).add(
            "shop",
            "brand-new",
            channel="email",
            parts={"subject": "Just saved", "text": "x"},
            sample=None,
            now=api.clock.now(),
        )
    assert (await api.render("brand-new", renderer=renderer)).subject == "Just saved"


async def test_a_broken_file_does_not_stop_the_saved_version(api: Api, tmp_path: Path) -> None:
    files = tmp_path / "broken-files"
    write(files, "welcome", subject="{% if %}", text="x")
    renderer = TemplateRenderer(TemplateStore(files))
    with pytest.raises(InvalidTemplate, match="template welcome subject"):
        await api.render("welcome", renderer=renderer)
    assert (await api.put("/v1/templates/welcome", WELCOME)).status_code == 201
    renderer.forget("shop")
    assert (await api.render("welcome", renderer=renderer)).subject == "Welcome, friend!"


async def test_a_save_over_http_is_used_at_once_by_the_renderer_it_was_given(api: Api) -> None:
    assert (await api.render("welcome")).text == "File body"  # caches: no saved version
    assert (await api.put("/v1/templates/welcome", WELCOME)).status_code == 201
    assert (await api.render("welcome")).text == "Hi there"


# ── Checks at save ────────────────────────────────────────────────────────────────────────────


async def test_an_undefined_variable_is_refused_at_save_naming_it(api: Api) -> None:
    body = {
        "channel": "email",
        "parts": {"subject": "Hi", "html": "<p>Hello</p>\n<p>{{ customer.first_name }}</p>"},
    }
    answer = await api.put("/v1/templates/hello", body)
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "undefined_variable"
    assert (error["field"], error["part"], error["line"]) == ("parts.html", "html", 2)
    assert error["variable"] == "customer.first_name"
    assert "customer.first_name is undefined" in error["message"]
    assert (await api.get("/v1/templates/hello")).status_code == 404

    declared = {**body, "sample": {"customer": {"first_name": "Ana"}}}
    saved = await api.put("/v1/templates/hello", declared)
    assert saved.status_code == 201, saved.text
    assert saved.json()["sample"] == {"customer": {"first_name": "Ana"}}


async def test_the_default_sample_has_what_every_message_has(api: Api) -> None:
    body = {
        "channel": "email",
        "parts": {
            "subject": "For {{ customer.email }}",
            "text": "{{ message.id }} {{ event.type }} {{ unsubscribe_url }} {{ preferences_url }}"
            " {{ segments | size }} {{ scores.rfm | default: 0 }} {{ stage | default: 'new' }}"
            " {{ lead.band | default: 'cold' }} {{ profile.order_count | default: 0 }}"
            " {{ rfm.group | default: '-' }} {{ predictions.p_alive | default: '-' }}",
        },
    }
    assert (await api.put("/v1/templates/everything", body)).status_code == 201
    # Customer intelligence may be off for a workspace: its values need a default.
    bare = {"channel": "sms", "parts": {"sms": "You are {{ lead.band }}"}}
    answer = await api.put("/v1/templates/bare", bare)
    assert answer.status_code == 422, answer.text
    assert "lead.band" in answer.json()["error"]["message"]


async def test_customer_intelligence_can_be_declared_in_the_sample_and_previewed(
    api: Api,
) -> None:
    body = {
        "channel": "email",
        "parts": {
            "subject": "You are {{ lead.band }}",
            "text": "{{ stage }} {{ profile.order_count }} {{ rfm.group }} {{ predictions.clv }}",
        },
        "sample": {
            "lead": {"band": "hot", "score": 80},
            "stage": "active",
            "profile": {"order_count": 3},
            "rfm": {"group": "champions"},
            "predictions": {"clv": "120.00"},
        },
    }
    saved = await api.put("/v1/templates/vip", body)
    assert saved.status_code == 201, saved.text
    assert saved.json()["sample"] == body["sample"]
    answer = await api.post(
        "/v1/templates/vip/preview",
        {"stage": "at_risk", "lead": {"band": "cold"}, "rfm": {"group": "lapsing"}},
    )
    assert answer.status_code == 200, answer.text
    assert (answer.json()["subject"], answer.json()["text"]) == (
        "You are cold",
        "at_risk 3 lapsing 120.00",
    )
    # Every variable of the default sample can be declared: none is refused as unknown.
    for root, value in default_sample("sms").items():
        declared = {"channel": "sms", "parts": {"sms": "x"}, "sample": {root: value}}
        answer = await api.put(f"/v1/templates/vip-{root.replace('_', '-')}", declared)
        assert answer.status_code == 201, (root, answer.text)


async def test_a_syntax_error_is_refused_naming_part_and_line(api: Api) -> None:
    body = {"channel": "email", "parts": {"subject": "Hi", "text": "Hello\n{% if x %}"}}
    answer = await api.put("/v1/templates/broken", body)
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert (error["code"], error["field"], error["part"]) == (
        "template_syntax",
        "parts.text",
        "text",
    )
    assert "expected tag endif" in error["message"]
    # Where the block that was never closed opens: what the author must find.
    assert (error["line"], error["column"]) == (2, 1)

    unknown_filter = {"channel": "sms", "parts": {"sms": "one\ntwo {{ 'a' | shout }}"}}
    answer = await api.put("/v1/templates/broken", unknown_filter)
    error = answer.json()["error"]
    assert (answer.status_code, error["part"], error["line"]) == (422, "sms", 2)
    assert "unknown filter 'shout'" in error["message"]


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"channel": "email", "parts": {"text": "x"}}, "parts.subject", "needs a subject"),
        (
            {"channel": "email", "parts": {"subject": "x"}},
            "parts.text",
            "needs a text part, an html part or both",
        ),
        ({"channel": "sms", "parts": {"text": "x"}}, "parts.text", "not a part of an sms"),
        (
            {"channel": "email", "parts": {"subject": "x", "text": "x", "footer": "x"}},
            "parts.footer",
            "Extra inputs are not permitted",
        ),
        (
            {"channel": "email", "parts": {"subject": "x", "html": "x" * (512 * 1024 + 1)}},
            "parts.html",
            "at most 524288 characters",
        ),
        ({"channel": "fax", "parts": {"sms": "x"}}, "channel", "'email' or 'sms'"),
        (
            {"channel": "sms", "parts": {"sms": "x"}, "sample": {"customr": {}}},
            "sample.customr",
            "Extra inputs",
        ),
    ],
)
async def test_invalid_bodies_are_422_naming_the_field(
    sqlite_api: Api, body: dict[str, Any], field: str, message: str
) -> None:
    answer = await sqlite_api.put("/v1/templates/t", body)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["field"] == field
    assert message in error["message"]


async def test_text_the_database_cannot_store_is_422(sqlite_api: Api) -> None:
    sms = '{"channel": "sms", "parts": {"sms": "x"}, "sample": '
    for raw in (
        '{"channel": "sms", "parts": {"sms": "a\\ud800b"}}',
        '{"channel": "sms", "parts": {"sms": "a\\u0000b"}}',
        sms + '{"customer": {"a": "\\udfff"}}}',
        sms + '{"scores": {"a": NaN}}}',
        sms + '{"scores": {"a": 1e999}}}',
        sms + '{"scores": {"a": 18446744073709551616}}}',
    ):
        answer = await sqlite_api.client.put(
            "/v1/templates/t",
            content=raw,
            headers={**sqlite_api.auth(), "Content-Type": "application/json"},
        )
        assert answer.status_code == 422, (raw, answer.text)


@pytest.mark.parametrize("template_id", ["Welcome", "-x", "a" * 101, "a.b"])
async def test_a_bad_template_id_is_422(sqlite_api: Api, template_id: str) -> None:
    answer = await sqlite_api.put(f"/v1/templates/{template_id}", WELCOME)
    assert answer.status_code == 422
    assert answer.json()["error"]["field"] == "path.template_id"


# ── Preview ───────────────────────────────────────────────────────────────────────────────────


async def test_preview_renders_the_latest_with_the_variables_given(api: Api) -> None:
    await api.put("/v1/templates/welcome", WELCOME)
    answer = await api.post("/v1/templates/welcome/preview", {"customer": {"first_name": "Bo"}})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["version"], body["subject"], body["html"]) == (1, "Welcome, Bo!", "<h1>Hi Bo</h1>")
    assert body["sms"] is None

    file = await api.post(
        "/v1/templates/welcome/preview", {"version": 0, "customer": {"first_name": "Bo"}}
    )
    assert (file.json()["version"], file.json()["subject"]) == (0, "Welcome from the file, Bo")


async def test_preview_names_an_undefined_variable(api: Api) -> None:
    answer = await api.post("/v1/templates/order-sms/preview", {})
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert (error["code"], error["variable"], error["part"]) == (
        "undefined_variable",
        "event.properties.order_id",
        "sms",
    )
    given = await api.post(
        "/v1/templates/order-sms/preview", {"event": {"properties": {"order_id": "A-7"}}}
    )
    assert given.json()["sms"] == "Order A-7 is on its way"


async def test_preview_starts_from_the_saved_sample(api: Api) -> None:
    body = {
        "channel": "sms",
        "parts": {"sms": "{{ customer.first_name }} bought {{ event.properties.sku }}"},
        "sample": {"customer": {"first_name": "Ana"}, "event": {"properties": {"sku": "S1"}}},
    }
    assert (await api.put("/v1/templates/bought", body)).status_code == 201
    answer = await api.post("/v1/templates/bought/preview", {"customer": {"first_name": "Bo"}})
    assert answer.json()["sms"] == "Bo bought S1"


async def test_preview_of_unsaved_parts_saves_nothing(api: Api) -> None:
    parts = {"sms": "Hi {{ customer.first_name }}, use {{ codes.spring }}"}
    answer = await api.post(
        "/v1/templates/draft-1/preview",
        {"channel": "sms", "parts": parts, "customer": {"first_name": "Bo"}},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["sms"], body["version"]) == ("Hi Bo, use PREVIEW-SPRING", None)
    assert body["codes"] == {"spring": "PREVIEW-SPRING"}
    assert (await api.get("/v1/templates/draft-1")).status_code == 404

    undefined = await api.post("/v1/templates/draft-1/preview", {"channel": "sms", "parts": parts})
    assert undefined.json()["error"]["variable"] == "customer.first_name"
    no_channel = await api.post("/v1/templates/draft-1/preview", {"parts": parts})
    assert (no_channel.status_code, no_channel.json()["error"]["field"]) == (422, "channel")
    both = await api.post("/v1/templates/welcome/preview", {"parts": parts, "version": 1})
    assert both.status_code == 422


async def test_preview_never_draws_a_code(api: Api) -> None:
    await add_codes(api, "welcome10", ["W-1"])
    assert (await api.put("/v1/templates/promo", PROMO)).status_code == 201
    answer = await api.post("/v1/templates/promo/preview", {})
    assert answer.json()["text"] == "Your code: PREVIEW-WELCOME10"
    pool = (await api.get("/v1/discount-pools/welcome10")).json()
    assert (pool["claimed"], pool["free"]) == (0, 1)


# ── Discount codes ────────────────────────────────────────────────────────────────────────────


async def test_codes_are_added_with_duplicates_reported(api: Api) -> None:
    first = await add_codes(api, "welcome10", ["A", "B", "A"])
    assert (first.json()["added"], first.json()["duplicates"]) == (2, ["A"])
    second = await add_codes(api, "welcome10", ["B", "C"], expires_at="2026-12-01T00:00:00Z")
    assert (second.json()["added"], second.json()["duplicates"]) == (1, ["B"])
    assert second.json()["pool"] == {
        "pool": "welcome10",
        "total": 3,
        "claimed": 0,
        "free": 3,
        "expired": 0,
    }
    api.clock.set(datetime(2026, 12, 2, tzinfo=UTC))
    pool = (await api.get("/v1/discount-pools/welcome10")).json()
    assert (pool["total"], pool["free"], pool["expired"]) == (3, 2, 1)
    empty = (await api.get("/v1/discount-pools/never-used")).json()
    assert empty == {"pool": "never-used", "total": 0, "claimed": 0, "free": 0, "expired": 0}
    listed = (await api.get("/v1/discount-pools")).json()["pools"]
    assert [p["pool"] for p in listed] == ["welcome10"]


async def test_a_code_in_another_pool_refuses_the_upload_naming_it(api: Api) -> None:
    """The same code in two pools would go to two customers: the upload naming it is a 409
    listing each such code with the pool that holds it, and nothing of it is added; the codes
    the workspace had stay as they were."""
    await add_codes(api, "welcome10", ["A", "B", "Z"])
    refused = await api.post("/v1/discount-pools/winback/codes", {"codes": ["C", "B", "D", "Z"]})
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["field"]) == ("code_in_another_pool", "codes")
    assert error["conflicts"] == [
        {"code": "B", "pool": "welcome10"},
        {"code": "Z", "pool": "welcome10"},
    ]
    assert "'B' (in 'welcome10')" in error["message"]
    assert (await api.get("/v1/discount-pools/winback")).json()["total"] == 0
    assert (await api.get("/v1/discount-pools/welcome10")).json()["total"] == 3

    accepted = await add_codes(api, "winback", ["C", "D"])
    assert accepted.json()["added"] == 2
    # Another workspace may hold the same code in any pool: codes are unique per workspace.
    theirs = await api.post("/v1/discount-pools/other-pool/codes", {"codes": ["B"]}, who="other")
    assert theirs.status_code == 200, theirs.text


async def test_the_database_holds_a_code_in_one_pool_of_a_workspace(api: Api) -> None:
    """The unique index, not only the route: a second pool's row for a code is refused."""
    await add_codes(api, "welcome10", ["A"])
    row = {"workspace_id": "shop", "pool": "winback", "code": "A"}
    with pytest.raises(IntegrityError):
        async with api.engine.begin() as conn:
            await conn.execute(insert(discount_codes).values(row))


async def test_the_migration_keeps_one_pool_per_code(engine: AsyncEngine) -> None:
    """``d0004``: a code already in several pools keeps the row a message drew (the earliest
    draw), else the first pool's; the index then holds."""
    dispatch = COMPONENTS["dispatch"]

    def code(pool: str, value: str, message: str | None = None, at: int = 0) -> dict[str, Any]:
        claimed = NOW + timedelta(minutes=at) if message else None
        return {
            "workspace_id": "shop",
            "pool": pool,
            "code": value,
            "message_id": message,
            "claimed_at": claimed,
        }

    async with engine.begin() as conn:
        await conn.run_sync(lambda c: command.downgrade(dispatch.config(c), "d0003"))
        await conn.execute(
            insert(discount_codes),
            [
                code("b", "FREE"),
                code("a", "FREE"),
                code("a", "DRAWN"),
                code("b", "DRAWN", "m1"),
                code("a", "TWICE", "m3", at=2),
                code("c", "TWICE", "m2", at=1),
                code("c", "ALONE"),
            ],
        )
        await conn.run_sync(lambda c: command.upgrade(dispatch.config(c), "head"))
        rows = await conn.execute(
            select(discount_codes.c.code, discount_codes.c.pool, discount_codes.c.message_id)
        )
        kept = sorted(tuple(r) for r in rows)
    assert kept == [
        ("ALONE", "c", None),
        ("DRAWN", "b", "m1"),
        ("FREE", "a", None),
        ("TWICE", "c", "m2"),
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"codes": []}, "codes"),
        ({"codes": ["has space"]}, "codes.0"),
        ({"codes": ["x" * 101]}, "codes.0"),
        ({"codes": ["A"], "expires_at": "2026-11-01T00:00:00Z"}, "expires_at"),
        ({"codes": ["A"], "expires_at": "2026-12-01T00:00:00"}, "expires_at"),
        ({"codes": ["A"], "expires_at": "9999-12-31T23:59:59-01:00"}, "expires_at"),
        ({"codes": [f"C{n}" for n in range(10_001)]}, "codes"),
    ],
)
async def test_invalid_codes_are_422(sqlite_api: Api, body: dict[str, Any], field: str) -> None:
    answer = await sqlite_api.post("/v1/discount-pools/welcome10/codes", body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == field


async def test_ten_thousand_codes_in_one_request(api: Api) -> None:
    codes = [f"BULK-{n:05d}" for n in range(10_000)]
    answer = await add_codes(api, "bulk", codes)
    assert (answer.json()["added"], answer.json()["pool"]["free"]) == (10_000, 10_000)
    again = await add_codes(api, "bulk", codes)
    assert (again.json()["added"], len(again.json()["duplicates"])) == (0, 10_000)


async def test_a_message_gets_one_code_and_keeps_it(api: Api) -> None:
    await add_codes(api, "welcome10", ["W-1", "W-2", "W-3"])
    assert (await api.put("/v1/templates/promo", PROMO)).status_code == 201

    first = await api.render("promo", message_id="msg_a")
    code = first.text.removeprefix("Your code: ")
    assert code in {"W-1", "W-2", "W-3"}
    assert first.html == f"<p>Your code: <b>{code}</b></p>"
    again = await api.render("promo", message_id="msg_a")  # a retry of the same message
    assert again.text == first.text
    other = await api.render("promo", message_id="msg_b")
    assert other.text != first.text
    assert await api.claimed() == {"msg_a": code, "msg_b": other.text.removeprefix("Your code: ")}
    pool = (await api.get("/v1/discount-pools/welcome10")).json()
    assert (pool["claimed"], pool["free"]) == (2, 1)


async def test_expired_codes_are_never_drawn(api: Api) -> None:
    await add_codes(api, "welcome10", ["OLD"], expires_at="2026-11-24T00:00:00Z")
    await add_codes(api, "welcome10", ["NEW"])
    await api.put("/v1/templates/promo", PROMO)
    api.clock.set(datetime(2026, 11, 25, tzinfo=UTC))
    assert (await api.render("promo", message_id="m1")).text == "Your code: NEW"
    with pytest.raises(NoCodeLeft):
        await api.render("promo", message_id="m2")


async def test_an_empty_pool_fails_the_message_and_keeps_the_other_pools_codes(api: Api) -> None:
    body = {
        "channel": "sms",
        "parts": {"sms": "{{ codes.alpha }} {{ codes.beta }}"},
    }
    assert (await api.put("/v1/templates/two", body)).status_code == 201
    await add_codes(api, "alpha", ["A-1"])
    with pytest.raises(NoCodeLeft, match="'beta'") as caught:
        await api.render("two", channel="sms")
    assert caught.value.pool == "beta"
    assert await api.claimed() == {}  # alpha's code went back to its pool
    await add_codes(api, "beta", ["B-1"])
    assert (await api.render("two", channel="sms")).text == "A-1 B-1"


async def test_a_render_that_fails_gives_its_codes_back(api: Api) -> None:
    body = {
        "channel": "sms",
        "parts": {"sms": "{{ codes.alpha }} {{ customer.first_name }}"},
        "sample": {"customer": {"first_name": "Ana"}},
    }
    assert (await api.put("/v1/templates/named", body)).status_code == 201
    await add_codes(api, "alpha", ["A-1"])
    with pytest.raises(UndefinedVariable, match=r"customer\.first_name is undefined"):
        await api.render("named", channel="sms", variables={"customer": {"id": "c1"}})
    assert await api.claimed() == {}


async def test_concurrent_messages_never_share_a_code(api: Api) -> None:
    """Twenty messages drawing at once from a pool of fifteen, each transaction holding its lock
    a moment: fifteen distinct codes, five messages told the pool is empty."""
    await add_codes(api, "welcome10", [f"W-{n}" for n in range(15)])
    assert (await api.put("/v1/templates/promo", PROMO)).status_code == 201
    await api.render("welcome")  # warm the caches so every task goes straight to drawing

    async def draw(n: int) -> str | None:
        async with api.sessions() as session, session.begin():
            try:
                rendered = await api.renderer.render(
                    session,
                    workspace_id="shop",
                    template_id="promo",
                    channel="email",
                    variables={"customer": {"id": f"c{n}"}},
                    message_id=f"msg_{n}",
                    now=api.clock.now(),
                )
            except NoCodeLeft:
                return None
            await asyncio.sleep(0.05)  # hold the row lock while the others draw
            return rendered.text.removeprefix("Your code: ")

    results = await asyncio.gather(*(draw(n) for n in range(20)))
    codes = [c for c in results if c is not None]
    assert len(codes) == 15
    assert len(set(codes)) == 15
    assert results.count(None) == 5
    claimed = await api.claimed()
    assert len(claimed) == 15
    assert sorted(claimed.values()) == sorted(codes)


# ── Workspaces ────────────────────────────────────────────────────────────────────────────────


async def test_another_workspaces_templates_and_codes_are_invisible(api: Api) -> None:
    assert (await api.put("/v1/templates/promo", PROMO)).status_code == 201
    await add_codes(api, "welcome10", ["SHOP-1"])

    assert (await api.get("/v1/templates/promo", who="other")).status_code == 404
    assert (await api.post("/v1/templates/promo/preview", {}, who="other")).status_code == 404
    listed = (await api.get("/v1/templates", who="other")).json()["templates"]
    assert {t["id"] for t in listed} == {"welcome", "order-sms"}
    pool = (await api.get("/v1/discount-pools/welcome10", who="other")).json()
    assert pool["total"] == 0
    with pytest.raises(TemplateNotFound):
        await api.render("promo", workspace="other")

    # The same id saved in the other workspace is its own template, with its own pool.
    other = {**PROMO, "parts": {**PROMO["parts"], "subject": "Other's gift"}}
    assert (await api.put("/v1/templates/promo", other, who="other")).json()["version"] == 1
    await api.post("/v1/discount-pools/welcome10/codes", {"codes": ["OTHER-1"]}, who="other")
    mine = await api.render("promo", message_id="m1")
    theirs = await api.render("promo", workspace="other", message_id="m1")
    assert (mine.subject, mine.text) == ("A gift for you", "Your code: SHOP-1")
    assert (theirs.subject, theirs.text) == ("Other's gift", "Your code: OTHER-1")


async def test_codes_repository_counts(api: Api) -> None:
    async with api.sessions() as session, session.begin():
        codes = DiscountCodes(session)
        added = await codes.add("shop", "p", ["X", "Y"], expires_at=None)
        assert (added.added, added.duplicates) == (2, [])
        claimed = await codes.claim("shop", ["p"], message_id="m", now=NOW)
        assert claimed.codes["p"] in {"X", "Y"} and claimed.new == (("p", claimed.codes["p"]),)
        again = await codes.claim("shop", ["p"], message_id="m", now=NOW)
        assert (again.codes, again.new) == (claimed.codes, ())
        [stats] = await codes.stats("shop", now=NOW)
        assert (stats.total, stats.claimed, stats.free, stats.expired) == (2, 1, 1, 0)


# ── Concurrent saves ──────────────────────────────────────────────────────────────────────────


async def test_identical_saves_at_the_same_instant_make_one_version(api: Api) -> None:
    """Twelve clients saving the same content at once (a double-clicked button, a deploy
    script on every replica): one version, one 201, the others 200 with that version."""
    answers = await asyncio.gather(*(api.put("/v1/templates/welcome", WELCOME) for _ in range(12)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 11 + [201], [
        (a.status_code, a.json().get("version"), a.headers.get("location")) for a in answers
    ]
    assert {a.json()["version"] for a in answers} == {1}
    detail = (await api.get("/v1/templates/welcome")).json()
    assert [v["version"] for v in detail["versions"]] == [1]


async def test_different_saves_at_the_same_instant_each_make_a_version(api: Api) -> None:
    """Eight different contents saved at once: eight versions, numbered 1 to 8, none refused."""

    def body(n: int) -> dict[str, Any]:
        return {**WELCOME, "parts": {**WELCOME["parts"], "subject": f"Subject {n}"}}

    answers = await asyncio.gather(*(api.put("/v1/templates/welcome", body(n)) for n in range(8)))
    assert [a.status_code for a in answers] == [201] * 8, [a.text for a in answers]
    assert sorted(a.json()["version"] for a in answers) == list(range(1, 9))
    detail = (await api.get("/v1/templates/welcome")).json()
    assert [v["version"] for v in detail["versions"]] == list(range(1, 9))
