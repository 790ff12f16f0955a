"""The batch consumer loop every service runs: poll → handle (one transaction) → commit offsets.

Handlers must be idempotent: offsets are committed after the database commit, so a crash in
between redelivers a batch. When a batch fails, its records are retried one by one so that a
single poison record cannot stall the partition: it goes to the group's dead-letter topic, with the
reason, after ``max_attempts`` (at once for :class:`~shared.errors.PoisonRecordError`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SqlTimeoutError

from shared.bus.ports import STOP_TIMEOUT, ConsumedRecord, Consumer, OutgoingRecord, Publisher
from shared.contracts.topics import dead_letter
from shared.errors import BusClosedError, BusError, PoisonRecordError

log = logging.getLogger(__name__)

T = TypeVar("T")


def decode_records(
    records: Iterable[ConsumedRecord], read: Callable[[bytes], T], what: str
) -> list[T]:
    """Each record's value through ``read`` (a contract's ``from_json``); a record that is not
    ``what`` is a poison record, which the runner sends to its dead-letter topic."""
    decoded = []
    for record in records:
        try:
            decoded.append(read(record.value))
        except ValidationError as exc:
            raise PoisonRecordError(f"not {what}: {exc.errors()[:3]}") from exc
    return decoded


BatchHandler = Callable[[Sequence[ConsumedRecord]], Awaitable[None]]

RECORDS = Counter(
    "ciclo_consumer_records_total", "Records consumed, by group and outcome", ["group", "outcome"]
)
BATCH_SECONDS = Histogram(
    "ciclo_consumer_batch_seconds", "Time to handle and commit one batch", ["group"]
)
DEAD_LETTERS = Counter("ciclo_dead_letters_total", "Records sent to a dead-letter topic", ["group"])
LAG = Gauge(
    "ciclo_consumer_lag", "Records not yet consumed, by group and topic", ["group", "topic"]
)
_LAG_EVERY = 5.0  # seconds between lag readings


class ConsumerRunner:
    def __init__(
        self,
        *,
        group: str,
        consumer: Consumer,
        handler: BatchHandler,
        dead_letters: Publisher,
        max_records: int = 500,
        poll_timeout: float = 0.5,
        max_attempts: int = 5,
        retry_base_delay: float = 0.2,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        self.group = group
        self._stop_timeout = stop_timeout
        self._stop_deadline = 0.0  # time.monotonic() when stop() has been called
        self._consumer = consumer
        self._handler = handler
        self._dead_letters = dead_letters
        self._max_records = max_records
        self._poll_timeout = poll_timeout
        self._max_attempts = max_attempts
        self._retry_base_delay = retry_base_delay
        self._stopping = asyncio.Event()
        self.processed = 0
        self.start_error: BusError | None = None  # the last failed start, until one succeeds
        self._lag_topics: set[str] = set()
        # Create the labelled series at 0 now: increase() cannot see a counter's first increment
        # when the series only appears with it, and the first dead letter must alert.
        DEAD_LETTERS.labels(group)
        for outcome in ("ok", "dead_letter"):
            RECORDS.labels(group, outcome)

    def stop(self) -> None:
        """Ask the loop to finish the batch in hand, commit it and return.

        The bus gets ``stop_timeout`` seconds from now for the commit in flight and leaving the
        group together; what is still waiting on it then is abandoned (the batch is redelivered
        after the restart). The handler of the batch in hand is never interrupted."""
        if not self._stopping.is_set():
            self._stop_deadline = time.monotonic() + self._stop_timeout
        self._stopping.set()

    async def run(self) -> None:
        measured = 0.0
        outage = 0
        try:
            if not await self._joined():
                return
            while not self._stopping.is_set():
                if time.monotonic() - measured > _LAG_EVERY:
                    measured = time.monotonic()
                    await self._measure_lag()
                try:
                    records = await self._consumer.poll(
                        max_records=self._max_records, timeout=self._poll_timeout
                    )
                except BusError:
                    outage += 1
                    log.warning("poll failed; retrying", exc_info=True, extra={"group": self.group})
                    await self._pause(outage)
                    continue
                outage = 0
                if not records:
                    continue
                started = time.perf_counter()
                await self._handle(records)
                try:
                    await self._before_stop_deadline(
                        self._consumer.commit(records), "the commit of the batch in hand"
                    )
                except BusError:
                    # A rebalance moved a partition, or a lost lease: the new owner gets these
                    # records again and the handlers are idempotent. Not a reason to stop.
                    log.warning("commit refused; records will be redelivered", exc_info=True)
                self.processed += len(records)
                BATCH_SECONDS.labels(self.group).observe(time.perf_counter() - started)
        finally:
            # At least half a second: enough for a bus that answers (the embedded one frees its
            # lease) even when the commit above used up the deadline.
            await self._before_stop_deadline(
                self._consumer.stop(), "leaving the group", at_least=min(0.5, self._stop_timeout)
            )

    async def _joined(self) -> bool:
        """Start the consumer, trying again with a back-off while the bus cannot be reached (a
        broker that drops just after the process came up must not leave it consuming nothing
        until a restart); False when asked to stop first."""
        attempt = 0
        while not self._stopping.is_set():
            try:
                await self._consumer.start()
            except BusClosedError:
                raise
            except BusError as exc:
                attempt += 1
                self.start_error = exc
                log.warning(
                    "could not join the group; retrying",
                    exc_info=True,
                    extra={"group": self.group, "attempt": attempt},
                )
                await self._pause(attempt)
                continue
            self.start_error = None
            return True
        return False

    def check(self) -> None:
        """For /readyz: raise while the consumer has not joined its group because the bus
        refused (it keeps trying)."""
        if self.start_error is not None:
            raise RuntimeError(
                f"consumer of group {self.group!r} has not joined yet: {self.start_error}"
            )

    async def _before_stop_deadline(
        self, work: Awaitable[None], what: str, *, at_least: float = 0.0
    ) -> None:
        """``work`` (a wait on the bus), abandoned once stop() was called and its deadline has
        passed: a broker that does not answer would hold it for the client's request timeout
        (aiokafka: 40 s)."""
        task = asyncio.ensure_future(work)
        try:
            if not self._stopping.is_set():
                stopping = asyncio.ensure_future(self._stopping.wait())
                try:
                    await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stopping.cancel()
            if not task.done():
                remaining = max(at_least, self._stop_deadline - time.monotonic())
                await asyncio.wait({task}, timeout=remaining)
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        if task.cancelled():
            log.warning(
                "%s abandoned: the bus did not answer within the stop deadline (%g s); "
                "records not committed are delivered again after the restart",
                what,
                self._stop_timeout,
                extra={"group": self.group},
            )
            return
        task.result()

    async def _pause(self, attempt: int) -> None:
        """Back off during an outage (capped at 30 s), waking early when asked to stop."""
        delay = min(30.0, self._retry_base_delay * 2 ** min(attempt, 8)) * random.uniform(0.5, 1.5)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)

    async def _measure_lag(self) -> None:
        try:
            lag = await self._consumer.lag()
        except Exception:  # a metric must never stop consumption
            log.debug("could not read consumer lag", exc_info=True)
            return
        # A topic this member no longer owns (rebalance) reads 0 here, not its last value, so
        # summed lag across replicas stays true.
        self._lag_topics |= set(lag)
        for topic in self._lag_topics:
            LAG.labels(self.group, topic).set(lag.get(topic, 0))

    async def _handle(self, records: Sequence[ConsumedRecord]) -> None:
        try:
            await self._handler(records)
            RECORDS.labels(self.group, "ok").inc(len(records))
            return
        except Exception:
            if len(records) == 1:
                log.warning("record failed", exc_info=True, extra=_where(records[0]))
            else:
                log.warning("batch of %d failed; retrying one by one", len(records), exc_info=True)
        for record in records:
            await self._handle_one(record)

    async def _handle_one(self, record: ConsumedRecord) -> None:
        attempt = 0
        outage = 0
        while True:
            try:
                await self._handler([record])
                RECORDS.labels(self.group, "ok").inc()
                return
            except PoisonRecordError as exc:
                await self._dead_letter(record, f"poison: {exc}")
                return
            except Exception as exc:
                if is_outage(exc):
                    # The database or bus is down: every record would fail the same way. Wait
                    # it out; dead-lettering would empty the stream into the DLQ.
                    outage += 1
                    log.warning("outage while handling; waiting", exc_info=True)
                    if self._stopping.is_set():
                        raise
                    await self._pause(outage)
                    continue
                attempt += 1
                if attempt >= self._max_attempts:
                    await self._dead_letter(record, f"failed {attempt} times: {exc!r}")
                    return
                delay = self._retry_base_delay * 2 ** (attempt - 1)
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))

    async def _dead_letter(self, record: ConsumedRecord, reason: str) -> None:
        log.error("dead-lettered: %s", reason, extra=_where(record))
        headers = dict(record.headers)
        headers.update(
            {
                "dlq_reason": reason[:1000],
                "dlq_group": self.group,
                "dlq_topic": record.topic,
                "dlq_partition": str(record.partition),
                "dlq_offset": str(record.offset),
            }
        )
        await self._dead_letters.publish(
            [
                OutgoingRecord(
                    topic=dead_letter(self.group),
                    key=record.key,
                    value=record.value,
                    headers=headers,
                )
            ]
        )
        RECORDS.labels(self.group, "dead_letter").inc()
        DEAD_LETTERS.labels(self.group).inc()


# SQLSTATE classes of the server or the connection rather than of the record: connection
# exceptions (08), insufficient resources such as too many connections (53), operator
# intervention such as a shutdown or a restart (57, but for 57014, a cancelled statement), and
# system errors (58).
_OUTAGE_SQLSTATES = ("08", "53", "57", "58")
# Classes that are about the record (data, integrity) or its transaction (serialization,
# deadlock): they count towards max_attempts even when the commit raised them.
_RECORD_SQLSTATES = ("22", "23", "40")


def is_outage(exc: BaseException) -> bool:
    """Errors of the infrastructure rather than of the record: retried without limit."""
    if isinstance(exc, BusError | ConnectionError | TimeoutError):
        return True
    # Connection-level database errors (server gone, pool timeout); constraint or data errors
    # are about the record and count towards max_attempts.
    if isinstance(exc, OperationalError | InterfaceError | SqlTimeoutError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    # asyncpg's errors reach SQLAlchemy as plain DBAPIErrors: PostgreSQL restarting
    # ("terminating connection due to administrator command", then "the database system is
    # starting up") is told by the SQLSTATE.
    state = str(getattr(exc.orig, "sqlstate", None) or "")
    if state[:2] in _OUTAGE_SQLSTATES and state != "57014":
        return True
    # Refused while connecting, before any statement: the server, not the record.
    return exc.statement is None and state[:2] not in _RECORD_SQLSTATES


def _where(record: ConsumedRecord) -> dict[str, object]:
    return {"topic": record.topic, "partition": record.partition, "offset": record.offset}
