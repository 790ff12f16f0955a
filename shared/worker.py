"""A consuming service's moving parts: the consumer loop and the outbox relay it feeds.

Start runs both; stop finishes the batch in hand, commits it, publishes what the outbox holds and
returns — the graceful shutdown every consuming service needs.
"""

from __future__ import annotations

import asyncio
import logging

from shared.consumer import ConsumerRunner
from shared.outbox import OutboxRelay

log = logging.getLogger(__name__)


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
        """Finish the batch in hand, commit it, publish the outbox, stop.

        A part that ends on an error (the database went away under the batch in hand, which is
        then not committed) does not keep the others from stopping: the batch is redelivered and
        what stays in the outbox goes out after the restart, so the process still stops cleanly.
        """
        self.runner.stop()
        await self._finish(self._consuming, "its batch in hand will be redelivered")
        self.relay.stop()
        await self._finish(self._relaying, "the outbox keeps what it holds")
        try:
            await self.relay.drain()
        except Exception:
            log.warning(
                "%s: outbox not drained on stop; it keeps its records", self.name, exc_info=True
            )

    async def _finish(self, task: asyncio.Task[None] | None, then: str) -> None:
        if task is None:
            return
        try:
            await task
        except Exception:
            log.warning("%s stopped on an error; %s", task.get_name(), then, exc_info=True)
