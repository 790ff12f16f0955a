"""Single-use discount codes: pools of codes a workspace uploads, each code drawn by one message.

A message draws its codes in the transaction that renders it, so a rolled-back send gives them
back. The same message rendered again (a retry, a redelivery) finds the codes it already holds
before drawing new ones: a customer never sees two codes for one mail.

Drawing is one statement per pool: an UPDATE of the row its subquery picked. On PostgreSQL the
subquery takes ``FOR UPDATE SKIP LOCKED``, so concurrent senders each lock a different free code
instead of queueing on the same one (and none can draw a code another has locked); SQLite has no
row locks and needs none, as its writers take turns (``BEGIN IMMEDIATE``). Codes are drawn in no
particular order: ordering by expiry would sort every free code of the pool for each message.
A code locked by a transaction still in flight is skipped, so a pool whose last free codes are all
being drawn at that instant reads as empty.

A code sits in one pool of its workspace (a unique index on ``(workspace_id, code)``): the same
code in two pools would go to two customers. An upload naming a code another pool holds is
refused whole (:class:`CodesInOtherPools`), whatever else it carried.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatch.adapters.tables import discount_codes as codes_table
from services.dispatch.domain.template_errors import NoCodeLeft
from services.dispatch.errors import DispatchError
from shared.db.upsert import insert_for

_CHUNK = 1000  # rows per INSERT: 6,000 parameters, well within SQLite's and asyncpg's limits


@dataclass(frozen=True, slots=True)
class Claimed:
    codes: dict[str, str]
    """Pool → the message's code."""
    new: tuple[tuple[str, str], ...]
    """(pool, code) drawn by this call, rather than found already held by the message."""


@dataclass(frozen=True, slots=True)
class PoolStats:
    pool: str
    total: int
    claimed: int
    free: int
    expired: int
    """Never claimed and past their expiry: they will never be drawn."""


@dataclass(frozen=True, slots=True)
class Added:
    added: int
    duplicates: list[str]
    """Codes given more than once in the request or already in the pool, in request order."""


class CodesInOtherPools(DispatchError):
    """Codes of an upload that another pool of the workspace already holds: nothing of the
    upload may be kept (the caller rolls back)."""

    def __init__(self, pool: str, taken: dict[str, str]) -> None:
        shown = ", ".join(f"{code!r} (in {held!r})" for code, held in list(taken.items())[:10])
        more = f" and {len(taken) - 10} more" if len(taken) > 10 else ""
        super().__init__(
            f"{len(taken)} code(s) already sit in another pool of this workspace, and a code "
            f"goes to one customer only: {shown}{more}; nothing was added to {pool!r}"
        )
        self.pool = pool
        self.taken = taken
        """Code → the pool that holds it, in request order."""


