"""Backfill: validate historical events, put them in occurred_at order, publish them in that order.

An import has three steps (``ciclo import`` drives them through :func:`run_import`):

1. **Validate** every line (:mod:`services.ingest.import_records`: the API's own rules, plus the
   cut-off and the event ids), chunk by chunk — in worker processes for large files, since
   validation is most of the cost. A valid line becomes a compact ``Item``; a rejected one becomes
   :class:`LineError` entries and never stops the others (unless ``strict``, which stops at the
   first and publishes nothing).
2. **Sort** the items by (occurred_at, line number): in memory up to ``run_bytes`` of envelopes,
   beyond that through temporary files (:mod:`services.ingest.import_sort`), so memory stays
   bounded whatever the file size.
3. **Publish** them in that order, in batches, one batch in flight while the next is built.

A file already in order (a cheap first read tells, :meth:`Source.in_time_order`) skips the sort
and is **streamed**: each chunk is published as soon as it is validated, so validating and writing
to the bus overlap — about half again as fast on two cores, and no temporary files.

Errors: :class:`~services.ingest.import_sources.SourceError` when the file cannot be read as asked,
:class:`PublishError` when the bus refuses a batch; a bad line is never an exception.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import AsyncGenerator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Literal, Protocol

import orjson

from services.ingest.import_records import Rules, prepare
from services.ingest.import_sort import RUN_BYTES, Item, SortedRuns
from services.ingest.import_sources import Chunk, Decoder, LineError, Source
from shared.bus.ports import OutgoingRecord, Publisher
from shared.contracts.topics import EVENTS
from shared.errors import BusError, CicloError

# The embedded bus commits a publish in one transaction: 5,000 records amortise it well; larger
# batches were slower (measured at 10k and 20k) and make a failure take longer to show.
PUBLISH_BATCH = 5_000
# Below this file size, starting worker processes (each imports pydantic and the catalogue afresh)
# costs more than it saves.
PARALLEL_FROM_BYTES = 8 * 2**20
ERRORS_KEPT = 20


class PublishError(CicloError):
    """The bus refused a batch. The ``published`` events before it stay on the bus; importing the
    file again is safe, since every event keeps its id."""

    def __init__(self, message: str, *, published: int) -> None:
        super().__init__(message)
        self.published = published


class Progress(Protocol):
    """Where the steps report how far they got (the CLI draws a progress bar)."""

    def start(self, label: str, *, total: int, unit: str) -> None: ...

    def update(self, amount: int) -> None: ...

    def finish(self) -> None: ...


class NoProgress:
    def start(self, label: str, *, total: int, unit: str) -> None:
        pass

    def update(self, amount: int) -> None:
        pass

    def finish(self) -> None:
        pass


@dataclass(slots=True)
class ChunkResult:
    items: list[Item] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)
    rejected: int = 0
    live: int = 0


def validate_chunk(decoder: Decoder, chunk: Chunk, rules: Rules) -> ChunkResult:
    """Validate one chunk of raw lines; runs in a worker process for large files."""
    result = ChunkResult()
    for line, raw in chunk:
        outcome = prepare(decoder.decode(line, raw), line, rules)
        if isinstance(outcome, list):
            result.errors.extend(outcome)
            result.rejected += 1
        else:
            item, historical = outcome
            result.items.append(item)
            result.live += not historical
    return result


def default_jobs(size: int) -> int:
    """Worker processes for a file of ``size`` bytes: none for small files, else one per core."""
    return 1 if size < PARALLEL_FROM_BYTES else max(1, os.cpu_count() or 1)


async def _validated_chunks(
    source: Source, rules: Rules, jobs: int
) -> AsyncGenerator[tuple[ChunkResult, int, int], None]:
    """(result, line count, file position after the chunk) for every chunk, in file order."""
    if jobs <= 1:
        for chunk in source.chunks():
            yield validate_chunk(source.decoder, chunk, rules), len(chunk), source.position
            await asyncio.sleep(0)  # the bus (a Kafka client, the writer's acks) gets its turn
        return
    # spawn, not fork: this process has threads (the bus writer), which fork would copy in
    # whatever state they are in.
    pool = ProcessPoolExecutor(
        jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_leave_interrupts
    )
    pending: deque[tuple[Future[ChunkResult], int, int]] = deque()
    try:
        for chunk in source.chunks():
            future = pool.submit(validate_chunk, source.decoder, chunk, rules)
            pending.append((future, len(chunk), source.position))
            # Two chunks queued per worker keep them busy without reading far ahead.
            while len(pending) > 2 * jobs:
                done, lines, position = pending.popleft()
                yield await asyncio.wrap_future(done), lines, position
        while pending:
            done, lines, position = pending.popleft()
            yield await asyncio.wrap_future(done), lines, position
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _leave_interrupts() -> None:
    """In a worker: Ctrl-C is the importing process's to handle (it stops the pool), not ours."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@dataclass(slots=True)
