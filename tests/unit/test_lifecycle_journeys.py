"""The lifecycle journeys in journeys/, each run through the simulator on a virtual clock.

Every test runs all the journeys together (as production does), feeds sends back as dispatch's
``message_sent`` events, and renders every message with the real templates, exactly as dispatch
would: a template that cannot render fails the test.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from services.dispatch.adapters.templates import TemplateStore
from services.journey.domain import engine
from services.journey.domain.catalog import JourneyCatalog
from services.journey.simulate import (
    Simulation,
    load_journeys,
    parse_events,
    parse_instant,
    rfc3339,
    simulate,
)

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "templates"
BERLIN = {"timezone": "Europe/Berlin"}


@pytest.fixture(scope="module")
def catalog() -> JourneyCatalog:
    return load_journeys(REPO / "journeys", templates=TEMPLATES)


@pytest.fixture(scope="module")
def store() -> TemplateStore:
    return TemplateStore(TEMPLATES)


def event(
    kind: str, customer: str, at: str, properties: dict[str, Any] | None = None, /, **traits: Any
) -> dict[str, Any]:
    return {
        "type": kind,
        "customer_id": customer,
        "occurred_at": at,
        "properties": properties or {},
        "traits": {"email": f"{customer}@example.com", **traits},
    }


def cart(
    customer: str, at: str, cart_id: str = "c1", /, *names: str, **traits: Any
) -> dict[str, Any]:
    items = [{"product_id": n.lower(), "name": n, "price": 20} for n in names or ("Teapot",)]
    return event("cart_updated", customer, at, {"cart_id": cart_id, "items": items}, **traits)


def order(customer: str, at: str, order_id: str = "o1", /, **properties: Any) -> dict[str, Any]:
    body = {
        "order_id": order_id,
        "total": 63.9,
        "currency": "EUR",
        "items": [{"product_id": "p1", "name": "Teapot", "price": 39.9}],
        **properties,
    }
    return event("order_completed", customer, at, body, **BERLIN)


def newsletter(customer: str, at: str) -> dict[str, Any]:
    """A campaign email, as dispatch reports it (campaigns are not journeys)."""
    return event(
        "message_sent",
        customer,
        at,
        {"channel": "email", "category": "marketing", "template": "newsletter"},
    )


class Run:
    def __init__(self, sim: Simulation) -> None:
        self.sim = sim

    def sends(
        self, journey: str | None = None, customer: str | None = None
    ) -> list[tuple[str, ...]]:
        """(at, template) of each message, or (at, customer, template) across customers."""
        return [
            (rfc3339(s.at), s.template) if customer else (rfc3339(s.at), s.customer_id, s.template)
            for s in self.sim.sent
            if (journey is None or s.journey_id == journey)
            and (customer is None or s.customer_id == customer)
        ]

    def timeline(self, journey: str, customer: str) -> list[tuple[Any, ...]]:
        """(at, kind, step, reason) of each activity of one customer in one journey."""
        return [
            (rfc3339(a.at), a.kind, a.step, a.reason)
            for a in self.sim.activity
            if a.journey_id == journey and a.customer_id == customer
        ]

    def state(self, customer: str) -> Any:
        return self.sim.states[customer]


@pytest.fixture
def run(catalog: JourneyCatalog, store: TemplateStore) -> Any:
    def go(*events: dict[str, Any], until: str, caps: tuple[engine.Cap, ...] = ()) -> Run:
        parsed = parse_events([json.dumps(e) for e in events], workspace_id="sim").events
        sim = simulate(catalog, parsed, until=parse_instant(until), policy=engine.Policy(caps=caps))
        for sent in sim.sent:
            store.render(sent.template, sent.channel, sent.variables())
        return Run(sim)

    return go


def held_out(
    catalog: JourneyCatalog, customer: str, journey_id: str, step: str | None = None
) -> bool:
    """Whether the customer falls in the journey's holdout (or, with ``step``, the step's)."""
    found = catalog.view("sim").get(journey_id)
    assert found is not None
    journey = found[0]
    if step is None:
        return engine.in_holdout(journey, "sim", customer)
    # As the engine decides a send's own holdout.
    return engine.bucket("sim", customer, journey_id, step, "holdout") < 10


def render(store: TemplateStore, result: Run, template: str) -> Any:
    [sent] = [s for s in result.sim.sent if s.template == template]
    return store.render(sent.template, sent.channel, sent.variables())


# ── welcome ───────────────────────────────────────────────────────────────────────────────────


def test_welcome_day_0_day_3_and_a_survey_reminder_for_who_did_not_answer(
    run: Any, store: TemplateStore
) -> None:
    result = run(
        event("signup", "ana", "2025-03-03T10:00:00Z", first_name="Ana"),
        event("signup", "bo", "2025-03-03T11:00:00Z"),
        event("survey_completed", "bo", "2025-03-07T08:00:00Z", {"answers": {"likes": "tea"}}),
        until="2025-04-01T00:00:00Z",
    )
    assert result.sends("welcome") == [
        ("2025-03-03T10:00:00Z", "ana", "welcome-1"),
        ("2025-03-03T11:00:00Z", "bo", "welcome-1"),
        ("2025-03-06T10:00:00Z", "ana", "welcome-2-discount"),
        ("2025-03-06T11:00:00Z", "bo", "welcome-2-discount"),
        # No answer: reminded 6 days after the survey link came (the promise: 5 to 7 days).
        ("2025-03-12T10:00:00Z", "ana", "welcome-3-survey-reminder"),
    ]
    assert result.timeline("welcome", "bo")[-2:] == [
        ("2025-03-07T08:00:00Z", "waited", "survey", "event"),
        ("2025-03-07T08:00:00Z", "exited", "end", "exit_step"),
    ]
    discount = next(s for s in result.sim.sent if s.template == "welcome-2-discount")
    text = store.render(discount.template, "email", discount.variables()).text
    assert "Hi Ana," in text and "WELCOME10" in text and "survey?customer=ana" in text


def test_welcome_ends_at_the_first_order_and_counts_it_as_its_goal(run: Any) -> None:
    result = run(
        event("signup", "cy", "2025-03-03T12:00:00Z"),
        order("cy", "2025-03-04T09:00:00Z"),
        until="2025-04-01T00:00:00Z",
    )
    assert result.sends("welcome") == [("2025-03-03T12:00:00Z", "cy", "welcome-1")]
    assert result.timeline("welcome", "cy")[-2:] == [
        ("2025-03-04T09:00:00Z", "goal", "wait-3d", None),
        ("2025-03-04T09:00:00Z", "exited", "wait-3d", "exit_when"),
    ]


def test_welcome_goes_at_once_even_at_night_and_only_once(run: Any) -> None:
    result = run(
        event("signup", "dee", "2025-03-03T01:30:00Z", **BERLIN),  # 02:30 in Berlin
        event("signup", "dee", "2025-03-20T10:00:00Z"),  # reentry: never
        until="2025-04-01T00:00:00Z",
    )
    assert result.sends("welcome", "dee") == [
        ("2025-03-03T01:30:00Z", "welcome-1"),
        ("2025-03-06T01:30:00Z", "welcome-2-discount"),
        ("2025-03-12T01:30:00Z", "welcome-3-survey-reminder"),
    ]


# ── cart_abandonment ──────────────────────────────────────────────────────────────────────────


def test_cart_reminders_1_hour_and_24_hours_after_the_last_update(
    run: Any, store: TemplateStore
) -> None:
    result = run(
        cart("ana", "2025-03-10T14:00:00Z", "c1", "Teapot", first_name="Ana", **BERLIN),
        cart("ana", "2025-03-10T14:40:00Z", "c1", "Teapot", "Cups"),  # restarts the hour
        # Checking out is not buying: an abandoned checkout is still an abandoned cart.
        event("checkout_started", "ana", "2025-03-10T14:45:00Z",
              {"cart_id": "c1", "total": 40, "currency": "EUR"}),
        until="2025-03-20T00:00:00Z",
    )  # fmt: skip
    assert result.sends("cart_abandonment") == [
        ("2025-03-10T15:40:00Z", "ana", "cart-reminder-1"),
        ("2025-03-11T14:40:00Z", "ana", "cart-reminder-2"),
    ]
    assert result.timeline("cart_abandonment", "ana")[:5] == [
        ("2025-03-10T14:00:00Z", "entered", "idle", None),
        ("2025-03-10T14:00:00Z", "waited", "idle", None),
        ("2025-03-10T14:40:00Z", "waited", "idle", "event"),
        ("2025-03-10T14:40:00Z", "waited", "idle", None),
        ("2025-03-10T15:40:00Z", "waited", "idle", "timeout"),
    ]
    text = render(store, result, "cart-reminder-1").text
    assert "Hi Ana," in text and "- Teapot \N{MULTIPLICATION SIGN} 1" in text
    # The reminders show the cart as last updated: with the cups added at 14:40.
    assert "- Cups \N{MULTIPLICATION SIGN} 1" in text
    assert "with 2 items," in render(store, result, "cart-reminder-2").text


def test_an_order_stops_the_cart_reminders_whichever_cart_it_came_from(run: Any) -> None:
    result = run(
        cart("ana", "2025-03-10T14:00:00Z", "c1", **BERLIN),
        order("ana", "2025-03-10T14:30:00Z", "o1", cart_id="c1"),
        # Bo leaves a cart on his phone, then buys the same teapot from a cart on his laptop:
        # "you left something in your cart" the next day would be wrong.
        cart("bo", "2025-03-10T10:00:00Z", "c2", **BERLIN),
        cart("bo", "2025-03-10T13:00:00Z", "c3"),
        order("bo", "2025-03-10T13:30:00Z", "o2", cart_id="c3"),
        # Cy's order carries no cart id at all.
        cart("cy", "2025-03-10T14:00:00Z", "c4", **BERLIN),
        order("cy", "2025-03-10T16:00:00Z", "o3"),
        until="2025-03-20T00:00:00Z",
    )
    assert result.sends("cart_abandonment") == [
        ("2025-03-10T11:00:00Z", "bo", "cart-reminder-1"),  # c2, before he bought
        ("2025-03-10T15:00:00Z", "cy", "cart-reminder-1"),
    ]
    assert result.timeline("cart_abandonment", "ana")[-2:] == [
        ("2025-03-10T14:30:00Z", "goal", "idle", None),
        ("2025-03-10T14:30:00Z", "exited", "idle", "exit_when"),
    ]
    exits = [t for t in result.timeline("cart_abandonment", "bo") if t[1] == "exited"]
    assert exits == [
        ("2025-03-10T13:30:00Z", "exited", "wait-23h", "exit_when"),  # c2
        ("2025-03-10T13:30:00Z", "exited", "idle", "exit_when"),  # c3
    ]


def test_each_cart_gets_its_own_run_and_an_emptied_cart_none(run: Any) -> None:
    result = run(
        cart("ana", "2025-03-10T10:00:00Z", "c1", **BERLIN),
        cart("ana", "2025-03-10T10:30:00Z", "c2"),
        event("cart_updated", "ana", "2025-03-10T10:45:00Z", {"cart_id": "c2", "items": []}),
        # An emptied cart starts nothing; filled again, it is a new abandoned cart.
        event("cart_updated", "ana", "2025-03-10T12:00:00Z", {"cart_id": "c3", "items": []}),
        cart("ana", "2025-03-10T13:00:00Z", "c2"),
        until="2025-03-20T00:00:00Z",
    )
    assert result.sends("cart_abandonment") == [
        ("2025-03-10T11:00:00Z", "ana", "cart-reminder-1"),  # c1
        ("2025-03-10T14:00:00Z", "ana", "cart-reminder-1"),  # c2, filled again at 13:00
        ("2025-03-11T10:00:00Z", "ana", "cart-reminder-2"),
        ("2025-03-11T13:00:00Z", "ana", "cart-reminder-2"),
    ]
    runs = {a.run_id for a in result.sim.activity if a.journey_id == "cart_abandonment"}
    assert len(runs) == 3
    exits = [t for t in result.timeline("cart_abandonment", "ana") if t[3] == "exit_when"]
    assert exits == [("2025-03-10T10:45:00Z", "exited", "idle", "exit_when")]


def test_cart_reminders_wait_for_the_morning(run: Any) -> None:
    result = run(
        cart("ana", "2025-03-10T21:30:00Z", "c1", **BERLIN),  # 22:30 in Berlin
        until="2025-03-20T00:00:00Z",
    )
    assert result.sends("cart_abandonment") == [
        ("2025-03-11T08:00:00Z", "ana", "cart-reminder-1"),  # 09:00 in Berlin
        ("2025-03-12T08:00:00Z", "ana", "cart-reminder-2"),  # 23 h later is 08:00: held to 09:00
    ]
    held = [t for t in result.timeline("cart_abandonment", "ana") if t[1] == "held"]
    assert held == [
        ("2025-03-10T22:30:00Z", "held", "reminder-1", "send_window"),
        ("2025-03-12T07:00:00Z", "held", "reminder-2", "send_window"),
    ]


# ── browse_abandonment ────────────────────────────────────────────────────────────────────────


def viewed(customer: str, at: str, name: str, /, **traits: Any) -> dict[str, Any]:
    product = {"product_id": name.lower(), "name": name, "price": 39.9, "currency": "EUR",
               "url": f"https://shop.example.com/p/{name.lower()}"}  # fmt: skip
    return event("product_viewed", customer, at, product, **traits)


def test_browse_reminder_two_hours_after_the_last_product_viewed(
    run: Any, store: TemplateStore, catalog: JourneyCatalog
) -> None:
    assert not held_out(catalog, "ana", "browse_abandonment")
    result = run(
        viewed("ana", "2025-03-10T10:00:00Z", "Teapot", first_name="Ana", **BERLIN),
        viewed("ana", "2025-03-10T10:40:00Z", "Cups"),  # still browsing: the 2 hours restart
        viewed("ana", "2025-03-12T10:00:00Z", "Kettle"),  # within the week: no second reminder
        until="2025-03-20T00:00:00Z",
    )
    assert result.sends("browse_abandonment") == [
        ("2025-03-10T12:40:00Z", "ana", "browse-reminder"),
    ]
    rendered = render(store, result, "browse-reminder")
    assert rendered.subject == "Ana, still thinking about the Teapot?"
    assert "https://shop.example.com/p/teapot" in rendered.text and "Hi Ana," in rendered.text


def test_a_cart_or_an_order_ends_the_browse_reminder(run: Any) -> None:
    result = run(
        viewed("ana", "2025-03-10T10:00:00Z", "Teapot", **BERLIN),
        cart("ana", "2025-03-10T10:30:00Z", "c1", "Teapot"),  # the cart journey takes over
        viewed("bo", "2025-03-10T10:00:00Z", "Teapot", **BERLIN),
        order("bo", "2025-03-10T11:00:00Z", "o1"),
        until="2025-03-20T00:00:00Z",
    )
    assert result.sends("browse_abandonment") == []
    assert ("2025-03-10T11:30:00Z", "ana", "cart-reminder-1") in result.sends()


def test_browsing_without_an_address_enters_nobody(run: Any) -> None:
    anonymous = {
        "type": "product_viewed",
        "anonymous_id": "v1",
        "occurred_at": "2025-03-10T10:00:00Z",
        "properties": {"product_id": "teapot"},
    }
    result = run(anonymous, until="2025-03-20T00:00:00Z")
    assert [a for a in result.sim.activity if a.journey_id == "browse_abandonment"] == []


def test_browse_reminders_wait_for_the_morning(run: Any) -> None:
    result = run(
        viewed("ana", "2025-03-10T20:00:00Z", "Teapot", **BERLIN),  # 21:00 in Berlin
        until="2025-03-20T00:00:00Z",
    )
    assert result.sends("browse_abandonment") == [
        ("2025-03-11T08:00:00Z", "ana", "browse-reminder"),  # 09:00 in Berlin
    ]


# ── post_purchase ─────────────────────────────────────────────────────────────────────────────


def test_thanks_at_once_and_a_cross_sell_on_the_morning_of_day_5(
    run: Any, store: TemplateStore, catalog: JourneyCatalog
) -> None:
    assert not held_out(catalog, "ana", "post_purchase", "cross-sell")
    result = run(order("ana", "2025-03-12T18:00:00Z", "o-1001"), until="2025-04-01T00:00:00Z")
    assert result.sends("post_purchase") == [
        ("2025-03-12T18:00:00Z", "ana", "order-thanks"),
        ("2025-03-17T09:00:00Z", "ana", "cross-sell"),  # 10:00 in Berlin
    ]
    assert [s.category for s in result.sim.sent] == ["transactional", "marketing"]
    thanks = render(store, result, "order-thanks")
    assert thanks.subject == "Thank you for your order o-1001"
    assert (
        "- Teapot \N{MULTIPLICATION SIGN} 1: €39.90" in thanks.text
        and "Total: €63.90" in thanks.text
    )
    assert "your Teapot" in render(store, result, "cross-sell").text


def test_every_order_is_thanked_even_at_night_and_only_the_latest_cross_sold(run: Any) -> None:
    result = run(
        order("ana", "2025-03-12T22:30:00Z", "o1"),  # 23:30 in Berlin
        order("ana", "2025-03-14T12:00:00Z", "o2"),
        until="2025-04-01T00:00:00Z",
    )
    assert result.sends("post_purchase") == [
        ("2025-03-12T22:30:00Z", "ana", "order-thanks"),
        ("2025-03-14T12:00:00Z", "ana", "order-thanks"),
        ("2025-03-19T09:00:00Z", "ana", "cross-sell"),
    ]
    first = result.timeline("post_purchase", "ana")[3:5]
    assert first == [
        ("2025-03-14T12:00:00Z", "goal", "wait-4d", None),  # a repeat purchase
        ("2025-03-14T12:00:00Z", "exited", "wait-4d", "exit_when"),
    ]


def test_an_order_reported_again_is_thanked_once(run: Any) -> None:
    """Analytics tags fire Order Completed again when the confirmation page is reloaded, under a
    new event id: the same order_id is one purchase, thanked and cross-sold once. Its
    cancellation reported twice is one cancellation, and an order arriving after its own
    cancellation is not thanked at all."""
    result = run(
        order("ana", "2025-03-12T18:00:00Z", "o1"),
        order("ana", "2025-03-12T18:03:00Z", "o1"),
        order("ana", "2025-03-13T09:00:00Z", "o1", total=70),  # still o1, however it differs
        event("order_cancelled", "bo", "2025-03-12T17:00:00Z", {"order_id": "o9"}),
        order("bo", "2025-03-12T18:00:00Z", "o9"),  # overtaken by its cancellation
        until="2025-04-01T00:00:00Z",
    )
    assert result.sends("post_purchase") == [
        ("2025-03-12T18:00:00Z", "ana", "order-thanks"),
        ("2025-03-17T09:00:00Z", "ana", "cross-sell"),
    ]
    assert [kind for _, kind, _, _ in result.timeline("post_purchase", "ana")].count("entered") == 1
    assert result.state("ana").facts.profile.order_count == 1
    assert result.timeline("post_purchase", "bo") == []


def test_no_cross_sell_after_a_refund(run: Any) -> None:
    result = run(
        order("ana", "2025-03-12T18:00:00Z", "o1"),
        event("order_refunded", "ana", "2025-03-13T10:00:00Z", {"order_id": "o1"}),
        until="2025-04-01T00:00:00Z",
    )
    assert result.sends("post_purchase") == [("2025-03-12T18:00:00Z", "ana", "order-thanks")]


def test_the_cross_sell_holdout_still_gets_its_thanks(run: Any, catalog: JourneyCatalog) -> None:
    assert held_out(catalog, "quinn", "post_purchase", "cross-sell")
    result = run(order("quinn", "2025-03-12T18:00:00Z"), until="2025-04-01T00:00:00Z")
    assert result.sends("post_purchase") == [("2025-03-12T18:00:00Z", "quinn", "order-thanks")]
    assert ("2025-03-17T09:00:00Z", "skipped", "cross-sell", "step_holdout") in result.timeline(
        "post_purchase", "quinn"
    )


def test_thanks_ignore_frequency_caps_and_sunset_marketing_does_not(run: Any) -> None:
    result = run(
        event("signup", "ana", "2025-03-12T08:00:00Z", **BERLIN),
        order("ana", "2025-03-12T18:00:00Z"),
        event("identify", "bo", "2025-03-12T08:00:00Z", email_sunset=True),
        order("bo", "2025-03-12T18:00:00Z"),
        until="2025-04-01T00:00:00Z",
        caps=(engine.Cap("email", 1, timedelta(days=7)),),
    )
    assert result.sends("post_purchase") == [
        ("2025-03-12T18:00:00Z", "ana", "order-thanks"),  # the welcome used the week's cap
        ("2025-03-12T18:00:00Z", "bo", "order-thanks"),
        ("2025-03-19T08:00:00Z", "ana", "cross-sell"),  # held until the welcome ages out
    ]
    assert ("2025-03-17T09:00:00Z", "skipped", "cross-sell", "sunset") in result.timeline(
        "post_purchase", "bo"
    )


# ── birthday ──────────────────────────────────────────────────────────────────────────────────


def test_birthday_greeting_at_9_local_and_a_reminder_before_the_offer_expires(
    run: Any, store: TemplateStore
) -> None:
    result = run(
        event("identify", "ana", "2025-03-01T10:00:00Z", birthday="1990-03-20", first_name="Ana",
              **BERLIN),
        event("identify", "bo", "2025-03-01T10:00:00Z", birthday="--03-20",
              timezone="America/New_York"),
        until="2025-04-01T00:00:00Z",
    )  # fmt: skip
    assert result.sends("birthday") == [
        ("2025-03-20T08:00:00Z", "ana", "birthday-offer"),  # 09:00 in Berlin (CET)
        ("2025-03-20T13:00:00Z", "bo", "birthday-offer"),  # 09:00 in New York (EDT)
        ("2025-03-25T08:00:00Z", "ana", "birthday-reminder"),
        ("2025-03-25T13:00:00Z", "bo", "birthday-reminder"),
    ]
    offer = next(s for s in result.sim.sent if s.customer_id == "ana")
    rendered = store.render(offer.template, "email", offer.variables())
    assert rendered.subject == "Happy birthday, Ana! A gift inside 🎁"
    assert "BIRTHDAY15" in rendered.text


def test_using_the_birthday_code_ends_the_run(run: Any) -> None:
    result = run(
        event("identify", "ana", "2025-03-01T10:00:00Z", birthday="1990-03-20", **BERLIN),
        order("ana", "2025-03-21T10:00:00Z", coupon="BIRTHDAY15"),
        until="2025-04-01T00:00:00Z",
    )
    assert result.sends("birthday") == [("2025-03-20T08:00:00Z", "ana", "birthday-offer")]
    assert result.timeline("birthday", "ana")[-2:] == [
        ("2025-03-21T10:00:00Z", "goal", "wait-5d", None),
        ("2025-03-21T10:00:00Z", "exited", "wait-5d", "exit_when"),
    ]


def test_birthdays_come_every_year_but_a_changed_birthday_brings_no_second_gift(
    run: Any,
) -> None:
    result = run(
        event("identify", "ana", "2025-03-01T10:00:00Z", birthday="1990-03-20", **BERLIN),
        event("identify", "ana", "2025-03-26T10:00:00Z", birthday="1990-04-10"),
        until="2026-04-20T00:00:00Z",
    )
    assert result.sends("birthday") == [
        ("2025-03-20T08:00:00Z", "ana", "birthday-offer"),
        ("2025-03-25T08:00:00Z", "ana", "birthday-reminder"),
        # 2025-04-10 comes 21 days after the last gift: reentry waits for P300D.
        ("2026-04-10T07:00:00Z", "ana", "birthday-offer"),  # 09:00 in Berlin (CEST)
        ("2026-04-15T07:00:00Z", "ana", "birthday-reminder"),
    ]


# ── winback ───────────────────────────────────────────────────────────────────────────────────


def test_winback_when_a_one_time_buyer_is_at_risk_then_a_stronger_offer(
    run: Any, store: TemplateStore, catalog: JourneyCatalog
) -> None:
    assert not held_out(catalog, "ana", "winback")
    result = run(
        event("identify", "ana", "2025-01-01T12:00:00Z", first_name="Ana"),
        order("ana", "2025-01-10T12:00:00Z"),
        until="2025-06-01T00:00:00Z",
    )
    # One order: the shop's default rhythm (45 days) is assumed, at risk after twice that.
    assert result.sends("winback") == [
        ("2025-04-10T12:00:00Z", "ana", "winback-1-miss-you"),
        ("2025-04-17T12:00:00Z", "ana", "winback-2-offer"),
    ]
    assert render(store, result, "winback-1-miss-you").subject == "We miss you, Ana"
    assert "COMEBACK20" in render(store, result, "winback-2-offer").text


def test_winback_follows_each_customers_own_buying_rhythm(
    run: Any, catalog: JourneyCatalog
) -> None:
    assert not any(held_out(catalog, c, "winback") for c in ("ana", "bo"))
    weekly = [order("ana", f"2025-01-{d:02d}T12:00:00Z", f"a{d}") for d in (1, 8, 15, 22)]
    result = run(
        *weekly,  # a weekly buyer: missed after two quiet weeks
        order("bo", "2025-01-01T12:00:00Z", "b1"),
        order("bo", "2025-03-01T12:00:00Z", "b2"),  # every 59 days: 60 quiet days are normal
        until="2025-07-31T00:00:00Z",
    )
    assert result.sends("winback") == [
        ("2025-02-05T12:00:00Z", "ana", "winback-1-miss-you"),
        ("2025-02-12T12:00:00Z", "ana", "winback-2-offer"),
        ("2025-06-27T12:00:00Z", "bo", "winback-1-miss-you"),  # twice 59 days after the last
        ("2025-07-04T12:00:00Z", "bo", "winback-2-offer"),
    ]


def test_an_order_moves_the_winback_and_one_after_it_ends_it(run: Any) -> None:
    result = run(
        order("ana", "2025-01-10T12:00:00Z", "o1"),
        order("ana", "2025-02-01T12:00:00Z", "o2"),  # every 22 days: at risk 44 days on
        order("ana", "2025-03-20T12:00:00Z", "o3"),  # between the two win-back emails
        until="2025-05-01T00:00:00Z",
    )
    assert result.sends("winback") == [("2025-03-17T12:00:00Z", "ana", "winback-1-miss-you")]
    assert result.timeline("winback", "ana")[-2:] == [
        ("2025-03-20T12:00:00Z", "goal", "wait-7d", None),
        ("2025-03-20T12:00:00Z", "exited", "wait-7d", "exit_when"),
    ]


def test_the_winback_holdout_gets_nothing_but_its_orders_still_count(
    run: Any, catalog: JourneyCatalog
) -> None:
    assert held_out(catalog, "ida", "winback")
    result = run(
        order("ida", "2025-01-10T12:00:00Z", "o1"),
        order("ida", "2025-04-20T12:00:00Z", "o2"),
        until="2025-05-01T00:00:00Z",
    )
    assert result.sends("winback") == []
    assert result.timeline("winback", "ida") == [
        ("2025-04-10T12:00:00Z", "entered", "miss-you", None),
        ("2025-04-10T12:00:00Z", "exited", None, "holdout"),
        ("2025-04-20T12:00:00Z", "goal", None, None),
    ]


def test_winback_waits_for_the_morning(run: Any) -> None:
    result = run(order("ana", "2025-01-10T22:30:00Z"), until="2025-06-01T00:00:00Z")
    assert result.sends("winback") == [
        ("2025-04-11T07:00:00Z", "ana", "winback-1-miss-you"),  # due 00:30 in Berlin (CEST)
        ("2025-04-18T07:00:00Z", "ana", "winback-2-offer"),
    ]


# ── sunset ────────────────────────────────────────────────────────────────────────────────────


def days(customer: str, first: int, last: int) -> list[dict[str, Any]]:
    """A newsletter a day, 10:00 UTC on March ``first`` … ``last``."""
    return [newsletter(customer, f"2025-03-{d:02d}T10:00:00Z") for d in range(first, last + 1)]


def test_eight_ignored_emails_bring_one_last_chance_then_marketing_stops(
    run: Any, store: TemplateStore
) -> None:
    result = run(
        *days("ana", 1, 8),
        newsletter("ana", "2025-03-26T10:00:00Z"),  # after the sunset: not counted
        cart("ana", "2025-03-27T10:00:00Z", "c1", **BERLIN),
        order("ana", "2025-03-28T10:00:00Z", "o1"),
        until="2025-04-05T00:00:00Z",
    )
    assert result.sends("sunset") == [("2025-03-11T10:00:00Z", "ana", "sunset-last-chance")]
    timeline = result.timeline("sunset", "ana")
    # One run per ignored newsletter: the last chance's own message_sent is not counted, and
    # once sunset nothing is.
    assert [t[0] for t in timeline if t[1] == "entered"] == [
        f"2025-03-{d:02d}T10:00:00Z" for d in range(1, 9)
    ]
    assert timeline[-8:] == [
        ("2025-03-08T10:00:00Z", "entered", "count", None),
        ("2025-03-08T10:00:00Z", "updated", "count", None),
        ("2025-03-08T10:00:00Z", "branched", "check", None),
        ("2025-03-08T10:00:00Z", "waited", "pause", None),
        ("2025-03-11T10:00:00Z", "sent", "last-chance", None),
        ("2025-03-11T10:00:00Z", "waited", "grace", None),
        ("2025-03-25T10:00:00Z", "updated", "stop", None),
        ("2025-03-25T10:00:00Z", "exited", "end", "exit_step"),
    ]
    assert result.state("ana").traits["email_sunset"] is True
    assert result.state("ana").scores == {"unengaged_emails": 8}
    # Marketing stops; transactional mail does not.
    assert ("2025-03-27T11:00:00Z", "skipped", "reminder-1", "sunset") in result.timeline(
        "cart_abandonment", "ana"
    )
    assert result.sends(customer="ana")[-1] == ("2025-03-28T10:00:00Z", "order-thanks")
    assert "keep=1&amp;customer=ana" in (render(store, result, "sunset-last-chance").html or "")


def test_an_open_starts_the_count_again(run: Any) -> None:
    result = run(
        *days("ana", 1, 5),
        event("message_opened", "ana", "2025-03-05T12:00:00Z", {"channel": "email"}),
        *days("ana", 6, 13),
        until="2025-03-20T00:00:00Z",
    )
    assert result.sends("sunset") == [("2025-03-16T10:00:00Z", "ana", "sunset-last-chance")]
    assert result.timeline("sunset_reset_open", "ana") == [
        ("2025-03-05T12:00:00Z", "entered", "reset", None),
        ("2025-03-05T12:00:00Z", "updated", "reset", None),
        ("2025-03-05T12:00:00Z", "exited", None, "completed"),
    ]


def test_a_click_on_the_last_chance_keeps_the_subscriber(run: Any) -> None:
    result = run(
        *days("ana", 1, 8),
        event("message_clicked", "ana", "2025-03-12T09:00:00Z", {"channel": "email"}),
        cart("ana", "2025-04-01T10:00:00Z", "c1", **BERLIN),
        until="2025-04-05T00:00:00Z",
    )
    assert ("2025-03-12T09:00:00Z", "exited", "grace", "exit_when") in result.timeline(
        "sunset", "ana"
    )
    assert "email_sunset" in result.state("ana").traits  # set to false by the click
    assert result.state("ana").traits["email_sunset"] is False
    assert ("2025-04-01T11:00:00Z", "cart-reminder-1") in result.sends(customer="ana")
    # The click started the count again: only the two cart reminders since count.
    assert result.state("ana").scores == {"unengaged_emails": 2}


def test_a_click_after_the_sunset_brings_the_subscriber_back(run: Any) -> None:
    result = run(
        *days("ana", 1, 8),
        event("message_clicked", "ana", "2025-03-30T09:00:00Z", {"channel": "email"}),
        cart("ana", "2025-04-01T10:00:00Z", "c1", **BERLIN),
        until="2025-04-05T00:00:00Z",
    )
    assert ("2025-03-25T10:00:00Z", "updated", "stop", None) in result.timeline("sunset", "ana")
    assert result.state("ana").traits["email_sunset"] is False
    assert ("2025-04-01T11:00:00Z", "cart-reminder-1") in result.sends(customer="ana")


def test_journey_emails_count_too_but_transactional_ones_do_not(run: Any) -> None:
    result = run(
        event("signup", "ana", "2025-03-01T10:00:00Z", **BERLIN),
        order("ana", "2025-03-02T10:00:00Z", "o1"),
        until="2025-03-10T00:00:00Z",
    )
    # welcome-1 (marketing) counts; the order's thanks (transactional) does not; the order
    # ended the welcome series and the cross-sell is due on the 7th.
    assert result.sends(customer="ana") == [
        ("2025-03-01T10:00:00Z", "welcome-1"),
        ("2025-03-02T10:00:00Z", "order-thanks"),
        ("2025-03-07T09:00:00Z", "cross-sell"),
    ]
    entered = [t[0] for t in result.timeline("sunset", "ana") if t[1] == "entered"]
    assert entered == ["2025-03-01T10:00:00Z", "2025-03-07T09:00:00Z"]
    assert result.state("ana").scores == {"unengaged_emails": 2}
