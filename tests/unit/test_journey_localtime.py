"""Local-time arithmetic: zones, times of day, date traits and send windows, across DST."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from services.journey.domain.localtime import (
    at_local,
    next_date_trait,
    next_time_of_day,
    parse_date_trait,
    resolve_zone,
    window_opens,
    zone,
)

MADRID = zone("Europe/Madrid")
NEW_YORK = zone("America/New_York")
# Europe/Madrid in 2026: clocks go forward on 29 March at 02:00 CET (01:00 UTC) to 03:00 CEST,
# and back on 25 October at 03:00 CEST (01:00 UTC) to 02:00 CET.
SPRING = date(2026, 3, 29)
AUTUMN = date(2026, 10, 25)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_resolve_zone() -> None:
    assert resolve_zone("Europe/Madrid", "America/New_York") == MADRID
    assert resolve_zone("customer", "America/New_York") == NEW_YORK
    assert resolve_zone("customer", None, "Europe/Madrid") == MADRID
    assert resolve_zone("customer", "", "Europe/Madrid") == MADRID
    assert resolve_zone("customer", "Not/AZone", "Europe/Madrid") == MADRID
    assert resolve_zone("customer", "../etc/passwd", "Europe/Madrid") == MADRID
    assert resolve_zone("customer", 3) == zone("UTC")


def test_at_local_on_ordinary_days() -> None:
    assert at_local(date(2026, 1, 15), time(9), MADRID) == utc(2026, 1, 15, 8)
    assert at_local(date(2026, 7, 15), time(9), MADRID) == utc(2026, 7, 15, 7)


def test_at_local_in_the_spring_forward_gap_moves_forward_by_the_gap() -> None:
    # 02:30 does not exist on that night in Madrid: it is read as 03:30 CEST.
    instant = at_local(SPRING, time(2, 30), MADRID)
    assert instant == utc(2026, 3, 29, 1, 30)
    assert instant.astimezone(MADRID).time() == time(3, 30)
    # Just before and after the gap are what they say.
    assert at_local(SPRING, time(1, 59), MADRID) == utc(2026, 3, 29, 0, 59)
    assert at_local(SPRING, time(3, 0), MADRID) == utc(2026, 3, 29, 1, 0)


def test_at_local_in_the_autumn_repeat_takes_the_first() -> None:
    # 02:30 happens twice: at 00:30 UTC (CEST) and 01:30 UTC (CET). The first is taken.
    assert at_local(AUTUMN, time(2, 30), MADRID) == utc(2026, 10, 25, 0, 30)
    assert at_local(AUTUMN, time(3, 30), MADRID) == utc(2026, 10, 25, 2, 30)


def test_next_time_of_day_is_strictly_after_now() -> None:
    now = utc(2026, 1, 15, 8)  # 09:00 Madrid
    assert next_time_of_day(now, time(9), MADRID) == utc(2026, 1, 16, 8)
    assert next_time_of_day(now - timedelta(seconds=1), time(9), MADRID) == now
    assert next_time_of_day(now, time(10), MADRID) == utc(2026, 1, 15, 9)


def test_next_time_of_day_keeps_the_local_hour_across_dst() -> None:
    # Daily 09:00 in Madrid: 08:00 UTC on the last CET day, 07:00 UTC on the first CEST day.
    after_saturday = utc(2026, 3, 28, 8, 1)
    sunday = next_time_of_day(after_saturday, time(9), MADRID)
    assert sunday == utc(2026, 3, 29, 7)
    assert sunday - after_saturday == timedelta(hours=22, minutes=59)
    # And back in autumn: 07:00 UTC on Saturday, 08:00 UTC on Sunday (a 25-hour day).
    assert next_time_of_day(utc(2026, 10, 24, 7, 1), time(9), MADRID) == utc(2026, 10, 25, 8)


def test_next_time_of_day_in_the_gap_and_the_repeat() -> None:
    before = utc(2026, 3, 28, 23)  # 00:00 CET on the spring-forward day
    assert next_time_of_day(before, time(2, 30), MADRID) == utc(2026, 3, 29, 1, 30)
    before = utc(2026, 10, 24, 22)  # 00:00 CEST on the autumn day
    assert next_time_of_day(before, time(2, 30), MADRID) == utc(2026, 10, 25, 0, 30)
    # After the first 02:30, the next one is the following night's, not the repeat.
    first = utc(2026, 10, 25, 0, 30)
    assert next_time_of_day(first, time(2, 30), MADRID) == utc(2026, 10, 26, 1, 30)


def test_next_time_of_day_on_weekdays() -> None:
    monday = utc(2026, 3, 2, 10)
    assert next_time_of_day(monday, time(9), MADRID, ["mon"]) == utc(2026, 3, 9, 8)
    assert next_time_of_day(monday, time(12), MADRID, ["mon"]) == utc(2026, 3, 2, 11)
    assert next_time_of_day(monday, time(9), MADRID, ["fri", "wed"]) == utc(2026, 3, 4, 8)
    # The weekday is the local one: Monday 23:30 UTC is already Tuesday in Madrid.
    late = utc(2026, 3, 2, 23, 30)
    assert next_time_of_day(late, time(9), MADRID, ["tue"]) == utc(2026, 3, 3, 8)
    assert next_time_of_day(late, time(9), NEW_YORK, ["tue"]) == utc(2026, 3, 3, 14)


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("1990-05-17", (1990, 5, 17)),
        ("1990-05-17T23:30:00Z", (1990, 5, 17)),
        (" 2024-02-29 ", (2024, 2, 29)),
        ("--02-29", (None, 2, 29)),
        ("--12-31", (None, 12, 31)),
        ("05-17", (None, 5, 17)),  # the short form ingest accepts for a birthday
        ("13-01", None),
        ("--02-30", None),
        ("2023-02-29", None),
        ("17/05/1990", None),
        ("", None),
        (None, None),
        (19900517, None),
    ],
)
def test_parse_date_trait(value: object, parsed: tuple[int | None, int, int] | None) -> None:
    assert parse_date_trait(value) == parsed


def birthday(value: object, now: datetime, **kwargs: object) -> datetime | None:
    options: dict[str, object] = {
        "offset": timedelta(0),
        "at": time(9),
        "tz": MADRID,
        "yearly": True,
    }
    options.update(kwargs)
    return next_date_trait(now, value, **options)  # type: ignore[arg-type]


def test_a_yearly_date_comes_round_every_year_in_local_time() -> None:
    now = utc(2026, 3, 2, 10)
    assert birthday("1990-05-17", now) == utc(2026, 5, 17, 7)  # CEST
    assert birthday("1990-01-17", now) == utc(2027, 1, 17, 8)  # CET, next year
    assert birthday("--05-17", now) == utc(2026, 5, 17, 7)
    assert birthday("1990-05-17", now, tz=NEW_YORK) == utc(2026, 5, 17, 13)
    # On the day, after the hour, it is next year's.
    assert birthday("1990-03-02", now) == utc(2027, 3, 2, 8)
    assert birthday("1990-03-02", now, at=time(12)) == utc(2026, 3, 2, 11)


def test_the_29th_of_february_falls_on_the_28th_in_other_years() -> None:
    now = utc(2026, 3, 2, 10)
    assert birthday("1992-02-29", now) == utc(2027, 2, 28, 8)
    assert birthday("--02-29", utc(2027, 3, 1)) == utc(2028, 2, 29, 8)
    assert birthday("1992-02-29", utc(2028, 2, 28, 9)) == utc(2028, 2, 29, 8)


def test_the_date_is_the_customer_local_date() -> None:
    # 17 May 09:00 in Tokyo is 16 May 00:00 UTC.
    assert birthday("1990-05-17", utc(2026, 3, 2), tz=zone("Asia/Tokyo")) == utc(2026, 5, 17, 0)
    # Late on 31 December UTC it is already New Year's Day in Tokyo, before 09:00 there.
    tokyo = zone("Asia/Tokyo")
    assert birthday("--01-01", utc(2026, 12, 31, 20), tz=tokyo) == utc(2027, 1, 1, 0)
    assert birthday("--01-01", utc(2027, 1, 1, 1), tz=tokyo) == utc(2028, 1, 1, 0)


def test_offsets_shift_the_date_even_across_a_year() -> None:
    now = utc(2026, 12, 20)
    assert birthday("1990-01-03", now, offset=timedelta(days=-7)) == utc(2026, 12, 27, 8)
    assert birthday("1990-12-30", now, offset=timedelta(days=3)) == utc(2027, 1, 2, 8)
    assert birthday("1990-12-30", now, offset=timedelta(hours=-12)) == utc(2026, 12, 29, 8)


def test_a_one_off_date_comes_once() -> None:
    now = utc(2026, 3, 2, 10)
    assert birthday("2026-04-01", now, yearly=False) == utc(2026, 4, 1, 7)
    assert birthday("2026-03-01", now, yearly=False) is None
    assert birthday("--04-01", now, yearly=False) is None  # no year, no one-off date
    assert birthday("2026-04-01", now, yearly=False, offset=timedelta(days=-31)) is None
    # A yearly date that is still ahead comes on its own date, not this year's anniversary.
    assert birthday("2028-04-01", now) == utc(2028, 4, 1, 7)


def test_after_skips_the_occurrence_that_just_fired() -> None:
    due = utc(2026, 5, 17, 7)
    assert birthday("1990-05-17", due, after=due) == utc(2027, 5, 17, 7)
    assert birthday("1990-05-17", due - timedelta(days=1), after=due) == utc(2027, 5, 17, 7)


def test_dates_at_the_ends_of_the_calendar_are_no_error() -> None:
    # 0001-01-01 a day earlier and 9999-12-31 a day later lie outside the years Python counts:
    # such a one-off date never comes, a yearly one comes in the years that exist.
    now = utc(2026, 3, 2, 10)
    day = timedelta(days=1)
    assert birthday("0001-01-01", now, yearly=False, offset=-day) is None
    assert birthday("9999-12-31", now, yearly=False, offset=day) is None
    assert birthday("9999-12-31", now, yearly=False) == datetime(9999, 12, 31, 8, tzinfo=UTC)
    assert birthday("0001-01-01", now, offset=-day) == utc(2026, 12, 31, 8)
    assert birthday("9999-12-31", now, offset=day) == utc(2027, 1, 1, 8)
    # Tokyo is ahead of UTC: 1 January of year 1 at 09:00 there is before the first UTC instant.
    tokyo = zone("Asia/Tokyo")
    assert (
        next_date_trait(now, "0001-01-01", offset=timedelta(0), at=time(9), tz=tokyo, yearly=False)
        is None
    )
    assert next_date_trait(
        now, "0001-01-01", offset=timedelta(0), at=time(9), tz=tokyo, yearly=True
    ) == utc(2027, 1, 1, 0)


def test_not_a_date_is_none() -> None:
    assert birthday("someday", utc(2026, 1, 1)) is None
    assert birthday(None, utc(2026, 1, 1)) is None


def test_window_opens() -> None:
    nine, eight_pm = time(9), time(20)
    assert window_opens(utc(2026, 1, 15, 10), nine, eight_pm, MADRID) is None  # 11:00
    assert window_opens(utc(2026, 1, 15, 8), nine, eight_pm, MADRID) is None  # 09:00: opens
    assert window_opens(utc(2026, 1, 15, 19), nine, eight_pm, MADRID) == utc(2026, 1, 16, 8)
    assert window_opens(utc(2026, 1, 15, 7), nine, eight_pm, MADRID) == utc(2026, 1, 15, 8)


def test_a_window_across_midnight_opens_in_the_evening() -> None:
    ten_pm, six_am = time(22), time(6)
    assert window_opens(utc(2026, 1, 15, 22), ten_pm, six_am, MADRID) is None  # 23:00
    assert window_opens(utc(2026, 1, 15, 3), ten_pm, six_am, MADRID) is None  # 04:00
    assert window_opens(utc(2026, 1, 15, 5), ten_pm, six_am, MADRID) == utc(2026, 1, 15, 21)
    assert window_opens(utc(2026, 1, 15, 12), ten_pm, six_am, MADRID) == utc(2026, 1, 15, 21)


def test_a_window_opening_in_the_dst_gap_opens_after_the_gap() -> None:
    before = utc(2026, 3, 29, 0, 30)  # 01:30 CET, just before the clocks jump
    assert window_opens(before, time(2, 30), time(8), MADRID) == utc(2026, 3, 29, 1, 30)
    # At that instant (03:30 CEST) the window is open.
    assert window_opens(utc(2026, 3, 29, 1, 30), time(2, 30), time(8), MADRID) is None