class Validated:
    """Counts of a validation, and (when sorting) the items it left for publishing."""

    runs: SortedRuns
    read: int = 0
    rejected: int = 0
    live: int = 0
    errors: list[LineError] = field(default_factory=list)
    aborted: bool = False

    def take(self, result: ChunkResult, lines: int) -> None:
        self.read += lines
        self.rejected += result.rejected
        self.live += result.live
        self.errors.extend(result.errors[: ERRORS_KEPT - len(self.errors)])

    def reject(self, error: LineError) -> None:
        self.rejected += 1
        if len(self.errors) < ERRORS_KEPT:
            self.errors.append(error)


async def validate(
    source: Source,
    rules: Rules,
    *,
    jobs: int = 1,
    strict: bool = False,
    run_bytes: int = RUN_BYTES,
    progress: Progress | None = None,
) -> Validated:
    """Steps 1 and 2: validate the whole source into sorted runs. With ``strict``, stop at the first
    chunk with a rejected line and mark the result aborted."""
    progress = progress or NoProgress()
    validated = Validated(SortedRuns(run_bytes=run_bytes))
    progress.start("validating", total=source.size, unit="B")
    reported = 0
    try:
        async with aclosing(_validated_chunks(source, rules, jobs)) as chunks:
            async for result, lines, position in chunks:
                validated.take(result, lines)
                validated.runs.add(result.items)
                progress.update(position - reported)
                reported = position
                if strict and result.rejected:
                    validated.aborted = True
                    break
    except BaseException:
        validated.runs.close()
        raise
    finally:
        progress.finish()
    return validated


class _Sender:
    """Publishes items in batches. The next batch is built while the previous one is written, but
    only sent once that one is acknowledged: a failure can never leave a later batch on the bus
    ahead of an earlier one."""

    def __init__(self, publisher: Publisher, *, batch_size: int, progress: Progress) -> None:
        self.publisher = publisher
        self.batch_size = batch_size
        self.progress = progress
        self.published = 0
        self._batch: list[OutgoingRecord] = []
        self._in_flight: asyncio.Future[None] | None = None
        self._in_flight_size = 0

    async def add(self, item: Item) -> None:
        self._batch.append(OutgoingRecord(EVENTS, item[2], item[4], orjson.loads(item[3])))
        if len(self._batch) >= self.batch_size:
            await self._send()

    async def flush(self) -> None:
        if self._batch:
            await self._send()
        await self._settle()

    def cancel(self) -> None:
        if self._in_flight is not None and not self._in_flight.done():
            self._in_flight.cancel()

    async def _send(self) -> None:
        await self._settle()
        self._in_flight = asyncio.ensure_future(self._publish(self._batch))
        self._in_flight_size, self._batch = len(self._batch), []
        # Let the task hand its batch to the bus now, so it is written while we build the next.
        await asyncio.sleep(0)

    async def _publish(self, batch: list[OutgoingRecord]) -> None:
        try:
            await self.publisher.publish(batch)
        except BusError as exc:
            raise PublishError(
                f"the bus refused a batch after {self.published} event(s): {exc}",
                published=self.published,
            ) from exc

    async def _settle(self) -> None:
        if self._in_flight is not None:
            await self._in_flight
            self._in_flight = None
            self.published += self._in_flight_size
            self.progress.update(self._in_flight_size)


