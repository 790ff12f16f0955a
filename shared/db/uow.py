"""Unit of work: one database transaction around a handler's work.

Handlers never commit implicitly: they call :meth:`SqlUnitOfWork.commit`; leaving the block without
it rolls back. Services subclass it to attach their repositories to the session.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


class SqlUnitOfWork:
    session: AsyncSession

    def __init__(self, sessions: async_sessionmaker[Any]) -> None:
        self._sessions = sessions

    async def __aenter__(self) -> Self:
        self.session = self._sessions()
        self._bind(self.session)
        return self

    def _bind(self, session: AsyncSession) -> None:
        """Attach repositories to the session; subclasses override."""

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.session.rollback()
        finally:
            await self.session.close()

    async def commit(self) -> None:
        await self.session.commit()

    async def rollback(self) -> None:
        await self.session.rollback()
