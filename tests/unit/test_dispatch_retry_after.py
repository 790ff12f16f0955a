"""What a provider's answer asks us to wait, measured on the dispatcher's clock (a fake one
here), never on the wall clock: a simulation or a test at any date waits what was asked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from services.dispatch.adapters.providers.base import raise_for_response
from services.dispatch.errors import MAX_RETRY_AFTER, TransientSendError
from shared.clock import VirtualClock

# Far from the wall clock on purpose, either way.
PAST = datetime(2001, 3, 4, 5, 6, 7, tzinfo=UTC)
FUTURE = datetime(2091, 3, 4, 5, 6, 7, tzinfo=UTC)


def refusal(status: int, headers: dict[str, str]) -> TransientSendError:
    response = httpx.Response(status, headers=headers, request=httpx.Request("POST", "https://p"))
    with pytest.raises(TransientSendError) as caught:
        raise_for_response(response, provider="p", detail="")
    return caught.value


def http_date(when: datetime) -> str:
    return format_datetime(when, usegmt=True)


@pytest.mark.parametrize("start", [PAST, FUTURE])
@pytest.mark.parametrize(
    ("after", "wait"),
    [
        (timedelta(seconds=30), 30.0),
        (timedelta(0), 0.0),
        (timedelta(seconds=-90), 0.0),  # already past: go now
        (timedelta(days=3), MAX_RETRY_AFTER),  # at most a day
    ],
)
def test_a_retry_after_date_is_a_wait_from_the_clocks_now(
    start: datetime, after: timedelta, wait: float
) -> None:
    clock = VirtualClock(start)
    error = refusal(503, {"Retry-After": http_date(start + after)})
    assert error.wait(clock.now()) == wait


def test_the_wait_shrinks_as_the_clock_moves() -> None:
    clock = VirtualClock(FUTURE)
    error = refusal(429, {"Retry-After": http_date(FUTURE + timedelta(seconds=30))})
    clock.advance(timedelta(seconds=20))
    assert error.wait(clock.now()) == 10.0
    clock.advance(timedelta(seconds=20))
    assert error.wait(clock.now()) == 0.0


@pytest.mark.parametrize("start", [PAST, FUTURE])
def test_a_rate_limit_reset_is_epoch_seconds_on_the_clock(start: datetime) -> None:
    clock = VirtualClock(start)
    reset = int(start.timestamp()) + 45
    assert refusal(429, {"X-RateLimit-Reset": str(reset)}).wait(clock.now()) == 45.0
    gone = int(start.timestamp()) - 45
    assert refusal(429, {"X-RateLimit-Reset": str(gone)}).wait(clock.now()) == 0.0


def test_seconds_need_no_clock_and_nothing_asked_is_none() -> None:
    assert refusal(503, {"Retry-After": "12"}).wait(PAST) == 12.0
    assert refusal(503, {"Retry-After": "12"}).wait(FUTURE) == 12.0
    assert refusal(503, {}).wait(PAST) is None
    assert refusal(503, {"Retry-After": "soon"}).wait(PAST) is None


def test_a_reset_beyond_the_calendar_is_the_longest_wait() -> None:
    assert refusal(429, {"X-RateLimit-Reset": "1e20"}).wait(FUTURE) == MAX_RETRY_AFTER
