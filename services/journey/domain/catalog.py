"""The journeys in force: every published version (runs finish on the version they entered),
and per workspace the current version of each journey with its status.

Journeys come from two places: files in journeys/ apply to every workspace; journeys managed over
HTTP belong to one workspace and, under the same id, take the place of a file journey there.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from services.journey.domain.conditions import evaluate
from services.journey.domain.definitions import (
    DateTrigger,
    EventTrigger,
    InactivityTrigger,
    Journey,
    SegmentTrigger,
)

Status = Literal["published", "paused", "archived"]
SEGMENT_EVENTS = {"entered": "segment_entered", "exited": "segment_exited"}
"""Segment triggers listen to these events, which carry ``properties.segment``."""


@dataclass(slots=True)
class WorkspaceJourneys:
    """The current journeys of one workspace, indexed for the engine's lookups."""

    current: dict[str, tuple[Journey, Status]] = field(default_factory=dict)
    by_event: dict[str, list[Journey]] = field(default_factory=lambda: defaultdict(list))
    by_inactive_event: dict[str, list[Journey]] = field(default_factory=lambda: defaultdict(list))
    dated: list[Journey] = field(default_factory=list)

    def index(self) -> WorkspaceJourneys:
        for journey, status in self.current.values():
            if status != "published":
                continue  # paused and archived journeys take no new entries
            trigger = journey.trigger
            if isinstance(trigger, EventTrigger):
                self.by_event[trigger.event].append(journey)
            elif isinstance(trigger, SegmentTrigger):
                self.by_event[SEGMENT_EVENTS[trigger.on]].append(journey)
            elif isinstance(trigger, InactivityTrigger):
                self.by_inactive_event[trigger.inactivity.event].append(journey)
            elif isinstance(trigger, DateTrigger):
                self.dated.append(journey)
        for journeys in (*self.by_event.values(), *self.by_inactive_event.values(), self.dated):
            journeys.sort(key=lambda j: (-j.priority, j.id))
        return self

    def entries_for(self, event: Mapping[str, Any], ctx: Mapping[str, Any]) -> list[Journey]:
        """Journeys whose trigger this event satisfies, highest priority first; ``ctx`` is what
        the trigger's filter reads (``engine.context``)."""
        found = []
        for journey in self.by_event.get(event["type"], ()):
            trigger = journey.trigger
            if isinstance(trigger, SegmentTrigger):
                if event.get("properties", {}).get("segment") != trigger.segment:
                    continue
            elif (
                isinstance(trigger, EventTrigger)
                and trigger.where is not None
                and not evaluate(trigger.where, ctx)
            ):
                continue
            found.append(journey)
        return found

    def get(self, journey_id: str) -> tuple[Journey, Status] | None:
        return self.current.get(journey_id)


class JourneyCatalog:
    def __init__(self, journeys: Iterable[Journey] = ()) -> None:
        self._versions: dict[tuple[str | None, str, int], Journey] = {}
        self._current: dict[str | None, dict[str, tuple[Journey, Status]]] = defaultdict(dict)
        self._views: dict[str | None, WorkspaceJourneys] = {}
        for journey in journeys:
            if journey.id in self._current[None]:
                raise ValueError(f"journey {journey.id!r} is defined twice")
            self.add(journey)

    def add(
        self,
        journey: Journey,
        *,
        workspace: str | None = None,
        status: Status = "published",
        current: bool = True,
    ) -> None:
        """Add a published version; ``current`` makes it the one new customers enter."""
        self._versions[(workspace, journey.id, journey.version)] = journey
        if current:
            self._current[workspace][journey.id] = (journey, status)
        self._views.clear()

    def version(self, workspace: str, journey_id: str, version: int) -> Journey | None:
        """The version a run entered: the workspace's own, else the file journey's."""
        return self._versions.get((workspace, journey_id, version)) or self._versions.get(
            (None, journey_id, version)
        )

    def view(self, workspace: str) -> WorkspaceJourneys:
        view = self._views.get(workspace)
        if view is None:
            merged = dict(self._current.get(None, {}))
            merged.update(self._current.get(workspace, {}))
            view = self._views[workspace] = WorkspaceJourneys(current=merged).index()
        return view

    def dated(self) -> list[tuple[str | None, Journey]]:
        """Published date-triggered journeys with their scope (None: every workspace)."""
        return sorted(
            (
                (scope, journey)
                for scope, current in self._current.items()
                for journey, status in current.values()
                if status == "published" and isinstance(journey.trigger, DateTrigger)
            ),
            key=lambda item: (item[0] or "", item[1].id),
        )

    def __iter__(self) -> Iterator[Journey]:
        """The current version of every file journey."""
        return iter(j for j, _ in self._current.get(None, {}).values())

    def __len__(self) -> int:
        return len(self._current.get(None, {}))
