"""The set of published journeys, indexed by trigger event type."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator

from services.journey.domain.definitions import Journey


class JourneyCatalog:
    def __init__(self, journeys: Iterable[Journey] = ()) -> None:
        self._by_trigger: dict[str, list[Journey]] = defaultdict(list)
        self._by_id: dict[str, Journey] = {}
        for journey in journeys:
            self.add(journey)

    def add(self, journey: Journey) -> None:
        if journey.id in self._by_id:
            raise ValueError(f"journey {journey.id!r} is defined twice")
        self._by_id[journey.id] = journey
        self._by_trigger[journey.trigger.event].append(journey)

    def triggered_by(self, event_type: str) -> list[Journey]:
        return self._by_trigger.get(event_type, [])

    def __iter__(self) -> Iterator[Journey]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)
