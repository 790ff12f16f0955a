"""The Segment → native mapping as pure functions: no HTTP, no bus."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ingest.envelope import to_envelope
from services.ingest.segment_mapping import (
    KINDS,
    BatchDefaults,
    Rejected,
    batch_defaults,
    merge_batch,
    occurred_at,
    snake_case,
    to_event,
)
from shared.contracts.events import EventEnvelope

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def envelope(message: dict[str, Any], kind: str = "track") -> EventEnvelope:
    event = to_event(message, kind=kind, received_at=NOW)
    return to_envelope(event, workspace_id="shop", received_at=NOW, source="segment")


def rejected(message: dict[str, Any], kind: str = "track") -> dict[str, str]:
    with pytest.raises(Rejected) as caught:
        to_event(message, kind=kind, received_at=NOW)
    return {p.field: p.message for p in caught.value.problems}


def order(**properties: Any) -> dict[str, Any]:
    return {"userId": "c1", "event": "Order Completed", "properties": properties}


@pytest.mark.parametrize(
    ("name", "snake"),
    [
        ("Coupon Applied", "coupon_applied"),
        ("Product Added to Wishlist", "product_added_to_wishlist"),
        ("addToCart", "add_to_cart"),
        ("HTMLExported", "html_exported"),
        ("  Checkout Step 2 -- Viewed! ", "checkout_step_2_viewed"),
        ("order_completed", "order_completed"),
        ("Café Visited", "cafe_visited"),
        ("Größe geändert", "grosse_geandert"),
        ("Łódź Ærø", "lodz_aero"),
        ("Заказ", ""),
    ],
)
def test_snake_case(name: str, snake: str) -> None:
    assert snake_case(name) == snake


def test_order_completed_maps_products_to_items_and_keeps_the_rest() -> None:
    event = envelope(
        {
            "userId": "c1",
            "messageId": "m-1",
            "event": "Order Completed",
            "properties": {
                "order_id": "1001",
                "checkout_id": "k-9",
                "revenue": 50.0,
                "total": 59.9,
                "currency": "eur",
                "shipping": 4.95,
                "tax": 4.95,
                "discount": 6,
                "coupon": "WELCOME10",
                "affiliation": "web",
                "products": [
                    {
                        "product_id": "p1",
                        "sku": "SKU-1",
                        "name": "Mug",
                        "price": 29.95,
                        "quantity": 2,
                        "category": "Kitchen",
                        "brand": "Acme",
                        "variant": "blue",
                        "url": "https://shop.example/p1",
                        "image_url": "https://cdn.example/p1.jpg",
                        "position": 3,
                    }
                ],
            },
        }
    )
    assert (event.type, event.event_id, event.customer_id) == ("order_completed", "m-1", "c1")
    props = event.properties
    assert props["total"] == "59.9"  # total wins over revenue
    assert props["currency"] == "EUR"
    assert (props["revenue"], props["affiliation"]) == (50.0, "web")  # kept, not dropped
    assert "products" not in props
    [item] = props["items"]
    assert item["product_id"] == "p1"
    assert item["price"] == "29.95"
    assert (item["quantity"], item["brand"], item["position"]) == (2, "Acme", 3)
    assert event.context["extra"]["segment"]["event"] == "Order Completed"
    assert event.source == "segment"
    assert event.historical is False


def test_order_total_falls_back_to_revenue_and_float_noise_is_rounded() -> None:
    event = envelope(order(order_id="1", revenue=0.1 + 0.2, currency="EUR"))
    assert event.properties["total"] == "0.3"
    assert event.properties["revenue"] == 0.1 + 0.2  # the field as sent is kept as sent


def test_order_without_currency_is_rejected_naming_the_field() -> None:
    problems = rejected(order(order_id="1", total=10))
    assert "properties.currency" in problems
    assert "does not guess" in problems["properties.currency"]


def test_order_without_an_amount_names_total() -> None:
    assert "properties.total" in rejected(order(order_id="1", currency="EUR"))


def test_catalogue_errors_name_the_segment_field() -> None:
    problems = rejected(
        order(order_id="1", total=10, currency="EUR", products=[{"product_id": "p"}])
    )
    assert "properties.products.0.price" in problems
    assert "properties.currency" in rejected(order(order_id="1", total=1, currency="EURO"))
    assert "userId" in rejected({"userId": "u" * 201, "event": "x"})


def test_product_id_falls_back_to_id_then_sku() -> None:
    viewed = envelope({"anonymousId": "a1", "event": "Product Viewed", "properties": {"id": 7}})
    assert viewed.type == "product_viewed"
    assert viewed.properties["product_id"] == "7"
    by_sku = envelope({"anonymousId": "a1", "event": "Product Viewed", "properties": {"sku": "S"}})
    assert by_sku.properties["product_id"] == "S"
    problems = rejected({"anonymousId": "a1", "event": "Product Viewed", "properties": {}})
    assert "properties.product_id" in problems


@pytest.mark.parametrize(
    ("name", "action"), [("Product Added", "added"), ("Product Removed", "removed")]
)
def test_product_added_and_removed_are_cart_updates_with_one_item(name: str, action: str) -> None:
    event = envelope(
        {
            "userId": "c1",
            "event": name,
            "properties": {
                "cart_id": "cart-9",
                "product_id": "p1",
                "price": 10,
                "quantity": 1,
                "currency": "EUR",
                "coupon": "X",
            },
        }
    )
    assert event.type == "cart_updated"
    props = event.properties
    assert (props["cart_id"], props["action"], props["currency"]) == ("cart-9", action, "EUR")
    assert props["items"] == [{"product_id": "p1", "price": "10", "quantity": 1, "coupon": "X"}]


def test_cart_id_falls_back_to_the_anonymous_id_then_the_user_id() -> None:
    product = {"product_id": "p1", "price": 1}
    both = envelope(
        {"userId": "c1", "anonymousId": "a1", "event": "Product Added", "properties": product}
    )
    assert both.properties["cart_id"] == "cart:a1"
    user = envelope({"userId": "c1", "event": "Product Added", "properties": product})
    assert user.properties["cart_id"] == "cart:c1"


def test_a_numeric_cart_id_is_a_string_and_a_bool_is_no_cart_id() -> None:
    product = {"product_id": "p1", "price": 1}
    numeric = envelope(
        {"userId": "c", "event": "Product Added", "properties": {**product, "cart_id": 9}}
    )
    assert numeric.properties["cart_id"] == "9"
    problems = rejected(
        {"userId": "c", "event": "Product Added", "properties": {**product, "cart_id": True}}
    )
    assert "properties.cart_id" in problems


def test_product_added_without_price_names_the_segment_field() -> None:
    problems = rejected({"userId": "c", "event": "Product Added", "properties": {"sku": "S"}})
    assert "properties.price" in problems


def test_cart_viewed_is_a_full_snapshot() -> None:
    event = envelope(
        {
            "anonymousId": "a1",
            "event": "Cart Viewed",
            "properties": {"cart_id": "k", "products": [{"product_id": "p", "price": 2.5}]},
        }
    )
    assert event.type == "cart_updated"
    assert event.properties["action"] == "viewed"
    assert event.properties["items"] == [{"product_id": "p", "price": "2.5"}]


def test_checkout_started_takes_the_order_id_as_checkout_id() -> None:
    event = envelope(
        {
            "userId": "c1",
            "event": "Checkout Started",
            "properties": {"order_id": "o1", "value": 30, "currency": "USD"},
        }
    )
    assert event.type == "checkout_started"
    assert event.properties["checkout_id"] == "o1"
    assert event.properties["total"] == "30"


def test_refund_and_cancel() -> None:
    refund = envelope(
        {"userId": "c", "event": "Order Refunded", "properties": {"order_id": "1", "total": 5}}
        | {"properties": {"order_id": "1", "total": 5, "currency": "EUR"}}
    )
    assert (refund.type, refund.properties["total"]) == ("order_refunded", "5")
    assert "properties.currency" in rejected(
        {"userId": "c", "event": "Order Refunded", "properties": {"order_id": "1", "total": 5}}
    )
    full = envelope({"userId": "c", "event": "Order Refunded", "properties": {"order_id": "1"}})
    assert full.type == "order_refunded"
    cancel = envelope(
        {"userId": "c", "event": "Order Cancelled", "properties": {"order_id": "1", "total": 9}}
    )
    assert cancel.type == "order_cancelled"


def test_signed_up_is_signup() -> None:
    assert envelope({"userId": "c", "event": "Signed Up", "properties": {"plan": "x"}}).type == (
        "signup"
    )


def test_other_names_are_custom_events_that_keep_their_name_and_properties() -> None:
    event = envelope(
        {
            "userId": "c",
            "event": "Coupon Applied",
            "properties": {"coupon": "X", "products": [{"no_id": True}]},
        }
    )
    assert event.type == "coupon_applied"
    assert event.properties == {
        "coupon": "X",
        "products": [{"no_id": True}],  # a custom event is not reshaped
        "event_name": "Coupon Applied",
    }


@pytest.mark.parametrize(
    ("name", "foreign"),
    [
        ("注文完了", "注文完了"),
        ("Покупка", "Покупка"),
        ("Покупка 2", "Покупка"),
        ("Order \u0661", "\u0661"),
    ],
)
def test_a_name_in_another_script_is_rejected_saying_names_are_latin(
    name: str, foreign: str
) -> None:
    # Dropping the letters snake_case cannot write would misname the event: "Покупка 2" and
    # "Возврат 2" would both have become the type "2".
    message = rejected({"userId": "c1", "event": name})["event"]
    assert "event names must be written in Latin letters and ASCII digits" in message
    assert f"{foreign!r} cannot be" in message


@pytest.mark.parametrize("name", ["!!!", "🎉", " -- "])
def test_a_name_without_a_letter_or_digit_is_rejected(name: str) -> None:
    assert "has no letter or digit" in rejected({"userId": "c1", "event": name})["event"]


def test_latin_letters_with_accents_or_no_decomposition_name_a_custom_type() -> None:
    event = envelope({"userId": "c1", "event": "Größe Geändert"})
    assert (event.type, event.properties["event_name"]) == ("grosse_geandert", "Größe Geändert")


def test_a_snake_name_of_a_catalogue_type_is_that_type() -> None:
    event = envelope(
        {"userId": "c", "event": "Consent Updated", "properties": {"channel": "email"}}
        | {"properties": {"channel": "email", "status": "granted"}}
    )
    assert event.type == "consent_updated"
    assert "properties.status" in rejected(
        {"userId": "c", "event": "Consent Updated", "properties": {"channel": "email"}}
    )


@pytest.mark.parametrize("name", ["Identify", "alias"])
def test_track_cannot_smuggle_an_identity_call(name: str) -> None:
    assert "/v1/" in rejected({"userId": "c", "event": name})["event"]


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"event": "x"}, "userId"),
        ({"userId": "", "anonymousId": None, "event": "x"}, "userId"),
        ({"userId": True, "event": "x"}, "userId"),
        ({"userId": "c"}, "event"),
        ({"userId": "c", "event": "!!!"}, "event"),
        ({"userId": "c", "event": "x", "messageId": "m" * 100}, "messageId"),
        ({"userId": "c", "event": "x", "properties": []}, "properties"),
        ({"userId": "c", "event": "x", "context": "web"}, "context"),
        ({"userId": "c", "event": "x", "timestamp": "yesterday"}, "timestamp"),
        ({"userId": "c", "event": "x", "timestamp": 1700000000}, "timestamp"),
        (order(order_id="1", total=1, currency="EUR", products={}), "properties.products"),
        (order(order_id="1", total=1, currency="EUR", products=[3]), "properties.products.0"),
    ],
)
def test_malformed_messages_name_the_field(message: dict[str, Any], field: str) -> None:
    assert field in rejected(message)


def test_numeric_ids_are_strings() -> None:
    event = envelope({"userId": 42, "anonymousId": 7.5, "messageId": 9, "event": "x"})
    assert (event.customer_id, event.anonymous_id, event.event_id) == ("42", "7.5", "9")


def test_identify_validates_traits_and_renames_segment_reserved_ones() -> None:
    event = envelope(
        {
            "anonymousId": "a1",
            "traits": {
                "email": "Ana@Example.COM",
                "firstName": "Ana",
                "lastName": "Lima",
                "birthday": "1990-05-04T00:00:00.000Z",
                "plan": "pro",
            },
        },
        kind="identify",
    )
    assert event.type == "identify"
    assert event.traits == {
        "email": "Ana@example.com",
        "first_name": "Ana",
        "last_name": "Lima",
        "birthday": "1990-05-04",
        "plan": "pro",
    }
    problems = rejected({"userId": "c", "traits": {"email": "nope"}}, kind="identify")
    assert "traits.email" in problems


def test_alias_carries_the_previous_id() -> None:
    event = envelope({"userId": "c1", "previousId": "a1"}, kind="alias")
    assert (event.type, event.customer_id, event.properties) == (
        "alias",
        "c1",
        {"previous_id": "a1"},
    )
    assert "previousId" in rejected({"userId": "c1"}, kind="alias")
    assert "userId" in rejected({"anonymousId": "a1", "previousId": "x"}, kind="alias")


def test_group_keeps_the_group_traits_out_of_the_persons() -> None:
    event = envelope({"userId": "c1", "groupId": 5, "traits": {"plan": "pro"}}, kind="group")
    assert event.type == "group"
    assert event.properties == {"group_id": "5", "traits": {"plan": "pro"}}
    assert event.traits == {}
    assert "groupId" in rejected({"userId": "c1"}, kind="group")


def test_page_takes_missing_fields_from_context_page_and_keeps_the_name() -> None:
    event = envelope(
        {
            "anonymousId": "a1",
            "name": "Home",
            "category": "Landing",
            "properties": {"title": "Welcome"},
            "context": {"page": {"url": "https://shop.example/", "path": "/", "title": "Other"}},
        },
        kind="page",
    )
    assert event.type == "page_viewed"
    assert event.properties == {
        "title": "Welcome",
        "name": "Home",
        "category": "Landing",
        "url": "https://shop.example/",
        "path": "/",
    }
    assert event.context["page"]["title"] == "Other"
    problems = rejected({"anonymousId": "a", "context": {"page": {"url": ["x"]}}}, kind="page")
    assert "context.page.url" in problems


def test_screen_is_a_custom_screen_viewed() -> None:
    event = envelope({"userId": "c", "name": "Cart", "properties": {"name": "X"}}, kind="screen")
    assert event.type == "screen_viewed"
    assert event.properties == {"name": "X"}
    assert event.context["extra"]["segment"]["name"] == "Cart"  # differs: kept, not dropped


def test_unknown_fields_are_kept_and_the_write_key_is_not() -> None:
    event = envelope(
        {
            "userId": "c",
            "event": "x",
            "writeKey": "secret",
            "integrations": {"All": False},
            "channel": "server",
            "_metadata": {"bundled": []},
            "context": {"ip": "1.2.3.4", "extra": {"ab": "b"}},
        }
    )
    assert event.context["ip"] == "1.2.3.4"
    assert event.context["extra"]["segment"] == {
        "event": "x",
        "integrations": {"All": False},
        "channel": "server",
        "_metadata": {"bundled": []},
        "context_extra": {"ab": "b"},
    }
    assert "secret" not in event.to_json().decode()


def test_unknown_type_is_rejected() -> None:
    assert "type" in rejected({"userId": "c"}, kind="merge")


def test_timestamp_wins_then_skew_correction_then_original() -> None:
    sent = NOW - timedelta(hours=3)  # the device clock is three hours slow
    original = sent - timedelta(seconds=30)  # and the event happened 30 s before the upload
    stamps = {"originalTimestamp": original.isoformat(), "sentAt": sent.isoformat()}
    assert occurred_at(stamps, received_at=NOW) == (
        NOW - timedelta(seconds=30),
        "originalTimestamp",
    )
    given = {"timestamp": "2026-01-01T00:00:00+01:00", **stamps}
    assert occurred_at(given, received_at=NOW)[0] == datetime(2025, 12, 31, 23, tzinfo=UTC)
    only = {"originalTimestamp": original.isoformat()}
    assert occurred_at(only, received_at=NOW)[0] == original
    assert occurred_at({}, received_at=NOW)[0] == NOW


def test_a_time_without_a_zone_is_utc_and_absurd_skews_are_rejected() -> None:
    when, _ = occurred_at({"timestamp": "2026-01-01T10:00:00"}, received_at=NOW)
    assert when == datetime(2026, 1, 1, 10, tzinfo=UTC)
    absurd = {"originalTimestamp": "9999-12-31T00:00:00Z", "sentAt": "0001-01-02T00:00:00Z"}
    assert "sentAt" in rejected({"userId": "c", "event": "x", **absurd})
    assert "timestamp" in rejected(
        {"userId": "c", "event": "x", "timestamp": "0001-01-01T00:00+05:00"}
    )


def test_batch_defaults_merge_into_each_item_and_the_item_wins() -> None:
    defaults = batch_defaults(
        {
            "context": {"library": {"name": "rudder"}, "ip": "1.1.1.1"},
            "integrations": {"All": True},
            "sentAt": "2026-11-23T11:00:00Z",
            "metadata": {"x": 1},
        }
    )
    merged = merge_batch({"context": {"ip": "2.2.2.2"}, "sentAt": "mine"}, defaults)
    assert merged["context"] == {"library": {"name": "rudder"}, "ip": "2.2.2.2"}
    assert merged["integrations"] == {"All": True}
    assert merged["sentAt"] == "mine"
    assert merged["batch"] == {"metadata": {"x": 1}}
    assert merge_batch({}, BatchDefaults()) == {}
    with pytest.raises(Rejected):
        batch_defaults({"context": []})


def test_a_batch_sent_at_corrects_the_items_clock() -> None:
    defaults = batch_defaults({"sentAt": (NOW - timedelta(hours=1)).isoformat()})
    item = {
        "userId": "c",
        "event": "x",
        "originalTimestamp": (NOW - timedelta(hours=1, seconds=5)).isoformat(),
    }
    event = to_event(merge_batch(item, defaults), kind="track", received_at=NOW)
    assert event.occurred_at == NOW - timedelta(seconds=5)


def test_money_as_decimal_strings_and_ints_passes_untouched() -> None:
    event = envelope(order(order_id="1", total="12.50", subtotal=10, currency="EUR"))
    assert (event.properties["total"], event.properties["subtotal"]) == ("12.50", "10")
    assert Decimal(event.properties["total"]) == Decimal("12.5")


# What orjson.loads can hand over: integers beyond 64 bits already arrive as floats.
_INT = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | _INT
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
_FIELDS = st.sampled_from(
    [
        "userId",
        "anonymousId",
        "messageId",
        "timestamp",
        "originalTimestamp",
        "sentAt",
        "context",
        "traits",
        "properties",
        "event",
        "name",
        "groupId",
        "previousId",
        "category",
    ]
)
_EVENTS = st.sampled_from(
    [
        "Order Completed",
        "Order Refunded",
        "Order Cancelled",
        "Checkout Started",
        "Product Viewed",
        "Product Added",
        "Product Removed",
        "Cart Viewed",
        "Signed Up",
        "Consent Updated",
        "Other",
    ]
)
# Mostly plausible e-commerce values, sometimes junk: enough of them pass to exercise the bus
# encoding of every mapped type, not just the rejections.
_MONEY = st.floats(0, 1e6) | st.integers(0, 10**6) | st.from_regex(r"\A\d{1,4}\.\d{1,2}\Z")
_TEXT = st.text(min_size=1, max_size=6)
_PRODUCT = st.fixed_dictionaries(
    {"product_id": _TEXT | _JSON, "price": _MONEY},
    optional={"quantity": st.integers(1, 5) | _JSON, "name": _TEXT, "coupon": _JSON},
)
_ORDER_LIKE = st.fixed_dictionaries(
    {
        "order_id": _TEXT,
        "total": _MONEY,
        "currency": st.sampled_from(["EUR", "usd"]),
        "products": st.lists(_PRODUCT, max_size=3),
    },
    optional={"cart_id": _TEXT, "junk": _JSON, "shipping": _MONEY, "tax": _MONEY},
)
_ANY_PROPERTIES = st.fixed_dictionaries(
    {},
    optional={
        "order_id": _TEXT | _JSON,
        "total": _MONEY,
        "revenue": _MONEY,
        "value": _MONEY,
        "discount": _MONEY,
        "currency": st.sampled_from(["EUR", "usd", "XXX", "EURO"]),
        "products": st.lists(_PRODUCT, max_size=3) | _JSON,
        "cart_id": _TEXT | _INT,
        "product_id": _TEXT | _INT,
        "price": _MONEY,
        "sku": _TEXT,
        "id": _INT,
        "channel": st.sampled_from(["email", "sms"]),
        "status": st.sampled_from(["granted", "revoked"]),
        "junk": _JSON,
    },
)


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    kind=st.just("track") | st.sampled_from(KINDS),
    message=st.just({}) | st.dictionaries(_FIELDS, _JSON, max_size=3),
    event=_EVENTS,
    properties=_ORDER_LIKE | _ANY_PROPERTIES,
)
def test_any_json_is_either_an_event_the_bus_can_carry_or_rejected(
    kind: str, message: dict[str, Any], event: str, properties: dict[str, Any]
) -> None:
    message = {"userId": "c", "event": event, "properties": properties, **message}
    try:
        built = envelope(message, kind=kind)
    except Rejected as exc:
        problems = exc.problems
    else:
        # Accepted: the bus encoding must carry it and give the same event back.
        assert EventEnvelope.from_json(built.to_json()) == built
        return
    assert all(p.field and p.message for p in problems)
