"""Loading journey definitions from JSON files (journeys/*.json, reviewed in git).

A file is checked against the language exactly as ``ciclo journeys validate`` checks it (so its
errors read the same), and refused at load, with every problem and its JSON path, when it has
any. Template ids are not checked at load; ``ciclo journeys validate`` checks them against the
templates folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.journey.domain.catalog import JourneyCatalog
from services.journey.domain.definitions import Journey
from services.journey.domain.validation import Problem, loads_document, validate_journey
from services.journey.errors import InvalidJourney


def read_document(path: Path) -> Any:
    """The parsed JSON of a file; InvalidJourney when it cannot be read or parsed."""
    try:
        return loads_document(path.read_bytes())
    except OSError as exc:
        raise InvalidJourney(f"{path}: cannot read: {exc.strerror}") from exc
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise InvalidJourney(f"{path}: $: not valid JSON: {exc}") from exc


def check_document(document: Any, *, templates: set[str] | None = None) -> list[Problem]:
    """Every problem of a parsed document against the language."""
    if not isinstance(document, dict):
        return [Problem("$", "a journey is a JSON object")]
    return validate_journey(document, templates=templates)


def template_ids(folder: Path) -> set[str]:
    """Template ids available: the names of the folders under the templates directory."""
    if not folder.is_dir():
        return set()
    return {p.name for p in folder.iterdir() if p.is_dir()}


def load_journey(path: Path) -> Journey:
    document = read_document(path)
    problems = check_document(document)
    if not problems:
        return Journey.model_validate(document)
    raise InvalidJourney(f"{path}: " + "; ".join(str(p) for p in problems))


def load_catalog(folder: Path) -> JourneyCatalog:
    if not folder.is_dir():
        return JourneyCatalog()
    return JourneyCatalog(load_journey(p) for p in sorted(folder.glob("*.json")))
