"""A workspace's customer-intelligence rules as stored: ``journey_intelligence_settings``
(currency, exchange rates, lead-score rules, lifecycle thresholds) and ``journey_segments``
(the workspace's own segments, merged over the built-in ones).

``DatabaseIntel`` gives the worker each workspace's ``Intelligence``, cached for
``refresh_seconds``; a stored document that no longer validates (a rule written by an older
version) is logged and replaced by the default rather than stopping the worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.journey.adapters.tables import intelligence_settings, segments
from services.journey.domain import intelligence
from services.journey.domain.intelligence import Intelligence
from services.journey.domain.lifecycle import LifecycleRules
from services.journey.domain.scoring import ScoreRules
from services.journey.domain.segments import InvalidSegment, SegmentDefinition, parse_segment

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
        self._refresh = refresh_seconds
        self._monotonic = monotonic
        self._cache: dict[str, tuple[float, Intelligence]] = {}

    async def for_workspaces(self, workspaces: Iterable[str]) -> dict[str, Intelligence]:
        wanted = set(workspaces)
        now = self._monotonic()
        stale = [w for w in wanted if (c := self._cache.get(w)) is None or c[0] <= now]
        if stale:
            try:
                async with self._engine.connect() as conn:
                    rows, documents = await load(conn, stale)
            except (SQLAlchemyError, OSError):
                if any(w not in self._cache for w in stale):
                    raise
                log.warning("intelligence settings refresh failed; keeping the last", exc_info=True)
            else:
                expires = now + self._refresh
                for w in stale:
                    self._cache[w] = (
                        expires,
                        intelligence_of(w, rows.get(w), documents.get(w, ())),
                    )
        return {w: self._cache[w][1] for w in wanted}

    def forget(self, workspace_id: str) -> None:
        """Drop a workspace's cached rules (after a change over HTTP in this process)."""
        self._cache.pop(workspace_id, None)
