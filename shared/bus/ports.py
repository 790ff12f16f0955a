"""The bus ports. Adapters implement these; services depend only on them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

STOP_TIMEOUT = 2.0
"""Seconds each step of a stop may wait on a bus that does not answer before it is abandoned:
a consumer loop's last commit and its leaving the group (together), the outbox relay's last
publish and then its drain (each), closing the bus (its consumers together, then its producer).
aiokafka would wait up to its request timeout (40 s) per request. Abandoning is safe: delivery is
at-least-once and handling idempotent, so what was not committed or published comes again after
the restart. docs/operations.md adds these up against Helm's grace period."""


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    topic: str
    key: str
    value: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ConsumedRecord:
    topic: str
    partition: int
    offset: int
    key: str
    value: bytes
    headers: Mapping[str, str]
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int = 1


class Publisher(Protocol):
    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        """Return only once the bus has durably accepted every record; raise BusError otherwise.

        Records with the same key land in the same partition, in the order given.
        """
        ...


class Consumer(Protocol):
    """A member of a consumer group. Offsets are committed manually, after the database commit."""

    async def start(self) -> None: ...

    async def poll(self, *, max_records: int, timeout: float) -> list[ConsumedRecord]:
        """Up to ``max_records`` records, waiting at most ``timeout`` seconds for the first."""
        ...

    async def commit(self, records: Sequence[ConsumedRecord]) -> None:
        """Commit, per partition, the offset after the highest record given (offset + 1).

        Raises BusError when the member no longer owns a partition (a rebalance, a lost lease):
        those records will be delivered again to the partition's next owner.
        """
        ...

    async def lag(self) -> dict[str, int]:
        """Records not yet handed out, per topic, over the partitions this member owns
        (the figure behind ``ciclo_consumer_lag``); empty while it owns none."""
        ...

    async def stop(self) -> None:
        """Leave the group. Processed-but-uncommitted records are not committed here."""
        ...


class Bus(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ensure_topics(self, topics: Sequence[TopicSpec]) -> None:
        """Create missing topics; existing ones are left as they are."""
        ...

    def publisher(self) -> Publisher: ...

    def consumer(self, *, group: str, topics: Sequence[str]) -> Consumer: ...

    async def ping(self) -> None:
        """Raise BusError when the bus cannot be reached (for /readyz)."""
        ...
