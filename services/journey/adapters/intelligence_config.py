"""A workspace's customer-intelligence rules as stored: ``journey_intelligence_settings``
(currency, exchange rates, lead-score rules, lifecycle thresholds) and ``journey_segments``
(the workspace's own segments, merged over the built-in ones).

``DatabaseIntel`` gives the worker each workspace's ``Intelligence``, cached for
``refresh_seconds``; a stored document that no longer validates (a rule written by an older
version) is logged and replaced by the default rather than stopping the worker.

The HTTP API (``entrypoints/intelligence.py``) writes through ``save_settings``,
``save_segment`` and ``delete_segment``: each bumps ``journey_intelligence_settings.revision``
(creating the row), so a cache can tell that a workspace's rules changed. It reads segment
membership (``journey_segment_members``, kept by the worker) with ``member_counts`` and
``members_page``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from importlib import resources
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Table, delete, func, null, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.journey.adapters.tables import intelligence_settings, segment_members, segments
from services.journey.adapters.workspace_cache import WorkspaceCache
from services.journey.domain import builtin_segments, intelligence, scoring
from services.journey.domain.intelligence import Intelligence
from services.journey.domain.lifecycle import LifecycleRules
from services.journey.domain.scoring import ScoreRules
from services.journey.domain.segments import InvalidSegment, SegmentDefinition, parse_segment
from shared.db.upsert import insert_for

log = logging.getLogger(__name__)


async def load(
    conn: AsyncConnection, workspaces: Iterable[str]
) -> tuple[dict[str, Mapping[str, Any]], dict[str, list[Mapping[str, Any]]]]:
    """The stored settings row and segment documents of each workspace asked for."""
    wanted = sorted(set(workspaces))
    if not wanted:
        return {}, {}
    s, g = intelligence_settings, segments
    settings: dict[str, Mapping[str, Any]] = {
        r.workspace_id: dict(r._mapping)
        for r in await conn.execute(select(s).where(s.c.workspace_id.in_(wanted)))
    }
    documents: dict[str, list[Mapping[str, Any]]] = {}
    rows = await conn.execute(
        select(g.c.workspace_id, g.c.document)
        .where(g.c.workspace_id.in_(wanted))
        .order_by(g.c.workspace_id, g.c.segment_id)
    )
    for r in rows:
        documents.setdefault(r.workspace_id, []).append(r.document)
    return settings, documents


def intelligence_of(
    workspace_id: str,
    row: Mapping[str, Any] | None,
    documents: Iterable[Mapping[str, Any]] = (),
) -> Intelligence:
    """The rules in force for a workspace from what it stored (None / nothing: the defaults)."""
    base = intelligence.default()
    own: list[SegmentDefinition] = []
    for document in documents:
        try:
            own.append(parse_segment(document))
        except InvalidSegment:
            log.exception(
                "stored segment no longer valid; left out",
                extra={"workspace_id": workspace_id, "segment_id": document.get("id")},
            )
    values: dict[str, Any] = {}
    if row is not None:
        try:
            if row["currency"] is not None:
                values["currency"] = str(row["currency"]).upper()
            if row["rates"] is not None:
                values["rates"] = {
                    str(c).upper(): Decimal(str(v)) for c, v in dict(row["rates"]).items()
                }
            if row["score_rules"] is not None:
                values["score_rules"] = ScoreRules.model_validate(row["score_rules"])
            if row["lifecycle"] is not None:
                values["lifecycle"] = LifecycleRules.model_validate(row["lifecycle"])
        except (ValidationError, InvalidOperation, ValueError, TypeError):
            log.exception(
                "stored intelligence settings no longer valid; using the defaults for the rest",
                extra={"workspace_id": workspace_id},
            )
    segments_in_force = intelligence.with_segments(base.segments, own)
    return Intelligence(
        currency=values.get("currency", base.currency),
        rates=values.get("rates", base.rates),
        score_rules=values.get("score_rules", base.score_rules),
        lifecycle=values.get("lifecycle", base.lifecycle),
        segments=segments_in_force,
        revision=int(row["revision"]) if row is not None else 0,
    )


class DatabaseIntel:
    """``IntelSource`` for the worker, cached per workspace for ``refresh_seconds``. When the
    database is unreachable the last known rules stay in force."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        refresh_seconds: float = 2.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._cache: WorkspaceCache[Intelligence] = WorkspaceCache(
            self._load,
            what="intelligence settings",
            refresh_seconds=refresh_seconds,
            monotonic=monotonic,
        )

    async def _load(self, workspaces: list[str]) -> dict[str, Intelligence]:
        async with self._engine.connect() as conn:
            rows, documents = await load(conn, workspaces)
        return {w: intelligence_of(w, rows.get(w), documents.get(w, ())) for w in workspaces}

    async def for_workspaces(self, workspaces: Iterable[str]) -> dict[str, Intelligence]:
        return await self._cache.get(workspaces)

    def forget(self, workspace_id: str) -> None:
        """Drop a workspace's cached rules (after a change over HTTP in this process)."""
        self._cache.forget(workspace_id)


# ── Reading and writing over HTTP ─────────────────────────────────────────────────────────────

SETTINGS_FIELDS = ("currency", "rates", "score_rules", "lifecycle")
"""The settings a workspace may set; a NULL column takes the built-in default."""


@dataclass(frozen=True, slots=True)
class SegmentRow:
    """One of the workspace's own segments as stored."""

    segment_id: str
    document: dict[str, Any]
    created_at: datetime
    updated_at: datetime


