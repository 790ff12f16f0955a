"""``shared.db.bulk`` on PostgreSQL: rows written in one statement, from one JSON document
(``json_to_recordset``) or from arrays (``unnest``), are the rows that SQLAlchemy's own insert
wrote, column by column as stored; rows the document cannot carry exactly go by the arrays; the
conflict clauses the journey repository uses keep their meaning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Table, Text, cast, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.dispatch.adapters.tables import outbox as dispatch_outbox
from services.journey.adapters.repository import (
    _RUN_CHANGES,
    _RUN_KEYS,
    CustomerStates,
    ProcessedEvents,
)
from services.journey.adapters.tables import (
    activity,
    customers,
    instances,
    orders,
    processed_events,
    segment_members,
    timers,
)
from services.journey.adapters.tables import outbox as journey_outbox
from services.journey.domain.customer import CustomerState
from shared.bus.ports import OutgoingRecord
from shared.db import bulk
from shared.db.engine import session_factory
from shared.outbox import add_to_outbox

pytestmark = pytest.mark.postgres

AT = datetime(2026, 11, 23, 9, 30, 15, 123456, tzinfo=UTC)
BERLIN = timezone(timedelta(hours=1))


def _instance(workspace: str, n: int) -> dict[str, Any]:
    return {
        "workspace_id": workspace,
        "run_id": f"run-{n}",
        "customer_id": f"c{n}",
        "journey_id": "welcome",
        "version": 3,
        "step": None if n == 1 else "hello",
        "status": "active",
        "entered_at": AT.astimezone(BERLIN),
        "updated_at": AT + timedelta(seconds=n),
        "wake_at": None if n else AT + timedelta(days=3),
        "waiting": "event" if n == 2 else None,
        "key": "cart-1" if n == 2 else None,
        "trigger": {"type": "signup", "props": {"name": "Chloé", "n": [1, 2.5, None]}},
        "holdout": n == 1,
        "goal_until": None,
        "goal_at": None,
        "exit_reason": None,
        "visits": {} if n else {"hello": 2**40},
    }


def changed_run(workspace: str, n: int) -> dict[str, Any]:
    """``_instance(workspace, n)`` as a later save updates it (``_RUN_KEYS`` and
    ``_RUN_CHANGES``)."""
    row = _instance(workspace, n)
    row.update(
        w=workspace,
        r=row["run_id"],
        step=None if n == 2 else "reminder",
        status="exited" if n else "active",
        updated_at=AT.astimezone(BERLIN) + timedelta(days=n),
        wake_at=None,
        waiting=None if n else "timer",
        goal_at=AT if n == 1 else None,
        exit_reason="goal" if n == 1 else None,
        visits={"hello": 1, "reminder": n, "ü": None},
    )
    return row


def _activity(workspace: str, n: int) -> dict[str, Any]:
    return {
        "workspace_id": workspace,
        "customer_id": f"c{n}",
        "journey_id": "welcome",
        "version": 1,
        "run_id": f"run-{n}",
        "step": "hello",
        "kind": "skipped",
        "reason": None if n else "frequency_cap",
        "detail": {"cap": "1/16h", "ß": True} if n else {},
        "at": AT,
    }


CASES: list[tuple[Table, Any, tuple[str, ...]]] = [
    (instances, _instance, ("run_id",)),
    (activity, _activity, ("run_id",)),
    (
        timers,
        lambda w, n: {
            "workspace_id": w,
            "customer_id": f"c{n}",
            "name": f"run:{n}",
            "due_at": AT + timedelta(hours=n),
            "leased_until": None if n else AT,
        },
        ("name",),
    ),
    (
        orders,
        lambda w, n: {
            "workspace_id": w,
            "customer_id": f"c{n}",
            "order_id": f"o-{n}",
            "placed_at": AT.astimezone(BERLIN),
            "value": None if n == 1 else 19.99 * n,
            "cancelled": n == 2,
        },
        ("order_id",),
    ),
    (
        segment_members,
        lambda w, n: {
            "workspace_id": w,
            "segment_id": f"seg-{n}",
            "customer_id": "c1",
            "entered_at": AT + timedelta(microseconds=n),
        },
        ("segment_id",),
    ),
    (
        processed_events,
        lambda w, n: {"workspace_id": w, "event_id": f"ev-{n}", "processed_at": AT},
        ("event_id",),
    ),
    (
        customers,
        lambda w, n: {
            "workspace_id": w,
            "customer_id": f"c{n}",
            "traits": {"email": f"c{n}@example.com", "n": n, "ratio": 0.1 * n, "x": None},
            "first_seen_at": AT,
            "last_seen_at": AT.astimezone(BERLIN) + timedelta(microseconds=n),
            "scores": {},
            "entries": {"welcome": "2026-11-23T09:00:00+00:00"},
            "ledger": [["2026-11-23T09:00:00+00:00", "email"]] * n,
            "schedules": {},
            "profile": None if n == 1 else {"v": 1, "revenue": "10.50", "orders": []},
            "lead": None,
            "segment_state": {"members": {"vip": "2026-11-23T09:00:00Z"}, "next": None},
            "insights": None if n else {"rfm": {"r": 5, "m": 1e-7}},
            "timeline": [["2026-11-23T09:00:00Z", "signup", "e-ü"]],
            "stage": None if n else "active",
            "lead_band": "warm",
            "order_count": n,
            "first_order_at": None,
            "last_order_at": AT if n else None,
            "revenue": 10.5 * n + 0.1,
        },
        ("customer_id",),
    ),
]

SOURCES = ("json", "arrays")


def _insert(table: Table, rows: list[dict[str, Any]], dialect: Any, source: str) -> Any:
    """The statement and parameters of a bulk insert of ``rows`` from ``source``."""
    columns = list(rows[0])
    params = {c: c for c in columns}
    if source == "json":
        document = bulk.document(table, rows, params, dialect)
        assert document is not None
        return bulk.insert_statement(table, columns, dialect, source="json"), {"rows": document}
    return bulk.insert_statement(table, columns, dialect), bulk.arrays(table, rows, params, dialect)


async def _stored(engine: AsyncEngine, table: Table, workspace: str, order: tuple[str, ...]) -> Any:
    """Every column but a generated id, as PostgreSQL shows it as text."""
    columns = [cast(c, Text).label(c.name) for c in table.columns if c.name != "id"]
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(*columns)
            .where(table.c.workspace_id == workspace)
            .order_by(*(table.c[o] for o in order))
        )
        return [{k: v for k, v in r._mapping.items() if k != "workspace_id"} for r in rows]


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize(("table", "make", "order"), CASES, ids=[t.name for t, _, _ in CASES])
async def test_bulk_insert_stores_what_sqlalchemy_stored(
    pg_engine: AsyncEngine, table: Table, make: Any, order: tuple[str, ...], source: str
) -> None:
    async with pg_engine.begin() as conn:
        await conn.execute(insert(table), [make("orm", n) for n in range(3)])
        await conn.execute(
            *_insert(table, [make("bulk", n) for n in range(3)], conn.dialect, source)
        )
    expected = await _stored(pg_engine, table, "orm", order)
    assert len(expected) == 3
    assert await _stored(pg_engine, table, "bulk", order) == expected


async def test_a_naive_instant_is_refused_as_sqlalchemy_refuses_it(pg_engine: AsyncEngine) -> None:
    rows = [_instance("w", 0) | {"updated_at": datetime(2026, 11, 23, 9)}]
    params = {c: c for c in rows[0]}
    async with pg_engine.connect() as conn:
        with pytest.raises(ValueError, match="naive datetime"):
            bulk.arrays(instances, rows, params, conn.dialect)
        with pytest.raises(ValueError, match="naive datetime"):
            bulk.document(instances, rows, params, conn.dialect)


async def test_rows_the_document_cannot_carry_go_by_the_arrays(pg_engine: AsyncEngine) -> None:
    """An integer beyond 64 bits in a JSON value (orjson refuses it; the engine's serializer
    writes it with json.dumps), a non-finite float (orjson would write null) and a binary
    column: ``insert_rows`` stores them as SQLAlchemy does, by the arrays."""
    big = [_instance(w, 1) | {"trigger": {"loyalty": 2**70}} for w in ("orm", "bulk")]
    nan = [
        {
            "workspace_id": w,
            "customer_id": "c1",
            "order_id": f"o-{k}",
            "placed_at": AT,
            "value": value,
            "cancelled": False,
        }
        for w in ("orm", "bulk")
        for k, value in enumerate((float("nan"), float("inf"), 1.5))
    ]
    record = OutgoingRecord(topic="t", key="k", value=b"\x00\xffbytes", headers={"a": "b"})
    async with pg_engine.connect() as conn:
        assert bulk.document(instances, big[1:], {c: c for c in big[1]}, conn.dialect) is None
        assert bulk.document(orders, nan[3:], {c: c for c in nan[3]}, conn.dialect) is None
        outbox_row = {"topic": "t", "key": "k", "value": b"x", "headers": {}, "created_at": AT}
        assert (
            bulk.document(journey_outbox, [outbox_row], {c: c for c in outbox_row}, conn.dialect)
            is None
        )
    sessions = session_factory(pg_engine)
    async with pg_engine.begin() as conn:
        await conn.execute(insert(instances), big[:1])
        await conn.execute(insert(orders), nan[:3])
    async with sessions() as session, session.begin():
        await bulk.insert_rows(session, instances, big[1:])
        await bulk.insert_rows(session, orders, nan[3:])
        await add_to_outbox(session, journey_outbox, [record])
    for table, order in ((instances, ("run_id",)), (orders, ("order_id",))):
        expected = await _stored(pg_engine, table, "orm", order)
        assert expected and await _stored(pg_engine, table, "bulk", order) == expected
    async with pg_engine.connect() as conn:
        stored = (await conn.execute(select(journey_outbox.c.value))).scalar_one()
    assert stored == b"\x00\xffbytes"


async def test_processed_event_ids_insert_and_a_second_mark_is_an_error(
    pg_engine: AsyncEngine,
) -> None:
    sessions = session_factory(pg_engine)
    async with sessions() as session, session.begin():
        await ProcessedEvents(session).mark([("w", "e1"), ("w", "e2")], at=AT)
    async with sessions() as session, session.begin():
        await ProcessedEvents(session).mark([("w", "e3")], at=AT + timedelta(hours=1))
        assert await ProcessedEvents(session).seen([("w", "e1"), ("w", "e3"), ("w", "e4")]) == {
            ("w", "e1"),
            ("w", "e3"),
        }
    async with pg_engine.connect() as conn:
        pe = processed_events.c
        rows = await conn.execute(select(pe.event_id, pe.processed_at))
        stored = {event_id: at for event_id, at in rows}
    assert stored == {"e1": AT, "e2": AT, "e3": AT + timedelta(hours=1)}
    # An id marked before is an error, as the plain insert made it: two consumers that took the
    # same event at once cannot both commit it.
    async with sessions() as session:
        with pytest.raises(Exception, match="duplicate key"):
            async with session.begin():
                await ProcessedEvents(session).mark([("w", "e1")], at=AT)


async def test_a_saved_timer_moves_and_loses_its_lease(pg_engine: AsyncEngine) -> None:
    sessions = session_factory(pg_engine)
    async with pg_engine.begin() as conn:
        await conn.execute(
            insert(timers),
            [
                {
                    "workspace_id": "w",
                    "customer_id": "c1",
                    "name": "trigger:birthday",
                    "due_at": AT,
                    "leased_until": AT + timedelta(minutes=1),
                }
            ],
        )
    state = CustomerState(
        workspace_id="w",
        customer_id="c1",
        first_seen_at=AT,
        last_seen_at=AT,
        schedules={"birthday": AT + timedelta(days=365)},
    )
    async with sessions() as session, session.begin():
        await CustomerStates(session).save(
            [state],
            timers_before={("w", "c1"): {"trigger:birthday": AT}},
            new_runs=[],
            changed_runs=[],
        )
    async with pg_engine.connect() as conn:
        rows = (
            await conn.execute(select(timers.c.name, timers.c.due_at, timers.c.leased_until))
        ).all()
    assert [tuple(r) for r in rows] == [("trigger:birthday", AT + timedelta(days=365), None)]


async def test_outbox_rows_keep_their_order_and_content(pg_engine: AsyncEngine) -> None:
    """PostgreSQL adds outbox rows in one statement: numbered in the order given (the relay
    publishes by id), stored as SQLAlchemy's insert stored them."""
    records = [
        OutgoingRecord(
            topic="ciclo.messages" if n % 2 else "ciclo.events",
            key=f"demo:c{n % 3}",
            value=f'{{"n":{n},"name":"Chloé"}}'.encode() + bytes([0, 255]),
            headers={"type": "message_requested", "n": str(n)} if n % 4 else {},
        )
        for n in range(40)
    ]
    sessions = session_factory(pg_engine)
    async with sessions() as session, session.begin():
        await add_to_outbox(session, dispatch_outbox, records)
    async with pg_engine.begin() as conn:
        await conn.execute(
            insert(journey_outbox),
            [
                {
                    "topic": r.topic,
                    "key": r.key,
                    "value": r.value,
                    "headers": dict(r.headers),
                    "created_at": AT,
                }
                for r in records
            ],
        )

    async def stored(table: Table) -> list[tuple[Any, ...]]:
        c = table.c
        async with pg_engine.connect() as conn:
            rows = await conn.execute(
                select(c.topic, c.key, c.value, cast(c.headers, Text)).order_by(c.id)
            )
            return [tuple(r) for r in rows]

    bulk_rows = await stored(dispatch_outbox)
    assert [r[2] for r in bulk_rows] == [r.value for r in records]
    assert bulk_rows == await stored(journey_outbox)


