"""Repositories of the journey service: every query it makes lives here, batch-shaped."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    String,
    Text,
    and_,
    any_,
    bindparam,
    cast,
    delete,
    func,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from services.journey.adapters.state_cache import StateCache, new_stamp
from services.journey.adapters.tables import (
    activity,
    backfills,
    customers,
    identities,
    instances,
    intelligence_settings,
    orders,
    processed_events,
    segment_members,
    step_counts,
    timers,
)
from services.journey.domain.customer import INTEL_TIMER, Activity, CustomerState, jsonable
from services.journey.domain.engine import Instance
from services.journey.domain.intelligence import Facts, OrderRecord
from shared.db import bulk
from shared.db.bulk import OnConflict
from shared.db.engine import loads_json_within_64_bits
from shared.db.upsert import insert_for


def one_of(session: AsyncSession, column: Any, values: list[str]) -> Any:
    """``column IN values``. On PostgreSQL as ``column = ANY(array)``: one parameter, so the
    prepared statement's plan uses the primary key; ``IN ($1 … $500)`` was planned as a filter
    over the whole workspace (86 ms instead of a few at 10,000 rows)."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, values, type_=ARRAY(String)))
    return column.in_(values)


def by_workspace(keys: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Group (workspace, id) pairs. Queries then read ``workspace_id = w AND id IN (...)``, which
    PostgreSQL answers from the primary key; a row-value IN list makes it scan the workspace."""
    groups: dict[str, set[str]] = {}
    for workspace, item in keys:
        groups.setdefault(workspace, set()).add(item)
    return {workspace: sorted(items) for workspace, items in groups.items()}


class ProcessedEvents:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def seen(self, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        t = processed_events
        found: set[tuple[str, str]] = set()
        for workspace, ids in by_workspace(keys).items():
            rows = await self._session.execute(
                select(t.c.event_id).where(
                    t.c.workspace_id == workspace, one_of(self._session, t.c.event_id, ids)
                )
            )
            found.update((workspace, r.event_id) for r in rows)
        return found

    async def mark(self, keys: Iterable[tuple[str, str]], *, at: datetime) -> None:
        """Record event ids as processed."""
        rows = [{"workspace_id": w, "event_id": e, "processed_at": at} for w, e in keys]
        if not rows:
            return
        await bulk.insert_rows(self._session, processed_events, rows)


FACTS_JSON = ("profile", "lead", "segment_state", "insights", "timeline")
"""The facts' JSON columns, read as their text and decoded by ``load_facts_json``."""
_LOADED = tuple(
    cast(column, Text).label(column.name) if column.name in FACTS_JSON else column
    for column in customers.columns
)
"""What ``CustomerStates.load`` selects: every column, the facts' JSON ones as text."""


def load_facts_json(text: str | None) -> Any:
    """A facts column's JSON document (``Facts.to_json`` wrote it) as ``json.loads`` reads it,
    by ``loads_json_within_64_bits``: without ``loads_json``'s search for runs of 19 digits,
    which guards integers beyond 64 bits (orjson reads them as floats) and costs as much as
    the decoding, for every facts column of every customer loaded. ``Facts.to_json`` writes
    no such integer: its integers are counts (orders, a rule's events, sends since engaged),
    the rules' revision and RFM scores. A long run of digits in a facts text is inside a
    string (an order or event id) or a float, which both read alike."""
    return None if text is None else loads_json_within_64_bits(text)


def _iso(value: datetime) -> str:
    return value.isoformat()


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _upsert(session: AsyncSession, table: Any) -> Any:
    return insert_for(session.get_bind().dialect.name)(table)


_TIMER_MOVED = OnConflict(
    ("workspace_id", "customer_id", "name"), take=("due_at",), clear=("leased_until",)
)
"""A timer saved again moves to its new due time and is no longer leased."""
_ORDER_KNOWN = OnConflict(("workspace_id", "customer_id", "order_id"))
"""An order logged again stays as it was (a cancellation is marked apart)."""
_MEMBER_AGAIN = OnConflict(("workspace_id", "segment_id", "customer_id"), take=("entered_at",))


# Activity kinds worth a row: decisions someone will ask "why?" about. Everything else is
# counted per step only.
RECORDED_KINDS = frozenset({"skipped", "held", "exited", "goal"})


class StateCacheMismatch(AssertionError):
    """A state taken from the ``StateCache`` differs from its row (``StateCache.verify``)."""


class CustomerStates:
    """Load and save ``CustomerState``: the profile row, the tracked runs and the timers.

    Every save writes a new stamp on its rows. With a ``StateCache``, ``load`` takes the states
    the cache holds under the rows' current stamps and reads only the others, and ``saved``
    lists what ``save`` wrote, with its stamp, for the unit of work to hand to the cache once
    the transaction committed."""

    def __init__(self, session: AsyncSession, cache: StateCache | None = None) -> None:
        self._session = session
        self._cache = cache
        self.saved: list[tuple[int, list[CustomerState]]] = []

    async def load(
        self, keys: Iterable[tuple[str, str]], *, now: datetime, lock: bool
    ) -> dict[tuple[str, str], CustomerState]:
        """States of these customers; new customers are absent. ``lock`` takes the customers'
        rows FOR UPDATE (PostgreSQL), in key order so that two transactions never deadlock:
        an event and a timer of the same customer then run one after the other."""
        states: dict[tuple[str, str], CustomerState] = {}
        cache = self._cache
        for workspace, ids in sorted(by_workspace(keys).items()):
            if cache is None:
                await self._read(workspace, ids, now=now, lock=lock, states=states)
                continue
            c = customers
            query = (
                select(c.c.customer_id, c.c.stamp)
                .where(c.c.workspace_id == workspace, one_of(self._session, c.c.customer_id, ids))
                .order_by(c.c.customer_id)
            )
            if lock:
                query = query.with_for_update()
            unread: list[str] = []
            before = len(states)
            for r in await self._session.execute(query):
                state = cache.take((workspace, r.customer_id), r.stamp, now)
                if state is None:
                    unread.append(r.customer_id)
                else:
                    states[(workspace, r.customer_id)] = state
            cache.count(hits=len(states) - before, misses=len(unread))
            if cache.verify:
                await self._verify(
                    workspace, [i for i in ids if (workspace, i) in states], states, now
                )
            if unread:
                await self._read(workspace, unread, now=now, lock=False, states=states)
        return states

    async def _verify(
        self,
        workspace: str,
        ids: list[str],
        states: dict[tuple[str, str], CustomerState],
        now: datetime,
    ) -> None:
        """``StateCache.verify``: each state the cache gave against the state its row gives."""
        if not ids:
            return
        read: dict[tuple[str, str], CustomerState] = {}
        await self._read(workspace, ids, now=now, lock=False, states=read)
        for key, state in read.items():
            cached, stored = snapshot(states[key]), snapshot(state)
            if cached != stored:
                differ = {
                    k: (cached.get(k), stored[k]) for k in stored if cached.get(k) != stored[k]
                }
                raise StateCacheMismatch(f"{key}: the cached state differs in {differ}")

    async def _read(
        self,
        workspace: str,
        ids: list[str],
        *,
        now: datetime,
        lock: bool,
        states: dict[tuple[str, str], CustomerState],
    ) -> None:
        """Read these customers' rows, tracked runs and intelligence timer into ``states``."""
        c, i = customers, instances
        query = (
            select(*_LOADED)
            .where(c.c.workspace_id == workspace, one_of(self._session, c.c.customer_id, ids))
            .order_by(c.c.customer_id)
        )
        if lock:
            query = query.with_for_update()
        for r in await self._session.execute(query):
            states[(workspace, r.customer_id)] = CustomerState(
                workspace_id=workspace,
                customer_id=r.customer_id,
                traits=dict(r.traits),
                trait_times=dict(r.trait_times or ()),
                scores=dict(r.scores),
                first_seen_at=r.first_seen_at,
                last_seen_at=r.last_seen_at,
                entries={j: _when(at) for j, at in r.entries.items()},
                ledger=tuple((_when(at), channel) for at, channel in r.ledger),
                schedules={j: _when(at) for j, at in r.schedules.items()},
                facts=Facts.from_row(
                    profile=load_facts_json(r.profile),
                    lead=load_facts_json(r.lead),
                    segment_state=load_facts_json(r.segment_state),
                    insights=load_facts_json(r.insights),
                    timeline=load_facts_json(r.timeline),
                    stage=r.stage,
                    due=None,
                ),
                stored=True,
            )
        tracked = or_(
            i.c.status == "active",
            and_(i.c.goal_at.is_(None), i.c.goal_until >= now),
        )
        rows = await self._session.execute(
            select(i).where(
                i.c.workspace_id == workspace,
                one_of(self._session, i.c.customer_id, ids),
                tracked,
            )
        )
        for r in rows:
            state = states.get((workspace, r.customer_id))
            if state is not None:
                state.instances[r.run_id] = _instance(r)
        t = timers
        rows = await self._session.execute(
            select(t.c.customer_id, t.c.due_at).where(
                t.c.workspace_id == workspace,
                one_of(self._session, t.c.customer_id, ids),
                t.c.name == INTEL_TIMER,
            )
        )
        for r in rows:
            state = states.get((workspace, r.customer_id))
            if state is not None:
                state.facts.due = r.due_at

    async def keys_after(
        self, workspace: str | None, after: tuple[str, str] | None, limit: int
    ) -> list[tuple[str, str]]:
        """The next ``limit`` customers in key order after ``after`` (in one workspace, or in
        all of them): keyset paging, so a backfill never holds every customer in memory."""
        c = customers
        query = select(c.c.workspace_id, c.c.customer_id)
        if workspace is not None:
            query = query.where(c.c.workspace_id == workspace)
        if after is not None:
            query = query.where(tuple_(c.c.workspace_id, c.c.customer_id) > tuple_(*after))
        query = query.order_by(c.c.workspace_id, c.c.customer_id).limit(limit)
        return [(r.workspace_id, r.customer_id) for r in await self._session.execute(query)]

    async def save(
        self,
        states: Iterable[CustomerState],
        *,
        timers_before: dict[tuple[str, str], dict[str, datetime]],
        new_runs: Iterable[Instance],
        changed_runs: Iterable[Instance],
    ) -> None:
        """Write profiles, runs and the timers that changed: a few statements per batch."""
        new_profiles: list[dict[str, Any]] = []
        known_profiles: list[dict[str, Any]] = []
        timer_rows: list[dict[str, Any]] = []
        gone: list[dict[str, Any]] = []
        stamp = new_stamp()
        saved = list(states)
        for state in saved:
            row = profile_row(state)
            row["stamp"] = stamp
            if state.stored:
                known_profiles.append(row)
            else:
                new_profiles.append(row)
                state.stored = True
            key = (state.workspace_id, state.customer_id)
            before = timers_before.get(key, {})
            after = state.timers()
            for name, due in after.items():
                if before.get(name) != due:
                    timer_rows.append(
                        {
                            "workspace_id": state.workspace_id,
                            "customer_id": state.customer_id,
                            "name": name,
                            "due_at": due,
                            "leased_until": None,
                        }
                    )
            gone.extend(
                {"w": state.workspace_id, "c": state.customer_id, "n": name}
                for name in before
                if name not in after
            )
        session = self._session
        await bulk.update_rows(
            session, customers, known_profiles, keys=_KEYS, columns=_SAVED_COLUMNS
        )
        if new_profiles:
            await session.execute(
                insert(customers),
                [
                    {
                        "workspace_id": r.pop("w"),
                        "customer_id": r.pop("c"),
                        **r,
                    }
                    for r in new_profiles
                ],
            )
        await bulk.insert_rows(session, instances, [_instance_row(i) for i in new_runs])
        updates = [{**_instance_row(i), "w": i.workspace_id, "r": i.run_id} for i in changed_runs]
        await bulk.update_rows(session, instances, updates, keys=_RUN_KEYS, columns=_RUN_CHANGES)
        if gone:
            await session.execute(_DELETE_TIMER, gone)
        await bulk.insert_rows(session, timers, timer_rows, on_conflict=_TIMER_MOVED)
        if self._cache is not None:
            self.saved.append((stamp, saved))

    async def record_orders(self, recorded: Iterable[tuple[CustomerState, OrderRecord]]) -> None:
        """Append new orders to the order log and mark cancelled ones (the models' input)."""
        new: dict[tuple[str, str, str], dict[str, Any]] = {}
        cancelled: list[dict[str, Any]] = []
        for state, order in recorded:
            key = (state.workspace_id, state.customer_id, order.order_id)
            if order.cancelled:
                if key in new:
                    new[key]["cancelled"] = True
                else:
                    cancelled.append({"w": key[0], "c": key[1], "o": key[2]})
            else:
                new[key] = {
                    "workspace_id": key[0],
                    "customer_id": key[1],
                    "order_id": key[2],
                    "placed_at": order.placed_at,
                    "value": order.value,
                    "cancelled": False,
                }
        await bulk.insert_rows(self._session, orders, list(new.values()), on_conflict=_ORDER_KNOWN)
        if cancelled:
            await self._session.execute(_CANCEL_ORDER, cancelled)

    async def record_membership(
        self, states: Iterable[CustomerState], before: dict[tuple[str, str], set[str]]
    ) -> None:
        """Bring ``journey_segment_members`` in line with the states' segment membership
        (``before``: the members each state had when loaded)."""
        entered: list[dict[str, Any]] = []
        left: list[dict[str, Any]] = []
        for state in states:
            members = state.facts.segments.members
            was = before.get((state.workspace_id, state.customer_id), set())
            entered.extend(
                {
                    "workspace_id": state.workspace_id,
                    "segment_id": segment,
                    "customer_id": state.customer_id,
                    "entered_at": at,
                }
                for segment, at in members.items()
                if segment not in was
            )
            left.extend(
                {"w": state.workspace_id, "s": segment, "c": state.customer_id}
                for segment in was
                if segment not in members
            )
        if left:
            await self._session.execute(_LEAVE_SEGMENT, left)
        await bulk.insert_rows(self._session, segment_members, entered, on_conflict=_MEMBER_AGAIN)

    async def remove_merged(self, merged: Iterable[tuple[str, str, str]]) -> None:
        """After (workspace, source, target) merges: the source's row, timers and segment rows
        go; its runs, activity and orders now belong to the target (an order both had stays
        once)."""
        params = [{"w": w, "s": source, "t": target} for w, source, target in merged]
        if not params:
            return
        session = self._session
        for statement in (
            _DELETE_SHARED_ORDERS,
            _MOVE_ORDERS,
            _MOVE_RUNS,
            _MOVE_ACTIVITY,
            _DELETE_SOURCE_TIMERS,
            _DELETE_SOURCE_MEMBERS,
            _DELETE_SOURCE_CUSTOMER,
        ):
            await session.execute(statement, params)

    async def record(self, lines: Iterable[Activity]) -> None:
        """Append the activity worth keeping and bump the per-step counters."""
        rows: list[dict[str, Any]] = []
        counts: dict[tuple[str, str, int, str, str, str], int] = {}
        for a in lines:
            key = (a.workspace_id, a.journey_id, a.version, a.step or "", a.kind, a.reason or "")
            counts[key] = counts.get(key, 0) + 1
            if a.kind in RECORDED_KINDS:
                rows.append(
                    {
                        "workspace_id": a.workspace_id,
                        "customer_id": a.customer_id,
                        "journey_id": a.journey_id,
                        "version": a.version,
                        "run_id": a.run_id,
                        "step": a.step,
                        "kind": a.kind,
                        "reason": a.reason,
                        "detail": jsonable(dict(a.detail)),
                        "at": a.at,
                    }
                )
        await bulk.insert_rows(self._session, activity, rows)
        if counts:
            stmt = _upsert(self._session, step_counts)
            await self._session.execute(
                stmt.on_conflict_do_update(
                    index_elements=[
                        "workspace_id",
                        "journey_id",
                        "version",
                        "step",
                        "kind",
                        "reason",
                    ],
                    set_={"count": step_counts.c.count + stmt.excluded.count},
                ),
                [
                    {
                        "workspace_id": w,
                        "journey_id": j,
                        "version": v,
                        "step": s,
                        "kind": k,
                        "reason": r,
                        "count": n,
                    }
                    for (w, j, v, s, k, r), n in sorted(counts.items())
                ],
            )


class Identities:
    """Which subjects (anonymous ids, old customer ids) were merged into which customer."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def resolve(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """(workspace, subject) → the customer it was merged into, for the merged ones."""
        t = identities
        found: dict[tuple[str, str], str] = {}
        for workspace, subjects in by_workspace(keys).items():
            rows = await self._session.execute(
                select(t.c.alias, t.c.customer_id).where(
                    t.c.workspace_id == workspace, one_of(self._session, t.c.alias, subjects)
                )
            )
            found.update({(workspace, r.alias): r.customer_id for r in rows})
        return found

    async def record(self, merged: Iterable[tuple[str, str, str]], *, at: datetime) -> None:
        """Record (workspace, alias, customer) links; aliases that pointed at the alias now
        point at the customer, so a chain of merges resolves in one step."""
        rows = {(w, a): c for w, a, c in merged}
        if not rows:
            return
        await self._session.execute(
            _REPOINT_IDENTITY, [{"w": w, "a": a, "c": c} for (w, a), c in rows.items()]
        )
        stmt = _upsert(self._session, identities)
        await self._session.execute(
            stmt.on_conflict_do_update(
                index_elements=["workspace_id", "alias"],
                set_={
                    "customer_id": stmt.excluded.customer_id,
                    "merged_at": stmt.excluded.merged_at,
                },
            ),
            [
                {"workspace_id": w, "alias": a, "customer_id": c, "merged_at": at}
                for (w, a), c in rows.items()
            ],
        )


class Backfills:
    """Progress of computing schedules for customers already there when a dated journey came."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def unfinished(
        self, wanted: Iterable[tuple[str, str, int]]
    ) -> list[tuple[tuple[str, str, int], tuple[str, str] | None]]:
        """Of the (scope, journey id, version) wanted, those not finished, with the last
        customer done (None: not started)."""
        wanted = list(wanted)
        if not wanted:
            return []
        b = backfills
        rows = await self._session.execute(select(b))
        known = {(r.scope, r.journey_id, r.version): r for r in rows}
        out: list[tuple[tuple[str, str, int], tuple[str, str] | None]] = []
        for key in wanted:
            row = known.get(key)
            if row is None:
                out.append((key, None))
            elif row.finished_at is None:
                after = (
                    (row.after_workspace, row.after_customer)
                    if row.after_workspace is not None
                    else None
                )
                out.append((key, after))
        return out

    async def rule_revisions(self) -> list[tuple[str, int]]:
        """Each workspace whose intelligence rules were ever changed, with their revision."""
        s = intelligence_settings
        rows = await self._session.execute(
            select(s.c.workspace_id, s.c.revision).where(s.c.revision > 0)
        )
        return [(r.workspace_id, int(r.revision)) for r in rows]

    async def advance(
        self, key: tuple[str, str, int], after: tuple[str, str] | None, finished_at: datetime | None
    ) -> None:
        stmt = _upsert(self._session, backfills)
        values = {
            "after_workspace": after[0] if after else None,
            "after_customer": after[1] if after else None,
            "finished_at": finished_at,
        }
        await self._session.execute(
            stmt.values(
                scope=key[0], journey_id=key[1], version=key[2], **values
            ).on_conflict_do_update(index_elements=["scope", "journey_id", "version"], set_=values)
        )


