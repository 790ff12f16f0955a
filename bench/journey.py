"""Journey-engine benchmark, in process (no HTTP, no bus): ``python -m bench --only journey``.

Every measurement runs in a fresh child process (``python -m bench.journey ...``) on a freshly
migrated database, after another child seeded it, so that a child's peak RSS is its own work:

1. Event throughput. A realistic stream (sessions of many customers interleaved, as a partition
   of the events topic sees them: page and product views, cart updates, checkouts, orders,
   signups, identifies) over N customers (90 % of them already have a profile, as after an
   import of history) goes through the real ``handle_events`` with the real unit of work, in
   batches of ``journey_batch_size``: each batch is decoded from its records' bytes
   (``decode_events``) and handled in one transaction, which is what ``JourneyWorker.handle``
   does. Timed per batch: decode + handle + commit; the stream is generated between batches,
   outside the timing. With the six journeys of ``bench/journey_defs.py``; as the baseline of
   the same run, with none (profile upkeep and idempotency marks only); and as the floor, with
   none and customer intelligence off (the pipeline alone); on SQLite and PostgreSQL.
2. Timers. Runs blocked on a ``wait`` step whose next step sends (their customers, runs and rows
   in journey_timers) are seeded straight into the tables, due uniformly over a window (N timers
   over W s = N/W timers/s demanded). Real ``TimerPoller``s (``run()``, the production loop) fire
   them on a clock in step with wall time. Lateness per timer is exact: the firing transaction
   stamps the run's ``updated_at`` with the poller's ``now`` (what the poller's own histogram
   observes) and the poller's ``after_commit`` hook gives each round's commit time. Then the
   clock jumps past the window: every timer left is due at once and the pollers catch up, which
   measures their capacity with a large backlog.
3. Memory: the event stream at several customer counts; peak RSS of each child.
4. Timers beside a saturated consumer: fewer timers at the same rate, fired by the same poller
   while the event consumer runs flat out in the same event loop and engine (``Saturation``), as
   in ``JourneyWorker``; the timers' lateness and both rates.
5. Where the event time goes: the event loop's own CPU per event (``main_cpu_us_per_event``),
   and two consumers at once in one process, each on its own database, against one alone
   (``run_concurrent``): how much of a consumer's waits for the database other work can fill.
6. Larger batches (``journey_batch_size`` raised, as an operator may): the event stream with the
   six journeys in batches larger than the default, and the timers beside a saturated consumer
   whose batches are that large: what a batch's size buys in events/s and what it costs in a
   batch's duration and in the lateness of timers due meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib
import inspect
import json
import math
import os
import random
import resource
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import uvloop

from bench.journey_defs import WAITING_RUNS, catalog

WORKSPACE = "demo"
PYTHON = sys.executable
REPO = Path(__file__).resolve().parents[1]
EVENT_TARGET = 10_000.0  # events/s per journey process
LATENESS_TARGET = 1.0  # s, p99
MEMORY_GROWTH_LIMIT = 0.10  # peak RSS may grow this much from the fewest to the most customers


def _log(message: str) -> None:
    print(f"[bench.journey {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def rss_mb() -> float:
    """Resident set size now (MiB)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MiB; ru_maxrss is KiB on Linux)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Exact percentile (nearest rank) of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# ── The event stream ──────────────────────────────────────────────────────────────────────────

PATHS = ("/", "/", "/collections/new", "/collections/sale", "/blog/care-guide", "/about", "/faq")
TIMEZONES = ("Europe/Berlin", "Europe/London", "America/New_York", "America/Chicago", "UTC")
FIRST_NAMES = ("Ada", "Ben", "Chloé", "Dev", "Ema", "Finn", "Grace", "Hugo", "Ines", "Jon")
SESSION_KINDS = ("browse", "cart", "purchase", "signup", "identify")
SESSION_WEIGHTS = (45, 20, 15, 10, 10)
# With ``email=True`` (the customer-intelligence benchmark): a fifth of the sessions are the
# life of a marketing email instead (sent, delivered, opened, clicked, the landing page).
EMAIL_SESSION_KINDS = (*SESSION_KINDS, "email")
EMAIL_SESSION_WEIGHTS = (36, 16, 12, 8, 8, 20)
NEWSLETTERS = ("newsletter-weekly", "new-arrivals", "sale-teaser")
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131"
Planned = tuple[str, str, dict[str, Any], dict[str, Any]]  # customer id, type, props, traits


@dataclass
class StreamRecord:
    """What ``decode_events`` reads of a consumed record."""

    value: bytes
    key: str


def customer_id(c: int) -> str:
    return f"cust-{c:07d}"


class EventStream:
    """Sessions of ``customers`` customers, ``concurrent`` of them open at once and interleaved.

    Customers come in a scrambled order, each once before any comes back. Sessions: browse
    (45 %: page and product views; 15 % of them reach /pricing), cart (20 %: views, 1-3 updates
    of one cart, a checkout in 30 %; abandoned), purchase (15 %: the same, a checkout, then the
    order of that cart), signup (10 %: traits email, name, time zone, vip) and identify (10 %:
    traits change, then a product view). Generator state is bounded by the open sessions, not by
    the number of customers.

    ``email``: 20 % of the sessions are a marketing email's events as dispatch and the provider
    webhooks report them (``message_sent``, ``message_delivered``; 60 % opened, 40 % of those
    clicked, then the landing page), the others keep their proportions. ``first``: the number of
    the first customer (customers ``first`` to ``first + customers - 1``).
    """

    def __init__(
        self,
        customers: int,
        *,
        seed: int = 7,
        concurrent: int = 2000,
        email: bool = False,
        first: int = 0,
    ) -> None:
        self.customers = customers
        self.first = first
        self.rng = random.Random(seed)
        self._kinds = EMAIL_SESSION_KINDS if email else SESSION_KINDS
        self._weights = EMAIL_SESSION_WEIGHTS if email else SESSION_WEIGHTS
        self._open: list[list[Planned]] = []
        self._concurrent = concurrent
        self._ids = self._customer_ids()
        self.sessions = 0

    def _customer_ids(self) -> Iterator[int]:
        n = self.customers
        mult = 2654435761 % n or 1
        while math.gcd(mult, n) != 1:
            mult += 1
        k = 0
        while True:
            yield self.first + (k * mult + 12345) % n
            k += 1

    def _session(self, c: int) -> list[Planned]:
        rng = self.rng
        cid = customer_id(c)
        kind = rng.choices(self._kinds, self._weights)[0]
        events: list[Planned] = []

        def page(path: str) -> None:
            url = f"https://shop.example.com{path}"
            props = {"url": url, "path": path, "title": "Shop", "referrer": ""}
            events.append((cid, "page_viewed", props, {}))

        def product() -> dict[str, Any]:
            p = rng.randrange(5000)
            item = {
                "product_id": f"sku-{p:05d}",
                "name": f"Product {p}",
                "category": rng.choice(("shoes", "shirts", "bags", "hats")),
                "price": f"{rng.randrange(900, 19900) / 100:.2f}",
                "currency": "EUR",
            }
            events.append((cid, "product_viewed", item, {}))
            return item

        if kind == "email":
            self._email(cid, events)
            events.reverse()  # popped from the end
            return events
        page(rng.choice(PATHS))
        if kind == "signup":
            page("/signup")
            traits = {
                "email": f"{cid}@example.com",
                "first_name": rng.choice(FIRST_NAMES),
                "timezone": rng.choice(TIMEZONES),
                "vip": rng.random() < 0.1,
            }
            events.append((cid, "signup", {}, traits))
        elif kind == "identify":
            changed: dict[str, Any] = {"email": f"{cid}@example.com", "vip": rng.random() < 0.1}
            if rng.random() < 0.5:
                changed["first_name"] = rng.choice(FIRST_NAMES)
            events.append((cid, "identify", {}, changed))
            product()
        elif kind == "browse":
            for _ in range(rng.randint(1, 4)):
                product()
            if rng.random() < 0.15:
                page("/pricing")
        else:
            cart_id = f"cart-{uuid.UUID(int=rng.getrandbits(128)).hex[:16]}"
            items: list[dict[str, Any]] = []
            total = "0.00"
            for _ in range(rng.randint(1, 3)):
                item = product()
                items.append({"product_id": item["product_id"], "price": item["price"]})
                total = f"{sum(float(i['price']) for i in items):.2f}"
                cart = {"cart_id": cart_id, "items": list(items), "total": total}
                events.append((cid, "cart_updated", {**cart, "currency": "EUR"}, {}))
            order = {"cart_id": cart_id, "items": items, "total": total, "currency": "EUR"}
            if kind == "purchase" or rng.random() < 0.3:
                checkout = {"checkout_id": f"co-{cart_id[5:]}", **order}
                events.append((cid, "checkout_started", checkout, {}))
            if kind == "purchase":
                events.append(
                    (cid, "order_completed", {"order_id": f"o-{cart_id[5:]}", **order}, {})
                )
        events.reverse()  # popped from the end
        return events

    def _email(self, cid: str, events: list[Planned]) -> None:
        """A marketing email's events, with the properties dispatch and its webhooks give them."""
        rng = self.rng
        template = rng.choice(NEWSLETTERS)
        message = {
            "message_id": uuid.UUID(int=rng.getrandbits(128), version=4).hex,
            "channel": "email",
            "template": template,
        }
        sent = {
            **message,
            "category": "marketing",
            "journey_id": "newsletter",
            "journey_version": 1,
            "step": "send",
            "provider": "sendgrid",
            "attempts": 1,
        }
        events.append((cid, "message_sent", sent, {}))
        events.append((cid, "message_delivered", {**message, "provider": "sendgrid"}, {}))
        if rng.random() < 0.6:
            events.append((cid, "message_opened", {**message, "provider": "sendgrid"}, {}))
            if rng.random() < 0.4:
                url = f"https://shop.example.com/collections/new?utm_campaign={template}"
                clicked = {**message, "provider": "sendgrid", "url": url}
                events.append((cid, "message_clicked", clicked, {}))
                path = "/collections/new"
                props = {"url": url, "path": path, "title": "Shop", "referrer": ""}
                events.append((cid, "page_viewed", props, {}))

    def batch(self, size: int, now: datetime) -> list[StreamRecord]:
        rng = self.rng
        out = []
        stamp = now.isoformat().replace("+00:00", "Z")
        for _ in range(size):
            while len(self._open) < self._concurrent:
                self._open.append(self._session(next(self._ids)))
                self.sessions += 1
            i = rng.randrange(len(self._open))
            session = self._open[i]
            cid, type_, properties, traits = session.pop()
            if not session:
                self._open[i] = self._open[-1]
                self._open.pop()
            value = orjson.dumps(
                {
                    "schema_version": 1,
                    "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    "workspace_id": WORKSPACE,
                    "customer_id": cid,
                    "anonymous_id": None,
                    "type": type_,
                    "occurred_at": stamp,
                    "received_at": stamp,
                    "source": "dispatch" if type_.startswith("message_") else "api",
                    "properties": properties,
                    "traits": traits,
                    "context": {"ip": "203.0.113.7", "user_agent": USER_AGENT, "locale": "de-DE"},
                    "historical": False,
                }
            )
            out.append(StreamRecord(value=value, key=f"{WORKSPACE}:{cid}"))
        return out


