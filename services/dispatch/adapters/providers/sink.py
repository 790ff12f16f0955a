"""The local sink: messages are stored in ``dispatch_sink`` instead of leaving the machine, in the
same transaction that marks them sent (so the sink sees each message exactly once)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatch.adapters.tables import sink
from services.dispatch.domain.messages import Outbound, Receipt
from services.dispatch.domain.providers import Channel, SinkConfig


class SinkProvider:
    name = "sink"
    channels: tuple[Channel, ...] = SinkConfig.channels

    async def send_within(
        self, session: AsyncSession, message: Outbound, *, at: datetime
    ) -> Receipt:
        await session.execute(
            insert(sink).values(
                workspace_id=message.workspace_id,
                message_id=message.message_id,
                channel=message.channel,
                to=message.to,
                subject=message.content.subject,
                html=message.content.html,
                text=message.content.text,
                headers=message.headers,
                created_at=at,
            )
        )
        return Receipt(provider=self.name, provider_message_id=message.message_id)
