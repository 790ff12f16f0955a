"""What a workspace decides for all its journeys: frequency caps, default time zone, and the
live cut-off that separates history (builds state, never sends) from live events."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.journey.domain.engine import Policy


@dataclass(frozen=True, slots=True)
class WorkspacePolicy:
    policy: Policy = field(default_factory=Policy)
    live_from: datetime | None = None
    """Events that happened before this instant are history."""
    max_event_age: timedelta | None = None
    """Events that arrive later than this after they happened are history too (a replay, a
    stalled queue): a cart reminder for a cart from last week would only confuse."""

    def is_live(self, *, occurred_at: datetime, historical: bool, now: datetime) -> bool:
        if historical:
            return False
        if self.live_from is not None and occurred_at < self.live_from:
            return False
        return self.max_event_age is None or now - occurred_at <= self.max_event_age
