"""``ciclo import FILE``: backfill historical events from a JSONL or CSV file into the bus.

The command is thin: it reads the options, checks the workspace, opens the configured bus and hands
over to :func:`services.ingest.importer.run_import`. The cut-off and a summary (read, imported,
rejected, the first errors) go to the terminal; the progress bar goes to stderr, and only when
stderr is a terminal. docs/ingest-import.md is the user's guide.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from services.ingest.import_records import Rules
from services.ingest.import_sources import (
    Format,
    Source,
    SourceError,
    detect_format,
    parse_mapping,
)
from services.ingest.importer import Summary, run_import
from shared.errors import CicloError
from shared.settings import CommonSettings


def parse_cutoff(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """``--live-after``: an RFC 3339 timestamp with a zone — a cut-off without one would depend on
    the machine's time zone."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a timestamp like 2026-01-31T23:59:59Z"
        ) from None
    if parsed.tzinfo is None:
        raise click.BadParameter(f"{value!r} has no zone: add Z or an offset such as +01:00")
    return parsed.astimezone(UTC)


class _Bar:
    """The progress bar: tqdm on stderr, one bar per step."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None

    def start(self, label: str, *, total: int, unit: str) -> None:
        from tqdm import tqdm

        self._bar = tqdm(
            total=total,
            desc=label,
            unit=unit if unit == "B" else f" {unit}",
            unit_scale=True,
            unit_divisor=1024 if unit == "B" else 1000,
            file=sys.stderr,
            disable=not self.enabled,
            dynamic_ncols=True,
        )

    def update(self, amount: int) -> None:
        if self._bar is not None:
            self._bar.update(amount)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@click.command(
    "import",
    help="Backfill historical events from FILE (JSONL, or CSV with --map), in occurred_at order. "
    "Events at or before the cut-off (--live-after, default: now) build profiles but never send; "
    "a later event is rejected unless --allow-live. See docs/ingest-import.md.",
)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--workspace", default="demo", show_default=True, help="Workspace to import into.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default=None,
    help="File format (default: from the extension: .jsonl/.ndjson, .csv/.tsv, each maybe .gz).",
)
@click.option(
    "--map",
    "mappings",
    multiple=True,
    metavar="TARGET=COLUMN",
    help="CSV: put COLUMN into TARGET (customer_id, type, occurred_at, traits.email, "
    "properties.total, …; TARGET:json decodes the cell as JSON). Repeatable. Unmapped columns "
    "keep their header as the field name.",
)
@click.option("--type", "default_type", default=None, help="Event type of lines that have none.")
@click.option("--delimiter", default=None, help="CSV delimiter (default: , or tab for .tsv).")
@click.option(
    "--live-after",
    metavar="TIMESTAMP",
    callback=parse_cutoff,
    help="Cut-off (RFC 3339 with zone): events at or before it are historical. Default: now.",
)
@click.option(
    "--allow-live",
    is_flag=True,
    help="Import events after the cut-off as live events (they may trigger messages).",
)
@click.option(
    "--strict", is_flag=True, help="Stop at the first bad line and import nothing at all."
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option(
    "--jobs",
    type=click.IntRange(1, 64),
    default=None,
    help="Validating processes (default: one per core for files over 8 MiB, else 1).",
)
def import_events(
    file: Path,
    workspace: str,
    fmt: Format | None,
    mappings: tuple[str, ...],
    default_type: str | None,
    delimiter: str | None,
    live_after: datetime | None,
    allow_live: bool,
    strict: bool,
    quiet: bool,
    jobs: int | None,
) -> None:
    try:
        settings = CommonSettings()
    except (CicloError, ValueError) as exc:
        raise click.ClickException(f"configuration: {exc}") from exc
    started = datetime.now(UTC)
    rules = Rules(
        workspace_id=workspace,
        live_after=live_after or started,
        received_at=started,
        allow_live=allow_live,
    )
    try:
        detected, default_delimiter = detect_format(file) if fmt is None else (fmt, ",")
        source = Source(
            file,
            fmt=detected,
            delimiter=delimiter or default_delimiter,
            mapping=parse_mapping(mappings),
            default_type=default_type,
        )
    except SourceError as exc:
        raise click.UsageError(str(exc)) from exc

    click.echo(
        f"cut-off {rules.live_after.isoformat()}: events that occurred at or before it are "
        "historical (they build profiles, never send); "
        + ("later ones are imported as live events." if allow_live else "later ones are rejected."),
        err=True,
    )
    progress = _Bar(enabled=not quiet and sys.stderr.isatty())
    with source:
        try:
            summary = asyncio.run(
                _import(settings, source, rules, jobs=jobs, strict=strict, progress=progress)
            )
        except CicloError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(render_summary(summary))
    if summary.aborted:
        raise click.ClickException("--strict: a line was rejected, so nothing was imported")


async def _import(
    settings: CommonSettings,
    source: Source,
    rules: Rules,
    *,
    jobs: int | None,
    strict: bool,
    progress: _Bar,
) -> Summary:
    from shared.bus.factory import ensure_standard_topics, open_bus

    await require_workspace(settings, rules.workspace_id)
    bus = open_bus(settings)
    await bus.start()
    try:
        await ensure_standard_topics(bus, settings)
        return await run_import(
            source, rules, bus.publisher(), jobs=jobs, strict=strict, progress=progress
        )
    finally:
        await bus.close()


async def require_workspace(settings: CommonSettings, workspace_id: str) -> None:
    """Raise a ClickException naming the fix when the workspace does not exist."""
    from sqlalchemy import select

    from services.components import prepare_schema
    from shared.db.engine import create_engine
    from shared.settings import ServerSettings
    from shared.tenancy.tables import workspaces

    url = settings.resolved_database_url()
    # As the other commands do: a fresh data dir gets its schema (CICLO_AUTO_MIGRATE, on by
    # default), then simply has no workspace; with it off, an older schema stops the import.
    await prepare_schema(url, (), auto_migrate=ServerSettings().auto_migrate)
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            query = select(workspaces.c.id).where(workspaces.c.id == workspace_id)
            found = (await conn.execute(query)).first()
    finally:
        await engine.dispose()
    if found is None:
        raise click.ClickException(
            f"workspace {workspace_id!r} does not exist: create it with "
            f"`ciclo workspaces create {workspace_id}` (`ciclo run` creates 'demo' on first start)"
        )


def render_summary(summary: Summary) -> str:
    rate = summary.imported / summary.seconds if summary.seconds > 0 else 0.0
    if summary.streamed:
        order = "the file was already in occurred_at order: published while validated"
    else:
        runs = summary.spilled_runs
        order = "sorted by occurred_at" + (f" through {runs} temporary file(s)" if runs else "")
    lines = [
        f"read {summary.read:,} line(s): imported {summary.imported:,} "
        f"({summary.historical:,} historical, {summary.live:,} live), "
        f"rejected {summary.rejected:,} — in {summary.seconds:.1f} s ({rate:,.0f} events/s; "
        f"{order})"
    ]
    if summary.errors:
        lines.append("first errors:")
        lines.extend(f"  line {e.line}: {e.field}: {e.message}" for e in summary.errors)
        shown = len({e.line for e in summary.errors})
        if summary.rejected > shown:
            lines.append(f"  … and {summary.rejected - shown:,} more rejected line(s)")
    return "\n".join(lines)
