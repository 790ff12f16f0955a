"""HTTP API of customer-intelligence settings: segments and the workspace's rules (admin keys;
the key decides the workspace).

- ``/v1/segments``: the segments in force (built-in ones, and the workspace's own, which replace
  a built-in of the same id in that workspace), their members and counts; create, replace,
  delete and validate the workspace's own;
- ``/v1/intelligence-settings``: currency, exchange rates, lead-score rules, lifecycle
  thresholds (a field not set shows the default and is listed in ``inherited``);
- ``/v1/score-rules/default`` and ``/v1/score-rules/validate``.

Membership is kept by the journey worker as each customer's events and timers are processed
(``journey_segment_members``); this API only reads it. A change here bumps
``journey_intelligence_settings.revision`` and reaches the workers within
``CICLO_JOURNEY_CATALOG_REFRESH`` seconds.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Body, Depends, Path, Query, Response, status
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.journey.adapters import intelligence_config as store
from services.journey.adapters.intelligence_config import SETTINGS_FIELDS, SegmentRow
from services.journey.domain.lifecycle import LifecycleRules
from services.journey.domain.scoring import validate_score_rules
from services.journey.domain.segments import InvalidSegment, parse_segment, validate_segment
from services.journey.domain.validation import Problem, schema_problems
from services.journey.entrypoints.http import InvalidDocument, InvalidDocumentBody, ProblemOut
from shared.clock import Clock
from shared.http import Conflict, NotFound, require_json
from shared.tenancy.http import AdminPrincipal

log = logging.getLogger(__name__)

SEGMENT_ID = r"^[a-z0-9][a-z0-9_-]{0,99}$"
MAX_RATES = 300
LARGEST_RATE = Decimal(10) ** 12
# Matched whole (fullmatch): with re.match, "$" also matches before a final newline, and
# "EUR\n" was saved as a currency no order ever has.
_CURRENCY = re.compile(r"[A-Za-z]{3}")

SegmentId = Annotated[
    str, Path(pattern=SEGMENT_ID, description="The segment's id.", examples=["vip"])
]
SettingsField = Literal["currency", "rates", "score_rules", "lifecycle"]


# ── Bodies ────────────────────────────────────────────────────────────────────────────────────


class SegmentOut(BaseModel):
    id: str
    name: str
    description: str
    builtin: bool = Field(
        description="Comes with Ciclo: read-only, but a workspace segment with its id "
        "(PUT /v1/segments/{id}) takes its place in this workspace."
    )
    overrides_builtin: bool = Field(
        description="A workspace segment that takes the place of the built-in of the same id; "
        "deleting it brings the built-in back."
    )
    members: int = Field(description="Customers in the segment now.")
    definition: dict[str, Any] = Field(
        description="The segment document (docs/customers.md#segments)."
    )
    created_at: datetime | None = Field(description="Null for a built-in segment.")
    updated_at: datetime | None


class SegmentList(BaseModel):
    segments: list[SegmentOut] = Field(description="In id order.")


class Member(BaseModel):
    customer_id: str = Field(description="As sent in events; `anon:<id>` for an anonymous one.")
    entered_at: datetime


class MemberPage(BaseModel):
    segment: str
    members: list[Member] = Field(description="In customer id order.")
    next: str | None = Field(
        description="Pass as `after` for the next page; null on the last page."
    )


class MemberCount(BaseModel):
    segment: str
    members: int


class ValidationOut(BaseModel):
    valid: bool
    problems: list[ProblemOut] = Field(description="Every problem found; empty when valid.")


class IntelligenceSettingsOut(BaseModel):
    """The rules in force: the workspace's own values, the defaults for the rest."""

    currency: str = Field(description="ISO-4217 code; revenue is counted in it.", examples=["EUR"])
    rates: dict[str, str] = Field(
        description="Currency → units of the workspace currency one unit of it is worth, as a "
        "decimal string.",
        examples=[{"USD": "0.92", "GBP": "1.17"}],
    )
    score_rules: dict[str, Any] = Field(description="The lead-score rules in force.")
    lifecycle: dict[str, Any] = Field(description="The lifecycle thresholds in force.")
    inherited: list[SettingsField] = Field(
        description="Fields the workspace has not set: they show the default."
    )
    revision: int = Field(description="Moves with every change of the rules or segments.")
    updated_at: datetime | None = Field(
        description="When the workspace last changed its rules or segments."
    )


