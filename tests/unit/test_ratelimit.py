from __future__ import annotations

import pytest

from shared.ratelimit import RateLimiter, retry_after_header


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=10, burst=3, clock=clock)
    assert [limiter.acquire("k") for _ in range(3)] == [0, 0, 0]
    assert limiter.acquire("k") == pytest.approx(0.1)
    clock.now += 0.1
    assert limiter.acquire("k") == 0
    assert limiter.acquire("k") > 0


def test_keys_are_independent_and_refill_is_capped() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=1, burst=2, clock=clock)
    limiter.acquire("a")
    limiter.acquire("a")
    assert limiter.acquire("a") > 0
    assert limiter.acquire("b") == 0
    clock.now += 3600  # a long pause refills only up to the burst
    assert [limiter.acquire("a") == 0 for _ in range(3)] == [True, True, False]


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    assert retry_after_header(0.01) == "1"
    assert retry_after_header(1.2) == "2"


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="rate must be"):
        RateLimiter(rate=0, burst=1)
