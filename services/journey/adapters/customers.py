"""The customer API's queries: find a customer (through identity resolution), read everything the
journey service holds on them, and erase them.

- ``resolve``: an id recorded in ``journey_identities`` as merged into another customer stands for
  that customer; the customer's own aliases come with it.
- ``recent_activity`` / ``export_rows``: the journey rows of a customer (and their aliases).
- ``dispatch_rows``: dispatch's rows on the customer, only when dispatch's tables live in the same
  database (the embedded deployment); a separate dispatch database is not reachable from here.
- ``erase``: delete the customer's rows from every journey table in the caller's transaction,
  log the erasure in ``journey_erasures`` with counts only, and write the erasure request to the
  outbox for the other services.

Kept on purpose: ``journey_processed_events`` (event ids, no personal data: dropping them would
let a redelivered event rebuild the customer) and ``journey_step_counts`` (counters per step).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, delete, insert, inspect, or_, select, tuple_, update
from sqlalchemy.engine import Connection, CursorResult, Row, RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from services.journey.adapters.tables import (
    activity,
    backfills,
    customers,
    erasures,
    identities,
    instances,
    orders,
    outbox,
    segment_members,
    timers,
)
from shared.bus.ports import OutgoingRecord
from shared.contracts.erasure import ErasureRequest
from shared.contracts.topics import ERASURES
from shared.outbox import add_to_outbox

MAX_HOPS = 16
"""Alias links followed at most (a chain longer than this is cut; a cycle is stopped)."""
MAX_ALIASES = 1000
"""Aliases gathered at most per customer."""
_CHUNK = 500  # ids per IN list: well inside SQLite's and PostgreSQL's bound-parameter limits

JOURNEY_TABLES: tuple[Table, ...] = (timers, instances, activity, orders, segment_members)
"""Tables whose rows belong to one customer through ``customer_id`` (besides the customer row
and identities)."""


@dataclass(frozen=True, slots=True)
class Subject:
    """A customer and the ids merged into them."""

    customer_id: str
    aliases: tuple[str, ...] = ()

    @property
    def ids(self) -> list[str]:
        return [self.customer_id, *self.aliases]


# ── Finding ───────────────────────────────────────────────────────────────────────────────────


async def resolve(session: AsyncSession, workspace: str, customer_id: str) -> Subject:
    """The customer ``customer_id`` stands for: itself, or the customer it was merged into
    (followed through merges of merges), with every alias merged into that customer."""
    i = identities
    current, seen = customer_id, {customer_id}
    for _ in range(MAX_HOPS):
        target = (
            await session.execute(
                select(i.c.customer_id).where(i.c.workspace_id == workspace, i.c.alias == current)
            )
        ).scalar_one_or_none()
        if target is None or target in seen:
            break
        seen.add(target)
        current = target
    return Subject(current, await _aliases(session, workspace, current))


async def _aliases(session: AsyncSession, workspace: str, root: str) -> tuple[str, ...]:
    i = identities
    known, frontier = {root}, [root]
    found: list[str] = []
    while frontier and len(found) < MAX_ALIASES:
        rows = await session.execute(
            select(i.c.alias)
            .where(i.c.workspace_id == workspace, i.c.customer_id.in_(frontier))
            .order_by(i.c.alias)
        )
        frontier = [r.alias for r in rows if r.alias not in known]
        known.update(frontier)
        found.extend(frontier)
    return tuple(sorted(found[:MAX_ALIASES]))


async def exists(session: AsyncSession, workspace: str, ids: Sequence[str]) -> bool:
    """Whether any of these ids has a customer row."""
    c = customers
    row = await session.execute(
        select(c.c.customer_id).where(c.c.workspace_id == workspace, c.c.customer_id.in_(ids))
    )
    return row.first() is not None


# ── Reading ───────────────────────────────────────────────────────────────────────────────────


async def recent_activity(
    session: AsyncSession, workspace: str, customer_id: str, *, limit: int
) -> list[Row[Any]]:
    """The customer's newest journey activity records (index on workspace, customer, at)."""
    a = activity
    rows = await session.execute(
        select(a)
        .where(a.c.workspace_id == workspace, a.c.customer_id == customer_id)
        .order_by(a.c.at.desc(), a.c.id.desc())
        .limit(limit)
    )
    return list(rows)


