"""Settings of the journey service."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from shared.settings import CommonSettings


class JourneySettings(CommonSettings):
    journeys_dir: Path = Field(
        Path("journeys"), description="Folder of journey JSON files loaded at start."
    )
    journey_batch_size: int = Field(
        500, ge=1, le=10_000, description="Events consumed and committed per transaction."
    )
    journey_poll_timeout: float = Field(
        0.5, gt=0, description="Seconds a poll waits for the first record."
    )
    journey_max_attempts: int = Field(
        5, ge=1, description="Tries of a failing event before it goes to the dead-letter topic."
    )