class Timers:
    """The durable timers: due rows are leased in one short transaction, fired in another."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def lease_due(
        self, *, now: datetime, limit: int, lease: timedelta
    ) -> list[tuple[str, str, str, datetime]]:
        """Up to ``limit`` due timers not leased by another poller, oldest first, leased until
        ``now + lease``. On PostgreSQL rows another poller is leasing are skipped, not waited
        for; on SQLite the write lock serialises pollers."""
        t = timers
        query = (
            select(t.c.workspace_id, t.c.customer_id, t.c.name, t.c.due_at)
            .where(
                t.c.due_at <= now,
                or_(t.c.leased_until.is_(None), t.c.leased_until < now),
            )
            .order_by(t.c.due_at)
            .limit(limit)
        )
        if self._session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        due = [
            (r.workspace_id, r.customer_id, r.name, r.due_at)
            for r in await self._session.execute(query)
        ]
        until = now + lease
        await bulk.update_rows(
            self._session,
            timers,
            [{"w": w, "c": c, "n": n, "leased_until": until} for w, c, n, _ in due],
            keys=_TIMER_KEYS,
            columns=_LEASED,
        )
        return due

    async def count_due(self, *, now: datetime, cap: int = 1_000_000) -> int:
        """How many timers are due and not yet fired (counted up to ``cap``)."""
        inner = select(timers.c.due_at).where(timers.c.due_at <= now).limit(cap).subquery()
        return int(
            (await self._session.execute(select(func.count()).select_from(inner))).scalar_one()
        )

    async def next_due(self) -> datetime | None:
        due: datetime | None = (
            await self._session.execute(select(func.min(timers.c.due_at)))
        ).scalar_one()
        return due


def _instance(r: Any) -> Instance:
    return Instance(
        workspace_id=r.workspace_id,
        customer_id=r.customer_id,
        journey_id=r.journey_id,
        version=r.version,
        run_id=r.run_id,
        step=r.step,
        status=r.status,
        entered_at=r.entered_at,
        updated_at=r.updated_at,
        wake_at=r.wake_at,
        waiting=r.waiting,
        key=r.key,
        trigger=r.trigger,
        holdout=r.holdout,
        goal_until=r.goal_until,
        goal_at=r.goal_at,
        exit_reason=r.exit_reason,
        visits=r.visits,
    )


def _instance_row(i: Instance) -> dict[str, Any]:
    return {
        "workspace_id": i.workspace_id,
        "run_id": i.run_id,
        "customer_id": i.customer_id,
        "journey_id": i.journey_id,
        "version": i.version,
        "step": i.step,
        "status": i.status,
        "entered_at": i.entered_at,
        "updated_at": i.updated_at,
        "wake_at": i.wake_at,
        "waiting": i.waiting,
        "key": i.key,
        "trigger": jsonable(dict(i.trigger)),
        "holdout": i.holdout,
        "goal_until": i.goal_until,
        "goal_at": i.goal_at,
        "exit_reason": i.exit_reason,
        "visits": dict(i.visits),
    }


FACTS_COLUMNS = (
    "profile",
    "lead",
    "segment_state",
    "insights",
    "timeline",
    "stage",
    "lead_band",
    "order_count",
    "first_order_at",
    "last_order_at",
    "revenue",
)
"""The customer-intelligence columns of ``journey_customers``: what ``facts_columns`` fills."""


def facts_columns(facts: Facts) -> dict[str, Any]:
    """A customer's ``FACTS_COLUMNS``, as ``save`` writes them: the JSON columns and the
    aggregates kept beside them for queries (stage, band, orders, revenue)."""
    profile = facts.profile
    return {
        **facts.to_json(),
        "stage": facts.stage,
        "lead_band": facts.band,
        "order_count": profile.order_count,
        "first_order_at": profile.first_order_at,
        "last_order_at": profile.last_order_at,
        "revenue": float(profile.revenue),
    }


def profile_row(state: CustomerState) -> dict[str, Any]:
    """The row of a profile update or insert for ``state``: ``w``, ``c`` and every profile
    column (``save`` adds the stamp). ``first_seen_at`` is among them: an event older than the
    first one seen (an import, a merge with an older record) moves it earlier."""
    return {
        "w": state.workspace_id,
        "c": state.customer_id,
        "traits": state.traits,
        "trait_times": state.trait_times,
        "scores": state.scores,
        "first_seen_at": state.first_seen_at,
        "last_seen_at": state.last_seen_at,
        "entries": {j: _iso(at) for j, at in state.entries.items()},
        "ledger": [[_iso(at), channel] for at, channel in state.ledger],
        "schedules": {j: _iso(at) for j, at in state.schedules.items()},
        **facts_columns(state.facts),
    }


def snapshot(state: CustomerState) -> dict[str, Any]:
    """What a load gives of ``state``, as comparable values: its profile row, its tracked runs'
    rows and its intelligence timer."""
    row = profile_row(state)
    row["instances"] = {r: _instance_row(i) for r, i in sorted(state.instances.items())}
    row["due"] = state.facts.due
    return row


_PROFILE_COLUMNS = (
    "traits",
    "trait_times",
    "scores",
    "first_seen_at",
    "last_seen_at",
    "entries",
    "ledger",
    "schedules",
    *FACTS_COLUMNS,
)
_SAVED_COLUMNS = (*_PROFILE_COLUMNS, "stamp")
"""What ``save`` sets on a stored customer's row: the profile and a new stamp."""

