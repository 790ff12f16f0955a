from __future__ import annotations

import random

from shared.retry import RetryPolicy


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(initial_delay=1, multiplier=2, max_delay=5, jitter=0)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 5, 5]


def test_jitter_stays_within_bounds() -> None:
    policy = RetryPolicy(initial_delay=1, multiplier=2, jitter=0.5)
    rng = random.Random(7)
    delays = [policy.delay(2, rng=rng) for _ in range(200)]
    assert min(delays) >= 1.0
    assert max(delays) <= 3.0
    assert len(set(delays)) > 100


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    policy = RetryPolicy(initial_delay=0.1, jitter=0, max_delay=30)
    assert policy.delay(1, retry_after=7) == 7
    assert policy.delay(1, retry_after=3600) == 30
