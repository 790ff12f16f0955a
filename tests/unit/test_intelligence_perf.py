"""The shortcuts that keep customer-intelligence upkeep cheap give the answers of the plain code.

Compiled conditions, the lazy profile view, the cached instant texts, the segment index and the
scoring shortcuts each replace a straightforward computation that the rest of the suite pins
down; here each is compared with that computation on the cases where they could part ways.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest
from pydantic import TypeAdapter

from services.journey.domain import builtin_segments, conditions, intelligence, scoring, segments
from services.journey.domain.conditions import Condition, Layered
from services.journey.domain.intelligence import Facts, FactsView, Intelligence
from services.journey.domain.profile import OrderEntry, Profile, ProfileView
from services.journey.domain.scoring import RuleState, ScoreRules, ScoreState
from services.journey.domain.segments import SegmentState, parse_segment

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
CONDITION: TypeAdapter[Condition] = TypeAdapter(Condition)


def condition(document: dict[str, Any]) -> Condition:
    return CONDITION.validate_python(document)


# ── Compiled conditions ───────────────────────────────────────────────────────────────────────

VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    2,
    2.5,
    -3,
    "2",
    "63.90",
    "abc",
    "",
    [1, "a"],
    {"k": 1},
    Decimal("2"),
    "2026-08-01T09:00:00Z",
    NOW - 100 * DAY,
    "not a date",
]
"""What a field may hold: numbers, booleans, decimal strings, words, lists, maps, instants."""

LITERALS: dict[str, list[Any]] = {
    "eq": [1, 2, 2.5, "2", True, False, None, "abc", [1, "a"]],
    "ne": [1, "abc", True, None],
    "gt": [1, 2, 2.5, "2", "abc"],
    "gte": [2, 0, "63.9", "a"],
    "lt": [2, 3.5, "b"],
    "lte": [2, -3, "abc"],
    "in": [[1, 2], ["abc", True], [None, 2.5]],
    "contains": ["a", 1, True],
    "exists": [None, True, False],
    "older_than": ["P90D", "PT1H"],
    "within": ["P90D", "P1D"],
}


def contexts(value: Any) -> list[Any]:
    """The same field value seen through each kind of mapping a condition meets: plain dicts,
    ``Layered`` chains (segments, journeys), and a value missing at each level."""
    plain = {"p": {"x": value}, "now": NOW}
    return [
        plain,
        Layered({"now": NOW}, {"p": {"x": value}}),
        Layered({"now": NOW}, Layered({"p": Layered({}, {"x": value})}, {})),
        {"p": {}, "now": NOW},
        {"now": NOW},
        {"p": value, "now": NOW},
        {"p": {"x": value}},  # no now: time comparisons are false
    ]


def test_every_comparison_compiles_to_what_evaluate_answers() -> None:
    checked = 0
    for op, literals in LITERALS.items():
        for literal, value in itertools.product(literals, VALUES):
            c = condition({"field": "p.x", "op": op, "value": literal})
            compiled = conditions.compile_condition(c)
            for context in contexts(value):
                assert compiled(context) == conditions.evaluate(c, context), (op, literal, value)
                checked += 1
    assert checked > 1000


def test_all_any_and_not_compile_to_what_evaluate_answers() -> None:
    c = condition(
        {
            "all": [
                {"field": "p.x", "op": "gte", "value": 2},
                {
                    "any": [
                        {"field": "p.y", "op": "eq", "value": "a"},
                        {"not": {"field": "p.z", "op": "exists"}},
                    ]
                },
            ]
        }
    )
    compiled = conditions.compile_condition(c)
    outcomes = set()
    for x, y, z in itertools.product([1, 2, "3", None], ["a", "b"], [None, 1]):
        p: dict[str, Any] = {"x": x, "y": y}
        if z is not None:
            p["z"] = z
        context = Layered({"now": NOW}, {"p": p})
        expected = conditions.evaluate(c, context)
        assert compiled(context) == expected
        outcomes.add(expected)
    assert outcomes == {True, False}


def test_a_compiled_condition_reads_through_a_non_dict_mapping() -> None:
    c = condition({"field": "profile.order_count", "op": "eq", "value": 1})
    profile = Profile(order_count=1)
    context = Layered({"now": NOW}, {"profile": ProfileView(profile, NOW)})
    assert conditions.compile_condition(c)(context) is True
    assert conditions.evaluate(c, context) is True


def test_boundary_finder_finds_what_boundaries_finds() -> None:
    c = condition(
        {
            "any": [
                {"field": "p.a", "op": "older_than", "value": "P90D"},
                {"not": {"field": "p.b", "op": "within", "value": "PT1H"}},
                {"field": "p.c", "op": "gte", "value": 1},
            ]
        }
    )
    find = conditions.boundary_finder(c)
    for a, b in itertools.product(
        [None, "2026-10-01T00:00:00Z", NOW, "garbage", datetime(9999, 12, 31, tzinfo=UTC)],
        [None, NOW - DAY, "2026-11-01"],
    ):
        context = {"p": {"a": a, "b": b, "c": 2}}
        assert find(context) == conditions.boundaries(c, context)


# ── The lazy profile view ─────────────────────────────────────────────────────────────────────


def a_profile() -> Profile:
    first, last = NOW - 40 * DAY, NOW - 3 * DAY
    return Profile(
        first_order_at=first,
        last_order_at=last,
        order_count=2,
        revenue=Decimal("80.5"),
        revenue_original={"USD": Decimal("10"), "EUR": Decimal("70.5")},
        discounted_orders=1,
        refunded=Decimal("1.25"),
        last_open_at=NOW - DAY,
        last_engaged_at=NOW - DAY,
        marketing_sends_since_engaged=2,
        recent_orders=[
            OrderEntry("o1", first, "EUR", Decimal("70.5"), Decimal(1)),
            OrderEntry("o2", last, "USD", Decimal("10"), None),
        ],
    )


@pytest.mark.parametrize("profile", [Profile(), a_profile()], ids=["empty", "two orders"])
@pytest.mark.parametrize("seen", [None, (NOW - 60 * DAY, NOW - DAY)], ids=["unseen", "seen"])
def test_profile_view_reads_each_name_as_the_view_has_it(
    profile: Profile, seen: tuple[datetime, datetime] | None
) -> None:
    first, last = seen or (None, None)
    eager = profile.view(NOW, first_seen_at=first, last_seen_at=last)
    lazy = ProfileView(profile, NOW, first_seen_at=first, last_seen_at=last)
    assert list(lazy) == list(eager)
    assert len(lazy) == len(eager)
    assert {name: lazy[name] for name in reversed(list(eager))} == eager
    assert dict(lazy) == eager
    assert "nope" not in lazy
    assert lazy.get("nope", 7) == 7
    with pytest.raises(KeyError):
        lazy["nope"]


def test_refresh_decides_on_the_lazy_view_as_on_the_eager_one() -> None:
    """A workspace segment on profile names, decided by ``refresh`` (lazy view), agrees with
    the same condition over ``context`` (eager view)."""
    segment = parse_segment(
        {
            "id": "lapsing_spender",
            "name": "Lapsing spender",
            "condition": {
                "all": [
                    {"field": "profile.revenue", "op": "gte", "value": 50},
                    {"field": "profile.last_order_at", "op": "older_than", "value": "P2D"},
                    {"field": "profile.last_seen_at", "op": "exists"},
                ]
            },
        }
    )
    intel = Intelligence(segments=(segment,))
    facts = Facts(profile=a_profile())
    derived = intelligence.refresh(
        facts,
        traits={},
        first_seen_at=NOW - 60 * DAY,
        last_seen_at=NOW - DAY,
        intel=intel,
        now=NOW,
        cause="e",
        workspace_id="w",
        customer_id="c",
    )
    eager = intelligence.context(
        facts,
        traits={},
        first_seen_at=NOW - 60 * DAY,
        last_seen_at=NOW - DAY,
        intel=intel,
        now=NOW,
    )
    assert segment.condition is not None and conditions.evaluate(segment.condition, eager)
    assert "lapsing_spender" in facts.segments.members
    assert [d.type for d in derived if d.type.startswith("segment_")] == ["segment_entered"]


def test_facts_view_get_is_its_mapping() -> None:
    view = FactsView(
        Facts(), first_seen_at=None, last_seen_at=None, intel=Intelligence(), now=NOW, lazy=True
    )
    assert isinstance(view["profile"], ProfileView)
    assert view.get("stage") == "subscriber"
    assert view.get("customer", "absent") == "absent"
    eager = FactsView(Facts(), first_seen_at=None, last_seen_at=None, intel=Intelligence(), now=NOW)
    assert isinstance(eager["profile"], dict)
    assert dict(view["profile"]) == eager["profile"]


# ── Instants as text ──────────────────────────────────────────────────────────────────────────


def test_utc_text_is_the_rfc3339_text_in_utc_whatever_the_zone() -> None:
    at = datetime(2026, 11, 2, 9, 0, 1, 500000, tzinfo=UTC)
    paris = at.astimezone(timezone(timedelta(hours=1)))
    assert conditions.utc_text(paris) == "2026-11-02T09:00:01.500000Z"
    assert conditions.utc_text(at) == "2026-11-02T09:00:01.500000Z"
    assert conditions.utc_text(at.replace(microsecond=0)) == "2026-11-02T09:00:01Z"
    assert conditions.utc_text(at.replace(microsecond=7)) == "2026-11-02T09:00:01.000007Z"
    # What pydantic reads an event's time as (its own tzinfo), and a datetime subclass.
    parsed = TypeAdapter(datetime).validate_python("2026-11-02T10:00:01.25+01:00")
    assert parsed.tzinfo is not UTC

    class Moment(datetime):
        pass

    moment = Moment(2026, 11, 2, 9, 0, 1, tzinfo=UTC)
    instants = (paris, at, NOW - 3 * DAY, parsed, moment, datetime(1, 1, 1, tzinfo=UTC))
    for instant in instants:
        assert conditions.utc_text(instant) == (
            instant.astimezone(UTC).isoformat().replace("+00:00", "Z")
        )
    assert conditions.utc_text(parsed) == "2026-11-02T09:00:01.250000Z"
    assert conditions.utc_text(moment) == "2026-11-02T09:00:01Z"


def test_facts_round_trip_through_json_with_cached_texts() -> None:
    facts = Facts(profile=a_profile())
    facts.timeline = [(NOW - DAY, "page_viewed", "e1"), (NOW, "order_completed", "e2")]
    facts.segments = SegmentState(
        members={"one_time_buyer": NOW},
        windows={"viewed_product_3x_7d": {"views": [NOW - DAY, NOW]}},
    )
    facts.lead = ScoreState({"product-viewed": RuleState(2.0, NOW, 1, NOW, 2.0)})
    stored = facts.to_json()
    assert stored["timeline"][1] == ["2026-11-02T09:00:00Z", "order_completed", "e2"]
    again = Facts.from_row(**stored, stage=None, due=None)
    assert again.to_json() == stored
    assert again.timeline == facts.timeline
    assert again.segments == facts.segments
    assert again.lead == facts.lead


# ── Profiles read back ────────────────────────────────────────────────────────────────────────


def test_a_stored_profile_with_nothing_yet_reads_as_a_new_one() -> None:
    assert Profile().to_json() == {"v": 1}
    assert Profile.from_json({"v": 1}) == Profile()
    assert Profile.from_json({}) == Profile()
    # One name and no version: still read in full, not taken for an empty profile.
    assert Profile.from_json({"order_count": 3}).order_count == 3
    with pytest.raises(ValueError, match="unknown profile version"):
        Profile.from_json({"v": 2})


# ── Scoring ───────────────────────────────────────────────────────────────────────────────────


class Event:
    def __init__(self, kind: str, properties: dict[str, Any] | None = None) -> None:
        self.type = kind
        self.properties = properties or {}
        self.occurred_at = NOW


def rules() -> ScoreRules:
    return ScoreRules.model_validate(
        {
            "rules": [
                {"id": "a", "event": "product_viewed", "points": 2},
                {"id": "big", "event": "order_completed", "points": 40},
                {
                    "id": "b",
                    "event": "product_viewed",
                    "points": 3,
                    "where": {"field": "event.properties.sale", "op": "eq", "value": True},
                },
            ]
        }
    )


def test_score_rules_index_their_rules_by_event_in_rule_order() -> None:
    r = rules()
    assert r.ids == {"a", "big", "b"}
    assert [rule.id for rule in r.by_event["product_viewed"]] == ["a", "b"]
    assert "page_viewed" not in r.by_event


def test_apply_matches_rules_in_order_with_their_where() -> None:
    sale = Event("product_viewed", {"sale": True})
    state, earned = scoring.apply(ScoreState(), rules(), sale, NOW)
    assert [c.rule for c in earned] == ["a", "b"]
    assert set(state.rules) == {"a", "b"}
    state, earned = scoring.apply(ScoreState(), rules(), Event("product_viewed", {}), NOW)
    assert [c.rule for c in earned] == ["a"]


def test_an_event_no_rule_scores_leaves_the_state_as_it_is() -> None:
    before = ScoreState({"a": RuleState(2.0, NOW - DAY, 1)})
    after, earned = scoring.apply(before, rules(), Event("page_viewed"), NOW)
    assert after == before and earned == []


def test_an_event_no_rule_scores_still_drops_rules_no_longer_declared() -> None:
    before = ScoreState({"a": RuleState(2.0, NOW - DAY, 1), "gone": RuleState(9.0, NOW, 1)})
    after, earned = scoring.apply(before, rules(), Event("page_viewed"), NOW)
    assert set(after.rules) == {"a"} and earned == []


@pytest.mark.parametrize("points", [0.0, 5.0, 19.999, 20.0, 61.0, -4.0])
def test_band_decisions_given_the_score_are_those_that_compute_it(points: float) -> None:
    r = ScoreRules.model_validate(
        {
            "bands": [{"name": "cold"}, {"name": "warm", "min": 20}, {"name": "hot", "min": 60}],
            "rules": [{"id": "a", "event": "x", "points": 1}],
        }
    )
    state = ScoreState({"a": RuleState(points, NOW - DAY, 1)}) if points else ScoreState()
    value = scoring.score(state, r, NOW)
    for previous in (None, "cold", "warm", "hot"):
        assert scoring.band_change(previous, state, r, NOW, value=value) == (
            scoring.band_change(previous, state, r, NOW)
        )
    assert scoring.next_band_change_at(state, r, NOW, value=value) == (
        scoring.next_band_change_at(state, r, NOW)
    )


# ── Segments ──────────────────────────────────────────────────────────────────────────────────


def own_segments() -> tuple[segments.SegmentDefinition, ...]:
    extra = [
        parse_segment(
            {
                "id": "warm_vip",
                "name": "Warm VIP",
                "condition": {
                    "all": [
                        {"field": "customer.vip", "op": "eq", "value": True},
                        {"field": "lead.band", "op": "eq", "value": "warm"},
                    ]
                },
            }
        ),
        parse_segment(
            {
                "id": "carts",
                "name": "Carts",
                "windows": [
                    {"name": "carts", "event": "cart_updated", "within": "P1D", "min_count": 2}
                ],
            }
        ),
    ]
    return intelligence.with_segments(
        intelligence.builtin(), [*builtin_segments.examples(), *extra]
    )


def test_affected_is_every_segment_that_reads_what_was_touched() -> None:
    intel = Intelligence(segments=own_segments())
    keys = {key for d in intel.segments for key in d.reads} | {f"#{d.id}" for d in intel.segments}
    keys |= {"profile.last_seen_at", "customer.email", "#nope"}
    for size in (0, 1, 2, 3):
        for touched in itertools.combinations(sorted(keys), size):
            expected = {
                d.id
                for d in intel.segments
                if f"#{d.id}" in touched or not d.reads.isdisjoint(touched)
            }
            assert intel.affected(set(touched)) == expected


def test_the_windows_on_an_event_type_are_those_that_count_it() -> None:
    intel = Intelligence(segments=own_segments())
    found = {kind: [(d.id, w.name) for d, w in pairs] for kind, pairs in intel.windows_on.items()}
    assert found == {
        "product_viewed": [("viewed_product_3x_7d", "views")],
        "cart_updated": [("carts", "carts")],
    }


def test_segments_that_time_cannot_change_are_known() -> None:
    moving = {d.id for d in own_segments() if d.moves_with_time}
    assert moving == {"no_order_90d", "occasional", "regular", "viewed_product_3x_7d", "carts"}


def test_next_change_skipping_timeless_segments_is_the_change_of_all() -> None:
    """``next_change`` looks only at segments time can change; the answer is the earliest over
    all segments, each tried with ``_change``."""
    definitions = own_segments()
    state = SegmentState(windows={"viewed_product_3x_7d": {"views": [NOW - 5 * DAY, NOW - DAY]}})
    for last_order in (None, NOW - 80 * DAY, NOW - 2 * DAY):
        profile = Profile(order_count=3 if last_order else 0, last_order_at=last_order)
        context = Layered(
            {"customer": {"vip": True}, "now": NOW},
            {"profile": profile.view(NOW), "lead": {"score": 0.0, "band": "cold"}},
        )
        found = segments.next_change(state, definitions, context, NOW)
        changes = [
            (at, d.id)
            for d in definitions
            if (at := segments._change(state, d, context, NOW, before=None)) is not None
        ]
        assert found == (min(changes) if changes else None)


def _refresh_seen(
    facts: Facts, intel: Intelligence, now: datetime, cause: str
) -> list[intelligence.Derived]:
    """``refresh`` of customer c, first seen 20 days before NOW and last seen at NOW."""
    return intelligence.refresh(
        facts,
        traits={},
        first_seen_at=NOW - 20 * DAY,
        last_seen_at=NOW,
        intel=intel,
        now=now,
        cause=cause,
        workspace_id="w",
        customer_id="c",
    )


def test_refresh_after_an_event_that_touches_no_segment_keeps_the_next_change() -> None:
    """No segment decided and the kept change still ahead: nothing about segments moves."""
    intel = Intelligence(segments=tuple(builtin_segments.load()))
    facts = Facts(profile=Profile(order_count=1, last_order_at=NOW - 10 * DAY))

    def decide(now: datetime, cause: str) -> list[intelligence.Derived]:
        return _refresh_seen(facts, intel, now, cause)

    decide(NOW, "first")
    kept, members = facts.segment_next, dict(facts.segments.members)
    assert kept is not None and kept[1] == "no_order_90d"
    facts.touched.add("profile.last_seen_at")  # read by no built-in segment
    assert decide(NOW + DAY, "second") == []
    assert facts.segment_next == kept
    assert facts.segments.members == members
    assert facts.due == kept[0]


# ── Deciding again at the same instant; the stored lead and timeline ──────────────────────────


class StreamEvent:
    """An event as ``apply_event`` reads it."""

    def __init__(
        self,
        event_id: str,
        kind: str,
        at: datetime,
        properties: dict[str, Any] | None = None,
        traits: dict[str, Any] | None = None,
    ) -> None:
        self.event_id, self.type, self.occurred_at = event_id, kind, at
        self.properties = properties or {}
        self.traits = traits or {}


def a_stream(seed: int, customers: int = 6, batches: int = 60) -> list[tuple[datetime, list[Any]]]:
    """Batches of events of a few customers, each batch handled at one instant (as the handler
    does): views, carts, checkouts, orders (some reported twice, some cancelled), emails sent,
    opened and clicked, traits that a segment reads; some late, some in another zone, and
    quiet days between batches so that timers fall due."""
    import random

    rng = random.Random(seed)
    kinds = [
        "page_viewed",
        "product_viewed",
        "product_viewed",
        "cart_updated",
        "checkout_started",
        "order_completed",
        "order_cancelled",
        "message_sent",
        "message_opened",
        "message_clicked",
        "identify",
        "segment_entered",
    ]
    zone = timezone(timedelta(hours=2))
    now = NOW
    stream: list[tuple[datetime, list[Any]]] = []
    orders: list[str] = []
    n = 0
    for _ in range(batches):
        now += rng.choice([timedelta(seconds=1), timedelta(hours=5), 3 * DAY, 40 * DAY])
        batch = []
        for _ in range(rng.randint(1, 8)):
            n += 1
            kind = rng.choice(kinds)
            at = now - rng.choice([timedelta(0), timedelta(seconds=1), timedelta(microseconds=1)])
            if rng.random() < 0.1:
                at -= rng.choice([DAY, 10 * DAY])  # late
            if rng.random() < 0.3:
                at = at.astimezone(zone)
            props: dict[str, Any] = {}
            traits: dict[str, Any] = {}
            if kind == "order_completed":
                order_id = rng.choice(orders) if orders and rng.random() < 0.2 else f"o{n}"
                orders.append(order_id)
                props = {"order_id": order_id, "total": str(rng.randint(5, 90)), "currency": "EUR"}
                if rng.random() < 0.4:
                    props["coupon"] = "SALE"
            elif kind == "order_cancelled" and orders:
                props = {"order_id": rng.choice(orders)}
            elif kind == "identify":
                traits = {"vip": rng.random() < 0.5}
            elif kind == "segment_entered":
                props = {"segment": "vip"}
            customer = f"c{rng.randrange(customers)}"
            batch.append((customer, StreamEvent(f"e{n}", kind, at, props, traits)))
        stream.append((now, batch))
    return stream


def run_stream(stream: list[tuple[datetime, list[Any]]], intel: Intelligence) -> list[Any]:
    """Every batch as the database handler takes it: the customers' facts read back from the
    JSON their save wrote, each event applied at the batch's instant, due intel timers fired;
    what came out (derived events, orders, messages, stored columns, timers), batch by batch."""
    from services.journey.adapters.repository import FACTS_JSON, facts_columns, load_facts_json
    from services.journey.domain.catalog import JourneyCatalog
    from services.journey.domain.customer import (
        INTEL_TIMER,
        CustomerState,
        apply_event,
        apply_timer,
    )
    from services.journey.domain.definitions import Journey
    from services.journey.domain.engine import Policy
    from shared.db.engine import dumps_json

    catalog = JourneyCatalog(
        [
            Journey.model_validate(
                {
                    "id": f"on-{segment}",
                    "version": 1,
                    "name": segment,
                    "trigger": {"segment": segment},
                    "start": "tag",
                    "steps": {
                        "tag": {"update": {"set_trait": "vip", "value": True}, "next": "hello"},
                        "hello": {"send": {"channel": "email", "template": segment}},
                    },
                }
            )
            for segment in ("one_time_buyer", "never_engaged")
        ]
    )
    policy = Policy()
    states: dict[str, CustomerState] = {}
    out: list[Any] = []
    for now, batch in stream:
        for s in states.values():  # save, then load: the facts as their JSON reads back
            columns = facts_columns(s.facts)
            row = {c: load_facts_json(dumps_json(columns[c])) for c in FACTS_JSON}
            due = s.facts.due
            s.facts = Facts.from_row(**row, stage=columns["stage"], due=due)
        for customer, event in batch:
            s = states.setdefault(customer, CustomerState("w", customer))
            changes = apply_event(
                s, event, catalog=catalog, policy=policy, now=now, live=True, intel=intel
            )
            for other in states.values():
                if other.facts.due is not None and other.facts.due <= now:
                    changes.extend(
                        apply_timer(other, INTEL_TIMER, catalog=catalog, policy=policy, now=now)
                    )
            out.append(
                (
                    [
                        (e.event_id, e.type, e.properties, e.occurred_at)
                        for _, e, _ in changes.events
                    ],
                    [(o.order_id, o.placed_at, o.value, o.cancelled) for _, o in changes.orders],
                    [m.send.message_id for m in changes.messages],
                )
            )
        out.append(
            {
                c: (dumps_json(facts_columns(s.facts)), s.timers(), dict(s.traits))
                for c, s in sorted(states.items())
            }
        )
    return out


@pytest.mark.parametrize("seed", range(6))
def test_deciding_again_at_the_same_instant_decides_as_the_plain_code(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Facts.banded`` lets a refresh at the instant of the last one skip the lead's score, band
    and next change, and the whole decision when nothing it reads moved. Without it
    (``_settled`` never true) every derived event, order, message, stored column and timer is
    the same."""
    stream = a_stream(seed)
    intel = Intelligence(currency="EUR")
    quick = run_stream(stream, intel)
    with monkeypatch.context() as m:
        m.setattr(intelligence, "_settled", lambda *args: False)
        plain = run_stream(stream, intel)
    assert quick == plain
    derived = [e for batch in quick if isinstance(batch, tuple) for e in batch[0]]
    assert len(derived) > 10  # the stream moves bands, stages and segments


