"""Small Markdown helpers shared by the renderers of ``bench/results.md``."""

from __future__ import annotations

import math
from typing import Any


def number(value: float | None, digits: int = 0) -> str:
    """``1,234`` (or ``—`` when there is no figure)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def met(flag: Any) -> str:
    """'**yes**', '**no**', or '—' when nothing was measured."""
    if flag is None:
        return "—"
    return "**yes**" if flag else "**no**"
