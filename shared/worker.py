"""A consuming service's moving parts: the consumer loop and the outbox relay it feeds.

Start runs both; stop finishes the batch in hand, commits it, publishes what the outbox holds and
returns — the graceful shutdown every consuming service needs.
"""

from __future__ import annotations

import asyncio
import logging
import time

from shared.bus.ports import STOP_TIMEOUT
from shared.consumer import ConsumerRunner
from shared.outbox import OutboxRelay

log = logging.getLogger(__name__)


class ConsumerWorker:
    def __init__(
        self,
        *,
        name: str,
        runner: ConsumerRunner,
        relay: OutboxRelay,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        self.name = name
        self.stop_timeout = stop_timeout
        self.runner = runner
        self.relay = relay
        self._consuming: asyncio.Task[None] | None = None
        self._relaying: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._consuming = asyncio.create_task(self.runner.run(), name=f"{self.name}-consumer")
        self._relaying = asyncio.create_task(self.relay.run(), name=f"{self.name}-outbox")

    async def check(self) -> None:
        """For /readyz: raise when the consumer loop or the relay has died, or while the
        consumer cannot join its group."""
        check_running(self._consuming, self._relaying)
        self.runner.check()

    async def stop(self) -> None:
        """Finish the batch in hand, commit it, publish the outbox, stop.

        A part that ends on an error (the database went away under the batch in hand, which is
        then not committed) does not keep the others from stopping: the batch is redelivered and
        what stays in the outbox goes out after the restart, so the process still stops cleanly.

        A bus that does not answer holds the stop for at most twice ``stop_timeout`` seconds: the
        consumer loop's commit and leave and the relay's publish in flight share the first
        ``stop_timeout`` (the runner and the relay stop together), the drain has the second. What
        is still waiting then is abandoned: the batch is redelivered and the outbox keeps its
        records for the next start. Only a handler still working on its batch (it is never
        interrupted: a send in hand must be recorded) can take longer.
        """
        deadline = time.monotonic() + self.stop_timeout
        self.runner.stop()
        self.relay.stop()
        await finish(self._consuming, "its batch in hand will be redelivered")
        relaying = self._relaying
        if relaying is not None and not relaying.done():
            await asyncio.wait({relaying}, timeout=max(0.0, deadline - time.monotonic()))
            if not relaying.done():
                log.warning(
                    "%s: the outbox relay's publish was abandoned after %g s (the bus does not "
                    "answer); the outbox keeps its records",
                    self.name,
                    self.stop_timeout,
                )
                relaying.cancel()
                await asyncio.wait({relaying})
        if relaying is None or not relaying.cancelled():
            await finish(relaying, "the outbox keeps what it holds")
        try:
            async with asyncio.timeout(self.stop_timeout):
                await self.relay.drain()
        except TimeoutError:
            log.warning(
                "%s: outbox not drained within %g s (the bus does not answer); it keeps its "
                "records for the next start",
                self.name,
                self.stop_timeout,
            )
        except Exception:
            log.warning(
                "%s: outbox not drained on stop; it keeps its records", self.name, exc_info=True
            )


async def finish(task: asyncio.Task[None] | None, then: str) -> None:
    """Wait for a part of a stopping process; one that ended on an error is logged (``then``
    says what becomes of its work), not raised, so the rest of the shutdown still runs."""
    if task is None:
        return
    try:
        await task
    except Exception:
        log.warning("%s stopped on an error; %s", task.get_name(), then, exc_info=True)


def check_running(*tasks: asyncio.Task[None] | None) -> None:
    """For /readyz: raise when one of a process's long-running parts has ended."""
    for task in tasks:
        if task is not None and task.done():
            error = None if task.cancelled() else task.exception()
            raise RuntimeError(f"{task.get_name()} stopped: {error!r}")
