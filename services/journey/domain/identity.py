"""Identity resolution: when two customer records turn out to be one person, merge them.

An anonymous visitor (stored as ``anon:<id>``) who signs up, an ``identify`` carrying both ids, or
an ``alias`` naming a previous id links a *source* record to a *target* customer. ``merge``
folds everything the journey service knows of the source into the target:

- traits: the target's win, the source fills what the target lacks (the known customer's own
  data is the better source); first seen the earlier, last seen the later;
- profile: order aggregates added up (orders both records saw by the same id counted once),
  the later open, click and engagement; remembered orders joined;
- lead score: each rule's points added, decayed to the later of the two references, so the
  merged score is exactly the sum of the two scores at any instant;
- segment windows: event times joined; membership is decided again after the merge;
- runs: the source's runs move to the target (same run ids, so their message ids do not change),
  except one of a journey (and key) the target is already running, which exits as ``merged``;
- entries and the send ledger are joined, so re-entry rules and frequency caps count both.

Pure: the caller deletes the source's rows, records the alias, and decides band, stage and
segments again (``customer.merge_into`` does both for the engine).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from decimal import Decimal

from services.journey.domain import engine
from services.journey.domain.intelligence import TIMELINE, Facts
from services.journey.domain.profile import RECENT_ORDERS, OrderEntry, Profile
from services.journey.domain.scoring import RuleState, ScoreRules, ScoreState
from services.journey.domain.segments import SegmentDefinition, SegmentState

MERGED = "merged"
"""The exit reason of a source run whose journey the target was already running."""


def links(
    *, type: str, customer_id: str | None, anonymous_id: str | None, properties: dict[str, object]
) -> list[str]:
    """The subjects an event says are the customer ``customer_id``: its anonymous id, and for
    ``alias`` the previous id (as a customer id and as an anonymous id: the sender cannot say
    which it was)."""
    if not customer_id:
        return []
    found = []
    if anonymous_id:
        found.append(f"anon:{anonymous_id}")
    if type == "alias":
        previous = properties.get("previous_id")
        if isinstance(previous, str) and previous and previous != customer_id:
            found.extend([previous, f"anon:{previous}"])
    return [s for s in dict.fromkeys(found) if s != customer_id]


def earlier(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def later(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


def merge_profiles(target: Profile, source: Profile) -> Profile:
    """The profile of both records: aggregates added, an order both saw counted once."""
    mine = {e.order_id: e for e in target.recent_orders}
    twice = [e for e in source.recent_orders if e.order_id in mine]
    merged = Profile(
        first_order_at=earlier(target.first_order_at, source.first_order_at),
        last_order_at=later(target.last_order_at, source.last_order_at),
        order_count=target.order_count + source.order_count,
        revenue=target.revenue + source.revenue,
        revenue_original=dict(target.revenue_original),
        unconverted_orders=target.unconverted_orders + source.unconverted_orders,
        discounted_orders=target.discounted_orders + source.discounted_orders,
        refunded=target.refunded + source.refunded,
        cancelled_orders=target.cancelled_orders + source.cancelled_orders,
        last_open_at=later(target.last_open_at, source.last_open_at),
        last_click_at=later(target.last_click_at, source.last_click_at),
        last_engaged_at=later(target.last_engaged_at, source.last_engaged_at),
        marketing_sends_since_engaged=_sends_since(target, source),
    )
    for currency, amount in source.revenue_original.items():
        merged.revenue_original[currency] = (
            merged.revenue_original.get(currency, Decimal(0)) + amount
        )
    kept = {e.order_id: e for e in source.recent_orders}
    for entry in twice:
        # Seen by both: counted once, as the copy that saw more of it (a refund, a cancellation
        # that only one record saw) tells it; the other copy is taken back out.
        if _further(entry, mine[entry.order_id]):
            _uncount(merged, mine[entry.order_id])
        else:
            _uncount(merged, entry)
            kept[entry.order_id] = mine[entry.order_id]
    kept.update({i: e for i, e in mine.items() if i not in kept})
    merged.recent_orders = sorted(kept.values(), key=lambda e: e.at)[-RECENT_ORDERS:]
    return merged


def _further(a: OrderEntry, b: OrderEntry) -> bool:
    """Whether copy ``a`` of an order has seen more of it than copy ``b``: its cancellation, or
    more refunded."""
    return (a.cancelled, a.taken_off) > (b.cancelled, b.taken_off)


def _uncount(p: Profile, entry: OrderEntry) -> None:
    if entry.cancelled:
        p.cancelled_orders -= 1
        return
    p.order_count -= 1
    if entry.discounted:
        p.discounted_orders -= 1
    remaining = entry.total - entry.taken_off
    p.revenue_original[entry.currency] = (
        p.revenue_original.get(entry.currency, Decimal(0)) - remaining
    )
    if entry.rate is None:
        p.unconverted_orders -= 1
    else:
        p.revenue -= remaining * entry.rate
        p.refunded -= entry.taken_off * entry.rate


def _sends_since(target: Profile, source: Profile) -> int:
    """Marketing sends since the later engagement of the two: the other record's sends before
    it do not count."""
    t, s = target.last_engaged_at, source.last_engaged_at
    if t is None and s is None:
        return target.marketing_sends_since_engaged + source.marketing_sends_since_engaged
    if s is None or (t is not None and t >= s):
        return target.marketing_sends_since_engaged
    return source.marketing_sends_since_engaged


def merge_scores(target: ScoreState, source: ScoreState, rules: ScoreRules) -> ScoreState:
    """Each rule's points of both, decayed to the later reference: the sum of both scores."""
    merged = dict(target.rules)
    for rule_id, theirs in source.rules.items():
        ours = merged.get(rule_id)
        if ours is None:
            merged[rule_id] = theirs
            continue
        at = max(ours.at, theirs.at)
        points = sum(s.points * 0.5 ** ((at - s.at) / rules.half_life) for s in (ours, theirs))
        window = ours if (ours.window_start or at) >= (theirs.window_start or at) else theirs
        merged[rule_id] = RuleState(
            points=points,
            at=at,
            events=ours.events + theirs.events,
            window_start=window.window_start,
            window_points=window.window_points,
        )
    return ScoreState(merged)


def merge_windows(
    target: SegmentState, source: SegmentState, definitions: tuple[SegmentDefinition, ...]
) -> None:
    """Join the source's window event times into the target's (membership is decided anew)."""
    keep = {d.id: d for d in definitions}
    for segment, by_name in source.windows.items():
        definition = keep.get(segment)
        if definition is None:
            continue
        mine = target.windows.setdefault(segment, {})
        for name, times in by_name.items():
            joined = sorted({*mine.get(name, []), *times})
            mine[name] = joined[-definition.keep(name) :]


def merge_facts(
    target: Facts,
    source: Facts,
    *,
    rules: ScoreRules,
    definitions: tuple[SegmentDefinition, ...],
) -> None:
    target.profile = merge_profiles(target.profile, source.profile)
    target.lead = merge_scores(target.lead, source.lead, rules)
    merge_windows(target.segments, source.segments, definitions)
    if not target.insights:
        target.insights = dict(source.insights)
    timeline = sorted({*target.timeline, *source.timeline})
    target.timeline = timeline[-TIMELINE:]


def move_run(instance: engine.Instance, customer_id: str) -> engine.Instance:
    return replace(instance, customer_id=customer_id)


__all__ = [
    "MERGED",
    "earlier",
    "later",
    "links",
    "merge_facts",
    "merge_profiles",
    "merge_scores",
    "merge_windows",
    "move_run",
]
