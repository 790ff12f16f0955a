"""HTTP routes for templates and discount codes (admin keys; the key decides the workspace).

- ``/v1/templates``: a workspace's Liquid templates as versions (every save is a new version, the
  latest is the one messages use; the files in templates/ are version 0, the fallback while a
  workspace has saved none), checked when saved — syntax, required parts, and a strict render of
  the sample — and previewed with any customer and event, saved or not;
- ``/v1/discount-pools``: upload single-use codes to a pool and see how many are left.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Body, Depends, Query, Response, status
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from sqlalchemy.exc import IntegrityError

from services.dispatch.adapters.codes import CodesInOtherPools, DiscountCodes, PoolStats
from services.dispatch.adapters.template_repository import (
    SavedTemplates,
    SavedVersion,
    TemplateRenderer,
)
from services.dispatch.adapters.templates import CompiledTemplate, TemplateStore, compile_template
from services.dispatch.domain.template_errors import (
    InvalidTemplate,
    MissingPart,
    PartError,
    TemplateNotFound,
    UndefinedVariable,
)
from services.dispatch.domain.templates import (
    CODE,
    MAX_PART_CHARS,
    PARTS,
    POOL,
    TEMPLATE_ID,
    Channel,
    default_sample,
    merge,
    part_problems,
    preview_code,
)
from services.dispatch.errors import TemplateError
from services.dispatch.service_layer.uow import DispatchUnitOfWork
from shared.clock import Clock
from shared.http import Conflict, NotFound, Unprocessable, problem, require_json
from shared.tenancy.http import AdminPrincipal

MAX_VERSION = 2**31 - 1  # versions are 32-bit integers in the database
MAX_CODES = 10_000
_SAVE_ATTEMPTS = 3

TemplateId = Annotated[
    str,
    PathParam(
        pattern=TEMPLATE_ID,
        description="The template's id: a-z, 0-9, '_' and '-' (what a journey's send names).",
        examples=["welcome-1"],
    ),
]
VersionNumber = Annotated[
    int, PathParam(ge=0, le=MAX_VERSION, description="A saved version, or 0 for the file.")
]
PageSize = Annotated[int, Query(ge=1, le=1000, description="Templates per page")]
TemplateCursor = Annotated[
    str | None,
    Query(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,99}:(email|sms)$",
        description="`next` of the previous page (`<id>:<channel>`)",
        examples=["welcome-1:email"],
    ),
]
PoolName = Annotated[
    str,
    PathParam(
        pattern=POOL,
        description="The pool, as templates name it: `{{ codes.<pool> }}`.",
        examples=["welcome10"],
    ),
]


# ── Bodies ────────────────────────────────────────────────────────────────────────────────────


def _storable(text: str) -> str:
    """What PostgreSQL can store: no NUL character, no unpaired surrogate (``"\\ud800"`` is valid
    JSON that Python's parser lets through)."""
    if "\x00" in text:
        raise ValueError("contains a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains an unpaired surrogate (\\ud800-\\udfff)") from None
    return text


Text = Annotated[str, AfterValidator(_storable)]
SubjectSource = Annotated[
    str, StringConstraints(max_length=MAX_PART_CHARS["subject"]), AfterValidator(_storable)
]
HtmlSource = Annotated[
    str, StringConstraints(max_length=MAX_PART_CHARS["html"]), AfterValidator(_storable)
]
TextSource = Annotated[
    str, StringConstraints(max_length=MAX_PART_CHARS["text"]), AfterValidator(_storable)
]
Url = Annotated[str, StringConstraints(max_length=2000), AfterValidator(_storable)]
SmsSource = Annotated[
    str, StringConstraints(max_length=MAX_PART_CHARS["sms"]), AfterValidator(_storable)
]


class Parts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: SubjectSource | None = Field(
        None,
        description="Email: the subject line (rendered, trimmed, line breaks made spaces).",
        examples=["{{ customer.first_name | default: 'Hello' }}, 10% off for you"],
    )
    html: HtmlSource | None = Field(
        None,
        description="Email: the HTML body. Variables are HTML-escaped.",
        examples=["<p>Your code: <strong>{{ codes.welcome10 }}</strong></p>"],
    )
    text: TextSource | None = Field(
        None,
        description="Email: the plain-text body.",
        examples=["Your code: {{ codes.welcome10 }}"],
    )
    sms: SmsSource | None = Field(
        None,
        description="SMS: the message.",
        examples=["{{ customer.first_name | default: 'Hi' }}, 10% off: {{ codes.welcome10 }}"],
    )

    def given(self) -> dict[str, str]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class PartsOut(BaseModel):
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    sms: str | None = None


class Sample(BaseModel):
    """Sample variables, merged over the defaults (``customer.id``, ``customer.email`` or
    ``customer.phone``, an event with no properties, ``message``, empty ``scores`` and
    ``segments``, customer intelligence's ``stage``, ``lead``, ``profile``, ``rfm`` and
    ``predictions``, nil or empty, the two links): objects merge key by key. Every variable a
    message has can be declared, or a template using it could never be saved."""

    model_config = ConfigDict(extra="forbid")

    customer: dict[str, Any] | None = Field(
        None,
        description="Traits, as a customer has them.",
        examples=[{"first_name": "Ana", "city": "Lisbon"}],
    )
    event: dict[str, Any] | None = Field(
        None,
        description="The triggering event: `type`, `id`, `properties`.",
        examples=[
            {"type": "order_completed", "properties": {"order_id": "1001", "total": "59.90"}}
        ],
    )
    message: dict[str, Any] | None = Field(None, description="`id`, `category`.")
    scores: dict[str, Any] | None = Field(None, examples=[{"engagement": 72}])
    segments: list[Any] | None = Field(None, examples=[["vip"]])
    stage: str | None = Field(
        None, description="The lifecycle stage (nil when unknown).", examples=["active"]
    )
    lead: dict[str, Any] | None = Field(None, examples=[{"score": 64, "band": "warm"}])
    profile: dict[str, Any] | None = Field(None, examples=[{"order_count": 3}])
    rfm: dict[str, Any] | None = Field(None, examples=[{"r": 5, "f": 4, "m": 4}])
    predictions: dict[str, Any] | None = Field(None, examples=[{"p_alive": 0.82}])
    unsubscribe_url: Url | None = None
    preferences_url: Url | None = None

    @model_validator(mode="after")
    def _storable_values(self) -> Sample:
        variables = self.variables()
        try:
            orjson.dumps(variables)
            json.dumps(variables, allow_nan=False)
        except (orjson.JSONEncodeError, ValueError) as exc:
            # An unpaired surrogate, an integer beyond 64 bits, nesting past 255 levels, NaN:
            # valid to Python's JSON parser, refused by PostgreSQL or by the bus.
            raise ValueError(f"cannot be stored: {exc}") from None
        return self

    def variables(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in Sample.model_fields if getattr(self, k) is not None}


EXAMPLE_TEMPLATE: dict[str, Any] = {
    "channel": "email",
    "parts": {
        "subject": "{{ customer.first_name | default: 'Hello' }}, here is 10% off",
        "html": "<p>Hi {{ customer.first_name | default: 'there' }},</p>\n"
        "<p>Use <strong>{{ codes.welcome10 }}</strong> at checkout.</p>\n"
        '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>',
        "text": "Hi {{ customer.first_name | default: 'there' }},\n\n"
        "use {{ codes.welcome10 }} at checkout.\n\nUnsubscribe: {{ unsubscribe_url }}",
    },
    "sample": {"customer": {"first_name": "Ana"}},
}


class TemplateIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE_TEMPLATE]})

    channel: Channel = Field(
        description="A template keeps the channel of its first version.", examples=["email"]
    )
    parts: Parts = Field(
        description="Email: `subject` and at least one of `text` and `html`. SMS: `sms`."
    )
    sample: Sample | None = Field(
        None,
        description="Variables to check the template with (and to preview it with later): "
        "declare here what the template expects that not every message has.",
    )


