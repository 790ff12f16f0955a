from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from shared.bus.ports import ConsumedRecord
from shared.consumer import ConsumerRunner
from shared.errors import PoisonRecordError
from tests.fakes.bus import ListConsumer, MemoryPublisher, record
from tests.fixtures.waiting import wait_for


async def run(records: list[ConsumedRecord], handler, **kwargs: object):  # type: ignore[no-untyped-def]
    consumer = ListConsumer(records)
    dlq = MemoryPublisher()
    runner = ConsumerRunner(
        group="g",
        consumer=consumer,
        handler=handler,
        dead_letters=dlq,
        retry_base_delay=0.0,
        **kwargs,  # type: ignore[arg-type]
    )
    consumer.on_drained = runner.stop
    await runner.run()
    return consumer, dlq, runner


async def test_batches_are_handled_then_committed() -> None:
    seen: list[list[int]] = []

    async def handler(batch: Sequence[ConsumedRecord]) -> None:
        seen.append([r.offset for r in batch])

    consumer, dlq, runner = await run([record(i) for i in range(5)], handler, max_records=2)
    assert seen == [[0, 1], [2, 3], [4]]
    assert [r.offset for r in consumer.committed] == [0, 1, 2, 3, 4]
    assert consumer.started and consumer.stopped
    assert runner.processed == 5
    assert dlq.published == []


async def test_poison_record_is_dead_lettered_and_the_rest_still_processed() -> None:
    handled: list[int] = []

    async def handler(batch: Sequence[ConsumedRecord]) -> None:
        if any(r.value == b"bad" for r in batch):
            raise PoisonRecordError("not json")
        handled.extend(r.offset for r in batch)

    records = [record(0), record(1, b"bad"), record(2)]
    consumer, dlq, _ = await run(records, handler)
    assert handled == [0, 2]
    assert [r.offset for r in consumer.committed] == [0, 1, 2]
    [dead] = dlq.published
    assert dead.topic == "ciclo.dlq.g"
    assert dead.value == b"bad"
    assert dead.headers["dlq_reason"] == "poison: not json"
    assert dead.headers["dlq_offset"] == "1"


async def test_transient_failure_is_retried_before_dead_lettering() -> None:
    calls = {"n": 0}

    async def flaky(batch: Sequence[ConsumedRecord]) -> None:
        calls["n"] += 1
        if calls["n"] < 3:
            raise RuntimeError("database hiccup")

    _, dlq, _ = await run([record(0)], flaky, max_attempts=5)
    assert calls["n"] == 3
    assert dlq.published == []


async def test_a_record_that_keeps_failing_goes_to_the_dead_letter_topic() -> None:
    async def broken(batch: Sequence[ConsumedRecord]) -> None:
        raise RuntimeError("always")

    consumer, dlq, _ = await run([record(0)], broken, max_attempts=3)
    [dead] = dlq.published
    assert dead.headers["dlq_reason"].startswith("failed 3 times: RuntimeError('always')")
    assert [r.offset for r in consumer.committed] == [0]


async def test_a_refused_commit_does_not_stop_the_loop() -> None:
    from shared.errors import BusError

    class RefusingOnce(ListConsumer):
        refused = False

        async def commit(self, records: Sequence[ConsumedRecord]) -> None:
            if not self.refused:
                self.refused = True
                raise BusError("partition moved (rebalance)")
            await super().commit(records)

    consumer = RefusingOnce([record(0), record(1)])
    runner = ConsumerRunner(
        group="g", consumer=consumer, handler=_ok, dead_letters=MemoryPublisher(), max_records=1
    )
    consumer.on_drained = runner.stop
    await runner.run()
    assert runner.processed == 2
    assert [r.offset for r in consumer.committed] == [1]


