"""Request and response bodies of the native event API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator


class EventIn(BaseModel):
    """One storefront event. Unknown top-level fields are kept under ``context.extra``."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "signup",
                    "customer_id": "c1",
                    "traits": {"email": "ana@example.com", "first_name": "Ana"},
                }
            ]
        },
    )

    type: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:\- ]+$")
    event_id: str | None = Field(
        None, min_length=1, max_length=200, description="Your id for the event; retries reuse it."
    )
    customer_id: str | None = Field(None, min_length=1, max_length=200)
    anonymous_id: str | None = Field(None, min_length=1, max_length=200)
    occurred_at: AwareDatetime | None = Field(
        None, description="RFC 3339 with a zone; defaults to the time of receipt."
    )
    properties: dict[str, Any] = Field(default_factory=dict)
    traits: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _needs_identity(self) -> EventIn:
        if not self.customer_id and not self.anonymous_id:
            raise ValueError("customer_id or anonymous_id is required")
        return self


class Accepted(BaseModel):
    event_id: str
    status: str = "accepted"


class ItemResult(BaseModel):
    index: int
    status: Literal["accepted", "rejected"]
    event_id: str | None = None
    errors: list[dict[str, str]] | None = None


class BatchResult(BaseModel):
    accepted: int
    rejected: int
    results: list[ItemResult]


class BatchIn(BaseModel):
    """Up to ``MAX_BATCH`` events. Items are validated one by one: a bad item is reported in the
    results and never drops the good ones."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "events": [
                        {
                            "type": "signup",
                            "customer_id": "c1",
                            "traits": {"email": "a@example.com"},
                        },
                        {
                            "type": "page_viewed",
                            "anonymous_id": "a-77",
                            "properties": {"path": "/"},
                        },
                    ]
                }
            ]
        }
    )

    events: list[dict[str, Any]] = Field(min_length=1, max_length=1000)
