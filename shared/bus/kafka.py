"""The Kafka bus: the Bus port on Apache Kafka (or any Kafka-protocol broker) through aiokafka.

:class:`KafkaBus` owns one producer (``acks="all"``, idempotent where the broker supports it) and
hands out :class:`KafkaConsumer` group members with manual commits. aiokafka and socket errors are
translated into :class:`~shared.errors.BusError` here, once, and nowhere else.

Rebalances and at-least-once: offsets passed to ``commit`` that Kafka refuses because the group is
rebalancing are kept and retried when our partitions are revoked (the old generation can still
commit then) and after the new assignment for partitions we kept. Offsets of partitions that went
to another member are dropped: that member resumes from the last successful commit, so records
processed here but not committed are processed again there. Handlers are idempotent for exactly
this reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    TopicAlreadyExistsError,
    for_code,
)
from aiokafka.structs import TopicPartition

from shared.bus.partitioning import partition_for
from shared.bus.ports import STOP_TIMEOUT, ConsumedRecord, OutgoingRecord, TopicSpec
from shared.errors import BusClosedError, BusError

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _translated(action: str) -> Iterator[None]:
    """The one place library errors become BusError."""
    try:
        yield
    except (KafkaError, OSError) as exc:
        raise BusError(f"kafka: {action} failed: {exc!r}") from exc


_CLEANUP_SECONDS = 0.5
"""How long the local clean-up of an abandoned client may take (cancelling its tasks, closing its
sockets): nothing in it waits on the broker."""


async def _within(
    seconds: float,
    work: Awaitable[None],
    *,
    action: str,
    abandon: Callable[[], Awaitable[None]],
) -> None:
    """``work`` (a client's stop) given ``seconds``; past that, or when the caller is cancelled,
    it is abandoned: logged, and ``abandon`` closes what it left open without waiting on the
    broker. aiokafka's own waits are its request timeout (40 s) per request, several in a row."""
    try:
        async with asyncio.timeout(seconds):
            await work
        return
    except TimeoutError:
        logger.warning(
            "kafka: %s took more than %g s; abandoned (the broker does not answer)",
            action,
            seconds,
        )
    except asyncio.CancelledError:
        logger.warning("kafka: %s was cancelled; abandoned", action)
        with contextlib.suppress(Exception, asyncio.CancelledError, TimeoutError):
            async with asyncio.timeout(_CLEANUP_SECONDS):
                await abandon()
        raise
    try:
        async with asyncio.timeout(_CLEANUP_SECONDS):
            await abandon()
    except Exception:  # the process is stopping: a leftover socket must not stop it failing
        logger.debug("kafka: cleaning up after %s failed", action, exc_info=True)


class KafkaBus:
    def __init__(
        self,
        bootstrap_servers: str,
        *,
        client_id: str,
        idempotence: bool,
        linger_ms: int = 0,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3_000,
        fetch_max_wait_ms: int = 500,
        max_partition_fetch_bytes: int = 1_048_576,
        connection: Mapping[str, Any] | None = None,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        self._stop_timeout = stop_timeout
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._max_partition_fetch_bytes = max_partition_fetch_bytes
        # TLS/SASL options (security_protocol, ssl_context, sasl_*) shared by every client.
        self._connection = dict(connection or {})
        self._bootstrap_servers = bootstrap_servers
        self._client_id = client_id
        self._idempotence = idempotence
        self._linger_ms = linger_ms
        self._session_timeout_ms = session_timeout_ms
        self._heartbeat_interval_ms = heartbeat_interval_ms
        self._producer: Any = None
        self._consumers: set[KafkaConsumer] = set()
        self._closed = False

    async def start(self) -> None:
        if self._closed:
            raise BusClosedError("the kafka bus is closed")
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap_servers,
            client_id=f"{self._client_id}-producer",
            acks="all",
            enable_idempotence=self._idempotence,
            linger_ms=self._linger_ms,
            **self._connection,
        )
        try:
            with _translated("starting the producer"):
                await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer

    async def close(self) -> None:
        """Stop the consumers still running and the producer, all at once: each is given
        ``stop_timeout`` seconds and then abandoned, so a broker that does not answer holds the
        close that long, not aiokafka's 40 s per request one client after another."""
        if self._closed:
            return
        self._closed = True
        stops = [consumer.stop() for consumer in list(self._consumers)]
        if self._producer is not None:
            stops.append(self._stop_producer(self._producer))
        for result in await asyncio.gather(*stops, return_exceptions=True):
            if isinstance(result, Exception):
                logger.warning("kafka: closing the bus", exc_info=result)
            elif isinstance(result, BaseException):
                raise result

    async def _stop_producer(self, producer: Any) -> None:
        """The producer sends what it holds and closes; records not acknowledged by then were
        never acknowledged to anyone (publish had not returned), so abandoning them loses
        nothing."""

        async def stop() -> None:
            with _translated("stopping the producer"):
                await producer.stop()

        async def abandon() -> None:
            sending = producer._sender.sender_task if producer._sender is not None else None
            if sending is not None and not sending.done():
                sending.cancel()
                await asyncio.wait([sending])
            await producer.client.close()

        await _within(self._stop_timeout, stop(), action="stopping the producer", abandon=abandon)

    async def ensure_topics(self, topics: Sequence[TopicSpec]) -> None:
        self._live_producer()
        if not topics:
            return
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self._bootstrap_servers,
            client_id=f"{self._client_id}-admin",
            **self._connection,
        )
        try:
            with _translated("creating topics"):
                await admin.start()
                response = await admin.create_topics(
                    [NewTopic(t.name, t.partitions, t.replication_factor) for t in topics]
                )
                for topic, code, *_ in response.topic_errors:
                    if code not in (0, TopicAlreadyExistsError.errno):
                        raise for_code(code)(f"topic {topic!r}")
        finally:
            await admin.close()

    def publisher(self) -> KafkaBus:
        return self

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        producer = self._live_producer()
        if len(records) == 1:
            # A single event (POST /v1/events): the record joins the batch open for its
            # partition, as below, without the grouping and the gather a many-record publish
            # needs: those cost more than the rest of this call.
            record = records[0]
            with _translated("publish"):
                partitions = await _partitions(producer, record.topic)
                partition = partitions[partition_for(record.key, len(partitions))]
                await (await _send(producer, record, partition))
            return
        # The call returns only once the broker has every record (acks="all"). A partition
        # with a few records gets them through send(): they join the batch the producer has
        # open for it, shared with concurrent publishes (single events from many requests).
        # A partition with many gets batches of its own (send_batch): per-record send() costs a
        # future, a size estimate and a metadata lookup each, most of a large publish's CPU. A
        # batch of its own waits for the partition's previous batch to be drained, which is why
        # small publishes do not take that path.
        pending: list[asyncio.Future[Any]] = []
        try:
            with _translated("publish"):
                by_partition = await _by_partition(producer, records)
                large: list[tuple[TP, list[OutgoingRecord]]] = []
                for tp, group in by_partition.items():
                    if len(group) >= _OWN_BATCH_FROM:
                        large.append((tp, group))
                        continue
                    for record in group:
                        pending.append(await _send(producer, record, tp[1]))
                # The n-th batch of every partition before any (n+1)-th: the accumulator holds a
                # partition's next batch until the previous one is drained, and that wait is
                # then shared by every partition rather than taken one partition at a time.
                for batches in _batches(producer, large):
                    for (topic, partition), batch in batches:
                        pending.append(await producer.send_batch(batch, topic, partition=partition))
        except asyncio.CancelledError:
            # Abandoned (a stop's deadline): waiting for the queued sends could take the client's
            # request timeout. Their outcomes are retrieved whenever they come.
            for future in pending:
                future.add_done_callback(_retrieve)
            raise
        except BaseException:
            # Even when a send failed, wait for the ones already queued so no future is left
            # with an unretrieved exception.
            await asyncio.gather(*pending, return_exceptions=True)
            raise
        results = await asyncio.gather(*pending, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                with _translated("publish"):
                    raise result

    def consumer(self, *, group: str, topics: Sequence[str]) -> KafkaConsumer:
        self._live_producer()
        consumer = KafkaConsumer(
            bootstrap_servers=self._bootstrap_servers,
            client_id=f"{self._client_id}-{group}",
            group=group,
            topics=topics,
            session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=self._heartbeat_interval_ms,
            fetch_max_wait_ms=self._fetch_max_wait_ms,
            max_partition_fetch_bytes=self._max_partition_fetch_bytes,
            on_stop=self._consumers.discard,
            connection=self._connection,
            stop_timeout=self._stop_timeout,
        )
        self._consumers.add(consumer)
        return consumer

    async def ping(self) -> None:
        producer = self._live_producer()
        with _translated("fetching metadata"):
            await producer.client.fetch_all_metadata()

    def _live_producer(self) -> Any:
        if self._closed:
            raise BusClosedError("the kafka bus is closed")
        if self._producer is None:
            raise BusError("the kafka bus has not been started")
        return self._producer


TP = tuple[str, int]


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark an abandoned send's outcome as seen, so asyncio does not log it as never retrieved."""
    if not future.cancelled():
        future.exception()


_OWN_BATCH_FROM = 16
"""Records for one partition in one publish from which they go in batches of their own."""


async def _by_partition(
    producer: Any, records: Sequence[OutgoingRecord]
) -> dict[TP, list[OutgoingRecord]]:
    """The records by partition, in order, each where Kafka's default partitioner puts it
    (murmur2 of the key over the topic's partitions): a key keeps its partition and order."""
    partitions: dict[str, list[int]] = {}
    grouped: dict[TP, list[OutgoingRecord]] = {}
    for record in records:
        topic = record.topic
        known = partitions.get(topic)
        if known is None:
            known = partitions[topic] = await _partitions(producer, topic)
        tp = (topic, known[partition_for(record.key, len(known))])
        group = grouped.get(tp)
        if group is None:
            grouped[tp] = [record]
        else:
            group.append(record)
    return grouped


async def _partitions(producer: Any, topic: str) -> list[int]:
    """The topic's partitions, sorted: from the producer's metadata when it has the topic (no
    coroutine), else as ``partitions_for`` waits for them."""
    known = producer.client.cluster.partitions_for_topic(topic)
    if known is None:
        known = await producer.partitions_for(topic)
    return sorted(known)


async def _send(producer: Any, record: OutgoingRecord, partition: int) -> asyncio.Future[Any]:
    """``record`` into the batch the producer has open for its partition; the future of its
    acknowledgement."""
    future: asyncio.Future[Any] = await producer.send(
        record.topic,
        record.value,
        key=record.key.encode(),
        headers=_headers(record),
        partition=partition,
    )
    return future


def _headers(record: OutgoingRecord) -> list[tuple[str, bytes]]:
    return [(name, value.encode()) for name, value in record.headers.items()]


def _batches(
    producer: Any, groups: Sequence[tuple[TP, list[OutgoingRecord]]]
) -> list[list[tuple[TP, Any]]]:
    """Each partition's records as closed aiokafka batches, grouped into rounds: round n holds
    the n-th batch of every partition that has one."""
    rounds: list[list[tuple[TP, Any]]] = []
    for tp, group in groups:
        chain = [producer.create_batch()]
        for record in group:
            key, headers = record.key.encode(), _headers(record)
            # A full batch refuses the record (None); an empty one always takes it.
            while (
                chain[-1].append(key=key, value=record.value, timestamp=None, headers=headers)
                is None
            ):
                chain.append(producer.create_batch())
        for depth, batch in enumerate(chain):
            # Closed: a complete batch goes out at once instead of lingering for more records.
            batch.close()
            if depth == len(rounds):
                rounds.append([])
            rounds[depth].append((tp, batch))
    return rounds


class KafkaConsumer:
    """A group member with manual commits; implements the Consumer port."""

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        client_id: str,
        group: str,
        topics: Sequence[str],
        session_timeout_ms: int,
        heartbeat_interval_ms: int,
        fetch_max_wait_ms: int = 500,
        max_partition_fetch_bytes: int = 1_048_576,
        on_stop: Callable[[KafkaConsumer], None] | None = None,
        connection: Mapping[str, Any] | None = None,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        self._stop_timeout = stop_timeout
        self._group = group
        self._topics = list(topics)
        self._options: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "client_id": client_id,
            "group_id": group,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "session_timeout_ms": session_timeout_ms,
            "heartbeat_interval_ms": heartbeat_interval_ms,
            "fetch_max_wait_ms": fetch_max_wait_ms,
            # A poll takes at most one fetch per partition: this bounds a batch's bytes.
            "max_partition_fetch_bytes": max_partition_fetch_bytes,
            **(connection or {}),
        }
        self._consumer = AIOKafkaConsumer(**self._options)
        # Offsets handed to commit() that Kafka has not accepted yet (see the module docstring).
        self._pending: dict[TopicPartition, int] = {}
        self._on_stop = on_stop
        self._started = False
        self._stopped = False

    @property
    def group(self) -> str:
        return self._group

    async def start(self) -> None:
        """Join the group. When the broker cannot be reached this raises BusError and leaves the
        member as if never started, on a fresh aiokafka client (one that failed to start cannot
        start again), so the caller may try again once the broker is back."""
        if self._stopped:
            raise BusClosedError(f"consumer of group {self._group!r} is stopped")
        if self._started:
            return
        self._started = True
        self._consumer.subscribe(self._topics, listener=_Listener(self))
        try:
            with _translated(f"starting consumer of group {self._group!r}"):
                await self._consumer.start()
        except BusError:
            await _within(
                self._stop_timeout,
                self._consumer.stop(),
                action=f"closing the consumer of group {self._group!r} that failed to start",
                abandon=self._abandon,
            )
            self._consumer = AIOKafkaConsumer(**self._options)
            self._started = False
            raise
        except BaseException:
            await self.stop()
            raise

    async def poll(
        self,
        *,
        max_records: int,
        timeout: float,
    ) -> list[ConsumedRecord]:
        self._check_live()
        with _translated(f"poll of group {self._group!r}"):
            batches = await self._consumer.getmany(
                timeout_ms=int(timeout * 1000), max_records=max_records
            )
        return [
            ConsumedRecord(
                topic=tp.topic,
                partition=tp.partition,
                offset=message.offset,
                key=message.key.decode() if message.key is not None else "",
                value=message.value if message.value is not None else b"",
                headers={k: bytes(v).decode() for k, v in message.headers},
                timestamp_ms=message.timestamp,
            )
            for tp in sorted(batches)
            for message in batches[tp]
        ]

    async def commit(self, records: Sequence[ConsumedRecord]) -> None:
        self._check_live()
        offsets: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
        if not offsets:
            return
        self._pending.update(offsets)
        lost = set(offsets) - self._assignment()
        await self._flush(offsets.keys())
        if lost:
            raise BusError(
                f"group {self._group!r}: {sorted(lost)} are not assigned to this member now "
                "(rebalance); kept for a retry if they come back, else their next owner "
                "delivers those records again"
            )

    async def lag(self) -> dict[str, int]:
        if self._stopped or not self._started:
            return {}
        behind: dict[str, int] = {}
        for tp in self._assignment():
            # The highwater is known once a fetch of the partition has answered.
            highwater = self._consumer.highwater(tp)
            if highwater is None:
                continue
            with _translated(f"position of group {self._group!r}"):
                position = await self._consumer.position(tp)
            behind[tp.topic] = behind.get(tp.topic, 0) + max(0, highwater - position)
        return behind

    async def stop(self) -> None:
        """Commit what is pending, leave the group and close, within ``stop_timeout`` seconds
        all together; past that the rest is abandoned (see :func:`_within`). Skipping the last
        commit redelivers those records and skipping LeaveGroup makes the next member wait for
        the session timeout: both safe, as delivery is at-least-once and handling idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._on_stop is not None:
            self._on_stop(self)
        await _within(
            self._stop_timeout,
            self._commit_and_stop(),
            action=f"stopping consumer of group {self._group!r}",
            abandon=self._abandon,
        )

    async def _commit_and_stop(self) -> None:
        if self._started and self._pending:
            with contextlib.suppress(BusError):
                await self._flush(None)
        with _translated(f"stopping consumer of group {self._group!r}"):
            await self._consumer.stop()

    async def _abandon(self) -> None:
        """Close what an interrupted aiokafka stop left open, without a request to the broker:
        the group's background tasks, the fetcher and the sockets."""
        consumer = self._consumer
        consumer._closed = True  # the deadline may have come before aiokafka's stop began
        coordinator = consumer._coordinator
        tasks = [
            task
            for name in ("_coordination_task", "_heartbeat_task", "_commit_refresh_task")
            if (task := getattr(coordinator, name, None)) is not None and not task.done()
        ]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if consumer._fetcher is not None:
            await consumer._fetcher.close()
        await consumer._client.close()

    def _check_live(self) -> None:
        if self._stopped:
            raise BusClosedError(f"consumer of group {self._group!r} is stopped")
        if not self._started:
            raise BusError(f"consumer of group {self._group!r} has not been started")

    def _assignment(self) -> set[TopicPartition]:
        return set(self._consumer.assignment())

    async def _flush(self, only: Collection[TopicPartition] | None) -> None:
        """Commit pending offsets of partitions we still own; keep them when Kafka refuses
        because of a rebalance."""
        assigned = self._assignment()
        offsets = {
            tp: offset
            for tp, offset in self._pending.items()
            if tp in assigned and (only is None or tp in only)
        }
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            raise BusError(
                f"group {self._group!r} is rebalancing; the commit will be retried on "
                f"revoke/assign: {exc!r}"
            ) from exc
        except KafkaError as exc:
            raise BusError(f"kafka: commit of group {self._group!r} failed: {exc!r}") from exc
        for tp, offset in offsets.items():
            if self._pending.get(tp) == offset:
                del self._pending[tp]

    async def _on_revoked(self, revoked: Collection[TopicPartition]) -> None:
        # The old generation may still commit here, so this is the last chance for our offsets.
        try:
            await self._flush(revoked)
        except BusError:
            logger.warning("group %r: commit on revoke failed", self._group, exc_info=True)

    async def _on_assigned(self, assigned: Collection[TopicPartition]) -> None:
        for tp in set(self._pending) - set(assigned):
            del self._pending[tp]  # its new owner redelivers from the last commit
        try:
            await self._flush(assigned)
        except BusError:
            logger.warning("group %r: commit after assignment failed", self._group, exc_info=True)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, member: KafkaConsumer) -> None:
        self._member = member

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        await self._member._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        await self._member._on_assigned(assigned)
