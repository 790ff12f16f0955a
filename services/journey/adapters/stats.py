"""Journey stats and a customer's runs, read from the journey service's tables.

Per version of a journey:

- from ``journey_instances`` (one row per run): runs entered, runs active now and at which step,
  goals reached, and the holdout and treated groups with their conversion rates and the lift;
- from ``journey_step_counts`` (counters the worker adds to for every activity record): per step,
  how many runs were sent, skipped, held, waited, branched, updated or exited there, by reason,
  and the journey's exits by reason.

``assemble`` is pure: it turns the rows into the answer, so the arithmetic is tested without a
database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.journey.adapters.tables import activity, instances, step_counts
from services.journey.domain import lift as stats

CONFIDENCE = 0.95


# ── The answer ────────────────────────────────────────────────────────────────────────────────


class Counted(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"total": 5, "reasons": {"frequency_cap": 3, "sunset": 2}}]}
    )

    total: int = Field(description="How many times, whatever the reason.")
    reasons: dict[str, int] = Field(
        default_factory=dict,
        description="By reason, for the records that have one (e.g. `frequency_cap`).",
    )


class StepStats(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "step": "remind",
                    "active": 2,
                    "counts": {
                        "sent": {"total": 85, "reasons": {}},
                        "held": {"total": 4, "reasons": {"send_window": 4}},
                    },
                }
            ]
        }
    )

    step: str
    active: int = Field(description="Runs at this step now (waiting, or held).")
    counts: dict[str, Counted] = Field(
        description="What runs did here, by kind: `entered`, `sent`, `skipped`, `held`, "
        "`waited`, `branched`, `updated`, `exited`, `goal`. Kinds that never happened are left "
        "out."
    )


class Group(BaseModel):
    runs: int = Field(description="Runs entered in this group.")
    converted: int = Field(description="Runs whose goal was reached within its window.")
    rate: float | None = Field(description="converted / runs; null without runs.")


class Lift(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "difference": 0.1,
                    "low": -0.22,
                    "high": 0.272,
                    "confidence": 0.95,
                    "significant": False,
                }
            ]
        }
    )

    difference: float = Field(description="Treated rate minus holdout rate.")
    low: float
    high: float
    confidence: float = Field(description="Of the interval [low, high], e.g. 0.95.")
    significant: bool = Field(description="The interval excludes zero.")


class VersionStats(BaseModel):
    version: int | None = Field(description="null for the total over every version.")
    entered: int = Field(description="Runs that entered (treated and holdout).")
    active: int = Field(description="Runs still going.")
    goal_reached: int = Field(description="Runs whose goal was reached within its window.")
    exited: Counted = Field(
        description="Runs that ended, by reason (`completed`, `exit_step`, "
        "`exit_when`, `holdout`, `archived`, ...)."
    )
    steps: list[StepStats] = Field(description="In the order of the journey's steps.")
    treated: Group
    holdout: Group
    lift: Lift | None = Field(
        description="Treated minus holdout conversion rate with its 95% interval (Newcombe's "
        "hybrid score interval); null until both groups have runs."
    )


class JourneyStats(BaseModel):
    journey_id: str
    versions: list[VersionStats]
    total: VersionStats | None = Field(
        description="Every version together (null when one version was asked for)."
    )


# ── From rows to the answer (pure) ────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class CountRow:
    version: int
    step: str
    kind: str
    reason: str
    count: int


@dataclass(frozen=True, slots=True)
class GroupRow:
    version: int
    holdout: bool
    runs: int
    converted: int


@dataclass(frozen=True, slots=True)
class ActiveRow:
    version: int
    step: str
    runs: int


def _counted(rows: Iterable[CountRow]) -> Counted:
    total = 0
    reasons: dict[str, int] = {}
    for r in rows:
        total += r.count
        if r.reason:
            reasons[r.reason] = reasons.get(r.reason, 0) + r.count
    return Counted(total=total, reasons=dict(sorted(reasons.items())))


def _group(runs: int, converted: int) -> Group:
    return Group(runs=runs, converted=converted, rate=stats.rate(converted, runs))


def version_stats(
    version: int | None,
    counts: Sequence[CountRow],
    groups: Sequence[GroupRow],
    active: Sequence[ActiveRow],
    step_order: Sequence[str] = (),
) -> VersionStats:
    """One version's stats (or, with ``version`` None, the rows of several added up)."""
    treated_runs = sum(g.runs for g in groups if not g.holdout)
    treated_conv = sum(g.converted for g in groups if not g.holdout)
    holdout_runs = sum(g.runs for g in groups if g.holdout)
    holdout_conv = sum(g.converted for g in groups if g.holdout)
    at_step: dict[str, int] = {}
    for a in active:
        at_step[a.step] = at_step.get(a.step, 0) + a.runs
    by_step: dict[str, list[CountRow]] = {}
    for c in counts:
        if c.step:
            by_step.setdefault(c.step, []).append(c)
    names = list(dict.fromkeys([*step_order, *sorted(by_step), *sorted(at_step)]))
    steps = []
    for name in names:
        rows = by_step.get(name, [])
        kinds = sorted({r.kind for r in rows})
        steps.append(
            StepStats(
                step=name,
                active=at_step.get(name, 0),
                counts={k: _counted(r for r in rows if r.kind == k) for k in kinds},
            )
        )
    measured = stats.lift(
        treated_conv, treated_runs, holdout_conv, holdout_runs, confidence=CONFIDENCE
    )
    return VersionStats(
        version=version,
        entered=treated_runs + holdout_runs,
        active=sum(at_step.values()),
        goal_reached=treated_conv + holdout_conv,
        exited=_counted(c for c in counts if c.kind == "exited"),
        steps=steps,
        treated=_group(treated_runs, treated_conv),
        holdout=_group(holdout_runs, holdout_conv),
        lift=Lift(
            difference=measured.difference,
            low=measured.low,
            high=measured.high,
            confidence=measured.confidence,
            significant=measured.significant,
        )
        if measured is not None
        else None,
    )


