"""The backfill into a real embedded bus: order, the historical flag and its cut-off, rejects,
idempotent ids, the external sort, worker processes, and ``ciclo import`` itself."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from services.components import ALL, components_for
from services.ingest.catalogue import parse_event
from services.ingest.envelope import to_envelope
from services.ingest.import_cli import import_events
from services.ingest.import_records import Rules, derive_event_id, encode_envelope, prepare
from services.ingest.import_sources import Source
from services.ingest.importer import PublishError, Summary, publish, run_import, validate
from shared.bus.embedded import EmbeddedBus
from shared.bus.factory import ensure_standard_topics, open_bus
from shared.bus.ports import OutgoingRecord
from shared.contracts.events import EventEnvelope
from shared.contracts.topics import EVENTS
from shared.db.engine import create_engine
from shared.db.migrate import upgrade
from shared.errors import BusError
from shared.settings import CommonSettings
from shared.tenancy.keys import KeyStore
from tests.fixtures.broker import drain

NOW = datetime(2026, 1, 1, tzinfo=UTC)
RULES = Rules(workspace_id="shop", live_after=NOW, received_at=NOW + timedelta(hours=1))


def signup(customer: str, at: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "signup",
        "customer_id": customer,
        "occurred_at": at,
        "traits": {"email": f"{customer}@example.com"},
        **fields,
    }


def jsonl(path: Path, events: Sequence[Any]) -> Path:
    """A JSONL file of these events; a string is written as it is (for broken lines)."""
    path.write_bytes(
        b"".join((e.encode() if isinstance(e, str) else orjson.dumps(e)) + b"\n" for e in events)
    )
    return path


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[EmbeddedBus]:
    """The embedded bus with one partition per topic, so reading back shows the publish order."""
    settings = CommonSettings(data_dir=tmp_path / "data", bus_partitions=1)
    bus = open_bus(settings)
    assert isinstance(bus, EmbeddedBus)
    await bus.start()
    await ensure_standard_topics(bus, settings)
    yield bus
    await bus.close()


async def import_file(
    bus: EmbeddedBus, path: Path, rules: Rules = RULES, *, jobs: int = 1, **options: Any
) -> Summary:
    with Source(path, fmt="jsonl") as source:
        return await run_import(source, rules, bus.publisher(), jobs=jobs, **options)


async def events_on(bus: EmbeddedBus, count: int, *, group: str = "test") -> list[EventEnvelope]:
    consumer = bus.consumer(group=group, topics=[EVENTS])
    await consumer.start()
    try:
        records = await drain(consumer, count, max_records=5_000, seconds=5)
    finally:
        await consumer.stop()
    assert len(records) == count
    return [EventEnvelope.from_json(r.value) for r in records]


# --- order, history and the cut-off -------------------------------------------------------------


async def test_events_arrive_in_occurred_at_order_as_history(
    bus: EmbeddedBus, tmp_path: Path
) -> None:
    path = jsonl(
        tmp_path / "history.jsonl",
        [
            signup("c3", "2025-06-01T12:00:00+02:00"),  # 10:00 UTC: after c2 despite its text
            signup("c2", "2025-06-01T11:00:00Z"),
            {
                "type": "order_completed",
                "event_id": "order-1",
                "customer_id": "c1",
                "occurred_at": "2025-06-01T09:00:00Z",
                "properties": {"order_id": "1", "total": "59.90", "currency": "eur"},
            },
            signup("c1", "2025-06-01T09:00:00Z"),  # same instant as the order: file order decides
            {"type": "page_viewed", "anonymous_id": "a1", "occurred_at": "2025-05-31T23:00:00Z"},
        ],
    )
    summary = await import_file(bus, path)
    assert not summary.streamed  # out of order: sorted before publishing
    assert (summary.read, summary.imported, summary.rejected) == (5, 5, 0)
    assert (summary.historical, summary.live) == (5, 0)

    events = await events_on(bus, 5)
    assert [(e.type, e.subject) for e in events] == [
        ("page_viewed", "anon:a1"),
        ("order_completed", "c1"),
        ("signup", "c1"),
        ("signup", "c3"),
        ("signup", "c2"),
    ]
    assert all(e.historical and e.source == "import" and e.workspace_id == "shop" for e in events)
    assert {e.received_at for e in events} == {RULES.received_at}
    assert events[1].event_id == "order-1"
    assert events[1].properties["currency"] == "EUR"  # validated by the catalogue, as by the API


async def test_a_large_file_is_sorted_through_temporary_files(
    bus: EmbeddedBus, tmp_path: Path
) -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    events = [signup(f"c{i}", (start + timedelta(minutes=i)).isoformat()) for i in range(3_000)]
    random.Random(7).shuffle(events)
    path = jsonl(tmp_path / "shuffled.jsonl", events)

    with Source(path, fmt="jsonl") as source:
        validated = await validate(source, RULES, run_bytes=50_000)
    try:
        # Runs are cut per validated chunk (2,000 lines): both chunks went to disk and were merged.
        assert validated.runs.spilled_runs == 2
        assert await publish(validated.runs, bus.publisher(), batch_size=700) == 3_000
    finally:
        validated.runs.close()

    published = await events_on(bus, 3_000)
    assert [e.customer_id for e in published] == [f"c{i}" for i in range(3_000)]


def in_order(count: int, *, start: datetime = datetime(2025, 1, 1, tzinfo=UTC)) -> list[Any]:
    """Signups c0, c1, … two per second: in occurred_at order, with ties."""
    return [signup(f"c{i}", (start + timedelta(seconds=i // 2)).isoformat()) for i in range(count)]


async def test_a_file_already_in_order_is_published_while_it_is_validated(
    bus: EmbeddedBus, tmp_path: Path
) -> None:
    lines = in_order(5_000)
    lines[10] = "not json"  # a bad line does not stop the stream either
    summary = await import_file(bus, jsonl(tmp_path / "sorted.jsonl", lines))
    assert summary.streamed
    assert (summary.imported, summary.rejected, summary.spilled_runs) == (4_999, 1, 0)
    assert [e.line for e in summary.errors] == [11]
    published = await events_on(bus, 4_999)
    assert [e.customer_id for e in published] == [f"c{i}" for i in range(5_000) if i != 10]


async def test_worker_processes_stream_in_order(bus: EmbeddedBus, tmp_path: Path) -> None:
    summary = await import_file(bus, jsonl(tmp_path / "sorted.jsonl", in_order(6_000)), jobs=2)
    assert summary.streamed
    published = await events_on(bus, 6_000)
    assert [e.customer_id for e in published] == [f"c{i}" for i in range(6_000)]


async def test_a_stream_rejects_a_time_that_goes_back(bus: EmbeddedBus, tmp_path: Path) -> None:
    # Forced: the order check rules this out, and the stream still never publishes out of order.
    lines = in_order(4)
    lines[1], lines[2] = lines[2], lines[1]  # c2 (second 1) before c1 (second 0)
    summary = await import_file(bus, jsonl(tmp_path / "h.jsonl", lines), order="stream")
    assert (summary.imported, summary.rejected) == (3, 1)
    [error] = summary.errors
    assert (error.line, error.field, error.message) == (
        3,
        "occurred_at",
        "earlier than the line before",
    )
    assert [e.customer_id for e in await events_on(bus, 3)] == ["c0", "c2", "c3"]


async def test_events_after_the_cut_off_are_rejected_unless_live_is_allowed(
    bus: EmbeddedBus, tmp_path: Path
) -> None:
    path = jsonl(
        tmp_path / "mixed.jsonl",
        [
            signup("old", "2025-12-31T23:59:59Z"),
            signup("edge", NOW.isoformat()),  # at the cut-off: still history
            signup("new", "2026-01-01T00:00:01Z"),
        ],
    )
    refused = await import_file(bus, path)
    assert (refused.imported, refused.rejected) == (2, 1)
    [error] = refused.errors
    assert (error.line, error.field) == (3, "occurred_at")
    assert "after the cut-off 2026-01-01T00:00:00+00:00" in error.message
    assert "--allow-live" in error.message

    live_rules = Rules("shop", live_after=NOW, received_at=NOW, allow_live=True)
    allowed = await import_file(bus, path, live_rules)
    assert (allowed.imported, allowed.historical, allowed.live) == (3, 2, 1)

    events = await events_on(bus, 2 + 3)
    assert [(e.customer_id, e.historical) for e in events[-3:]] == [
        ("old", True),
        ("edge", True),
        ("new", False),
    ]


# --- rejects ------------------------------------------------------------------------------------


BAD_AND_GOOD = [
    signup("c1", "2025-01-01T10:00:00Z"),
    '{"type": "signup", "customer_id": ',
    signup("c2", "2025-01-01T11:00:00Z", traits={"email": "not-an-email"}),
    {"type": "signup", "customer_id": "c3"},
    {"type": "order_completed", "customer_id": "c4", "occurred_at": "2025-01-01T12:00:00Z"},
    {"type": "signup", "customer_id": "c6", "occurred_at": "2025-01-01T13:00:00"},
    {"type": "signup", "occurred_at": "2025-01-01T13:00:00Z"},
    signup("c5", "2025-01-01T14:00:00Z"),
]


async def test_bad_lines_are_reported_and_never_stop_the_good_ones(
    bus: EmbeddedBus, tmp_path: Path
) -> None:
    summary = await import_file(bus, jsonl(tmp_path / "bad.jsonl", BAD_AND_GOOD))
    assert (summary.read, summary.imported, summary.rejected) == (8, 2, 6)
    messages = {(e.line, e.field): e.message for e in summary.errors}
    assert sorted(messages) == [
        (2, "$"),  # not JSON
        (3, "traits.email"),
        (4, "occurred_at"),  # history needs a time
        (5, "properties"),  # an order without its properties
        (6, "occurred_at"),  # no zone
        (7, "$"),  # nobody
    ]
    assert messages[(2, "$")].startswith("not valid JSON")
    assert "not a valid email address" in messages[(3, "traits.email")]
    assert "history needs a time" in messages[(4, "occurred_at")]
    assert "timezone" in messages[(6, "occurred_at")]
    assert "customer_id or anonymous_id is required" in messages[(7, "$")]
    assert [e.customer_id for e in await events_on(bus, 2)] == ["c1", "c5"]


@pytest.mark.parametrize("when", ["20250301", 20250301, 1740787200, "1740787200"])
async def test_a_time_that_is_not_rfc_3339_is_rejected_not_read_as_unix_seconds(
    bus: EmbeddedBus, tmp_path: Path, when: Any
) -> None:
    # An export's basic-format date (20250301) used to be read as Unix seconds: 1970-08-23,
    # imported as history and silently wrong. Only RFC 3339 is a time.
    path = jsonl(tmp_path / "h.jsonl", [signup("c1", when), signup("c2", "2025-03-01T10:00:00Z")])
    summary = await import_file(bus, path)
    assert (summary.imported, summary.rejected) == (1, 1)
    [error] = summary.errors
    assert (error.line, error.field) == (1, "occurred_at")
    assert "RFC 3339" in error.message
    assert [e.customer_id for e in await events_on(bus, 1)] == ["c2"]


async def test_strict_imports_nothing_when_a_line_is_bad(bus: EmbeddedBus, tmp_path: Path) -> None:
    summary = await import_file(bus, jsonl(tmp_path / "bad.jsonl", BAD_AND_GOOD), strict=True)
    assert summary.aborted
    assert (summary.imported, summary.rejected) == (0, 6)
    await events_on(bus, 0)


async def test_strict_validates_a_file_in_order_before_publishing_any(
    bus: EmbeddedBus, tmp_path: Path
) -> None:
    lines = [*in_order(3_000), "not json"]  # the bad line comes after a whole chunk of good ones
    summary = await import_file(bus, jsonl(tmp_path / "sorted.jsonl", lines), strict=True)
    assert summary.aborted and not summary.streamed
    assert summary.imported == 0
    await events_on(bus, 0)


# --- idempotent re-runs -------------------------------------------------------------------------


async def test_importing_a_file_twice_publishes_the_same_ids(
    bus: EmbeddedBus, tmp_path: Path
) -> None:
    lines = [
        signup("c1", "2025-01-01T10:00:00Z", event_id="given-1"),
        signup("c2", "2025-01-01T11:00:00Z"),
        {"type": "page_viewed", "anonymous_id": "a1", "occurred_at": "2025-01-01T12:00:00Z"},
    ]
    path = jsonl(tmp_path / "history.jsonl", lines)
    await import_file(bus, path)
    await import_file(bus, path)
    first, second = (await events_on(bus, 6))[:3], (await events_on(bus, 6, group="again"))[3:]
    assert [e.event_id for e in first] == [e.event_id for e in second]
    assert first[0].event_id == "given-1"
    assert all(e.event_id.startswith("imp_") for e in first[1:])
    assert len({e.event_id for e in first}) == 3


def test_derived_ids_follow_content_and_workspace_not_field_order() -> None:
    line = signup("c1", "2025-01-01T10:00:00Z")
    reordered = dict(reversed(list(line.items())))
    assert derive_event_id("shop", line) == derive_event_id("shop", reordered)
    assert derive_event_id("shop", line) != derive_event_id("other", line)
    assert derive_event_id("shop", line) != derive_event_id(
        "shop", signup("c1", "2025-01-01T10:00:01Z")
    )


def test_a_value_json_cannot_carry_rejects_its_line_only() -> None:
    # Python's integers have no bound (a decoder could hand one over); JSON on the wire stops at
    # 64 bits, which orjson enforces when encoding the envelope.
    line = {"type": "points_granted", "customer_id": "c", "occurred_at": "2025-01-01T10:00:00Z"}
    assert not isinstance(prepare({**line, "properties": {"n": 2**63 - 1}}, 1, RULES), list)
    errors = prepare({**line, "properties": {"n": 2**70}}, 2, RULES)
    assert isinstance(errors, list)
    [error] = errors
    assert (error.line, error.field) == (2, "$")
    assert "cannot be encoded: Integer exceeds 64-bit range" in error.message


# --- the envelope -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        signup("c1", "2025-06-01T12:00:00+02:00", event_id="e1"),
        {
            "type": "order_completed",
            "event_id": "e2",
            "customer_id": "c1",
            "occurred_at": "2025-06-01T12:00:00Z",
            "channel": "pos",  # unknown top-level field: kept in context.extra
            "context": {"ip": "203.0.113.9", "extra": {"mine": 1}},
            "traits": {"phone": "030 1234567", "country": "de", "email": None},
            "properties": {
                "order_id": "1",
                "total": 59.9,
                "currency": "eur",
                "gift_wrap": True,
                "items": [{"product_id": "p1", "price": "29.95", "quantity": 2}],
            },
        },
        {
            "type": "Wishlist Shared",
            "event_id": "e3",
            "anonymous_id": "a1",
            "occurred_at": "2025-06-01T12:00:00.123456-05:00",
            "properties": {"list": [1, 2], "nested": {"a": None}},
        },
        {
            "type": "identify",
            "event_id": "e4",
            "customer_id": "c9",
            "occurred_at": "2025-06-01T00:00:00Z",
            "traits": {"first_name": "Ana", "vip": True},
        },
    ],
)
@pytest.mark.parametrize("historical", [True, False])
def test_the_import_envelope_is_the_api_envelope(data: dict[str, Any], historical: bool) -> None:
    event = parse_event(data)
    assert event.occurred_at is not None and event.event_id is not None
    key, headers, value = encode_envelope(
        event,
        event_id=event.event_id,
        occurred=event.occurred_at.astimezone(UTC),
        rules=RULES,
        historical=historical,
    )
    expected = to_envelope(
        event,
        workspace_id=RULES.workspace_id,
        received_at=RULES.received_at,
        source="import",
        historical=historical,
    )
    assert EventEnvelope.from_json(value) == expected
    assert orjson.loads(headers) == expected.headers()
    assert key == expected.key


# --- worker processes and failures --------------------------------------------------------------


async def test_worker_processes_validate_exactly_like_one_process(tmp_path: Path) -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    lines: list[dict[str, Any] | str] = [
        signup(f"c{i}", (start + timedelta(seconds=i * 7919 % 5000)).isoformat())
        for i in range(5_000)
    ]
    lines[1234] = "not json"
    path = jsonl(tmp_path / "history.jsonl", lines)
    results = []
    for jobs in (1, 2):
        with Source(path, fmt="jsonl") as source:
            validated = await validate(source, RULES, jobs=jobs)
        try:
            results.append(
                (validated.read, validated.rejected, validated.errors, list(validated.runs))
            )
        finally:
            validated.runs.close()
    assert results[0] == results[1]
    assert results[0][:2] == (5_000, 1)


class FailingPublisher:
    """Accepts ``accept`` batches, then refuses like a full disk would."""

    def __init__(self, accept: int) -> None:
        self.accept = accept
        self.published: list[OutgoingRecord] = []

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        if self.accept == 0:
            raise BusError("disk full")
        self.accept -= 1
        self.published.extend(records)


async def test_a_refused_batch_reports_how_far_the_import_got(tmp_path: Path) -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    path = jsonl(
        tmp_path / "h.jsonl",
        [signup(f"c{i}", (start + timedelta(seconds=i)).isoformat()) for i in range(25)],
    )
    publisher = FailingPublisher(accept=2)
    with Source(path, fmt="jsonl") as source, pytest.raises(PublishError) as caught:
        await run_import(source, RULES, publisher, jobs=1, batch_size=10)
    assert caught.value.published == 20 == len(publisher.published)
    assert "disk full" in str(caught.value)


# --- the command --------------------------------------------------------------------------------


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """CICLO_DATA_DIR for the command, with the workspace ``shop`` in its database."""
    data = tmp_path / "data"
    monkeypatch.setenv("CICLO_DATA_DIR", str(data))
    monkeypatch.setenv("CICLO_BUS_PARTITIONS", "1")

    async def create() -> None:
        url = CommonSettings().resolved_database_url()
        await upgrade(url, components_for(ALL))
        engine = create_engine(url)
        try:
            await KeyStore(engine).ensure_workspace("shop")
        finally:
            await engine.dispose()

    asyncio.run(create())
    return data


def bus_events(data: Path) -> list[EventEnvelope]:
    async def read() -> list[EventEnvelope]:
        bus = EmbeddedBus(data / "bus.db", partitions=1, sync="normal")
        await bus.start()
        try:
            consumer = bus.consumer(group="check", topics=[EVENTS])
            await consumer.start()
            records = await consumer.poll(max_records=10_000, timeout=0.5)
            await consumer.stop()
        finally:
            await bus.close()
        return [EventEnvelope.from_json(r.value) for r in records]

    return asyncio.run(read())


def test_command_imports_a_mapped_csv(data_dir: Path, tmp_path: Path) -> None:
    csv = tmp_path / "orders.csv"
    csv.write_text(
        "OrderID,CustomerID,Date,Amount,Currency,Email\n"
        "1001,c1,2025-03-01T10:00:00Z,59.90,EUR,ana@example.com\n"
        "1002,c2,2025-02-01T10:00:00Z,-5,EUR,bo@example.com\n"
        "1003,c3,2025-01-01T10:00:00Z,12.00,EUR,cy@example.com\n"
    )
    result = CliRunner().invoke(
        import_events,
        [
            str(csv),
            "--workspace=shop",
            "--type=order_completed",
            "--live-after=2025-12-31T00:00:00+01:00",
            "--map=properties.order_id=OrderID",
            "--map=customer_id=CustomerID",
            "--map=occurred_at=Date",
            "--map=properties.total=Amount",
            "--map=properties.currency=Currency",
            "--map=traits.email=Email",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "cut-off 2025-12-30T23:00:00+00:00" in result.stderr
    assert "imported 2 (2 historical, 0 live), rejected 1" in result.stdout
    assert "line 3: properties.total: Input should be greater than or equal to 0" in result.stdout
    events = bus_events(data_dir)
    assert [(e.type, e.properties["order_id"], e.historical) for e in events] == [
        ("order_completed", "1003", True),
        ("order_completed", "1001", True),
    ]


def test_command_needs_an_existing_workspace(data_dir: Path, tmp_path: Path) -> None:
    path = jsonl(tmp_path / "h.jsonl", [signup("c1", "2025-01-01T10:00:00Z")])
    result = CliRunner().invoke(import_events, [str(path)])  # default workspace: demo
    assert result.exit_code == 1
    assert "workspace 'demo' does not exist: create it with `ciclo workspaces create demo`" in (
        result.stderr
    )


def test_command_strict_exits_non_zero_and_imports_nothing(data_dir: Path, tmp_path: Path) -> None:
    path = jsonl(tmp_path / "h.jsonl", BAD_AND_GOOD)
    result = CliRunner().invoke(import_events, [str(path), "--workspace=shop", "--strict"])
    assert result.exit_code == 1
    assert "--strict: a line was rejected, so nothing was imported" in result.stderr
    assert bus_events(data_dir) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--live-after=2025-01-01T00:00:00"], "has no zone"),
        (["--live-after=yesterday"], "is not a timestamp"),
        (["--map=customer_id=Id"], "--map applies to CSV files"),
    ],
)
def test_command_refuses_bad_options(
    data_dir: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    path = jsonl(tmp_path / "h.jsonl", [signup("c1", "2025-01-01T10:00:00Z")])
    result = CliRunner().invoke(import_events, [str(path), "--workspace=shop", *args])
    assert result.exit_code == 2
    assert message in result.stderr
