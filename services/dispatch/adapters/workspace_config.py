"""Per-workspace dispatch configuration: providers (``dispatch_providers``) and sending settings
(``dispatch_workspace_settings``), read through a short cache.

A workspace without a provider row for a channel uses the service's default (the settings:
``CICLO_EMAIL_PROVIDER``…; the local sink in development). A change over HTTP reaches every
dispatch process within ``ttl`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.dispatch.adapters.tables import providers, workspace_settings
from services.dispatch.domain.policy import DispatchPolicy
from services.dispatch.domain.providers import ProviderConfig, parse_config
from shared.db.upsert import insert_for

Role = Literal["primary", "fallback"]


@dataclass(frozen=True, slots=True)
class ProviderSetting:
    workspace_id: str | None  # None: the service default
    channel: str
    role: Role
    config: ProviderConfig
    rate_per_second: float | None = None
    concurrency: int | None = None
    updated_at: datetime | None = None

    @property
    def identity(self) -> tuple[Any, ...]:
        """What makes two settings the same provider client (so they share breaker and gate)."""
        return (self.workspace_id, self.channel, self.role, self.updated_at)

    def public(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "role": self.role,
            "config": self.config.public(),
            "rate_per_second": self.rate_per_second,
            "concurrency": self.concurrency,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "source": "default" if self.workspace_id is None else "workspace",
        }


@dataclass(frozen=True, slots=True)
class Route:
    primary: ProviderSetting
    fallback: ProviderSetting | None


class _Cache:
    def __init__(self, ttl: float, clock: Callable[[], float]) -> None:
        self._ttl = ttl
        self._clock = clock
        self._items: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> Any:
        hit = self._items.get(key)
        if hit is not None and self._clock() - hit[0] < self._ttl:
            return hit[1]
        return _MISS

    def put(self, key: Any, value: Any) -> None:
        if len(self._items) > 10_000:
            self._items.clear()
        self._items[key] = (self._clock(), value)

    def drop(self, key: Any) -> None:
        self._items.pop(key, None)


_MISS = object()


class WorkspaceConfig:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        defaults: dict[str, ProviderSetting],
        default_policy: DispatchPolicy,
        ttl: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._defaults = defaults
        self._default_policy = default_policy
        self._routes = _Cache(ttl, clock)
        self._policies = _Cache(ttl, clock)

    # --- providers

    async def route(self, workspace_id: str, channel: str) -> Route:
        cached = self._routes.get((workspace_id, channel))
        if cached is not _MISS:
            route: Route = cached
            return route
        rows = await self._provider_rows(workspace_id, channel)
        by_role = {r.role: r for r in rows}
        primary = by_role.get("primary") or self._defaults[channel]
        route = Route(primary=primary, fallback=by_role.get("fallback"))
        self._routes.put((workspace_id, channel), route)
        return route

    async def by_kind(self, workspace_id: str, kind: str) -> ProviderConfig | None:
        """The workspace's configuration of a provider kind (for its webhooks), else the default's
        when the default is of that kind."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(providers).where(
                    providers.c.workspace_id == workspace_id, providers.c.kind == kind
                )
            )
            found = [_setting(r._mapping) for r in rows]
        if found:
            return found[0].config
        for default in self._defaults.values():
            if default.config.kind == kind:
                return default.config
        return None

    async def providers(self, workspace_id: str) -> list[ProviderSetting]:
        rows = await self._provider_rows(workspace_id, None)
        configured = {(r.channel, r.role) for r in rows}
        defaults = [
            d for c, d in sorted(self._defaults.items()) if (c, "primary") not in configured
        ]
        return sorted([*rows, *defaults], key=lambda s: (s.channel, s.role != "primary"))

    async def provider(self, workspace_id: str, channel: str, role: Role) -> ProviderSetting | None:
        """The workspace's own provider of a channel and role, if it configured one."""
        rows = await self._provider_rows(workspace_id, channel)
        return next((r for r in rows if r.role == role), None)

    async def put_provider(
        self,
        workspace_id: str,
        channel: str,
        role: Role,
        config: ProviderConfig,
        *,
        rate_per_second: float | None,
        concurrency: int | None,
        now: datetime,
    ) -> ProviderSetting:
        row = {
            "workspace_id": workspace_id,
            "channel": channel,
            "role": role,
            "kind": config.kind,
            "config": config.model_dump(mode="json"),
            "rate_per_second": rate_per_second,
            "concurrency": concurrency,
            "updated_at": now,
        }
        async with self._engine.begin() as conn:
            insert = insert_for(conn.dialect.name)
            stmt = insert(providers).values(row)
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["workspace_id", "channel", "role"],
                    set_={k: stmt.excluded[k] for k in row if k not in ("workspace_id",)},
                )
            )
        self._routes.drop((workspace_id, channel))
        return _setting(row)

    async def delete_provider(self, workspace_id: str, channel: str, role: Role) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(providers).where(
                    providers.c.workspace_id == workspace_id,
                    providers.c.channel == channel,
                    providers.c.role == role,
                )
            )
        self._routes.drop((workspace_id, channel))
        return bool(result.rowcount)

    async def _provider_rows(self, workspace_id: str, channel: str | None) -> list[ProviderSetting]:
        where = [providers.c.workspace_id == workspace_id]
        if channel is not None:
            where.append(providers.c.channel == channel)
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(providers).where(*where))
            return [_setting(r._mapping) for r in rows]

    # --- sending settings

    async def policy(self, workspace_id: str) -> DispatchPolicy:
        cached = self._policies.get(workspace_id)
        if cached is not _MISS:
            policy: DispatchPolicy = cached
            return policy
        async with self._engine.connect() as conn:
            stored = (
                await conn.execute(
                    select(workspace_settings.c.settings).where(
                        workspace_settings.c.workspace_id == workspace_id
                    )
                )
            ).scalar_one_or_none()
        policy = self._merge(stored)
        self._policies.put(workspace_id, policy)
        return policy

    def _merge(self, stored: dict[str, Any] | None) -> DispatchPolicy:
        if not stored:
            return self._default_policy
        return DispatchPolicy.model_validate(
            {**self._default_policy.model_dump(mode="json"), **stored}
        )

    async def put_policy(
        self, workspace_id: str, values: dict[str, Any], *, now: datetime
    ) -> DispatchPolicy:
        """Store the fields given (validated by the caller); returns the effective policy."""
        policy = self._merge(values)
        row = {"workspace_id": workspace_id, "settings": values, "updated_at": now}
        async with self._engine.begin() as conn:
            insert = insert_for(conn.dialect.name)
            stmt = insert(workspace_settings).values(row)
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["workspace_id"],
                    set_={"settings": stmt.excluded.settings, "updated_at": now},
                )
            )
        self._policies.drop(workspace_id)
        return policy


def _setting(row: Any) -> ProviderSetting:
    return ProviderSetting(
        workspace_id=row["workspace_id"],
        channel=row["channel"],
        role=row["role"],
        config=parse_config(row["config"]),
        rate_per_second=row["rate_per_second"],
        concurrency=row["concurrency"],
        updated_at=row["updated_at"],
    )
