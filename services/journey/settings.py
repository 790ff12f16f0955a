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
    journey_timer_batch_size: int = Field(
        500, ge=1, le=10_000, description="Due timers leased and fired per transaction."
    )
    journey_timer_poll_interval: float = Field(
        0.2,
        gt=0,
        le=60,
        description="Longest sleep of the timer poller when nothing is due (bounds lateness).",
    )
    journey_timer_lease: float = Field(
        30,
        gt=0,
        description="Seconds a replica holds due timers it leased; after a crash another "
        "replica fires them once this passes.",
    )
