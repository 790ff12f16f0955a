"""Wires the dispatch service: templates, provider, consumer of the messages topic, outbox relay."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.dispatch.adapters.providers.base import Provider, TransactionalProvider
from services.dispatch.adapters.providers.sendgrid import SendGridProvider
from services.dispatch.adapters.providers.sink import SinkProvider
from services.dispatch.adapters.tables import outbox
from services.dispatch.adapters.templates import TemplateStore
from services.dispatch.service_layer.handlers import Dispatcher, Sender
from services.dispatch.service_layer.uow import DispatchUnitOfWork
from services.dispatch.settings import DispatchSettings
from shared.bus.ports import Bus, ConsumedRecord
from shared.clock import Clock
from shared.consumer import ConsumerRunner
from shared.contracts.messages import MessageRequest
from shared.contracts.topics import MESSAGES
from shared.db.engine import session_factory
from shared.errors import PoisonRecordError
from shared.outbox import OutboxRelay
from shared.retry import RetryPolicy
from shared.worker import ConsumerWorker

GROUP = "dispatch"


def build_provider(
    settings: DispatchSettings, client: httpx.AsyncClient
) -> Provider | TransactionalProvider:
    if settings.email_provider == "sendgrid":
        return SendGridProvider(
            client, api_key=settings.sendgrid_api_key, base_url=settings.sendgrid_base_url
        )
    return SinkProvider()


class DispatchWorker(ConsumerWorker):
    def __init__(
        self, settings: DispatchSettings, *, engine: AsyncEngine, bus: Bus, clock: Clock
    ) -> None:
        self.settings = settings
        sessions = session_factory(engine)
        self.uow = lambda: DispatchUnitOfWork(sessions)
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.send_timeout),
            limits=httpx.Limits(max_connections=settings.send_concurrency),
        )
        self.dispatcher = Dispatcher(
            uow=self.uow,
            templates=TemplateStore(settings.templates_dir),
            provider=build_provider(settings, self.client),
            sender=Sender(email=settings.email_from, name=settings.email_from_name),
            retry=RetryPolicy(max_attempts=settings.send_max_attempts),
            ambiguous_policy=settings.ambiguous_policy,
            concurrency=settings.send_concurrency,
            clock=clock,
        )
        publisher = bus.publisher()
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
            ),
        )

    async def handle(self, records: Sequence[ConsumedRecord]) -> None:
        requests = []
        for record in records:
            try:
                requests.append(MessageRequest.from_json(record.value))
            except ValidationError as exc:
                raise PoisonRecordError(f"not a MessageRequest v1: {exc.errors()[:3]}") from exc
        await self.dispatcher.handle(requests)
        self.relay.notify()

    async def stop(self) -> None:
        """Finish the sends in hand and record them (ConsumerWorker.stop), then close HTTP."""
        await super().stop()
        await self.client.aclose()