class DiscountCodes:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def claim(
        self, workspace_id: str, pools: Iterable[str], *, message_id: str, now: datetime
    ) -> Claimed:
        """A code from each pool for the message: the one it already holds, else a free,
        unexpired one. NoCodeLeft (and nothing drawn by this call kept) when a pool is empty."""
        wanted = sorted(set(pools))
        if not wanted:
            return Claimed({}, ())
        c = codes_table.c
        held = await self._session.execute(
            select(c.pool, c.code)
            .where(c.workspace_id == workspace_id, c.pool.in_(wanted), c.message_id == message_id)
            .order_by(c.pool, c.code)
        )
        found: dict[str, str] = {}
        for row in held:
            found.setdefault(row.pool, row.code)
        new: list[tuple[str, str]] = []
        for pool in wanted:
            if pool in found:
                continue
            code = await self._draw(workspace_id, pool, message_id=message_id, now=now)
            if code is None:
                await self.release(workspace_id, new, message_id=message_id)
                raise NoCodeLeft(pool)
            found[pool] = code
            new.append((pool, code))
        return Claimed(found, tuple(new))

    async def _draw(
        self, workspace_id: str, pool: str, *, message_id: str, now: datetime
    ) -> str | None:
        c = codes_table.c
        free = (
            select(c.code)
            .where(
                c.workspace_id == workspace_id,
                c.pool == pool,
                c.message_id.is_(None),
                or_(c.expires_at.is_(None), c.expires_at > now),
            )
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        result = await self._session.execute(
            update(codes_table)
            .where(
                c.workspace_id == workspace_id,
                c.pool == pool,
                c.code == free,
                c.message_id.is_(None),
            )
            .values(message_id=message_id, claimed_at=now)
            .returning(c.code)
        )
        code: str | None = result.scalar_one_or_none()
        return code

    async def release(
        self, workspace_id: str, drawn: Iterable[tuple[str, str]], *, message_id: str
    ) -> None:
        """Give codes back to their pools (a message that drew them and then failed to render)."""
        pairs = list(drawn)
        if not pairs:
            return
        c = codes_table.c
        await self._session.execute(
            update(codes_table)
            .where(
                c.workspace_id == workspace_id,
                c.message_id == message_id,
                or_(*(and_(c.pool == pool, c.code == code) for pool, code in pairs)),
            )
            .values(message_id=None, claimed_at=None)
        )

    async def add(
        self,
        workspace_id: str,
        pool: str,
        codes: Sequence[str],
        *,
        expires_at: datetime | None,
    ) -> Added:
        """Insert the codes the pool does not have yet; a code already there keeps its state
        (claimed or not, its expiry). CodesInOtherPools when another pool holds any of them:
        what this call inserted must then be rolled back by the caller."""
        unique = list(dict.fromkeys(codes))
        repeated = len(codes) != len(unique)
        insert = insert_for(self._session.get_bind().dialect.name)
        inserted: set[str] = set()
        for start in range(0, len(unique), _CHUNK):
            rows = [
                {
                    "workspace_id": workspace_id,
                    "pool": pool,
                    "code": code,
                    "message_id": None,
                    "claimed_at": None,
                    "expires_at": expires_at,
                }
                for code in unique[start : start + _CHUNK]
            ]
            result = await self._session.execute(
                insert(codes_table)
                .values(rows)
                .on_conflict_do_nothing()
                .returning(codes_table.c.code)
            )
            inserted.update(result.scalars())
        if len(inserted) != len(unique):
            taken = await self._held_elsewhere(
                workspace_id, pool, [code for code in unique if code not in inserted]
            )
            if taken:
                raise CodesInOtherPools(pool, taken)
        duplicates: list[str] = []
        if repeated or len(inserted) != len(unique):
            seen: set[str] = set()
            reported: set[str] = set()
            for code in codes:
                if (code in seen or code not in inserted) and code not in reported:
                    duplicates.append(code)
                    reported.add(code)
                seen.add(code)
        return Added(added=len(inserted), duplicates=duplicates)

    async def _held_elsewhere(
        self, workspace_id: str, pool: str, codes: Sequence[str]
    ) -> dict[str, str]:
        """Code → pool, for those of ``codes`` (not inserted: held already) another pool holds.
        Read after the insert, so a code another upload committed meanwhile is found too."""
        c = codes_table.c
        held: dict[str, str] = {}
        for start in range(0, len(codes), _CHUNK):
            rows = await self._session.execute(
                select(c.code, c.pool).where(
                    c.workspace_id == workspace_id,
                    c.code.in_(codes[start : start + _CHUNK]),
                    c.pool != pool,
                )
            )
            held.update((r.code, r.pool) for r in rows)
        return {code: held[code] for code in codes if code in held}

    async def stats(
        self, workspace_id: str, *, now: datetime, pool: str | None = None
    ) -> list[PoolStats]:
        """Counts per pool of the workspace (or of one pool), by pool name."""
        c = codes_table.c
        expired = and_(c.message_id.is_(None), c.expires_at.is_not(None), c.expires_at <= now)
        query = (
            select(
                c.pool,
                func.count().label("total"),
                func.count(c.message_id).label("claimed"),
                func.sum(case((expired, 1), else_=0)).label("expired"),
            )
            .where(c.workspace_id == workspace_id)
            .group_by(c.pool)
            .order_by(c.pool)
        )
        if pool is not None:
            query = query.where(c.pool == pool)
        rows = await self._session.execute(query)
        return [
            PoolStats(
                pool=r.pool,
                total=int(r.total),
                claimed=int(r.claimed),
                expired=int(r.expired or 0),
                free=int(r.total) - int(r.claimed) - int(r.expired or 0),
            )
            for r in rows
        ]
