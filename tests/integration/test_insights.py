"""The RFM and predictions job (services/journey/insights.py) on SQLite and PostgreSQL: customers
are seeded by real events through ``handle_events``, then scored, stored, segmented, claimed."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.cli import main
from services.journey import insights
from services.journey.adapters.tables import customers, insight_runs, outbox, segment_members
from services.journey.domain import intelligence, rfm
from services.journey.domain.catalog import JourneyCatalog
from services.journey.domain.intelligence import Intelligence
from services.journey.domain.segments import parse_segment
from services.journey.service_layer.handlers import handle_events
from services.journey.service_layer.sources import StaticCatalogs, StaticIntel, StaticPolicies
from services.journey.service_layer.uow import JourneyUnitOfWork
from shared.clock import VirtualClock
from shared.contracts.events import EventEnvelope
from shared.contracts.topics import EVENTS
from shared.db.engine import session_factory

NOW = datetime(2026, 11, 23, 9, tzinfo=UTC)
WS = "shop"
DAY = timedelta(days=1)

# Ten buyers b0 … b9, each with a distinct rank (0 = worst) on every dimension, so the mid-rank
# quintiles of ten distinct values are two customers per score: score = rank // 2 + 1.
# Buyer i places i + 1 orders; RECENCY_RANK orders last orders, MONEY_RANK lifetime revenue.
RECENCY_RANK = [0, 5, 2, 8, 1, 6, 3, 4, 7, 9]
MONEY_RANK = [3, 0, 7, 1, 9, 2, 5, 8, 4, 6]
NON_BUYERS = ["n0", "n1"]
# The table of docs/customers.md, R row → fm = (F + M) // 2 column.
GRID = {
    5: ["potential_loyalist", "potential_loyalist", "loyal", "champions", "champions"],
    4: ["potential_loyalist", "potential_loyalist", "loyal", "champions", "champions"],
    3: ["needs_attention", "needs_attention", "loyal", "loyal", "loyal"],
    2: ["hibernating", "hibernating", "at_risk", "at_risk", "at_risk"],
    1: ["lost", "lost", "at_risk", "at_risk", "at_risk"],
}
CHAMPIONS = parse_segment(
    {
        "id": "rfm_champions",
        "name": "RFM champions",
        "condition": {"field": "rfm.group", "op": "eq", "value": "champions"},
    }
)
INTEL = Intelligence(segments=intelligence.with_segments(intelligence.builtin(), [CHAMPIONS]))


@dataclass(frozen=True)
class Buyer:
    customer_id: str
    orders: list[tuple[datetime, float]]  # (placed at, total), not cancelled

    @property
    def last(self) -> datetime:
        return max(at for at, _ in self.orders)

    def placed_by(self, instant: datetime) -> list[tuple[datetime, float]]:
        return [(at, total) for at, total in self.orders if at <= instant]


def buyers(now: datetime) -> list[Buyer]:
    """The buyers' orders: the last ``10 (10 - recency rank) + 1`` days before ``now``, the
    others a week apart before it; revenue ``100 (money rank + 1)``: the first order takes what
    the others (1.00 each) leave."""
    out = []
    for i in range(10):
        count = i + 1
        last = now - (10 * (10 - RECENCY_RANK[i]) + 1) * DAY
        revenue = 100.0 * (MONEY_RANK[i] + 1)
        totals = [revenue - (count - 1)] + [1.0] * (count - 1)
        times = [last - 7 * (count - 1 - k) * DAY for k in range(count)]
        out.append(Buyer(f"b{i}", list(zip(times, totals, strict=True))))
    return out


def expected_rfm(i: int) -> dict[str, Any]:
    r, f, m = RECENCY_RANK[i] // 2 + 1, i // 2 + 1, MONEY_RANK[i] // 2 + 1
    return {"r": r, "f": f, "m": m, "group": GRID[r][(f + m) // 2 - 1]}


def envelope(event_id: str, customer: str, type_: str, at: datetime, **properties: Any) -> Any:
    return EventEnvelope.model_validate(
        {
            "event_id": event_id,
            "workspace_id": WS,
            "customer_id": customer,
            "type": type_,
            "occurred_at": at,
            "received_at": at,
            "properties": properties,
            "traits": {"email": f"{customer}@example.com"},
        }
    )


async def seed(engine: AsyncEngine, now: datetime) -> list[Buyer]:
    """Signups for everyone, the buyers' orders, and one order of b0 that is then cancelled."""
    people = buyers(now)
    events = []
    for b in people:
        first = b.orders[0][0]
        events.append(envelope(f"s-{b.customer_id}", b.customer_id, "signup", first - DAY))
        for k, (at, total) in enumerate(b.orders):
            events.append(
                envelope(
                    f"o-{b.customer_id}-{k}",
                    b.customer_id,
                    "order_completed",
                    at,
                    order_id=f"{b.customer_id}-{k}",
                    total=f"{total:.2f}",
                    currency="USD",
                )
            )
    gone = now - 3 * DAY
    events.append(envelope("o-x", "b0", "order_completed", gone, order_id="x", total="500.00"))
    events.append(envelope("c-x", "b0", "order_cancelled", gone + DAY, order_id="x"))
    for customer in NON_BUYERS:
        events.append(envelope(f"s-{customer}", customer, "signup", now - 5 * DAY))
    async with JourneyUnitOfWork(session_factory(engine)) as uow:
        await handle_events(
            uow, events, catalog=JourneyCatalog(), policies={}, now=now, intel={WS: INTEL}
        )
    return people


