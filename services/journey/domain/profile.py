"""A customer's profile as the journey service keeps it: traits merged from events."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(slots=True)
class Profile:
    workspace_id: str
    customer_id: str
    traits: dict[str, Any] = field(default_factory=dict)
    first_seen_at: datetime | None = None
    last_seen_at: datetime | None = None
    stored: bool = False

    def observe(self, *, traits: dict[str, Any], at: datetime) -> None:
        """Merge an event's traits (later events win; ``None`` clears a trait)."""
        for key, value in traits.items():
            if value is None:
                self.traits.pop(key, None)
            else:
                self.traits[key] = value
        if self.first_seen_at is None or at < self.first_seen_at:
            self.first_seen_at = at
        if self.last_seen_at is None or at > self.last_seen_at:
            self.last_seen_at = at

    def recipient(self) -> dict[str, Any]:
        """The snapshot a message request carries: addresses plus traits for personalisation."""
        return {
            "customer_id": self.customer_id,
            "email": self.traits.get("email"),
            "phone": self.traits.get("phone"),
            "traits": dict(self.traits),
        }
