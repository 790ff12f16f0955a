"""Journey definitions: the JSON language developers write, as pydantic models.

``JourneyDefinition`` (alias ``Journey``) is the whole language; the published JSON Schema is
generated from it and the engine runs all of it.

A published (id, version) is immutable. A step is one of the kinds below, told apart by its key
(``send``, ``wait``, ``wait_for``, ``branch``, ``split``, ``update``, ``exit``); so are triggers.
Local checks (ranges, durations, split percentages) live on the models; checks across the step
graph (references, reachability, loops, templates) live in ``validation.py``.
"""

from __future__ import annotations

from datetime import time, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    StringConstraints,
    Tag,
    model_validator,
)

from services.journey.domain.conditions import Condition
from services.journey.domain.durations import Duration, LocalTime, Offset, TimeZone

_ID = r"^[a-z0-9][a-z0-9_-]{0,99}$"
Name = Annotated[str, StringConstraints(pattern=_ID)]
"""Ids of journeys, steps, templates and split branches: a-z, 0-9, '_' and '-'."""
EventType = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class _Strict(BaseModel):
    """Strict types: a JSON value of the wrong type is refused, never converted (``"5"`` is
    not the priority 5, ``true`` not the version 1), as the published JSON Schema says; and no
    NaN or infinity in a number."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def _by_key(kinds: tuple[str, ...]) -> Any:
    """A discriminator telling union members apart by which of ``kinds`` is a key.

    Tags are "~kind" so that error paths can drop them: no JSON key of the language starts with
    "~". Already-built models are recognised by the attribute of the same name.
    """

    def kind_of(value: Any) -> str | None:
        if not isinstance(value, dict | BaseModel):
            return None  # a string has a ``split`` method, yet it is no split step
        for kind in kinds:
            present = kind in value if isinstance(value, dict) else hasattr(value, kind)
            if present:
                return f"~{kind}"
        return None

    return kind_of


# ── Triggers ──────────────────────────────────────────────────────────────────────────────────


_PROPERTY = r"^[A-Za-z0-9_-]+$"
Property = Annotated[str, StringConstraints(pattern=_PROPERTY, max_length=100)]


class EventTrigger(_Strict):
    """Enter when an event of this type arrives (and matches ``where``, if given)."""

    event: EventType
    where: Condition | None = Field(None, description="Filter on the triggering event.")
    key: Property | None = Field(
        None,
        description="Property of the event that keys a run, e.g. cart_id: at most one active "
        "run per value, so each cart gets its own run and a second update of the same cart "
        "does not start another.",
    )


class SegmentTrigger(_Strict):
    """Enter when the customer enters (or leaves) a segment."""

    segment: Name
    on: Literal["entered", "exited"] = "entered"


class DateTrigger(_Strict):
    """Enter on a date trait (birthday, signup anniversary), shifted by an offset."""

    date_trait: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    offset: Offset = timedelta(0)
    at: LocalTime = Field(time(9, 0), description="Local time of day to enter.")
    timezone: TimeZone = "customer"
    yearly: bool = Field(True, description="Every year on the date (birthday), or only once.")


class Inactivity(_Strict):
    event: EventType = Field(description="The event whose absence counts, e.g. order_completed.")
    for_: Duration = Field(alias="for", description="How long without it, e.g. P60D.")


class InactivityTrigger(_Strict):
    """Enter when the customer has had no ``event`` for the given time."""

    inactivity: Inactivity


Trigger = Annotated[
    Annotated[InactivityTrigger, Tag("~inactivity")]
    | Annotated[SegmentTrigger, Tag("~segment")]
    | Annotated[DateTrigger, Tag("~date_trait")]
    | Annotated[EventTrigger, Tag("~event")],
    Discriminator(
        _by_key(("inactivity", "segment", "date_trait", "event")),
        custom_error_type="unknown_trigger_kind",
        custom_error_message="a trigger needs one of: event, segment, date_trait, inactivity",
    ),
]


# ── Steps ─────────────────────────────────────────────────────────────────────────────────────


class SendSpec(_Strict):
    channel: Literal["email", "sms"]
    template: Name
    category: Literal["marketing", "transactional"] = "marketing"
    holdout_percent: float = Field(
        0, ge=0, le=100, description="Share of customers who skip this send (stable per customer)."
    )


class SendStep(_Strict):
    send: SendSpec
    next: Name | None = Field(None, description="Step after the send; none ends the journey.")


class UntilTime(_Strict):
    """Wait until the next local time of day (on one of ``weekdays``, if given)."""

    until: LocalTime
    weekdays: list[Weekday] | None = Field(None, min_length=1)
    timezone: TimeZone = "customer"


class UntilDate(_Strict):
    """Wait until a date trait of the customer, shifted by an offset, at a local time."""

    until_trait: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    offset: Offset = timedelta(0)
    at: LocalTime = time(9, 0)
    timezone: TimeZone = "customer"
    yearly: bool = Field(
        True,
        description="The date's next yearly return (a birthday), or the date itself only (a "
        "trial end): a one-off date already past ends the wait at once.",
    )


WaitSpec = Annotated[
    Annotated[Duration, Tag("~duration")]
    | Annotated[UntilDate, Tag("~until_trait")]
    | Annotated[UntilTime, Tag("~until")],
    Discriminator(
        lambda v: "~duration" if isinstance(v, str) else _by_key(("until_trait", "until"))(v),
        custom_error_type="unknown_wait",
        custom_error_message="a wait is a duration ('P3D'), {until: ...} or {until_trait: ...}",
    ),
]


class WaitStep(_Strict):
    wait: WaitSpec
    next: Name | None = None


class WaitForSpec(_Strict):
    event: EventType
    where: Condition | None = None
    match: Property | None = Field(
        None,
        description="Property that must equal the same property of the event that started the "
        "run, e.g. cart_id: the journey waits for this cart, not any cart.",
    )
    timeout: Duration


class WaitForStep(_Strict):
    wait_for: WaitForSpec
    on_event: Name | None = Field(None, description="Step when the event comes; none ends.")
    on_timeout: Name | None = Field(None, description="Step when the timeout passes; none ends.")


class BranchStep(_Strict):
    branch: Condition
    then: Name | None = None
    else_: Name | None = Field(None, alias="else")


class SplitBranch(_Strict):
    percent: int = Field(ge=0, le=100)
    next: Name | None = None


class SplitStep(_Strict):
    """Random split, stable per customer (decided by a hash of ids, not by chance at run time)."""

    split: dict[Name, SplitBranch] = Field(min_length=2)

    @model_validator(mode="after")
    def _sums_to_100(self) -> SplitStep:
        total = sum(b.percent for b in self.split.values())
        if total != 100:
            raise ValueError(f"split percentages sum to {total}, not 100")
        return self


class SetTrait(_Strict):
    set_trait: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    value: JsonValue


class AddScore(_Strict):
    add_score: Name
    by: float


class SetScore(_Strict):
    set_score: Name
    value: float


UpdateSpec = Annotated[
    Annotated[SetTrait, Tag("~set_trait")]
    | Annotated[AddScore, Tag("~add_score")]
    | Annotated[SetScore, Tag("~set_score")],
    Discriminator(
        _by_key(("set_trait", "add_score", "set_score")),
        custom_error_type="unknown_update",
        custom_error_message="an update needs one of: set_trait, add_score, set_score",
    ),
]


class UpdateStep(_Strict):
    update: UpdateSpec
    next: Name | None = None


class ExitStep(_Strict):
    exit: Literal[True]


_STEP_KINDS = ("send", "exit", "wait_for", "wait", "branch", "split", "update")

Step = Annotated[
    Annotated[SendStep, Tag("~send")]
    | Annotated[ExitStep, Tag("~exit")]
    | Annotated[WaitForStep, Tag("~wait_for")]
    | Annotated[WaitStep, Tag("~wait")]
    | Annotated[BranchStep, Tag("~branch")]
    | Annotated[SplitStep, Tag("~split")]
    | Annotated[UpdateStep, Tag("~update")],
    Discriminator(
        _by_key(_STEP_KINDS),
        custom_error_type="unknown_step_kind",
        custom_error_message="a step needs one of: send, exit, wait, wait_for, branch, split, "
        "update",
    ),
]


def step_kind(step: BaseModel) -> str:
    """The kind of a step ("send", "wait", …), as written in JSON."""
    return next(k for k in _STEP_KINDS if hasattr(step, k))


def targets(step: BaseModel) -> dict[str, str]:
    """The steps a step can lead to, by the field naming each (``{"next": "b"}``)."""
    if isinstance(step, SplitStep):
        return {f"split.{n}.next": b.next for n, b in step.split.items() if b.next is not None}
    fields = {"else_": "else"}
    return {
        fields.get(attr, attr): value
        for attr in ("next", "on_event", "on_timeout", "then", "else_")
        if isinstance(value := getattr(step, attr, None), str)
    }


# ── Journey level ─────────────────────────────────────────────────────────────────────────────


class EventCondition(_Strict):
    """An event (optionally filtered), used by exit_when."""

    event: EventType
    where: Condition | None = None
    match: Property | None = Field(
        None,
        description="Property that must equal the same property of the event that started the "
        "run, e.g. cart_id: only an order of this cart ends the run.",
    )


class Goal(_Strict):
    event: EventType
    where: Condition | None = None
    within: Duration = Field(description="Conversion window counted from entry.")


class ReentryAfter(_Strict):
    after: Duration


Reentry = Annotated[
    Annotated[Literal["never", "always"], Tag("~word")] | Annotated[ReentryAfter, Tag("~after")],
    Discriminator(
        lambda v: "~word" if isinstance(v, str) else "~after",
        custom_error_type="bad_reentry",
        custom_error_message="reentry is 'never', 'always' or {after: duration}",
    ),
]


class SendWindow(_Strict):
    """Hours in which sends may leave; outside them a send is held until the window opens."""

    from_: LocalTime = Field(alias="from")
    to: LocalTime = Field(description="End of the window; earlier than 'from' spans midnight.")
    timezone: TimeZone = "customer"

    @model_validator(mode="after")
    def _not_empty(self) -> SendWindow:
        if self.from_ == self.to:
            raise ValueError("'from' and 'to' are equal: the window would never open")
        return self


class _JourneyBase(_Strict):
    id: Name
    version: int = Field(ge=1)
    name: str = Field(min_length=1, max_length=200)
    exit_when: list[EventCondition] = Field(
        default_factory=list, description="Events that end the journey at once."
    )
    goal: Goal | None = None
    holdout_percent: float = Field(0, ge=0, le=100)
    send_window: SendWindow | None = None
    priority: int = Field(0, ge=0, description="Higher wins when frequency caps allow one send.")
    frequency_cap: Literal["defer", "skip"] = Field(
        "defer", description="When a cap is reached: send later, or skip the send."
    )
    start: Name


class JourneyDefinition(_JourneyBase):
    """A journey in the full language (what `ciclo journeys validate` checks)."""

    trigger: Trigger
    reentry: Reentry = "never"
    steps: dict[Name, Step] = Field(min_length=1)


Journey = JourneyDefinition
"""The engine runs the whole language; the short name is used throughout the service."""
