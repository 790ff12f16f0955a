"""HTTP API of customers (admin keys; the key decides the workspace):

- ``GET /v1/customers/{id}``: what the journey service knows of a customer: traits, profile,
  lead score with its explanation, lifecycle stage, segments, RFM, predictions, active runs and a
  recent timeline;
- ``GET /v1/customers/{id}/export``: everything it holds on them, for a data-subject access
  request (with dispatch's rows when dispatch shares the database);
- ``DELETE /v1/customers/{id}``: erase them (GDPR): every journey row goes at once, which ends
  their runs, and an erasure request goes to the other services through the outbox.

An id merged into another customer (identity resolution) stands for that customer. An anonymous
customer is ``anon:<anonymous id>``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, status
from pydantic import BaseModel, Field
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from services.journey.adapters import customers as store
from services.journey.adapters import intelligence_config
from services.journey.adapters.repository import CustomerStates
from services.journey.domain import intelligence, lifecycle, scoring
from services.journey.domain.customer import CustomerState
from services.journey.domain.intelligence import Intelligence
from services.journey.entrypoints.http import CustomerId
from shared.clock import Clock
from shared.contracts.erasure import ErasureRequest, new_erasure_id
from shared.db.engine import session_factory
from shared.http import NotFound
from shared.tenancy.http import AdminPrincipal

log = logging.getLogger(__name__)

TIMELINE = 50
"""Timeline entries shown: the newest events and journey activity together."""
_DAY = 86_400.0

# ── Bodies ────────────────────────────────────────────────────────────────────────────────────


class ExplanationOut(BaseModel):
    rule: str = Field(description="The id of the score rule.")
    points_now: float = Field(description="The rule's share of the score now (after decay).")
    events: int = Field(description="Events that earned points under the rule.")
    last_event_at: datetime


class LeadOut(BaseModel):
    score: float = Field(description="The lead score now, decay applied, to two decimals.")
    band: str = Field(description="The band the score falls in now.")
    explanation: list[ExplanationOut] = Field(description="Each rule's share, largest first.")
    next_band_change_at: datetime | None = Field(
        description="When decay alone moves the score into another band; null: never."
    )


class StageOut(BaseModel):
    name: lifecycle.Stage = Field(description="The lifecycle stage now.")
    rhythm_days: float = Field(
        description="The customer's mean gap between orders in days (the workspace's default "
        "gap before a second order)."
    )
    at_risk_after: float = Field(description="Days without an order after which they are at risk.")
    lapsed_after: float = Field(description="Days without an order after which they are lapsed.")
    next_change_at: datetime | None = Field(
        description="When the stage moves on if no order comes; null: only an order changes it."
    )


class SegmentOut(BaseModel):
    id: str
    name: str
    entered_at: datetime


class RunOut(BaseModel):
    journey_id: str
    version: int
    run_id: str
    step: str | None
    status: str
    waiting: str | None = Field(description="`wait`, `wait_for` or `held`; null when not.")
    entered_at: datetime
    wake_at: datetime | None = Field(description="When the run's timer fires next.")


class TimelineEntry(BaseModel):
    at: datetime
    source: Literal["event", "journey"] = Field(
        description="`event`: an event the customer did or got; `journey`: a decision a journey "
        "took about them (skipped, held, exited, goal)."
    )
    type: str = Field(description="The event type, or the journey activity kind.")
    event_id: str | None = None
    journey_id: str | None = None
    version: int | None = None
    run_id: str | None = None
    step: str | None = None
    reason: str | None = None
    detail: dict[str, Any] | None = None


class CustomerOut(BaseModel):
    id: str = Field(description="The customer's id (`anon:<id>` for an anonymous customer).")
    merged_from: list[str] = Field(
        description="Ids merged into this customer (an anonymous id, an old customer id)."
    )
    traits: dict[str, Any]
    scores: dict[str, float] = Field(description="Scores set by journey `update` steps.")
    first_seen_at: datetime | None
    last_seen_at: datetime | None
    profile: dict[str, Any] = Field(
        description="Order and engagement aggregates: what conditions read under `profile.`."
    )
    lead: LeadOut
    stage: StageOut
    segments: list[SegmentOut] = Field(description="The segments the customer is in.")
    rfm: dict[str, Any] | None = Field(description="RFM scores from the scheduled job.")
    predictions: dict[str, Any] | None = Field(
        description="Predicted purchases and value from the scheduled job."
    )
    insights_computed_at: str | None = Field(
        description="When the scheduled job computed `rfm` and `predictions`."
    )
    journeys: list[RunOut] = Field(description="Active runs.")
    timeline: list[TimelineEntry] = Field(description=f"Newest first, at most {TIMELINE}.")


class ExportOut(BaseModel):
    workspace_id: str
    customer_id: str
    exported_at: datetime
    customer: CustomerOut | None = Field(
        description="The customer as GET /v1/customers/{id} shows them (null when only rows of "
        "merged ids are left)."
    )
    journey: dict[str, list[dict[str, Any]]] = Field(
        description="Every row of the journey service about the customer and the ids merged "
        "into them, by table: profile rows, every run, every activity record, timers, orders, "
        "segment memberships, identities."
    )
    dispatch: dict[str, list[dict[str, Any]]] | None = Field(
        description="Dispatch's rows (messages, what the local sink recorded, suppressions, "
        "discount codes), by table, when dispatch shares this database; null when dispatch "
        "keeps its own database, which this service cannot read."
    )


class ErasureOut(BaseModel):
    erasure_id: str = Field(description="The erasure's id (the erasure log keeps nothing else).")
    requested_at: datetime
    removed: dict[str, int] = Field(
        description="Rows removed per journey table (`journey_backfills`: cursors moved off the "
        "customer). Dispatch erases its rows on its own, shortly after."
    )


_AUTH: dict[int | str, dict[str, Any]] = {
    401: {"description": "No API key, or an unknown or revoked one"},
    403: {"description": "The key is not an admin key"},
    429: {"description": "Rate limit of the key exceeded; see Retry-After"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such customer in this workspace"}
}


# ── The router ────────────────────────────────────────────────────────────────────────────────


def customers_router(*, engine: AsyncEngine, clock: Clock) -> APIRouter:
    sessions = session_factory(engine)
    router = APIRouter(prefix="/v1")

    async def rules(session: AsyncSession, workspace: str) -> Intelligence:
        rows, documents = await intelligence_config.load(await session.connection(), [workspace])
        return intelligence_config.intelligence_of(
            workspace, rows.get(workspace), documents.get(workspace, ())
        )

    async def view(
        session: AsyncSession, workspace: str, subject: store.Subject, now: datetime
    ) -> CustomerOut | None:
        key = (workspace, subject.customer_id)
        state = (await CustomerStates(session).load([key], now=now, lock=False)).get(key)
        if state is None:
            return None
        recent = await store.recent_activity(
            session, workspace, subject.customer_id, limit=TIMELINE
        )
        return customer_view(
            state,
            await rules(session, workspace),
            now=now,
            activity=recent,
            merged_from=subject.aliases,
        )

    @router.get(
        "/customers/{customer_id:customer}",
        response_model=CustomerOut,
        tags=["customers"],
        summary="A customer: profile, lead score, stage, segments, predictions, runs, timeline",
        description="An id merged into another customer answers for that customer. An "
        "anonymous customer is `anon:<anonymous id>` (URL-encoded: `anon%3A...`).",
        responses={**_AUTH, **_NOT_FOUND},
    )
    async def get_customer(customer_id: CustomerId, principal: AdminPrincipal) -> CustomerOut:
        now = clock.now()
        async with sessions() as session:
            subject = await store.resolve(session, principal.workspace_id, customer_id)
            found = await view(session, principal.workspace_id, subject, now)
        if found is None:
            raise missing(customer_id)
        return found

    @router.get(
        "/customers/{customer_id:path}/export",
        response_model=ExportOut,
        tags=["customers"],
        summary="Everything held on a customer, as JSON (data-subject access request)",
        description="Every journey row about the customer and the ids merged into them, and "
        "dispatch's rows when dispatch shares the database (embedded mode). With a separate "
        "dispatch database, `dispatch` is null.",
        responses={**_AUTH, **_NOT_FOUND},
    )
    async def export_customer(customer_id: CustomerId, principal: AdminPrincipal) -> ExportOut:
        workspace, now = principal.workspace_id, clock.now()
        async with sessions() as session:
            subject = await store.resolve(session, workspace, customer_id)
            customer = await view(session, workspace, subject, now)
            journey = await store.export_rows(session, workspace, subject)
            dispatch = await store.dispatch_rows(session, workspace, subject)
        held = [*journey.values(), *(dispatch or {}).values()]
        if customer is None and not any(held):
            raise missing(customer_id)
        return ExportOut(
            workspace_id=workspace,
            customer_id=subject.customer_id,
            exported_at=now,
            customer=customer,
            journey=journey,
            dispatch=dispatch,
        )

    @router.delete(
        "/customers/{customer_id:customer}",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=ErasureOut,
        tags=["customers"],
        summary="Erase a customer (GDPR): from the journey service now, from dispatch shortly",
        description="Deletes the customer's rows (and those of ids merged into them) from every "
        "journey table in one transaction, which stops their journeys at once, and sends an "
        "erasure request to dispatch, which deletes their messages (held ones too: nothing is "
        "sent after) and keeps suppressions (an opt-out must be honoured). The erasure log keeps "
        "the erasure id, the workspace, the time and the counts, never the customer. Erasing an "
        "unknown customer is not an error: the counts are 0 and dispatch is still asked, as it "
        "may know them. Events about the customer that arrive later create a new profile.",
        responses=_AUTH,
    )
    async def erase_customer(customer_id: CustomerId, principal: AdminPrincipal) -> ErasureOut:
        workspace, now = principal.workspace_id, clock.now()
        async with sessions() as session, session.begin():
            subject = await store.resolve(session, workspace, customer_id)
            request = ErasureRequest(
                erasure_id=new_erasure_id(),
                workspace_id=workspace,
                customer_id=subject.customer_id,
                aliases=list(subject.aliases),
                requested_at=now,
            )
            removed = await store.erase(session, request)
        log.info(
            "customer erased",
            extra={"erasure_id": request.erasure_id, "workspace_id": workspace, "removed": removed},
        )
        return ErasureOut(erasure_id=request.erasure_id, requested_at=now, removed=removed)

    return router


def missing(customer_id: str) -> NotFound:
    return NotFound(f"no customer {customer_id!r} in this workspace", field="customer_id")


# ── The view ──────────────────────────────────────────────────────────────────────────────────


def customer_view(
    state: CustomerState,
    intel: Intelligence,
    *,
    now: datetime,
    activity: Sequence[Row[Any]],
    merged_from: Sequence[str] = (),
) -> CustomerOut:
    """The customer as the API shows them: score and stage as of ``now`` (what the worker would
    decide now), segments as last decided."""
    facts = state.facts
    rules = intel.score_rules
    lead = intelligence.lead_view(facts, intel, now)
    limits = lifecycle.thresholds(facts.profile, intel.lifecycle)
    stage = lifecycle.stage_at(facts.profile, facts.stage, now, intel.lifecycle)
    segments = [
        SegmentOut(
            id=segment_id,
            name=definition.name if (definition := intel.segment(segment_id)) else segment_id,
            entered_at=entered_at,
        )
        for segment_id, entered_at in sorted(
            facts.segments.members.items(), key=lambda item: (item[1], item[0])
        )
    ]
    runs = sorted(
        (run for run in state.instances.values() if run.active),
        key=lambda run: (run.entered_at, run.run_id),
    )
    insights = facts.insights
    computed_at = insights.get("computed_at")
    return CustomerOut(
        id=state.customer_id,
        merged_from=list(merged_from),
        traits=state.traits,
        scores=state.scores,
        first_seen_at=state.first_seen_at,
        last_seen_at=state.last_seen_at,
        profile=facts.profile.view(
            now, first_seen_at=state.first_seen_at, last_seen_at=state.last_seen_at
        ),
        lead=LeadOut(
            score=lead["score"],
            band=lead["band"],
            explanation=[
                ExplanationOut.model_validate(line)
                for line in scoring.explain(facts.lead, rules, now)
            ],
            next_band_change_at=scoring.next_band_change_at(facts.lead, rules, now),
        ),
        stage=StageOut(
            name=stage,
            rhythm_days=round(limits.rhythm.total_seconds() / _DAY, 2),
            at_risk_after=round(limits.at_risk.total_seconds() / _DAY, 2),
            lapsed_after=round(limits.lapsed.total_seconds() / _DAY, 2),
            next_change_at=lifecycle.next_change_at(facts.profile, stage, now, intel.lifecycle),
        ),
        segments=segments,
        rfm=insights.get("rfm") or None,
        predictions=insights.get("predictions") or None,
        insights_computed_at=str(computed_at) if computed_at is not None else None,
        journeys=[
            RunOut(
                journey_id=run.journey_id,
                version=run.version,
                run_id=run.run_id,
                step=run.step,
                status=run.status,
                waiting=run.waiting,
                entered_at=run.entered_at,
                wake_at=run.wake_at,
            )
            for run in runs
        ],
        timeline=timeline(state, activity),
    )


def timeline(state: CustomerState, activity: Sequence[Row[Any]]) -> list[TimelineEntry]:
    """The customer's recent events and journey activity, newest first."""
    entries = [
        TimelineEntry(at=at, source="event", type=kind, event_id=event_id)
        for at, kind, event_id in reversed(state.facts.timeline)
    ]
    entries.extend(
        TimelineEntry(
            at=r.at,
            source="journey",
            type=r.kind,
            journey_id=r.journey_id,
            version=r.version,
            run_id=r.run_id,
            step=r.step,
            reason=r.reason,
            detail=dict(r.detail or {}),
        )
        for r in activity
    )
    # Newest first (both lists already are; the sort is stable, so entries of one instant keep
    # that order), and at one instant a journey's decision above the events that caused it.
    entries.sort(key=lambda e: (e.at, e.source == "journey"), reverse=True)
    return entries[:TIMELINE]
