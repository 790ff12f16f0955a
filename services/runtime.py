"""Hosts one or more services in one process, with one HTTP app.

``ciclo run`` hosts all three (embedded mode by default); ``ciclo serve NAME`` hosts one. Same code
path either way: only the bus and database URLs decide embedded or distributed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.components import ServiceName, prepare_schema
from services.dispatch.adapters.template_repository import TemplateRenderer
from services.dispatch.adapters.templates import TemplateStore
from services.dispatch.adapters.workspace_config import WorkspaceConfig
from services.dispatch.bootstrap import DispatchWorker, workspace_config
from services.dispatch.entrypoints.http import admin_router, sink_router
from services.dispatch.entrypoints.templates import templates_router
from services.dispatch.entrypoints.unsubscribe import unsubscribe_router
from services.dispatch.entrypoints.webhooks import provider_webhooks_router
from services.dispatch.service_layer.uow import DispatchUnitOfWork
from services.dispatch.settings import DispatchSettings
from services.ingest.api import NATIVE_PATHS, events_router
from services.ingest.catalogue import UNION_TAGS
from services.ingest.encoding import RequestEncodingMiddleware
from services.ingest.erasure import IngestErasures
from services.ingest.fast_path import PATH as EVENTS_PATH
from services.ingest.fast_path import EventFastPath
from services.ingest.segment import PATHS as SEGMENT_PATHS
from services.ingest.segment import segment_router
from services.ingest.settings import IngestSettings
from services.ingest.webhooks.routes import webhooks_router
from services.journey.adapters.files import load_catalog
from services.journey.bootstrap import JourneyWorker
from services.journey.domain.catalog import JourneyCatalog
from services.journey.entrypoints.customers import customers_router
from services.journey.entrypoints.http import journeys_router
from services.journey.entrypoints.intelligence import intelligence_router
from services.journey.settings import JourneySettings
from shared.bus.factory import ensure_standard_topics, open_bus
from shared.bus.ports import Bus
from shared.clock import Clock, SystemClock
from shared.db.engine import create_engine, session_factory
from shared.http import (
    BodyLimitMiddleware,
    CicloApp,
    ContentEncodingMiddleware,
    ReadinessCheck,
    RequestIdMiddleware,
    health_router,
    install_error_handlers,
)
from shared.ratelimit import RateLimiter
from shared.settings import ServerSettings
from shared.tenancy.keys import KeyStore, Scope
from shared.worker import ConsumerWorker

log = logging.getLogger(__name__)

# Allocations between two collections of the youngest generation once the server has started
# (CPython's default: 700). See settle_heap.
GC_YOUNG_THRESHOLD = 50_000

# Seconds a readiness check may take before /readyz calls it failed. A hung broker or database
# would otherwise hold the request for the client's own timeout (aiokafka's is 40 s), past the
# probes' (3 s): they would see no answer instead of the 503 that names the failing check. The
# database and the bus are the checks that wait on the network: both together stay under 3 s.
READINESS_TIMEOUT = 1.0


def bounded(check: ReadinessCheck, seconds: float = READINESS_TIMEOUT) -> ReadinessCheck:
    """``check``, failed with a TimeoutError when it has not answered within ``seconds``."""

    async def within() -> None:
        try:
            await asyncio.wait_for(check(), seconds)
        except TimeoutError:
            raise TimeoutError(f"no answer within {seconds:g} s") from None

    return within


def settle_heap() -> None:
    """Tune the cyclic garbage collector for serving, once start-up is over.

    What is alive then (modules, pydantic schemas, routes, the app) lives as long as the process:
    ``gc.freeze()`` takes it out of every later collection. And the youngest generation is
    collected every ``GC_YOUNG_THRESHOLD`` allocations instead of every 700: a request's objects
    (a batch of 500 events allocates tens of thousands of containers) die with it, by reference
    counting, so frequent young collections only found them still alive, promoted them, and the
    full collections that followed walked the whole start-up heap. With CPython's defaults the
    collector took 14-22 % of the batch route's CPU, and an eighth of the CPU of a dispatch
    process draining a backlog (a send allocates some hundred containers that all die young).
    Nothing else changes: garbage in reference cycles is still collected, a little later."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