def scheduler(
    engine: AsyncEngine,
    clock: VirtualClock,
    *,
    batch_size: int = 500,
    page_size: int = 5_000,
    **kw: Any,
) -> insights.InsightScheduler:
    return insights.InsightScheduler(
        engine,
        clock,
        catalogs=kw.pop("catalogs", StaticCatalogs(JourneyCatalog())),
        policies=StaticPolicies(),
        intel=StaticIntel(INTEL),
        interval_seconds=kw.pop("interval_seconds", 86_400),
        batch_size=batch_size,
        page_size=page_size,
        **kw,
    )


async def stored(engine: AsyncEngine) -> dict[str, dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(customers.c.customer_id, customers.c.insights).where(
                customers.c.workspace_id == WS
            )
        )
        return {r.customer_id: r.insights for r in rows}


async def runs(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        return list(await conn.execute(select(insight_runs)))


async def segment_events(engine: AsyncEngine, segment: str) -> list[EventEnvelope]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(outbox.c.value).where(outbox.c.topic == EVENTS).order_by(outbox.c.id)
        )
        out = [EventEnvelope.from_json(r.value) for r in rows]
    return [e for e in out if e.properties.get("segment") == segment]


def finite_predictions(doc: dict[str, Any]) -> bool:
    keys = {"p_alive", "expected_orders_30d", "expected_orders_90d", "expected_order_value", "clv"}
    values = [doc[k] for k in keys]
    return keys <= set(doc) and all(isinstance(v, float | int) and math.isfinite(v) for v in values)


# ── Scoring and storing ───────────────────────────────────────────────────────────────────────


async def test_a_run_stores_each_buyers_rfm_scores_and_predictions(engine: AsyncEngine) -> None:
    people = await seed(engine, NOW)
    commits: list[int] = []
    job = scheduler(
        engine,
        VirtualClock(NOW),
        batch_size=3,
        page_size=4,
        after_commit=lambda: commits.append(1),
    )

    report = await job.run_workspace(WS)

    docs = await stored(engine)
    for i, b in enumerate(people):
        doc = docs[b.customer_id]
        recency = round((NOW - b.last) / DAY, 2)
        assert doc["rfm"] == {**expected_rfm(i), "recency_days": recency}, b.customer_id
        assert finite_predictions(doc["predictions"]), doc["predictions"]
        assert 0 <= doc["predictions"]["p_alive"] <= 1
        assert doc["computed_at"] == "2026-11-23T09:00:00Z"
    for customer in NON_BUYERS:
        assert docs[customer]["rfm"] == {
            "r": 0,
            "f": 0,
            "m": 0,
            "group": None,
            "recency_days": None,
        }
        assert docs[customer]["predictions"] == {}
    # Pages of 4 read 12 customers; chunks of 3 wrote the 10 buyers and the 2 others.
    assert len(commits) == math.ceil(10 / 3) + 1
    assert (report["customers"], report["updated"]) == (10, 12)
    assert report["bgnbd"]["n_customers"] == 10
    assert report["quality"]["calibration"] is None
    groups = [expected_rfm(i)["group"] for i in range(10)]
    assert report["rfm_groups"] == {g: groups.count(g) for g in rfm.GROUPS}  # 0s included
    [run] = await runs(engine)
    assert (run.workspace_id, run.ran_at, run.as_of, run.customers) == (WS, NOW, NOW, 10)
    assert run.report["bgnbd"]["params"] == report["bgnbd"]["params"]
    assert run.report["gamma_gamma"]["n_repeat_buyers"] == 9  # b0 has no repeat order


