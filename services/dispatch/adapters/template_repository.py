"""Templates per workspace: the versions saved over HTTP (``dispatch_templates``), and the
renderer the dispatcher calls, which picks the version in force and draws discount codes.

- :class:`SavedTemplates` owns every query on ``dispatch_templates`` (bound to a session, like the
  other repositories of the unit of work).
- :class:`TemplateRenderer` renders a message: the workspace's latest saved version of the
  template for that channel, else the file in templates/ (version 0).

Which version is the latest is cached per workspace for ``refresh_seconds`` (one small GROUP BY
query per workspace and interval), not looked up per message: thousands of messages cost no query
for it, a save reaches every dispatch process within the interval, and
:meth:`TemplateRenderer.forget` makes it immediate in the process that saved (the HTTP route calls
it). A TTL rather than one query per batch: the dispatcher renders one message at a time, and a
batch spans many workspaces, most of which saved nothing since the last one. A message whose
template would not be found at all re-reads its workspace's versions first, so a template saved a
moment ago elsewhere never fails a send. The interval is measured on the ``now`` each render is
given (the dispatcher's clock), so tests move it without sleeping.

Saving is serialised per template: :meth:`SavedTemplates.latest_for_update` takes a
transaction-scoped lock on (workspace, template) before it reads the latest version (on
PostgreSQL an advisory lock, as the template may have no row yet to lock; SQLite's writers take
turns already, ``BEGIN IMMEDIATE``). Comparing with the latest and numbering the next version then
see the same latest, so two identical saves at one instant make one version, and different ones
each get the next number instead of a conflict.

A version never changes once saved, so parsed templates are cached by (workspace, id, version)
without expiry, in a bounded LRU; file templates are parsed once per process by
:class:`~services.dispatch.adapters.templates.TemplateStore`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatch.adapters.codes import DiscountCodes
from services.dispatch.adapters.tables import templates as templates_table
from services.dispatch.adapters.templates import CompiledTemplate, TemplateStore, compile_template
from services.dispatch.domain.messages import Rendered
from services.dispatch.domain.template_errors import TemplateNotFound
from services.dispatch.domain.templates import PARTS, Channel, is_template_id
from services.dispatch.errors import TemplateError

_SAVE_LOCK = 0x43544D50
"""The first key of the two-key advisory locks saves take on PostgreSQL ("CTMP"); the second
is a hash of workspace and template. Two-key locks never meet the one-key lock of migrations."""

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class SavedVersion:
    template_id: str
    version: int
    channel: Channel
    parts: dict[str, str]
    sample: dict[str, Any] | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class SavedSummary:
    """A saved template at a glance: its latest version and how many it has."""

    template_id: str
    channel: Channel
    version: int
    versions: int
    updated_at: datetime


class SavedTemplates:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def summaries(
        self, workspace_id: str, *, from_id: str | None = None, limit: int | None = None
    ) -> dict[str, SavedSummary]:
        """Saved templates of the workspace, by id: every one, or the first ``limit`` in id
        order whose id is ``from_id`` or after. A template keeps its channel (the routes refuse
        a change), so the channel of any version is the channel of all."""
        c = templates_table.c
        query = (
            select(
                c.template_id,
                func.max(c.channel).label("channel"),
                func.max(c.version).label("version"),
                func.count().label("versions"),
                func.max(c.created_at).label("updated_at"),
            )
            .where(c.workspace_id == workspace_id)
            .group_by(c.template_id)
            .order_by(c.template_id)
        )
        if from_id is not None:
            query = query.where(c.template_id >= from_id)
        if limit is not None:
            query = query.limit(limit)
        rows = await self._session.execute(query)
        return {
            r.template_id: SavedSummary(
                template_id=r.template_id,
                channel=cast(Channel, r.channel),
                version=int(r.version),
                versions=int(r.versions),
                updated_at=r.updated_at,
            )
            for r in rows
        }

    async def get(
        self, workspace_id: str, template_id: str, version: int | None = None
    ) -> SavedVersion | None:
        """A version of a template, or its latest (``version`` None)."""
        c = templates_table.c
        query = select(templates_table).where(
            c.workspace_id == workspace_id, c.template_id == template_id
        )
        if version is None:
            query = query.order_by(c.version.desc()).limit(1)
        else:
            query = query.where(c.version == version)
        row = (await self._session.execute(query)).first()
        return _version(row._mapping) if row is not None else None

    async def latest_for_update(self, workspace_id: str, template_id: str) -> SavedVersion | None:
        """The latest version, read after taking the template's save lock: a save that reads
        it through this and then calls :meth:`add` in the same transaction is the only save
        of the template in flight until it commits or rolls back."""
        if self._session.get_bind().dialect.name == "postgresql":
            await self._session.execute(
                text("SELECT pg_advisory_xact_lock(:kind, hashtext(:key))"),
                {"kind": _SAVE_LOCK, "key": f"{workspace_id}\x1f{template_id}"},
            )
        return await self.get(workspace_id, template_id)

    async def versions(self, workspace_id: str, template_id: str) -> list[tuple[int, datetime]]:
        """(version, created_at) of every version, oldest first."""
        c = templates_table.c
        rows = await self._session.execute(
            select(c.version, c.created_at)
            .where(c.workspace_id == workspace_id, c.template_id == template_id)
            .order_by(c.version)
        )
        return [(r.version, r.created_at) for r in rows]

    async def add(
        self,
        workspace_id: str,
        template_id: str,
        *,
        channel: Channel,
        parts: Mapping[str, str],
        sample: dict[str, Any] | None,
        now: datetime,
    ) -> SavedVersion:
        """Save the next version (after :meth:`latest_for_update`, which keeps other saves of
        the template out). A writer that did not take the lock and raced for the same number
        fails on the primary key (IntegrityError): the caller tries again in a new
        transaction."""
        c = templates_table.c
        latest = await self._session.execute(
            select(func.max(c.version)).where(
                c.workspace_id == workspace_id, c.template_id == template_id
            )
        )
        version = (latest.scalar_one_or_none() or 0) + 1
        saved = SavedVersion(template_id, version, channel, dict(parts), sample, now)
        await self._session.execute(
            insert(templates_table).values(
                workspace_id=workspace_id,
                template_id=template_id,
                version=version,
                channel=channel,
                parts=saved.parts,
                sample=sample,
                created_at=now,
            )
        )
        return saved

    async def latest_versions(self, workspace_id: str) -> dict[str, tuple[int, Channel]]:
        """Template id → (latest version, channel): what the renderer's cache holds."""
        return {
            s.template_id: (s.version, s.channel)
            for s in (await self.summaries(workspace_id)).values()
        }