class PreviewIn(Sample):
    channel: Channel | None = Field(
        None,
        description="Needed only for `parts` of a template that exists neither saved nor as a "
        "file; otherwise the template's channel.",
    )
    version: int | None = Field(
        None,
        ge=0,
        le=MAX_VERSION,
        description="A saved version, or 0 for the file; the latest when left out.",
    )
    parts: Parts | None = Field(
        None, description="Unsaved parts to preview instead of a saved version."
    )


class VersionInfo(BaseModel):
    version: int
    created_at: datetime | None


class TemplateVersion(BaseModel):
    id: str = Field(examples=["welcome-2-discount"])
    version: int = Field(description="0: the file in templates/.", examples=[2])
    channel: Channel
    source: Literal["saved", "file"] = Field(
        description="`saved` (over HTTP) or `file` (templates/)."
    )
    parts: PartsOut
    sample: dict[str, Any] | None
    pools: list[str] = Field(
        description="Discount pools the template draws a code from.", examples=[["welcome10"]]
    )
    created_at: datetime | None


class TemplateDetail(TemplateVersion):
    versions: list[VersionInfo] = Field(description="Oldest first.")
    file_fallback: bool = Field(
        description="templates/ has this template for this channel too (version 0)."
    )


class TemplateSummary(BaseModel):
    id: str
    channel: Channel
    source: Literal["saved", "file"] = Field(
        description="`saved` (over HTTP) or `file` (templates/)."
    )
    version: int = Field(description="The version messages use now; 0 for a file.")
    versions: int = Field(description="How many versions were saved (1 for a file).")
    updated_at: datetime | None
    overrides_file: bool = Field(
        description="A saved template whose id and channel templates/ has too."
    )