_KEYS = {"w": "workspace_id", "c": "customer_id"}


_CANCEL_ORDER = (
    update(orders)
    .where(
        orders.c.workspace_id == bindparam("w"),
        orders.c.customer_id == bindparam("c"),
        orders.c.order_id == bindparam("o"),
    )
    .values(cancelled=True)
)

_LEAVE_SEGMENT = delete(segment_members).where(
    segment_members.c.workspace_id == bindparam("w"),
    segment_members.c.segment_id == bindparam("s"),
    segment_members.c.customer_id == bindparam("c"),
)

_RUN_CHANGES = (
    "step",
    "status",
    "updated_at",
    "wake_at",
    "waiting",
    "goal_at",
    "exit_reason",
    "visits",
    "trigger",
)
"""What a run changes after it started: the columns a saved run's update writes. ``trigger``
too: an event a keyed ``wait_for`` matches (the same cart, updated) becomes the run's trigger,
which later messages show."""
_RUN_KEYS = {"w": "workspace_id", "r": "run_id"}

_DELETE_TIMER = delete(timers).where(
    timers.c.workspace_id == bindparam("w"),
    timers.c.customer_id == bindparam("c"),
    timers.c.name == bindparam("n"),
)

_TIMER_KEYS = {"w": "workspace_id", "c": "customer_id", "n": "name"}
_LEASED = ("leased_until",)


