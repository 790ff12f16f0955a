"""RFM scores and purchase predictions, recomputed per workspace on a schedule and on demand.

``compute`` reads one workspace's customers in keyset pages into compact arrays and scores
them: RFM quintiles (``domain/rfm.py``) and, for the customers with at least one order, the
BG/NBD and Gamma-Gamma fits and per-customer predictions (``domain/predictions.py``).

- As of now, the inputs are the order aggregates of ``journey_customers`` (order count, first
  and last order, revenue net of refunds).
- As of an instant in the past, they are the order log ``journey_orders`` (orders placed by
  then and not cancelled: count, first, last, summed value), and the orders placed since then
  are the **holdout**: the report's ``quality.calibration`` compares what the fit predicts for
  that period with what the customers did.

``InsightScheduler`` runs every workspace that has customers once per interval: it claims the
workspace (a guarded update of ``journey_insight_runs.ran_at``, so that of several replicas
exactly one runs it), computes, stores each customer's ``insights`` through
``handle_insights`` in chunks (which decides segments on ``rfm.*`` / ``predictions.*`` again
and emits ``segment_entered`` / ``segment_exited``), and records the run and its fit report.

Customers without an order get ``rfm`` ``{"r": 0, "f": 0, "m": 0, "group": null,
"recency_days": null}`` and ``predictions`` ``{}``; they are written when their stored insights
say otherwise (never written, or they had orders that were since cancelled), not every run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from array import array
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final

import numpy as np
from prometheus_client import Counter, Histogram
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.journey.adapters.tables import customers, insight_runs, orders
from services.journey.domain import predictions, rfm
from services.journey.domain.customer import rfc3339
from services.journey.domain.intelligence import Intelligence
from services.journey.service_layer.handlers import handle_insights
from services.journey.service_layer.sources import Catalogs, IntelSource, Policies
from services.journey.service_layer.uow import JourneyUnitOfWork
from shared.clock import Clock
from shared.db.engine import session_factory
from shared.db.upsert import insert_for
from shared.tenancy.tables import workspaces

log = logging.getLogger(__name__)

SECONDS_PER_DAY: Final = 86_400.0
PAGE_SIZE: Final = 5_000
"""Customers read per query."""
CLV_HORIZON_DAYS: Final = 365.0
MONTHLY_DISCOUNT_RATE: Final = 0.01
NO_ORDER_RFM: Final[dict[str, Any]] = {
    "r": 0,
    "f": 0,
    "m": 0,
    "group": None,
    "recency_days": None,
}
"""The ``rfm`` of a customer without an order (what ``rfm.score_rfm`` gives them)."""

RUNS = Counter(
    "ciclo_journey_insight_runs_total",
    "Workspaces whose RFM scores and predictions were recomputed, by outcome",
    ["outcome"],
)
RUN_SECONDS = Histogram(
    "ciclo_journey_insight_run_seconds",
    "Time to recompute one workspace's RFM scores and predictions (read, fit, write)",
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
)


class InsightsError(Exception):
    """A workspace that cannot be fitted: unknown, or without a customer with an order."""


# ── Computing ─────────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class WorkspaceInsights:
    """One workspace's scores as of an instant; arrays aligned with ``customer_ids`` (the
    customers with at least one order, in id order)."""

    workspace_id: str
    as_of: datetime
    currency: str
    customer_ids: list[str]
    scores: rfm.RfmScores
    history: predictions.PurchaseHistory
    report: predictions.ModelReport | None
    """None when no customer has an order (nothing to fit)."""
    forecasts: predictions.CustomerPredictions | None
    profiles: int
    """Customers read, with or without orders (the order log's buyers as of a past instant)."""
    clear: list[str] = field(default_factory=list)
    """Customers without an order whose stored insights are not yet the no-order ones."""
    historical: bool = False
    """Computed from the order log as of a past instant: a report, never stored on customers."""

    @property
    def buyers(self) -> int:
        return len(self.customer_ids)

    def model_json(self) -> dict[str, Any] | None:
        return None if self.report is None else self.report.to_json()

    def groups(self) -> dict[str, int]:
        """Customers per RFM group (every group, 0 included)."""
        counts = np.bincount(self.scores.group[self.scores.group >= 0], minlength=len(rfm.GROUPS))
        return {name: int(n) for name, n in zip(rfm.GROUPS, counts.tolist(), strict=True)}

    def documents(
        self, start: int, stop: int, computed_at: datetime
    ) -> list[tuple[str, dict[str, Any]]]:
        """The ``insights`` of the buyers ``start:stop``: only these become Python objects."""
        at = rfc3339(computed_at)
        s = self.scores
        names = [None if g == rfm.NO_GROUP else rfm.GROUPS[g] for g in s.group[start:stop].tolist()]
        recency = s.recency_days[start:stop].tolist()
        r, f, m = (a[start:stop].tolist() for a in (s.r, s.f, s.m))
        fields: list[dict[str, Any]] = [{} for _ in range(stop - start)]
        if self.forecasts is not None and self.report is not None:
            p = self.forecasts
            part = predictions.CustomerPredictions(
                probability_alive=p.probability_alive[start:stop],
                purchases_30d=p.purchases_30d[start:stop],
                purchases_90d=p.purchases_90d[start:stop],
                expected_order_value=p.expected_order_value[start:stop],
                clv=p.clv[start:stop],
                clv_horizon_days=p.clv_horizon_days,
            )
            reliable = self.report.reliable
            fields = [{**row, "reliable": reliable} for row in part.fields()]
        return [
            (
                self.customer_ids[start + i],
                {
                    "rfm": {
                        "r": r[i],
                        "f": f[i],
                        "m": m[i],
                        "group": names[i],
                        "recency_days": None if math.isnan(recency[i]) else round(recency[i], 2),
                    },
                    "predictions": fields[i],
                    "computed_at": at,
                },
            )
            for i in range(stop - start)
        ]

    def chunks(
        self, size: int, computed_at: datetime
    ) -> Iterator[list[tuple[str, dict[str, Any]]]]:
        """Every customer's insights to store, ``size`` at a time: the buyers, then the
        customers without an order whose stored insights are out of date."""
        if self.historical:
            raise ValueError("insights as of a past instant are a report, not customer state")
        for start in range(0, self.buyers, size):
            yield self.documents(start, min(start + size, self.buyers), computed_at)
        at = rfc3339(computed_at)
        for start in range(0, len(self.clear), size):
            yield [
                (c, {"rfm": dict(NO_ORDER_RFM), "predictions": {}, "computed_at": at})
                for c in self.clear[start : start + size]
            ]


@dataclass(slots=True)
class _Columns:
    """Per-customer inputs as compact arrays while pages are read."""

    ids: list[str] = field(default_factory=list)
    count: array[float] = field(default_factory=lambda: array("d"))
    first: array[float] = field(default_factory=lambda: array("d"))
    last: array[float] = field(default_factory=lambda: array("d"))
    revenue: array[float] = field(default_factory=lambda: array("d"))
    holdout: array[float] = field(default_factory=lambda: array("d"))

    def add(self, customer: str, count: int, first: datetime, last: datetime, money: float) -> None:
        self.ids.append(customer)
        self.count.append(float(count))
        self.first.append(first.timestamp())
        self.last.append(last.timestamp())
        self.revenue.append(float(money or 0.0))


async def compute(
    engine: AsyncEngine,
    workspace_id: str,
    *,
    as_of: datetime,
    intel: Intelligence,
    now: datetime | None = None,
    page_size: int = PAGE_SIZE,
) -> WorkspaceInsights:
    """RFM scores, fits and predictions of a workspace's customers as of ``as_of``.

    With ``now`` later than ``as_of`` the inputs come from the order log as of ``as_of`` and
    the orders placed in ``(as_of, now]`` are the holdout of the fit report. Otherwise (the
    scheduled run) they are the customers' order aggregates, read as they are now.
    """
    if as_of.tzinfo is None or as_of.utcoffset() is None:
        raise ValueError(f"as_of must be timezone-aware, got {as_of.isoformat()}")
    if page_size < 1:
        raise ValueError("page_size must be ≥ 1")
    as_of = as_of.astimezone(UTC)
    historical = now is not None and now > as_of
    columns = _Columns()
    clear: list[str] = []
    async with engine.connect() as conn:
        if historical:
            assert now is not None
            profiles = await _read_orders(conn, workspace_id, as_of, now, page_size, columns)
        else:
            profiles = await _read_profiles(conn, workspace_id, page_size, columns, clear)
    end = as_of.timestamp()
    count = np.frombuffer(columns.count, dtype=np.float64)
    revenue = np.frombuffer(columns.revenue, dtype=np.float64)
    # An order stamped after the as-of instant (clock skew) counts as placed at it.
    last_ago = np.maximum(
        (end - np.frombuffer(columns.last, dtype=np.float64)) / SECONDS_PER_DAY, 0
    )
    first_ago = np.maximum(
        (end - np.frombuffer(columns.first, dtype=np.float64)) / SECONDS_PER_DAY, last_ago
    )
    scores = rfm.score_rfm(recency_days=last_ago, order_count=count, revenue=revenue)
    history = predictions.purchase_history(
        first_order_days_ago=first_ago,
        last_order_days_ago=last_ago,
        order_count=count,
        revenue=revenue,
    )
    report = forecasts = None
    if columns.ids:
        holdout = None
        if historical:
            assert now is not None
            holdout = predictions.Holdout(
                purchases=np.frombuffer(columns.holdout, dtype=np.float64).copy(),
                days=(now - as_of).total_seconds() / SECONDS_PER_DAY,
            )
        per_order = revenue[revenue > 0] / count[revenue > 0]
        fallback = float(per_order.mean()) if per_order.size else None
        report = predictions.fit_models(history, holdout=holdout, fallback_mean=fallback)
        forecasts = predictions.predict(
            report.bgnbd,
            report.gamma_gamma,
            history,
            clv_horizon_days=CLV_HORIZON_DAYS,
            monthly_discount_rate=MONTHLY_DISCOUNT_RATE,
        )
    return WorkspaceInsights(
        workspace_id=workspace_id,
        as_of=as_of,
        currency=intel.currency,
        customer_ids=columns.ids,
        scores=scores,
        history=history,
        report=report,
        forecasts=forecasts,
        profiles=profiles,
        clear=clear,
        historical=historical,
    )


async def _read_profiles(
    conn: AsyncConnection,
    workspace_id: str,
    page_size: int,
    columns: _Columns,
    clear: list[str],
) -> int:
    c = customers
    after: str | None = None
    seen = 0
    while True:
        query = (
            select(
                c.c.customer_id,
                c.c.order_count,
                c.c.first_order_at,
                c.c.last_order_at,
                c.c.revenue,
                c.c.insights,
            )
            .where(c.c.workspace_id == workspace_id)
            .order_by(c.c.customer_id)
            .limit(page_size)
        )
        if after is not None:
            query = query.where(c.c.customer_id > after)
        rows = (await conn.execute(query)).all()
        for row in rows:
            first, last = row.first_order_at, row.last_order_at
            if row.order_count > 0 and first is not None and last is not None:
                columns.add(row.customer_id, row.order_count, first, last, row.revenue)
            elif not _no_order_insights(row.insights):
                clear.append(row.customer_id)
        seen += len(rows)
        if len(rows) < page_size:
            return seen
        after = rows[-1].customer_id


def _no_order_insights(stored: Any) -> bool:
    return (
        isinstance(stored, dict)
        and stored.get("rfm") == NO_ORDER_RFM
        and not stored.get("predictions")
    )


async def _read_orders(
    conn: AsyncConnection,
    workspace_id: str,
    as_of: datetime,
    now: datetime,
    page_size: int,
    columns: _Columns,
) -> int:
    o = orders
    live = (o.c.workspace_id == workspace_id, o.c.cancelled.is_(False))
    after: str | None = None
    seen = 0
    while True:
        query = (
            select(
                o.c.customer_id,
                func.count().label("n"),
                func.min(o.c.placed_at).label("first"),
                func.max(o.c.placed_at).label("last"),
                func.sum(o.c.value).label("money"),
            )
            .where(*live, o.c.placed_at <= as_of)
            .group_by(o.c.customer_id)
            .order_by(o.c.customer_id)
            .limit(page_size)
        )
        if after is not None:
            query = query.where(o.c.customer_id > after)
        rows = (await conn.execute(query)).all()
        if rows:
            later = await conn.execute(
                select(o.c.customer_id, func.count().label("n"))
                .where(
                    *live,
                    o.c.placed_at > as_of,
                    o.c.placed_at <= now,
                    o.c.customer_id >= rows[0].customer_id,
                    o.c.customer_id <= rows[-1].customer_id,
                )
                .group_by(o.c.customer_id)
            )
            since = {r.customer_id: int(r.n) for r in later}
            for row in rows:
                columns.add(row.customer_id, int(row.n), row.first, row.last, row.money)
                columns.holdout.append(float(since.get(row.customer_id, 0)))
        seen += len(rows)
        if len(rows) < page_size:
            return seen
        after = rows[-1].customer_id


# ── On demand ─────────────────────────────────────────────────────────────────────────────────


def parse_as_of(value: str, *, now: datetime) -> datetime:
    """``--as-of``: a date (midnight UTC) or an RFC 3339 instant (UTC when it names no zone);
    never after ``now``."""
    text_value = value.strip()
    try:
        if len(text_value) == 10:
            when = datetime.combine(date.fromisoformat(text_value), time(), tzinfo=UTC)
        else:
            when = datetime.fromisoformat(text_value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{value!r} is not a date (YYYY-MM-DD) or an RFC 3339 instant (YYYY-MM-DDTHH:MM:SSZ)"
        ) from None
    if when.tzinfo is None or when.utcoffset() is None:
        when = when.replace(tzinfo=UTC)
    when = when.astimezone(UTC)
    if when > now:
        raise ValueError(f"{rfc3339(when)} is in the future (now is {rfc3339(now)})")
    return when


async def fit_report(
    engine: AsyncEngine,
    workspace_id: str,
    *,
    as_of: datetime | None,
    now: datetime,
    intel: Intelligence,
    page_size: int = PAGE_SIZE,
) -> dict[str, Any]:
    """What ``ciclo predict fit`` prints: ``{"workspace", "as_of", **ModelReport.to_json()}``.
    ``InsightsError`` for an unknown workspace or one without a customer with an order."""
    result = await compute(
        engine,
        workspace_id,
        as_of=now if as_of is None else as_of,
        intel=intel,
        now=now,
        page_size=page_size,
    )
    if result.report is None:
        await require_buyers(
            engine, workspace_id, as_of=result.as_of if result.historical else None
        )
        raise InsightsError(f"workspace {workspace_id!r} has no customer with an order")
    return {"workspace": workspace_id, "as_of": rfc3339(result.as_of), **result.report.to_json()}


async def require_buyers(
    engine: AsyncEngine, workspace_id: str, *, as_of: datetime | None = None
) -> None:
    """``InsightsError`` unless the workspace has a customer with an order (placed by
    ``as_of``, when given); it names an unknown workspace as such."""
    c, o = customers, orders
    async with engine.connect() as conn:
        if as_of is None:
            buyer = select(c.c.customer_id).where(
                c.c.workspace_id == workspace_id, c.c.order_count > 0
            )
        else:
            buyer = select(o.c.customer_id).where(
                o.c.workspace_id == workspace_id,
                o.c.cancelled.is_(False),
                o.c.placed_at <= as_of,
            )
        if (await conn.execute(buyer.limit(1))).first() is not None:
            return
        known = (
            await conn.execute(
                select(c.c.customer_id).where(c.c.workspace_id == workspace_id).limit(1)
            )
        ).first() is not None or (
            await conn.execute(select(workspaces.c.id).where(workspaces.c.id == workspace_id))
        ).first() is not None
    if not known:
        raise InsightsError(f"unknown workspace {workspace_id!r}: no such workspace, no customers")
    by = "" if as_of is None else f" placed by {rfc3339(as_of)}"
    raise InsightsError(f"workspace {workspace_id!r} has no customer with an order{by}")


# ── The scheduled job ─────────────────────────────────────────────────────────────────────────


class _Stopping(Exception):
    """The scheduler was asked to stop in the middle of a workspace."""


@dataclass(frozen=True, slots=True)
class Claim:
    workspace_id: str
    previous: datetime | None
    """``ran_at`` before the claim (None: never ran)."""
    at: datetime


class InsightScheduler:
    """Recomputes each workspace's RFM scores and predictions once per ``interval_seconds``
    (0: never), ``batch_size`` customers per transaction. Several replicas may run it: each
    workspace is claimed by exactly one of them per interval."""

    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        *,
        catalogs: Catalogs,
        policies: Policies,
        intel: IntelSource,
        interval_seconds: float,
        batch_size: int,
        page_size: int = PAGE_SIZE,
        check_seconds: float = 300.0,
        after_commit: Callable[[], None] = lambda: None,
    ) -> None:
        if batch_size < 1 or page_size < 1:
            raise ValueError("batch_size and page_size must be ≥ 1")
        self._engine = engine
        self._sessions = session_factory(engine)
        self._clock = clock
        self._catalogs = catalogs
        self._policies = policies
        self._intel = intel
        self._interval = timedelta(seconds=interval_seconds)
        self._batch_size = batch_size
        self._page_size = page_size
        self._check = min(check_seconds, interval_seconds) if interval_seconds > 0 else 0.0
        self._after_commit = after_commit
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Until ``stop()``: run the workspaces that are due, then sleep until the next one is
        (looking for new workspaces at least every ``check_seconds``). With interval 0 it only
        waits for ``stop()``."""
        if self._interval <= timedelta(0):
            log.info("scheduled RFM scores and predictions are off (interval 0)")
            await self._stopping.wait()  # like a running job: until stop()
            return
        while not self._stopping.is_set():
            try:
                failed = await self.run_due()
                wait = self._check if failed else await self._idle_for()
            except Exception:
                log.exception("insight round failed; retrying")
                wait = self._check
            await self._pause(wait)

    async def run_due(self) -> int:
        """One round: claim and run every due workspace, one after the other. Returns how many
        failed (they are released, to be retried next round)."""
        failed = 0
        for workspace_id, previous in await self.due():
            if self._stopping.is_set():
                break
            claim = await self.claim(workspace_id, previous)
            if claim is None:
                continue  # another replica has it
            try:
                await self.run_workspace(workspace_id, now=claim.at)
            except _Stopping:
                await self._release(claim)
                RUNS.labels("stopped").inc()
                break
            except Exception:
                log.exception(
                    "recomputing RFM scores and predictions failed; retrying next round",
                    extra={"workspace_id": workspace_id},
                )
                RUNS.labels("failed").inc()
                failed += 1
                await self._release(claim)
        return failed

    async def due(self) -> list[tuple[str, datetime | None]]:
        """Workspaces with customers whose last run is an interval old or missing (never run
        first, then the longest ago), each with its last ``ran_at``."""
        now = self._clock.now()
        async with self._engine.connect() as conn:
            present = await _workspaces_with_customers(conn)
            r = insight_runs
            ran = {
                row.workspace_id: row.ran_at
                for row in await conn.execute(select(r.c.workspace_id, r.c.ran_at))
            }
        due = [
            (w, ran.get(w))
            for w in present
            if (at := ran.get(w)) is None or at + self._interval <= now
        ]
        oldest = datetime.min.replace(tzinfo=UTC)
        return sorted(due, key=lambda item: (item[1] or oldest, item[0]))

    async def claim(self, workspace_id: str, previous: datetime | None) -> Claim | None:
        """Take the workspace for this interval: moves ``ran_at`` from ``previous`` (as read)
        to now, in one statement that matches nothing if another replica moved it first."""
        now = self._clock.now()
        r = insight_runs
        async with self._engine.begin() as conn:
            if previous is None:
                insert = insert_for(conn.dialect.name)(r)
                statement: Any = insert.values(
                    workspace_id=workspace_id, ran_at=now, as_of=now, customers=0, report=None
                ).on_conflict_do_nothing(index_elements=["workspace_id"])
            else:
                statement = (
                    update(r)
                    .where(r.c.workspace_id == workspace_id, r.c.ran_at == previous)
                    .values(ran_at=now)
                )
            claimed = (await conn.execute(statement)).rowcount == 1
        return Claim(workspace_id, previous, now) if claimed else None

    async def _release(self, claim: Claim) -> None:
        """Give a failed workspace back: its ``ran_at`` as it was, so it is due again."""
        r = insight_runs
        mine = (r.c.workspace_id == claim.workspace_id, r.c.ran_at == claim.at)
        try:
            async with self._engine.begin() as conn:
                if claim.previous is None:
                    await conn.execute(delete(r).where(*mine))
                else:
                    await conn.execute(update(r).where(*mine).values(ran_at=claim.previous))
        except Exception:
            log.exception(
                "could not release a failed insight run; it is retried after the interval",
                extra={"workspace_id": claim.workspace_id},
            )

    async def run_workspace(
        self, workspace_id: str, *, now: datetime | None = None
    ) -> dict[str, Any]:
        """Compute the workspace's scores as of now, store them on every customer, record the
        run; returns ``{"workspace", "as_of", "customers", "updated", "rfm_groups",
        **ModelReport.to_json()}`` (``customers``: the customers scored, those with an order;
        ``updated``: customers whose insights were written; no model keys without a buyer)."""
        started = asyncio.get_running_loop().time()
        as_of = now or self._clock.now()
        intel = (await self._intel.for_workspaces([workspace_id]))[workspace_id]
        result = await compute(
            self._engine, workspace_id, as_of=as_of, intel=intel, page_size=self._page_size
        )
        updated = 0
        if intel.enabled:
            for chunk in result.chunks(self._batch_size, as_of):
                if self._stopping.is_set():
                    raise _Stopping
                updated += await self._write(workspace_id, chunk)
        model = result.model_json()
        await self._record(workspace_id, ran_at=as_of, customers=result.buyers, report=model)
        RUNS.labels("done").inc()
        RUN_SECONDS.observe(asyncio.get_running_loop().time() - started)
        log.info(
            "RFM scores and predictions recomputed",
            extra={
                "workspace_id": workspace_id,
                "customers": result.buyers,
                "updated": updated,
                "reliable": None if result.report is None else result.report.reliable,
            },
        )
        return {
            "workspace": workspace_id,
            "as_of": rfc3339(as_of),
            "customers": result.buyers,
            "updated": updated,
            "rfm_groups": result.groups(),
            **(model or {}),
        }

    async def _write(self, workspace_id: str, chunk: list[tuple[str, dict[str, Any]]]) -> int:
        catalog = await self._catalogs.current()
        policies = await self._policies.for_workspaces([workspace_id])
        intel = await self._intel.for_workspaces([workspace_id])
        async with JourneyUnitOfWork(self._sessions) as uow:
            count = await handle_insights(
                uow,
                {(workspace_id, customer): doc for customer, doc in chunk},
                catalog=catalog,
                policies=policies,
                now=self._clock.now(),
                intel=intel,
            )
        self._after_commit()
        return count

    async def _record(
        self, workspace_id: str, *, ran_at: datetime, customers: int, report: dict[str, Any] | None
    ) -> None:
        r = insight_runs
        values = {"ran_at": ran_at, "as_of": ran_at, "customers": customers, "report": report}
        async with self._engine.begin() as conn:
            insert = insert_for(conn.dialect.name)(r)
            await conn.execute(
                insert.values(workspace_id=workspace_id, **values).on_conflict_do_update(
                    index_elements=["workspace_id"], set_=values
                )
            )

    async def _idle_for(self) -> float:
        """Until the next workspace is due, at most ``check_seconds``, at least a second."""
        r, c = insight_runs, customers
        has_customers = select(c.c.customer_id).where(c.c.workspace_id == r.c.workspace_id).exists()
        async with self._engine.connect() as conn:
            oldest: datetime | None = (
                await conn.execute(select(func.min(r.c.ran_at)).where(has_customers))
            ).scalar_one()
        if oldest is None:
            return self._check
        wait = (oldest + self._interval - self._clock.now()).total_seconds()
        return min(max(wait, 1.0), self._check)

    async def _pause(self, seconds: float) -> None:
        if seconds <= 0:
            return
        self._wake.clear()
        if self._stopping.is_set():
            return  # stop() came during the round: its wake-up was just cleared
        waiter: Awaitable[bool] = self._wake.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter, timeout=seconds)


async def _workspaces_with_customers(conn: AsyncConnection) -> list[str]:
    """Distinct workspace ids of ``journey_customers`` by skipping through the primary key
    (one index seek per workspace, not a scan of every customer)."""
    table = customers.name
    query = text(
        f"WITH RECURSIVE ws(id) AS ("
        f"  SELECT MIN(workspace_id) FROM {table}"
        f"  UNION ALL"
        f"  SELECT (SELECT MIN(workspace_id) FROM {table} WHERE workspace_id > ws.id)"
        f"  FROM ws WHERE ws.id IS NOT NULL"
        f") SELECT id FROM ws WHERE id IS NOT NULL"
    )
    return [str(row.id) for row in await conn.execute(query)]
