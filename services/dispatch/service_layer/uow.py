"""The dispatch unit of work: the message ledger, the sink, the suppression list, the erased
customers and the outbox in one transaction."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatch.adapters.repository import ErasedCustomers, MessageLedger, SinkMessages
from services.dispatch.adapters.suppressions import Suppressions
from services.dispatch.adapters.tables import outbox
from shared.bus.ports import OutgoingRecord
from shared.db.uow import SqlUnitOfWork
from shared.outbox import add_to_outbox


class DispatchUnitOfWork(SqlUnitOfWork):
    ledger: MessageLedger
    sink: SinkMessages
    suppressions: Suppressions
    erased: ErasedCustomers

    def _bind(self, session: AsyncSession) -> None:
        self.ledger = MessageLedger(session)
        self.sink = SinkMessages(session)
        self.suppressions = Suppressions(session)
        self.erased = ErasedCustomers(session)

    async def emit(self, records: Sequence[OutgoingRecord]) -> None:
        await add_to_outbox(self.session, outbox, records)
