"""The predicate language shared by triggers, branches, exit conditions and segments.

A condition is one of::

    {"all": [c, ...]}   every condition holds (an empty list is refused: it would mean "always")
    {"any": [c, ...]}   at least one holds
    {"not": c}          c does not hold
    {"field": "event.properties.total", "op": "gte", "value": 50}

``evaluate(condition, context)`` is pure: the context is a plain mapping (for journeys
``{"event": {...}, "customer": {...}}``), and a dotted ``field`` walks into it. Comparisons are
typed: a number never equals a boolean or a word (a decimal string such as "63.90", the way
money travels, compares as its number), and an ordering between values of different
kinds (or against a missing field) is false rather than an error, so one odd event cannot stop a
journey.

Two comparisons are relative to ``context["now"]`` (an RFC 3339 string or a datetime):
``{"field": "profile.last_order_at", "op": "older_than", "value": "P90D"}`` holds once the
instant in the field is at least 90 days before now, and ``within`` is its opposite (less than
90 days ago, or in the future). A missing or unreadable instant makes both false: a customer who
never ordered has no order "older than 90 days"; say ``exists: false`` to mean that. As time
passes such a comparison flips on its own at the field's instant plus the duration;
``next_change_at`` finds the first such instant at which the whole condition changes, so that a
caller can set a timer for it instead of polling.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    Tag,
    ValidationInfo,
    field_validator,
)

from services.journey.domain.durations import DurationError, parse_duration

Op = Literal[
    "eq", "ne", "gt", "gte", "lt", "lte", "in", "contains", "exists", "older_than", "within"
]
TIME_OPS = frozenset({"older_than", "within"})
"""Comparisons of an instant with ``context["now"]``: their value changes as time passes."""
FIELD_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_-]+)*$"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Comparison(_Frozen):
    """Compare the value at a dotted path of the context with a literal."""

    field: str = Field(
        pattern=FIELD_PATTERN, description="Dotted path, e.g. event.properties.total"
    )
    op: Op
    value: JsonValue = Field(
        None,
        validate_default=True,
        description="Literal to compare with; a list for 'in'; true/false for 'exists'; an "
        "ISO-8601 duration for 'older_than' and 'within'.",
    )

    @field_validator("value")
    @classmethod
    def _check_value(cls, value: JsonValue, info: ValidationInfo) -> JsonValue:
        # Checked here, once, so that evaluation never meets a comparison it cannot make sense
        # of; on the field, so that an error points at the value rather than the comparison.
        op = info.data.get("op")
        if op is None:
            return value  # the op itself was refused, and that error says why
        problem = _value_problem(op, value)
        if problem:
            raise ValueError(problem)
        return value


def _value_problem(op: Op, value: JsonValue) -> str | None:
    if op in TIME_OPS:
        return _duration_problem(op, value)
    if op in ("gt", "gte", "lt", "lte") and not (_is_number(value) or isinstance(value, str)):
        return f"'{op}' compares with a number or a string"
    if op == "in" and (not isinstance(value, list) or not value):
        return "'in' takes a non-empty list of values"
    if op == "contains" and (isinstance(value, list | dict) or value is None):
        return "'contains' takes a string, number or boolean"
    if op == "exists" and value is not None and not isinstance(value, bool):
        return "'exists' takes true or false (or no value, meaning true)"
    return None


def _duration_problem(op: Op, value: JsonValue) -> str | None:
    if not isinstance(value, str):
        return f"'{op}' takes a duration such as 'P90D'"
    try:
        length = _duration(value)
    except DurationError as exc:
        return str(exc)
    if length <= timedelta(0):
        return f"'{op}' takes a duration longer than zero, got {value!r}"
    return None


@lru_cache(maxsize=1024)
def _duration(text: str) -> timedelta:
    # Conditions are evaluated far more often than they are written: parse each text once.
    return parse_duration(text)


class All(_Frozen):
    all: list[Condition] = Field(min_length=1)


class AnyOf(_Frozen):
    any: list[Condition] = Field(min_length=1)


class Not(_Frozen):
    not_: Condition = Field(alias="not")


def _condition_kind(value: Any) -> str | None:
    # Tags start with "~" so that error paths can drop them (no JSON key here starts with one).
    for key, kind in (("all", "~all"), ("any", "~any"), ("not_", "~not"), ("field", "~compare")):
        name = "not" if key == "not_" else key
        if (name in value) if isinstance(value, dict) else hasattr(value, key):
            return kind
    return None


Condition = Annotated[
    Annotated[Comparison, Tag("~compare")]
    | Annotated[All, Tag("~all")]
    | Annotated[AnyOf, Tag("~any")]
    | Annotated[Not, Tag("~not")],
    Discriminator(
        _condition_kind,
        custom_error_type="unknown_condition",
        custom_error_message="a condition needs one of: all, any, not, field",
    ),
]

All.model_rebuild()
AnyOf.model_rebuild()
Not.model_rebuild()


_MISSING: Any = object()


class Layered(Mapping[str, Any]):
    """``top``'s names over ``base``'s, without copying either (``base`` may compute its values
    when read): how a segment or journey adds ``now`` and its own names to a shared context."""

    __slots__ = ("_base", "_top")

    def __init__(self, top: Mapping[str, Any], base: Mapping[str, Any]) -> None:
        self._top = top
        self._base = base

    def __getitem__(self, key: str) -> Any:
        top = self._top
        if key in top:
            return top[key]
        return self._base[key]

    def __contains__(self, key: object) -> bool:
        return key in self._top or key in self._base

    def get(self, key: str, default: Any = None) -> Any:
        """``self[key]``, or ``default`` when absent: one lookup per layer (compiled
        conditions read through this)."""
        top = self._top
        if key in top:
            return top[key]
        return self._base.get(key, default)

    def __iter__(self) -> Iterator[str]:
        yield from self._top
        yield from (k for k in self._base if k not in self._top)

    def __len__(self) -> int:
        return len(set(self._top) | set(self._base))


def resolve(context: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path, or ``_MISSING`` when any part of the path is absent."""
    current: Any = context
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return _MISSING
        current = current[part]
    return current


