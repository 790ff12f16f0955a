"""Request and response bodies of the native event API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

EXAMPLES: dict[str, Any] = {
    "signup": {
        "summary": "A newsletter signup",
        "value": {
            "type": "signup",
            "customer_id": "c1",
            "traits": {
                "email": "ana@example.com",
                "first_name": "Ana",
                "timezone": "Europe/Berlin",
            },
        },
    },
    "order": {
        "summary": "An order",
        "value": {
            "type": "order_completed",
            "event_id": "order-1001",
            "customer_id": "c1",
            "occurred_at": "2026-11-23T09:30:00+01:00",
            "properties": {
                "order_id": "1001",
                "total": "59.90",
                "currency": "EUR",
                "coupon": "WELCOME10",
                "discount": "6.00",
                "items": [{"product_id": "sku-1", "name": "Mug", "price": "29.95", "quantity": 2}],
            },
        },
    },
    "custom": {
        "summary": "A custom event",
        "value": {
            "type": "wishlist_shared",
            "anonymous_id": "a-77",
            "properties": {"list": "xmas"},
        },
    },
}


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

    # Any item, not only objects: an item that is not a JSON object is one rejected item (its
    # index in the results), never a 422 that drops the good items with it.
    events: list[Any] = Field(
        min_length=1, max_length=1000, json_schema_extra={"items": {"type": "object"}}
    )