class TemplateList(BaseModel):
    templates: list[TemplateSummary] = Field(description="By id, then channel.")
    next: str | None = Field(
        description="Pass as `after` for the next page; null on the last page.",
        examples=["welcome-1:email"],
    )


class PreviewOut(BaseModel):
    id: str
    version: int | None = Field(description="The version rendered; null for unsaved parts.")
    channel: Channel
    subject: str | None
    html: str | None
    text: str | None
    sms: str | None
    codes: dict[str, str] = Field(
        description="Placeholder per pool used: previews never draw a code.",
        examples=[{"welcome10": "PREVIEW-WELCOME10"}],
    )


class CodesIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"codes": ["WELCOME-7QX2", "WELCOME-K9PL"], "expires_at": None}]
        },
    )

    codes: list[Annotated[str, Field(pattern=CODE)]] = Field(
        min_length=1,
        max_length=MAX_CODES,
        description="Up to 10,000 codes, each 1-100 printable ASCII characters without spaces.",
    )
    expires_at: AwareDatetime | None = Field(
        None, description="After this instant these codes are no longer drawn."
    )

    @field_validator("expires_at")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        try:
            return value.astimezone(UTC) if value is not None else None
        except OverflowError:
            raise ValueError("is out of range in UTC") from None


class PoolOut(BaseModel):
    pool: str = Field(examples=["welcome10"])
    total: int
    claimed: int = Field(description="Drawn by a message.")
    free: int = Field(description="Not drawn and not expired: what messages can still get.")
    expired: int = Field(description="Not drawn and expired: never drawn now.")


class PoolList(BaseModel):
    pools: list[PoolOut]


class CodesAdded(BaseModel):
    added: int
    duplicates: list[str] = Field(
        description="Codes given twice or already in the pool: not added again."
    )
    pool: PoolOut


class FieldProblem(BaseModel):
    field: str = Field(examples=["parts.subject"])
    message: str = Field(examples=["an email template needs a subject"])