SEGMENT_EXAMPLE = {
    "name": "Hesitant shopper",
    "description": "Added to cart twice this week but no order in 14 days.",
    "windows": [{"name": "adds", "event": "cart_updated", "within": "P7D", "min_count": 2}],
    "condition": {"not": {"field": "profile.last_order_at", "op": "within", "value": "P14D"}},
}
SEGMENT_EXAMPLES: dict[str, Any] = {
    "hesitant": {"summary": "A window and a time-relative condition", "value": SEGMENT_EXAMPLE}
}
SETTINGS_EXAMPLES: dict[str, Any] = {
    "euro": {
        "summary": "Count revenue in euros, converting dollars and pounds",
        "value": {"currency": "EUR", "rates": {"USD": "0.92", "GBP": "1.17"}},
    },
    "reset": {"summary": "Back to the default score rules", "value": {"score_rules": None}},
}

_AUTH: dict[int | str, dict[str, Any]] = {
    401: {"description": "No API key, or an unknown or revoked one"},
    403: {"description": "The key is not an admin key"},
    429: {"description": "Rate limit of the key exceeded; see Retry-After"},
}
_JSON: dict[int | str, dict[str, Any]] = {
    413: {"description": "Body larger than CICLO_MAX_BODY_BYTES"},
    415: {"description": "Body is not JSON"},
}
_INVALID: dict[int | str, dict[str, Any]] = {
    422: {
        "model": InvalidDocumentBody,
        "description": "The document does not validate: `error.problems` lists every problem "
        "with its JSON path",
    }
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such segment in force in this workspace"}
}


# ── The router ────────────────────────────────────────────────────────────────────────────────


