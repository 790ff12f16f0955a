"""The variables a message renders with: what dispatch builds from the request wins over the
request's ``data``, and ``TEMPLATE_ROOTS`` (the contract's one list) names exactly those."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.dispatch.domain.templates import default_sample
from services.dispatch.service_layer.handlers import message_variables
from shared.contracts.messages import TEMPLATE_ROOTS, MessageRequest

LINKS = {"unsubscribe_url": "https://ciclo/u/t", "preferences_url": "https://ciclo/preferences/t"}


def request(data: dict[str, Any]) -> MessageRequest:
    return MessageRequest(
        message_id="msg_1",
        workspace_id="shop",
        customer_id="c1",
        channel="email",
        template="welcome-1",
        requested_at=datetime(2026, 11, 23, tzinfo=UTC),
        recipient={
            "traits": {"first_name": "Ana"},
            "scores": {"engagement": 3},
            "stage": "active",
            "segments": ["vip"],
            "lead": {"score": 40, "band": "warm"},
        },
        data=data,
    )


def test_data_never_replaces_what_dispatch_builds() -> None:
    forged = {
        "customer": {"first_name": "Mallory", "id": "c2"},
        "message": {"id": "msg_other", "category": "transactional"},
        "scores": {"engagement": 99},
        "stage": "lapsed",
        "segments": [],
        "lead": {"band": "hot"},
        "profile": {"order_count": 7},
        "unsubscribe_url": "https://evil.example/u",
        "preferences_url": "https://evil.example/p",
        "codes": {"welcome10": "FREE"},
    }
    variables = message_variables(request({"event": {"type": "signed_up"}, **forged}), LINKS)
    assert variables["customer"] == {"first_name": "Ana", "id": "c1"}
    assert variables["message"] == {"id": "msg_1", "category": "marketing"}
    assert (variables["scores"], variables["stage"], variables["segments"]) == (
        {"engagement": 3},
        "active",
        ["vip"],
    )
    assert (variables["lead"], variables["profile"]) == ({"score": 40, "band": "warm"}, {})
    assert (variables["unsubscribe_url"], variables["preferences_url"]) == (
        LINKS["unsubscribe_url"],
        LINKS["preferences_url"],
    )
    assert "codes" not in variables  # drawn by the renderer, never taken from a request
    assert variables["event"] == {"type": "signed_up"}


def test_links_of_data_are_dropped_even_when_dispatch_adds_none() -> None:
    variables = message_variables(request({"unsubscribe_url": "https://evil.example/u"}), {})
    assert "unsubscribe_url" not in variables


def test_other_data_keys_are_variables_of_their_own() -> None:
    variables = message_variables(request({"event": {}, "coupon_note": "10% off"}), LINKS)
    assert variables["coupon_note"] == "10% off"


def test_the_contracts_list_names_every_variable_dispatch_builds() -> None:
    built = set(message_variables(request({}), LINKS)) | {"codes"}
    assert built == TEMPLATE_ROOTS
    assert set(default_sample("email")) <= TEMPLATE_ROOTS
