"""The configuration table (docs/configuration.md) generated from the settings classes, so the
documentation cannot drift from the code."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings

from services.dispatch.settings import DispatchSettings
from services.ingest.settings import IngestSettings
from services.journey.settings import JourneySettings
from shared.settings import CommonSettings, ServerSettings

SECTIONS: list[tuple[str, type[BaseSettings]]] = [
    ("Common (every service)", CommonSettings),
    ("Server (every process)", ServerSettings),
    ("Ingest", IngestSettings),
    ("Journey", JourneySettings),
    ("Dispatch", DispatchSettings),
]


def _default(value: object) -> str:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value == "" or value is None:
        return "(empty)"
    if isinstance(value, bool):
        return str(value).lower()
    return f"`{value}`"


def markdown() -> str:
    lines: list[str] = []
    seen: set[str] = set()
    for title, cls in SECTIONS:
        rows = []
        for name, info in cls.model_fields.items():
            if name in seen:
                continue
            seen.add(name)
            rows.append(
                f"| `CICLO_{name.upper()}` | {_default(info.default)} | {info.description or ''} |"
            )
        if rows:
            lines += [
                f"### {title}",
                "",
                "| Variable | Default | Meaning |",
                "|---|---|---|",
                *rows,
                "",
            ]
    return "\n".join(lines)