def assemble(
    journey_id: str,
    *,
    versions: Iterable[int],
    counts: Sequence[CountRow],
    groups: Sequence[GroupRow],
    active: Sequence[ActiveRow],
    step_orders: Mapping[int, Sequence[str]],
    with_total: bool,
) -> JourneyStats:
    """Stats per version (every version named in ``versions`` or found in the rows), and the
    total when ``with_total``."""
    numbers = sorted(
        {
            *versions,
            *(c.version for c in counts),
            *(g.version for g in groups),
            *(a.version for a in active),
        }
    )
    per_version = [
        version_stats(
            n,
            [c for c in counts if c.version == n],
            [g for g in groups if g.version == n],
            [a for a in active if a.version == n],
            step_orders.get(n, ()),
        )
        for n in numbers
    ]
    total = None
    if with_total:
        order = [s for n in reversed(numbers) for s in step_orders.get(n, ())]
        total = version_stats(None, counts, groups, active, list(dict.fromkeys(order)))
    return JourneyStats(journey_id=journey_id, versions=per_version, total=total)


# ── Queries ───────────────────────────────────────────────────────────────────────────────────


async def read_rows(
    conn: AsyncConnection, workspace: str, journey_id: str, version: int | None
) -> tuple[list[CountRow], list[GroupRow], list[ActiveRow]]:
    """Three grouped queries, whatever the number of runs."""
    s, i = step_counts, instances
    count_query = (
        select(s.c.version, s.c.step, s.c.kind, s.c.reason, func.sum(s.c.count))
        .where(s.c.workspace_id == workspace, s.c.journey_id == journey_id)
        .group_by(s.c.version, s.c.step, s.c.kind, s.c.reason)
    )
    group_query = (
        select(i.c.version, i.c.holdout, func.count(), func.count(i.c.goal_at))
        .where(i.c.workspace_id == workspace, i.c.journey_id == journey_id)
        .group_by(i.c.version, i.c.holdout)
    )
    active_query = (
        select(i.c.version, i.c.step, func.count())
        .where(
            i.c.workspace_id == workspace,
            i.c.journey_id == journey_id,
            i.c.status == "active",
        )
        .group_by(i.c.version, i.c.step)
    )
    if version is not None:
        count_query = count_query.where(s.c.version == version)
        group_query = group_query.where(i.c.version == version)
        active_query = active_query.where(i.c.version == version)
    counts = [
        CountRow(r[0], r[1] or "", r[2], r[3] or "", int(r[4] or 0))
        for r in await conn.execute(count_query)
    ]
    groups = [
        GroupRow(r[0], bool(r[1]), int(r[2]), int(r[3])) for r in await conn.execute(group_query)
    ]
    active = [ActiveRow(r[0], r[1] or "", int(r[2])) for r in await conn.execute(active_query)]
    return counts, groups, active


