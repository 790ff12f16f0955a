"""Loading journey definitions from JSON files (journeys/*.json, reviewed in git)."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from services.journey.domain.catalog import JourneyCatalog
from services.journey.domain.definitions import Journey
from services.journey.errors import InvalidJourney


def load_journey(path: Path) -> Journey:
    try:
        return Journey.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '$'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidJourney(f"{path}: {problems}") from exc


def load_catalog(folder: Path) -> JourneyCatalog:
    if not folder.is_dir():
        return JourneyCatalog()
    return JourneyCatalog(load_journey(p) for p in sorted(folder.glob("*.json")))
