"""Settings of the journey service."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, TypeAdapter, field_validator

from services.journey.adapters.workspace_settings import FrequencyCap, Window, Zone
from services.journey.domain.durations import format_duration, parse_duration
from services.journey.domain.engine import Policy
from services.journey.domain.policy import WorkspacePolicy
from shared.settings import CommonSettings


class JourneySettings(CommonSettings):
    journeys_dir: Path = Field(
        Path("journeys"), description="Folder of journey JSON files loaded at start."
    )
    templates_dir: Path = Field(
        Path("templates"),
        description="Folder of Liquid templates, one folder per template id: dispatch renders "
        "them, and a journey may only send a template that exists.",
    )
    journey_batch_size: int = Field(
        500, ge=1, le=10_000, description="Events consumed and committed per transaction."
    )
    journey_state_cache: int = Field(
        10_000,
        ge=0,
        le=1_000_000,
        description="Customer states the event consumer keeps in memory after committing them, "
        "so that the next events of the same customers skip reading and decoding their rows "
        "(a row changed by anyone else is read again). 0 turns the cache off.",
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
    journey_insights_interval: float = Field(
        86_400,
        ge=0,
        description="Seconds between recomputations of each workspace's RFM scores and purchase "
        "predictions (stored on every customer; segments on `rfm.*` and `predictions.*` are "
        "decided again). 0 turns the scheduled job off (`ciclo predict fit --save` still runs "
        "it on demand).",
    )
    journey_insights_batch_size: int = Field(
        500,
        ge=1,
        le=10_000,
        description="Customers whose RFM scores and predictions are stored per transaction.",
    )
    journey_catalog_refresh: float = Field(
        2.0,
        ge=0,
        description="Seconds between checks for journeys and workspace journey settings changed "
        "over HTTP: how soon a publish, pause, archive or settings change applies.",
    )
    journey_max_event_age: str = Field(
        "P1D",
        description="Default `max_event_age` of a workspace (ISO-8601 duration): an event "
        "arriving later than this after it happened is history (builds state, never sends).",
    )
    journey_default_timezone: str = Field(
        "UTC",
        description="Default `default_timezone` of a workspace (IANA name): the zone of "
        "customers without a `timezone` trait.",
    )
    journey_frequency_caps: list[FrequencyCap] = Field(
        [],
        description='Default `frequency_caps` of a workspace, as JSON, e.g. `[{"channel": '
        '"email", "limit": 3, "per": "P7D"}]`; empty: no cap.',
    )

    @field_validator("journey_max_event_age")
    @classmethod
    def _max_event_age(cls, value: str) -> str:
        return format_duration(TypeAdapter(Window).validate_python(value))

    @field_validator("journey_default_timezone")
    @classmethod
    def _default_timezone(cls, value: str) -> str:
        return str(TypeAdapter(Zone).validate_python(value))

    def default_policy(self) -> WorkspacePolicy:
        """The policy of a workspace that has set nothing of its own."""
        return WorkspacePolicy(
            policy=Policy(
                caps=tuple(c.cap() for c in self.journey_frequency_caps),
                default_timezone=self.journey_default_timezone,
            ),
            max_event_age=parse_duration(self.journey_max_event_age),
        )
