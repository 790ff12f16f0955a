"""Journeys managed over HTTP: their versions in the database, and the catalog built from them.

A workspace's journey has at most one draft (its highest version) and any number of published
versions, which never change again: runs finish on the version they entered. The journey's
status applies to its current (latest published) version:

- ``published``: new customers enter the current version;
- ``paused``: no new entries; runs in flight go on;
- ``archived``: no entries, and runs in flight exit at their next step;
- ``draft``: nothing published yet (not in the catalog).

Files in journeys/ apply to every workspace; a workspace journey with the same id takes the
file's place in that workspace once it has a published version. Its versions are numbered after
the file's, so that runs in flight on the file version keep finding it.

``DatabaseCatalogs`` gives the worker the catalog (files plus every workspace's published
versions), cached, reloaded when the sum of ``journey_definitions.revision`` moved (every change
that alters the catalog adds one), checked at most every ``refresh_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.journey.adapters.tables import definitions, versions
from services.journey.domain.catalog import JourneyCatalog, Status
from services.journey.domain.definitions import Journey
from services.journey.domain.validation import Problem
from services.journey.errors import JourneyError
from shared import http

log = logging.getLogger(__name__)

JourneyStatus = Literal["draft", "published", "paused", "archived"]
VersionState = Literal["draft", "published"]
Action = Literal["pause", "resume", "archive"]
Check = Callable[[Mapping[str, Any]], list[Problem]]
_TARGETS: dict[Action, JourneyStatus] = {
    "pause": "paused",
    "resume": "published",
    "archive": "archived",
}


class NotFound(JourneyError, http.NotFound):
    """No such journey or version in the workspace (answers 404 as it is)."""


class Conflict(JourneyError, http.Conflict):
    """The request contradicts the journey's state (a published version is immutable, ...);
    answers 409 as it is."""


class Invalid(JourneyError):
    """The document does not validate (any more: templates can disappear before a publish)."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = list(problems)


@dataclass(frozen=True, slots=True)
class VersionRow:
    version: int
    state: VersionState
    document: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    published_at: datetime | None


@dataclass(frozen=True, slots=True)
class DefinitionRow:
    journey_id: str
    status: JourneyStatus
    current_version: int | None
    created_at: datetime
    updated_at: datetime
    versions: list[VersionRow] = field(default_factory=list)
    """Oldest first."""

    @property
    def draft(self) -> VersionRow | None:
        return next((v for v in self.versions if v.state == "draft"), None)

    def version(self, number: int) -> VersionRow | None:
        return next((v for v in self.versions if v.version == number), None)

    @property
    def shown(self) -> VersionRow | None:
        """The version that names the journey: the current one, else the draft."""
        if self.current_version is not None:
            return self.version(self.current_version)
        return self.draft


# ── Catalog ───────────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class PublishedVersion:
    workspace_id: str
    journey_id: str
    version: int
    document: Mapping[str, Any]
    status: Status
    current: bool


def build_catalog(files: Iterable[Journey], rows: Iterable[PublishedVersion]) -> JourneyCatalog:
    """The file journeys (every workspace) plus every published version of the workspaces' own.

    Documents were validated when saved and again when published; one that no longer parses
    (the language changed under it) is left out and logged rather than stopping the worker.
    Types are read leniently here (``strict=False``): a version published before the language
    took JSON types strictly (``"priority": "5"``) keeps running as it was published."""
    catalog = JourneyCatalog(files)
    for row in rows:
        try:
            journey = Journey.model_validate(row.document, strict=False)
        except ValidationError as exc:
            log.error(
                "stored journey no longer valid; left out of the catalog",
                extra={
                    "workspace_id": row.workspace_id,
                    "journey_id": row.journey_id,
                    "version": row.version,
                    "errors": str(exc.errors()[:3]),
                },
            )
            continue
        catalog.add(journey, workspace=row.workspace_id, status=row.status, current=row.current)
    return catalog


async def published_versions(conn: AsyncConnection) -> list[PublishedVersion]:
    d, v = definitions, versions
    rows = await conn.execute(
        select(
            v.c.workspace_id,
            v.c.journey_id,
            v.c.version,
            v.c.document,
            d.c.status,
            d.c.current_version,
        )
        .join(d, (d.c.workspace_id == v.c.workspace_id) & (d.c.journey_id == v.c.journey_id))
        .where(v.c.state == "published", d.c.status != "draft")
        .order_by(v.c.workspace_id, v.c.journey_id, v.c.version)
    )
    return [
        PublishedVersion(
            workspace_id=r.workspace_id,
            journey_id=r.journey_id,
            version=r.version,
            document=r.document,
            status=r.status,
            current=r.version == r.current_version,
        )
        for r in rows
    ]


