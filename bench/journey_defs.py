"""The six journeys of the journey-engine benchmark, as the JSON documents a developer would put
in journeys/ (plain dicts here), validated like ``ciclo journeys validate`` validates them.

Together they exercise every kind of step and trigger the hot path meets: waits and wait_for,
a trigger keyed on cart_id with a wait_for loop and exit_when, a transactional send, a branch on
a trait, a stable split and an inactivity trigger (a durable schedule per customer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.journey.domain.catalog import JourneyCatalog
from services.journey.domain.definitions import Journey
from services.journey.domain.validation import validate_journey

REPO = Path(__file__).resolve().parents[1]

WELCOME: dict[str, Any] = {
    "id": "welcome",
    "version": 1,
    "name": "Welcome series: hello, tips a day later, a nudge if no first order",
    "trigger": {"event": "signup"},
    "reentry": "never",
    "goal": {"event": "order_completed", "within": "P14D"},
    "priority": 10,
    "start": "hello",
    "steps": {
        "hello": {"send": {"channel": "email", "template": "welcome-1"}, "next": "pause"},
        "pause": {"wait": "P1D", "next": "tips"},
        "tips": {
            "send": {"channel": "email", "template": "welcome-3-survey-reminder"},
            "next": "watch",
        },
        "watch": {
            "wait_for": {"event": "order_completed", "timeout": "P5D"},
            "on_timeout": "nudge",
        },
        "nudge": {"send": {"channel": "email", "template": "welcome-2-discount"}},
    },
}

CART: dict[str, Any] = {
    "id": "cart-abandonment",
    "version": 1,
    "name": "Cart abandonment: one run per cart, reminded after an hour of quiet",
    "trigger": {"event": "cart_updated", "key": "cart_id"},
    "reentry": "always",
    "exit_when": [{"event": "order_completed", "match": "cart_id"}],
    "goal": {"event": "order_completed", "within": "P3D"},
    "priority": 5,
    "start": "quiet",
    "steps": {
        "quiet": {
            "wait_for": {"event": "cart_updated", "match": "cart_id", "timeout": "PT1H"},
            "on_event": "quiet",
            "on_timeout": "remind",
        },
        "remind": {"send": {"channel": "email", "template": "cart-reminder-1"}, "next": "later"},
        "later": {"wait": "PT23H", "next": "again"},
        "again": {"send": {"channel": "email", "template": "cart-reminder-2"}},
    },
}

POST_PURCHASE: dict[str, Any] = {
    "id": "post-purchase",
    "version": 1,
    "name": "Thanks for the order, then a cross-sell three days later",
    "trigger": {"event": "order_completed"},
    "reentry": "always",
    "exit_when": [{"event": "order_refunded"}],
    "start": "thanks",
    "steps": {
        "thanks": {
            "send": {"channel": "email", "template": "order-thanks", "category": "transactional"},
            "next": "cool_off",
        },
        "cool_off": {"wait": "P3D", "next": "cross_sell"},
        "cross_sell": {
            "send": {"channel": "email", "template": "cross-sell", "holdout_percent": 10}
        },
    },
}

BROWSE: dict[str, Any] = {
    "id": "browse-abandonment",
    "version": 1,
    "name": "Viewed a product, no cart within two hours: VIPs get their own email",
    "trigger": {"event": "product_viewed"},
    "reentry": {"after": "P1D"},
    "exit_when": [{"event": "order_completed"}],
    "start": "look",
    "steps": {
        "look": {
            "wait_for": {"event": "cart_updated", "timeout": "PT2H"},
            "on_timeout": "vip",
        },
        "vip": {
            "branch": {"field": "customer.vip", "op": "eq", "value": True},
            "then": "vip_email",
            "else": "email",
        },
        "vip_email": {"send": {"channel": "email", "template": "browse-vip"}},
        "email": {"send": {"channel": "email", "template": "browse-reminder"}},
    },
}

SPLIT: dict[str, Any] = {
    "id": "pricing-split",
    "version": 1,
    "name": "Pricing page visitors: A/B test of sending at once or an hour later",
    "trigger": {
        "event": "page_viewed",
        "where": {"field": "event.properties.path", "op": "eq", "value": "/pricing"},
    },
    "reentry": "never",
    "holdout_percent": 5,
    "start": "ab",
    "steps": {
        "ab": {
            "split": {
                "a": {"percent": 50, "next": "a_send"},
                "b": {"percent": 50, "next": "b_wait"},
            }
        },
        "a_send": {"send": {"channel": "email", "template": "pricing-a"}},
        "b_wait": {"wait": "PT1H", "next": "b_send"},
        "b_send": {"send": {"channel": "email", "template": "pricing-b"}},
    },
}

WINBACK: dict[str, Any] = {
    "id": "win-back",
    "version": 1,
    "name": "No order for 60 days: we miss you, then an offer a week later",
    "trigger": {"inactivity": {"event": "order_completed", "for": "P60D"}},
    "reentry": {"after": "P90D"},
    "exit_when": [{"event": "order_completed"}],
    "start": "miss_you",
    "steps": {
        "miss_you": {
            "send": {"channel": "email", "template": "winback-1-miss-you"},
            "next": "pause",
        },
        "pause": {"wait": "P7D", "next": "offer"},
        "offer": {"send": {"channel": "email", "template": "winback-2-offer"}},
    },
}

DOCUMENTS = (WELCOME, CART, POST_PURCHASE, BROWSE, SPLIT, WINBACK)
EXTRA_TEMPLATES = {"browse-vip", "browse-reminder", "pricing-a", "pricing-b"}

# The runs the timer benchmark seeds: (journey, the `wait` step it blocks on, the trigger event
# type). In each the step after the wait sends; welcome then blocks on a wait_for again.
WAITING_RUNS: tuple[tuple[str, str, str], ...] = (
    ("welcome", "pause", "signup"),
    ("cart-abandonment", "later", "cart_updated"),
    ("post-purchase", "cool_off", "order_completed"),
    ("pricing-split", "b_wait", "page_viewed"),
    ("win-back", "pause", "inactivity"),
)


def journeys() -> list[Journey]:
    """The six journeys, refused (ValueError) if any document has a problem."""
    from services.journey.adapters.files import template_ids

    templates = template_ids(REPO / "templates") | EXTRA_TEMPLATES
    found = []
    for document in DOCUMENTS:
        problems = validate_journey(document, templates=templates)
        if problems:
            raise ValueError(f"{document['id']}: " + "; ".join(map(str, problems)))
        found.append(Journey.model_validate(document))
    return found


def catalog(*, with_journeys: bool = True) -> JourneyCatalog:
    return JourneyCatalog(journeys() if with_journeys else [])
