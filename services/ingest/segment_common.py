"""What every Segment message shares, whatever its type: the primitives of the mapping.

:class:`Problem` and :class:`Rejected` (a message that cannot become a native event, naming the
Segment field at fault), :class:`Native` (the event under construction and where each field came
from), the :data:`Builder` signature every type- or event-specific mapping has, and the small
coercions used throughout: identifiers, JSON objects, money, event names. Pure functions, no I/O;
imports nothing else from the Segment mapping, so both :mod:`services.ingest.segment_mapping` and
:mod:`services.ingest.segment_commerce` can build on it.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

# The catalogue types money as Decimal with at most 6 places; Segment sends JSON numbers, and a
# float computed in a browser (0.1 + 0.2) would otherwise be rejected for its 17th decimal.
_MONEY_PLACES = Decimal("0.000001")
_MONEY = ("total", "subtotal", "shipping", "tax", "discount", "price")


@dataclass(frozen=True, slots=True)
class Problem:
    field: str
    message: str


class Rejected(ValueError):
    """A message that cannot become a native event; each problem names a Segment field."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))
        self.problems = problems


def _reject(where: str, message: str) -> Rejected:
    return Rejected([Problem(where, message)])


@dataclass(slots=True)
class Native:
    """A native event under construction, and the Segment field each native field came from."""

    event: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(
        default_factory=lambda: {
            "customer_id": "userId",
            "anonymous_id": "anonymousId",
            "event_id": "messageId",
            "occurred_at": "timestamp",
        }
    )

    def segment_field(self, native_field: str) -> str:
        """``properties.items.0.price`` → ``properties.products.0.price`` (longest known prefix)."""
        parts = native_field.split(".")
        for end in range(len(parts), 0, -1):
            origin = self.origins.get(".".join(parts[:end]))
            if origin is not None:
                return ".".join([origin, *parts[end:]])
        return native_field


Builder = Callable[[dict[str, Any], "Native"], None]


# Latin letters Unicode does not decompose into an ASCII letter and an accent.
_LATIN = str.maketrans(
    {
        **{"ß": "ss", "ẞ": "SS", "æ": "ae", "Æ": "Ae", "œ": "oe", "Œ": "Oe", "ø": "o", "Ø": "O"},
        **{"đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "ł": "l", "Ł": "L", "þ": "th", "Þ": "Th"},
        "\u0131": "i",  # dotless i
    }
)


def _ascii(name: str) -> str:
    return unicodedata.normalize("NFKD", name.translate(_LATIN)).encode("ascii", "ignore").decode()


def foreign_letters(name: str) -> str:
    """The letters and digits of ``name`` with no ASCII form (``注文完了``, ``Покупка``), which
    :func:`snake_case` would drop: ``Покупка 2`` would become ``2``, as would ``Возврат 2``."""
    return "".join(
        char
        for char in name.translate(_LATIN)
        if unicodedata.category(char)[0] in "LN" and not _ascii(char).isalnum()
    )


def snake_case(name: str) -> str:
    """``Coupon Applied`` → ``coupon_applied``, ``addToCart`` → ``add_to_cart``, ``Café`` →
    ``cafe``, ``Größe`` → ``grosse``. Letters and digits with no ASCII form are dropped (see
    :func:`foreign_letters`); empty when nothing is left."""
    ascii_name = _ascii(name)
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", ascii_name)
    words = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", words)
    return re.sub(r"[^A-Za-z0-9]+", "_", words).strip("_").lower()


def _identifier(value: Any, where: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    # Segment accepts numeric ids (its libraries stringify them); a bool is never an id.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise _reject(where, "must be a string")


def _object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _reject(where, "must be a JSON object")
    return dict(value)


def _money(value: Any) -> Any:
    if not isinstance(value, float) or not math.isfinite(value):
        return value  # strings, ints and nonsense are the catalogue's to judge
    amount = Decimal(repr(value))
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -6:
        amount = Decimal(format(amount.quantize(_MONEY_PLACES), "f").rstrip("0").rstrip("."))
    return amount


def _round_money(props: dict[str, Any]) -> None:
    for name in _MONEY:
        if name in props:
            props[name] = _money(props[name])
