"""The journey engine: a pure function of (instance, definition, now) → (instance, effects).

No clock, randomness or I/O in here: the caller passes ``now`` and a ``run_id`` derived from the
triggering event, so replaying an event makes the same decisions and the same message ids.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from services.journey.domain.definitions import ExitStep, Journey, SendStep
from shared.contracts.messages import message_id_for

Status = Literal["active", "completed"]


@dataclass(frozen=True, slots=True)
class Instance:
    """One customer's run through one journey version."""

    workspace_id: str
    customer_id: str
    journey_id: str
    version: int
    run_id: str
    step: str | None
    status: Status
    entered_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class RequestMessage:
    message_id: str
    step: str
    channel: Literal["email", "sms"]
    template: str
    category: Literal["marketing", "transactional"]


@dataclass(frozen=True, slots=True)
class Completed:
    step: str | None


Effect = RequestMessage | Completed


def run_id_for(journey: Journey, *, workspace_id: str, customer_id: str, event_id: str) -> str:
    raw = f"{workspace_id}\x1f{customer_id}\x1f{journey.id}\x1f{journey.version}\x1f{event_id}"
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def enter(
    journey: Journey, *, workspace_id: str, customer_id: str, run_id: str, now: datetime
) -> tuple[Instance, list[Effect]]:
    instance = Instance(
        workspace_id=workspace_id,
        customer_id=customer_id,
        journey_id=journey.id,
        version=journey.version,
        run_id=run_id,
        step=journey.start,
        status="active",
        entered_at=now,
        updated_at=now,
    )
    return advance(instance, journey, now=now)


def advance(
    instance: Instance, journey: Journey, *, now: datetime
) -> tuple[Instance, list[Effect]]:
    """Run steps from the instance's current one until the journey blocks or ends."""
    effects: list[Effect] = []
    step_name = instance.step
    # Every step kind either moves forward or ends, and the definition is a finite graph checked
    # for unknown targets; the bound guards against a cycle of sends.
    for _ in range(len(journey.steps) + 1):
        if step_name is None:
            break
        step = journey.steps[step_name]
        if isinstance(step, ExitStep):
            break
        if isinstance(step, SendStep):
            effects.append(
                RequestMessage(
                    message_id=message_id_for(
                        workspace_id=instance.workspace_id,
                        journey_id=journey.id,
                        version=journey.version,
                        run_id=instance.run_id,
                        step=step_name,
                    ),
                    step=step_name,
                    channel=step.send.channel,
                    template=step.send.template,
                    category=step.send.category,
                )
            )
            step_name = step.next
    effects.append(Completed(step=step_name))
    return replace(instance, step=step_name, status="completed", updated_at=now), effects
