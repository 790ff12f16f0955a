"""What a workspace decides for all its journeys, stored in ``journey_workspace_settings``.

- ``live_from``: events that happened before this instant are history: they build state
  (profiles, schedules) and never send. Set it when connecting a shop with a past.
- ``max_event_age``: an event arriving later than this after it happened is history too.
- ``default_timezone``: the zone of customers without a ``timezone`` trait.
- ``frequency_caps``: at most ``limit`` marketing messages per channel per ``per``, across
  journeys.

A field left out (NULL) takes the service's default (``CICLO_JOURNEY_*``). ``DatabasePolicies``
gives the worker each workspace's ``WorkspacePolicy``, cached for ``refresh_seconds``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.journey.adapters.tables import workspace_settings
from services.journey.adapters.workspace_cache import WorkspaceCache
from services.journey.domain.durations import (
    Duration,
    format_duration,
    known_zone,
    parse_duration,
)
from services.journey.domain.engine import Cap, Policy
from services.journey.domain.policy import WorkspacePolicy

log = logging.getLogger(__name__)

LONGEST = timedelta(days=366)
"""The longest frequency-cap window or event age accepted: beyond a year, date arithmetic on
old events is no longer meaningful (and far enough would overflow)."""


# ── Value types (shared by the HTTP API and the service settings) ────────────────────────────


def _at_most_a_year(value: timedelta) -> timedelta:
    if value > LONGEST:
        raise PydanticCustomError(
            "duration", "must be at most P366D, got {text}", {"text": format_duration(value)}
        )
    return value


Window = Annotated[
    Duration,
    AfterValidator(_at_most_a_year),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^P(\d+W)?(\d+D)?(T(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$",
            "description": "ISO-8601 duration (PnW or PnDTnHnMnS), longer than zero and at "
            "most P366D.",
            "examples": ["P1D", "PT12H", "P7D"],
        }
    ),
]


def _zone(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 100:
        raise PydanticCustomError(
            "time_zone", "a time zone is an IANA name such as 'Europe/Madrid'"
        )
    return known_zone(value, instead="an IANA name such as 'Europe/Madrid'")


Zone = Annotated[
    str,
    BeforeValidator(_zone),
    WithJsonSchema(
        {
            "type": "string",
            "maxLength": 100,
            "description": "IANA time zone name.",
            "examples": ["UTC", "Europe/Madrid"],
        }
    ),
]


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise PydanticCustomError("datetime", "instant out of range once in UTC") from exc


Instant = Annotated[AwareDatetime, AfterValidator(_utc)]


class FrequencyCap(BaseModel):
    """At most ``limit`` marketing messages on ``channel`` per ``per``, across journeys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: Literal["email", "sms"]
    limit: int = Field(
        ge=1, le=10_000, strict=True, description="Messages allowed in the window."
    )  # strict: `true` or "3" is refused, as the schema's integer says, not taken as 1 or 3
    per: Window = Field(description="The sliding window, e.g. P1D or P7D.")

    def cap(self) -> Cap:
        return Cap(channel=self.channel, limit=self.limit, per=self.per)


# ── The HTTP API's bodies ─────────────────────────────────────────────────────────────────────

FIELDS = ("live_from", "max_event_age", "default_timezone", "frequency_caps")


class JourneySettingsIn(BaseModel):
    """The workspace's journey settings. A field left out (or null) takes the default."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "live_from": "2026-11-20T00:00:00Z",
                    "max_event_age": "P1D",
                    "default_timezone": "Europe/Madrid",
                    "frequency_caps": [
                        {"channel": "email", "limit": 1, "per": "P1D"},
                        {"channel": "email", "limit": 3, "per": "P7D"},
                    ],
                }
            ]
        },
    )

    live_from: Instant | None = Field(
        None,
        description="RFC 3339 instant: events that happened before it are history (they build "
        "state and never send).",
    )
    max_event_age: Window | None = Field(
        None,
        description="An event arriving later than this after it happened is history too.",
    )
    default_timezone: Zone | None = Field(
        None, description="Zone of customers without a `timezone` trait."
    )
    frequency_caps: list[FrequencyCap] | None = Field(
        None,
        max_length=20,
        description="Caps on marketing messages across journeys; `[]` for none.",
    )

    @field_validator("frequency_caps")
    @classmethod
    def _one_cap_per_window(cls, caps: list[FrequencyCap] | None) -> list[FrequencyCap] | None:
        """Two caps of one channel over the same window (P1D and PT24H alike) say two things
        about one limit: only the lower would ever bite, so the other is a mistake to point at."""
        seen: dict[tuple[str, timedelta], int] = {}
        for index, cap in enumerate(caps or ()):
            first = seen.setdefault((cap.channel, cap.per), index)
            if first != index:
                raise PydanticCustomError(
                    "duplicate_cap",
                    "caps {first} and {index} both limit {channel} over the same window: keep one",
                    {"first": first, "index": index, "channel": cap.channel},
                )
        return caps


class JourneySettingsOut(BaseModel):
    """The settings in force: the workspace's own values, defaults for the rest."""

    live_from: datetime | None
    max_event_age: (
        Annotated[
            timedelta,
            PlainSerializer(format_duration, return_type=str),
            WithJsonSchema({"type": "string", "description": "ISO-8601 duration"}),
        ]
        | None
    ) = Field(description="None: no age limit.", examples=["P1D"])
    default_timezone: str
    frequency_caps: list[FrequencyCap]
    inherited: list[Literal["live_from", "max_event_age", "default_timezone", "frequency_caps"]] = (
        Field(description="Fields the workspace has not set: they show the service's default.")
    )
    updated_at: datetime | None = Field(description="When the workspace last saved them.")