def evaluate(condition: Condition, context: Mapping[str, Any]) -> bool:
    """Whether ``condition`` holds for ``context``; pure and total (never raises on data)."""
    if isinstance(condition, All):
        return all(evaluate(c, context) for c in condition.all)
    if isinstance(condition, AnyOf):
        return any(evaluate(c, context) for c in condition.any)
    if isinstance(condition, Not):
        return not evaluate(condition.not_, context)
    if condition.op in TIME_OPS:
        return _relative(condition, resolve(context, condition.field), resolve(context, "now"))
    return _compare(condition, resolve(context, condition.field))


Predicate = Callable[[Mapping[str, Any]], bool]
"""A compiled condition: called with a context, it answers as ``evaluate`` would."""


def compile_condition(condition: Condition) -> Predicate:
    """``condition`` as a function of the context that answers exactly as ``evaluate`` does.

    Segment tests and score rules are evaluated for every event of every customer, always the
    same few conditions: compiling walks the tree, splits the dotted fields and picks each
    comparison's code once, where ``evaluate`` does all of that on every call. The caller keeps
    the function with the condition it compiled (a definition's cached property)."""
    if isinstance(condition, All):
        return _every(tuple(compile_condition(c) for c in condition.all))
    if isinstance(condition, AnyOf):
        return _some(tuple(compile_condition(c) for c in condition.any))
    if isinstance(condition, Not):
        inner = compile_condition(condition.not_)
        return lambda context: not inner(context)
    return _compiled_comparison(condition)


def _every(parts: tuple[Predicate, ...]) -> Predicate:
    if len(parts) == 1:
        return parts[0]

    # Loops rather than all()/any() over a generator: no generator object per call.
    def every(context: Mapping[str, Any]) -> bool:
        for part in parts:  # noqa: SIM110
            if not part(context):
                return False
        return True

    return every


def _some(parts: tuple[Predicate, ...]) -> Predicate:
    if len(parts) == 1:
        return parts[0]

    def some(context: Mapping[str, Any]) -> bool:
        for part in parts:  # noqa: SIM110 (see _every)
            if part(context):
                return True
        return False

    return some