class TemplateProblem(BaseModel):
    status: int = Field(examples=[422])
    code: str = Field(
        description="`template_syntax`, `undefined_variable`, `template_render_failed`, "
        "`validation_failed`",
        examples=["undefined_variable"],
    )
    message: str
    field: str = Field(examples=["parts.html"])
    part: str | None = Field(None, examples=["html"])
    line: int | None = Field(None, examples=[3])
    column: int | None = Field(None, examples=[12])
    variable: str | None = Field(None, examples=["customer.first_name"])
    problems: list[FieldProblem] | None = Field(
        None, description="`validation_failed` of the parts: every part missing or too long."
    )


class TemplateProblemBody(BaseModel):
    error: TemplateProblem


_AUTH: dict[int | str, dict[str, Any]] = {
    401: {"description": "No API key, or an unknown or revoked one"},
    403: {"description": "The key is not an admin key"},
    429: {"description": "Rate limit of the key exceeded; see Retry-After"},
}
_BODY: dict[int | str, dict[str, Any]] = {
    413: {"description": "Body larger than CICLO_MAX_BODY_BYTES"},
    415: {"description": "Body is not JSON"},
}
_TEMPLATE_422: dict[int | str, dict[str, Any]] = {
    422: {
        "model": TemplateProblemBody,
        "description": "Invalid body, or the template does not parse or render: `error.part`, "
        "`error.line` and (for an undefined variable) `error.variable` say where",
    }
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such template (or version) in this workspace or in templates/"}
}


class CodeInAnotherPool(Conflict):
    code = "code_in_another_pool"


# ── The router ────────────────────────────────────────────────────────────────────────────────


