"""The ``ciclo`` command."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
from collections.abc import Coroutine, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click
import uvicorn

from shared.errors import CicloError

if TYPE_CHECKING:
    from services.journey.settings import JourneySettings

T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except CicloError as exc:
        raise click.ClickException(str(exc)) from exc


def _first_line(exc: BaseException) -> str:
    """The reason of a settings error (pydantic wraps ours in a ValidationError), on one line,
    naming the environment variable the operator sets (``CICLO_BUS_PARTITIONS``), not the
    field."""
    if hasattr(exc, "errors"):
        errors = exc.errors()
        if errors:
            first = errors[0]
            loc = [str(p) for p in first.get("loc", ())]
            where = f"CICLO_{'_'.join(loc).upper()}" if loc else "settings"
            return f"{where}: {first.get('msg')}"
    return str(exc).splitlines()[0]


@contextlib.contextmanager
def _configuration() -> Iterator[None]:
    """Settings read (and the URLs and log level they name checked) inside this block: a bad
    value ends the command with one line naming the variable, not a traceback."""
    from sqlalchemy.exc import ArgumentError

    try:
        yield
    except ArgumentError as exc:  # the only URL SQLAlchemy parses is the database's
        raise click.ClickException(
            f"configuration: CICLO_DATABASE_URL: {_first_line(exc)}"
        ) from exc
    except (CicloError, ValueError) as exc:
        raise click.ClickException(f"configuration: {_first_line(exc)}") from exc


def _check_log_level(level: str) -> None:
    import logging

    if not isinstance(logging.getLevelName(level.upper()), int):
        raise ValueError(
            f"CICLO_LOG_LEVEL: {level!r} is not a log level (DEBUG, INFO, WARNING, ERROR)"
        )


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM after its graceful shutdown, so the process would end "killed by
    signal". SIGTERM is how Ciclo is meant to stop: drain, commit, exit 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {
            sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _serve(services: tuple[str, ...]) -> None:
    from services.components import ServiceName
    from services.runtime import Runtime
    from shared.logging import configure_logging
    from shared.settings import ServerSettings

    with _configuration():
        server = ServerSettings()
        _check_log_level(server.log_level)
        runtime = Runtime(
            services=cast(tuple[ServiceName, ...], services),
            server=server,
            # A server process: settle the heap once started (see settle_heap).
            tune_gc=True,
        )
    configure_logging(level=server.log_level, fmt=server.log_format)
    config = uvicorn.Config(
        runtime.app(),
        host=server.host,
        port=server.port,
        log_config=None,
        # configure_logging keeps uvicorn.access at WARNING: no access line is ever written, so
        # uvicorn need not build one per request.
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=20,
    )
    _Server(config).run()


@click.group(help="Ciclo: event-driven marketing automation for e-commerce.")
def main() -> None:
    pass


@main.command(help="Run everything in one process (embedded mode unless URLs say otherwise).")
def run() -> None:
    _serve(("ingest", "journey", "dispatch"))


@main.command(help="Run one service (distributed mode: set CICLO_DATABASE_URL and CICLO_BUS_URL).")
@click.argument("service", type=click.Choice(["ingest", "journey", "dispatch"]))
def serve(service: str) -> None:
    _serve((service,))


@main.command(help="Upgrade every service's database schema to the latest version.")
def migrate() -> None:
    from services.components import ALL, components_for
    from shared.db.migrate import upgrade
    from shared.settings import CommonSettings

    with _configuration():
        settings = CommonSettings()
        url = _database_url(settings)
    _run(upgrade(url, components_for(ALL)))
    click.echo("database is up to date", err=True)


def _database_url(settings: Any) -> str:
    """The database URL of ``settings``, checked (inside ``_configuration``)."""
    from sqlalchemy.engine import make_url

    url: str = settings.resolved_database_url()
    make_url(url)
    return url


@main.command(help="Print the configuration table (every CICLO_* variable) as Markdown.")
def config() -> None:
    from services.config_table import markdown

    click.echo(markdown())


@main.group(help="Bus topics.")
def topics() -> None:
    pass


@topics.command("create", help="Create Ciclo's topics where missing.")
def topics_create() -> None:
    from shared.bus.factory import ensure_standard_topics, open_bus
    from shared.settings import CommonSettings

    with _configuration():
        settings = CommonSettings()
        bus = open_bus(settings)

    async def go() -> None:
        await bus.start()
        try:
            await ensure_standard_topics(bus, settings)
        finally:
            await bus.close()

    _run(go())
    click.echo("topics are in place", err=True)


def _keystore_call(fn: str, *args: Any, **kwargs: Any) -> Any:
    """``KeyStore.fn(*args, **kwargs)`` on the configured database.

    The key store needs the tenancy chain only. With ``CICLO_AUTO_MIGRATE`` (the default, as for
    ``ciclo run``) a fresh data dir gets it, so the README's quick start works before the server
    ever started; without it, an older schema ends the command asking for ``ciclo migrate``: a
    command run from a newer image does not upgrade the database as a side effect."""
    from services.components import prepare_schema
    from shared.db.engine import create_engine
    from shared.settings import ServerSettings
    from shared.tenancy.keys import KeyStore

    with _configuration():
        settings = ServerSettings()
        url = _database_url(settings)

    async def go() -> Any:
        await prepare_schema(url, (), auto_migrate=settings.auto_migrate)
        engine = create_engine(url)
        try:
            return await getattr(KeyStore(engine), fn)(*args, **kwargs)
        finally:
            await engine.dispose()

    return _run(go())


@main.group(help="Workspaces (tenants).")
def workspaces() -> None:
    pass


@workspaces.command("create", help="Create a workspace.")
@click.argument("workspace_id")
@click.option("--name", default=None, help="Display name.")
def workspaces_create(workspace_id: str, name: str | None) -> None:
    from shared.tenancy.keys import WorkspaceError

    try:
        created = _keystore_call("ensure_workspace", workspace_id, name=name)
    except WorkspaceError as exc:
        raise click.BadParameter(str(exc), param_hint="WORKSPACE_ID") from exc
    click.echo(f"workspace {workspace_id!r} {'created' if created else 'already exists'}", err=True)


@main.group(help="API keys.")
def keys() -> None:
    pass


@keys.command("create", help="Create an API key and print it (shown once; stored hashed).")
@click.option("--workspace", required=True, help="Workspace id.")
@click.option(
    "--scope",
    type=click.Choice(["ingest", "admin"]),
    required=True,
    help="ingest: may only post events; admin: may read and manage.",
)
def keys_create(workspace: str, scope: str) -> None:
    from shared.tenancy.keys import Scope, WorkspaceError

    try:
        info, plaintext = _keystore_call("create_key", workspace, Scope(scope))
    except WorkspaceError as exc:
        raise click.BadParameter(str(exc), param_hint="--workspace") from exc
    click.echo(f"created {info.scope.value} key {info.id} for workspace {workspace!r}", err=True)
    click.echo(plaintext)


@keys.command("list", help="List a workspace's keys (never their secrets).")
@click.option("--workspace", required=True)
def keys_list(workspace: str) -> None:
    for k in _keystore_call("list_keys", workspace):
        state = f"revoked {k.revoked_at:%Y-%m-%d}" if k.revoked_at else "active"
        click.echo(f"{k.id}\t{k.scope.value}\t{k.prefix}…\t{k.created_at:%Y-%m-%d}\t{state}")


@keys.command("revoke", help="Revoke a key by id (key_…).")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    if not _keystore_call("revoke", key_id):
        raise click.ClickException(f"no active key {key_id!r}")
    click.echo(f"revoked {key_id}", err=True)


@main.command(
    "simulate",
    help="Run the journeys over a file of events on a virtual clock and print every customer's "
    "timeline as JSON lines (or a table). Events are JSON lines like POST /v1/events bodies, "
    "each with occurred_at. Exits 2 on bad journeys or events.",
)
@click.option(
    "--journeys",
    "journeys_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("journeys"),
    show_default=True,
    help="Folder of journey files (*.json).",
)
@click.option(
    "--events",
    "events_file",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="JSON-lines file of events.",
)
@click.option(
    "--until",
    default=None,
    metavar="TIME",
    help="Stop the clock at this RFC 3339 instant (default: the last event + P90D).",
)
@click.option("--table", "as_table", is_flag=True, help="Print an aligned table, not JSON lines.")
@click.option("--workspace", default="sim", show_default=True, help="Workspace id of the events.")
@click.option(
    "--timezone",
    default="UTC",
    show_default=True,
    help="Workspace default time zone (for customers without a timezone trait).",
)
@click.option(
    "--cap",
    "caps",
    multiple=True,
    metavar="CHANNEL:LIMIT/DURATION",
    help="Frequency cap on marketing messages, e.g. email:3/P7D (repeatable).",
)
@click.option(
    "--templates",
    "templates_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("templates"),
    show_default=True,
    envvar="CICLO_TEMPLATES_DIR",
    help="Template folder the journeys' template ids are checked against.",
)
@click.option(
    "--no-feedback",
    is_flag=True,
    help="Do not feed sends back as dispatch's message_sent events.",
)
def simulate_command(
    journeys_dir: Path,
    events_file: Path,
    until: str | None,
    as_table: bool,
    workspace: str,
    timezone: str,
    caps: tuple[str, ...],
    templates_dir: Path,
    no_feedback: bool,
) -> None:
    from services.journey import simulate as sim

    try:
        policy = sim.parse_policy(timezone=timezone, caps=caps)
        stop = sim.parse_instant(until) if until is not None else None
        catalog = sim.load_journeys(journeys_dir, templates=templates_dir)
        events = sim.read_events(events_file, workspace_id=workspace)
    except sim.BadInput as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        raise SystemExit(2) from exc
    for warning in events.warnings:
        click.echo(f"warning: {warning}", err=True)
    if stop is not None:
        late = sum(1 for event in events.events if event.occurred_at > stop)
        if late:
            # Not an error (cutting a stream short is what --until is for), but a stop before
            # the first event prints nothing at all, which reads as "no journey matched".
            click.echo(
                f"warning: {late} of {len(events.events)} events occur after --until "
                f"{until} and are not applied",
                err=True,
            )
    result = sim.simulate(
        catalog,
        events.events,
        until=stop,
        policy=policy,
        workspace_id=workspace,
        feedback=not no_feedback,
    )
    lines = sim.rows(result)
    click.echo(sim.table(lines) if as_table else sim.json_lines(lines), nl=False)


@main.group(help="Purchase predictions (BG/NBD and Gamma-Gamma) and RFM scores.")
def predict() -> None:
    pass


@predict.command(
    "fit",
    help="Fit BG/NBD and Gamma-Gamma on a workspace's customers as of DATE (default: now) and "
    "print the fits and their quality as JSON. With --as-of in the past, the orders since DATE "
    "are the holdout and the report compares them with the forecast (quality.calibration). "
    "Uses the configured database (CICLO_DATABASE_URL).",
)
@click.option("--workspace", required=True, help="Workspace id.")
@click.option(
    "--as-of",
    "as_of",
    default=None,
    metavar="DATE",
    help="YYYY-MM-DD (midnight UTC) or an RFC 3339 instant; not in the future. Default: now.",
)
@click.option(
    "--save",
    is_flag=True,
    help="Also store RFM scores and predictions on every customer and record the run, as the "
    "scheduled job does (segments are decided again; their events wait in the outbox for the "
    "journey worker). Not with --as-of.",
)
def predict_fit(workspace: str, as_of: str | None, save: bool) -> None:
    import json

    from services.journey import insights
    from services.journey.settings import JourneySettings
    from shared.clock import SystemClock
    from shared.settings import ServerSettings

    with _configuration():
        settings = JourneySettings()
        auto_migrate = ServerSettings().auto_migrate
    now = SystemClock().now()
    when = None
    if as_of is not None:
        if save:
            raise click.UsageError(
                "--save stores today's scores on the customers; it cannot be combined with --as-of"
            )
        try:
            when = insights.parse_as_of(as_of, now=now)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--as-of") from exc
    try:
        report = _run(
            _predict_fit(
                settings, workspace, as_of=when, now=now, save=save, auto_migrate=auto_migrate
            )
        )
    except insights.InsightsError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(report, indent=2))


async def _predict_fit(
    settings: JourneySettings,
    workspace: str,
    *,
    as_of: datetime | None,
    now: datetime,
    save: bool,
    auto_migrate: bool,
) -> dict[str, Any]:
    from services.components import prepare_schema
    from services.journey import insights
    from services.journey.adapters.definitions import DatabaseCatalogs
    from services.journey.adapters.files import load_catalog
    from services.journey.adapters.intelligence_config import DatabaseIntel
    from services.journey.adapters.workspace_settings import DatabasePolicies
    from shared.clock import SystemClock
    from shared.db.engine import create_engine

    url = settings.resolved_database_url()
    await prepare_schema(url, ("journey",), auto_migrate=auto_migrate)
    engine = create_engine(url)
    try:
        intel = DatabaseIntel(engine)
        if not save:
            rules = (await intel.for_workspaces([workspace]))[workspace]
            return await insights.fit_report(engine, workspace, as_of=as_of, now=now, intel=rules)
        await insights.require_buyers(engine, workspace)
        scheduler = insights.InsightScheduler(
            engine,
            SystemClock(),
            catalogs=DatabaseCatalogs(engine, load_catalog(settings.journeys_dir)),
            policies=DatabasePolicies(engine, settings.default_policy()),
            intel=intel,
            interval_seconds=settings.journey_insights_interval,
            batch_size=settings.journey_insights_batch_size,
        )
        return await scheduler.run_workspace(workspace, now=now)
    finally:
        await engine.dispose()


def _register() -> None:
    # Imported here: each group keeps its heavy imports inside its commands.
    from services.ingest.import_cli import import_events
    from services.ingest.webhooks.cli import webhooks
    from services.journey.journeys_cli import journeys

    main.add_command(webhooks)
    main.add_command(import_events)
    main.add_command(journeys)


_register()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
