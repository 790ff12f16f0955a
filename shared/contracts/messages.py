"""The message request, version 1: what the journey service asks dispatch to send.

``message_id`` is deterministic (journey, version, run, step), so a replayed journey step asks for
the same message and dispatch, which keys on it, sends it once.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.contracts.events import cloudevent_headers

MESSAGE_TYPE = "ciclo.message.requested"

TEMPLATE_ROOTS = frozenset(
    {
        "customer",
        "event",
        "message",
        "scores",
        "profile",
        "lead",
        "rfm",
        "predictions",
        "stage",
        "segments",
        "unsubscribe_url",
        "preferences_url",
        "codes",
    }
)
"""The template variables dispatch builds for every message (docs/dispatch.md, Variables): from
the request's ids and ``recipient``, ``data["event"]``, the message's links and discount codes.
Any other key of ``data`` is a variable of its own; a key named here never replaces what
dispatch builds, so a producer cannot make a message show someone else's name or links."""

Channel = Literal["email", "sms"]
Category = Literal["marketing", "transactional"]


def message_id_for(
    *, workspace_id: str, journey_id: str, version: int, run_id: str, step: str
) -> str:
    """Deterministic message id: the same journey step of the same run always gets the same id."""
    raw = f"{workspace_id}\x1f{journey_id}\x1f{version}\x1f{run_id}\x1f{step}".encode()
    return "msg_" + hashlib.sha256(raw).hexdigest()[:32]


class MessageRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    message_id: str = Field(min_length=1, max_length=100)
    workspace_id: str
    customer_id: str
    channel: Channel
    template: str
    category: Category = "marketing"
    journey_id: str | None = None
    journey_version: int | None = None
    run_id: str | None = None
    step: str | None = None
    requested_at: AwareDatetime
    recipient: dict[str, Any] = Field(
        default_factory=dict, description="Profile snapshot: email, phone, name, traits."
    )
    data: dict[str, Any] = Field(
        default_factory=dict,
        description="Template variables: the triggering event (`event`) and more; a key of "
        "TEMPLATE_ROOTS other than `event` is ignored.",
    )

    @property
    def key(self) -> str:
        return f"{self.workspace_id}:{self.customer_id}"

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))

    @classmethod
    def from_json(cls, data: bytes) -> MessageRequest:
        return cls.model_validate_json(data)

    def headers(self) -> dict[str, str]:
        return cloudevent_headers(
            ce_id=self.message_id,
            ce_type=MESSAGE_TYPE,
            ce_source=f"/workspaces/{self.workspace_id}/journey",
            ce_time=self.requested_at,
        )