def test_a_refresh_at_the_same_instant_with_nothing_moved_skips_the_decision() -> None:
    facts = Facts(profile=Profile(order_count=1, last_order_at=NOW - 10 * DAY))
    intel = Intelligence()

    def decide(cause: str) -> list[intelligence.Derived]:
        return _refresh_seen(facts, intel, NOW, cause)

    assert [e.type for e in decide("first")] == ["lifecycle_stage_changed", "segment_entered"]
    assert facts.banded is not None and facts.banded[:3] == (NOW, facts.lead, intel)
    due = facts.due
    facts.touched.add("profile.last_seen_at")  # read by no built-in segment, nor by stages
    assert decide("second") == [] and facts.due == due
    facts.touched.add("profile.order_count")  # stages read it: decided again, to the same
    assert decide("third") == [] and facts.due == due
    facts.profile.order_count = 0  # every order cancelled (observe reports it)
    facts.touched.add("profile.order_count")
    assert [e.type for e in decide("fourth")] == [
        "lifecycle_stage_changed",
        "segment_exited",
    ]


def test_the_timeline_is_stored_as_read_and_read_as_instants() -> None:
    """The timeline stays the stored text: an event appends its line, a late one goes where
    its instant (not its text) belongs, and ``timeline`` reads the instants."""
    stored = [
        ["2026-11-02T09:00:00Z", "page_viewed", "e1"],
        ["2026-11-02T09:00:00.500000Z", "product_viewed", "e2"],  # sorts before e1 as text
    ]
    facts = Facts.from_row(
        profile=None,
        lead=None,
        segment_state=None,
        insights=None,
        timeline=stored,
        stage=None,
        due=None,
    )
    assert facts.timeline == [
        (NOW, "page_viewed", "e1"),
        (NOW + timedelta(milliseconds=500), "product_viewed", "e2"),
    ]
    late = StreamEvent(
        "e3",
        "page_viewed",
        (NOW + timedelta(milliseconds=200)).astimezone(timezone(timedelta(hours=-5))),
    )
    after = StreamEvent("e4", "page_viewed", NOW + timedelta(seconds=1))
    intelligence._remember(facts, late)
    intelligence._remember(facts, after)
    assert [i for _, _, i in facts.timeline] == ["e1", "e3", "e2", "e4"]
    assert facts.to_json()["timeline"][1] == ["2026-11-02T09:00:00.200000Z", "page_viewed", "e3"]
    assert facts.to_json()["timeline"][:1] == stored[:1]
    for _ in range(intelligence.TIMELINE):
        intelligence._remember(facts, after)
    assert len(facts.lines) == intelligence.TIMELINE
    facts.timeline = [(NOW, "x", "y")]
    assert facts.lines == [["2026-11-02T09:00:00Z", "x", "y"]]