@cache
def _builtin_documents() -> dict[str, str]:
    found = {}
    package = resources.files(builtin_segments.__name__)
    for entry in sorted(package.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            found[entry.name.removesuffix(".json")] = entry.read_text(encoding="utf-8")
    return found


def builtin_documents() -> dict[str, dict[str, Any]]:
    """The built-in segments' documents as written in their files, by id (a fresh copy)."""
    return {i: json.loads(text) for i, text in _builtin_documents().items()}


def default_score_rules_document() -> dict[str, Any]:
    """The built-in lead-score rules document as written in its file."""
    package = resources.files(scoring.__package__ or "services.journey.domain")
    document: dict[str, Any] = json.loads(
        package.joinpath("default_score_rules.json").read_text("utf-8")
    )
    return document


def _insert(conn: AsyncConnection, table: Table) -> Any:
    return insert_for(conn.dialect.name)(table)


async def settings_row(conn: AsyncConnection, workspace: str) -> Mapping[str, Any] | None:
    """The workspace's stored settings row, or None."""
    rows, _ = await load(conn, [workspace])
    return rows.get(workspace)


async def save_settings(
    conn: AsyncConnection, workspace: str, changes: Mapping[str, Any], *, now: datetime
) -> None:
    """Set the given columns of the workspace's settings (None: back to the default; others are
    left as they are) and bump ``revision``, creating the row when missing. Every change of a
    workspace's rules or segments goes through here, so the revision moves with each."""
    unknown = set(changes) - set(SETTINGS_FIELDS)
    if unknown:
        raise ValueError(f"not intelligence settings: {sorted(unknown)}")
    s = intelligence_settings
    values = {name: null() if value is None else value for name, value in changes.items()}
    statement = _insert(conn, s).values(
        workspace_id=workspace, revision=1, updated_at=now, **values
    )
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=["workspace_id"],
            set_={**values, "revision": s.c.revision + 1, "updated_at": now},
        )
    )


async def bump_revision(conn: AsyncConnection, workspace: str, *, now: datetime) -> None:
    """Note a change of the workspace's rules (its segments) for caches watching ``revision``."""
    await save_settings(conn, workspace, {}, now=now)


async def own_segments(conn: AsyncConnection, workspace: str) -> list[SegmentRow]:
    """The workspace's own segments, in id order (valid or not)."""
    g = segments
    rows = await conn.execute(
        select(g).where(g.c.workspace_id == workspace).order_by(g.c.segment_id)
    )
    return [_segment_row(r) for r in rows]


async def own_segment(conn: AsyncConnection, workspace: str, segment_id: str) -> SegmentRow | None:
    g = segments
    row = (
        await conn.execute(
            select(g).where(g.c.workspace_id == workspace, g.c.segment_id == segment_id)
        )
    ).first()
    return _segment_row(row) if row is not None else None


def _segment_row(row: Any) -> SegmentRow:
    return SegmentRow(row.segment_id, dict(row.document), row.created_at, row.updated_at)


async def save_segment(
    conn: AsyncConnection, workspace: str, document: Mapping[str, Any], *, now: datetime
) -> SegmentRow:
    """Create or replace the workspace's segment ``document["id"]`` (a valid document) and bump
    the revision."""
    segment_id = str(document["id"])
    statement = _insert(conn, segments).values(
        workspace_id=workspace,
        segment_id=segment_id,
        document=dict(document),
        created_at=now,
        updated_at=now,
    )
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=["workspace_id", "segment_id"],
            set_={"document": statement.excluded.document, "updated_at": now},
        )
    )
    await bump_revision(conn, workspace, now=now)
    saved = await own_segment(conn, workspace, segment_id)
    assert saved is not None
    return saved


async def delete_segment(
    conn: AsyncConnection, workspace: str, segment_id: str, *, now: datetime
) -> bool:
    """Delete the workspace's own segment; whether there was one. Its membership rows stay:
    the worker forgets them customer by customer (no ``segment_exited``: nobody left)."""
    g = segments
    result = await conn.execute(
        delete(g).where(g.c.workspace_id == workspace, g.c.segment_id == segment_id)
    )
    if not result.rowcount:
        return False
    await bump_revision(conn, workspace, now=now)
    return True


async def member_counts(conn: AsyncConnection, workspace: str) -> dict[str, int]:
    """Members per segment id of the workspace (segments without members are absent)."""
    m = segment_members
    rows = await conn.execute(
        select(m.c.segment_id, func.count())
        .where(m.c.workspace_id == workspace)
        .group_by(m.c.segment_id)
    )
    return {r[0]: int(r[1]) for r in rows}


async def member_count(conn: AsyncConnection, workspace: str, segment_id: str) -> int:
    m = segment_members
    found = await conn.scalar(
        select(func.count()).where(m.c.workspace_id == workspace, m.c.segment_id == segment_id)
    )
    return int(found or 0)


async def members_page(
    conn: AsyncConnection,
    workspace: str,
    segment_id: str,
    *,
    after: str | None,
    limit: int,
) -> tuple[list[tuple[str, datetime]], str | None]:
    """Up to ``limit`` members (customer id, entered at) after the customer id ``after``, in
    customer id order (keyset paging on the primary key), and the cursor of the next page
    (None: this is the last)."""
    m = segment_members
    query = select(m.c.customer_id, m.c.entered_at).where(
        m.c.workspace_id == workspace, m.c.segment_id == segment_id
    )
    if after is not None:
        query = query.where(m.c.customer_id > after)
    rows = [
        (r.customer_id, r.entered_at)
        for r in await conn.execute(query.order_by(m.c.customer_id).limit(limit + 1))
    ]
    more = len(rows) > limit
    page = rows[:limit]
    return page, page[-1][0] if more else None
