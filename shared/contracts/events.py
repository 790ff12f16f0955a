"""The canonical customer event, version 1, and its CloudEvents Kafka binding.

Every event in the events topic — storefront events from ingest and engagement events from
dispatch alike — is an :class:`EventEnvelope` serialised as JSON, keyed ``workspace_id:customer``
(customer id, else anonymous id) so one customer's events stay ordered.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"
EVENT_TYPE_PREFIX = "ciclo.event."
# Commerce happens in this window; outside it a timestamp is a bug (and year 1 with an offset
# cannot even be converted to UTC).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


class EventEnvelope(BaseModel):
    """A customer event as it travels between services (schema version 1)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    event_id: str = Field(min_length=1, max_length=200)
    workspace_id: str = Field(min_length=1, max_length=64)
    customer_id: str | None = Field(None, max_length=200)
    anonymous_id: str | None = Field(None, max_length=200)
    type: str = Field(min_length=1, max_length=200)
    occurred_at: AwareDatetime
    received_at: AwareDatetime
    source: str = Field("api", max_length=100, description="Who produced it: api, segment, ...")
    properties: dict[str, Any] = Field(default_factory=dict)
    traits: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
    historical: bool = Field(
        False, description="Backfilled: builds state but never triggers messages."
    )

    @field_validator("occurred_at", "received_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        # One canonical zone on the wire; a customer's own zone is a trait, not an offset.
        if not EARLIEST <= value <= LATEST:
            raise ValueError(f"must lie between {EARLIEST:%Y} and {LATEST:%Y}")
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _needs_identity(self) -> EventEnvelope:
        if not self.customer_id and not self.anonymous_id:
            raise ValueError("an event needs customer_id or anonymous_id")
        return self

    @property
    def subject(self) -> str:
        """The customer the event is about: customer id, else anonymous id."""
        return self.customer_id or f"anon:{self.anonymous_id}"

    @property
    def key(self) -> str:
        return f"{self.workspace_id}:{self.subject}"

    def to_json(self) -> bytes:
        # Straight from the validated fields: orjson writes datetimes itself (UTC as "Z", as
        # pydantic does), and model_dump would copy every nested dict first. A value JSON cannot
        # carry (a Decimal, an int beyond 64 bits) raises TypeError.
        return orjson.dumps(self.__dict__, option=orjson.OPT_UTC_Z)

    @classmethod
    def from_json(cls, data: bytes) -> EventEnvelope:
        return cls.model_validate_json(data)

    def headers(self) -> dict[str, str]:
        return cloudevent_headers(
            ce_id=self.event_id,
            ce_type=EVENT_TYPE_PREFIX + self.type,
            ce_source=f"/workspaces/{self.workspace_id}/{self.source}",
            ce_time=self.occurred_at,
        )


def cloudevent_headers(
    *, ce_id: str, ce_type: str, ce_source: str, ce_time: datetime | str
) -> dict[str, str]:
    """CloudEvents 1.0 Kafka binary-mode headers. ``ce_time`` may come already as
    ``datetime.isoformat()`` text, so that a batch formats its shared receipt time once."""
    return {
        "ce_specversion": SPEC_VERSION,
        "ce_id": ce_id,
        "ce_type": ce_type,
        "ce_source": ce_source,
        "ce_time": ce_time if isinstance(ce_time, str) else ce_time.isoformat(),
        "content-type": CONTENT_TYPE,
    }
