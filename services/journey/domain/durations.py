"""Time values of the journey language: ISO-8601 durations and time zones.

Durations are written ``PnW``, ``PnDTnHnMnS`` (seconds may have a fraction) with an optional
leading ``-`` for offsets before a date. Years and months are refused: they have no fixed length,
so "P1M" would mean a different wait in February than in March.
"""

from __future__ import annotations

import re
import zoneinfo
from datetime import time, timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema
from pydantic_core import PydanticCustomError

_DURATION = re.compile(
    r"(?P<sign>-)?P"
    r"(?:(?P<weeks>[0-9]+)W)?"
    r"(?:(?P<days>[0-9]+)D)?"
    r"(?:T(?:(?P<hours>[0-9]+)H)?(?:(?P<minutes>[0-9]+)M)?(?:(?P<seconds>[0-9]+(?:\.[0-9]+)?)S)?)?"
)
"""Matched whole (``fullmatch``), ASCII digits only: ``$`` would let a trailing newline in and
``\\d`` every Unicode digit, which the JSON Schema's pattern (ECMA-262) refuses."""
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
    match = _DURATION.fullmatch(text)
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
    clock = "".join(
        f"{int(n) if unit != 'S' else _seconds(n)}{unit}"
        for n, unit in ((hours, "H"), (minutes, "M"), (seconds, "S"))
        if n
    )
    text = f"{days}D" if days else ""
    if clock:
        text += f"T{clock}"
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


def known_zone(value: str, *, instead: str) -> str:
    """``value`` when zoneinfo knows the zone; otherwise the validation error naming it and
    saying what to use ``instead``. The journey language and the workspace settings share it."""
    try:
        zoneinfo.ZoneInfo(value)
    except Exception as exc:  # not found, malformed, a path: all mean "no such zone"
        raise PydanticCustomError(
            "time_zone",
            "unknown time zone {zone}: use {instead}",
            # pydantic fills {name} in without conversions such as !r
            {"zone": repr(value), "instead": instead},
        ) from exc
    return value


def _time_zone(value: Any) -> str:
    if value == "customer":
        return "customer"
    if not isinstance(value, str):
        raise PydanticCustomError("time_zone", "a time zone is 'customer' or an IANA name")
    return known_zone(value, instead="'customer' or an IANA name such as 'Europe/Madrid'")


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


_LOCAL_TIME = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9]))?")
LOCAL_TIME_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$"


def _local_time(value: Any) -> time:
    if isinstance(value, time) and value.tzinfo is None:
        return value
    match = _LOCAL_TIME.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise PydanticCustomError(
            "local_time",
            "a local time of day is 'HH:MM' or 'HH:MM:SS' (e.g. '09:00'), with no offset: "
            "'timezone' says whose clock it is, got {value}",
            {"value": repr(value)},
        )
    hour, minute, second = match.groups()
    return time(int(hour), int(minute), int(second or 0))


LocalTime = Annotated[
    time,
    BeforeValidator(_local_time),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": LOCAL_TIME_PATTERN,
            "description": "Local time of day, 'HH:MM' or 'HH:MM:SS', in the step's 'timezone'.",
            "examples": ["09:00"],
        }
    ),
]
"""A time of day on a local clock (a send window's ends, a wait's ``until``): no offset, which
would contradict the ``timezone`` beside it (and cannot be compared with a local time)."""
