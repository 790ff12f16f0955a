"""HTTP routes of dispatch: the local sink's inbox (``GET /v1/sink/messages``, admin keys)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from services.dispatch.service_layer.uow import DispatchUnitOfWork
from shared.tenancy.http import AdminPrincipal


class SinkMessage(BaseModel):
    id: int
    message_id: str
    channel: str
    to: str
    subject: str | None
    html: str | None
    text: str | None
    headers: dict[str, Any]
    created_at: str


class SinkPage(BaseModel):
    messages: list[SinkMessage]
    next_after: int | None


def sink_router(*, uow: Callable[[], DispatchUnitOfWork]) -> APIRouter:
    router = APIRouter(prefix="/v1/sink", tags=["sink"])

    @router.get("/messages", response_model=SinkPage, summary="Messages the local sink received")
    async def list_messages(
        principal: AdminPrincipal,
        # Bounded to what a database integer holds: a larger value is a 422, not an overflow.
        after: Annotated[
            int, Query(ge=0, le=2**63 - 1, description="Only messages with a larger id")
        ] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> SinkPage:
        async with uow() as u:
            rows = await u.sink.list(principal.workspace_id, after_id=after, limit=limit)
        items = [SinkMessage(**{**r, "created_at": r["created_at"].isoformat()}) for r in rows]
        return SinkPage(messages=items, next_after=items[-1].id if len(items) == limit else None)

    return router
