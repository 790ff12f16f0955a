"""HTTP routes of the journey service (admin keys; the key decides the workspace).

- ``/v1/journeys``: manage journeys as versioned JSON documents (draft → published; a published
  version never changes), pause, resume and archive them, read their stats;
- ``/v1/journey-settings``: the workspace's live cut-off, event age, time zone, frequency caps;
- ``/v1/customers/{id}/journeys``: one customer's runs with their latest activity.

Journeys in journeys/ apply to every workspace and are read-only here (``source: "file"``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response, status
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.convertors import Convertor, register_url_convertor

from services.journey.adapters import stats as stats_adapter
from services.journey.adapters import workspace_settings as settings_adapter
from services.journey.adapters.definitions import (
    Conflict,
    DefinitionRow,
    Invalid,
    JourneyStore,
    NotFound,
    VersionRow,
)
from services.journey.adapters.files import template_ids
from services.journey.adapters.saved_templates import SavedTemplates
from services.journey.adapters.stats import CustomerRuns, JourneyStats
from services.journey.adapters.workspace_settings import JourneySettingsIn, JourneySettingsOut
from services.journey.domain.definitions import Journey
from services.journey.domain.validation import (
    Problem,
    json_problems,
    loads_document,
    validate_journey,
)
from services.journey.settings import JourneySettings
from shared.clock import Clock
from shared.http import HTTPProblem, Unprocessable, require_json
from shared.tenancy.http import AdminPrincipal

JOURNEY_ID = r"^[a-z0-9][a-z0-9_-]{0,99}$"
MAX_INT = 2**31 - 1  # versions are 32-bit integers in the database

JourneyId = Annotated[
    str, Path(pattern=JOURNEY_ID, description="The journey's id.", examples=["welcome"])
]
VersionNumber = Annotated[int, Path(ge=1, le=MAX_INT, description="A version of the journey.")]
CustomerId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=210,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="The customer's id (as sent in events). Slashes are part of it "
        "(`gid://shopify/Customer/1`), written as they are or as `%2F`.",
    ),
]

CUSTOMER_SUBRESOURCES = ("export", "journeys")
"""What may follow a customer id in a path (``/v1/customers/{id}/export``)."""


class CustomerPath(Convertor[str]):
    """A customer id in a route's path (``{customer_id:customer}``), slashes included: Shopify's
    ids are ``gid://shopify/Customer/1``, and a client's ``%2F`` arrives decoded. So that
    ``/v1/customers/{id}/export`` is never read as the customer ``…/export``, an id here never
    ends with a sub-resource; the sub-resource routes take the id as ``{customer_id:path}``."""

    regex = "(?!.*/(?:" + "|".join(CUSTOMER_SUBRESOURCES) + ")$).+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("customer", CustomerPath())


# ── Bodies ────────────────────────────────────────────────────────────────────────────────────


class VersionOut(BaseModel):
    version: int
    state: Literal["draft", "published"] = Field(
        description="A draft can change; a published version never does."
    )
    current: bool = Field(description="The published version new customers enter.")
    created_at: datetime | None
    updated_at: datetime | None
    published_at: datetime | None
    document: dict[str, Any] = Field(
        description="The journey JSON (the language of docs/journeys.md; `ciclo journeys "
        "schema` prints its JSON Schema)."
    )


class JourneySummary(BaseModel):
    id: str
    name: str
    source: Literal["workspace", "file"] = Field(
        description="`workspace`: managed over HTTP; `file`: from journeys/, read-only here."
    )
    status: Literal["draft", "published", "paused", "archived"] = Field(
        description="`draft`: nothing published yet; `published`: new customers enter the "
        "current version; `paused`: no new entries, runs in flight go on; `archived`: no "
        "entries, runs in flight exit at their next step."
    )
    current_version: int | None = Field(description="The published version in force.")
    draft_version: int | None = Field(description="The version being edited, if any.")
    file_version: int | None = Field(
        None,
        description="A workspace journey with the id of a file journey: the file's version, "
        "which applies here until this journey publishes a version.",
    )
    updated_at: datetime | None


class JourneyDetail(JourneySummary):
    versions: list[VersionOut] = Field(description="Oldest first.")


class JourneyList(BaseModel):
    journeys: list[JourneySummary]


class ProblemOut(BaseModel):
    path: str = Field(examples=["$.steps.hello.next"])
    message: str = Field(examples=["unknown step 'nope'"])


class InvalidDocumentError(BaseModel):
    status: int = Field(examples=[422])
    code: str = Field(examples=["validation_failed"])
    message: str = Field(description="The first problem.")
    field: str = Field(description="JSON path of the first problem.")
    problems: list[ProblemOut] = Field(description="Every problem found.")


class InvalidDocumentBody(BaseModel):
    error: InvalidDocumentError


EXAMPLE = {
    "id": "welcome-series",
    "name": "Welcome series",
    "trigger": {"event": "signup"},
    "goal": {"event": "order_completed", "within": "P14D"},
    "holdout_percent": 10,
    "start": "hello",
    "steps": {
        "hello": {"send": {"channel": "email", "template": "welcome-1"}, "next": "wait-3d"},
        "wait-3d": {"wait": "P3D", "next": "end"},
        "end": {"exit": True},
    },
}
EXAMPLES: dict[str, Any] = {
    "welcome": {
        "summary": "A welcome series with a goal and a holdout group",
        "value": EXAMPLE,
    }
}

_AUTH: dict[int | str, dict[str, Any]] = {
    401: {"description": "No API key, or an unknown or revoked one"},
    403: {"description": "The key is not an admin key"},
    429: {"description": "Rate limit of the key exceeded; see Retry-After"},
}
_WRITE: dict[int | str, dict[str, Any]] = {
    **_AUTH,
    400: {"description": "Body is not valid UTF-8 JSON (`error.field` is `body`)"},
    413: {"description": "Body larger than CICLO_MAX_BODY_BYTES"},
    415: {"description": "Body is not JSON"},
    422: {
        "model": InvalidDocumentBody,
        "description": "The journey does not validate: `error.problems` lists every problem "
        "with its JSON path",
    },
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such journey (or version) in this workspace"}
}
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {
        "description": "Not allowed in the journey's state: a published version is immutable, "
        "file journeys are read-only, one draft at a time, ..."
    }
}


async def repeated_in_body(request: Request) -> list[Problem]:
    """What FastAPI's parse of a journey body hides: keys given twice (``json_problems``), of
    which the parsed document keeps the last without a word, and a body that is JSON but not an
    object, refused here in the ``problems`` shape of every other journey problem."""
    try:
        document = loads_document(await request.body())
    except ValueError:
        return []  # not JSON: FastAPI's own parse answers that
    if not isinstance(document, dict):
        raise InvalidDocument([Problem("$", "a journey is a JSON object")])
    return json_problems(document)


Repeated = Annotated[list[Problem], Depends(repeated_in_body)]


# ── The router ────────────────────────────────────────────────────────────────────────────────


def journeys_router(
    *,
    engine: AsyncEngine,
    settings: JourneySettings,
    files: Callable[[], Iterable[Journey]],
    clock: Clock,
) -> APIRouter:
    """``files`` gives the journeys loaded from journeys/ (read when asked: they are loaded at
    start)."""
    store = JourneyStore(engine)
    defaults = settings.default_policy()
    router = APIRouter(prefix="/v1")

    def file_journeys() -> dict[str, Journey]:
        return {j.id: j for j in files()}

    saved = SavedTemplates(engine)

    async def checker(workspace: str) -> Callable[[Mapping[str, Any]], list[Problem]]:
        """The check of a workspace's documents: the templates a journey may name are the files
        in templates/ and the workspace's templates saved over HTTP (read before any
        transaction opens)."""
        templates = template_ids(settings.templates_dir) | await saved.ids(workspace)
        return lambda document: problems_of(document, templates=templates)

    async def check(workspace: str, document: Mapping[str, Any]) -> list[Problem]:
        return (await checker(workspace))(document)

    async def existing(workspace: str, journey_id: str) -> DefinitionRow:
        row = await store.get(workspace, journey_id)
        if row is None:
            raise missing(journey_id)
        return row

    def missing(journey_id: str) -> HTTPProblem:
        if journey_id in file_journeys():
            return Conflict(
                f"journey {journey_id!r} comes from journeys/ and is read-only over HTTP; to "
                "replace it in this workspace, create a journey with the same id "
                "(POST /v1/journeys)"
            )
        return NotFound(f"no journey {journey_id!r} in this workspace")

    # ── Reading ──

    @router.get(
        "/journeys",
        response_model=JourneyList,
        tags=["journeys"],
        summary="Journeys of the workspace (and the files in journeys/)",
        responses=_AUTH,
    )
    async def list_journeys(principal: AdminPrincipal) -> JourneyList:
        rows = {r.journey_id: r for r in await store.all(principal.workspace_id)}
        from_files = file_journeys()
        items = [summary(row, from_files.get(row.journey_id)) for row in rows.values()]
        items += [file_summary(j) for j in from_files.values() if j.id not in rows]
        return JourneyList(journeys=sorted(items, key=lambda s: s.id))

    @router.get(
        "/journeys/{journey_id}",
        response_model=JourneyDetail,
        tags=["journeys"],
        summary="A journey: status, versions and the document of each",
        responses={**_AUTH, **_NOT_FOUND},
    )
    async def get_journey(journey_id: JourneyId, principal: AdminPrincipal) -> JourneyDetail:
        row = await store.get(principal.workspace_id, journey_id)
        file = file_journeys().get(journey_id)
        if row is not None:
            return detail(row, file)
        if file is not None:
            return file_detail(file)
        raise NotFound(f"no journey {journey_id!r} in this workspace")

    # ── Writing ──

    @router.post(
        "/journeys",
        status_code=status.HTTP_201_CREATED,
        response_model=JourneyDetail,
        tags=["journeys"],
        summary="Create a draft: a new journey, or the next version of one",
        description="The body is a journey document (docs/journeys.md). Its `version` is "
        "assigned: the next number for that id, after the workspace's versions and the file "
        "journey's of the same id, if any. A journey has one draft at a time (409 when it "
        "already has one: change it with PUT /v1/journeys/{id}/draft).",
        responses={**_WRITE, **_CONFLICT},
        dependencies=[Depends(require_json)],
    )
    async def create_journey(
        document: Annotated[dict[str, Any], Body(openapi_examples=EXAMPLES)],
        principal: AdminPrincipal,
        response: Response,
        repeated: Repeated,
    ) -> JourneyDetail:
        problems = repeated or await check(principal.workspace_id, {**document, "version": 1})
        if problems:
            raise InvalidDocument(problems)
        journey_id = str(document["id"])
        file = file_journeys().get(journey_id)
        row = await store.create(
            principal.workspace_id,
            document,
            file_version=file.version if file is not None else None,
            now=clock.now(),
        )
        response.headers["Location"] = f"/v1/journeys/{journey_id}"
        return detail(row, file)

    @router.put(
        "/journeys/{journey_id}/draft",
        response_model=JourneyDetail,
        tags=["journeys"],
        summary="Replace the draft (or start one: the next version)",
        description="`id` and `version` may be left out of the body. A `version` naming a "
        "published version is refused with 409: published versions are immutable.",
        responses={**_WRITE, **_NOT_FOUND, **_CONFLICT},
        dependencies=[Depends(require_json)],
    )
    async def put_draft(
        journey_id: JourneyId,
        document: Annotated[dict[str, Any], Body(openapi_examples=EXAMPLES)],
        principal: AdminPrincipal,
        repeated: Repeated,
    ) -> JourneyDetail:
        version = document.get("version")
        problems = repeated or same_id(document, journey_id)
        if version is not None and (
            not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= MAX_INT
        ):
            problems.append(Problem("$.version", "a version is an integer from 1"))
        problems = problems or await check(
            principal.workspace_id, {**document, "id": journey_id, "version": version or 1}
        )
        if problems:
            raise InvalidDocument(problems)
        await existing(principal.workspace_id, journey_id)
        try:
            row = await store.save_draft(
                principal.workspace_id, journey_id, document, version=version, now=clock.now()
            )
        except NotFound as exc:
            raise missing(journey_id) from exc
        return detail(row, file_journeys().get(journey_id))

    @router.put(
        "/journeys/{journey_id}/versions/{version}",
        response_model=JourneyDetail,
        tags=["journeys"],
        summary="Replace the document of a draft version",
        description="Only a draft can change: a published version answers 409.",
        responses={**_WRITE, **_NOT_FOUND, **_CONFLICT},
        dependencies=[Depends(require_json)],
    )
    async def put_version(
        journey_id: JourneyId,
        version: VersionNumber,
        document: Annotated[dict[str, Any], Body(openapi_examples=EXAMPLES)],
        principal: AdminPrincipal,
        repeated: Repeated,
    ) -> JourneyDetail:
        problems = repeated or same_id(document, journey_id)
        given = document.get("version")
        if given is not None and given != version:
            problems.append(Problem("$.version", f"must be {version} (the version in the path)"))
        problems = problems or await check(
            principal.workspace_id, {**document, "id": journey_id, "version": version}
        )
        if problems:
            raise InvalidDocument(problems)
        await existing(principal.workspace_id, journey_id)
        row = await store.replace_version(
            principal.workspace_id, journey_id, version, document, now=clock.now()
        )
        return detail(row, file_journeys().get(journey_id))

    @router.delete(
        "/journeys/{journey_id}/draft",
        status_code=status.HTTP_204_NO_CONTENT,
        tags=["journeys"],
        summary="Discard the draft (a journey with nothing else is deleted)",
        responses={**_AUTH, **_NOT_FOUND, **_CONFLICT},
    )
    async def delete_draft(journey_id: JourneyId, principal: AdminPrincipal) -> Response:
        await existing(principal.workspace_id, journey_id)
        await store.discard_draft(principal.workspace_id, journey_id, now=clock.now())
        return Response(status_code=204)

    @router.post(
        "/journeys/{journey_id}/versions/{version}/publish",
        response_model=JourneyDetail,
        tags=["journeys"],
        summary="Publish the draft: new customers enter it",
        description="The version becomes the current one and the journey `published` (also "
        "when it was paused or archived). Runs in flight stay on the version they entered. "
        "Publishing the current version of a published journey again changes nothing; an "
        "older one, or the current one of a paused or archived journey, is 409.",
        responses={
            **_AUTH,
            **_NOT_FOUND,
            **_CONFLICT,
            422: _WRITE[422],
        },
    )
    async def publish(
        journey_id: JourneyId, version: VersionNumber, principal: AdminPrincipal
    ) -> JourneyDetail:
        await existing(principal.workspace_id, journey_id)
        check_document = await checker(principal.workspace_id)
        try:
            row = await store.publish(
                principal.workspace_id, journey_id, version, check=check_document, now=clock.now()
            )
        except Invalid as exc:
            raise InvalidDocument(exc.problems) from exc
        return detail(row, file_journeys().get(journey_id))

    def status_route(action: Literal["pause", "resume", "archive"], summary_text: str) -> None:
        async def change(journey_id: JourneyId, principal: AdminPrincipal) -> JourneySummary:
            await existing(principal.workspace_id, journey_id)
            row = await store.change_status(
                principal.workspace_id, journey_id, action, now=clock.now()
            )
            return summary(row, file_journeys().get(journey_id))

        change.__name__ = f"{action}_journey"
        router.add_api_route(
            f"/journeys/{{journey_id}}/{action}",
            change,
            methods=["POST"],
            response_model=JourneySummary,
            tags=["journeys"],
            summary=summary_text,
            responses={**_AUTH, **_NOT_FOUND, **_CONFLICT},
        )

    status_route("pause", "Pause: no new entries; runs in flight go on")
    status_route("resume", "Resume a paused journey: new customers enter again")
    status_route("archive", "Archive: no entries; runs in flight exit at their next step")

    # ── Stats ──

    @router.get(
        "/journeys/{journey_id}/stats",
        response_model=JourneyStats,
        tags=["journeys"],
        summary="How a journey performs: entries, steps, exits, goals, lift over the holdout",
        description="Per version (or the one asked for), and in total. Runs, goals and the "
        "holdout/treated groups come from the runs; per-step and exit counts from counters "
        "the worker keeps. The lift is the treated conversion rate minus the holdout's, with "
        "a 95% interval (Newcombe's hybrid score interval).",
        responses={**_AUTH, **_NOT_FOUND},
    )
    async def journey_stats(
        journey_id: JourneyId,
        principal: AdminPrincipal,
        version: Annotated[
            int | None, Query(ge=1, le=MAX_INT, description="Only this version")
        ] = None,
    ) -> JourneyStats:
        workspace = principal.workspace_id
        row = await store.get(workspace, journey_id)
        file = file_journeys().get(journey_id)
        async with engine.connect() as conn:
            counts, groups, active = await stats_adapter.read_rows(
                conn, workspace, journey_id, version
            )
        known: dict[int, list[str]] = {}
        if file is not None:
            known[file.version] = list(file.steps)
        if row is not None:
            for v in row.versions:
                if v.state == "published":
                    known[v.version] = list(v.document.get("steps", {}))
        has_data = bool(counts or groups or active)
        if version is not None:
            if version not in known and not has_data:
                raise NotFound(f"journey {journey_id!r} has no published version {version}")
            numbers = [version]
        else:
            if not known and not has_data:
                if row is not None:
                    raise NotFound(
                        f"journey {journey_id!r} has no published version yet: stats are kept "
                        "per published version"
                    )
                raise NotFound(f"no journey {journey_id!r} in this workspace")
            numbers = list(known)
            if row is not None and row.current_version is not None and file is not None:
                # The file version was replaced here: shown only if it had runs.
                numbers = [n for n in numbers if n != file.version]
        return stats_adapter.assemble(
            journey_id,
            versions=numbers,
            counts=counts,
            groups=groups,
            active=active,
            step_orders=known,
            with_total=version is None,
        )

    # ── A customer's runs ──

    @router.get(
        "/customers/{customer_id:path}/journeys",
        response_model=CustomerRuns,
        tags=["customers"],
        summary="A customer's journey runs with their latest activity",
        responses=_AUTH,
    )
    async def customer_journeys(
        customer_id: CustomerId,
        principal: AdminPrincipal,
        limit: Annotated[int, Query(ge=1, le=200, description="Runs, newest first")] = 50,
        activity: Annotated[
            int, Query(ge=1, le=100, description="Activity records per run, newest first")
        ] = 20,
    ) -> CustomerRuns:
        async with engine.connect() as conn:
            return await stats_adapter.customer_runs(
                conn,
                principal.workspace_id,
                customer_id,
                limit=limit,
                activity_per_run=activity,
            )

    # ── Workspace settings ──

    @router.get(
        "/journey-settings",
        response_model=JourneySettingsOut,
        tags=["journey settings"],
        summary="The workspace's journey settings in force",
        responses=_AUTH,
    )
    async def get_settings(principal: AdminPrincipal) -> JourneySettingsOut:
        async with engine.connect() as conn:
            rows = await settings_adapter.load(conn, [principal.workspace_id])
        return settings_adapter.describe(rows.get(principal.workspace_id), defaults)

    @router.put(
        "/journey-settings",
        response_model=JourneySettingsOut,
        tags=["journey settings"],
        summary="Replace the workspace's journey settings",
        description="A field left out (or null) takes the service's default. Applies to the "
        "workers within CICLO_JOURNEY_CATALOG_REFRESH seconds.",
        responses={
            **_AUTH,
            413: _WRITE[413],
            415: _WRITE[415],
            422: {"description": "Invalid settings: `error.field` names the field"},
        },
        dependencies=[Depends(require_json)],
    )
    async def put_settings(
        body: JourneySettingsIn, principal: AdminPrincipal
    ) -> JourneySettingsOut:
        async with engine.begin() as conn:
            await settings_adapter.save(conn, principal.workspace_id, body, now=clock.now())
            rows = await settings_adapter.load(conn, [principal.workspace_id])
        return settings_adapter.describe(rows.get(principal.workspace_id), defaults)

    return router


# ── Helpers ───────────────────────────────────────────────────────────────────────────────────


def problems_of(document: Any, *, templates: set[str]) -> list[Problem]:
    """Every problem of a journey document, as validate_journey reports them, plus what the
    database would refuse."""
    if not isinstance(document, dict):
        return [Problem("$", "a journey is a JSON object")]
    try:
        orjson.dumps(document)
    except orjson.JSONEncodeError as exc:
        # A lone surrogate escape ("\ud800") or nesting deeper than any journey needs.
        return [Problem("$", f"cannot be stored: {exc}")]
    try:
        return validate_journey(document, templates=templates)
    except OverflowError:
        return [Problem("$", "a duration or time is too large to compute with")]
    except RecursionError:
        return [Problem("$", "the document is nested too deeply")]


def same_id(document: Mapping[str, Any], journey_id: str) -> list[Problem]:
    given = document.get("id")
    if given is not None and given != journey_id:
        return [Problem("$.id", f"must be {journey_id!r} (the journey in the path)")]
    return []


class InvalidDocument(Unprocessable):
    """A document that does not validate: 422 naming the first problem, with every problem in
    ``error.problems``."""

    def __init__(self, problems: list[Problem]) -> None:
        first = problems[0]
        super().__init__(
            f"{first.path}: {first.message}",
            field=first.path,
            extra={"problems": [{"path": p.path, "message": p.message} for p in problems]},
        )


def _version_out(version: VersionRow, current: int | None) -> VersionOut:
    return VersionOut(
        version=version.version,
        state=version.state,
        current=version.version == current,
        created_at=version.created_at,
        updated_at=version.updated_at,
        published_at=version.published_at,
        document=version.document,
    )


def summary(row: DefinitionRow, file: Journey | None) -> JourneySummary:
    shown = row.shown
    draft = row.draft
    return JourneySummary(
        id=row.journey_id,
        name=str(shown.document.get("name", row.journey_id)) if shown else row.journey_id,
        source="workspace",
        status=row.status,
        current_version=row.current_version,
        draft_version=draft.version if draft is not None else None,
        file_version=file.version if file is not None else None,
        updated_at=row.updated_at,
    )


def detail(row: DefinitionRow, file: Journey | None) -> JourneyDetail:
    return JourneyDetail(
        **summary(row, file).model_dump(),
        versions=[_version_out(v, row.current_version) for v in row.versions],
    )


def file_summary(journey: Journey) -> JourneySummary:
    return JourneySummary(
        id=journey.id,
        name=journey.name,
        source="file",
        status="published",
        current_version=journey.version,
        draft_version=None,
        updated_at=None,
    )


def file_detail(journey: Journey) -> JourneyDetail:
    return JourneyDetail(
        **file_summary(journey).model_dump(),
        versions=[
            VersionOut(
                version=journey.version,
                state="published",
                current=True,
                created_at=None,
                updated_at=None,
                published_at=None,
                document=journey.model_dump(mode="json", by_alias=True, exclude_unset=True),
            )
        ],
    )