_READ_BY_GET: set[type] = {dict, Layered}
"""Mapping types whose ``get(key, default)`` answers as ``key in m`` then ``m[key]`` would:
compiled conditions read them with one call, without the ``Mapping`` check (an ABC check)."""

M = TypeVar("M", bound=type[Mapping[str, Any]])


def read_by_get(cls: M) -> M:
    """Class decorator: compiled conditions may read this mapping type through its ``get``
    (which must answer as ``key in m`` then ``m[key]`` would)."""
    _READ_BY_GET.add(cls)
    return cls


def reader(path: str) -> Callable[[Mapping[str, Any]], Any]:
    """``resolve`` of one path, with the path split once."""
    parts = tuple(path.split("."))
    by_get = _READ_BY_GET

    def read(context: Mapping[str, Any]) -> Any:
        current: Any = context
        for part in parts:
            if type(current) in by_get:
                current = current.get(part, _MISSING)
                if current is _MISSING:
                    return _MISSING
            elif isinstance(current, Mapping) and part in current:
                current = current[part]
            else:
                return _MISSING
        return current

    return read


_PLAIN_NUMBERS = (int, float)
"""The types (exactly, not subclasses: bool is an int) whose comparison needs no conversion."""


def _compiled_comparison(c: Comparison) -> Predicate:
    read = reader(c.field)
    op, expected = c.op, c.value
    if op in TIME_OPS:
        read_now = reader("now")
        return lambda context: _relative(c, read(context), read_now(context))
    if op == "eq":

        def equal(context: Mapping[str, Any]) -> bool:
            actual = read(context)
            if type(actual) is type(expected):  # neither converts: the same as ``_equal``
                return bool(actual == expected)
            return _compare(c, actual)

        return equal
    if op in ("gt", "gte", "lt", "lte") and type(expected) in _PLAIN_NUMBERS:
        compare = _ORDERINGS[op]

        def order(context: Mapping[str, Any]) -> bool:
            actual = read(context)
            if type(actual) in _PLAIN_NUMBERS:  # a number with a number: no conversion
                return bool(compare(actual, expected))
            return _compare(c, actual)

        return order
    return lambda context: _compare(c, read(context))