def templates_router(
    *,
    uow: Callable[[], DispatchUnitOfWork],
    files: Path,
    clock: Clock,
    renderer: TemplateRenderer | None = None,
) -> APIRouter:
    """``files``: the templates/ folder (version 0 of every template). ``renderer``: the
    dispatcher's, if it runs in this process, told of each save so it uses it at once."""
    store = TemplateStore(files)
    router = APIRouter(prefix="/v1")

    def file_channel(template_id: str, preferred: Channel | None = None) -> Channel | None:
        channels: list[Channel] = ["email", "sms"]
        if preferred is not None:
            channels = [preferred]
        for channel in channels:
            if store.sources(template_id, channel):
                return channel
        return None

    def file_version(template_id: str, channel: Channel) -> TemplateVersion:
        sources = store.sources(template_id, channel)
        return TemplateVersion(
            id=template_id,
            version=0,
            channel=channel,
            source="file",
            parts=PartsOut(**sources),
            sample=None,
            pools=_pools(template_id, channel, sources),
            created_at=None,
        )

    # ── Templates ──

    @router.get(
        "/templates",
        response_model=TemplateList,
        tags=["templates"],
        summary="Templates of the workspace, and the files in templates/ it has not replaced",
        description="A page at a time, by id then channel. Pass the answer's `next` as `after` "
        "for the next page; `next` is null on the last page.",
        responses={
            **_AUTH,
            422: {"description": "A bad `limit` or `after`: `error.field` names it"},
        },
    )
    async def list_templates(
        principal: AdminPrincipal, limit: PageSize = 100, after: TemplateCursor = None
    ) -> TemplateList:
        cursor: tuple[str, str] | None = None
        if after is not None:
            after_id, after_channel = after.split(":")
            cursor = (after_id, after_channel)
        async with uow() as u:
            # One more than a page: the page's saved templates, and the files between them,
            # are then all known (a saved id holds one channel, so ids up to the last one read
            # are complete).
            saved = await SavedTemplates(u.session).summaries(
                principal.workspace_id,
                from_id=cursor[0] if cursor else None,
                limit=limit + 1,
            )
        from_files = store.templates()
        items = [
            TemplateSummary(
                id=s.template_id,
                channel=s.channel,
                source="saved",
                version=s.version,
                versions=s.versions,
                updated_at=s.updated_at,
                overrides_file=(s.template_id, s.channel) in from_files,
            )
            for s in saved.values()
        ]
        items += [
            TemplateSummary(
                id=template_id,
                channel=channel,
                source="file",
                version=0,
                versions=1,
                updated_at=None,
                overrides_file=False,
            )
            for template_id, channel in from_files
            if not (template_id in saved and saved[template_id].channel == channel)
            # A file past the last saved id read may be replaced by one not read: next page.
            and (len(saved) <= limit or template_id <= max(saved))
        ]
        ordered = sorted(
            (t for t in items if cursor is None or (t.id, t.channel) > cursor),
            key=lambda t: (t.id, t.channel),
        )
        page = ordered[:limit]
        # Saved templates beyond the ones read may follow even when nothing read is left over.
        more = len(ordered) > limit or len(saved) > limit
        return TemplateList(
            templates=page, next=f"{page[-1].id}:{page[-1].channel}" if more else None
        )

    @router.get(
        "/templates/{template_id}",
        response_model=TemplateDetail,
        tags=["templates"],
        summary="A template: the version messages use, and the list of its versions",
        responses={**_AUTH, **_NOT_FOUND},
    )
    async def get_template(template_id: TemplateId, principal: AdminPrincipal) -> TemplateDetail:
        async with uow() as u:
            templates = SavedTemplates(u.session)
            latest = await templates.get(principal.workspace_id, template_id)
            versions = (
                await templates.versions(principal.workspace_id, template_id) if latest else []
            )
        if latest is not None:
            return TemplateDetail(
                **saved_version(latest).model_dump(),
                versions=[VersionInfo(version=v, created_at=at) for v, at in versions],
                file_fallback=bool(store.sources(template_id, latest.channel)),
            )
        channel = file_channel(template_id)
        if channel is None:
            raise NotFound(f"no template {template_id!r} in this workspace or in templates/")
        return TemplateDetail(
            **file_version(template_id, channel).model_dump(),
            versions=[VersionInfo(version=0, created_at=None)],
            file_fallback=True,
        )

    @router.get(
        "/templates/{template_id}/versions/{version}",
        response_model=TemplateVersion,
        tags=["templates"],
        summary="One version of a template (0: the file)",
        responses={**_AUTH, **_NOT_FOUND},
    )
    async def get_version(
        template_id: TemplateId, version: VersionNumber, principal: AdminPrincipal
    ) -> TemplateVersion:
        async with uow() as u:
            templates = SavedTemplates(u.session)
            latest = await templates.get(principal.workspace_id, template_id)
            found = (
                await templates.get(principal.workspace_id, template_id, version)
                if version > 0
                else None
            )
        if version == 0:
            channel = file_channel(template_id, latest.channel if latest else None)
            if channel is not None:
                return file_version(template_id, channel)
            raise NotFound(f"templates/ has no template {template_id!r}")
        if found is None:
            raise NotFound(f"template {template_id!r} has no version {version} in this workspace")
        return saved_version(found)

    @router.put(
        "/templates/{template_id}",
        status_code=status.HTTP_201_CREATED,
        response_model=TemplateVersion,
        tags=["templates"],
        summary="Save a new version of a template (checked first)",
        description="The new version is used by messages at once (by every dispatch process "
        "within a few seconds). Checked before it is saved: the required parts, the Liquid "
        "syntax of each part (unknown filters too), and a strict render with the sample "
        "(merged over the default sample): an undefined variable is a 422 naming the part, "
        "the line and the variable. Saving the same content as the latest version again "
        "creates no version (200). A template keeps the channel of its first version (409).",
        responses={
            **_AUTH,
            **_BODY,
            **_TEMPLATE_422,
            200: {"model": TemplateVersion, "description": "Same as the latest: not saved again"},
            409: {"description": "The template is saved for the other channel"},
        },
        dependencies=[Depends(require_json)],
    )
    async def put_template(
        template_id: TemplateId,
        body: Annotated[
            TemplateIn,
            Body(openapi_examples={"email": {"summary": "Email", "value": EXAMPLE_TEMPLATE}}),
        ],
        principal: AdminPrincipal,
        response: Response,
    ) -> TemplateVersion | JSONResponse:
        parts = body.parts.given()
        problems = part_problems(body.channel, parts)
        if problems:
            part, message = problems[0]
            return problem(
                422,
                "validation_failed",
                f"parts.{part}: {message}",
                field=f"parts.{part}",
                extra={
                    "part": part,
                    "problems": [{"field": f"parts.{p}", "message": m} for p, m in problems],
                },
            )
        sample = body.sample.variables() if body.sample is not None else None
        try:
            await asyncio.to_thread(_check, template_id, body.channel, parts, sample)
        except TemplateError as exc:
            return template_problem(exc)
        for _ in range(_SAVE_ATTEMPTS):
            try:
                saved, created = await save(
                    principal.workspace_id, template_id, body.channel, parts, sample
                )
            except IntegrityError:
                continue  # another save took this version number: count again
            if not created:
                response.status_code = status.HTTP_200_OK
                return saved_version(saved)
            if renderer is not None:
                renderer.forget(principal.workspace_id)
            response.headers["Location"] = f"/v1/templates/{template_id}/versions/{saved.version}"
            return saved_version(saved)
        raise Conflict(f"template {template_id!r} is being saved by others at the same time; retry")

    async def save(
        workspace: str,
        template_id: str,
        channel: Channel,
        parts: dict[str, str],
        sample: dict[str, Any] | None,
    ) -> tuple[SavedVersion, bool]:
        """The new version, or the latest when it has this content already (False)."""
        async with uow() as u:
            templates = SavedTemplates(u.session)
            # Locked until commit: a save of the same content at the same instant waits, then
            # finds this one's version as the latest (200), not a version of its own.
            latest = await templates.latest_for_update(workspace, template_id)
            if latest is not None and latest.channel != channel:
                raise Conflict(
                    f"template {template_id!r} is an {latest.channel} template; a template "
                    f"keeps its channel: save the {channel} one under another id",
                    field="channel",
                )
            if latest is not None and (latest.parts, latest.sample) == (parts, sample):
                return latest, False
            saved = await templates.add(
                workspace, template_id, channel=channel, parts=parts, sample=sample, now=clock.now()
            )
            await u.commit()
            return saved, True

    @router.post(
        "/templates/{template_id}/preview",
        response_model=PreviewOut,
        tags=["templates"],
        summary="Render a template with sample variables (nothing is sent or drawn)",
        description="Renders the latest version (or `version`, or unsaved `parts`) with the "
        "body's variables merged over the template's sample and the default sample. Discount "
        "codes show as `PREVIEW-<POOL>`; no code is drawn. An undefined variable is a 422 "
        "naming the part, the line and the variable.",
        responses={**_AUTH, **_BODY, **_NOT_FOUND, **_TEMPLATE_422},
        dependencies=[Depends(require_json)],
    )
    async def preview(
        template_id: TemplateId,
        body: Annotated[
            PreviewIn,
            Body(
                openapi_examples={
                    "latest": {
                        "summary": "The latest version, for a given customer",
                        "value": {"customer": {"first_name": "Ana"}},
                    },
                    "unsaved": {
                        "summary": "Unsaved parts",
                        "value": {
                            "channel": "sms",
                            "parts": {"sms": "Hi {{ customer.first_name }}!"},
                            "customer": {"first_name": "Bo"},
                        },
                    },
                }
            ),
        ],
        principal: AdminPrincipal,
    ) -> PreviewOut | JSONResponse:
        if body.parts is not None and body.version is not None:
            raise Unprocessable("give either parts or version, not both", field="version")
        async with uow() as u:
            templates = SavedTemplates(u.session)
            latest = await templates.get(principal.workspace_id, template_id)
            chosen = latest
            if body.version:
                chosen = await templates.get(principal.workspace_id, template_id, body.version)
                if chosen is None:
                    raise NotFound(
                        f"template {template_id!r} has no version {body.version} in this workspace"
                    )
        try:
            template, rendered = await asyncio.to_thread(_preview, body, template_id, chosen, store)
        except TemplateError as exc:
            return template_problem(exc)
        return PreviewOut(
            id=template_id,
            version=None if body.parts is not None else template.version,
            channel=template.channel,
            subject=rendered.get("subject"),
            html=rendered.get("html"),
            text=rendered.get("text"),
            sms=rendered.get("sms"),
            codes={pool: preview_code(pool) for pool in sorted(template.pools)},
        )

    # ── Discount pools ──

    @router.get(
        "/discount-pools",
        response_model=PoolList,
        tags=["discount codes"],
        summary="Discount pools of the workspace with their counts",
        responses=_AUTH,
    )
    async def list_pools(principal: AdminPrincipal) -> PoolList:
        async with uow() as u:
            found = await DiscountCodes(u.session).stats(principal.workspace_id, now=clock.now())
        return PoolList(pools=[pool_out(s) for s in found])

    @router.get(
        "/discount-pools/{pool}",
        response_model=PoolOut,
        tags=["discount codes"],
        summary="How many codes a pool has: total, claimed, free, expired",
        description="A pool no code was ever added to answers with zeros.",
        responses=_AUTH,
    )
    async def get_pool(pool: PoolName, principal: AdminPrincipal) -> PoolOut:
        async with uow() as u:
            return await current_pool(DiscountCodes(u.session), principal.workspace_id, pool)

    @router.post(
        "/discount-pools/{pool}/codes",
        response_model=CodesAdded,
        tags=["discount codes"],
        summary="Add single-use codes to a pool",
        description="Each code goes to one message (`{{ codes.<pool> }}` in a template). "
        "Codes already in the pool, or given twice, are listed in `duplicates` and left as "
        "they are. A code sits in one pool of the workspace: a request naming a code another "
        "pool holds is refused whole (409, `error.conflicts` lists each code and its pool). "
        "Codes with an `expires_at` are not drawn after it.",
        responses={
            **_AUTH,
            **_BODY,
            409: {
                "description": "Codes another pool of the workspace holds "
                "(`code_in_another_pool`); nothing of the request was added"
            },
            422: {"description": "Invalid body: `error.field` names the field"},
        },
        dependencies=[Depends(require_json)],
    )
    async def add_codes(pool: PoolName, body: CodesIn, principal: AdminPrincipal) -> CodesAdded:
        now = clock.now()
        if body.expires_at is not None and body.expires_at <= now:
            raise Unprocessable(
                f"expires_at: {body.expires_at.isoformat()} has passed", field="expires_at"
            )
        async with uow() as u:
            codes = DiscountCodes(u.session)
            try:
                added = await codes.add(
                    principal.workspace_id, pool, body.codes, expires_at=body.expires_at
                )
            except CodesInOtherPools as exc:
                raise CodeInAnotherPool(
                    str(exc),
                    field="codes",
                    extra={
                        "conflicts": [{"code": c, "pool": held} for c, held in exc.taken.items()]
                    },
                ) from exc  # leaving the unit of work uncommitted rolls the request back
            await u.commit()
            stats = await current_pool(codes, principal.workspace_id, pool)
        return CodesAdded(added=added.added, duplicates=added.duplicates, pool=stats)

    async def current_pool(codes: DiscountCodes, workspace_id: str, pool: str) -> PoolOut:
        found = await codes.stats(workspace_id, now=clock.now(), pool=pool)
        if not found:
            return PoolOut(pool=pool, total=0, claimed=0, free=0, expired=0)
        return pool_out(found[0])

    return router


