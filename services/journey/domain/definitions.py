"""Journey definitions: the JSON language developers write, as pydantic models.

A published (id, version) is immutable. A step is one of the kinds below, told apart by its key
(``send``, ``exit``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

_ID = r"^[a-z0-9][a-z0-9_-]{0,99}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Trigger(_Strict):
    event: str = Field(min_length=1, description="Event type that starts the journey.")


class SendSpec(_Strict):
    channel: Literal["email", "sms"]
    template: str = Field(pattern=_ID)
    category: Literal["marketing", "transactional"] = "marketing"


class SendStep(_Strict):
    send: SendSpec
    next: str | None = Field(None, description="Step after the send; none ends the journey.")


class ExitStep(_Strict):
    exit: Literal[True]


def _step_kind(value: Any) -> str | None:
    keys: set[str]
    if isinstance(value, dict):
        keys = set(value)
    else:
        keys = {k for k in ("send", "exit") if getattr(value, k, None) is not None}
    for kind in ("send", "exit"):
        if kind in keys:
            return kind
    return None


Step = Annotated[
    Annotated[SendStep, Tag("send")] | Annotated[ExitStep, Tag("exit")],
    Discriminator(
        _step_kind,
        custom_error_type="unknown_step_kind",
        custom_error_message="a step needs one of: send, exit",
    ),
]


class Journey(_Strict):
    id: str = Field(pattern=_ID)
    version: int = Field(ge=1)
    name: str = Field(min_length=1, max_length=200)
    trigger: Trigger
    reentry: Literal["never", "always"] = "never"
    start: str
    steps: dict[str, Step] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_graph(self) -> Journey:
        if self.start not in self.steps:
            raise ValueError(f"start: unknown step {self.start!r}")
        for name, step in self.steps.items():
            if not re.match(_ID, name):
                raise ValueError(f"steps.{name}: step names are a-z, 0-9, '_' or '-'")
            if isinstance(step, SendStep) and step.next is not None and step.next not in self.steps:
                raise ValueError(f"steps.{name}.next: unknown step {step.next!r}")
        return self
