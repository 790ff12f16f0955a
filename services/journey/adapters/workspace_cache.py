"""Per-workspace values the journey worker reads on every batch (policies, intelligence rules),
kept in memory for a few seconds so that a batch never waits on a reload."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, TypeVar

from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger(__name__)

T = TypeVar("T")


class WorkspaceCache(Generic[T]):
    """Each workspace's value, loaded by ``load`` (for the workspaces whose value expired) and
    kept ``refresh_seconds``. When the database is unreachable the last known values stay in
    force; a workspace never loaded makes the error propagate."""

    def __init__(
        self,
        load: Callable[[list[str]], Awaitable[dict[str, T]]],
        *,
        what: str,
        refresh_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._what = what
        self._refresh = refresh_seconds
        self._monotonic = monotonic
        self._cache: dict[str, tuple[float, T]] = {}

    async def get(self, workspaces: Iterable[str]) -> dict[str, T]:
        wanted = set(workspaces)
        now = self._monotonic()
        stale = sorted(w for w in wanted if (c := self._cache.get(w)) is None or c[0] <= now)
        if stale:
            try:
                loaded = await self._load(stale)
            except (SQLAlchemyError, OSError):
                if any(w not in self._cache for w in stale):
                    raise
                log.warning("%s refresh failed; keeping the last", self._what, exc_info=True)
            else:
                expires = now + self._refresh
                for w in stale:
                    self._cache[w] = (expires, loaded[w])
        return {w: self._cache[w][1] for w in wanted}

    def forget(self, workspace_id: str) -> None:
        self._cache.pop(workspace_id, None)
