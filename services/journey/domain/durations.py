"""Time values of the journey language: ISO-8601 durations and time zones.

Durations are written ``PnW``, ``PnDTnHnMnS`` (seconds may have a fraction) with an optional
leading ``-`` for offsets before a date. Years and months are refused: they have no fixed length,
so "P1M" would mean a different wait in February than in March.
"""

from __future__ import annotations

import re
import zoneinfo
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema
from pydantic_core import PydanticCustomError

_DURATION = re.compile(
    r"^(?P<sign>-)?P"
    r"(?:(?P<weeks>\d+)W)?"
    r"(?:(?P<days>\d+)D)?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)
DURATION_PATTERN = r"^-?P(\d+W)?(\d+D)?(T(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$"


LONGEST = timedelta(days=36_525)
"""No wait, window or offset is longer than a century; longer is a typo."""


class DurationError(ValueError):
    """A text is not an ISO-8601 duration this language accepts."""


def _reason(text: str) -> str:
    body = text.lstrip("-")
    if not body.startswith("P"):
        return "a duration starts with 'P', e.g. 'P3D' or 'PT2H'"
    if re.search(r"\d+Y", body) or re.search(r"^P[^T]*\d+M", body):
        return "years and months have no fixed length; use weeks or days (P4W, P30D)"
    if body in ("P", "PT") or body.endswith("T"):
        return "no amount given, e.g. 'P3D' or 'PT2H'"
    return "expected PnW, PnD or PnDTnHnMnS (e.g. 'P3D', 'PT2H30M', 'P1DT12H')"


def parse_duration(text: str) -> timedelta:
    """Parse an ISO-8601 duration such as ``P3D``, ``PT2H30M``, ``P2W`` or ``-P1D``."""
    match = _DURATION.match(text)
    if match is None or text.lstrip("-") in ("P", "PT") or text.endswith("T"):
        raise DurationError(f"bad duration {text!r}: {_reason(text)}")
    parts = match.groupdict()
    try:
        value = timedelta(
            weeks=int(parts["weeks"] or 0),
            days=int(parts["days"] or 0),
            hours=int(parts["hours"] or 0),
            minutes=int(parts["minutes"] or 0),
            seconds=float(parts["seconds"] or 0),
        )
    except OverflowError:
        value = LONGEST + LONGEST  # caught just below
    if value > LONGEST:
        raise DurationError(f"bad duration {text!r}: longer than 100 years")
    return -value if parts["sign"] else value


def format_duration(value: timedelta) -> str:
    """The canonical text of a duration (days and a time part), the inverse of parse_duration."""
    sign = "-" if value < timedelta(0) else ""
    value = abs(value)
    days, rest = value.days, value - timedelta(days=value.days)
    hours, rest_s = divmod(rest.total_seconds(), 3600)
    minutes, seconds = divmod(rest_s, 60)
    time = "".join(
        f"{int(n) if unit != 'S' else _seconds(n)}{unit}"
        for n, unit in ((hours, "H"), (minutes, "M"), (seconds, "S"))
        if n
    )
    text = f"{days}D" if days else ""
    if time:
        text += f"T{time}"
    return f"{sign}P{text or '0D'}"


def _seconds(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("duration", "a duration is a string such as 'P3D'")
    try:
        return parse_duration(value)
    except DurationError as exc:
        # A custom error keeps the message as written ("bad duration 'P3X': …") rather than
        # pydantic's "Value error, …" prefix.
        raise PydanticCustomError("duration", str(exc)) from exc


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise PydanticCustomError(
            "duration", "must be longer than zero, got {text}", {"text": format_duration(value)}
        )
    return value


_SCHEMA = WithJsonSchema(
    {
        "type": "string",
        "pattern": DURATION_PATTERN,
        "description": "ISO-8601 duration: PnW or PnDTnHnMnS, e.g. P3D, PT2H30M.",
    }
)
_SERIALIZE = PlainSerializer(format_duration, return_type=str)

Offset = Annotated[timedelta, BeforeValidator(_duration), _SERIALIZE, _SCHEMA]
"""A signed duration (``-P1D`` is a day before)."""

Duration = Annotated[
    timedelta, BeforeValidator(_positive), BeforeValidator(_duration), _SERIALIZE, _SCHEMA
]
"""A duration longer than zero (waits, timeouts, windows)."""


def _time_zone(value: Any) -> str:
    if value == "customer":
        return "customer"
    if not isinstance(value, str):
        raise PydanticCustomError("time_zone", "a time zone is 'customer' or an IANA name")
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise PydanticCustomError(
            "time_zone",
            "unknown time zone {zone!r}: use 'customer' or an IANA name such as 'Europe/Madrid'",
            {"zone": value},
        ) from exc
    return value


TimeZone = Annotated[
    str,
    BeforeValidator(_time_zone),
    WithJsonSchema(
        {
            "type": "string",
            "description": "'customer' (the customer's own time zone) or an IANA name.",
            "examples": ["customer", "Europe/Madrid"],
        }
    ),
]
