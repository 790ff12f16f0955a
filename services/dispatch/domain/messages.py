"""What dispatch sends and what it learns back: plain values, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Status = Literal["sending", "sent", "failed", "skipped", "ambiguous", "held"]


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str | None
    html: str | None
    text: str


@dataclass(frozen=True, slots=True)
class Outbound:
    """A rendered message with its address, ready for a provider."""

    message_id: str
    workspace_id: str
    customer_id: str
    channel: Literal["email", "sms"]
    template: str
    category: Literal["marketing", "transactional"]
    to: str
    sender: str
    sender_name: str
    content: Rendered
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Receipt:
    provider: str
    provider_message_id: str | None


@dataclass(frozen=True, slots=True)
class Outcome:
    message_id: str
    status: Status
    attempts: int
    provider_message_id: str | None = None
    error: str | None = None
    """Why it was not sent (or held): the reason recorded and emitted."""
    provider: str | None = None
    not_before: datetime | None = None
    """Held: when to try again (quiet hours end, a provider's Retry-After)."""
    request: dict[str, Any] | None = None
    """Held: the request to send then."""
    opted_out: bool = False
    """Failed because the recipient opted out with the provider (``OptedOutError``)."""