def test_json_columns_read_back_by_orjson_as_json_reads_them() -> None:
    from shared.db.engine import loads_json

    texts = [
        *FACTS_TEXTS,
        # Beyond 64 bits orjson reads an integer as a float: these go to json.loads.
        '{"n": 123456789012345678901234567890, "m": -9223372036854775809}',
        "[18446744073709551616, 18446744073709551615, 0.12345678901234567]",
        '["\ud800", 1234567890123456789012]',  # a lone surrogate: orjson refuses it
        '{"é": "١٢٣٤٥٦٧٨٩٠١٢٣٤٥٦٧٨٩٠", "n": 12345678901234567890123}',
        '{"n": 1234567890123456789, "€": 123456789012345678}',  # within 64 bits either way
    ]
    assert_reads_as_json_loads(loads_json, texts)
    # As bytes too (asyncpg hands JSON columns over as text).
    assert_reads_as_json_loads(loads_json, [t.encode() for t in texts if "\ud800" not in t])


def assert_reads_as_json_loads(read: Any, texts: list[Any]) -> None:
    """``read`` gives what ``json.loads`` gives for each text, or raises what it raises."""
    for text in texts:
        try:
            expected = repr(json.loads(text))
        except json.JSONDecodeError:
            with pytest.raises(json.JSONDecodeError):
                read(text)
            continue
        assert repr(read(text)) == expected, text