def intelligence_router(*, engine: AsyncEngine, clock: Clock) -> APIRouter:
    router = APIRouter(prefix="/v1")

    async def in_force(conn: AsyncConnection, workspace: str) -> dict[str, SegmentOut]:
        """The workspace's segments in force by id, members counted (the worker's view: a
        stored segment that no longer validates is left out, the built-in stays)."""
        counts = await store.member_counts(conn, workspace)
        found = {
            i: builtin_out(i, document, counts.get(i, 0))
            for i, document in store.builtin_documents().items()
        }
        for row in await store.own_segments(conn, workspace):
            if usable(workspace, row):
                found[row.segment_id] = own_out(
                    row, counts.get(row.segment_id, 0), overrides=row.segment_id in found
                )
        return dict(sorted(found.items()))

    async def one(conn: AsyncConnection, workspace: str, segment_id: str) -> SegmentOut:
        row = await store.own_segment(conn, workspace, segment_id)
        count = await store.member_count(conn, workspace, segment_id)
        builtin = store.builtin_documents().get(segment_id)
        if row is not None and usable(workspace, row):
            return own_out(row, count, overrides=builtin is not None)
        if builtin is not None:
            return builtin_out(segment_id, builtin, count)
        raise NotFound(f"no segment {segment_id!r} in this workspace", field="segment_id")

    # ── Segments ──

    @router.get(
        "/segments",
        response_model=SegmentList,
        tags=["segments"],
        summary="The segments in force: built-in ones and the workspace's own, with counts",
        responses=_AUTH,
    )
    async def list_segments(principal: AdminPrincipal) -> SegmentList:
        async with engine.connect() as conn:
            found = await in_force(conn, principal.workspace_id)
        return SegmentList(segments=list(found.values()))

    @router.post(
        "/segments/validate",
        response_model=ValidationOut,
        tags=["segments"],
        summary="Check a segment document without saving it",
        responses={**_AUTH, **_JSON},
        dependencies=[Depends(require_json)],
    )
    async def validate_segment_document(
        document: Annotated[dict[str, Any], Body(openapi_examples=SEGMENT_EXAMPLES)],
        principal: AdminPrincipal,
    ) -> ValidationOut:
        return validation(segment_problems(document))

    @router.get(
        "/segments/{segment_id}",
        response_model=SegmentOut,
        tags=["segments"],
        summary="A segment: its definition and how many customers are in it",
        responses={**_AUTH, **_NOT_FOUND},
    )
    async def get_segment(segment_id: SegmentId, principal: AdminPrincipal) -> SegmentOut:
        async with engine.connect() as conn:
            return await one(conn, principal.workspace_id, segment_id)

    @router.put(
        "/segments/{segment_id}",
        response_model=SegmentOut,
        tags=["segments"],
        summary="Create or replace one of the workspace's segments",
        description="The body is a segment document; its `id` may be left out (it must be the "
        "id in the path otherwise). The id of a built-in segment overrides it in this "
        "workspace. 201 when created, 200 when replaced. Members are decided as each "
        "customer's next event or timer is processed: a new segment fills up from there.",
        status_code=status.HTTP_200_OK,
        responses={
            **_AUTH,
            **_JSON,
            **_INVALID,
            201: {"model": SegmentOut, "description": "Created"},
        },
        dependencies=[Depends(require_json)],
    )
    async def put_segment(
        segment_id: SegmentId,
        document: Annotated[dict[str, Any], Body(openapi_examples=SEGMENT_EXAMPLES)],
        principal: AdminPrincipal,
        response: Response,
    ) -> SegmentOut:
        given = document.get("id")
        if given is not None and given != segment_id:
            raise InvalidDocument(
                [Problem("$.id", f"must be {segment_id!r} (the segment in the path)")]
            )
        document = {"id": segment_id, **{k: v for k, v in document.items() if k != "id"}}
        problems = segment_problems(document)
        if problems:
            raise InvalidDocument(problems)
        workspace = principal.workspace_id
        async with engine.begin() as conn:
            existed = await store.own_segment(conn, workspace, segment_id) is not None
            row = await store.save_segment(conn, workspace, document, now=clock.now())
            count = await store.member_count(conn, workspace, segment_id)
        if not existed:
            response.status_code = status.HTTP_201_CREATED
            response.headers["Location"] = f"/v1/segments/{segment_id}"
        return own_out(row, count, overrides=segment_id in store.builtin_documents())

    @router.delete(
        "/segments/{segment_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        tags=["segments"],
        summary="Delete one of the workspace's segments",
        description="Deleting a segment that overrides a built-in one brings the built-in "
        "back. Built-in segments cannot be deleted (409). Members are forgotten as each "
        "customer is next processed, without `segment_exited` events.",
        responses={
            **_AUTH,
            **_NOT_FOUND,
            409: {"description": "A built-in segment: override it with PUT instead"},
        },
    )
    async def delete_segment(segment_id: SegmentId, principal: AdminPrincipal) -> Response:
        async with engine.begin() as conn:
            deleted = await store.delete_segment(
                conn, principal.workspace_id, segment_id, now=clock.now()
            )
        if deleted:
            return Response(status_code=status.HTTP_204_NO_CONTENT)
        if segment_id in store.builtin_documents():
            raise Conflict(
                f"segment {segment_id!r} is built in and cannot be deleted; to change it in "
                f"this workspace, override it with PUT /v1/segments/{segment_id} (deleting the "
                "override brings the built-in back)",
                field="segment_id",
            )
        raise NotFound(f"no segment {segment_id!r} of this workspace", field="segment_id")

    @router.get(
        "/segments/{segment_id}/members",
        response_model=MemberPage,
        tags=["segments"],
        summary="The customers in a segment, a page at a time",
        description="In customer id order. Pass the answer's `next` as `after` for the next "
        "page; `next` is null on the last page.",
        responses={**_AUTH, **_NOT_FOUND},
    )
    async def segment_members(
        segment_id: SegmentId,
        principal: AdminPrincipal,
        limit: Annotated[int, Query(ge=1, le=1000, description="Members per page")] = 100,
        after: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=210,
                pattern=r"^[^\x00]+$",
                description="`next` of the previous page",
            ),
        ] = None,
    ) -> MemberPage:
        workspace = principal.workspace_id
        async with engine.connect() as conn:
            await known(conn, workspace, segment_id)
            page, cursor = await store.members_page(
                conn, workspace, segment_id, after=after, limit=limit
            )
        return MemberPage(
            segment=segment_id,
            members=[Member(customer_id=c, entered_at=at) for c, at in page],
            next=cursor,
        )

    @router.get(
        "/segments/{segment_id}/count",
        response_model=MemberCount,
        tags=["segments"],
        summary="How many customers are in a segment",
        responses={**_AUTH, **_NOT_FOUND},
    )
    async def segment_count(segment_id: SegmentId, principal: AdminPrincipal) -> MemberCount:
        workspace = principal.workspace_id
        async with engine.connect() as conn:
            await known(conn, workspace, segment_id)
            count = await store.member_count(conn, workspace, segment_id)
        return MemberCount(segment=segment_id, members=count)

    async def known(conn: AsyncConnection, workspace: str, segment_id: str) -> None:
        if segment_id in store.builtin_documents():
            return
        row = await store.own_segment(conn, workspace, segment_id)
        if row is None or not usable(workspace, row):
            raise NotFound(f"no segment {segment_id!r} in this workspace", field="segment_id")

    # ── Workspace rules ──

    @router.get(
        "/intelligence-settings",
        response_model=IntelligenceSettingsOut,
        tags=["intelligence settings"],
        summary="The workspace's currency, rates, lead-score rules and lifecycle thresholds",
        responses=_AUTH,
    )
    async def get_settings(principal: AdminPrincipal) -> IntelligenceSettingsOut:
        async with engine.connect() as conn:
            row = await store.settings_row(conn, principal.workspace_id)
        return describe(principal.workspace_id, row)

    @router.put(
        "/intelligence-settings",
        response_model=IntelligenceSettingsOut,
        tags=["intelligence settings"],
        summary="Change some of the workspace's intelligence settings",
        description="A partial update: fields left out keep their value, `null` resets a "
        "field to the default. `rates` is replaced as a whole. Applies to the workers within "
        "CICLO_JOURNEY_CATALOG_REFRESH seconds; revenue already counted is not converted "
        "again.",
        responses={**_AUTH, **_JSON, **_INVALID},
        dependencies=[Depends(require_json)],
    )
    async def put_settings(
        body: Annotated[dict[str, Any], Body(openapi_examples=SETTINGS_EXAMPLES)],
        principal: AdminPrincipal,
    ) -> IntelligenceSettingsOut:
        changes, problems = settings_changes(body)
        if problems:
            raise InvalidDocument(problems)
        async with engine.begin() as conn:
            await store.save_settings(conn, principal.workspace_id, changes, now=clock.now())
            row = await store.settings_row(conn, principal.workspace_id)
        return describe(principal.workspace_id, row)

    @router.get(
        "/score-rules/default",
        response_model=dict[str, Any],
        tags=["intelligence settings"],
        summary="The built-in lead-score rules document",
        responses=_AUTH,
    )
    async def default_score_rules(principal: AdminPrincipal) -> dict[str, Any]:
        return store.default_score_rules_document()

    @router.post(
        "/score-rules/validate",
        response_model=ValidationOut,
        tags=["intelligence settings"],
        summary="Check a lead-score rules document without saving it",
        responses={**_AUTH, **_JSON},
        dependencies=[Depends(require_json)],
    )
    async def validate_score_rules_document(
        document: Annotated[dict[str, Any], Body()], principal: AdminPrincipal
    ) -> ValidationOut:
        return validation(score_rules_problems(document))

    return router


