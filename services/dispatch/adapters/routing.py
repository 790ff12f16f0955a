"""The providers of each workspace as lanes: a provider client with its circuit breaker and rate
gate, built once per configuration and rebuilt when the configuration changes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.dispatch.adapters.providers.base import Provider, TransactionalProvider
from services.dispatch.adapters.workspace_config import ProviderSetting, WorkspaceConfig
from services.dispatch.domain.policy import DispatchPolicy
from services.dispatch.domain.providers import ProviderConfig
from services.dispatch.service_layer.handlers import Lane, ResolvedRoute
from services.dispatch.service_layer.resilience import CircuitBreaker, RateGate


class ConfiguredRoutes:
    def __init__(
        self,
        config: WorkspaceConfig,
        build: Callable[[ProviderConfig], Provider | TransactionalProvider],
        *,
        concurrency: int,
        breaker_threshold: int,
        breaker_cooldown: float,
    ) -> None:
        self._config = config
        self._build = build
        self._concurrency = concurrency
        self._threshold = breaker_threshold
        self._cooldown = breaker_cooldown
        self._lanes: dict[tuple[Any, ...], tuple[Any, Lane]] = {}

    async def route(self, workspace_id: str, channel: str) -> ResolvedRoute:
        route = await self._config.route(workspace_id, channel)
        fallback = self._lane(route.fallback) if route.fallback is not None else None
        return ResolvedRoute(self._lane(route.primary), fallback)

    async def policy(self, workspace_id: str) -> DispatchPolicy:
        return await self._config.policy(workspace_id)

    def _lane(self, setting: ProviderSetting) -> Lane:
        key = (setting.workspace_id, setting.channel, setting.role)
        known = self._lanes.get(key)
        if known is not None and known[0] == setting.updated_at:
            return known[1]
        provider = self._build(setting.config)
        label = (
            provider.name
            if setting.workspace_id is None
            else (f"{provider.name}:{setting.workspace_id}")
        )
        lane = Lane(
            provider,
            CircuitBreaker(label, threshold=self._threshold, cooldown=self._cooldown),
            RateGate(
                rate=setting.rate_per_second,
                concurrency=setting.concurrency or self._concurrency,
            ),
        )
        self._lanes[key] = (setting.updated_at, lane)
        return lane
