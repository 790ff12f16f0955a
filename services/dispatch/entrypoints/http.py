"""HTTP routes of dispatch (admin keys): the local sink's inbox (``GET /v1/sink/messages``), the
workspace's providers, sending settings and suppression list."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from services.dispatch.adapters.workspace_config import Role, WorkspaceConfig
from services.dispatch.domain.policy import DispatchPolicy
from services.dispatch.domain.providers import MASK, ProviderConfig
from services.dispatch.service_layer.uow import DispatchUnitOfWork
from shared.clock import Clock
from shared.contracts.addresses import normalise_address, normalise_email
from shared.http import NotFound, Unprocessable
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


# ── Providers, sending settings, suppression list (admin keys) ─────────────────────────────────


class ProviderBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    config: ProviderConfig = Field(
        description="The provider and its settings; `kind` decides which fields apply.",
        examples=[{"kind": "postmark", "server_token": "xxxx-xxxx"}],
    )
    rate_per_second: float | None = Field(
        None, gt=0, le=100_000, description="At most this many sends per second."
    )
    concurrency: int | None = Field(None, ge=1, le=1_000, description="Sends in flight at most.")


class ProviderView(BaseModel):
    channel: str
    role: str
    config: dict[str, Any] = Field(description="Secrets are shown as `***`.")
    rate_per_second: float | None
    concurrency: int | None
    updated_at: str | None
    source: Literal["default", "workspace"]


class SuppressionView(BaseModel):
    channel: str
    address: str
    scope: str
    reason: str
    source: str
    customer_id: str | None
    created_at: str


class SuppressionPage(BaseModel):
    suppressions: list[SuppressionView]
    next_after: str | None


class SuppressionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Literal["manual", "hard_bounce", "complaint", "unsubscribe"] = "manual"
    customer_id: str | None = Field(None, max_length=200)


ChannelPath = Annotated[Literal["email", "sms"], Path(description="email or sms")]
RolePath = Annotated[Literal["primary", "fallback"], Path(description="primary or fallback")]


def _address(channel: str, raw: str) -> str:
    try:
        return normalise_address(channel, raw)
    except ValueError as exc:
        raise Unprocessable(str(exc), field="address") from None


async def _unmasked(
    config: WorkspaceConfig, workspace_id: str, channel: str, role: Role, given: ProviderConfig
) -> ProviderConfig:
    """``given`` with each secret sent back as ``***`` (what GET shows) replaced by the one
    stored for this channel and role, so a configuration read, edited and saved again keeps its
    keys; a 422 naming the field when there is none of that kind to keep."""
    masked = given.masked()
    if not masked:
        return given
    current = await config.provider(workspace_id, channel, role)
    kept = {
        name: getattr(current.config, name, None)
        for name in masked
        if current is not None and current.config.kind == given.kind
    }
    missing = [name for name in masked if not kept.get(name)]
    if missing:
        raise Unprocessable(
            f"config.{given.kind}.{missing[0]}: {MASK!r} stands for the secret already "
            f"stored, and this {role} {channel} provider has no {given.kind} {missing[0]} to "
            "keep: give the secret itself",
            field=f"config.{given.kind}.{missing[0]}",
        )
    return given.model_copy(update=kept)


def _check_sender(policy: DispatchPolicy) -> None:
    """The sender goes into every email's From header: an address that is not one, or a name
    with a line break or another control character, would fail every send at the provider (or
    forge headers), so it is refused when saved. Checked here, not in the model, so a value
    stored before this check still loads."""
    if policy.from_email is not None:
        try:
            normalise_email(policy.from_email)
        except ValueError as exc:
            raise Unprocessable(f"from_email: {exc}", field="from_email") from None
    name = policy.from_name
    if name is not None and (any(ord(c) < 32 or ord(c) == 127 for c in name) or len(name) > 200):
        raise Unprocessable(
            "from_name: must be at most 200 characters, without line breaks or control characters",
            field="from_name",
        )


def _check_quiet_hours(policy: DispatchPolicy) -> None:
    """Quiet hours from a time to the same time have no length: the channel would have none,
    which is not what someone who wrote them meant (a whole day quiet would hold every message
    for ever). Refused when saved, like the sender, so a value stored before still loads."""
    for channel, window in policy.quiet_hours.items():
        if window.start == window.end:
            raise Unprocessable(
                f"quiet_hours.{channel}: start and end are both {window.start}, quiet hours of "
                f"no length; leave {channel} out for none",
                field=f"quiet_hours.{channel}",
            )


def admin_router(
    *,
    uow: Callable[[], DispatchUnitOfWork],
    config: WorkspaceConfig,
    clock: Clock,
) -> APIRouter:
    router = APIRouter(tags=["dispatch"])

    @router.get("/v1/providers", response_model=list[ProviderView], summary="Providers in use")
    async def list_providers(principal: AdminPrincipal) -> list[ProviderView]:
        found = await config.providers(principal.workspace_id)
        return [ProviderView(**p.public()) for p in found]

    @router.put(
        "/v1/providers/{channel}/{role}",
        response_model=ProviderView,
        summary="Configure the primary or fallback provider of a channel",
    )
    async def put_provider(
        principal: AdminPrincipal, channel: ChannelPath, role: RolePath, body: ProviderBody
    ) -> ProviderView:
        if channel not in body.config.channels:
            raise Unprocessable(
                f"{body.config.kind} cannot send {channel}; it sends "
                f"{', '.join(body.config.channels)}",
                field="config.kind",
            )
        provider = await _unmasked(config, principal.workspace_id, channel, role, body.config)
        problems = provider.problems()
        if problems:
            raise Unprocessable(
                "; ".join(f"config.{provider.kind}.{f}: {m}" for f, m in problems),
                field=f"config.{provider.kind}.{problems[0][0]}",
                extra={
                    "errors": [
                        {"field": f"config.{provider.kind}.{f}", "message": m} for f, m in problems
                    ]
                },
            )
        if role == "fallback" and provider.kind == "sink":
            raise Unprocessable("the local sink cannot be a fallback", field="config.kind")
        saved = await config.put_provider(
            principal.workspace_id,
            channel,
            role,
            provider,
            rate_per_second=body.rate_per_second,
            concurrency=body.concurrency,
            now=clock.now(),
        )
        return ProviderView(**saved.public())

    @router.delete(
        "/v1/providers/{channel}/{role}",
        status_code=204,
        summary="Remove a provider (the channel goes back to the service default)",
    )
    async def delete_provider(
        principal: AdminPrincipal, channel: ChannelPath, role: RolePath
    ) -> Response:
        if not await config.delete_provider(principal.workspace_id, channel, role):
            raise NotFound(f"no {role} provider configured for {channel}", field="role")
        return Response(status_code=204)

    @router.get("/v1/dispatch-settings", response_model=DispatchPolicy, summary="Sending settings")
    async def get_settings(principal: AdminPrincipal) -> DispatchPolicy:
        return await config.policy(principal.workspace_id)

    @router.put(
        "/v1/dispatch-settings",
        response_model=DispatchPolicy,
        summary="Set quiet hours, default time zone and sender of the workspace",
    )
    async def put_settings(principal: AdminPrincipal, body: DispatchPolicy) -> DispatchPolicy:
        _check_sender(body)
        _check_quiet_hours(body)
        values = body.model_dump(mode="json", exclude_unset=True)
        return await config.put_policy(principal.workspace_id, values, now=clock.now())

    @router.get("/v1/suppressions", response_model=SuppressionPage, summary="The suppression list")
    async def list_suppressions(
        principal: AdminPrincipal,
        channel: Annotated[Literal["email", "sms"] | None, Query()] = None,
        after: Annotated[str, Query(max_length=320)] = "",
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> SuppressionPage:
        async with uow() as u:
            found = await u.suppressions.list(
                principal.workspace_id, channel=channel, after=after, limit=limit
            )
        items = [
            SuppressionView(
                channel=s.channel,
                address=s.address,
                scope=s.scope,
                reason=s.reason,
                source=s.source,
                customer_id=s.customer_id,
                created_at=s.created_at.isoformat(),
            )
            for s in found
        ]
        return SuppressionPage(
            suppressions=items, next_after=items[-1].address if len(items) == limit else None
        )

    @router.put(
        "/v1/suppressions/{channel}/{address}",
        status_code=204,
        summary="Suppress an address (e.g. imported from a previous provider)",
    )
    async def put_suppression(
        principal: AdminPrincipal,
        channel: ChannelPath,
        address: Annotated[str, Path(max_length=320)],
        body: SuppressionBody,
    ) -> Response:
        normalised = _address(channel, address)
        async with uow() as u:
            await u.suppressions.add(
                workspace_id=principal.workspace_id,
                channel=channel,
                address=normalised,
                reason=body.reason,
                source="api",
                customer_id=body.customer_id,
                at=clock.now(),
            )
            await u.commit()
        return Response(status_code=204)

    @router.delete(
        "/v1/suppressions/{channel}/{address}",
        status_code=204,
        summary="Lift a suppression",
    )
    async def delete_suppression(
        principal: AdminPrincipal,
        channel: ChannelPath,
        address: Annotated[str, Path(max_length=320)],
    ) -> Response:
        normalised = _address(channel, address)
        async with uow() as u:
            removed = await u.suppressions.remove(principal.workspace_id, channel, normalised)
            await u.commit()
        if not removed:
            raise NotFound(f"{normalised} is not suppressed for {channel}", field="address")
        return Response(status_code=204)

    return router