# ── Helpers ───────────────────────────────────────────────────────────────────────────────────


def check_variables(template: CompiledTemplate, sample: dict[str, Any] | None) -> dict[str, Any]:
    """The variables a check or a preview renders with: the default sample, the template's
    sample over it, and a visible placeholder for each discount code."""
    variables = merge(default_sample(template.channel), sample or {})
    variables["codes"] = {pool: preview_code(pool) for pool in template.pools}
    return variables


# Parsing and rendering run in a thread: a large template that loops up to the limits takes
# a second or two of CPU, which must not stall the event loop serving other requests.


def _check(
    template_id: str, channel: Channel, parts: dict[str, str], sample: dict[str, Any] | None
) -> None:
    """Raise the first reason the template cannot be saved: syntax, or a strict render."""
    template = compile_template(template_id, channel, parts, version=0)
    template.render(check_variables(template, sample))


def _preview(
    body: PreviewIn, template_id: str, saved: SavedVersion | None, store: TemplateStore
) -> tuple[CompiledTemplate, dict[str, str | None]]:
    template, sample = _to_preview(body, template_id, saved, store)
    variables = merge(check_variables(template, sample), body.variables())
    return template, template.render_parts(variables)


def _to_preview(
    body: PreviewIn, template_id: str, saved: SavedVersion | None, store: TemplateStore
) -> tuple[CompiledTemplate, dict[str, Any] | None]:
    """The template to preview and the sample to start from."""
    base_sample = saved.sample if saved is not None else None
    if body.parts is not None:
        channel = body.channel or (saved.channel if saved is not None else None)
        channel = channel or next((c for c in PARTS if store.sources(template_id, c)), None)
        if channel is None:
            raise Unprocessable(
                f"template {template_id!r} exists neither saved nor in templates/: give the "
                "channel of the parts to preview",
                field="channel",
            )
        parts = body.parts.given()
        foreign = [p for p in parts if p not in PARTS[channel]]
        if foreign:
            raise MissingPart(
                f"not a part of an {channel} template (use {', '.join(PARTS[channel])})",
                template=template_id,
                part=foreign[0],
            )
        return compile_template(template_id, channel, parts, version=0), base_sample
    if body.version == 0 or saved is None or (body.channel not in (None, saved.channel)):
        channels = [body.channel] if body.channel else list(PARTS)
        for channel in channels:
            from_file = store.load(template_id, channel)
            if from_file is not None:
                return from_file, None
        raise TemplateNotFound(template_id, body.channel or "email or sms")
    return (
        compile_template(template_id, saved.channel, saved.parts, version=saved.version),
        base_sample,
    )


