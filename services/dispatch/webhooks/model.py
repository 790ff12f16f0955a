"""The one shape every provider's webhook takes once read, and the errors of reading one.

Errors::

    DispatchError
    └── WebhookError
        ├── WebhookAuthError      forged, unsigned, stale or replayed: answered 401
        └── WebhookPayloadError   authentic, but a field is missing or wrong: answered 422
            └── WebhookFormatError  the body is not the provider's format at all: answered 400

A ``WebhookPayloadError`` about one event of a batch (SendGrid) is not raised: the event is
skipped and reported as an ``InvalidEvent`` of the ``Batch``, so the batch's valid events are
still recorded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from services.dispatch.errors import DispatchError

EngagementType = Literal[
    "message_delivered",
    "message_opened",
    "message_clicked",
    "message_bounced",
    "message_complained",
    "message_unsubscribed",
    "message_failed",
]
Bounce = Literal["hard", "soft"]
SuppressionReason = Literal["hard_bounce", "complaint", "unsubscribe"]


class WebhookError(DispatchError):
    pass


class WebhookAuthError(WebhookError):
    """The request cannot be trusted to come from the provider; ``field`` names the header or
    field that failed, when one did."""

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


class WebhookPayloadError(WebhookError):
    """An authentic request whose body does not say what Ciclo needs; ``field`` is the path in the
    body (``[2].timestamp``, ``event-data.event``)."""

    def __init__(self, message: str, *, field: str = "body") -> None:
        super().__init__(f"{field}: {message}")
        self.message = message
        self.field = field


class WebhookFormatError(WebhookPayloadError):
    """The body is not in the provider's format at all (not JSON, not a form)."""


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """What verifying and parsing see of an HTTP request: the raw body (signatures cover bytes,
    not a re-encoding), header names in lower case, and the public URL the provider called."""

    body: bytes
    headers: Mapping[str, str]
    url: str


@dataclass(frozen=True, slots=True)
class Engagement:
    """One provider event about one message, in Ciclo's terms.

    ``provider_event_id`` is stable across the provider's retries: the provider's own event id
    where it has one, otherwise one derived from what identifies the event (message and status,
    record type and time). ``message_id`` is Ciclo's message id, carried in the provider's
    custom data; None when the message was not sent by Ciclo.
    """

    provider: str
    provider_event_id: str
    type: EngagementType
    message_id: str | None
    address: str | None
    occurred_at: datetime
    properties: dict[str, Any] = field(default_factory=dict)
    workspace_id: str | None = None

    @property
    def event_id(self) -> str:
        """The event id in the events stream: derived from the provider's event, so a retry that
        races past the dedupe table still yields an event the journey service drops."""
        digest = hashlib.sha256(f"{self.provider}\n{self.provider_event_id}".encode()).hexdigest()
        return f"{self.provider}:{digest[:40]}"

    @property
    def dedupe_key(self) -> str:
        """The provider event id as a key of ``dispatch_webhook_events`` (at most 200 chars)."""
        if len(self.provider_event_id) <= 200:
            return self.provider_event_id
        return "sha256:" + hashlib.sha256(self.provider_event_id.encode()).hexdigest()

    @property
    def suppression(self) -> SuppressionReason | None:
        """Why this engagement puts the address on the suppression list, if it does: a hard
        bounce or a complaint stops every message, an unsubscribe stops marketing."""
        if self.type == "message_bounced" and self.properties.get("bounce") == "hard":
            return "hard_bounce"
        if self.type == "message_complained":
            return "complaint"
        if self.type == "message_unsubscribed":
            return "unsubscribe"
        return None

    @property
    def revokes_marketing(self) -> bool:
        """An unsubscribe or a spam complaint both mean "no more marketing": the journey service
        learns it through a consent_updated event and stops asking for marketing sends."""
        return self.type in ("message_unsubscribed", "message_complained")


@dataclass(frozen=True, slots=True)
class InvalidEvent:
    """An event of a batch that Ciclo could not read, and skipped: ``index`` is its position in
    the batch, ``field`` the path of what is wrong (``[3].timestamp``)."""

    index: int
    field: str
    message: str


@dataclass(frozen=True, slots=True)
class Batch:
    """What a verified request holds: the engagements to record, and the events skipped as
    malformed (only a batch provider has those; a single malformed event raises instead)."""

    engagements: list[Engagement]
    invalid: list[InvalidEvent] = field(default_factory=list)