# ── A customer's runs ─────────────────────────────────────────────────────────────────────────


class ActivityRecord(BaseModel):
    at: datetime
    kind: str = Field(
        description="entered, sent, skipped, held, waited, branched, updated, exited or goal."
    )
    step: str | None
    reason: str | None
    detail: dict[str, Any]


class CustomerRun(BaseModel):
    run_id: str
    journey_id: str
    version: int
    step: str | None = Field(description="Where the run is (or ended).")
    status: str = Field(description="active, completed, exited or holdout.")
    waiting: str | None = Field(description="wait, wait_for or held while blocked.")
    wake_at: datetime | None = Field(description="When the run's timer fires.")
    entered_at: datetime
    updated_at: datetime
    holdout: bool
    goal_at: datetime | None
    exit_reason: str | None
    activity: list[ActivityRecord] = Field(description="The latest records, newest first.")


class CustomerRuns(BaseModel):
    customer_id: str
    runs: list[CustomerRun] = Field(description="Newest first.")


async def customer_runs(
    conn: AsyncConnection,
    workspace: str,
    customer_id: str,
    *,
    limit: int,
    activity_per_run: int,
) -> CustomerRuns:
    i, a = instances, activity
    runs = (
        await conn.execute(
            select(i)
            .where(i.c.workspace_id == workspace, i.c.customer_id == customer_id)
            .order_by(i.c.entered_at.desc(), i.c.run_id)
            .limit(limit)
        )
    ).all()
    wanted = {r.run_id for r in runs}
    records: dict[str, list[ActivityRecord]] = {}
    if wanted:
        # Each run's newest records (index on workspace, customer, at): numbered per run, so a
        # run with many records cannot take the share of the others.
        newest = (
            func.row_number()
            .over(partition_by=a.c.run_id, order_by=(a.c.at.desc(), a.c.id.desc()))
            .label("n")
        )
        ranked = (
            select(a, newest)
            .where(
                a.c.workspace_id == workspace,
                a.c.customer_id == customer_id,
                a.c.run_id.in_(sorted(wanted)),
            )
            .subquery()
        )
        rows = await conn.execute(
            select(ranked)
            .where(ranked.c.n <= activity_per_run)
            .order_by(ranked.c.at.desc(), ranked.c.id.desc())
        )
        for r in rows:
            records.setdefault(r.run_id, []).append(
                ActivityRecord(
                    at=r.at, kind=r.kind, step=r.step, reason=r.reason, detail=dict(r.detail or {})
                )
            )
    return CustomerRuns(
        customer_id=customer_id,
        runs=[
            CustomerRun(
                run_id=r.run_id,
                journey_id=r.journey_id,
                version=r.version,
                step=r.step,
                status=r.status,
                waiting=r.waiting,
                wake_at=r.wake_at,
                entered_at=r.entered_at,
                updated_at=r.updated_at,
                holdout=bool(r.holdout),
                goal_at=r.goal_at,
                exit_reason=r.exit_reason,
                activity=records.get(r.run_id, []),
            )
            for r in runs
        ],
    )


async def has_runs(conn: AsyncConnection, workspace: str, journey_id: str) -> bool:
    """Whether the journey ever had a run here (its stats outlive a deleted file journey)."""
    i = instances
    row = await conn.execute(
        select(i.c.run_id)
        .where(i.c.workspace_id == workspace, i.c.journey_id == journey_id)
        .limit(1)
    )
    return row.first() is not None