def _version(row: Mapping[Any, Any]) -> SavedVersion:
    return SavedVersion(
        template_id=row["template_id"],
        version=row["version"],
        channel=cast(Channel, row["channel"]),
        parts={k: v for k, v in row["parts"].items() if isinstance(v, str)},
        sample=row["sample"],
        created_at=row["created_at"],
    )


class _Lru(Generic[K, V]):
    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    def pop(self, key: K) -> None:
        self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)


class TemplateRenderer:
    """What the dispatcher renders with: workspace versions first, files as the fallback, and the
    message's discount codes drawn in the caller's transaction."""

    def __init__(
        self,
        files: TemplateStore,
        *,
        refresh_seconds: float = 5.0,
        cache_size: int = 1024,
        max_workspaces: int = 10_000,
    ) -> None:
        self._files = files
        self._refresh = timedelta(seconds=refresh_seconds)
        self._latest: _Lru[str, tuple[datetime, dict[str, tuple[int, Channel]]]] = _Lru(
            max_workspaces
        )
        self._parsed: _Lru[tuple[str, str, int], CompiledTemplate] = _Lru(cache_size)

    def forget(self, workspace_id: str) -> None:
        """Read the workspace's versions again at its next message (it just saved one)."""
        self._latest.pop(workspace_id)

    async def template(
        self,
        session: AsyncSession,
        *,
        workspace_id: str,
        template_id: str,
        channel: str,
        now: datetime,
    ) -> CompiledTemplate:
        """The template in force for a message: TemplateNotFound when there is none."""
        if channel not in PARTS:
            raise TemplateNotFound(template_id, channel, detail=": unknown channel")
        wanted: Channel = channel
        if not is_template_id(template_id):
            raise TemplateNotFound(template_id, channel)
        versions, fresh = await self._versions(session, workspace_id, now)
        latest = versions.get(template_id)
        if latest is None and not fresh and self._files.load(template_id, wanted) is None:
            # Maybe saved since the cache was filled (in another process): a message about to
            # fail is worth one more query.
            versions, _ = await self._versions(session, workspace_id, now, force=True)
            latest = versions.get(template_id)
        if latest is not None and latest[1] == wanted:
            return await self._saved(session, workspace_id, template_id, latest)
        from_file = self._files.load(template_id, wanted)
        if from_file is not None:
            return from_file
        detail = f": it is saved as an {latest[1]} template" if latest is not None else ""
        raise TemplateNotFound(template_id, channel, detail=detail)

    async def render(
        self,
        session: AsyncSession,
        *,
        workspace_id: str,
        template_id: str,
        channel: str,
        variables: dict[str, Any],
        message_id: str,
        now: datetime,
    ) -> Rendered:
        """Render a message. Its codes (``codes.<pool>``) are drawn in ``session``'s transaction:
        the caller's commit keeps them, its rollback gives them back; a render that fails gives
        back those this call drew. Raises TemplateError (see domain/template_errors.py)."""
        template = await self.template(
            session, workspace_id=workspace_id, template_id=template_id, channel=channel, now=now
        )
        if not template.pools:
            return template.render(variables)
        codes = DiscountCodes(session)
        claimed = await codes.claim(workspace_id, template.pools, message_id=message_id, now=now)
        try:
            return template.render({**variables, "codes": claimed.codes})
        except TemplateError:
            await codes.release(workspace_id, claimed.new, message_id=message_id)
            raise

    async def _versions(
        self, session: AsyncSession, workspace_id: str, now: datetime, *, force: bool = False
    ) -> tuple[dict[str, tuple[int, Channel]], bool]:
        """The workspace's latest versions, and whether they were read just now."""
        cached = self._latest.get(workspace_id)
        if cached is not None and not force:
            loaded_at, latest = cached
            if loaded_at <= now < loaded_at + self._refresh:
                return latest, False
        latest = await SavedTemplates(session).latest_versions(workspace_id)
        self._latest.put(workspace_id, (now, latest))
        return latest, True

    async def _saved(
        self,
        session: AsyncSession,
        workspace_id: str,
        template_id: str,
        latest: tuple[int, Channel],
    ) -> CompiledTemplate:
        version, channel = latest
        key = (workspace_id, template_id, version)
        parsed = self._parsed.get(key)
        if parsed is None:
            saved = await SavedTemplates(session).get(workspace_id, template_id, version)
            if saved is None:  # removed behind the cache's back: read the versions again
                self.forget(workspace_id)
                raise TemplateNotFound(template_id, channel, detail=f": version {version} is gone")
            parsed = compile_template(template_id, saved.channel, saved.parts, version=version)
            self._parsed.put(key, parsed)
        return parsed