@dataclass
class Runtime:
    services: Sequence[ServiceName]
    clock: Clock = field(default_factory=SystemClock)
    server: ServerSettings = field(default_factory=ServerSettings)
    # Only the hosted services' settings are read (None: read from the environment at start),
    # so a dispatch misconfiguration cannot stop an ingest process.
    ingest: IngestSettings | None = None
    journey: JourneySettings | None = None
    dispatch: DispatchSettings | None = None
    # settle_heap() once the app has started: for a server process (``ciclo run``, ``ciclo
    # serve …``), not for a runtime among others in one process (tests).
    tune_gc: bool = False

    engine: AsyncEngine = field(init=False)
    bus: Bus = field(init=False)
    keys: KeyStore = field(init=False)
    journey_worker: JourneyWorker | None = field(init=False, default=None)
    dispatch_worker: DispatchWorker | None = field(init=False, default=None)
    ingest_erasures: IngestErasures | None = field(init=False, default=None)
    dispatch_config: WorkspaceConfig | None = field(init=False, default=None)
    dispatch_renderer: TemplateRenderer | None = field(init=False, default=None)
    _file_catalog: JourneyCatalog | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if "ingest" in self.services and self.ingest is None:
            self.ingest = IngestSettings()
        if "journey" in self.services and self.journey is None:
            self.journey = JourneySettings()
        if "dispatch" in self.services and self.dispatch is None:
            self.dispatch = DispatchSettings()
        self.engine = create_engine(
            self.server.resolved_database_url(), pool_size=self.server.database_pool_size
        )
        self.bus = open_bus(self.server)
        self.keys = KeyStore(self.engine, cache_seconds=self.server.key_cache_seconds)
        self._sessions = session_factory(self.engine)
        if self.dispatch is not None:
            self.dispatch_config = workspace_config(self.dispatch, self.engine)
            self.dispatch_renderer = TemplateRenderer(TemplateStore(self.dispatch.templates_dir))

    async def start(self) -> None:
        # Serving on an older schema fails every write that needs a newer column: each event
        # would go to the dead-letter topic. Without auto-migrate, refuse to start instead.
        await prepare_schema(
            self.server.resolved_database_url(),
            self.services,
            auto_migrate=self.server.auto_migrate,
        )
        await self.bus.start()
        await ensure_standard_topics(self.bus, self.server)
        if self.ingest is not None:
            self.ingest_erasures = IngestErasures(
                engine=self.engine, bus=self.bus, stop_timeout=self.server.bus_stop_timeout
            )
            await self.ingest_erasures.start()
        if self.journey is not None:
            self.journey_worker = JourneyWorker(
                self.journey, engine=self.engine, bus=self.bus, clock=self.clock
            )
            log.info(
                "journeys loaded", extra={"journeys": [j.id for j in self.journey_worker.catalog]}
            )
            await self.journey_worker.start()
        if self.dispatch is not None:
            self.dispatch_worker = DispatchWorker(
                self.dispatch,
                engine=self.engine,
                bus=self.bus,
                clock=self.clock,
                config=self.dispatch_config,
                renderer=self.dispatch_renderer,
            )
            await self.dispatch_worker.start()

    async def stop(self) -> None:
        # Ingest has stopped accepting by now (the HTTP server stops before the lifespan ends).
        # Its erasure consumer winds down (its poll ends) while the workers below stop.
        if self.ingest_erasures is not None:
            self.ingest_erasures.runner.stop()
        if self.journey_worker is not None:
            await self.journey_worker.stop()
        if self.dispatch_worker is not None:
            await self.dispatch_worker.stop()
        if self.ingest_erasures is not None:
            await self.ingest_erasures.stop()
        await self.bus.close()
        await self.engine.dispose()

    async def bootstrap_demo(self) -> dict[str, str] | None:
        """First start with an empty database: create the ``demo`` workspace and its keys."""
        if self.server.env == "production" or not self.server.demo:
            return None
        if await self.keys.workspace_count() > 0:
            return None
        await self.keys.ensure_workspace("demo", name="Demo shop")
        _, ingest_key = await self.keys.create_key("demo", Scope.INGEST)
        _, admin_key = await self.keys.create_key("demo", Scope.ADMIN)
        return {"ingest": ingest_key, "admin": admin_key}

    @staticmethod
    async def _worker_ready(worker: ConsumerWorker | None) -> None:
        if worker is None:
            raise RuntimeError("not started")
        await worker.check()

    async def _ingest_ready(self) -> None:
        if self.ingest_erasures is None:
            raise RuntimeError("not started")
        await self.ingest_erasures.check()

    async def _database_ready(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    def app(self) -> CicloApp:
        @asynccontextmanager
        async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
            await self.start()
            demo = await self.bootstrap_demo()
            if demo:
                print_demo_keys(demo)
            if self.tune_gc:
                settle_heap()
            try:
                yield
            finally:
                await self.stop()

        app = CicloApp(
            title="Ciclo",
            version="0.1.0",
            summary="Event-driven marketing automation for e-commerce",
            lifespan=lifespan,
        )
        app.state.keys = self.keys
        if self.server.rate_limit > 0:
            app.state.rate_limiter = RateLimiter(
                rate=self.server.rate_limit, burst=self.server.rate_limit_burst
            )
        install_error_handlers(app, union_tags=UNION_TAGS)
        if "ingest" in self.services:
            # Innermost: the body limit has checked the compressed length first.
            app.add_middleware(
                RequestEncodingMiddleware,
                paths=NATIVE_PATHS,
                max_bytes=self.server.max_body_bytes,
            )
        # Any other route refuses a compressed body (415) rather than parse it as JSON.
        decoded = (*NATIVE_PATHS, *SEGMENT_PATHS) if "ingest" in self.services else ()
        app.add_middleware(ContentEncodingMiddleware, decoded=decoded)
        app.add_middleware(BodyLimitMiddleware, max_bytes=self.server.max_body_bytes)
        app.add_middleware(RequestIdMiddleware)
        origins = [o.strip() for o in self.server.cors_origins.split(",") if o.strip()]
        if origins:
            app.add_middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type", "Content-Encoding", "X-Request-Id"],
                max_age=600,
            )
        checks = {"database": bounded(self._database_ready), "bus": bounded(self.bus.ping)}
        if "ingest" in self.services:
            checks["ingest"] = self._ingest_ready
        if "journey" in self.services:
            checks["journey"] = lambda: self._worker_ready(self.journey_worker)
        if "dispatch" in self.services:
            checks["dispatch"] = lambda: self._worker_ready(self.dispatch_worker)
        if "ingest" in self.services:
            # First: routing tries the routes in order, and these take most of the requests.
            events = self.bus.publisher()
            app.include_router(events_router(publisher=events))
            # One event, accepted: answered before FastAPI's routing (its refusals still are the
            # route's; see services/ingest/fast_path.py).
            app.fast_paths[("POST", EVENTS_PATH)] = EventFastPath(
                publisher=events,
                keys=self.keys,
                limiter=getattr(app.state, "rate_limiter", None),
                max_body_bytes=self.server.max_body_bytes,
                cors=bool(origins),
            )
            app.include_router(segment_router(publisher=self.bus.publisher(), clock=self.clock))
            app.include_router(
                webhooks_router(
                    publisher=self.bus.publisher(), engine=self.engine, clock=self.clock
                )
            )
        app.include_router(health_router(checks))
        if "dispatch" in self.services:
            assert self.dispatch_config is not None
            app.include_router(sink_router(uow=self._dispatch_uow))
            app.include_router(
                admin_router(uow=self._dispatch_uow, config=self.dispatch_config, clock=self.clock)
            )
            assert self.dispatch is not None
            app.include_router(
                templates_router(
                    uow=self._dispatch_uow,
                    files=self.dispatch.templates_dir,
                    clock=self.clock,
                    renderer=self.dispatch_renderer,
                )
            )
            app.include_router(
                provider_webhooks_router(
                    uow=self._dispatch_uow,
                    configs=self.dispatch_config.by_kind,
                    clock=self.clock,
                    notify=self._notify_dispatch,
                )
            )
            app.include_router(
                unsubscribe_router(
                    uow=self._dispatch_uow,
                    secret=self.dispatch.unsubscribe_secret.get_secret_value(),
                    clock=self.clock,
                    shop_name=self.dispatch.email_from_name,
                )
            )
        if self.journey is not None:
            app.include_router(
                journeys_router(
                    engine=self.engine,
                    settings=self.journey,
                    files=self._file_journeys,
                    clock=self.clock,
                )
            )
            app.include_router(intelligence_router(engine=self.engine, clock=self.clock))
            app.include_router(customers_router(engine=self.engine, clock=self.clock))
        return app

    def _file_journeys(self) -> JourneyCatalog:
        """The journeys in journeys/ for the HTTP API, read once (as the worker reads them)."""
        if self._file_catalog is None:
            assert self.journey is not None
            self._file_catalog = load_catalog(self.journey.journeys_dir)
        return self._file_catalog

    def _notify_dispatch(self) -> None:
        """Wake dispatch's outbox relay after a webhook or unsubscribe wrote events."""
        if self.dispatch_worker is not None:
            self.dispatch_worker.relay.notify()

    def _dispatch_uow(self) -> DispatchUnitOfWork:
        return DispatchUnitOfWork(self._sessions)


def print_demo_keys(keys: dict[str, str]) -> None:
    sys.stdout.write(
        "\n  Ciclo created the workspace 'demo'. Its keys are shown once:\n"
        f"    ingest (write) key: {keys['ingest']}\n"
        f"    admin key:          {keys['admin']}\n\n"
    )
    sys.stdout.flush()