_ORDERINGS: dict[str, Callable[[Any, Any], Any]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


@lru_cache(maxsize=16_384)
def utc_text(at: datetime) -> str:
    """An instant as RFC 3339 text in UTC, ``Z`` for the offset ("2026-11-02T09:00:01.500000Z",
    "2026-11-02T09:00:00Z"), as customer facts store instants and conditions compare them.

    Formatted by orjson (its RFC 3339 form of a UTC datetime is ``isoformat``'s, with ``Z``):
    a third of the time of ``isoformat`` and a replace, and customer facts format an instant
    for every event (the timeline) and every saved score rule and segment membership."""
    utc = at if at.tzinfo is UTC else at.astimezone(UTC)
    return orjson.dumps(utc, option=orjson.OPT_UTC_Z)[1:-1].decode()


def utc_instant(text: str) -> datetime:
    """``utc_text`` read back: the instant of an RFC 3339 text with its zone, in UTC; ValueError
    for a text without a zone (stored facts always carry one)."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"instant without a zone: {text!r}")
    return value.astimezone(UTC)


def as_instant(value: Any) -> datetime | None:
    """An instant from a datetime or an ISO 8601 text ("2024-05-01T09:00:00Z", or a bare date,
    read as midnight UTC); None for anything else. A time without offset is taken as UTC."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    elif isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _relative(c: Comparison, actual: Any, now: Any) -> bool:
    at, current = as_instant(actual), as_instant(now)
    if at is None or current is None:
        return False
    age, limit = current - at, _duration(str(c.value))
    # The boundary belongs to older_than: "no order in 90 days" holds from the 90th day on.
    return age >= limit if c.op == "older_than" else age < limit


def _comparisons(condition: Condition) -> Iterator[Comparison]:
    if isinstance(condition, All | AnyOf):
        for child in condition.all if isinstance(condition, All) else condition.any:
            yield from _comparisons(child)
    elif isinstance(condition, Not):
        yield from _comparisons(condition.not_)
    else:
        yield condition


def comparisons(condition: Condition) -> list[Comparison]:
    """Every comparison in the condition, depth first (what checks of a document walk)."""
    return list(_comparisons(condition))


def boundaries(condition: Condition, context: Mapping[str, Any]) -> set[datetime]:
    """The instants at which a time-relative comparison of the condition flips: the instant in
    its field plus its duration. Only there can the condition change without new input."""
    found = set()
    for c in _comparisons(condition):
        if c.op not in TIME_OPS:
            continue
        at = as_instant(resolve(context, c.field))
        if at is None:
            continue
        try:
            found.add(at + _duration(str(c.value)))
        except OverflowError:  # an instant near year 9999: it never comes
            continue
    return found


def boundary_finder(condition: Condition) -> Callable[[Mapping[str, Any]], set[datetime]]:
    """``boundaries`` of one condition, compiled as ``compile_condition`` compiles it."""
    found = tuple(
        (reader(c.field), _duration(str(c.value)))
        for c in _comparisons(condition)
        if c.op in TIME_OPS
    )

    def find(context: Mapping[str, Any]) -> set[datetime]:
        out = set()
        for read, length in found:
            at = as_instant(read(context))
            if at is None:
                continue
            try:
                out.add(at + length)
            except OverflowError:  # an instant near year 9999: it never comes
                continue
        return out

    return find


def next_change_at(
    condition: Condition, context: Mapping[str, Any], now: datetime
) -> datetime | None:
    """The earliest instant after ``now`` at which the condition's value changes with no new
    input, or None when it never does (no time-relative comparison, or none that matters).

    Only the boundaries can change the value, so the first boundary at which the condition
    evaluates differently from ``now`` is the answer: a boundary that changes nothing (inside an
    ``all`` that something else keeps false) asks for no timer. ``now`` stands in for
    ``context["now"]``.
    """
    current = as_instant(now)
    if current is None:
        raise TypeError("now must be a datetime")
    later = sorted(b for b in boundaries(condition, context) if b > current)
    if not later:
        return None
    holds = evaluate(condition, {**context, "now": current})
    for at in later:
        if evaluate(condition, {**context, "now": at}) != holds:
            return at
    return None


def _compare(c: Comparison, actual: Any) -> bool:
    expected = c.value
    if c.op == "exists":
        present = actual is not _MISSING and actual is not None
        return present if expected is None or expected is True else not present
    if c.op == "ne":
        return not _equal(actual, expected)
    if actual is _MISSING:
        return False
    if c.op == "eq":
        return _equal(actual, expected)
    if c.op == "in":
        return isinstance(expected, list) and any(_equal(actual, v) for v in expected)
    if c.op == "contains":
        if isinstance(actual, str):
            return isinstance(expected, str) and expected in actual
        if isinstance(actual, list):
            return any(_equal(item, expected) for item in actual)
        return False
    return _order(c.op, actual, expected)


_DECIMAL = re.compile(r"^-?\d+(\.\d+)?$")


def _numeric(actual: Any, expected: Any) -> Any:
    """Money travels as decimal strings ("63.90"); compared with a number, such a string is
    read as the number it writes, so ``total gte 50`` holds for an order of "63.90"."""
    if isinstance(actual, str) and _is_number(expected) and _DECIMAL.fullmatch(actual):
        return Decimal(actual), Decimal(str(expected))
    return actual, expected


def _order(op: str, actual: Any, expected: Any) -> bool:
    actual, expected = _numeric(actual, expected)
    # Strings order lexicographically, which is also the order of RFC 3339 timestamps in UTC.
    comparable = (_is_number(actual) and _is_number(expected)) or (
        isinstance(actual, str) and isinstance(expected, str)
    )
    if not comparable:
        return False
    if op == "gt":
        return bool(actual > expected)
    if op == "gte":
        return bool(actual >= expected)
    if op == "lt":
        return bool(actual < expected)
    return bool(actual <= expected)


def _is_number(value: object) -> bool:
    # bool is an int in Python but not a number in JSON.
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _equal(a: Any, b: Any) -> bool:
    if a is _MISSING:
        return False
    a, b = _numeric(a, b)
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    return type(a) is type(b) and bool(a == b)