async def test_an_outage_is_waited_out_not_dead_lettered() -> None:
    from sqlalchemy.exc import OperationalError

    calls = {"n": 0}

    async def database_down_for_a_while(batch: Sequence[ConsumedRecord]) -> None:
        calls["n"] += 1
        if calls["n"] <= 8:  # more failures than max_attempts allows for a bad record
            raise OperationalError("SELECT 1", {}, ConnectionRefusedError("db down"))

    _, dlq, runner = await run([record(0)], database_down_for_a_while, max_attempts=3)
    assert dlq.published == []
    assert calls["n"] == 9
    assert runner.processed == 1


async def test_a_failing_poll_is_retried() -> None:
    from shared.errors import BusError

    class FlakyPoll(ListConsumer):
        failures = 2

        async def poll(self, *, max_records: int, timeout: float) -> list[ConsumedRecord]:
            if self.failures:
                self.failures -= 1
                raise BusError("broker unreachable")
            return await super().poll(max_records=max_records, timeout=timeout)

    consumer = FlakyPoll([record(0)])
    runner = _runner(consumer, retry_base_delay=0.0)
    consumer.on_drained = runner.stop
    await runner.run()
    assert runner.processed == 1


class Unreachable(ListConsumer):
    """Refuses its first ``refusals`` starts as when the broker cannot be reached, then joins
    once ``let_in`` is set."""

    def __init__(self, records: Sequence[ConsumedRecord], *, refusals: int) -> None:
        super().__init__(records)
        self.refusals = refusals
        self.attempts = 0
        self.let_in = asyncio.Event()

    async def start(self) -> None:
        from shared.errors import BusError

        self.attempts += 1
        if self.attempts <= self.refusals:
            raise BusError("broker unreachable")
        await self.let_in.wait()
        await super().start()


def _runner(consumer: ListConsumer, **kwargs: Any) -> ConsumerRunner:
    return ConsumerRunner(
        group="g", consumer=consumer, handler=_ok, dead_letters=MemoryPublisher(), **kwargs
    )


async def test_a_consumer_that_cannot_join_is_started_again_and_reported_meanwhile() -> None:
    import pytest

    consumer = Unreachable([record(0), record(1)], refusals=2)
    runner = _runner(consumer, retry_base_delay=0.0)
    consumer.on_drained = runner.stop
    running = asyncio.create_task(runner.run())
    await wait_for(lambda: consumer.attempts == 3, timeout=5, what="the third start")
    with pytest.raises(RuntimeError, match="group 'g' has not joined yet: broker unreachable"):
        runner.check()
    consumer.let_in.set()
    await running
    assert runner.processed == 2
    assert [r.offset for r in consumer.committed] == [0, 1]
    runner.check()  # joined: ready again


async def test_a_stop_while_the_consumer_cannot_join_ends_the_loop() -> None:
    consumer = Unreachable([record(0)], refusals=1_000_000)
    runner = _runner(consumer)
    running = asyncio.create_task(runner.run())
    await wait_for(lambda: consumer.attempts >= 1, timeout=5, what="a first start")
    runner.stop()  # wakes the back-off at once
    await asyncio.wait_for(running, timeout=2)
    assert runner.processed == 0
    assert consumer.stopped


async def test_worker_check_reports_a_dead_loop() -> None:
    import pytest

    from shared.worker import ConsumerWorker

    class Broken(ListConsumer):
        async def poll(self, *, max_records: int, timeout: float) -> list[ConsumedRecord]:
            raise RuntimeError("bug")

    class IdleRelay:
        async def run(self) -> None:
            await asyncio.sleep(3600)

        def stop(self) -> None: ...

        async def drain(self) -> None: ...

    runner = ConsumerRunner(
        group="g", consumer=Broken([]), handler=_ok, dead_letters=MemoryPublisher()
    )
    worker = ConsumerWorker(name="g", runner=runner, relay=IdleRelay())  # type: ignore[arg-type]
    await worker.start()
    await asyncio.sleep(0.01)
    with pytest.raises(RuntimeError, match="g-consumer stopped: RuntimeError"):
        await worker.check()
    assert worker._relaying is not None
    worker._relaying.cancel()


async def _ok(batch: Sequence[ConsumedRecord]) -> None:
    return None
