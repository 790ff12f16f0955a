"""In-memory bus fakes for unit tests (the real adapters are tested in tests/integration)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from shared.bus.ports import ConsumedRecord, OutgoingRecord


class MemoryPublisher:
    def __init__(self) -> None:
        self.published: list[OutgoingRecord] = []

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        self.published.extend(records)


class ListConsumer:
    """Hands out a fixed list of records, then stops the runner once everything is committed."""

    def __init__(self, records: Sequence[ConsumedRecord], *, on_drained: object = None) -> None:
        self._pending = list(records)
        self.committed: list[ConsumedRecord] = []
        self.started = self.stopped = False
        self.on_drained = on_drained

    async def start(self) -> None:
        self.started = True

    async def poll(self, *, max_records: int, timeout: float) -> list[ConsumedRecord]:
        batch, self._pending = self._pending[:max_records], self._pending[max_records:]
        if not batch:
            if callable(self.on_drained):
                self.on_drained()
            await asyncio.sleep(0)
        return batch

    async def commit(self, records: Sequence[ConsumedRecord]) -> None:
        self.committed.extend(records)

    async def lag(self) -> dict[str, int]:
        return {"t": len(self._pending)}

    async def stop(self) -> None:
        self.stopped = True


def record(
    offset: int, value: bytes = b"{}", *, topic: str = "t", key: str = "k"
) -> ConsumedRecord:
    return ConsumedRecord(
        topic=topic, partition=0, offset=offset, key=key, value=value, headers={}, timestamp_ms=0
    )
