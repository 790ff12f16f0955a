"""Handlers of the journey service: load through the unit of work, call the domain, write state,
idempotency marks and outbox records in one transaction. Nothing is published from here."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from services.journey.domain import engine
from services.journey.domain.catalog import JourneyCatalog
from services.journey.domain.profile import Profile
from services.journey.service_layer.uow import JourneyUnitOfWork
from shared.bus.ports import OutgoingRecord
from shared.contracts.events import EventEnvelope
from shared.contracts.messages import MessageRequest
from shared.contracts.topics import MESSAGES


async def handle_events(
    uow: JourneyUnitOfWork,
    events: Sequence[EventEnvelope],
    *,
    catalog: JourneyCatalog,
    now: datetime,
) -> int:
    """Apply a batch of events; returns how many were new (duplicates are skipped).

    Query count is constant per batch: duplicates, profiles and journey history are each loaded
    with one query for the whole batch.
    """
    seen = await uow.processed.seen((e.workspace_id, e.event_id) for e in events)
    fresh: list[EventEnvelope] = []
    batch_ids: set[tuple[str, str]] = set()
    for event in events:
        key = (event.workspace_id, event.event_id)
        if key in seen or key in batch_ids:
            continue
        batch_ids.add(key)
        fresh.append(event)
    if not fresh:
        return 0

    subjects = {(e.workspace_id, e.subject) for e in fresh}
    profiles = await uow.profiles.load(subjects)
    entered = await uow.instances.entered(subjects)
    new_instances: list[engine.Instance] = []
    outgoing: list[OutgoingRecord] = []

    for event in fresh:
        key = (event.workspace_id, event.subject)
        profile = profiles.get(key)
        if profile is None:
            profile = profiles[key] = Profile(
                workspace_id=event.workspace_id, customer_id=event.subject
            )
        profile.observe(traits=event.traits, at=event.occurred_at)
        if event.historical:
            continue  # backfilled history builds state but never sends
        for journey in catalog.triggered_by(event.type):
            history_key = (event.workspace_id, event.subject, journey.id)
            if journey.reentry == "never" and history_key in entered:
                continue
            entered.add(history_key)
            run_id = engine.run_id_for(
                journey,
                workspace_id=event.workspace_id,
                customer_id=event.subject,
                event_id=event.event_id,
            )
            instance, effects = engine.enter(
                journey,
                workspace_id=event.workspace_id,
                customer_id=event.subject,
                run_id=run_id,
                now=now,
            )
            new_instances.append(instance)
            for effect in effects:
                if isinstance(effect, engine.RequestMessage):
                    request = MessageRequest(
                        message_id=effect.message_id,
                        workspace_id=event.workspace_id,
                        customer_id=event.subject,
                        channel=effect.channel,
                        template=effect.template,
                        category=effect.category,
                        journey_id=journey.id,
                        journey_version=journey.version,
                        run_id=run_id,
                        step=effect.step,
                        requested_at=now,
                        recipient=profile.recipient(),
                        data={
                            "event": {
                                "type": event.type,
                                "id": event.event_id,
                                "properties": event.properties,
                            }
                        },
                    )
                    outgoing.append(
                        OutgoingRecord(
                            topic=MESSAGES,
                            key=request.key,
                            value=request.to_json(),
                            headers=request.headers(),
                        )
                    )

    await uow.profiles.save(profiles[k] for k in subjects)
    await uow.instances.add(new_instances)
    await uow.emit(outgoing)
    await uow.processed.mark(batch_ids, at=now)
    await uow.commit()
    return len(fresh)