async def test_a_segment_on_the_rfm_group_gets_its_members_and_events(engine: AsyncEngine) -> None:
    people = await seed(engine, NOW)
    champions = {
        b.customer_id for i, b in enumerate(people) if expected_rfm(i)["group"] == "champions"
    }
    assert champions  # the data make at least one
    assert await segment_events(engine, "rfm_champions") == []

    await scheduler(engine, VirtualClock(NOW), batch_size=4).run_workspace(WS)

    async with engine.connect() as conn:
        members = {
            r.customer_id
            for r in await conn.execute(
                select(segment_members.c.customer_id).where(
                    segment_members.c.workspace_id == WS,
                    segment_members.c.segment_id == "rfm_champions",
                )
            )
        }
    assert members == champions
    entered = await segment_events(engine, "rfm_champions")
    assert {(e.type, e.customer_id) for e in entered} == {("segment_entered", c) for c in champions}


async def test_the_next_run_rewrites_buyers_only(engine: AsyncEngine) -> None:
    await seed(engine, NOW)
    clock = VirtualClock(NOW)
    job = scheduler(engine, clock)
    await job.run_workspace(WS)
    clock.advance(10 * DAY)

    report = await job.run_workspace(WS)

    assert report["updated"] == 10
    docs = await stored(engine)
    assert {c for c, d in docs.items() if d["computed_at"] == "2026-12-03T09:00:00Z"} == {
        f"b{i}" for i in range(10)
    }
    assert docs["b9"]["rfm"]["recency_days"] == 21.0  # 11 days then, 10 more now


async def test_the_order_log_as_of_now_agrees_with_the_profiles(engine: AsyncEngine) -> None:
    await seed(engine, NOW)
    profiles = await insights.compute(engine, WS, as_of=NOW, intel=INTEL, page_size=3)
    log = await insights.compute(
        engine, WS, as_of=NOW, intel=INTEL, now=NOW + DAY, page_size=3
    )  # no order after NOW: an empty holdout
    assert log.historical and not profiles.historical
    assert log.customer_ids == profiles.customer_ids == [f"b{i}" for i in range(10)]
    a, b = log.scores, profiles.scores
    assert [a.r.tolist(), a.f.tolist(), a.m.tolist()] == [b.r.tolist(), b.f.tolist(), b.m.tolist()]
    assert a.r.tolist() == [expected_rfm(i)["r"] for i in range(10)]
    assert log.report is not None
    assert log.report.quality.calibration is not None
    assert log.report.quality.calibration["observed_purchases"] == 0


async def test_as_of_in_the_past_uses_the_orders_placed_by_then(engine: AsyncEngine) -> None:
    people = await seed(engine, NOW)
    as_of = NOW - 40 * DAY

    result = await insights.compute(engine, WS, as_of=as_of, intel=INTEL, now=NOW, page_size=4)

    placed = {b.customer_id: b.placed_by(as_of) for b in people}
    assert result.customer_ids == sorted(c for c, o in placed.items() if o)
    assert result.history.x.tolist() == [len(placed[c]) - 1 for c in result.customer_ids]
    assert result.report is not None
    calibration = result.report.quality.calibration
    assert calibration is not None
    assert calibration["holdout_days"] == 40
    later = sum(
        1
        for c in result.customer_ids
        for at, _ in next(b for b in people if b.customer_id == c).orders
        if at > as_of
    )
    assert calibration["observed_purchases"] == later
    with pytest.raises(ValueError, match="past instant"):
        next(result.chunks(5, NOW))


# ── Scheduling and claims ─────────────────────────────────────────────────────────────────────


async def test_a_due_workspace_runs_once_per_interval(engine: AsyncEngine) -> None:
    await seed(engine, NOW)
    clock = VirtualClock(NOW)
    job = scheduler(engine, clock, interval_seconds=3600)
    assert await job.due() == [(WS, None)]

    assert await job.run_due() == 0
    assert len(await stored(engine)) == 12
    assert await job.due() == []
    clock.advance(timedelta(minutes=59))
    assert await job.due() == []
    clock.advance(timedelta(minutes=1))
    assert await job.due() == [(WS, NOW)]
    assert await job.run_due() == 0
    [run] = await runs(engine)
    assert run.ran_at == NOW + timedelta(hours=1)


