"""Wires the dispatch service: templates, providers per workspace, the consumer of the messages
topic, the consumer of the erasures topic, the held-message poller and the outbox relay."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from functools import partial

import httpx
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.dispatch.adapters.providers.registry import build_provider
from services.dispatch.adapters.providers.transport import provider_client
from services.dispatch.adapters.routing import ConfiguredRoutes
from services.dispatch.adapters.tables import outbox
from services.dispatch.adapters.template_repository import TemplateRenderer
from services.dispatch.adapters.templates import TemplateStore
from services.dispatch.adapters.workspace_config import ProviderSetting, WorkspaceConfig
from services.dispatch.domain.policy import DispatchPolicy
from services.dispatch.domain.providers import ProviderConfig, SendGridConfig, SinkConfig
from services.dispatch.service_layer.erasure import erase_customers, prune_erasures
from services.dispatch.service_layer.handlers import Dispatcher, Sender
from services.dispatch.service_layer.links import SignedLinks
from services.dispatch.service_layer.uow import DispatchUnitOfWork
from services.dispatch.settings import DispatchSettings
from services.dispatch.webhooks.recorder import prune_webhook_events
from shared.bus.ports import Bus, ConsumedRecord
from shared.clock import Clock
from shared.consumer import ConsumerRunner, decode_records
from shared.contracts.erasure import ErasureRequest
from shared.contracts.messages import MessageRequest
from shared.contracts.topics import ERASURES, MESSAGES
from shared.db.engine import session_factory
from shared.outbox import OutboxRelay
from shared.retry import RetryPolicy
from shared.worker import ConsumerWorker, check_running, finish

log = logging.getLogger(__name__)

GROUP = "dispatch"
ERASURE_GROUP = "dispatch-erasure"


def default_providers(settings: DispatchSettings) -> dict[str, ProviderSetting]:
    """The providers of workspaces that configured none: from the settings."""
    email: ProviderConfig = SinkConfig()
    if settings.email_provider == "sendgrid":
        email = SendGridConfig(
            api_key=settings.sendgrid_api_key, base_url=settings.sendgrid_base_url
        )
    return {
        "email": ProviderSetting(None, "email", "primary", email),
        "sms": ProviderSetting(None, "sms", "primary", SinkConfig()),
    }


def workspace_config(settings: DispatchSettings, engine: AsyncEngine) -> WorkspaceConfig:
    """Providers and sending settings per workspace, shared by the worker and the admin API of
    one process (a change over HTTP reaches this process's sends at once)."""
    return WorkspaceConfig(
        engine,
        defaults=default_providers(settings),
        default_policy=DispatchPolicy(),
        ttl=settings.dispatch_config_refresh,
    )


class DispatchWorker(ConsumerWorker):
    def __init__(
        self,
        settings: DispatchSettings,
        *,
        engine: AsyncEngine,
        bus: Bus,
        clock: Clock,
        config: WorkspaceConfig | None = None,
        renderer: TemplateRenderer | None = None,
    ) -> None:
        self.settings = settings
        self._sessions = session_factory(engine)
        # Twice the sends in flight: a fallback provider's connections beside the primary's.
        self.client: httpx.AsyncClient = provider_client(
            timeout=settings.send_timeout, connections=settings.send_concurrency * 2
        )
        self.config = config or workspace_config(settings, engine)
        self.routes = ConfiguredRoutes(
            self.config,
            partial(build_provider, client=self.client),
            concurrency=settings.send_concurrency,
            breaker_threshold=settings.breaker_threshold,
            breaker_cooldown=settings.breaker_cooldown,
        )
        self.renderer = renderer or TemplateRenderer(TemplateStore(settings.templates_dir))
        self.dispatcher = Dispatcher(
            uow=self.uow,
            renderer=self.renderer,
            routes=self.routes,
            sender=Sender(email=settings.email_from, name=settings.email_from_name),
            retry=RetryPolicy(max_attempts=settings.send_max_attempts),
            ambiguous_policy=settings.ambiguous_policy,
            clock=clock,
            hold_over=settings.send_hold_over,
            claim_chunk=settings.dispatch_claim_chunk,
            links=SignedLinks(
                public_url=settings.public_url,
                secret=settings.unsubscribe_secret.get_secret_value(),
                mailto=settings.unsubscribe_mailto,
            ),
        )
        self._clock = clock
        self._held: asyncio.Task[None] | None = None
        self._erasing: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        publisher = bus.publisher()
        # Erasures have a group of their own: a backlog of sends never delays an erasure.
        self.erasures = ConsumerRunner(
            group=ERASURE_GROUP,
            consumer=bus.consumer(group=ERASURE_GROUP, topics=[ERASURES]),
            handler=self.handle_erasures,
            dead_letters=publisher,
            max_records=settings.dispatch_batch_size,
            poll_timeout=settings.dispatch_poll_timeout,
            stop_timeout=settings.bus_stop_timeout,
        )
        super().__init__(
            name=GROUP,
            relay=OutboxRelay(engine=engine, table=outbox, publisher=publisher),
            runner=ConsumerRunner(
                group=GROUP,
                consumer=bus.consumer(group=GROUP, topics=[MESSAGES]),
                handler=self.handle,
                dead_letters=publisher,
                max_records=settings.dispatch_batch_size,
                poll_timeout=settings.dispatch_poll_timeout,
                stop_timeout=settings.bus_stop_timeout,
            ),
            stop_timeout=settings.bus_stop_timeout,
        )

    def uow(self) -> DispatchUnitOfWork:
        return DispatchUnitOfWork(self._sessions)

    async def handle(self, records: Sequence[ConsumedRecord]) -> None:
        requests = decode_records(records, MessageRequest.from_json, "a MessageRequest v1")
        await self.dispatcher.handle(requests)
        self.relay.notify()

    async def handle_erasures(self, records: Sequence[ConsumedRecord]) -> None:
        await erase_customers(
            self.uow, decode_records(records, ErasureRequest.from_json, "an ErasureRequest v1")
        )

    async def release_held(self) -> int:
        """Send the held messages whose time has come (quiet hours over, Retry-After passed)."""
        async with self.uow() as uow:
            due = await uow.ledger.due_held(
                now=self._clock.now(), limit=self.settings.dispatch_batch_size
            )
        requests = []
        for data in due:
            try:
                requests.append(MessageRequest.model_validate(data))
            except ValidationError:  # pragma: no cover - written by this service
                log.exception("held message unreadable")
        if requests:
            await self.dispatcher.handle(requests)
            self.relay.notify()
        return len(requests)

    async def _release_loop(self) -> None:
        """Held messages every few seconds; once an hour, forget provider webhook ids older than
        any provider retries (their deduplication needs no more)."""
        pruned_at: float | None = None
        while not self._stopping.is_set():
            try:
                released = await self.release_held()
                if pruned_at is None or time.monotonic() - pruned_at > 3600:
                    await prune_webhook_events(self.uow, now=self._clock.now())
                    await prune_erasures(self.uow, now=self._clock.now())
                    pruned_at = time.monotonic()
            except Exception:
                log.exception("releasing held messages failed; trying again")
                released = 0
            if released < self.settings.dispatch_batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._stopping.wait(), timeout=self.settings.held_poll_interval
                    )

    async def start(self) -> None:
        await super().start()
        self._held = asyncio.create_task(self._release_loop(), name=f"{self.name}-held")
        self._erasing = asyncio.create_task(self.erasures.run(), name=f"{ERASURE_GROUP}-consumer")

    async def check(self) -> None:
        await super().check()
        check_running(self._held, self._erasing)
        self.erasures.check()

    async def stop(self) -> None:
        """Stop releasing held messages, finish the erasures and the sends in hand and record
        them (ConsumerWorker.stop), then close HTTP.

        A part that ends on an error (the erasure consumer gives up its batch when the database is
        away) is logged and does not keep the others from stopping: that batch is redelivered."""
        self._stopping.set()
        self.erasures.stop()
        await finish(self._held, "held messages are released after the restart")
        await finish(self._erasing, "its batch in hand will be redelivered")
        try:
            await super().stop()
        finally:
            await self.client.aclose()