async def export_rows(
    session: AsyncSession, workspace: str, subject: Subject
) -> dict[str, list[dict[str, Any]]]:
    """Every journey row of the customer and their aliases, by table name, oldest first where
    rows have a time."""
    ids = subject.ids
    order: Mapping[Table, Sequence[Any]] = {
        customers: [customers.c.customer_id],
        instances: [instances.c.entered_at, instances.c.run_id],
        activity: [activity.c.at, activity.c.id],
        timers: [timers.c.due_at, timers.c.name],
        orders: [orders.c.placed_at, orders.c.order_id],
        segment_members: [segment_members.c.entered_at, segment_members.c.segment_id],
    }
    out: dict[str, list[dict[str, Any]]] = {}
    for table, ordering in order.items():
        rows = await session.execute(
            select(table)
            .where(table.c.workspace_id == workspace, table.c.customer_id.in_(ids))
            .order_by(*ordering)
        )
        out[table.name] = [_plain(r._mapping) for r in rows]
    i = identities
    rows = await session.execute(
        select(i)
        .where(i.c.workspace_id == workspace, or_(i.c.alias.in_(ids), i.c.customer_id.in_(ids)))
        .order_by(i.c.merged_at, i.c.alias)
    )
    out[identities.name] = [_plain(r._mapping) for r in rows]
    return out


def _has_tables(connection: Connection, names: Iterable[str]) -> bool:
    inspector = inspect(connection)
    return all(inspector.has_table(name) for name in names)


async def dispatch_rows(
    session: AsyncSession, workspace: str, subject: Subject
) -> dict[str, list[dict[str, Any]]] | None:
    """Dispatch's rows on the customer when its tables are in this database (None when not):
    messages, what the local sink recorded of them, suppressions, discount codes drawn for
    them. Read-only and only here: dispatch's data is otherwise its own."""
    # Imported here: the journey service reads dispatch's tables only for this export.
    from services.dispatch.adapters.tables import discount_codes, messages, sink, suppressions

    names = [t.name for t in (messages, sink, suppressions, discount_codes)]
    connection = await session.connection()
    if not await connection.run_sync(_has_tables, names):
        return None
    ids = subject.ids
    m = messages
    sent = [
        _plain(r._mapping)
        for r in await session.execute(
            select(m)
            .where(m.c.workspace_id == workspace, m.c.customer_id.in_(ids))
            .order_by(m.c.created_at, m.c.message_id)
        )
    ]
    message_ids = [str(r["message_id"]) for r in sent]
    s, d, k = sink, discount_codes, suppressions
    delivered = [
        _plain(r._mapping)
        for start in range(0, len(message_ids), _CHUNK)
        for r in await session.execute(
            select(s)
            .where(
                s.c.workspace_id == workspace,
                s.c.message_id.in_(message_ids[start : start + _CHUNK]),
            )
            .order_by(s.c.id)
        )
    ]
    codes = [
        _plain(r._mapping)
        for start in range(0, len(message_ids), _CHUNK)
        for r in await session.execute(
            select(d)
            .where(
                d.c.workspace_id == workspace,
                d.c.message_id.in_(message_ids[start : start + _CHUNK]),
            )
            .order_by(d.c.pool, d.c.code)
        )
    ]
    suppressed = [
        _plain(r._mapping)
        for r in await session.execute(
            select(k)
            .where(k.c.workspace_id == workspace, k.c.customer_id.in_(ids))
            .order_by(k.c.channel, k.c.address)
        )
    ]
    return {
        messages.name: sent,
        sink.name: delivered,
        suppressions.name: suppressed,
        discount_codes.name: codes,
    }


