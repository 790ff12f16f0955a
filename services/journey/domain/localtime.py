"""Local-time arithmetic for journeys: date traits and the customer's zone; time of day and send
windows come from ``shared.localtime``.

Every function takes the instant ``now`` (aware, UTC) and a time zone, and answers an instant in
UTC. Local times that do not exist (the hour skipped when clocks go forward) move forward by the
gap; local times that happen twice (the hour repeated when clocks go back) take the first.
"""

from __future__ import annotations

import zoneinfo
from datetime import date, datetime, time, timedelta
from typing import Any

from shared.localtime import (
    WEEKDAYS,
    at_local,
    next_time_of_day,
    parse_date_trait,
    window_opens,
    zone,
)


def resolve_zone(wanted: str, customer_zone: Any, default: str = "UTC") -> zoneinfo.ZoneInfo:
    """The zone a journey means: an IANA name as written, or for "customer" the customer's
    ``timezone`` trait when it names a real zone, else the workspace default."""
    if wanted != "customer":
        return zone(wanted)
    if isinstance(customer_zone, str) and customer_zone:
        try:
            return zone(customer_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    return zone(default)


def _on(year: int, month: int, day: int) -> date:
    """The date in ``year``; 29 February falls on the 28th in other years."""
    if month == 2 and day == 29:
        try:
            return date(year, 2, 29)
        except ValueError:
            return date(year, 2, 28)
    return date(year, month, day)


def next_date_trait(
    now: datetime,
    value: Any,
    *,
    offset: timedelta,
    at: time,
    tz: zoneinfo.ZoneInfo,
    yearly: bool,
    after: datetime | None = None,
) -> datetime | None:
    """When a date trait comes round: local ``at`` on the date (each year, if ``yearly``) shifted
    by ``offset``, the first such instant after ``after`` (default ``now``). None when the trait
    is not a date, or (not yearly) when the date has passed."""
    parsed = parse_date_trait(value)
    if parsed is None:
        return None
    year, month, day = parsed
    floor = after if after is not None else now

    def instant(year: int) -> datetime | None:
        """Local ``at`` on the date in ``year`` shifted by ``offset``; None beyond the years
        Python counts (1 to 9999): ``0001-01-01`` a day earlier, ``9999-12-31`` a day later."""
        try:
            return at_local(_on(year, month, day) + offset, at, tz)
        except OverflowError:
            return None

    if not yearly:
        once = instant(year) if year is not None else None
        return once if once is not None and once > floor else None
    if year is not None:
        first = instant(year)
        if first is not None and first > floor:
            return first  # a date still ahead (a renewal next year) comes on its own date
    local_year = floor.astimezone(tz).year
    for candidate_year in range(local_year - 1, local_year + 3):
        candidate = instant(candidate_year)
        if candidate is not None and candidate > floor:
            return candidate
    return None  # pragma: no cover - some year within three always comes after


__all__ = [
    "WEEKDAYS",
    "at_local",
    "next_date_trait",
    "next_time_of_day",
    "parse_date_trait",
    "resolve_zone",
    "window_opens",
    "zone",
]
