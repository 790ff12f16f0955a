"""Settings of the ingest service."""

from __future__ import annotations

from pydantic import Field

from shared.settings import CommonSettings


class IngestSettings(CommonSettings):
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest accepted request body, in bytes."
    )
