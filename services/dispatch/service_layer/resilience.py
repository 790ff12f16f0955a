"""Protecting providers and ourselves: a circuit breaker and a rate gate per provider.

A provider that fails (5xx, timeouts, refused connections) for ``threshold`` sends in a row is
*open* for ``cooldown`` seconds: sends go to the fallback provider if one is configured, else they
wait, instead of hammering a provider that is down. After the cooldown one trial send is let
through (*half-open*): success closes the breaker, failure opens it again. A refusal of a message
by the provider (a permanent 4xx) is an answer, so the provider is up: it counts as a success. A
throttling answer, or a message refused before any request reached the provider, says nothing
either way: ``release``.

The gate bounds what we ask of a provider: at most ``rate`` sends per second (a token bucket; the
providers' own limits, e.g. Twilio's per-number throughput) and ``concurrency`` in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from prometheus_client import Gauge

BreakerState = Literal["closed", "open", "half_open"]

BREAKER = Gauge(
    "ciclo_dispatch_breaker_open",
    "1 while a provider's circuit breaker is open (sends go to the fallback or wait)",
    ["provider"],
)


@dataclass(slots=True)
class CircuitBreaker:
    name: str
    threshold: int = 5
    cooldown: float = 30.0
    clock: Callable[[], float] = time.monotonic
    _failures: int = 0
    _opened_at: float | None = None
    _trial: bool = False

    def __post_init__(self) -> None:
        BREAKER.labels(self.name).set(0)

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if self.clock() - self._opened_at >= self.cooldown:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """May a send go to this provider now? In half-open, only one trial at a time."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._trial:
            self._trial = True
            return True
        return False

    def wait(self) -> float:
        """Seconds until the breaker lets a trial through (0 when it would now)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.cooldown - self.clock())

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial = False
        BREAKER.labels(self.name).set(0)

    def release(self) -> None:
        """The send says nothing about the provider's health: it throttled us, or the message
        was refused before any request reached it. A trial in half-open is over without a
        verdict, so the next send is a trial again (without this the trial slot stayed taken and
        the provider got no send ever again); the failures in a row still count."""
        self._trial = False

    def failure(self) -> None:
        self._failures += 1
        if self._trial or self._failures >= self.threshold:
            self._opened_at = self.clock()
            BREAKER.labels(self.name).set(1)
        self._trial = False


@dataclass(slots=True)
class RateGate:
    """At most ``rate`` starts per second and ``concurrency`` in flight. The bucket holds
    ``rate`` tokens, and at least one: a rate below one per second (one send every two seconds)
    still lets a send through once a whole token has accumulated."""

    rate: float | None
    concurrency: int
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    """Waits on ``clock``'s time (tests pass a fake pair)."""
    _tokens: float = 0.0
    _updated: float = 0.0
    _slots: asyncio.Semaphore = field(init=False)
    _lock: asyncio.Lock = field(init=False)

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.concurrency)
        self._lock = asyncio.Lock()
        self._tokens = self._capacity()
        self._updated = self.clock()

    def _capacity(self) -> float:
        return max(self.rate or 0.0, 1.0)

    async def __aenter__(self) -> RateGate:
        await self._slots.acquire()
        try:
            await self._take()
        except BaseException:
            self._slots.release()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._slots.release()

    async def _take(self) -> None:
        if self.rate is None:
            return
        async with self._lock:  # one waiter at a time keeps the order fair
            while True:
                now = self.clock()
                self._tokens = min(
                    self._capacity(), self._tokens + (now - self._updated) * self.rate
                )
                self._updated = now
                if self._tokens >= 1 - 1e-9:
                    self._tokens -= 1
                    return
                await self.sleep((1 - self._tokens) / self.rate)
