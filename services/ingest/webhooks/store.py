"""The webhook repository: every query of the webhook tables lives here.

- secrets: one signing secret per (workspace, source), set by ``ciclo webhooks set``; listings
  return when a secret was set, never the secret.
- deliveries: the deliveries already published, the dedupe of platform retries. Recorded after
  the publish; ``prune`` drops rows older than any retry (Shopify retries for 4 hours).
- orders: who placed an order, so a refund (which names only its order) reaches that customer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.ingest.tables import webhook_deliveries, webhook_orders, webhook_secrets
from services.ingest.webhooks.mapping import SOURCES, Delivery, Identity, Source
from shared.errors import DatabaseError
from shared.tenancy.keys import WORKSPACE_RE
from shared.tenancy.tables import workspaces

MAX_SECRET_LENGTH = 500


class SecretError(ValueError):
    """A secret, workspace or source that cannot be stored."""


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """What a listing shows of a secret: where it applies and when it was set."""

    workspace_id: str
    source: str
    created_at: datetime
    updated_at: datetime


class WebhookStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    # --- secrets

    async def set_secret(
        self, workspace_id: str, source: str, secret: str, *, now: datetime
    ) -> bool:
        """Store or replace the secret of (workspace, source); True when it is new."""
        _check(workspace_id, source)
        if not secret or secret != secret.strip():
            raise SecretError("the secret must not be empty or start or end with spaces")
        if len(secret) > MAX_SECRET_LENGTH:
            raise SecretError(f"the secret is longer than {MAX_SECRET_LENGTH} characters")
        where = _secret_of(workspace_id, source)
        async with self._engine.begin() as conn:
            changed = await conn.execute(
                update(webhook_secrets).where(*where).values(secret=secret, updated_at=now)
            )
            if changed.rowcount:
                return False
            await conn.execute(
                insert(webhook_secrets).values(
                    workspace_id=workspace_id,
                    source=source,
                    secret=secret,
                    created_at=now,
                    updated_at=now,
                )
            )
            return True

    async def secret(self, workspace_id: str, source: Source) -> str | None:
        async with self._engine.connect() as conn:
            found = await conn.execute(
                select(webhook_secrets.c.secret).where(*_secret_of(workspace_id, source))
            )
            value: str | None = found.scalar_one_or_none()
            return value

    async def list_secrets(self, workspace_id: str) -> list[SecretInfo]:
        columns = [c for c in webhook_secrets.c if c.name != "secret"]
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(*columns)
                .where(webhook_secrets.c.workspace_id == workspace_id)
                .order_by(webhook_secrets.c.source)
            )
            return [
                SecretInfo(
                    workspace_id=r.workspace_id,
                    source=r.source,
                    created_at=r.created_at,
                    updated_at=r.updated_at,
                )
                for r in rows
            ]

    async def remove_secret(self, workspace_id: str, source: str) -> bool:
        async with self._engine.begin() as conn:
            removed = await conn.execute(
                delete(webhook_secrets).where(*_secret_of(workspace_id, source))
            )
            return bool(removed.rowcount)

    async def workspace_exists(self, workspace_id: str) -> bool:
        """Whether tenancy knows the workspace (same database: every HTTP service authenticates
        against it), so a typo in ``ciclo webhooks set`` is refused, not stored."""
        async with self._engine.connect() as conn:
            found = await conn.execute(
                select(workspaces.c.id).where(workspaces.c.id == workspace_id)
            )
            return found.first() is not None

    # --- deliveries and orders

    async def seen(self, workspace_id: str, delivery: Delivery) -> bool:
        async with self._engine.connect() as conn:
            found = await conn.execute(
                select(webhook_deliveries.c.delivery_id).where(
                    webhook_deliveries.c.workspace_id == workspace_id,
                    webhook_deliveries.c.source == delivery.source,
                    webhook_deliveries.c.topic == delivery.topic,
                    webhook_deliveries.c.delivery_id == delivery.delivery_id,
                )
            )
            return found.first() is not None

    async def order_owner(
        self, workspace_id: str, source: Source, order_id: str
    ) -> Identity | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(webhook_orders.c.customer_id, webhook_orders.c.anonymous_id).where(
                        webhook_orders.c.workspace_id == workspace_id,
                        webhook_orders.c.source == source,
                        webhook_orders.c.order_id == order_id,
                    )
                )
            ).first()
        return Identity(customer_id=row.customer_id, anonymous_id=row.anonymous_id) if row else None

    async def record(
        self,
        workspace_id: str,
        delivery: Delivery,
        *,
        received_at: datetime,
        orders: Sequence[tuple[str, Identity]] = (),
    ) -> None:
        """Remember a published delivery and the owners of the orders it announced. A row that
        is already there (a redelivery that raced this one) is left as it is. Raises
        DatabaseError when the database refuses."""
        try:
            await self._record(workspace_id, delivery, received_at=received_at, orders=orders)
        except SQLAlchemyError as exc:
            raise DatabaseError(f"could not record the delivery: {exc}") from exc

    async def _record(
        self,
        workspace_id: str,
        delivery: Delivery,
        *,
        received_at: datetime,
        orders: Sequence[tuple[str, Identity]],
    ) -> None:
        async with self._engine.begin() as conn:
            await _insert_new(
                conn,
                webhook_deliveries,
                [
                    {
                        "workspace_id": workspace_id,
                        "source": delivery.source,
                        "delivery_id": delivery.delivery_id,
                        "topic": delivery.topic,
                        "received_at": received_at,
                    }
                ],
            )
            if orders:
                rows = [
                    {
                        "workspace_id": workspace_id,
                        "source": delivery.source,
                        "order_id": order_id,
                        "customer_id": who.customer_id,
                        "anonymous_id": who.anonymous_id,
                        "created_at": received_at,
                    }
                    for order_id, who in orders
                ]
                await _insert_new(conn, webhook_orders, rows)

    async def prune(self, *, before: datetime) -> int:
        """Forget deliveries received before ``before``; the number forgotten."""
        async with self._engine.begin() as conn:
            removed = await conn.execute(
                delete(webhook_deliveries).where(webhook_deliveries.c.received_at < before)
            )
            return int(removed.rowcount)


def _check(workspace_id: str, source: str) -> None:
    if not WORKSPACE_RE.fullmatch(workspace_id):
        raise SecretError(f"{workspace_id!r} is not a workspace id")
    if source not in SOURCES:
        raise SecretError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")


def _secret_of(workspace_id: str, source: str) -> tuple[Any, ...]:
    return (webhook_secrets.c.workspace_id == workspace_id, webhook_secrets.c.source == source)


async def _insert_new(conn: AsyncConnection, table: Any, rows: list[dict[str, Any]]) -> None:
    """INSERT … ON CONFLICT DO NOTHING, spelled for the connection's database."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    await conn.execute(dialect.insert(table).values(rows).on_conflict_do_nothing())
