"""``ciclo webhooks``: the signing secrets of the Shopify and WooCommerce webhooks.

Like ``ciclo keys``, every command migrates the database first and then opens it from the
``CICLO_*`` settings. Secrets go in (prompted without echo unless ``--secret`` is given) and never
come back out: ``list`` shows which sources have one and when it was set.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

import click

if TYPE_CHECKING:
    from services.ingest.webhooks.store import WebhookStore

T = TypeVar("T")
_SOURCE = click.Choice(["shopify", "woocommerce"])


def _with_store(work: Callable[[WebhookStore], Awaitable[T]]) -> T:
    from services.components import prepare_schema
    from services.ingest.webhooks.store import SecretError, WebhookStore
    from shared.db.engine import create_engine
    from shared.errors import CicloError
    from shared.settings import ServerSettings

    async def go() -> T:
        settings = ServerSettings()
        url = settings.resolved_database_url()
        # The ingest chain holds the secrets: upgraded with CICLO_AUTO_MIGRATE (on by default),
        # else an older schema stops the command asking for `ciclo migrate`.
        await prepare_schema(url, ("ingest",), auto_migrate=settings.auto_migrate)
        engine = create_engine(url)
        try:
            return await work(WebhookStore(engine))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(go())
    except (CicloError, SecretError) as exc:
        raise click.ClickException(str(exc)) from exc


@click.group(help="Signing secrets of the Shopify and WooCommerce webhooks.")
def webhooks() -> None:
    pass


@webhooks.command("set", help="Set (or replace) the secret a platform signs its webhooks with.")
@click.option("--workspace", required=True, help="Workspace id.")
@click.option("--source", type=_SOURCE, required=True, help="The platform.")
@click.option(
    "--secret",
    prompt=True,
    hide_input=True,
    help="Shopify: the app's client secret or the key shown under Settings > Notifications > "
    "Webhooks. WooCommerce: the webhook's Secret field. Prompted (not echoed) when omitted.",
)
def set_secret(workspace: str, source: str, secret: str) -> None:
    async def work(store: WebhookStore) -> bool:
        if not await store.workspace_exists(workspace):
            raise click.BadParameter(
                f"workspace {workspace!r} does not exist (ciclo workspaces create {workspace})",
                param_hint="--workspace",
            )
        return await store.set_secret(workspace, source, secret, now=datetime.now(UTC))

    created = _with_store(work)
    click.echo(f"{'set' if created else 'replaced'} the {source} secret of {workspace!r}", err=True)
    click.echo(
        f"point {source} at: POST <your Ciclo URL>/v1/webhooks/{source}/{workspace}", err=True
    )


@webhooks.command("list", help="List which sources have a secret (never the secrets).")
@click.option("--workspace", required=True, help="Workspace id.")
def list_secrets(workspace: str) -> None:
    async def work(store: WebhookStore) -> list[tuple[str, datetime, datetime]]:
        return [(s.source, s.created_at, s.updated_at) for s in await store.list_secrets(workspace)]

    rows = _with_store(work)
    if not rows:
        click.echo(f"no webhook secrets for {workspace!r}", err=True)
    for source, created_at, updated_at in rows:
        click.echo(
            f"{source}\tset {created_at:%Y-%m-%d %H:%M}Z\tchanged {updated_at:%Y-%m-%d %H:%M}Z"
        )


@webhooks.command("remove", help="Remove a secret: that platform's deliveries then get 401.")
@click.option("--workspace", required=True, help="Workspace id.")
@click.option("--source", type=_SOURCE, required=True, help="The platform.")
def remove_secret(workspace: str, source: str) -> None:
    async def work(store: WebhookStore) -> bool:
        return await store.remove_secret(workspace, source)

    if not _with_store(work):
        raise click.ClickException(f"no {source} secret for {workspace!r}")
    click.echo(f"removed the {source} secret of {workspace!r}", err=True)


@webhooks.command("prune", help="Forget delivery ids older than the platforms' retry window.")
@click.option(
    "--older-than-days",
    type=click.IntRange(min=2),
    default=30,
    show_default=True,
    help="Shopify retries for up to 4 hours, so anything over a day is safe to forget.",
)
def prune(older_than_days: int) -> None:
    async def work(store: WebhookStore) -> int:
        return await store.prune(before=datetime.now(UTC) - timedelta(days=older_than_days))

    click.echo(f"forgot {_with_store(work)} webhook deliveries", err=True)
