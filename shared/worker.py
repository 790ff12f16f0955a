"""A consuming service's moving parts: the consumer loop and the outbox relay it feeds.

Start runs both; stop finishes the batch in hand, commits it, publishes what the outbox holds and
returns — the graceful shutdown every consuming service needs.
"""

from __future__ import annotations

import asyncio

from shared.consumer import ConsumerRunner
from shared.outbox import OutboxRelay


class ConsumerWorker:
    def __init__(self, *, name: str, runner: ConsumerRunner, relay: OutboxRelay) -> None:
        self.name = name
        self.runner = runner
        self.relay = relay
        self._consuming: asyncio.Task[None] | None = None
        self._relaying: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._consuming = asyncio.create_task(self.runner.run(), name=f"{self.name}-consumer")
        self._relaying = asyncio.create_task(self.relay.run(), name=f"{self.name}-outbox")

    async def check(self) -> None:
        """For /readyz: raise when the consumer loop or the relay has died."""
        for task in (self._consuming, self._relaying):
            if task is not None and task.done():
                error = None if task.cancelled() else task.exception()
                raise RuntimeError(f"{task.get_name()} stopped: {error!r}")

    async def stop(self) -> None:
        """Finish the batch in hand, commit it, publish the outbox, stop."""
        self.runner.stop()
        if self._consuming is not None:
            await self._consuming
        self.relay.stop()
        if self._relaying is not None:
            await self._relaying
        await self.relay.drain()
