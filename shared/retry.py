"""Retry policy as data: exponential backoff with jitter, capped, honouring Retry-After."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    initial_delay: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 60.0
    jitter: float = 0.5  # ± fraction of the delay, so retries of many senders do not align

    def delay(
        self, attempt: int, *, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = min(self.max_delay, self.initial_delay * self.multiplier ** (attempt - 1))
        spread = (rng or random).uniform(1 - self.jitter, 1 + self.jitter)
        delay = base * spread
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_delay))
        return delay