async def catalog_marker(conn: AsyncConnection) -> tuple[int, int]:
    """Moves whenever the catalog changes: revisions only grow and published journeys are never
    deleted."""
    row = (
        await conn.execute(select(func.count(), func.coalesce(func.sum(definitions.c.revision), 0)))
    ).one()
    return int(row[0]), int(row[1])


class DatabaseCatalogs:
    """``Catalogs`` for the worker: files plus the journeys managed over HTTP.

    ``current()`` answers from memory; at most every ``refresh_seconds`` it reads the cheap
    change marker, and rebuilds the catalog only when the marker moved. When the database is
    unreachable the last catalog stays in force (the first load raises)."""

    def __init__(
        self,
        engine: AsyncEngine,
        file_catalog: Iterable[Journey],
        refresh_seconds: float = 2.0,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._files = list(file_catalog)
        self._refresh = refresh_seconds
        self._monotonic = monotonic
        self._catalog: JourneyCatalog | None = None
        self._marker: tuple[int, int] | None = None
        self._next_check = 0.0
        self._lock = asyncio.Lock()

    async def current(self) -> JourneyCatalog:
        if self._catalog is not None and self._monotonic() < self._next_check:
            return self._catalog
        async with self._lock:
            if self._catalog is not None and self._monotonic() < self._next_check:
                return self._catalog
            try:
                async with self._engine.connect() as conn:
                    marker = await catalog_marker(conn)
                    if self._catalog is None or marker != self._marker:
                        # The marker is read first: a change in between makes the next check
                        # reload again, never miss it.
                        rows = await published_versions(conn)
                        self._catalog = build_catalog(self._files, rows)
                        self._marker = marker
            except (SQLAlchemyError, OSError):
                if self._catalog is None:
                    raise
                log.warning("journey catalog refresh failed; keeping the last one", exc_info=True)
            self._next_check = self._monotonic() + self._refresh
            assert self._catalog is not None
            return self._catalog


# ── The store the HTTP API writes through ─────────────────────────────────────────────────────


class JourneyStore:
    """Reads and changes of one workspace's journeys, each change in one transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def all(self, workspace: str) -> list[DefinitionRow]:
        async with self._engine.connect() as conn:
            return await self._load(conn, workspace, None)

    async def get(self, workspace: str, journey_id: str) -> DefinitionRow | None:
        async with self._engine.connect() as conn:
            found = await self._load(conn, workspace, journey_id)
        return found[0] if found else None

    async def create(
        self,
        workspace: str,
        document: Mapping[str, Any],
        *,
        file_version: int | None,
        now: datetime,
    ) -> DefinitionRow:
        """A new draft of ``document["id"]``, numbered after every version of that id (the
        workspace's and the file's)."""
        journey_id = str(document["id"])
        async with self._transaction() as conn:
            current = await self._locked(conn, workspace, journey_id)
            if current is None:
                await conn.execute(
                    insert(definitions).values(
                        workspace_id=workspace,
                        journey_id=journey_id,
                        status="draft",
                        current_version=None,
                        revision=0,
                        created_at=now,
                        updated_at=now,
                    )
                )
                number = (file_version or 0) + 1
            else:
                if current.draft is not None:
                    raise Conflict(
                        f"journey {journey_id!r} already has a draft (version "
                        f"{current.draft.version}): change it with PUT "
                        f"/v1/journeys/{journey_id}/draft"
                    )
                number = max([file_version or 0, *(v.version for v in current.versions)]) + 1
                await self._touch(conn, workspace, journey_id, now)
            await conn.execute(
                insert(versions).values(
                    workspace_id=workspace,
                    journey_id=journey_id,
                    version=number,
                    state="draft",
                    document={**document, "version": number},
                    created_at=now,
                    updated_at=now,
                    published_at=None,
                )
            )
        found = await self.get(workspace, journey_id)
        assert found is not None
        return found

    async def save_draft(
        self,
        workspace: str,
        journey_id: str,
        document: Mapping[str, Any],
        *,
        version: int | None,
        now: datetime,
    ) -> DefinitionRow:
        """Replace the draft, or start one (the next version) when there is none.

        ``version``, when given, must be the draft's (or the next one): a published version
        is immutable."""
        async with self._transaction() as conn:
            current = await self._locked(conn, workspace, journey_id)
            if current is None:
                raise NotFound(
                    f"no journey {journey_id!r} in this workspace: create it with POST /v1/journeys"
                )
            draft = current.draft
            latest = max(v.version for v in current.versions) if current.versions else 0
            number = draft.version if draft is not None else latest + 1
            if version is not None and version != number:
                existing = current.version(version)
                if existing is not None and existing.state == "published":
                    raise Conflict(
                        f"version {version} of {journey_id!r} is published and immutable: "
                        f"save the change as a new draft (version {number})"
                    )
                raise Conflict(f"the draft of {journey_id!r} is version {number}, not {version}")
            await self._write_draft(conn, workspace, journey_id, number, document, draft, now)
        found = await self.get(workspace, journey_id)
        assert found is not None
        return found

    async def replace_version(
        self,
        workspace: str,
        journey_id: str,
        version: int,
        document: Mapping[str, Any],
        *,
        now: datetime,
    ) -> DefinitionRow:
        """Replace the document of a version, which must be the draft."""
        async with self._transaction() as conn:
            current = await self._existing(conn, workspace, journey_id)
            existing = current.version(version)
            if existing is None:
                raise NotFound(f"journey {journey_id!r} has no version {version}")
            if existing.state == "published":
                raise Conflict(
                    f"version {version} of {journey_id!r} is published and immutable: save the "
                    f"change as a new draft (PUT /v1/journeys/{journey_id}/draft)"
                )
            await self._write_draft(conn, workspace, journey_id, version, document, existing, now)
        found = await self.get(workspace, journey_id)
        assert found is not None
        return found

    async def discard_draft(self, workspace: str, journey_id: str, *, now: datetime) -> None:
        """Delete the draft; a journey left with no version at all is deleted too."""
        async with self._transaction() as conn:
            current = await self._existing(conn, workspace, journey_id)
            draft = current.draft
            if draft is None:
                raise NotFound(f"journey {journey_id!r} has no draft")
            await conn.execute(
                versions.delete().where(
                    versions.c.workspace_id == workspace,
                    versions.c.journey_id == journey_id,
                    versions.c.version == draft.version,
                )
            )
            if len(current.versions) == 1:
                await conn.execute(
                    definitions.delete().where(
                        definitions.c.workspace_id == workspace,
                        definitions.c.journey_id == journey_id,
                    )
                )
            else:
                await self._touch(conn, workspace, journey_id, now)

    async def publish(
        self, workspace: str, journey_id: str, version: int, *, check: Check, now: datetime
    ) -> DefinitionRow:
        """Publish the draft: it becomes the current version and the journey ``published``
        (from draft, paused or archived alike). Publishing the current version of a published
        journey again changes nothing; of a paused or archived one, or an older published
        version, is a Conflict."""
        async with self._transaction() as conn:
            current = await self._existing(conn, workspace, journey_id)
            existing = current.version(version)
            if existing is None:
                raise NotFound(f"journey {journey_id!r} has no version {version}")
            if existing.state == "published":
                if version == current.current_version and current.status == "published":
                    return current
                if version == current.current_version:
                    # Answering 200 here would say "published" of a journey no one enters.
                    how = (
                        f"resume it (POST /v1/journeys/{journey_id}/resume)"
                        if current.status == "paused"
                        else "save its document as a new draft and publish that"
                    )
                    raise Conflict(
                        f"version {version} of {journey_id!r} is published but the journey is "
                        f"{current.status}: to let customers in again, {how}"
                    )
                raise Conflict(
                    f"version {version} of {journey_id!r} was superseded by version "
                    f"{current.current_version}: to go back, save its document as a new draft"
                )
            problems = check(existing.document)
            if problems:
                raise Invalid(problems)
            await conn.execute(
                update(versions)
                .where(
                    versions.c.workspace_id == workspace,
                    versions.c.journey_id == journey_id,
                    versions.c.version == version,
                )
                .values(state="published", published_at=now, updated_at=now)
            )
            await self._touch(
                conn, workspace, journey_id, now, status="published", current_version=version
            )
        found = await self.get(workspace, journey_id)
        assert found is not None
        return found

    async def change_status(
        self, workspace: str, journey_id: str, action: Action, *, now: datetime
    ) -> DefinitionRow:
        """Pause, resume or archive. Asking for the state the journey is in changes nothing."""
        target = _TARGETS[action]
        async with self._transaction() as conn:
            current = await self._existing(conn, workspace, journey_id)
            status = current.status
            if status == target:
                return current
            if status == "draft":
                raise Conflict(
                    f"journey {journey_id!r} has no published version to {action}: publish "
                    f"one first"
                )
            if status == "archived":
                raise Conflict(
                    f"journey {journey_id!r} is archived: publish a new version to bring it back"
                )
            if action == "resume" and status != "paused":  # pragma: no cover - only paused
                raise Conflict(f"journey {journey_id!r} is {status}, not paused")
            await self._touch(conn, workspace, journey_id, now, status=target)
        found = await self.get(workspace, journey_id)
        assert found is not None
        return found

    # ── internals ──

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        """``engine.begin()``; a lost race (two creations of the same journey or version at
        once) is a Conflict, not a server error."""
        try:
            async with self._engine.begin() as conn:
                yield conn
        except IntegrityError as exc:
            raise Conflict("the journey changed at the same time; retry") from exc

    async def _locked(
        self, conn: AsyncConnection, workspace: str, journey_id: str
    ) -> DefinitionRow | None:
        """The journey with its row locked until the transaction ends (PostgreSQL; SQLite's
        BEGIN IMMEDIATE already serialises writers)."""
        found = await self._load(conn, workspace, journey_id, lock=True)
        return found[0] if found else None

    async def _existing(
        self, conn: AsyncConnection, workspace: str, journey_id: str
    ) -> DefinitionRow:
        current = await self._locked(conn, workspace, journey_id)
        if current is None:
            raise NotFound(f"no journey {journey_id!r} in this workspace")
        return current

    async def _write_draft(
        self,
        conn: AsyncConnection,
        workspace: str,
        journey_id: str,
        number: int,
        document: Mapping[str, Any],
        existing: VersionRow | None,
        now: datetime,
    ) -> None:
        body = {**document, "id": journey_id, "version": number}
        if existing is None:
            await conn.execute(
                insert(versions).values(
                    workspace_id=workspace,
                    journey_id=journey_id,
                    version=number,
                    state="draft",
                    document=body,
                    created_at=now,
                    updated_at=now,
                    published_at=None,
                )
            )
        else:
            await conn.execute(
                update(versions)
                .where(
                    versions.c.workspace_id == workspace,
                    versions.c.journey_id == journey_id,
                    versions.c.version == number,
                    versions.c.state == "draft",
                )
                .values(document=body, updated_at=now)
            )
        await self._touch(conn, workspace, journey_id, now)

    async def _touch(
        self,
        conn: AsyncConnection,
        workspace: str,
        journey_id: str,
        now: datetime,
        *,
        status: JourneyStatus | None = None,
        current_version: int | None = None,
    ) -> None:
        values: dict[str, Any] = {"updated_at": now}
        if status is not None:
            # Every change the catalog sees moves the marker DatabaseCatalogs watches.
            values["status"] = status
            values["revision"] = definitions.c.revision + 1
        if current_version is not None:
            values["current_version"] = current_version
        await conn.execute(
            update(definitions)
            .where(definitions.c.workspace_id == workspace, definitions.c.journey_id == journey_id)
            .values(**values)
        )

    async def _load(
        self,
        conn: AsyncConnection,
        workspace: str,
        journey_id: str | None,
        *,
        lock: bool = False,
    ) -> list[DefinitionRow]:
        d, v = definitions, versions
        query = select(d).where(d.c.workspace_id == workspace).order_by(d.c.journey_id)
        if journey_id is not None:
            query = query.where(d.c.journey_id == journey_id)
        if lock:
            query = query.with_for_update()
        heads = (await conn.execute(query)).all()
        if not heads:
            return []
        version_query = (
            select(v).where(v.c.workspace_id == workspace).order_by(v.c.journey_id, v.c.version)
        )
        if journey_id is not None:
            version_query = version_query.where(v.c.journey_id == journey_id)
        by_journey: dict[str, list[VersionRow]] = {}
        for r in await conn.execute(version_query):
            by_journey.setdefault(r.journey_id, []).append(
                VersionRow(
                    version=r.version,
                    state=r.state,
                    document=dict(r.document),
                    created_at=r.created_at,
                    updated_at=r.updated_at,
                    published_at=r.published_at,
                )
            )
        return [
            DefinitionRow(
                journey_id=h.journey_id,
                status=h.status,
                current_version=h.current_version,
                created_at=h.created_at,
                updated_at=h.updated_at,
                versions=by_journey.get(h.journey_id, []),
            )
            for h in heads
        ]