async def publish(
    runs: SortedRuns,
    publisher: Publisher,
    *,
    batch_size: int = PUBLISH_BATCH,
    progress: Progress | None = None,
) -> int:
    """Step 3 after sorting: publish every item in order; returns how many were acknowledged."""
    progress = progress or NoProgress()
    progress.start("publishing", total=runs.count, unit="events")
    sender = _Sender(publisher, batch_size=batch_size, progress=progress)
    try:
        for item in runs:
            await sender.add(item)
        await sender.flush()
    finally:
        sender.cancel()
        progress.finish()
    return sender.published


async def stream(
    source: Source,
    rules: Rules,
    publisher: Publisher,
    *,
    jobs: int = 1,
    batch_size: int = PUBLISH_BATCH,
    progress: Progress | None = None,
) -> tuple[Validated, int]:
    """All three steps at once for a file already in occurred_at order: publish while validating.

    The order was judged by :meth:`Source.in_time_order`; should a validated time still go back
    (which that check rules out), the line is rejected rather than published out of order.
    Returns the counts and how many events were published.
    """
    progress = progress or NoProgress()
    validated = Validated(SortedRuns())
    sender = _Sender(publisher, batch_size=batch_size, progress=NoProgress())
    progress.start("importing", total=source.size, unit="B")
    last = (-(2**63), 0)
    reported = 0
    try:
        async with aclosing(_validated_chunks(source, rules, jobs)) as chunks:
            async for result, lines, position in chunks:
                validated.take(result, lines)
                for item in result.items:
                    if item[:2] < last:
                        validated.reject(
                            LineError(item[1], "occurred_at", "earlier than the line before")
                        )
                        validated.live -= not orjson.loads(item[4])["historical"]
                        continue
                    last = item[:2]
                    await sender.add(item)
                progress.update(position - reported)
                reported = position
        await sender.flush()
    finally:
        sender.cancel()
        progress.finish()
    return validated, sender.published


Order = Literal["auto", "sort", "stream"]


@dataclass(frozen=True, slots=True)
class Summary:
    read: int
    imported: int
    rejected: int
    live: int
    errors: list[LineError]
    aborted: bool
    streamed: bool
    spilled_runs: int
    seconds: float

    @property
    def historical(self) -> int:
        return self.imported - self.live


async def run_import(
    source: Source,
    rules: Rules,
    publisher: Publisher,
    *,
    jobs: int | None = None,
    strict: bool = False,
    order: Order = "auto",
    run_bytes: int = RUN_BYTES,
    batch_size: int = PUBLISH_BATCH,
    progress: Progress | None = None,
) -> Summary:
    """Validate, order and publish ``source``.

    A file already in occurred_at order is streamed (published while validated: faster, and no
    temporary files); any other is sorted first. ``strict`` always sorts, because only then is
    every line checked before the first one is published: nothing is published on a bad line.
    """
    started = time.perf_counter()
    jobs = default_jobs(source.size) if jobs is None else jobs
    progress = progress or NoProgress()
    streamed = order == "stream"
    if order == "auto" and not strict:
        progress.start("checking order", total=source.size, unit="B")
        try:
            # In a thread: a long scan must not stall the bus client on this event loop.
            streamed = await asyncio.to_thread(source.in_time_order, progress.update)
        finally:
            progress.finish()
    if streamed:
        validated, imported = await stream(
            source, rules, publisher, jobs=jobs, batch_size=batch_size, progress=progress
        )
    else:
        validated = await validate(
            source, rules, jobs=jobs, strict=strict, run_bytes=run_bytes, progress=progress
        )
        try:
            imported = 0
            if not validated.aborted:
                imported = await publish(
                    validated.runs, publisher, batch_size=batch_size, progress=progress
                )
        finally:
            validated.runs.close()
    return Summary(
        read=validated.read,
        imported=imported,
        rejected=validated.rejected,
        live=validated.live if imported else 0,
        errors=validated.errors,
        aborted=validated.aborted,
        streamed=streamed,
        spilled_runs=validated.runs.spilled_runs,
        seconds=time.perf_counter() - started,
    )