def _of_source(table: Any) -> Any:
    return and_(table.c.workspace_id == bindparam("w"), table.c.customer_id == bindparam("s"))


_shared_order = (
    select(orders.c.order_id)
    .where(orders.c.workspace_id == bindparam("w"), orders.c.customer_id == bindparam("t"))
    .scalar_subquery()
)
_DELETE_SHARED_ORDERS = delete(orders).where(
    _of_source(orders), orders.c.order_id.in_(_shared_order)
)
_MOVE_ORDERS = update(orders).where(_of_source(orders)).values(customer_id=bindparam("t"))
_MOVE_RUNS = update(instances).where(_of_source(instances)).values(customer_id=bindparam("t"))
_MOVE_ACTIVITY = update(activity).where(_of_source(activity)).values(customer_id=bindparam("t"))
_DELETE_SOURCE_TIMERS = delete(timers).where(_of_source(timers))
_DELETE_SOURCE_MEMBERS = delete(segment_members).where(_of_source(segment_members))
_DELETE_SOURCE_CUSTOMER = delete(customers).where(_of_source(customers))
_REPOINT_IDENTITY = (
    update(identities)
    .where(identities.c.workspace_id == bindparam("w"), identities.c.customer_id == bindparam("a"))
    .values(customer_id=bindparam("c"))
)