async def test_a_claim_taken_by_another_replica_is_not_run_twice(engine: AsyncEngine) -> None:
    await seed(engine, NOW)
    clock = VirtualClock(NOW)
    a, b = scheduler(engine, clock), scheduler(engine, clock)
    # Both saw the workspace due (never run); a claims it first.
    assert await a.claim(WS, None) is not None
    assert await b.claim(WS, None) is None
    clock.advance(2 * DAY)
    # Both read ran_at = NOW; the one that moves it first wins.
    assert await b.claim(WS, NOW) is not None
    assert await a.claim(WS, NOW) is None


async def test_replicas_racing_run_a_workspace_once(engine: AsyncEngine) -> None:
    await seed(engine, NOW)
    clock = VirtualClock(NOW)
    ran: list[str] = []

    class Counting(insights.InsightScheduler):
        async def run_workspace(
            self, workspace_id: str, *, now: datetime | None = None
        ) -> dict[str, Any]:
            ran.append(workspace_id)
            return await super().run_workspace(workspace_id, now=now)

    def replica() -> Counting:
        return Counting(
            engine,
            clock,
            catalogs=StaticCatalogs(JourneyCatalog()),
            policies=StaticPolicies(),
            intel=StaticIntel(INTEL),
            interval_seconds=86_400,
            batch_size=500,
        )

    replicas = [replica() for _ in range(3)]
    assert await asyncio.gather(*(r.run_due() for r in replicas)) == [0, 0, 0]
    assert ran == [WS]
    assert len(await runs(engine)) == 1
    clock.advance(2 * DAY)  # due again: now the claim moves an existing ran_at
    assert await asyncio.gather(*(r.run_due() for r in replicas)) == [0, 0, 0]
    assert ran == [WS, WS]


class Broken:
    def __init__(self) -> None:
        self.fail = True

    async def current(self) -> JourneyCatalog:
        if self.fail:
            raise RuntimeError("catalog unavailable")
        return JourneyCatalog()


async def test_a_failed_run_is_released_and_retried_next_round(engine: AsyncEngine) -> None:
    await seed(engine, NOW)
    clock = VirtualClock(NOW)
    catalogs = Broken()
    job = scheduler(engine, clock, catalogs=catalogs)

    assert await job.run_due() == 1
    assert await runs(engine) == []
    assert await job.due() == [(WS, None)]

    catalogs.fail = False
    assert await job.run_due() == 0
    [run] = await runs(engine)
    clock.advance(2 * DAY)
    catalogs.fail = True
    assert await job.run_due() == 1
    [again] = await runs(engine)
    assert again.ran_at == run.ran_at == NOW  # given back as it was: due again


async def test_stopping_mid_workspace_gives_the_claim_back(engine: AsyncEngine) -> None:
    await seed(engine, NOW)

    class StopsAtOnce:
        job: insights.InsightScheduler

        async def current(self) -> JourneyCatalog:
            self.job.stop()
            return JourneyCatalog()

    catalogs = StopsAtOnce()
    job = catalogs.job = scheduler(engine, VirtualClock(NOW), batch_size=3, catalogs=catalogs)

    assert await job.run_due() == 0
    assert await runs(engine) == []  # released: due again for the next replica to start
    written = [c for c, d in (await stored(engine)).items() if d is not None]
    assert written == ["b0", "b1", "b2"]  # the chunk in hand was finished


async def test_the_loop_runs_due_workspaces_until_stopped(engine: AsyncEngine) -> None:
    await seed(engine, NOW)
    job = scheduler(engine, VirtualClock(NOW), check_seconds=0.05)
    task = asyncio.create_task(job.run())
    for _ in range(200):
        if [r for r in await runs(engine) if r.report is not None]:  # not just claimed: done
            break
        await asyncio.sleep(0.05)
    job.stop()
    await asyncio.wait_for(task, timeout=10)
    [run] = await runs(engine)
    assert run.customers == 10


async def test_interval_0_turns_the_job_off(engine: AsyncEngine) -> None:
    await seed(engine, NOW)
    job = scheduler(engine, VirtualClock(NOW), interval_seconds=0)
    task = asyncio.create_task(job.run())
    await asyncio.sleep(0.3)
    assert not task.done()  # idle, as a worker's task that has not failed
    job.stop()
    await asyncio.wait_for(task, timeout=5)
    assert await runs(engine) == []