def _plain(row: RowMapping) -> dict[str, Any]:
    return dict(row)


# ── Erasing ───────────────────────────────────────────────────────────────────────────────────


async def erase(session: AsyncSession, request: ErasureRequest) -> dict[str, int]:
    """Erase the request's customer and aliases from the journey service in the session's
    transaction (the caller commits): their rows go from every table, which also ends their
    runs and timers; pending outbox records about them are dropped (so no message asked for
    before the erasure leaves afterwards); backfill cursors resting on them move to the customer
    before. Then the erasure is logged with counts only and its request written to the outbox.
    Returns the rows removed per table."""
    workspace, ids = request.workspace_id, request.subjects
    c = customers
    # The worker takes the customer's row lock before it changes anything of theirs: taking it
    # first makes an event in flight either finish before the erasure or start after it.
    await session.execute(
        select(c.c.customer_id)
        .where(c.c.workspace_id == workspace, c.c.customer_id.in_(ids))
        .order_by(c.c.customer_id)
        .with_for_update()
    )
    removed: dict[str, int] = {}
    for table in JOURNEY_TABLES:
        removed[table.name] = await _count(
            session,
            delete(table).where(table.c.workspace_id == workspace, table.c.customer_id.in_(ids)),
        )
    i = identities
    removed[i.name] = await _count(
        session,
        delete(i).where(
            i.c.workspace_id == workspace, or_(i.c.alias.in_(ids), i.c.customer_id.in_(ids))
        ),
    )
    removed[c.name] = await _count(
        session, delete(c).where(c.c.workspace_id == workspace, c.c.customer_id.in_(ids))
    )
    o = outbox
    removed[o.name] = await _count(
        session,
        delete(o).where(
            o.c.key.in_([f"{workspace}:{subject}" for subject in ids]), o.c.topic != ERASURES
        ),
    )
    removed[backfills.name] = await _move_cursors(session, workspace, ids)
    await session.execute(
        insert(erasures).values(
            erasure_id=request.erasure_id,
            workspace_id=workspace,
            requested_at=request.requested_at,
            removed=removed,
        )
    )
    await add_to_outbox(
        session,
        outbox,
        [
            OutgoingRecord(
                topic=ERASURES,
                key=request.key,
                value=request.to_json(),
                headers=request.headers(),
            )
        ],
    )
    return removed


async def _move_cursors(session: AsyncSession, workspace: str, ids: Sequence[str]) -> int:
    """A backfill's cursor names the last customer it did, and keeps it once finished: move
    each one resting on an erased customer to the customer before it in the backfill's order
    (nothing in between is skipped: the erased one is gone). Returns how many moved."""
    b, c = backfills, customers
    rows = (
        await session.execute(
            select(b).where(b.c.after_workspace == workspace, b.c.after_customer.in_(ids))
        )
    ).all()
    for row in rows:
        query = select(c.c.workspace_id, c.c.customer_id).where(
            tuple_(c.c.workspace_id, c.c.customer_id) < tuple_(workspace, row.after_customer)
        )
        if row.scope:  # a workspace's own journey: its customers only
            query = query.where(c.c.workspace_id == row.scope)
        before = (
            await session.execute(
                query.order_by(c.c.workspace_id.desc(), c.c.customer_id.desc()).limit(1)
            )
        ).first()
        await session.execute(
            update(b)
            .where(
                b.c.scope == row.scope,
                b.c.journey_id == row.journey_id,
                b.c.version == row.version,
            )
            .values(
                after_workspace=before.workspace_id if before is not None else None,
                after_customer=before.customer_id if before is not None else None,
            )
        )
    return len(rows)


async def _count(session: AsyncSession, statement: Any) -> int:
    result = cast(CursorResult[Any], await session.execute(statement))
    return int(result.rowcount or 0)