# ── Seeding ───────────────────────────────────────────────────────────────────────────────────


def _sqlite_when(value: datetime) -> str:
    """How SQLAlchemy's SQLite DateTime stores a (naive UTC) value."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _db_when(url: str, value: datetime) -> Any:
    return _sqlite_when(value) if url.startswith("sqlite") else value


def profile(c: int, *, seen: datetime, entries: dict[str, str]) -> dict[str, Any]:
    cid = customer_id(c)
    return {
        "workspace_id": WORKSPACE,
        "customer_id": cid,
        "traits": {
            "email": f"{cid}@example.com",
            "first_name": FIRST_NAMES[c % len(FIRST_NAMES)],
            "timezone": TIMEZONES[c % len(TIMEZONES)],
            "vip": c % 10 == 0,
        },
        "first_seen_at": seen,
        "last_seen_at": seen,
        "scores": {},
        "entries": entries,
        "ledger": [],
        "schedules": {},
    }


@dataclass(frozen=True)
class TimerSeed:
    """``timers`` runs over ``timers // runs_per_customer`` customers, due uniformly from
    ``base + lead`` over ``window`` seconds: run i is due at base + lead + (i + ½) · window / n."""

    timers: int
    window: float
    base: datetime
    lead: float = 2.0
    runs_per_customer: int = 4

    @property
    def customers(self) -> int:
        return max(1, self.timers // self.runs_per_customer)

    def due(self, i: int) -> datetime:
        return self.base + timedelta(seconds=self.lead + (i + 0.5) * self.window / self.timers)

    def due_index_until(self, when: datetime) -> int:
        """How many runs are due at or before ``when``."""
        offset = (when - self.base).total_seconds() - self.lead
        return max(0, min(self.timers, math.floor(offset * self.timers / self.window + 0.5)))

    def customer(self, i: int) -> int:
        # A bijection of i mod C: a customer's runs are due window / runs_per_customer apart.
        c = self.customers
        return (i * 2654435761) % c if math.gcd(2654435761, c) == 1 else i % c

    def run(self, i: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """(instance, timer) columns of run i."""
        k = i // self.customers + self.customer(i)
        journey_id, step, trigger_type = WAITING_RUNS[k % len(WAITING_RUNS)]
        cid = customer_id(self.customer(i))
        due = self.due(i)
        entered = self.base - timedelta(hours=1)
        run_id = f"bench{i:019d}"
        key = None
        properties: dict[str, Any] = {}
        visits: dict[str, int] = {}
        goal_until = None
        if journey_id == "cart-abandonment":
            key = f"cart-{i:010d}"
            properties = {"cart_id": key, "total": "59.90", "currency": "EUR"}
            visits = {"remind": 1}
        elif journey_id == "post-purchase":
            properties = {"order_id": f"o-{i}", "total": "59.90", "currency": "EUR"}
            visits = {"thanks": 1}
        elif journey_id == "welcome":
            visits = {"hello": 1}
            goal_until = entered + timedelta(days=14)
        elif journey_id == "win-back":
            visits = {"miss_you": 1}
        elif journey_id == "pricing-split":
            properties = {"path": "/pricing"}
        instance = {
            "workspace_id": WORKSPACE,
            "run_id": run_id,
            "customer_id": cid,
            "journey_id": journey_id,
            "version": 1,
            "step": step,
            "status": "active",
            "entered_at": entered,
            "updated_at": entered,
            "wake_at": due,
            "waiting": "wait",
            "key": key,
            "trigger": {"type": trigger_type, "id": f"ev-{i}", "properties": properties},
            "holdout": False,
            "goal_until": goal_until,
            "goal_at": None,
            "exit_reason": None,
            "visits": visits,
        }
        timer = {
            "workspace_id": WORKSPACE,
            "customer_id": cid,
            "name": f"run:{run_id}",
            "due_at": due,
            "leased_until": None,
        }
        return instance, timer


INSTANCE_COLUMNS = (
    "workspace_id",
    "run_id",
    "customer_id",
    "journey_id",
    "version",
    "step",
    "status",
    "entered_at",
    "updated_at",
    "wake_at",
    "waiting",
    "key",
    "trigger",
    "holdout",
    "goal_until",
    "goal_at",
    "exit_reason",
    "visits",
)
TIMER_COLUMNS = ("workspace_id", "customer_id", "name", "due_at", "leased_until")
CUSTOMER_COLUMNS = (
    "workspace_id",
    "customer_id",
    "traits",
    "first_seen_at",
    "last_seen_at",
    "scores",
    "entries",
    "ledger",
    "schedules",
)
JSON_COLUMNS = {
    "trigger",
    "visits",
    "traits",
    "scores",
    "entries",
    "ledger",
    "schedules",
    "profile",
    "lead",
    "segment_state",
    "insights",
    "timeline",
}
CHUNK = 20_000
Chunks = Callable[[], Iterator[list[dict[str, Any]]]]


def _values(row: dict[str, Any], columns: tuple[str, ...], sqlite_: bool) -> tuple[Any, ...]:
    out = []
    for column in columns:
        value = row[column]
        if column in JSON_COLUMNS:
            value = json.dumps(value)
        elif isinstance(value, datetime) and sqlite_:
            value = _sqlite_when(value)
        elif isinstance(value, bool) and sqlite_:
            value = int(value)
        out.append(value)
    return tuple(out)


def _chunked(rows: Callable[[int, int], Iterator[dict[str, Any]]], n: int) -> Chunks:
    def chunks() -> Iterator[list[dict[str, Any]]]:
        for start in range(0, n, CHUNK):
            yield list(rows(start, min(start + CHUNK, n)))

    return chunks


async def write_rows(
    url: str, plan: list[tuple[str, tuple[str, ...], Chunks]], *, analyze: bool
) -> None:
    """SQLite: plain sqlite3 executemany, a transaction per chunk of 20,000 rows. PostgreSQL:
    COPY per chunk, then VACUUM ANALYZE of the seeded tables when ``analyze``."""
    if url.startswith("sqlite"):
        db = sqlite3.connect(url.split(":///", 1)[1])
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            for table, columns, chunks in plan:
                names = ", ".join(f'"{c}"' for c in columns)
                marks = ", ".join("?" * len(columns))
                sql = f"INSERT INTO {table} ({names}) VALUES ({marks})"
                for chunk in chunks():
                    db.executemany(sql, [_values(r, columns, True) for r in chunk])
                    db.commit()
        finally:
            db.close()
        return
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        for table, columns, chunks in plan:
            for chunk in chunks():
                await conn.copy_records_to_table(
                    table, records=[_values(r, columns, False) for r in chunk], columns=columns
                )
        if analyze:
            for table, _, _ in plan:
                await conn.execute(f"VACUUM ANALYZE {table}")
    finally:
        await conn.close()


async def migrate(url: str) -> None:
    from services.components import COMPONENTS
    from shared.db.migrate import upgrade

    await upgrade(url, [COMPONENTS["journey"]])


MEMBER_COLUMNS = ("workspace_id", "segment_id", "customer_id", "entered_at")


def decided(row: dict[str, Any], intel: Any) -> tuple[dict[str, Any], Any]:
    """``row`` (a seeded profile) with the facts customer-intelligence upkeep decides for it
    when it is imported, and those facts: the real ``intelligence.refresh`` in full at the
    import (its ``last_seen_at``), as a running deployment decided every stored customer
    (band, stage, segment membership from the traits; no profile or score yet, since the
    seeded history has no events). The derived events of that decision are long published."""
    from services.journey.adapters.repository import facts_columns
    from services.journey.domain import intelligence
    from services.journey.domain.intelligence import Facts

    facts = Facts()
    intelligence.refresh(
        facts,
        traits=row["traits"],
        first_seen_at=row["first_seen_at"],
        last_seen_at=row["last_seen_at"],
        intel=intel,
        now=row["last_seen_at"],
        cause="import",
        workspace_id=row["workspace_id"],
        customer_id=row["customer_id"],
        full=True,
    )
    return {**row, **facts_columns(facts)}, facts


async def seed_customers(
    url: str, customers: int, known_share: float, *, facts: bool = False
) -> dict[str, Any]:
    """Profiles (traits, no runs) for ``known_share`` of the customers, as after an import of
    history; the others are new to the journey service when their first event comes.

    ``facts`` (the benchmark of customer-intelligence upkeep on): each profile also has the
    facts upkeep decided for it at the import (``decided``), its segment memberships in
    ``journey_segment_members`` and its ``intel`` timer when time alone will change them, as
    in a deployment that ran upkeep since the import. Without it the stored customers have
    never been decided, so upkeep decides each in full on its first event."""
    from services.journey.adapters.repository import FACTS_COLUMNS
    from services.journey.domain.customer import INTEL_TIMER

    await migrate(url)
    seen = datetime.now(UTC) - timedelta(days=30)
    cut = round(known_share * 100)
    intel = intel_rules("on") if facts else None
    members: list[dict[str, Any]] = []
    due: list[dict[str, Any]] = []

    def rows(start: int, stop: int) -> Iterator[dict[str, Any]]:
        for c in range(start, stop):
            if c % 100 >= cut:
                continue
            row = profile(c, seen=seen, entries={})
            if intel is None:
                yield row
                continue
            row, decided_facts = decided(row, intel)
            members.extend(
                {
                    "workspace_id": WORKSPACE,
                    "segment_id": segment,
                    "customer_id": row["customer_id"],
                    "entered_at": at,
                }
                for segment, at in decided_facts.segments.members.items()
            )
            if decided_facts.due is not None:
                due.append(
                    {
                        "workspace_id": WORKSPACE,
                        "customer_id": row["customer_id"],
                        "name": INTEL_TIMER,
                        "due_at": decided_facts.due,
                        "leased_until": None,
                    }
                )
            yield row

    columns = CUSTOMER_COLUMNS + (FACTS_COLUMNS if facts else ())
    plan = [("journey_customers", columns, _chunked(rows, customers))]
    if facts:  # listed once the customers are written: computing their rows fills them
        plan += [
            ("journey_segment_members", MEMBER_COLUMNS, _listed(members)),
            ("journey_timers", TIMER_COLUMNS, _listed(due)),
        ]
    begin = time.perf_counter()
    await write_rows(url, plan, analyze=True)
    return {
        "profiles": sum(1 for c in range(customers) if c % 100 < cut),
        "facts": facts,
        "segment_members": len(members),
        "intel_timers": len(due),
        "seed_s": round(time.perf_counter() - begin, 1),
    }


def _listed(rows: list[dict[str, Any]]) -> Chunks:
    def chunks() -> Iterator[list[dict[str, Any]]]:
        for start in range(0, len(rows), CHUNK):
            yield rows[start : start + CHUNK]

    return chunks


async def seed_timers(url: str, seed: TimerSeed) -> dict[str, Any]:
    await migrate(url)
    entered = (seed.base - timedelta(hours=1)).isoformat()
    entries = {j: entered for j, _, _ in WAITING_RUNS}

    def customers(start: int, stop: int) -> Iterator[dict[str, Any]]:
        for c in range(start, stop):
            yield profile(c, seen=seed.base - timedelta(days=30), entries=entries)

    def runs(which: int) -> Callable[[int, int], Iterator[dict[str, Any]]]:
        def rows(start: int, stop: int) -> Iterator[dict[str, Any]]:
            for i in range(start, stop):
                yield seed.run(i)[which]

        return rows

    begin = time.perf_counter()
    await write_rows(
        url,
        [
            ("journey_customers", CUSTOMER_COLUMNS, _chunked(customers, seed.customers)),
            ("journey_instances", INSTANCE_COLUMNS, _chunked(runs(0), seed.timers)),
            ("journey_timers", TIMER_COLUMNS, _chunked(runs(1), seed.timers)),
        ],
        analyze=True,
    )
    return {"seed_s": round(time.perf_counter() - begin, 1), "customers": seed.customers}


async def table_counts(url: str) -> dict[str, int]:
    from sqlalchemy import text

    from shared.db.engine import create_engine

    engine = create_engine(url)
    counts = {}
    try:
        async with engine.connect() as conn:
            for table in (
                "journey_customers",
                "journey_instances",
                "journey_timers",
                "journey_outbox",
                "journey_activity",
                "journey_processed_events",
            ):
                n = (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
                counts[table.removeprefix("journey_")] = int(n)
            if conn.dialect.name == "postgresql":
                size = await conn.execute(text("SELECT pg_database_size(current_database())"))
                counts["database_mb"] = round(size.scalar_one() / 2**20)
    finally:
        await engine.dispose()
    if url.startswith("sqlite"):
        db_bytes: int = await asyncio.to_thread(os.path.getsize, url.split(":///", 1)[1])
        counts["database_mb"] = round(db_bytes / 2**20)
    return counts


CHILD_LOOP = "uvloop"
"""The event loop every child runs on (``run_child``): the one of every `ciclo serve` process
(uvicorn's loop "auto" picks uvloop, which uvicorn[standard] installs), so the journey code is
measured on the loop it has in production."""


def run_child(work: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """Run a child's measurement on ``CHILD_LOOP``."""
    return uvloop.run(work)


# ── Where the time goes ───────────────────────────────────────────────────────────────────────

EVENT_PHASES = (
    ("services.journey.bootstrap", None, "decode_events", "decode"),
    ("services.journey.adapters.repository", "ProcessedEvents", "seen", "seen"),
    ("services.journey.adapters.repository", "CustomerStates", "load", "load"),
    ("services.journey.service_layer.handlers", None, "apply_event", "apply_event"),
    ("services.journey.adapters.repository", "CustomerStates", "save", "save"),
    ("services.journey.adapters.repository", "CustomerStates", "record", "record"),
    ("services.journey.adapters.repository", "CustomerStates", "record_orders", "orders"),
    ("services.journey.adapters.repository", "CustomerStates", "record_membership", "members"),
    ("services.journey.service_layer.uow", "JourneyUnitOfWork", "emit", "emit"),
    ("services.journey.adapters.repository", "ProcessedEvents", "mark", "mark"),
    ("shared.db.uow", "SqlUnitOfWork", "commit", "commit"),
)
TIMER_PHASES = (
    ("services.journey.adapters.repository", "Timers", "lease_due", "lease_due"),
    ("services.journey.adapters.repository", "Timers", "count_due", "count_due"),
    ("services.journey.adapters.repository", "CustomerStates", "load", "load"),
    ("services.journey.service_layer.handlers", None, "apply_timer", "apply_timer"),
    ("services.journey.adapters.repository", "CustomerStates", "save", "save"),
    ("services.journey.adapters.repository", "CustomerStates", "record", "record"),
    ("services.journey.service_layer.uow", "JourneyUnitOfWork", "emit", "emit"),
    ("shared.db.uow", "SqlUnitOfWork", "commit", "commit"),
)


class Phases:
    """Wall time spent in each step of a handler, by wrapping (in this benchmark process only)
    the repository methods and domain functions it calls. The wrappers cost a few microseconds
    per batch; the rest of a batch's time is "other" (sessions, building message requests, the
    loop between the steps)."""

    def __init__(self, targets: tuple[tuple[str, str | None, str, str], ...]) -> None:
        self.targets = targets
        self.seconds: dict[str, float] = {}
        self.missing: list[str] = []

    def install(self) -> Phases:
        for module_name, owner_name, attr, label in self.targets:
            module = importlib.import_module(module_name)
            owner = getattr(module, owner_name) if owner_name else module
            original = getattr(owner, attr, None)
            if original is None:
                self.missing.append(f"{owner_name or module_name}.{attr}")
                continue
            self.seconds[label] = 0.0
            setattr(owner, attr, self._wrap(original, label))
        return self

    def _wrap(self, fn: Any, label: str) -> Any:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def timed_async(*args: Any, **kw: Any) -> Any:
                begin = time.perf_counter()
                try:
                    return await fn(*args, **kw)
                finally:
                    self.seconds[label] += time.perf_counter() - begin

            return timed_async

        @functools.wraps(fn)
        def timed(*args: Any, **kw: Any) -> Any:
            begin = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                self.seconds[label] += time.perf_counter() - begin

        return timed

    def shares(self, total: float) -> dict[str, float]:
        return shares_of(self.seconds, total)


class Statements:
    """Wall time of each kind of SQL statement ("UPDATE journey_customers", ...), by wrapping
    ``AsyncSession.execute`` and ``AsyncConnection.exec_driver_sql`` (SQLite's bulk writes hand
    compiled SQL to the driver, ``shared.db.bulk``) in this benchmark process: round trip,
    parameter and result processing included (rows are fetched by the caller, after this
    returns)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.rows: dict[str, int] = {}

    def install(self) -> Statements:
        from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

        AsyncSession.execute = self._timed(  # type: ignore[method-assign]
            AsyncSession.execute, _statement_kind
        )
        AsyncConnection.exec_driver_sql = self._timed(  # type: ignore[method-assign]
            AsyncConnection.exec_driver_sql, _sql_kind
        )
        return self

    def _timed(self, original: Any, kind_of: Callable[[Any], str]) -> Any:
        """``original`` (a method taking a statement and its parameters), timed per kind."""

        @functools.wraps(original)
        async def timed(owner: Any, statement: Any, params: Any = None, *a: Any, **kw: Any) -> Any:
            begin = time.perf_counter()
            try:
                return await original(owner, statement, params, *a, **kw)
            finally:
                kind = kind_of(statement)
                self.seconds[kind] = self.seconds.get(kind, 0.0) + time.perf_counter() - begin
                self.calls[kind] = self.calls.get(kind, 0) + 1
                n = len(params) if isinstance(params, list) else 1
                self.rows[kind] = self.rows.get(kind, 0) + n

        return timed

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()
        self.rows.clear()

    def per_batch(self, batches: int) -> dict[str, dict[str, float]]:
        """ms per batch and rows per call of each kind, slowest first."""
        batches = max(batches, 1)
        return {
            kind: {
                "ms_per_batch": round(1000 * secs / batches, 1),
                "rows_per_call": round(self.rows[kind] / self.calls[kind], 1),
            }
            for kind, secs in sorted(self.seconds.items(), key=lambda kv: -kv[1])
        }


def _statement_kind(statement: Any) -> str:
    """ "UPDATE journey_customers", "SELECT … FOR UPDATE journey_timers", "SELECT count(*)
    journey_timers" (a select from a subquery: the subquery's table)."""
    verb = str(getattr(statement, "__visit_name__", "text")).upper()
    if verb == "TEXTCLAUSE":  # written as SQL text
        return _sql_kind(str(getattr(statement, "text", ""))) or verb
    table = getattr(statement, "table", None)
    prefix = ""
    for _ in range(3):
        if table is not None:
            break
        froms = getattr(statement, "get_final_froms", None)
        found = froms() if froms is not None else []
        first = found[0] if found else None
        inner = getattr(first, "element", None)
        if inner is not None and hasattr(inner, "get_final_froms"):
            prefix = "count(*) " if "count" in str(statement).lower() else "… "
            statement = inner
            continue
        table = first
    name = getattr(table, "name", "") or ""
    if verb == "SELECT" and getattr(statement, "_for_update_arg", None) is not None:
        verb = "SELECT … FOR UPDATE"
    return f"{verb} {prefix}{name}".strip()


def _sql_kind(sql: str) -> str:
    """The kind of a statement written as SQL text (a ``text()`` clause, or what SQLite's bulk
    writes hand the driver): its first word and its table, "UPDATE journey_customers",
    "INSERT journey_outbox" (an upsert too), "BEGIN"; empty for no text."""
    words = sql.split(None, 4)
    if not words:
        return ""
    table = next((w for w in words[1:4] if w.startswith("journey_")), "")
    return f"{words[0].upper()} {table}".strip()


def shares_of(seconds: dict[str, float], total: float) -> dict[str, float]:
    """Each phase's share of ``total``, and "other" for the rest."""
    if not total:
        return {}
    out = {k: round(v / total, 3) for k, v in seconds.items()}
    out["other"] = round(1 - sum(out.values()), 3)
    return out


# ── 1. Events ─────────────────────────────────────────────────────────────────────────────────

HOT_TABLES = (
    "journey_processed_events",
    "journey_customers",
    "journey_instances",
    "journey_timers",
    "journey_step_counts",
)


async def analyze(engine: Any) -> float:
    """ANALYZE the journey tables (what autovacuum does with the j0002 thresholds once it visits
    them), then CHECKPOINT; returns the duration of both, which is not counted as handling time.

    The checkpoint starts every measured stretch in the same place: the first write of each
    page after a checkpoint logs the whole page, so a run that a timed checkpoint (every 5
    minutes by default) happened to precede paid for thousands of such pages and another did
    not; two runs of the same code differed by 10 % for that alone. After this one no other
    falls in a measured stretch (seconds long, far under the WAL limit)."""
    from sqlalchemy import text

    begin = time.perf_counter()
    async with engine.connect() as conn:
        await conn.execute(text(f"ANALYZE {', '.join(HOT_TABLES)}"))
        await conn.commit()
        await conn.execute(text("CHECKPOINT"))
        await conn.commit()
    return round(time.perf_counter() - begin, 2)


class Consumer:
    """What ``JourneyWorker.handle`` does with a batch of records, the relay and poller
    notifications aside: decode, then ``handle_events`` in one unit of work with the state
    cache. ``state_cache``: the states kept; None takes ``journey_state_cache``'s default, as
    ``JourneyWorker`` does, and 0 runs without one."""

    def __init__(
        self,
        engine: Any,
        *,
        journeys: bool = True,
        state_cache: int | None = None,
        intel: str = "default",
    ) -> None:
        from services.journey.adapters.state_cache import StateCache
        from services.journey.service_layer.sources import StaticCatalogs, StaticPolicies
        from shared.db.engine import session_factory

        self.sessions = session_factory(engine)
        self.catalogs = StaticCatalogs(catalog(with_journeys=journeys))
        self.policies = StaticPolicies()
        rules = intel_rules(intel)
        self.intel = None if rules is None else {WORKSPACE: rules}
        if state_cache is None:
            from services.journey.settings import JourneySettings

            state_cache = int(JourneySettings.model_fields["journey_state_cache"].default)
        self.state_cache = state_cache
        self.cache = StateCache(state_cache) if state_cache else None

    async def handle(self, records: list[StreamRecord]) -> int:
        from services.journey import bootstrap
        from services.journey.service_layer.handlers import handle_events
        from services.journey.service_layer.uow import JourneyUnitOfWork

        decoded = bootstrap.decode_events(records)  # type: ignore[arg-type]
        cat = await self.catalogs.current()
        policies = await self.policies.for_workspaces({e.workspace_id for e in decoded})
        async with JourneyUnitOfWork(self.sessions, cache=self.cache) as uow:
            return await handle_events(
                uow,
                decoded,
                catalog=cat,
                policies=policies,
                now=datetime.now(UTC),
                intel=self.intel,
            )


async def run_events(
    url: str,
    *,
    customers: int,
    events: int,
    batch_size: int,
    journeys: bool,
    analyze_after: int = 0,
    seed: int = 7,
    intel: str = "default",
    email: bool = False,
    state_cache: int | None = None,
    instrument: bool = True,
) -> dict[str, Any]:
    """``intel``: the customer-intelligence rules handed to ``handle_events``: "default" (none,
    so the engine's defaults), "off" (``Intelligence(enabled=False)``: no upkeep at all) or "on"
    (the defaults with the stream's currency, EUR). ``email``: the stream with marketing-email
    sessions (``EventStream``). ``state_cache``: the states kept (``StateCache``); None takes
    ``journey_state_cache``'s default, as ``JourneyWorker`` does, and 0 runs without one.
    ``instrument``: time the phases and statements (they wrap functions of the process, so a
    run beside another in the same process goes without)."""
    phases = Phases(EVENT_PHASES if instrument else ()).install()
    statements = Statements()
    if instrument:
        statements.install()
    from shared.db.engine import create_engine

    engine = create_engine(url)
    consumer = Consumer(engine, journeys=journeys, state_cache=state_cache, intel=intel)
    cache = consumer.cache
    stream = EventStream(customers, seed=seed, email=email)
    durations: list[float] = []
    cpu: list[float] = []  # CPU of this process (all its threads, aiosqlite's too) per batch
    # CPU of this thread alone: the event loop's, what no wait for the database could hide
    main_cpu: list[float] = []
    handled = 0
    cold: int | None = None  # batches handled before the ANALYZE
    analyze_s = 0.0
    from services.runtime import settle_heap

    settle_heap()  # as every `ciclo serve` process does once started
    rss_at = {"start": rss_mb()}
    wall_begin = time.perf_counter()
    try:
        sent = 0
        while sent < events:
            records = stream.batch(min(batch_size, events - sent), datetime.now(UTC))
            sent += len(records)
            begin, cpu_begin = time.perf_counter(), time.process_time()
            main_begin = time.thread_time()
            handled += await consumer.handle(records)
            durations.append(time.perf_counter() - begin)
            cpu.append(time.process_time() - cpu_begin)
            main_cpu.append(time.thread_time() - main_begin)
            if len(durations) == max(1, events // batch_size // 10):
                rss_at["after_10pct"] = rss_mb()
            if analyze_after and cold is None and sent >= analyze_after:
                cold = len(durations)
                analyze_s = await analyze(engine)
                statements.reset()  # per batch after the ANALYZE
    finally:
        await engine.dispose()
    wall = time.perf_counter() - wall_begin
    rss_at["end"] = rss_mb()
    peak = peak_rss_mb()
    return {
        "customers": customers,
        "events": sent,
        "handled": handled,
        "batch_size": batch_size,
        "journeys": len(consumer.catalogs.catalog),
        "intel": intel,
        "email_sessions": email,
        "sessions": stream.sessions,
        "state_cache": consumer.state_cache,
        "state_cache_hits": None if cache is None else cache.hits,
        "state_cache_misses": None if cache is None else cache.misses,
        **_rates(durations, batch_size, cold),
        "cpu_us_per_event": _cpu_per_event(cpu, batch_size, cold),
        "main_cpu_us_per_event": _cpu_per_event(main_cpu, batch_size, cold),
        **_cold(durations, cold, batch_size, analyze_s),
        "phases": phases.shares(sum(durations)),
        "phases_not_found": phases.missing,
        "statements": statements.per_batch(len(durations) - (cold or 0)),
        "wall_s": round(wall, 2),
        "rss_mb": rss_at,
        "peak_rss_mb": peak,
        "rows": await table_counts(url),
    }


async def run_concurrent(
    urls: list[str], *, customers: int, events: int, batch_size: int, analyze_after: int = 0
) -> dict[str, Any]:
    """One consumer per database of ``urls``, each with its own stream, all at once in this
    process and event loop (as ``run_events`` with the journeys, uninstrumented). Whether the
    consumers together handle more events per second than one alone (measured the same way,
    with one url) tells how much of one consumer's waits for its database another's work can
    fill: the most a pipeline of batches within one consumer could win. ``analyze_after``: as
    ``run_events``' (each consumer ANALYZEs its own database; its wall time counts)."""
    begin = time.perf_counter()
    runs = await asyncio.gather(
        *(
            run_events(
                url,
                customers=customers,
                events=events,
                batch_size=batch_size,
                journeys=True,
                seed=7 + i,
                instrument=False,
                analyze_after=analyze_after,
            )
            for i, url in enumerate(urls)
        )
    )
    wall = time.perf_counter() - begin
    handled = sum(r["handled"] for r in runs)
    return {
        "consumers": len(urls),
        "events": sum(r["events"] for r in runs),
        "handled": handled,
        "wall_s": round(wall, 2),
        # Over the wall time of all of them, stream generation and cold starts included alike
        "events_per_s": round(handled / wall),
        "each_events_per_s": [r["events_per_s"] for r in runs],
        "peak_rss_mb": peak_rss_mb(),
    }


def intel_rules(intel: str) -> Any:
    """The ``Intelligence`` of ``run_events``' ``intel`` choice (None: the engine's defaults)."""
    from services.journey.domain.intelligence import Intelligence

    if intel == "default":
        return None
    if intel == "off":
        return Intelligence(enabled=False)
    if intel == "on":
        return Intelligence(currency="EUR")
    raise ValueError(f"intel must be default, off or on, not {intel!r}")


def _cpu_per_event(cpu: list[float], batch_size: int, cold: int | None) -> float | None:
    """CPU µs of this process per event over the batches of the headline (see ``_rates``)."""
    skip = cold if cold is not None else max(1, len(cpu) // 20)
    steady = cpu[skip:] or cpu
    return round(1e6 * sum(steady) / (len(steady) * batch_size), 1) if steady else None


def _rates(durations: list[float], batch_size: int, cold: int | None) -> dict[str, Any]:
    """Events/s: the headline is every batch after the cold start (the first 5 % of batches, or
    those before the ANALYZE when there is one); also the whole stream and per tenth of it."""
    n = len(durations)
    skip = cold if cold is not None else max(1, n // 20)
    steady = durations[skip:] or durations
    tenths = []
    for k in range(10):
        part = durations[k * n // 10 : (k + 1) * n // 10]
        if part:
            tenths.append(round(len(part) * batch_size / sum(part)))
    ordered = sorted(steady)
    return {
        "handle_s": round(sum(durations), 2),
        "events_per_s": round(len(steady) * batch_size / sum(steady)),
        "events_per_s_whole_stream": round(n * batch_size / sum(durations)),
        "events_per_s_first_batches": round(skip * batch_size / sum(durations[:skip]))
        if skip
        else None,
        "first_batches": skip,
        "events_per_s_by_tenth": tenths,
        "batch_ms": {
            "p50": _round(1000 * (percentile(ordered, 50) or 0), 1),
            "p99": _round(1000 * (percentile(ordered, 99) or 0), 1),
            "max": _round(1000 * ordered[-1], 1),
        },
    }


def _cold(
    durations: list[float], cold: int | None, batch_size: int, analyze_s: float
) -> dict[str, Any]:
    if cold is None:
        return {}
    return {
        "analyzed_after_events": cold * batch_size,
        "analyze_s": analyze_s,
        "cold_events_per_s_by_batch": [round(batch_size / d) for d in durations[:cold]],
    }


# ── 2. Timers ─────────────────────────────────────────────────────────────────────────────────


class SteppedClock:
    """Wall time shifted by ``offset`` (so lateness in its time is lateness in real seconds).
    Remembers the last ``now`` it gave, which in ``fire_due`` is the firing transaction's."""

    def __init__(self, offset: timedelta) -> None:
        self.offset = offset
        self.last: datetime | None = None

    def now(self) -> datetime:
        self.last = datetime.now(UTC) + self.offset
        return self.last

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass
class Rounds:
    """Per poller round: the firing transaction's ``now`` → when it committed (clock time)."""

    committed: dict[datetime, datetime] = field(default_factory=dict)

    def hook(self, clock: SteppedClock) -> Callable[[], None]:
        def after_commit() -> None:
            if clock.last is not None:
                self.committed[clock.last] = datetime.now(UTC) + clock.offset

        return after_commit


def _fired_total() -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("ciclo_journey_timers_fired_total") or 0.0


async def _poll(
    engine: Any,
    *,
    offset: timedelta,
    seconds: float,
    pollers: int,
    batch_size: int,
    poll_interval: float,
    rounds: Rounds,
    stop_when: int,
) -> tuple[int, float, list[tuple[float, int]]]:
    """Real TimerPollers (``run()``) for ``seconds``; (fired, elapsed, progress)."""
    from services.journey.service_layer.sources import StaticCatalogs, StaticPolicies
    from services.journey.timer_poller import TimerPoller

    catalogs = StaticCatalogs(catalog())
    clocks = [SteppedClock(offset) for _ in range(pollers)]
    polling = [
        TimerPoller(
            engine=engine,
            clock=clock,
            catalogs=catalogs,
            policies=StaticPolicies(),
            batch_size=batch_size,
            poll_interval=poll_interval,
            lease=30,
            after_commit=rounds.hook(clock),
        )
        for clock in clocks
    ]
    before = _fired_total()
    started = time.perf_counter()
    tasks = [asyncio.create_task(p.run()) for p in polling]
    progress: list[tuple[float, int]] = []
    try:
        while time.perf_counter() - started < seconds:
            await asyncio.sleep(min(1.0, max(0.0, seconds - (time.perf_counter() - started))))
            fired = int(_fired_total() - before)
            progress.append((round(time.perf_counter() - started, 1), fired))
            if fired >= stop_when or any(t.done() for t in tasks):
                break
    finally:
        for p in polling:
            p.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
    for t in tasks:
        if not t.cancelled() and t.exception() is not None:
            raise RuntimeError(f"a timer poller stopped: {t.exception()!r}")
    return int(_fired_total() - before), time.perf_counter() - started, progress


@dataclass
class Saturation:
    """The event consumer run flat out beside the pollers, in the same event loop (as in
    ``JourneyWorker``): batches of ``batch_size`` from a stream over ``customers`` customers
    numbered from ``first``, each handled as soon as the last one committed."""

    batch_size: int
    customers: int
    first: int
    handled: int = 0
    durations: list[float] = field(default_factory=list)
    elapsed: float = 0.0

    async def run(self, engine: Any, stop: asyncio.Event) -> None:
        consumer = Consumer(engine)
        stream = EventStream(self.customers, first=self.first)
        started = time.perf_counter()
        while not stop.is_set():
            records = stream.batch(self.batch_size, datetime.now(UTC))
            begin = time.perf_counter()
            self.handled += await consumer.handle(records)
            self.durations.append(time.perf_counter() - begin)
            await asyncio.sleep(0)  # the consumer runner's await on the bus
        self.elapsed = time.perf_counter() - started

    def summary(self) -> dict[str, Any]:
        durations = sorted(self.durations)
        return {
            "batch_size": self.batch_size,
            "customers": self.customers,
            "handled": self.handled,
            "seconds": round(self.elapsed, 1),
            "events_per_s": round(self.handled / self.elapsed) if self.elapsed else None,
            "batch_p50_s": _round(percentile(durations, 50)),
            "batch_p99_s": _round(percentile(durations, 99)),
        }


async def run_timers(
    url: str,
    *,
    timers: int,
    window: float,
    base: datetime,
    seconds: float,
    catchup: float,
    pollers: int,
    batch_size: int,
    poll_interval: float,
    events_batch: int = 0,
    events_customers: int = 100_000,
) -> dict[str, Any]:
    """``events_batch``: with the event consumer saturated beside the pollers while they fire
    on time (``Saturation``, over customers other than the timers'); 0: the pollers alone."""
    from sqlalchemy import text

    from shared.db.engine import create_engine

    phases = Phases(TIMER_PHASES).install()
    statements = Statements().install()
    phases_fire = Phases(
        (("services.journey.timer_poller", "TimerPoller", "fire_due", "fire_due"),)
    ).install()
    seed = TimerSeed(timers=timers, window=window, base=base)
    engine = create_engine(url)
    rounds = Rounds()
    from services.runtime import settle_heap

    settle_heap()  # as every `ciclo serve` process does once started
    rss_start = rss_mb()
    saturation = (
        Saturation(events_batch, events_customers, first=seed.customers) if events_batch else None
    )
    stop_events = asyncio.Event()
    consuming = asyncio.create_task(saturation.run(engine, stop_events)) if saturation else None
    # On time: the pollers start now, which is `base` on their clock; the first run is due
    # `lead` seconds later.
    offset = base - datetime.now(UTC)
    try:
        fired_a, elapsed_a, progress_a = await _poll(
            engine,
            offset=offset,
            seconds=seed.lead + seconds,
            pollers=pollers,
            batch_size=batch_size,
            poll_interval=poll_interval,
            rounds=rounds,
            stop_when=timers,
        )
    finally:
        stop_events.set()
        if consuming is not None:
            await consuming
    stop_a = datetime.now(UTC) + offset
    phase_a = dict(phases.seconds)
    rounds_a = len(rounds.committed)
    statements_a = statements.per_batch(rounds_a)
    statements.reset()
    fire_a = phases_fire.seconds.get("fire_due", 0.0)
    _log(f"on time: fired {fired_a:,} in {elapsed_a:.1f}s")
    # Catch-up: the clock jumps past the window; every timer left is due at once.
    jump = seed.due(timers - 1) + timedelta(seconds=1)
    offset_b = jump - datetime.now(UTC)
    left_before = timers - fired_a
    for key in phases.seconds:
        phases.seconds[key] = 0.0
    phases_fire.seconds["fire_due"] = 0.0
    fired_b, elapsed_b, progress_b = 0, 0.0, list[tuple[float, int]]()
    if catchup > 0:
        fired_b, elapsed_b, progress_b = await _poll(
            engine,
            offset=offset_b,
            seconds=catchup,
            pollers=pollers,
            batch_size=batch_size,
            poll_interval=poll_interval,
            rounds=rounds,
            stop_when=left_before,
        )
        _log(f"catch-up: fired {fired_b:,} in {elapsed_b:.1f}s")
    statements_b = statements.per_batch(len(rounds.committed) - rounds_a)
    rss_end = rss_mb()
    peak = peak_rss_mb()

    # Lateness of every run due in the on-time part at least LATENESS_TARGET before it ended.
    # A run that had not fired by the end counts with (end - due): a lower bound, above 1 s.
    due_a = seed.due_index_until(stop_a - timedelta(seconds=LATENESS_TARGET))
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT run_id, updated_at FROM journey_instances "
                    "WHERE updated_at >= :base AND updated_at < :jump AND run_id LIKE 'bench%'"
                ),
                {"base": _db_when(url, base), "jump": _db_when(url, jump)},
            )
        ).all()
    await engine.dispose()
    fired_at: dict[int, datetime] = {}
    for run_id, updated in rows:
        when = datetime.fromisoformat(updated) if isinstance(updated, str) else updated
        fired_at[int(run_id[5:])] = when if when.tzinfo else when.replace(tzinfo=UTC)
    commit_late: list[float] = []
    start_late: list[float] = []
    unfired = 0
    by_tenth: list[list[float]] = [[] for _ in range(10)]
    for i in range(due_a):
        due = seed.due(i)
        when = fired_at.get(i)
        committed = rounds.committed.get(when) if when is not None else None
        if when is None or committed is None:
            unfired += 1
            late = (stop_a - due).total_seconds()
            start = late
        else:
            late = (committed - due).total_seconds()
            start = (when - due).total_seconds()
        commit_late.append(late)
        start_late.append(start)
        by_tenth[min(9, i * 10 // max(due_a, 1))].append(late)
    commit_late.sort()
    start_late.sort()

    def summary(values: list[float]) -> dict[str, float | None]:
        return {
            "p50": _round(percentile(values, 50)),
            "p90": _round(percentile(values, 90)),
            "p99": _round(percentile(values, 99)),
            "max": _round(values[-1] if values else None),
        }

    return {
        "timers": timers,
        "customers": seed.customers,
        "window_s": window,
        "demanded_per_s": round(timers / window),
        "pollers": pollers,
        "batch_size": batch_size,
        "poll_interval_s": poll_interval,
        "on_time": {
            "seconds": round(elapsed_a, 1),
            "fired": fired_a,
            "measured": due_a,
            "unfired_when_measured": unfired,
            "pending_at_end": timers - fired_a,
            "fired_per_s": round(fired_a / max(elapsed_a - seed.lead, 1e-9)),
            "lateness_s": summary(commit_late),
            "lateness_at_fire_start_s": summary(start_late),
            "lateness_p99_by_tenth_s": [_round(percentile(sorted(t), 99)) for t in by_tenth],
            "on_time_share": round(
                sum(1 for v in commit_late if v < LATENESS_TARGET) / len(commit_late), 4
            )
            if commit_late
            else None,
            "phases": shares_of(phase_a, fire_a),
            "rounds": rounds_a,
            "statements": statements_a,
            "progress": progress_a[:: max(1, len(progress_a) // 20)],
        },
        "catch_up": {
            "backlog": left_before,
            "seconds": round(elapsed_b, 1),
            "fired": fired_b,
            "fired_per_s": round(fired_b / elapsed_b) if elapsed_b else None,
            "phases": shares_of(phases.seconds, phases_fire.seconds["fire_due"]),
            "rounds": len(rounds.committed) - rounds_a,
            "statements": statements_b,
            "progress": progress_b[:: max(1, len(progress_b) // 20)],
        },
        "rounds": len(rounds.committed),
        "events": saturation.summary() if saturation else None,
        "rss_mb": {"start": rss_start, "end": rss_end},
        "peak_rss_mb": peak,
    }


# ── Child entry point ─────────────────────────────────────────────────────────────────────────


def child_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.journey", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    sc = sub.add_parser("seed-customers")
    sc.add_argument("--url", required=True)
    sc.add_argument("--customers", type=int, required=True)
    sc.add_argument("--known-share", type=float, default=0.9)
    sc.add_argument(
        "--facts", action="store_true", help="with the facts upkeep decided at the import"
    )
    st = sub.add_parser("seed-timers")
    ev = sub.add_parser("events")
    ev.add_argument("--url", required=True, action="append", help="again with --concurrent")
    ev.add_argument(
        "--concurrent",
        action="store_true",
        help="one consumer per --url at once in this process (run_concurrent)",
    )
    ev.add_argument("--customers", type=int, default=100_000)
    ev.add_argument("--events", type=int, default=120_000)
    ev.add_argument("--batch-size", type=int, default=500)
    ev.add_argument("--no-journeys", action="store_true")
    ev.add_argument("--analyze-after", type=int, default=0, help="events before an ANALYZE")
    ev.add_argument("--intel", choices=("default", "off", "on"), default="default")
    ev.add_argument("--email", action="store_true", help="marketing-email sessions too")
    ev.add_argument(
        "--state-cache",
        type=int,
        default=None,
        help="states the consumer keeps (default: journey_state_cache's default; 0: none)",
    )
    tm = sub.add_parser("timers")
    for p in (st, tm):
        p.add_argument("--url", required=True)
        p.add_argument("--timers", type=int, default=1_000_000)
        p.add_argument("--window", type=float, default=1000.0)
        p.add_argument("--base", required=True, help="RFC 3339: the clock's start")
    tm.add_argument("--seconds", type=float, default=60.0)
    tm.add_argument("--catchup", type=float, default=20.0)
    tm.add_argument("--pollers", type=int, default=1)
    tm.add_argument("--batch-size", type=int, default=500)
    tm.add_argument("--poll-interval", type=float, default=0.2)
    tm.add_argument(
        "--events-batch",
        type=int,
        default=0,
        help="the event consumer saturated beside the pollers, in batches of this size (0: none)",
    )
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    result: dict[str, Any]
    if args.what == "seed-customers":
        result = run_child(
            seed_customers(args.url, args.customers, args.known_share, facts=args.facts)
        )
    elif args.what == "seed-timers":
        seed = TimerSeed(args.timers, args.window, datetime.fromisoformat(args.base))
        result = run_child(seed_timers(args.url, seed))
    elif args.what == "events" and args.concurrent:
        result = run_child(
            run_concurrent(
                args.url,
                customers=args.customers,
                events=args.events,
                batch_size=args.batch_size,
                analyze_after=args.analyze_after,
            )
        )
    elif args.what == "events":
        if len(args.url) > 1:
            parser.error("several --url only with --concurrent")
        result = run_child(
            run_events(
                args.url[0],
                customers=args.customers,
                events=args.events,
                batch_size=args.batch_size,
                journeys=not args.no_journeys,
                analyze_after=args.analyze_after,
                intel=args.intel,
                email=args.email,
                state_cache=args.state_cache,
            )
        )
    else:
        result = run_child(
            run_timers(
                args.url,
                timers=args.timers,
                window=args.window,
                base=datetime.fromisoformat(args.base),
                seconds=args.seconds,
                catchup=args.catchup,
                pollers=args.pollers,
                batch_size=args.batch_size,
                poll_interval=args.poll_interval,
                events_batch=args.events_batch,
            )
        )
    print("RESULT " + json.dumps(result, default=str), flush=True)
    return 0


# ── The harness: plan, children, summary ──────────────────────────────────────────────────────


@dataclass(frozen=True)
class JourneyPlan:
    databases: tuple[str, ...] = ("sqlite", "postgresql")
    customers: int = 100_000
    events: int = 120_000
    batch_size: int = 500  # journey_batch_size's default
    known_share: float = 0.9
    analyze_after: int = 5_000  # PostgreSQL: events before the ANALYZE autovacuum would run
    never_analyzed_events: int = 15_000  # PostgreSQL: a short run that is never analyzed
    # Consumers at once in one process, each on its own database (``run_concurrent``), against
    # one alone measured the same way: what overlapping database waits with work could win.
    concurrent_consumers: int = 2
    concurrent_events: int = 60_000  # per consumer
    # The event runs of each database (``EVENT_RUNS``). The floor is the stream with nothing
    # to decide: the cost of the pipeline itself, which the others' costs come on top of.
    event_runs: tuple[str, ...] = ("journeys", "baseline", "floor")
    memory_customers: tuple[int, ...] = (10_000, 50_000)  # plus `customers`
    memory_database: str = "sqlite"
    timer_databases: tuple[str, ...] = ("postgresql", "sqlite")
    timers: int = 1_000_000
    timer_rate: float = 1_000.0  # timers/s demanded: the window is timers / rate
    timer_seconds: float = 45.0  # of the window measured on time
    catchup_seconds: float = 20.0
    timer_batch_size: int = 500  # journey_timer_batch_size's default
    poll_interval: float = 0.2  # journey_timer_poll_interval's default
    pollers: int = 1
    # Timers due while the event consumer runs flat out in the same process: the same demand
    # (timer_rate) over a shorter window, no catch-up.
    busy_databases: tuple[str, ...] = ("sqlite", "postgresql")
    busy_timers: int = 100_000
    busy_seconds: float = 30.0
    # ``journey_batch_size`` raised: the events run with the journeys again at each of these
    # sizes, and the timers beside a saturated consumer again with batches of each of
    # ``busy_batches`` (both per database).
    larger_batches: tuple[int, ...] = (2_000, 5_000)
    busy_batches: tuple[int, ...] = (2_000,)

    @property
    def window(self) -> float:
        return self.timers / self.timer_rate


EVENT_RUNS = {
    "journeys": (True, "default"),
    "baseline": (False, "default"),
    "floor": (False, "off"),
}
"""What each event run of ``JourneyPlan.event_runs`` is: (with the journeys, ``--intel``)."""


class ChildFailed(RuntimeError):
    pass


def _child(
    args: list[str], *, log_dir: Path, name: str, timeout: float, module: str = "bench.journey"
) -> dict[str, Any]:
    from bench.machine import ForeignCpu, wait_quiet

    wait_quiet()
    meter = ForeignCpu()
    meter.start()
    begin = time.monotonic()
    proc = subprocess.run(
        [PYTHON, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    foreign = meter.stop()
    (log_dir / f"journey-{name}.log").write_text(proc.stderr + proc.stdout)
    if proc.returncode != 0:
        raise ChildFailed(f"{name}: exit {proc.returncode}: {proc.stderr[-1500:]}")
    line = next((x for x in reversed(proc.stdout.splitlines()) if x.startswith("RESULT ")), None)
    if line is None:
        raise ChildFailed(f"{name}: no result: {proc.stderr[-1500:]}")
    result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    result["foreign_cpu"] = foreign
    result["child_s"] = round(time.monotonic() - begin, 1)
    return result


@contextmanager
def database(kind: str, work_dir: Path, admin: str) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a PostgreSQL database dropped afterwards."""
    if kind == "sqlite":
        path = work_dir / f"journey-{uuid.uuid4().hex[:8]}.db"
        try:
            yield f"sqlite+aiosqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    from bench.processes import temporary_database

    with temporary_database(admin) as url:
        yield url


def machine_description() -> dict[str, Any]:
    from bench.machine import describe

    return describe()


def git_head() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "services", "shared"],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip() + (
            " + uncommitted changes in services/shared" if dirty.stdout.strip() else ""
        )
    except OSError:
        return "?"


def measure(
    plan: JourneyPlan,
    *,
    postgres: str,
    work_dir: Path,
    log: Callable[[str], None],
    errors: dict[str, str],
) -> dict[str, Any]:
    """Run every journey measurement of ``plan``; failures go to ``errors`` and the rest runs."""
    log_dir = work_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    out: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "code": git_head(),
        "machine": machine_description(),
        "loop": CHILD_LOOP,
        "plan": asdict(plan) | {"window_s": plan.window},
        "journeys": [j.id for j in catalog()],
        "events": {},
        "memory": {},
        "timers": {},
    }

    def attempt(where: str, body: Callable[[], Any]) -> Any:
        begin = time.monotonic()
        try:
            return body()
        except Exception as exc:
            log(f"journey {where} FAILED: {exc}")
            errors[f"journey.{where}"] = str(exc)[-2000:]
            return None
        finally:
            log(f"journey {where}: {time.monotonic() - begin:.0f}s")

    def seed(url: str, customers: int, name: str) -> dict[str, Any]:
        args = ["seed-customers", "--url", url, "--customers", str(customers)]
        args += ["--known-share", str(plan.known_share)]
        return _child(args, log_dir=log_dir, name=name, timeout=900)

    def analyzed(kind: str) -> list[str]:
        """The ANALYZE of a PostgreSQL run, after as many events as autovacuum would wait."""
        if kind == "postgresql" and plan.analyze_after:
            return ["--analyze-after", str(plan.analyze_after)]
        return []

    def events_run(
        kind: str,
        customers: int,
        journeys: bool,
        name: str,
        *,
        analyze: bool = True,
        intel: str = "default",
        batch_size: int | None = None,
    ) -> dict[str, Any]:
        with database(kind, work_dir, postgres) as url:
            seeded = seed(url, customers, f"{name}-seed")
            args = [
                "events",
                "--url",
                url,
                "--customers",
                str(customers),
                "--events",
                str(plan.events if analyze else plan.never_analyzed_events),
                "--batch-size",
                str(batch_size or plan.batch_size),
            ]
            if not journeys:
                args.append("--no-journeys")
            if intel != "default":
                args += ["--intel", intel]
            if analyze:
                args += analyzed(kind)
            result = _child(args, log_dir=log_dir, name=name, timeout=1800)
            result["seeded"] = seeded
            log(
                f"journey {name}: {result['events_per_s']:,} events/s (whole stream "
                f"{result['events_per_s_whole_stream']:,}), peak RSS {result['peak_rss_mb']} MiB, "
                f"other processes {result['foreign_cpu']} cores"
            )
            return result

    def concurrent_run(kind: str, consumers: int, name: str) -> dict[str, Any]:
        with contextlib.ExitStack() as stack:
            urls = [
                stack.enter_context(database(kind, work_dir, postgres)) for _ in range(consumers)
            ]
            for i, url in enumerate(urls):
                seed(url, plan.customers, f"{name}-seed-{i}")
            args = ["events", "--concurrent", "--customers", str(plan.customers)]
            args += ["--events", str(plan.concurrent_events)]
            args += ["--batch-size", str(plan.batch_size), *analyzed(kind)]
            for url in urls:
                args += ["--url", url]
            result = _child(args, log_dir=log_dir, name=name, timeout=1800)
            log(f"journey {name}: {result['events_per_s']:,} events/s together")
            return result

    out["concurrent"] = {}
    out["batches"] = {}
    for kind in plan.databases:
        for label in plan.event_runs:
            journeys, intel = EVENT_RUNS[label]
            name = f"events-{kind}-{label}"
            run = functools.partial(events_run, kind, plan.customers, journeys, name, intel=intel)
            result = attempt(name, run)
            if result is not None:
                out["events"].setdefault(kind, {})[label] = result
        for size in plan.larger_batches:
            name = f"events-{kind}-batch-{size}"
            run = functools.partial(events_run, kind, plan.customers, True, name, batch_size=size)
            result = attempt(name, run)
            if result is not None:
                out["batches"].setdefault(kind, {})[str(size)] = result
        if plan.concurrent_consumers > 1:
            for consumers in (1, plan.concurrent_consumers):
                name = f"events-{kind}-concurrent-{consumers}"
                result = attempt(name, functools.partial(concurrent_run, kind, consumers, name))
                if result is not None:
                    out["concurrent"].setdefault(kind, {})[str(consumers)] = result
        if kind == "postgresql" and plan.never_analyzed_events:
            # What the first minutes on fresh tables look like when nothing analyzes them (as on
            # this server, autovacuum off): prepared statements switch to generic plans.
            name = "events-postgresql-never-analyzed"
            run = functools.partial(events_run, kind, plan.customers, True, name, analyze=False)
            result = attempt(name, run)
            if result is not None:
                out["events"][kind]["never_analyzed"] = result

    memory: dict[str, Any] = {}
    main = out["events"].get(plan.memory_database, {}).get("journeys")
    for n in plan.memory_customers:
        name = f"memory-{plan.memory_database}-{n}"
        result = attempt(name, functools.partial(events_run, plan.memory_database, n, True, name))
        if result is not None:
            memory[str(n)] = _memory_point(result)
    if main is not None:
        memory[str(plan.customers)] = _memory_point(main)
    out["memory"] = {
        "database": plan.memory_database,
        "events": plan.events,
        "by_customers": dict(sorted(memory.items(), key=lambda kv: int(kv[0]))),
    }

    for kind in plan.timer_databases:
        name = f"timers-{kind}"
        run = functools.partial(timers_run, plan, kind, name, work_dir, postgres, log_dir, log)
        result = attempt(name, run)
        if result is not None:
            out["timers"][kind] = result
    out["busy"] = {}
    for kind in plan.busy_databases:
        name = f"timers-{kind}-busy"
        run = functools.partial(
            timers_run, plan, kind, name, work_dir, postgres, log_dir, log, beside=plan.batch_size
        )
        result = attempt(name, run)
        if result is not None:
            out["busy"][kind] = result
    out["busy_batches"] = {}
    for kind in plan.busy_databases:
        for size in plan.busy_batches:
            name = f"timers-{kind}-busy-batch-{size}"
            run = functools.partial(
                timers_run, plan, kind, name, work_dir, postgres, log_dir, log, beside=size
            )
            result = attempt(name, run)
            if result is not None:
                out["busy_batches"].setdefault(kind, {})[str(size)] = result
    out["summary"] = summarize(out, plan)
    out["elapsed_s"] = round(time.monotonic() - started, 1)
    return out


def _memory_point(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "peak_rss_mb": result["peak_rss_mb"],
        "rss_mb": result["rss_mb"],
        "events_per_s": result["events_per_s"],
        "customers_in_db": result["rows"].get("customers"),
    }


def timers_run(
    plan: JourneyPlan,
    kind: str,
    name: str,
    work_dir: Path,
    postgres: str,
    log_dir: Path,
    log: Callable[[str], None],
    *,
    beside: int = 0,
) -> dict[str, Any]:
    """The timers measurement ``name`` (its children's log names). ``beside``: 0 for the timers
    alone; otherwise ``busy_timers`` of them at the same rate, with the event consumer saturated
    beside the poller in batches of ``beside`` events, and no catch-up."""
    busy = beside > 0
    timers = plan.busy_timers if busy else plan.timers
    with database(kind, work_dir, postgres) as url:
        base = datetime.now(UTC).replace(microsecond=0).isoformat()
        common = [
            "--url",
            url,
            "--timers",
            str(timers),
            "--window",
            str(timers / plan.timer_rate),
            "--base",
            base,
        ]
        seeded = _child(
            ["seed-timers", *common], log_dir=log_dir, name=f"{name}-seed", timeout=1800
        )
        log(f"journey {name}: seeded {timers:,} in {seeded['seed_s']}s")
        result = _child(
            [
                "timers",
                *common,
                "--seconds",
                str(plan.busy_seconds if busy else plan.timer_seconds),
                "--catchup",
                str(0 if busy else plan.catchup_seconds),
                "--pollers",
                str(plan.pollers),
                "--batch-size",
                str(plan.timer_batch_size),
                "--poll-interval",
                str(plan.poll_interval),
                "--events-batch",
                str(beside),
            ],
            log_dir=log_dir,
            name=name,
            timeout=1800,
        )
        result["seeded"] = seeded
        late = result["on_time"]["lateness_s"]
        log(
            f"journey {name}: lateness p50 {late['p50']} s, p99 {late['p99']} s, "
            f"max {late['max']} s; catch-up {result['catch_up']['fired_per_s']}/s; "
            f"events {(result.get('events') or {}).get('events_per_s')}/s"
        )
        return result


def _busy(result: dict[str, Any]) -> dict[str, Any]:
    """A run of timers beside a saturated consumer, summarized."""
    return {
        "p99_s": result["on_time"]["lateness_s"]["p99"],
        "timers_per_s": result["on_time"]["fired_per_s"],
        "events_per_s": (result.get("events") or {}).get("events_per_s"),
    }


def summarize(out: dict[str, Any], plan: JourneyPlan) -> dict[str, Any]:
    """Targets, met or not, per database."""
    summary: dict[str, Any] = {"events": {}, "timers": {}, "memory": None}
    for kind, runs in out["events"].items():
        j = runs.get("journeys", {}).get("events_per_s")
        b = runs.get("baseline", {}).get("events_per_s")
        f = runs.get("floor", {}).get("events_per_s")
        summary["events"][kind] = {
            "events_per_s": j,
            "baseline_events_per_s": b,
            "floor_events_per_s": f,
            "met": None if j is None else j >= EVENT_TARGET,
            "journeys_us_per_event": round(1e6 / j - 1e6 / b, 1) if j and b else None,
            "intelligence_us_per_event": round(1e6 / b - 1e6 / f, 1) if b and f else None,
            "floor_us_per_event": round(1e6 / f, 1) if f else None,
        }
    for kind, runs in out.get("concurrent", {}).items():
        one, together = runs.get("1"), runs.get(str(plan.concurrent_consumers))
        if one is None or together is None:
            continue
        summary["events"].setdefault(kind, {})["concurrent"] = {
            "one_events_per_s": one["events_per_s"],
            "together_events_per_s": together["events_per_s"],
            "gain": round(together["events_per_s"] / one["events_per_s"], 2),
        }
    for kind, result in out["timers"].items():
        p99 = result["on_time"]["lateness_s"]["p99"]
        summary["timers"][kind] = {
            "p99_s": p99,
            "met": None if p99 is None else p99 < LATENESS_TARGET,
            "demanded_per_s": result["demanded_per_s"],
            "catch_up_per_s": result["catch_up"]["fired_per_s"],
        }
    summary["busy"] = {kind: _busy(result) for kind, result in out.get("busy", {}).items()}
    summary["batches"] = {}
    for kind, sizes in out.get("batches", {}).items():
        default = summary["events"].get(kind, {}).get("events_per_s")
        summary["batches"][kind] = {
            size: {
                "events_per_s": r["events_per_s"],
                "gain": round(r["events_per_s"] / default, 2) if default else None,
                "batch_p50_ms": r["batch_ms"]["p50"],
                "batch_p99_ms": r["batch_ms"]["p99"],
                "peak_rss_mb": r["peak_rss_mb"],
            }
            for size, r in sizes.items()
        }
    summary["busy_batches"] = {
        kind: {size: _busy(r) for size, r in sizes.items()}
        for kind, sizes in out.get("busy_batches", {}).items()
    }
    points = out["memory"].get("by_customers", {})
    if len(points) >= 2:
        peaks = [p["peak_rss_mb"] for _, p in sorted(points.items(), key=lambda kv: int(kv[0]))]
        growth = peaks[-1] / peaks[0] - 1
        summary["memory"] = {"growth": round(growth, 3), "met": growth <= MEMORY_GROWTH_LIMIT}
    return summary


if __name__ == "__main__":
    sys.exit(child_main())
