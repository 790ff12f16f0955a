"""Erasing a customer from dispatch (GDPR art. 17), on the journey service's erasure request.

In one transaction per batch of requests, for the customer and every id merged into them:

- their messages go from ``dispatch_messages``, whatever their status: a held or pending message
  is gone, so the held-message poller never sends it;
- what the local sink recorded of those messages goes from ``dispatch_sink`` (addresses, bodies);
- the provider webhook ids of those messages go from ``dispatch_webhook_events`` where the id
  names the provider's message (Twilio, Vonage, Postmark); SendGrid's and Mailgun's event ids do
  not, and those rows (no personal data) are pruned after ``KEEP_WEBHOOK_EVENTS`` anyway;
- records about them still waiting in ``dispatch_outbox`` are dropped: an engagement event
  published after the erasure would rebuild a profile in the journey service;
- discount codes drawn for their messages stay drawn (the customer may have used one) but no
  longer name the message: ``message_id`` becomes ``erased:<erasure id>``;
- suppressions stay, address included: the opt-out or bounce must still be honoured if the
  address comes back, and the list is looked up by address, so a hash in its place would no
  longer match. Only the link to the customer (``customer_id``) is cleared.

And the customer is remembered as erased, by a hash of workspace and id, with the erasure's
``requested_at`` (``dispatch_erasures``): a message request for them that was already on the bus
(requested at or before that time) is dropped when it comes, without a ledger row or an event.
A request whose send was in flight during the erasure is recorded by nobody: its outcome finds
the customer erased and its row is deleted. The hashes are pruned after ``KEEP_ERASURES``.

Only counts are logged, with the erasure id; never the customer. Handling a request twice
(a redelivery) finds nothing left the second time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatch.adapters.repository import ErasedCustomers
from services.dispatch.adapters.tables import (
    discount_codes,
    messages,
    outbox,
    sink,
    suppressions,
    webhook_events,
)
from services.dispatch.service_layer.uow import DispatchUnitOfWork
from shared.contracts.erasure import ErasureRequest

log = logging.getLogger(__name__)

KEEP_ERASURES = timedelta(days=30)
"""How long an erased customer's hash is kept: longer than a message request can wait on the bus
(Kafka keeps a topic's records 7 days by default)."""
_CHUNK = 500  # ids per IN list: within SQLite's and PostgreSQL's bound-parameter limits
_PATTERNS_CHUNK = 50  # messages per webhook-event delete: 4 LIKEs each, under SQLite's depth


@dataclass(frozen=True, slots=True)
class Erased:
    """What an erasure did, per table: rows removed, and rows kept but detached from the
    customer (discount codes, suppressions)."""

    removed: dict[str, int] = field(default_factory=dict)
    detached: dict[str, int] = field(default_factory=dict)


async def erase_customers(
    uow: Callable[[], DispatchUnitOfWork], requests: Sequence[ErasureRequest]
) -> list[Erased]:
    """Erase each request's customer, all in one transaction; what was done, in request
    order."""
    results: list[Erased] = []
    async with uow() as u:
        erasure = DispatchErasure(u.session)
        for request in requests:
            results.append(await erasure.erase(request))
        await u.commit()
    for request, erased in zip(requests, results, strict=True):
        log.info(
            "customer erased from dispatch",
            extra={
                "erasure_id": request.erasure_id,
                "workspace_id": request.workspace_id,
                "removed": erased.removed,
                "detached": erased.detached,
            },
        )
    return results


async def prune_erasures(
    uow: Callable[[], DispatchUnitOfWork], *, now: datetime, keep: timedelta = KEEP_ERASURES
) -> int:
    """Forget customers erased more than ``keep`` ago; how many."""
    async with uow() as u:
        removed = await u.erased.prune(before=now - keep)
        await u.commit()
    return removed


class DispatchErasure:
    """The queries of an erasure (the repository of this use case)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def erase(self, request: ErasureRequest) -> Erased:
        """Erase one customer in the session's transaction."""
        workspace, ids = request.workspace_id, request.subjects
        # First, so that a message request for them still on the bus is dropped from now on.
        await ErasedCustomers(self._session).add(workspace, ids, at=request.requested_at)
        m = messages
        # FOR UPDATE: a held message being released right now is either sent before this
        # transaction takes it, or found gone by the release afterwards (never both).
        rows = (
            await self._session.execute(
                select(m.c.message_id, m.c.provider, m.c.provider_message_id)
                .where(m.c.workspace_id == workspace, m.c.customer_id.in_(ids))
                .order_by(m.c.message_id)
                .with_for_update()
            )
        ).all()
        message_ids = [r.message_id for r in rows]
        erased = Erased(
            removed={
                webhook_events.name: await self._webhook_events(
                    [(r.provider, r.provider_message_id) for r in rows if r.provider_message_id]
                ),
                sink.name: 0,
            },
            detached={discount_codes.name: 0},
        )
        removed, detached = erased.removed, erased.detached
        for start in range(0, len(message_ids), _CHUNK):
            chunk = message_ids[start : start + _CHUNK]
            removed[sink.name] += await self._count(
                delete(sink).where(sink.c.workspace_id == workspace, sink.c.message_id.in_(chunk))
            )
            detached[discount_codes.name] += await self._count(
                update(discount_codes)
                .where(
                    discount_codes.c.workspace_id == workspace,
                    discount_codes.c.message_id.in_(chunk),
                )
                .values(message_id=f"erased:{request.erasure_id}")
            )
        removed[m.name] = await self._count(
            delete(m).where(m.c.workspace_id == workspace, m.c.customer_id.in_(ids))
        )
        removed[outbox.name] = await self._count(
            delete(outbox).where(outbox.c.key.in_([f"{workspace}:{s}" for s in ids]))
        )
        s = suppressions
        detached[s.name] = await self._count(
            update(s)
            .where(s.c.workspace_id == workspace, s.c.customer_id.in_(ids))
            .values(customer_id=None)
        )
        return erased

    async def _webhook_events(self, sent: Sequence[tuple[str, str]]) -> int:
        """Delete the webhook ids that name these provider messages: ``<id>:<status>`` (Twilio,
        Vonage) or ``<type>:<id>:<time>`` (Postmark)."""
        w = webhook_events
        removed = 0
        for start in range(0, len(sent), _PATTERNS_CHUNK):
            names = [
                and_(
                    w.c.provider == provider,
                    or_(
                        w.c.event_id == pid,
                        w.c.event_id.startswith(f"{pid}:", autoescape=True),
                        w.c.event_id.contains(f":{pid}:", autoescape=True),
                        w.c.event_id.endswith(f":{pid}", autoescape=True),
                    ),
                )
                for provider, pid in sent[start : start + _PATTERNS_CHUNK]
            ]
            removed += await self._count(delete(w).where(or_(*names)))
        return removed

    async def _count(self, statement: Any) -> int:
        result = cast(CursorResult[Any], await self._session.execute(statement))
        return int(result.rowcount or 0)
