"""The predicate language shared by triggers, branches, exit conditions and (later) segments.

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
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    Tag,
    model_validator,
)

Op = Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "contains", "exists"]
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
        None, description="Literal to compare with; a list for 'in'; true/false for 'exists'."
    )

    @model_validator(mode="after")
    def _check_value(self) -> Comparison:
        # Checked here, once, so that evaluation never meets a comparison it cannot make sense of.
        problem = _value_problem(self.op, self.value)
        if problem:
            raise ValueError(problem)
        return self


def _value_problem(op: Op, value: JsonValue) -> str | None:
    if op in ("gt", "gte", "lt", "lte") and not (_is_number(value) or isinstance(value, str)):
        return f"'{op}' compares with a number or a string"
    if op == "in" and (not isinstance(value, list) or not value):
        return "'in' takes a non-empty list of values"
    if op == "contains" and (isinstance(value, list | dict) or value is None):
        return "'contains' takes a string, number or boolean"
    if op == "exists" and value is not None and not isinstance(value, bool):
        return "'exists' takes true or false (or no value, meaning true)"
    return None


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
    return _compare(condition, resolve(context, condition.field))


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
    if isinstance(actual, str) and _is_number(expected) and _DECIMAL.match(actual):
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