# ── Helpers ───────────────────────────────────────────────────────────────────────────────────


def storable(document: Any) -> list[Problem]:
    """What the database would refuse (a lone surrogate escape, absurd nesting)."""
    try:
        orjson.dumps(document)
    except orjson.JSONEncodeError as exc:
        return [Problem("$", f"cannot be stored: {exc}")]
    return []


def segment_problems(document: Mapping[str, Any]) -> list[Problem]:
    problems = storable(document)
    if problems:
        return problems
    try:
        return validate_segment(document)
    except OverflowError:
        return [Problem("$", "a duration or time is too large to compute with")]
    except RecursionError:
        return [Problem("$", "the document is nested too deeply")]


def score_rules_problems(document: Mapping[str, Any]) -> list[Problem]:
    problems = storable(document)
    if problems:
        return problems
    try:
        return validate_score_rules(document)
    except OverflowError:
        return [Problem("$", "a duration is too large to compute with")]
    except RecursionError:
        return [Problem("$", "the document is nested too deeply")]


def validation(problems: list[Problem]) -> ValidationOut:
    return ValidationOut(
        valid=not problems,
        problems=[ProblemOut(path=p.path, message=p.message) for p in problems],
    )


def under(field: str, problems: list[Problem]) -> list[Problem]:
    """Problems of a nested document, their paths from the body's root."""
    return [Problem(f"$.{field}{p.path.removeprefix('$')}", p.message) for p in problems]


def usable(workspace: str, row: SegmentRow) -> bool:
    """Whether a stored segment is in force (the worker leaves out one that no longer
    validates, logging it)."""
    try:
        parse_segment(row.document)
    except InvalidSegment:
        log.warning(
            "stored segment no longer valid; not in force",
            extra={"workspace_id": workspace, "segment_id": row.segment_id},
        )
        return False
    return True


def builtin_out(segment_id: str, document: dict[str, Any], members: int) -> SegmentOut:
    return SegmentOut(
        id=segment_id,
        name=str(document.get("name", segment_id)),
        description=str(document.get("description", "")),
        builtin=True,
        overrides_builtin=False,
        members=members,
        definition=document,
        created_at=None,
        updated_at=None,
    )


