"""Local time of day in a time zone: the next instant a wall-clock time comes round, and whether a
daily window is open. Shared by the journey engine (waits, send windows) and dispatch (quiet
hours).

Every function takes the instant ``now`` (aware) and a time zone, and answers an instant in UTC.
Local times that do not exist (the hour skipped when clocks go forward) move forward by the gap;
local times that happen twice (the hour repeated when clocks go back) take the first.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@lru_cache(maxsize=1024)
def zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


def at_local(day: date, at: time, tz: zoneinfo.ZoneInfo) -> datetime:
    """The UTC instant of local ``day`` at ``at`` in ``tz``."""
    # fold=0 reads a skipped wall time with the offset in force before the change, which lands
    # after the gap (02:30 on a spring-forward night becomes 03:30), and a repeated wall time as
    # its first occurrence.
    naive = datetime.combine(day, at.replace(tzinfo=None))
    return naive.replace(tzinfo=tz, fold=0).astimezone(UTC)


def next_time_of_day(
    now: datetime, at: time, tz: zoneinfo.ZoneInfo, weekdays: Sequence[str] | None = None
) -> datetime:
    """The first instant strictly after ``now`` whose local time is ``at`` (on one of
    ``weekdays``, if given)."""
    today = now.astimezone(tz).date()
    allowed = {WEEKDAYS.index(d) for d in weekdays} if weekdays else None
    for days in range(0, 9):
        day = today + timedelta(days=days)
        if allowed is not None and day.weekday() not in allowed:
            continue
        candidate = at_local(day, at, tz)
        if candidate > now:
            return candidate
    raise AssertionError("unreachable: a week always holds an allowed day")  # pragma: no cover


def window_opens(now: datetime, start: time, end: time, tz: zoneinfo.ZoneInfo) -> datetime | None:
    """None when a send window [start, end) is open at ``now``; otherwise when it next opens.
    A window whose end is earlier than its start spans midnight."""
    local = now.astimezone(tz).time().replace(tzinfo=None)
    inside = start <= local < end if start < end else (local >= start or local < end)
    if inside:
        return None
    return next_time_of_day(now, start, tz)


def parse_date_trait(value: Any) -> tuple[int | None, int, int] | None:
    """(year or None, month, day) of a date trait such as a birthday: ``1990-05-17``, an RFC 3339
    timestamp (its date part), ``--05-17`` (ISO 8601 without a year) or ``05-17``. None when it
    is not a date. The journeys read date traits with it, and ingest refuses a birthday it
    cannot read."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    try:
        if (text.startswith("--") and len(text) == 7) or (len(text) == 5 and text[2] == "-"):
            month, day = int(text[-5:-3]), int(text[-2:])
            date(2000, month, day)  # a leap year accepts 02-29
            return None, month, day
        parsed = date.fromisoformat(text[:10])
    except ValueError:
        return None
    return parsed.year, parsed.month, parsed.day