FACTS_TEXTS = [
    '{"v": 1, "order_count": 3, "revenue": "10.50"}',
    '[["2026-11-02T09:00:00Z", "page_viewed", "e1"]]',
    '{"state": {"v": 1, "rules": {"a": [2.5, "2026-11-02T09:00:00Z", 1, null, 0.0]}}}',
    '{"rfm": {"r": 5, "m": 1e-7}, "x": NaN}',  # orjson refuses NaN: json.loads reads it
    "null",
    '{"phone": "+4912345678901234567890", "clv": 0.12345678901234567, "n": 9223372036854775807}',
    '{"orders": [["12345678901234567890123", "2026-11-02T09:00:00Z", "EUR", "1.5"]]}',
    '"\\ud800"',
    '["\ud800", "x"]',  # a lone surrogate: orjson refuses it
]
"""Texts of the kinds a facts column holds (``Facts.to_json``): long digit runs only inside
strings and floats, integers within 64 bits."""


def test_facts_columns_read_back_by_orjson_alone_as_json_reads_them() -> None:
    from services.journey.adapters.repository import load_facts_json

    assert_reads_as_json_loads(load_facts_json, FACTS_TEXTS)
    assert load_facts_json(None) is None


def test_facts_documents_hold_no_integer_beyond_64_bits() -> None:
    """What lets ``load_facts_json`` skip the digit search: a customer's facts with every
    counter and time far beyond anything real still write integers orjson reads exactly."""
    from services.journey.adapters.repository import FACTS_JSON, facts_columns
    from shared.db.engine import dumps_json

    facts = Facts(profile=a_profile(), revision=2**40)
    facts.profile.order_count = facts.profile.marketing_sends_since_engaged = 10**15
    facts.lead = ScoreState(rules={"v": RuleState(1e300, NOW, 10**15, NOW, 1e300)})
    facts.insights = {"rfm": {"r": 5, "f": 5, "m": 5, "recency_days": 1e12}, "predictions": {}}
    facts.timeline = [(NOW, "order_completed", "9" * 40)]
    columns = facts_columns(facts)
    for name in FACTS_JSON:
        text = dumps_json(columns[name])
        assert repr(json.loads(text)) == repr(orjson.loads(text))