def own_out(row: SegmentRow, members: int, *, overrides: bool) -> SegmentOut:
    return SegmentOut(
        id=row.segment_id,
        name=str(row.document.get("name", row.segment_id)),
        description=str(row.document.get("description", "")),
        builtin=False,
        overrides_builtin=overrides,
        members=members,
        definition=row.document,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


_READ_ONLY = ("inherited", "revision", "updated_at")


def settings_changes(body: Mapping[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    """The columns a PUT sets (None: back to the default) and every problem of the body."""
    problems = storable(body)
    if problems:
        return {}, problems
    changes: dict[str, Any] = {}
    for name, value in body.items():
        path = f"$.{name}" if re.match(r"^[A-Za-z_][A-Za-z0-9_-]*$", name) else f"$[{name!r}]"
        if name in _READ_ONLY:
            problems.append(Problem(path, f"{name!r} is read-only: leave it out"))
        elif name not in SETTINGS_FIELDS:
            fields = ", ".join(SETTINGS_FIELDS)
            problems.append(Problem(path, f"unknown setting {name!r}: settable are {fields}"))
        elif value is None:
            changes[name] = None
        elif name == "currency":
            if isinstance(value, str) and _CURRENCY.fullmatch(value):
                changes[name] = value.upper()
            else:
                problems.append(
                    Problem(path, "a currency is an ISO-4217 code of three letters, e.g. 'EUR'")
                )
        elif name == "rates":
            rates, found = rates_of(value)
            changes[name] = rates
            problems.extend(found)
        elif name == "score_rules":
            if isinstance(value, dict):
                found = score_rules_problems(value)
                problems.extend(under(name, found))
                changes[name] = value
            else:
                problems.append(Problem(path, "score rules are a JSON object"))
        else:  # lifecycle
            if isinstance(value, dict):
                try:
                    LifecycleRules.model_validate(value)
                except ValidationError as exc:
                    problems.extend(under(name, schema_problems(exc)))
                changes[name] = value
            else:
                problems.append(Problem(path, "lifecycle thresholds are a JSON object"))
    return changes, problems


def rates_of(value: Any) -> tuple[dict[str, str], list[Problem]]:
    """Rates as stored (upper-case code → decimal string) and their problems."""
    if not isinstance(value, dict):
        return {}, [Problem("$.rates", 'rates are an object such as {"USD": "0.92"}')]
    if len(value) > MAX_RATES:
        return {}, [Problem("$.rates", f"at most {MAX_RATES} rates")]
    rates: dict[str, str] = {}
    problems: list[Problem] = []
    for code, rate in value.items():
        path = f"$.rates.{code}" if _CURRENCY.fullmatch(code) else f"$.rates[{code!r}]"
        if not _CURRENCY.fullmatch(code):
            problems.append(Problem(path, "a currency is an ISO-4217 code of three letters"))
            continue
        if code.upper() in rates:
            problems.append(Problem(path, f"{code.upper()} is given twice"))
            continue
        amount = None
        if isinstance(rate, str | int | float) and not isinstance(rate, bool):
            try:
                amount = Decimal(str(rate).strip())
            except InvalidOperation:
                amount = None
        if amount is None or not amount.is_finite() or not 0 < amount <= LARGEST_RATE:
            problems.append(
                Problem(
                    path,
                    f"a rate is a positive decimal (at most {LARGEST_RATE:,}), as a string or "
                    f"a number: how many units of the workspace currency one {code.upper()} is "
                    f'worth, e.g. "1.08"; got {rate!r}',
                )
            )
            continue
        rates[code.upper()] = format(amount, "f")
    return rates, problems


def describe(workspace: str, row: Mapping[str, Any] | None) -> IntelligenceSettingsOut:
    intel = store.intelligence_of(workspace, row)
    return IntelligenceSettingsOut(
        currency=intel.currency,
        rates={c: format(r, "f") for c, r in sorted(intel.rates.items())},
        score_rules=intel.score_rules.model_dump(mode="json", by_alias=True, exclude_none=True),
        lifecycle=intel.lifecycle.model_dump(mode="json", by_alias=True),
        inherited=[f for f in SETTINGS_FIELDS if row is None or row[f] is None],
        revision=int(row["revision"]) if row is not None else 0,
        updated_at=row["updated_at"] if row is not None else None,
    )
