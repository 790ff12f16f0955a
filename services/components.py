"""The migration chains of Ciclo: tenancy plus one per service."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from shared.db.migrate import Component

ServiceName = Literal["ingest", "journey", "dispatch"]
ALL: tuple[ServiceName, ...] = ("ingest", "journey", "dispatch")
_ROOT = Path(__file__).resolve().parent

COMPONENTS = {
    "tenancy": Component("tenancy", _ROOT.parent / "shared" / "tenancy" / "migrations"),
    "ingest": Component("ingest", _ROOT / "ingest" / "migrations"),
    "journey": Component("journey", _ROOT / "journey" / "migrations"),
    "dispatch": Component("dispatch", _ROOT / "dispatch" / "migrations"),
}


def components_for(services: Sequence[ServiceName]) -> list[Component]:
    """Tenancy (every HTTP service authenticates) plus the given services' chains."""
    return [COMPONENTS["tenancy"], *(COMPONENTS[s] for s in services)]
