"""Where the journey worker gets its journeys and workspace policies.

The worker asks for them once per batch; implementations answer from memory and refresh in the
background (or on a short interval), so a batch never waits on a reload.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from services.journey.domain import intelligence
from services.journey.domain.catalog import JourneyCatalog
from services.journey.domain.intelligence import Intelligence
from services.journey.domain.policy import WorkspacePolicy


class Catalogs(Protocol):
    async def current(self) -> JourneyCatalog: ...


class Policies(Protocol):
    async def for_workspaces(self, workspaces: Iterable[str]) -> dict[str, WorkspacePolicy]: ...


class IntelSource(Protocol):
    """Each workspace's customer-intelligence rules: currency and rates, score rules,
    lifecycle thresholds, segments (built-in ones merged with the workspace's own)."""

    async def for_workspaces(self, workspaces: Iterable[str]) -> dict[str, Intelligence]: ...


class StaticIntel:
    """The same rules for every workspace (the defaults; tests and the simulator)."""

    def __init__(self, intel: Intelligence | None = None) -> None:
        self.intel = intel or intelligence.default()

    async def for_workspaces(self, workspaces: Iterable[str]) -> dict[str, Intelligence]:
        return {w: self.intel for w in workspaces}


class StaticCatalogs:
    """A fixed catalog (journeys/ files; tests)."""

    def __init__(self, catalog: JourneyCatalog) -> None:
        self.catalog = catalog

    async def current(self) -> JourneyCatalog:
        return self.catalog


class StaticPolicies:
    """The same policy for every workspace (the configured defaults; tests)."""

    def __init__(self, policy: WorkspacePolicy | None = None) -> None:
        self.policy = policy or WorkspacePolicy()

    async def for_workspaces(self, workspaces: Iterable[str]) -> dict[str, WorkspacePolicy]:
        return {w: self.policy for w in workspaces}