# ── ciclo predict fit ─────────────────────────────────────────────────────────────────────────


def cli(args: Iterable[str], database_url: str, tmp_path: Path) -> Result:
    env = {
        "CICLO_DATABASE_URL": database_url,
        "CICLO_DATA_DIR": str(tmp_path / "data"),
        "CICLO_JOURNEYS_DIR": str(tmp_path / "no-journeys"),
    }
    return CliRunner().invoke(main, ["predict", "fit", *args], env=env)


async def run_cli(args: Iterable[str], database_url: str, tmp_path: Path) -> Result:
    # The command runs its own event loop: in a thread, beside the test's.
    return await asyncio.to_thread(cli, list(args), database_url, tmp_path)


@pytest.fixture
async def recent(engine: AsyncEngine) -> list[Buyer]:
    """The shop seeded around the real clock (the command reads the system time)."""
    return await seed(engine, datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1))


async def test_predict_fit_prints_the_model_report(
    engine: AsyncEngine, recent: list[Buyer], database_url: str, tmp_path: Path
) -> None:
    result = await run_cli(["--workspace", WS], database_url, tmp_path)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["workspace"] == WS
    assert set(report) >= {"as_of", "time_unit", "reliable", "bgnbd", "gamma_gamma", "quality"}
    assert report["bgnbd"]["n_customers"] == 10
    assert report["quality"]["calibration"] is None
    assert await runs(engine) == []  # printed, not stored
    assert all(d is None for d in (await stored(engine)).values())


async def test_predict_fit_as_of_in_the_past_reports_calibration(
    engine: AsyncEngine, recent: list[Buyer], database_url: str, tmp_path: Path
) -> None:
    as_of = (datetime.now(UTC) - 40 * DAY).replace(microsecond=0)
    result = await run_cli(
        ["--workspace", WS, "--as-of", as_of.isoformat().replace("+00:00", "Z")],
        database_url,
        tmp_path,
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["as_of"] == as_of.isoformat().replace("+00:00", "Z")
    scored = [b for b in recent if b.placed_by(as_of)]
    assert report["bgnbd"]["n_customers"] == len(scored)
    calibration = report["quality"]["calibration"]
    assert calibration["holdout_days"] == pytest.approx(40, abs=0.01)
    assert calibration["observed_purchases"] == sum(
        1 for b in scored for at, _ in b.orders if at > as_of
    )


async def test_predict_fit_save_stores_the_insights(
    engine: AsyncEngine, recent: list[Buyer], database_url: str, tmp_path: Path
) -> None:
    result = await run_cli(["--workspace", WS, "--save"], database_url, tmp_path)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["customers"], report["updated"]) == (10, 12)
    docs = await stored(engine)
    assert {c: d["rfm"]["r"] for c, d in docs.items() if c.startswith("b")} == {
        f"b{i}": expected_rfm(i)["r"] for i in range(10)
    }
    [run] = await runs(engine)
    assert run.customers == 10


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--workspace", "nobody"], 1, "unknown workspace 'nobody'"),
        (["--workspace", WS, "--as-of", "2020-01-01"], 1, "no customer with an order placed by"),
        (["--workspace", WS, "--as-of", "yesterday"], 2, "is not a date"),
        (["--workspace", WS, "--as-of", "2999-01-01"], 2, "is in the future"),
        (["--workspace", WS, "--as-of", "2020-01-01", "--save"], 2, "cannot be combined"),
    ],
)
async def test_predict_fit_refuses_what_it_cannot_fit(
    engine: AsyncEngine,
    recent: list[Buyer],
    database_url: str,
    tmp_path: Path,
    args: list[str],
    code: int,
    message: str,
) -> None:
    result = await run_cli(args, database_url, tmp_path)
    assert result.exit_code == code, result.output
    assert message in result.output


async def test_predict_fit_needs_a_customer_with_an_order(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    async with JourneyUnitOfWork(session_factory(engine)) as uow:
        await handle_events(
            uow,
            [envelope("s1", "n0", "signup", NOW)],
            catalog=JourneyCatalog(),
            policies={},
            now=NOW,
        )
    for args in (["--workspace", WS], ["--workspace", WS, "--save"]):
        result = await run_cli(args, database_url, tmp_path)
        assert result.exit_code == 1, result.output
        assert f"workspace {WS!r} has no customer with an order" in result.output
