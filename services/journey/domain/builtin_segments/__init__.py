"""The segments every workspace starts with, one JSON file per segment named ``<id>.json``.

They are data rather than code so that a shop can read them, copy one and change a number; the
documentation explains the reasoning behind each rule.

``examples/`` holds segments that are documented but not built in, because every workspace would
pay for them whether it uses them or not: ``viewed_product_3x_7d`` counts every product view in
a window, which took about a third of the CPU that upkeep adds in the benchmark's stream
(docs/customers.md, "Built-in segments"). A workspace that wants one adds it with
``PUT /v1/segments/<id>``.
"""

from __future__ import annotations

import json
from importlib import resources
from importlib.resources.abc import Traversable

from services.journey.domain.segments import InvalidSegment, SegmentDefinition, parse_segment


def load() -> list[SegmentDefinition]:
    """The built-in segments in id order. A broken file is a packaging mistake, not user input:
    it raises ValueError naming the file."""
    return _read(resources.files(__name__), "built-in segment")


def examples() -> list[SegmentDefinition]:
    """The documented example segments (``examples/``), in id order; not built in."""
    return _read(resources.files(__name__).joinpath("examples"), "example segment")


def _read(folder: Traversable, what: str) -> list[SegmentDefinition]:
    found = []
    for entry in sorted(folder.iterdir(), key=lambda entry: entry.name):
        if not entry.name.endswith(".json"):
            continue
        try:
            definition = parse_segment(json.loads(entry.read_text(encoding="utf-8")))
        except (InvalidSegment, json.JSONDecodeError) as exc:
            raise ValueError(f"{what} {entry.name}: {exc}") from exc
        if entry.name != f"{definition.id}.json":
            raise ValueError(f"{what} {entry.name} has id {definition.id!r}")
        found.append(definition)
    return found
