"""The segments every workspace starts with, one JSON file per segment named ``<id>.json``.

They are data rather than code so that a shop can read them, copy one and change a number; the
documentation explains the reasoning behind each rule.
"""

from __future__ import annotations

import json
from importlib import resources

from services.journey.domain.segments import InvalidSegment, SegmentDefinition, parse_segment


def load() -> list[SegmentDefinition]:
    """The built-in segments in id order. A broken file is a packaging mistake, not user input:
    it raises ValueError naming the file."""
    found = []
    files = sorted(resources.files(__name__).iterdir(), key=lambda entry: entry.name)
    for entry in files:
        if not entry.name.endswith(".json"):
            continue
        try:
            definition = parse_segment(json.loads(entry.read_text(encoding="utf-8")))
        except (InvalidSegment, json.JSONDecodeError) as exc:
            raise ValueError(f"built-in segment {entry.name}: {exc}") from exc
        if entry.name != f"{definition.id}.json":
            raise ValueError(f"built-in segment {entry.name} has id {definition.id!r}")
        found.append(definition)
    return found