@pytest.mark.parametrize("source", SOURCES)
async def test_bulk_update_of_runs_writes_what_the_executemany_wrote(
    pg_engine: AsyncEngine, source: str
) -> None:
    async with pg_engine.begin() as conn:
        for workspace in ("orm", "bulk"):
            await conn.execute(insert(instances), [_instance(workspace, n) for n in range(3)])

    params = {**_RUN_KEYS, **{c: c for c in _RUN_CHANGES}}
    async with pg_engine.begin() as conn:
        each = bulk.update_each(instances, _RUN_KEYS, _RUN_CHANGES)
        await conn.execute(each, [changed_run("orm", n) for n in range(3)])
        rows = [changed_run("bulk", n) for n in range(3)]
        if source == "json":
            document = bulk.document(instances, rows, params, conn.dialect)
            assert document is not None
            await conn.execute(
                bulk.update_statement(
                    instances, _RUN_KEYS, _RUN_CHANGES, conn.dialect, source="json"
                ),
                {"rows": document},
            )
        else:
            await conn.execute(
                bulk.update_statement(instances, _RUN_KEYS, _RUN_CHANGES, conn.dialect),
                bulk.arrays(instances, rows, params, conn.dialect),
            )
    expected = await _stored(pg_engine, instances, "orm", ("run_id",))
    assert [r["status"] for r in expected] == ["active", "exited", "exited"]
    assert await _stored(pg_engine, instances, "bulk", ("run_id",)) == expected


async def test_an_over_long_value_is_refused_not_cut(pg_engine: AsyncEngine) -> None:
    """Stored into ``VARCHAR(64)`` an over-long workspace id is an error either way (an
    explicit cast to ``VARCHAR(64)[]`` would have cut it silently)."""
    row = {"workspace_id": "w" * 65, "event_id": "e1", "processed_at": AT}
    async with pg_engine.connect() as conn:
        statements: list[tuple[Any, Any]] = [
            (insert(processed_events), [row]),
            *(_insert(processed_events, [row], conn.dialect, source) for source in SOURCES),
        ]
    for statement, params in statements:
        async with pg_engine.connect() as conn:
            with pytest.raises(Exception, match="too long"):
                await conn.execute(statement, params)
