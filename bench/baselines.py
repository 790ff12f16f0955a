"""Physical baselines, taken in the same run as Ciclo's figures so ratios compare like with like.

- bare FastAPI (constant answer; small pydantic body model) under the same wrk load as ingest;
- raw aiokafka produce to Tansu (200-byte JSON, acks=all): pipelined, and one record in flight;
- raw SQLite upserts (WAL, synchronous=NORMAL): one row per transaction and 500 per transaction.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from bench.load import WrkResult, check_post, percentile, run_wrk
from bench.processes import start_baseline_app

SINGLE_BODY = {"type": "page_viewed", "customer_id": "c0", "properties": {"path": "/p"}}


def fastapi(
    log_dir: Path, *, seconds: float, warmup: float, connections: int
) -> dict[str, WrkResult]:
    """req/s of a bare FastAPI endpoint (``const``) and one with a pydantic body (``model``)."""
    results: dict[str, WrkResult] = {}
    proc, url = start_baseline_app(log_dir)
    with proc:
        for name in ("const", "model"):
            check_post(f"{url}/{name}", SINGLE_BODY)
            run_wrk(
                f"{url}/{name}", seconds=warmup, connections=connections, prefix="w", quiet=False
            )
            results[name] = run_wrk(
                f"{url}/{name}",
                seconds=seconds,
                connections=connections,
                prefix=name,
                watch={"server": proc.popen.pid},
            )
    return results


def _payload(size: int = 200) -> bytes:
    """A JSON object of exactly ``size`` bytes."""
    base = {"type": "page_viewed", "customer_id": "c0", "properties": {"path": "/p"}, "pad": ""}
    missing = size - len(json.dumps(base, separators=(",", ":")).encode())
    base["pad"] = "x" * max(0, missing)
    return json.dumps(base, separators=(",", ":")).encode()


async def kafka_produce(
    bootstrap: str, *, seconds: float, partitions: int = 8, chunk: int = 1000
) -> dict[str, Any]:
    """msg/s of aiokafka producing 200-byte JSON with acks=all: ``pipelined`` sends ``chunk``
    records then awaits their acks; ``one_in_flight`` awaits each record before the next."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic = "bench.raw-produce"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    value = _payload()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        # Warm-up: metadata, connections.
        await producer.send_and_wait(topic, value, key=b"warm")
        sent, begin = 0, time.perf_counter()
        while time.perf_counter() - begin < seconds:
            futures = [
                await producer.send(topic, value, key=str(sent + i).encode()) for i in range(chunk)
            ]
            await asyncio.gather(*futures)
            sent += chunk
        pipelined = sent / (time.perf_counter() - begin)
        sent, begin = 0, time.perf_counter()
        while time.perf_counter() - begin < min(seconds, 3.0):
            await producer.send_and_wait(topic, value, key=str(sent).encode())
            sent += 1
        one_in_flight = sent / (time.perf_counter() - begin)
        latency = await _consume_latency(bootstrap, producer, topic, partitions)
    finally:
        await producer.stop()
    return {
        "value_bytes": len(value),
        "pipelined_msg_per_s": round(pipelined, 1),
        "one_in_flight_msg_per_s": round(one_in_flight, 1),
        "produce_to_consume_ms": latency,
    }


async def _consume_latency(
    bootstrap: str, producer: Any, topic: str, partitions: int, *, count: int = 100
) -> dict[str, float]:
    """One hop's latency, produce → consumer poll, at 50 msg/s, with aiokafka's default
    ``fetch_max_wait_ms`` (what Ciclo's consumers use)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        await consumer.seek_to_end()
        latencies: list[float] = []

        async def consume() -> None:
            while len(latencies) < count:
                batches = await consumer.getmany(timeout_ms=500, max_records=500)
                now = time.time()
                latencies.extend(now - float(r.value) for rs in batches.values() for r in rs)

        task = asyncio.create_task(consume())
        for i in range(count):
            await producer.send_and_wait(topic, repr(time.time()).encode(), key=str(i).encode())
            await asyncio.sleep(0.02)
        await asyncio.wait_for(task, timeout=30)
    finally:
        await consumer.stop()
    ms = [v * 1000 for v in latencies]
    return {"p50": round(percentile(ms, 50), 2), "p99": round(percentile(ms, 99), 2)}


def sqlite_upsert(directory: Path, *, seconds: float) -> dict[str, Any]:
    """rows/s of ``INSERT … ON CONFLICT DO UPDATE`` into SQLite (WAL, synchronous=NORMAL)."""
    path = directory / "baseline.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE kv (id TEXT PRIMARY KEY, n INTEGER NOT NULL, body TEXT)")
        sql = (
            "INSERT INTO kv (id, n, body) VALUES (?, 1, ?) "
            "ON CONFLICT(id) DO UPDATE SET n = n + 1, body = excluded.body"
        )
        body = _payload().decode()
        rates: dict[str, Any] = {}
        next_id = 0
        for per_tx in (1, 500):
            rows, begin = 0, time.perf_counter()
            while time.perf_counter() - begin < seconds:
                conn.execute("BEGIN")
                conn.executemany(sql, ((f"r{next_id + i}", body) for i in range(per_tx)))
                conn.execute("COMMIT")
                next_id += per_tx
                rows += per_tx
            rates[f"rows_per_s_{per_tx}_per_tx"] = round(rows / (time.perf_counter() - begin), 1)
        return rates
    finally:
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