# ── Storage ───────────────────────────────────────────────────────────────────────────────────


def _row_values(body: JourneySettingsIn) -> dict[str, Any]:
    return {
        "live_from": body.live_from,
        "max_event_age": format_duration(body.max_event_age)
        if body.max_event_age is not None
        else None,
        "default_timezone": body.default_timezone,
        "frequency_caps": [c.model_dump(mode="json") for c in body.frequency_caps]
        if body.frequency_caps is not None
        else None,
    }


async def save(
    conn: AsyncConnection, workspace: str, body: JourneySettingsIn, *, now: datetime
) -> None:
    """Replace the workspace's settings (upsert)."""
    values = {**_row_values(body), "updated_at": now}
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(workspace_settings).values(workspace_id=workspace, **values)
    await conn.execute(
        statement.on_conflict_do_update(index_elements=["workspace_id"], set_=values)
    )


async def load(conn: AsyncConnection, workspaces: Iterable[str]) -> dict[str, Mapping[str, Any]]:
    t = workspace_settings
    wanted = sorted(set(workspaces))
    if not wanted:
        return {}
    rows = await conn.execute(select(t).where(t.c.workspace_id.in_(wanted)))
    return {r.workspace_id: dict(r._mapping) for r in rows}


def policy_of(row: Mapping[str, Any] | None, defaults: WorkspacePolicy) -> WorkspacePolicy:
    """The policy in force for a workspace whose stored settings are ``row`` (None: none)."""
    if row is None:
        return defaults
    max_age = defaults.max_event_age
    zone = defaults.policy.default_timezone
    caps = defaults.policy.caps
    try:
        if row["max_event_age"] is not None:
            max_age = parse_duration(row["max_event_age"])
        if row["default_timezone"] is not None:
            zone = _zone(row["default_timezone"])
        if row["frequency_caps"] is not None:
            caps = tuple(FrequencyCap.model_validate(c).cap() for c in row["frequency_caps"])
    except ValueError:
        # Validated when saved; a zone that left the tz database since must not stop the worker.
        log.exception(
            "stored journey settings no longer valid; using the defaults for the rest",
            extra={"workspace_id": row["workspace_id"]},
        )
    live_from = row["live_from"] if row["live_from"] is not None else defaults.live_from
    return WorkspacePolicy(
        policy=Policy(caps=caps, default_timezone=zone),
        live_from=live_from,
        max_event_age=max_age,
    )


def describe(row: Mapping[str, Any] | None, defaults: WorkspacePolicy) -> JourneySettingsOut:
    policy = policy_of(row, defaults)
    inherited = [f for f in FIELDS if row is None or row[f] is None]
    return JourneySettingsOut(
        live_from=policy.live_from,
        max_event_age=policy.max_event_age,
        default_timezone=policy.policy.default_timezone,
        frequency_caps=[
            FrequencyCap(channel=c.channel, limit=c.limit, per=c.per) for c in policy.policy.caps
        ],
        inherited=inherited,
        updated_at=row["updated_at"] if row is not None else None,
    )


class DatabasePolicies:
    """``Policies`` for the worker: each workspace's stored settings over the defaults, cached
    ``refresh_seconds`` (the delay before a change applies). When the database is unreachable
    the last known policies stay in force."""

    def __init__(
        self,
        engine: AsyncEngine,
        defaults: WorkspacePolicy,
        *,
        refresh_seconds: float = 2.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self.defaults = defaults
        self._cache: WorkspaceCache[WorkspacePolicy] = WorkspaceCache(
            self._load,
            what="journey settings",
            refresh_seconds=refresh_seconds,
            monotonic=monotonic,
        )

    async def _load(self, workspaces: list[str]) -> dict[str, WorkspacePolicy]:
        async with self._engine.connect() as conn:
            rows = await load(conn, workspaces)
        return {w: policy_of(rows.get(w), self.defaults) for w in workspaces}

    async def for_workspaces(self, workspaces: Iterable[str]) -> dict[str, WorkspacePolicy]:
        return await self._cache.get(workspaces)