def test_a_run_of_nineteen_ascii_digits_anywhere_is_long() -> None:
    from shared.db.engine import _long_digits

    assert _long_digits("1" * 19) and _long_digits(b"x" + b"9" * 25 + b"y")
    assert not _long_digits("1" * 18) and not _long_digits("1" * 18 + "." + "1" * 18)
    # Arabic-Indic digits are no JSON number.
    assert not _long_digits("١" * 30)  # noqa: RUF001
    assert not _long_digits("12345678901é234567890")  # a multi-byte character breaks the run
    assert _long_digits("\ud800" + "7" * 19)


def test_timeline_texts_of_one_length_order_as_their_instants() -> None:
    zone = timezone(timedelta(hours=-3))
    instants = [
        NOW,
        NOW + timedelta(microseconds=1),
        NOW - timedelta(microseconds=1),
        NOW + timedelta(milliseconds=500),
        NOW + timedelta(seconds=1),
        NOW - DAY,
        (NOW + timedelta(seconds=59, microseconds=999_999)).astimezone(zone),
        datetime(999, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
    ]
    for at, other in itertools.product(instants, repeat=2):
        text = conditions.utc_text(at)
        assert intelligence._not_before(text, at, conditions.utc_text(other)) == (at >= other)


@pytest.mark.parametrize(
    "bands",
    [
        [{"name": "cold"}, {"name": "warm", "min": 20}, {"name": "hot", "min": 60}],
        [{"name": "only"}],
        [{"name": "low"}, {"name": "mid", "min": -10}, {"name": "high", "min": 0.5}],
    ],
)
def test_bands_found_on_the_floors_are_the_bands_found_on_the_bands(
    bands: list[dict[str, Any]],
) -> None:
    rules = ScoreRules.model_validate(
        {"bands": bands, "rules": [{"id": "v", "event": "page_viewed", "points": 1}]}
    )
    assert rules.floors == tuple(b.min for b in rules.bands[1:])
    for value in (-1e9, -10.000001, -10, -0.0, 0.0, 0.5, 19.999, 20, 59.99, 60, 1e9):
        assert scoring._floor_index(value, rules.floors) == scoring._band_index(value, rules.bands)


def _plain_holds(
    state: SegmentState, definition: segments.SegmentDefinition, context: Any, now: datetime
) -> bool:
    """``segments._holds`` as written before ``threshold``: the compiled test over the counts."""
    if definition.test is None:
        return False
    own = {"now": now, "counts": segments.counts(state, definition, now)}
    return definition.test(Layered(own, context))


def _plain_change(
    state: SegmentState, definition: segments.SegmentDefinition, context: Any
) -> datetime | None:
    """``segments._change`` as written before ``fades_only`` and ``threshold``: every candidate
    instant tried."""
    candidates = {b for b in definition.boundaries(context) if b > NOW}
    kept = state.windows.get(definition.id, {})
    for window in definition.windows:
        candidates.update(at + window.within for at in kept.get(window.name, ()))
    inside = _plain_holds(state, definition, context, NOW)
    for at in sorted(c for c in candidates if c > NOW):
        if _plain_holds(state, definition, context, at) != inside:
            return at
    return None


def test_a_lone_count_threshold_is_decided_and_ended_as_the_general_test_would() -> None:
    """A segment that is only "n or more events in one window" is decided by its count and its
    end found in closed form (``SegmentDefinition.threshold``): the same answers as the
    compiled test tried at every instant an event leaves the window."""
    window = {"name": "views", "event": "product_viewed", "within": "P7D"}
    lone = [
        ({"field": "counts.views", "op": "gte", "value": 3}, None, 3),
        ({"field": "counts.views", "op": "gt", "value": 2}, None, 3),
        ({"field": "counts.views", "op": "gte", "value": 2.5}, None, 3),
        ({"field": "counts.views", "op": "gt", "value": 0.5}, None, 1),
        (None, 2, 2),
    ]
    other = [
        {"field": "counts.views", "op": "gte", "value": 0},
        {"field": "counts.views", "op": "gt", "value": -1},
        {"field": "counts.views", "op": "lte", "value": 2},
        {"any": [{"field": "counts.views", "op": "gte", "value": 2}]},
    ]
    definitions = [
        parse_segment(
            {
                "id": f"s{i}",
                "name": "s",
                **({"condition": c} if c is not None else {}),
                "windows": [{**window, **({"min_count": m} if m is not None else {})}],
            }
        )
        for i, (c, m, _) in enumerate(lone)
    ]
    assert [d.threshold[1] if d.threshold else None for d in definitions] == [n for *_, n in lone]
    assert all(
        parse_segment({"id": "o", "name": "o", "condition": c, "windows": [window]}).threshold
        is None
        for c in other
    )
    context = Layered({"customer": {}}, {})
    offsets = [timedelta(0), DAY, 2 * DAY, 2 * DAY, 6 * DAY, 7 * DAY, 9 * DAY, -DAY]
    for size in range(6):
        for times in itertools.combinations(offsets, size):
            for definition in definitions:
                state = SegmentState(
                    windows={definition.id: {"views": sorted(NOW - t for t in times)}}
                )
                for at in (NOW, NOW + DAY, NOW + 7 * DAY):
                    held = segments._holds(state, definition, context, at)
                    assert held == _plain_holds(state, definition, context, at)
                found = segments._change(state, definition, context, NOW, before=None)
                assert found == _plain_change(state, definition, context)
                if found is not None:  # an earlier change found elsewhere wins
                    assert segments._change(state, definition, context, NOW, before=found) is None


def test_a_segment_of_rising_counts_found_out_is_not_searched_for_a_change() -> None:
    windows = [
        {"name": "views", "event": "product_viewed", "within": "P7D"},
        {"name": "carts", "event": "cart_updated", "within": "P3D"},
    ]
    rising = [
        {"field": "counts.views", "op": "gte", "value": 3},
        {
            "any": [
                {"field": "counts.views", "op": "gt", "value": 1},
                {"field": "counts.carts", "op": "gte", "value": 2},
            ]
        },
        {
            "all": [
                {"field": "counts.views", "op": "gte", "value": 1},
                {"field": "counts.carts", "op": "gt", "value": 0.5},
            ]
        },
    ]
    other = [
        {"field": "counts.views", "op": "lt", "value": 2},
        {"not": {"field": "counts.views", "op": "gte", "value": 2}},
        {
            "all": [
                {"field": "counts.views", "op": "gte", "value": 1},
                {"field": "customer.vip", "op": "eq", "value": True},
            ]
        },
        {"field": "counts.views", "op": "eq", "value": 2},
    ]
    definitions = [
        parse_segment(
            {
                "id": f"s{i}",
                "name": "s",
                "condition": c,
                "windows": [w for w in windows if f"counts.{w['name']}" in json.dumps(c)],
            }
        )
        for i, c in enumerate(rising + other)
    ]
    assert [d.fades_only for d in definitions] == [True] * len(rising) + [False] * len(other)
    context = Layered({"customer": {"vip": True}}, {})
    offsets = [timedelta(0), DAY, 2 * DAY, 3 * DAY, 6 * DAY, -DAY]
    for views, carts in itertools.product(range(5), range(4)):
        for definition in definitions:
            state = SegmentState(
                windows={
                    definition.id: {
                        "views": sorted(NOW - offsets[(views + k) % 6] for k in range(views)),
                        "carts": sorted(NOW - offsets[(carts * 2 + k) % 6] for k in range(carts)),
                    }
                }
            )
            found = segments._change(state, definition, context, NOW, before=None)
            assert found == _plain_change(state, definition, context)


def test_an_engagement_event_reports_the_names_a_whole_snapshot_would() -> None:
    """``profile.observe`` compares only the names an open, click or send can change; the
    whole snapshot, compared before and after, finds the same."""
    from services.journey.domain import profile as profiles

    class Seen:
        def __init__(self, kind: str, at: datetime, **properties: Any) -> None:
            self.type, self.occurred_at, self.properties = kind, at, properties

    times = [NOW - 2 * DAY, NOW - DAY, NOW, NOW + DAY]
    kinds: list[tuple[str, dict[str, Any]]] = [
        ("message_opened", {}),
        ("message_clicked", {}),
        ("message_sent", {}),
    ]
    kinds.append(("message_sent", {"category": "marketing"}))
    for start in itertools.product([None, *times], [None, *times], [None, *times], [0, 3]):
        for (kind, props), at in itertools.product(kinds, times):
            quick = a_profile()
            quick.last_open_at, quick.last_click_at, quick.last_engaged_at = start[:3]
            quick.marketing_sends_since_engaged = start[3]
            plain = Profile.from_json(quick.to_json())
            assert plain == quick
            event = Seen(kind, at, **props)
            changed = profiles.observe(quick, event, currency="EUR", rates={})
            before = plain._snapshot()
            profiles._HANDLERS[kind](plain, event, "EUR", {})
            after = plain._snapshot()
            assert changed == {n for n, v in after.items() if before[n] != v}
            assert quick == plain