def template_problem(exc: TemplateError) -> JSONResponse:
    """The HTTP answer to a template that does not check or render."""
    if isinstance(exc, TemplateNotFound):
        return problem(404, "not_found", str(exc))
    if not isinstance(exc, PartError):
        return problem(422, "template_render_failed", str(exc), field="parts")
    extra: dict[str, Any] = {"part": exc.part, "line": exc.line, "column": exc.column}
    message = str(exc)
    if isinstance(exc, UndefinedVariable):
        code = "undefined_variable"
        extra["variable"] = exc.variable
        message += (
            f": give it a default ({{{{ {exc.variable} | default: … }}}}) or, if every "
            "message has it, add it to the sample"
        )
    elif isinstance(exc, InvalidTemplate):
        code = "template_syntax"
    elif isinstance(exc, MissingPart):
        code = "validation_failed"
    else:
        code = "template_render_failed"
    return problem(422, code, message, field=f"parts.{exc.part}", extra=extra)


def _pools(template_id: str, channel: Channel, sources: dict[str, str]) -> list[str]:
    try:
        return sorted(compile_template(template_id, channel, sources, version=0).pools)
    except TemplateError:
        return []  # a broken file: its preview says what is wrong


def saved_version(saved: SavedVersion) -> TemplateVersion:
    return TemplateVersion(
        id=saved.template_id,
        version=saved.version,
        channel=saved.channel,
        source="saved",
        parts=PartsOut(**saved.parts),
        sample=saved.sample,
        pools=_pools(saved.template_id, saved.channel, saved.parts),
        created_at=saved.created_at,
    )


def pool_out(stats: PoolStats) -> PoolOut:
    return PoolOut(
        pool=stats.pool,
        total=stats.total,
        claimed=stats.claimed,
        free=stats.free,
        expired=stats.expired,
    )
