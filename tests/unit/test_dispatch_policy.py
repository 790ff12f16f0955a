"""The checks before every send and the circuit breaker, on a fake clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from services.dispatch.domain.policy import (
    DispatchPolicy,
    Go,
    Hold,
    QuietHours,
    Refuse,
    decide,
    quiet_until,
)
from services.dispatch.service_layer.resilience import CircuitBreaker, RateGate

MADRID = ZoneInfo("Europe/Madrid")
NIGHT = QuietHours(start="21:00", end="08:00")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.mark.parametrize(
    ("now", "until"),
    [
        ("2026-11-23T20:59:00+01:00", None),
        ("2026-11-23T21:00:00+01:00", "2026-11-24T08:00:00+01:00"),
        ("2026-11-23T23:30:00+01:00", "2026-11-24T08:00:00+01:00"),
        ("2026-11-24T03:00:00+01:00", "2026-11-24T08:00:00+01:00"),
        ("2026-11-24T08:00:00+01:00", None),
    ],
)
def test_quiet_hours_across_midnight(now: str, until: str | None) -> None:
    got = quiet_until(at(now), MADRID, NIGHT)
    assert got == (at(until) if until else None)


def test_quiet_hours_within_a_day_and_across_a_dst_change() -> None:
    lunch = QuietHours(start="12:00", end="14:00")
    assert quiet_until(at("2026-11-23T12:30:00+01:00"), MADRID, lunch) == at(
        "2026-11-23T14:00:00+01:00"
    )
    assert quiet_until(at("2026-11-23T14:00:00+01:00"), MADRID, lunch) is None
    # The night of 24-25 October 2026 the clocks go back: 08:00 is then UTC+1, not +2.
    assert quiet_until(at("2026-10-24T22:00:00+02:00"), MADRID, NIGHT) == at(
        "2026-10-25T08:00:00+01:00"
    )


def test_quiet_hours_reject_a_bad_time() -> None:
    with pytest.raises(ValidationError, match="HH:MM"):
        QuietHours(start="25:00", end="08:00")
    with pytest.raises(ValidationError, match="time zone"):
        DispatchPolicy(timezone="Mars/Olympus")


def recipient(**traits: object) -> dict[str, object]:
    return {"email": "Ana@Example.com", "phone": "+34 612 345 678", "traits": traits}


NOON = datetime(2026, 11, 23, 11, tzinfo=UTC)


def check(channel: str, category: str, rec: dict[str, object], **kw: object) -> object:
    return decide(
        channel=channel,
        category=category,
        recipient=rec,
        suppressed=kw.get("suppressed"),  # type: ignore[arg-type]
        policy=kw.get("policy", DispatchPolicy()),  # type: ignore[arg-type]
        now=kw.get("now", NOON),  # type: ignore[arg-type]
    )


def test_the_address_is_normalised_or_refused() -> None:
    assert check("email", "marketing", recipient()) == Go("Ana@example.com")
    assert check("email", "marketing", {"email": "not-an-address"}) == Refuse("invalid_address")
    assert check("sms", "transactional", {"email": "a@b.co"}) == Refuse("no_address")
    assert check("sms", "transactional", recipient()) == Go("+34612345678")


def test_consent_marketing_email_opt_out_sms_opt_in_transactional_free() -> None:
    assert check("email", "marketing", recipient(email_marketing_consent="revoked")) == Refuse(
        "no_consent"
    )
    assert check("email", "transactional", recipient(email_marketing_consent="revoked")) == Go(
        "Ana@example.com"
    )
    assert check("sms", "marketing", recipient()) == Refuse("no_consent")
    assert check("sms", "marketing", recipient(sms_marketing_consent="granted")) == Go(
        "+34612345678"
    )


def test_a_suppression_refuses_after_consent() -> None:
    assert check("email", "transactional", recipient(), suppressed="hard_bounce") == Refuse(
        "suppressed:hard_bounce"
    )


def test_marketing_sms_is_held_in_the_customers_night_transactional_is_not() -> None:
    late = datetime(2026, 11, 23, 22, 30, tzinfo=UTC)  # 23:30 in Madrid
    rec = recipient(sms_marketing_consent="granted", timezone="Europe/Madrid")
    assert check("sms", "marketing", rec, now=late) == Hold(at("2026-11-24T08:00:00+01:00"))
    assert check("sms", "transactional", rec, now=late) == Go("+34612345678")
    # Without a zone trait the workspace's zone applies (UTC: 22:30 is night too).
    assert isinstance(
        check("sms", "marketing", recipient(sms_marketing_consent="granted"), now=late), Hold
    )
    # Email has no quiet hours unless the workspace sets them.
    assert check("email", "marketing", rec, now=late) == Go("Ana@example.com")


def test_breaker_opens_after_failures_and_lets_one_trial_through() -> None:
    t = [0.0]
    breaker = CircuitBreaker("p", threshold=3, cooldown=10, clock=lambda: t[0])
    for _ in range(2):
        breaker.failure()
    assert breaker.allow() and str(breaker.state) == "closed"
    breaker.failure()
    # (state read afresh: mypy would keep the narrowing of the assert above)
    assert str(breaker.state) == "open" and not breaker.allow()
    assert breaker.wait() == 10
    t[0] = 10.0
    assert str(breaker.state) == "half_open"
    assert breaker.allow() and not breaker.allow()  # one trial at a time
    breaker.failure()  # the trial failed: open again for a full cooldown
    assert str(breaker.state) == "open" and breaker.wait() == 10
    t[0] = 20.0
    assert breaker.allow()
    breaker.success()
    assert str(breaker.state) == "closed" and breaker.allow()


def test_a_throttled_trial_frees_the_half_open_slot() -> None:
    """A trial answered with a 429 says nothing about health: the breaker stays half-open and
    the next send is a trial again, instead of no send ever reaching the provider."""
    t = [0.0]
    breaker = CircuitBreaker("p", threshold=1, cooldown=10, clock=lambda: t[0])
    breaker.failure()
    t[0] = 10.0
    assert breaker.allow()
    breaker.release()
    assert str(breaker.state) == "half_open"
    assert breaker.allow() and not breaker.allow()


def test_a_release_neither_closes_nor_opens_the_breaker() -> None:
    """A message refused before any request (wrong channel, a number not in E.164) is no
    evidence about the provider: a half-open trial ends without closing the breaker, and the
    failures in a row of a closed breaker still count."""
    t = [0.0]
    breaker = CircuitBreaker("p", threshold=3, cooldown=10, clock=lambda: t[0])
    for _ in range(3):
        breaker.failure()
    t[0] = 10.0
    assert breaker.allow()  # the trial
    breaker.release()
    assert str(breaker.state) == "half_open"
    assert breaker.allow() and not breaker.allow()  # the next send is the trial again
    breaker.failure()  # and one failed trial opens it for a full cooldown
    assert str(breaker.state) == "open" and breaker.wait() == 10

    closed = CircuitBreaker("q", threshold=3, cooldown=10, clock=lambda: t[0])
    closed.failure()
    closed.failure()
    closed.release()
    assert str(closed.state) == "closed"
    closed.failure()  # the third failure in a row, despite the refusal between
    assert str(closed.state) == "open"


@pytest.mark.parametrize(("rate", "gap"), [(0.5, 2.0), (0.25, 4.0), (2.0, 0.5)])
async def test_a_rate_gate_spaces_sends_even_below_one_per_second(rate: float, gap: float) -> None:
    t = [100.0]

    async def sleep(seconds: float) -> None:
        t[0] += seconds
        await asyncio.sleep(0)

    gate = RateGate(rate=rate, concurrency=1, clock=lambda: t[0], sleep=sleep)
    starts = []
    async with asyncio.timeout(2):  # a gate that never lets a send through fails, not hangs
        for _ in range(4):
            async with gate:
                starts.append(t[0])
    burst = int(max(rate, 1))
    assert starts[:burst] == [100.0] * burst
    gaps = [round(b - a, 9) for a, b in zip(starts[burst - 1 : -1], starts[burst:], strict=True)]
    assert gaps == [gap] * (4 - burst)
