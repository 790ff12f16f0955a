"""Turning verified engagements into events, in one transaction per webhook request.

For each engagement: skip it when its message is not Ciclo's (no id, an unknown id, or a message
of another workspace); claim its provider event id in ``dispatch_webhook_events`` and skip it when
another request claimed it before (a provider retry); emit the engagement event through the
outbox; put the address on the suppression list for a hard bounce, a complaint or an
unsubscribe; and for an unsubscribe or a complaint also emit ``consent_updated`` (marketing
revoked), so the journey service stops asking for marketing messages. A Mailgun token is claimed
in the same transaction: a replayed one rolls everything back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.dispatch.adapters.webhook_events import SentMessage, WebhookEvents
from services.dispatch.domain.events import consent_record, event_record
from services.dispatch.service_layer.uow import DispatchUnitOfWork
from services.dispatch.webhooks.model import Engagement, WebhookAuthError
from services.dispatch.webhooks.registry import Nonce
from shared.bus.ports import OutgoingRecord
from shared.clock import Clock
from shared.contracts.addresses import normalise_address

log = logging.getLogger(__name__)

# Longer than any provider retries a webhook (SendGrid: 72 hours), so a retry is always caught.
KEEP_WEBHOOK_EVENTS = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class Recorded:
    """What became of a request's engagements."""

    received: int
    emitted: int
    duplicates: int
    unknown: int
    suppressed: int


class EngagementRecorder:
    def __init__(
        self,
        *,
        uow: Callable[[], DispatchUnitOfWork],
        clock: Clock,
        notify: Callable[[], None] | None = None,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._notify = notify

    async def record(
        self,
        *,
        provider: str,
        workspace_id: str,
        engagements: Sequence[Engagement],
        nonce: Nonce | None = None,
    ) -> Recorded:
        """Raises ``WebhookAuthError`` for a nonce seen before (nothing is written then)."""
        now = self._clock.now()
        first: dict[str, Engagement] = {}
        for engagement in engagements:  # a batch repeating an event counts it once
            first.setdefault(engagement.dedupe_key, engagement)
        unique = list(first.values())
        async with self._uow() as uow:
            store = WebhookEvents(uow.session)
            if nonce is not None and not await store.claim(nonce.namespace, [nonce.value], at=now):
                raise WebhookAuthError(
                    "this webhook's signature token was used before: a replayed request",
                    field="signature.token",
                )
            sent = await store.sent_messages(e.message_id for e in unique if e.message_id)
            ours = [(e, m) for e in unique if (m := _message_of(e, sent, workspace_id))]
            claimed = await store.claim(provider, [e.dedupe_key for e, _ in ours], at=now)
            fresh = [(e, m) for e, m in ours if e.dedupe_key in claimed]
            records: list[OutgoingRecord] = []
            suppressed = 0
            for engagement, message in fresh:
                records.extend(engagement_records(engagement, message, received_at=now))
                suppressed += await suppress(uow, engagement, message, at=now)
            await uow.emit(records)
            await uow.commit()
        if records and self._notify is not None:
            self._notify()
        return Recorded(
            received=len(engagements),
            emitted=len(fresh),
            duplicates=len(ours) - len(fresh) + len(engagements) - len(unique),
            unknown=len(unique) - len(ours),
            suppressed=suppressed,
        )


async def prune_webhook_events(
    uow: Callable[[], DispatchUnitOfWork], *, now: datetime, keep: timedelta = KEEP_WEBHOOK_EVENTS
) -> int:
    """Forget provider events (and Mailgun tokens) received more than ``keep`` ago; how many."""
    async with uow() as u:
        removed = await WebhookEvents(u.session).prune(before=now - keep)
        await u.commit()
    return removed


def _message_of(
    engagement: Engagement, sent: dict[str, SentMessage], workspace_id: str
) -> SentMessage | None:
    message = sent.get(engagement.message_id or "")
    if message is None or message.workspace_id != workspace_id:
        return None
    if engagement.workspace_id is not None and engagement.workspace_id != workspace_id:
        return None
    return message


def engagement_records(
    engagement: Engagement, message: SentMessage, *, received_at: datetime
) -> list[OutgoingRecord]:
    """The engagement's event, and for an unsubscribe or a complaint its revoked consent."""
    properties: dict[str, Any] = {
        "message_id": message.message_id,
        "channel": message.channel,
        "template": message.template,
        "provider": engagement.provider,
        **engagement.properties,
    }
    records = [
        event_record(
            event_id=engagement.event_id,
            workspace_id=message.workspace_id,
            customer_id=message.customer_id,
            type=engagement.type,
            at=engagement.occurred_at,
            received_at=received_at,
            properties=properties,
        )
    ]
    if engagement.revokes_marketing:
        records.append(
            consent_record(
                event_id=f"{engagement.event_id}:consent",
                workspace_id=message.workspace_id,
                customer_id=message.customer_id,
                channel=message.channel,
                status="revoked",
                source=engagement.provider,
                at=engagement.occurred_at,
                received_at=received_at,
                message_id=message.message_id,
            )
        )
    return records


async def suppress(
    uow: DispatchUnitOfWork, engagement: Engagement, message: SentMessage, *, at: datetime
) -> int:
    """Put the address on the suppression list when the engagement calls for it; 1 if added."""
    reason = engagement.suppression
    if reason is None:
        return 0
    try:
        address = normalise_address(message.channel, engagement.address or "")
    except ValueError:
        log.warning(
            "provider webhook names no usable address; not suppressed",
            extra={"provider": engagement.provider, "message_id": message.message_id},
        )
        return 0
    added = await uow.suppressions.add(
        workspace_id=message.workspace_id,
        channel=message.channel,
        address=address,
        reason=reason,
        source=engagement.provider,
        customer_id=message.customer_id,
        at=at,
    )
    return int(added)
