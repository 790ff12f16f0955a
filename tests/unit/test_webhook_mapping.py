"""The pure webhook mappers, on realistic payloads (tests/fixtures/webhook_payloads/)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from services.ingest.catalogue import EventBase
from services.ingest.webhooks.mapping import (
    Delivery,
    Identity,
    MappingError,
    Platform,
    build_events,
    guest_id,
    money,
    payload_field,
    utc_text,
)
from services.ingest.webhooks.shopify import SHOPIFY
from services.ingest.webhooks.signature import sign, verify
from services.ingest.webhooks.woocommerce import WOOCOMMERCE, is_ping

PAYLOADS = Path(__file__).parents[1] / "fixtures" / "webhook_payloads"


def load(name: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((PAYLOADS / name).read_text())
    return payload


def events(
    platform: Platform,
    topic: str,
    payload: dict[str, Any],
    *,
    delivery_id: str = "d-1",
    owner: Identity | None = None,
) -> list[EventBase]:
    delivery = Delivery(source=platform.source, topic=topic, delivery_id=delivery_id)
    return build_events(platform.topics[topic], payload, delivery, owner=owner)


def props(event: EventBase) -> dict[str, Any]:
    return event.properties.model_dump(exclude_unset=True)  # type: ignore[attr-defined, no-any-return]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# --- Shopify


def test_shopify_order_maps_to_order_completed() -> None:
    [event] = events(SHOPIFY, "orders/create", load("shopify/orders_create.json"))
    assert event.type == "order_completed"  # type: ignore[attr-defined]
    assert event.event_id == "shopify:orders/create:d-1"
    assert event.customer_id == "7208335310865"
    assert event.anonymous_id == guest_id("ana.garcia@example.com")
    assert event.occurred_at == at("2026-11-20T09:14:31+00:00")
    p = props(event)
    assert p["order_id"] == "5912648065297"
    assert p["order_number"] == "#1042"
    assert p["checkout_id"] == "8f9c1b6a0de34f5e9a7b2c4d6e8f0a1b"
    assert (p["total"], p["currency"]) == (Decimal("69.70"), "EUR")
    assert (p["subtotal"], p["discount"], p["shipping"], p["tax"]) == (
        Decimal("64.80"),
        Decimal("7.20"),
        Decimal("4.90"),
        Decimal("11.13"),
    )
    assert p["coupon"] == "WELCOME10"
    assert "coupons" not in p  # only when there is more than one
    mug, papers = p["items"]
    assert mug == {
        "product_id": "8841992863505",
        "variant_id": "47160733401361",
        "sku": "MUG-CER-SAND",
        "name": "Ceramic Mug",
        "variant": "Sand",
        "brand": "Ciclo Ceramics",
        "price": Decimal("18.00"),
        "quantity": 2,
    }
    assert "variant" not in papers
    traits = event.traits.model_dump(exclude_unset=True)
    # The billing phone is national; the billing country makes it E.164.
    assert traits == {
        "email": "ana.garcia@example.com",
        "first_name": "Ana",
        "last_name": "García",
        "phone": "+4930901820",
        "country": "DE",
    }
    assert event.context["webhook"] == {
        "source": "shopify",
        "topic": "orders/create",
        "delivery_id": "d-1",
    }


def test_shopify_paid_order_is_a_custom_order_paid() -> None:
    [event] = events(SHOPIFY, "orders/paid", load("shopify/orders_create.json"))
    assert event.type == "order_paid"  # type: ignore[attr-defined]
    assert event.properties == {  # type: ignore[attr-defined]
        "order_id": "5912648065297",
        "order_number": "#1042",
        "total": "69.70",
        "currency": "EUR",
        "financial_status": "paid",
        "gateway": "shopify_payments",
    }
    assert event.occurred_at == at("2026-11-20T10:14:29+01:00")


def test_shopify_refund_goes_to_the_customer_of_its_order() -> None:
    owner = Identity(customer_id="7208335310865", anonymous_id="email_sha256:abc")
    [event] = events(SHOPIFY, "refunds/create", load("shopify/refunds_create.json"), owner=owner)
    assert event.type == "order_refunded"  # type: ignore[attr-defined]
    assert (event.customer_id, event.anonymous_id) == ("7208335310865", "email_sha256:abc")
    p = props(event)
    assert (p["order_id"], p["total"], p["currency"]) == ("5912648065297", Decimal("16.20"), "EUR")
    assert p["reason"] == "Mug arrived chipped"
    [item] = p["items"]
    assert (item["product_id"], item["price"], item["quantity"]) == (
        "8841992863505",
        Decimal("18.00"),
        1,
    )


def test_shopify_refund_of_an_unknown_order_is_anonymous_by_order() -> None:
    payload = load("shopify/refunds_create.json")
    payload["transactions"][0]["status"] = "failure"  # money not paid back: no total
    [event] = events(SHOPIFY, "refunds/create", payload)
    assert (event.customer_id, event.anonymous_id) == (None, "shopify:order:5912648065297")
    assert "total" not in props(event)


def test_shopify_new_customer_signs_up_with_its_email_consent() -> None:
    signup, consent = events(SHOPIFY, "customers/create", load("shopify/customers_create.json"))
    assert signup.type == "signup"  # type: ignore[attr-defined]
    assert signup.customer_id == "7208335310865"
    assert signup.traits.phone == "+4915112345678"
    assert consent.type == "consent_updated"  # type: ignore[attr-defined]
    assert props(consent) == {
        "channel": "email",
        "status": "granted",
        "category": "marketing",
        "source": "shopify",
        "opt_in_level": "single_opt_in",
    }
    assert consent.occurred_at == at("2026-11-20T10:12:02+01:00")
    # sms is "not_subscribed": never asked, so no event that could revoke a consent given elsewhere


def test_shopify_customer_update_identifies_and_reports_each_consent() -> None:
    payload = load("shopify/customers_update.json")
    identify, email, sms = events(SHOPIFY, "customers/update", payload)
    assert identify.type == "identify"  # type: ignore[attr-defined]
    assert identify.traits.last_name == "García López"
    assert identify.traits.country == "DE"
    assert (props(email)["channel"], props(email)["status"]) == ("email", "revoked")
    assert (props(sms)["channel"], props(sms)["status"]) == ("sms", "granted")
    assert props(sms)["collected_from"] == "SHOPIFY"

    # Another update (a new address, say) repeats the same consents under the same ids: the
    # journey service drops them; the identify itself is new.
    again = events(SHOPIFY, "customers/update", payload, delivery_id="d-2")
    assert [e.event_id for e in again[1:]] == [email.event_id, sms.event_id]
    assert again[0].event_id != identify.event_id


def test_shopify_guest_checkout_starts_a_checkout() -> None:
    [event] = events(SHOPIFY, "checkouts/create", load("shopify/checkouts_create.json"))
    assert event.type == "checkout_started"  # type: ignore[attr-defined]
    assert event.customer_id is None
    assert event.anonymous_id == guest_id("luca.rossi@example.com")
    p = props(event)
    assert p["checkout_id"] == "8f9c1b6a0de34f5e9a7b2c4d6e8f0a1b"
    assert p["cart_id"].startswith("Z2NwLWV1cm9wZS")
    assert (p["total"], p["currency"]) == (Decimal("36.00"), "EUR")
    assert p["url"].endswith("/recover?key=5b3f7e9d1c2a4b6e")
    assert event.occurred_at == at("2026-11-21T19:03:44+01:00")
    assert event.traits.country == "IT"  # from the shipping address when there is no billing one


def test_shopify_checkout_update_is_dated_by_the_update_and_a_completed_one_is_skipped() -> None:
    payload = load("shopify/checkouts_create.json")
    [event] = events(SHOPIFY, "checkouts/update", payload)
    assert event.occurred_at == at("2026-11-21T19:05:12+01:00")
    payload["completed_at"] = "2026-11-21T19:09:40+01:00"
    assert events(SHOPIFY, "checkouts/update", payload) == []


@pytest.mark.parametrize(
    ("change", "field", "event_field", "message"),
    [
        ({"currency": "EURO"}, "currency", "properties.currency", "at most 3 characters"),
        ({"total_price": None}, "total_price", "properties.total", "Field required"),
        ({"total_price": "-1.00"}, "total_price", "properties.total", "greater than or equal"),
        ({"line_items": [{"id": 1, "price": "abc"}]}, "line_items.0.price", None, "decimal"),
        ({"created_at": "2026-11-20 10:14"}, "created_at", "occurred_at", "timezone"),
    ],
)
def test_a_shopify_order_that_maps_to_an_invalid_event_names_the_field(
    change: dict[str, Any], field: str, event_field: str | None, message: str
) -> None:
    payload = load("shopify/orders_create.json") | change
    with pytest.raises(MappingError) as caught:
        events(SHOPIFY, "orders/create", payload)
    [error] = caught.value.errors
    assert error.field == field
    assert error.event_field == (event_field or "properties.items.0.price")
    assert message in error.message


# --- WooCommerce


def test_woocommerce_order_maps_to_order_completed() -> None:
    [event] = events(WOOCOMMERCE, "order.created", load("woocommerce/order_created.json"))
    assert event.type == "order_completed"  # type: ignore[attr-defined]
    assert event.event_id == "woocommerce:order.created:d-1"
    assert event.customer_id == "318"
    assert event.anonymous_id == guest_id("jan.devries@example.com")
    # date_created_gmt has no zone: it is UTC.
    assert event.occurred_at == at("2026-11-20T10:02:45+00:00")
    p = props(event)
    assert (p["order_id"], p["total"], p["currency"]) == ("4127", Decimal("51.29"), "EUR")
    assert (p["discount"], p["shipping"], p["tax"]) == (
        Decimal("5.00"),
        Decimal("4.20"),
        Decimal("8.90"),
    )
    assert p["coupon"] == "autumn5"
    assert p["cart_id"] == "3c5a1f0e9b7d2c4a6e8f0b1d3c5e7a9f"
    cup, towel = p["items"]
    # Line prices are JSON numbers: rounded to the catalogue's six places, never float noise.
    assert (cup["product_id"], cup["variation_id"], cup["price"], cup["quantity"]) == (
        "233",
        "241",
        Decimal("9.196667"),
        3,
    )
    assert towel["price"] == Decimal("10.6")
    assert "variation_id" not in towel  # 0 means none
    assert event.traits.model_dump(exclude_unset=True) == {
        "email": "jan.devries@example.com",
        "first_name": "Jan",
        "last_name": "de Vries",
        "phone": "+31612345678",
        "country": "NL",
    }


def test_woocommerce_guest_order_is_anonymous_by_email_and_keeps_a_bad_phone_raw() -> None:
    [event] = events(WOOCOMMERCE, "order.created", load("woocommerce/order_created_guest.json"))
    assert event.customer_id is None
    assert event.anonymous_id == guest_id("sofie.jensen@example.com")  # case does not matter
    assert event.traits.email == "Sofie.Jensen@example.com"
    assert event.traits.phone is None
    assert event.traits.model_extra == {"phone_raw": "12345"}
    [item] = props(event)["items"]
    assert item["product_id"] == "line:930"  # a deleted product, no SKU


def test_a_country_that_is_no_iso_code_is_left_out_and_the_order_kept() -> None:
    # Shopify writes ZZ for an unknown region: the order and its other contact data stay.
    order = load("shopify/orders_create.json")
    order["billing_address"]["country_code"] = "ZZ"
    order["billing_address"]["phone"] = "+49 30 901820"
    [event] = events(SHOPIFY, "orders/create", order)
    assert event.type == "order_completed"
    traits = event.traits.model_dump(exclude_unset=True)
    assert "country" not in traits
    assert traits["phone"] == "+4930901820"


def test_woocommerce_guest_without_email_is_anonymous_by_order() -> None:
    payload = load("woocommerce/order_created_guest.json")
    payload["billing"]["email"] = ""
    [event] = events(WOOCOMMERCE, "order.created", payload)
    assert (event.customer_id, event.anonymous_id) == (None, "woocommerce:order:4131")


def test_woocommerce_cancelled_order_is_order_cancelled_once() -> None:
    payload = load("woocommerce/order_created.json") | {"status": "cancelled"}
    [event] = events(WOOCOMMERCE, "order.updated", payload)
    assert event.type == "order_cancelled"  # type: ignore[attr-defined]
    assert props(event) == {"order_id": "4127", "order_number": "4127"}
    assert event.occurred_at == at("2026-11-20T10:02:47+00:00")
    # A later update of the cancelled order (a note) repeats the same event id.
    [again] = events(WOOCOMMERCE, "order.updated", payload, delivery_id="d-2")
    assert again.event_id == event.event_id == "woocommerce:order:4127:cancelled"


def test_woocommerce_refunded_order_is_order_refunded_with_the_refunds_total() -> None:
    payload = load("woocommerce/order_created.json") | {
        "status": "refunded",
        "refunds": [
            {"id": 4130, "reason": "Damaged", "total": "-40.00"},
            {"id": 4133, "reason": "", "total": "-11.29"},
        ],
    }
    [event] = events(WOOCOMMERCE, "order.updated", payload)
    assert event.type == "order_refunded"  # type: ignore[attr-defined]
    assert (props(event)["total"], props(event)["currency"]) == (Decimal("51.29"), "EUR")


def test_a_refund_total_python_would_misread_is_refused_naming_it() -> None:
    # Summing the refunds must not read "1_000" as 1000 where the catalogue would refuse it.
    payload = load("woocommerce/order_created.json") | {
        "status": "refunded",
        "refunds": [{"id": 4130, "total": "-1_000"}, {"id": 4133, "total": "-11.29"}],
    }
    with pytest.raises(MappingError) as caught:
        events(WOOCOMMERCE, "order.updated", payload)
    [error] = caught.value.errors
    assert error.field == "refunds.total"  # named in the platform's terms
    assert "'1_000' is not a decimal amount" in error.message


def test_woocommerce_other_order_update_is_a_custom_order_updated() -> None:
    payload = load("woocommerce/order_created.json") | {"status": "completed"}
    [event] = events(WOOCOMMERCE, "order.updated", payload)
    assert event.type == "order_updated"  # type: ignore[attr-defined]
    assert event.event_id == "woocommerce:order.updated:d-1"
    assert event.properties == {  # type: ignore[attr-defined]
        "order_id": "4127",
        "order_number": "4127",
        "status": "completed",
        "total": "51.29",
        "currency": "EUR",
    }


def test_woocommerce_new_customer_signs_up() -> None:
    [event] = events(WOOCOMMERCE, "customer.created", load("woocommerce/customer_created.json"))
    assert event.type == "signup"  # type: ignore[attr-defined]
    assert event.customer_id == "318"
    assert event.occurred_at == at("2026-11-19T17:22:05+00:00")
    assert (event.traits.email, event.traits.phone) == ("jan.devries@example.com", "+31612345678")


def test_a_woocommerce_order_with_a_bad_line_price_names_the_line() -> None:
    payload = load("woocommerce/order_created.json")
    payload["line_items"][1]["price"] = float("inf")
    with pytest.raises(MappingError) as caught:
        events(WOOCOMMERCE, "order.created", payload)
    assert [e.field for e in caught.value.errors] == ["line_items.1.price"]


# --- helpers


def test_signatures_are_base64_hmac_sha256() -> None:
    # RFC 4231-style known answer: HMAC-SHA256("key", "The quick brown fox …").
    body = b"The quick brown fox jumps over the lazy dog"
    known = "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    assert sign("key", body) == base64.b64encode(bytes.fromhex(known)).decode()
    assert verify("key", body, " " + sign("key", body) + "\n")  # header whitespace is not a match
    assert not verify("key", body + b" ", sign("key", body))
    assert not verify("other", body, sign("key", body))
    assert not verify("key", body, "ümlaut")


@pytest.mark.parametrize(
    ("body", "ping"),
    [(b"webhook_id=17", True), (b"webhook_id=", False), (b'{"webhook_id": 17}', False)],
)
def test_the_woocommerce_ping_is_recognised(body: bytes, ping: bool) -> None:
    assert is_ping(body) is ping


def test_amounts_and_times() -> None:
    assert money(0.1 + 0.2) == Decimal("0.3")
    assert money(12.5) == Decimal("12.5")
    assert money("12.50") == "12.50"  # strings are the catalogue's to parse
    assert money("") is None
    assert utc_text("2026-11-20T10:02:45") == "2026-11-20T10:02:45+00:00"
    assert utc_text("2026-11-20T10:02:45-05:00") == "2026-11-20T10:02:45-05:00"
    assert payload_field({"properties.items": "line_items"}, "properties.items.3.sku") == (
        "line_items.3.sku"
    )
    assert payload_field({"properties.items": "line_items"}, "properties.itemsx") == (
        "properties.itemsx"
    )


def test_every_topic_has_a_mapper_exercised_here() -> None:
    # Adding a topic without a test here fails this list.
    assert set(SHOPIFY.topics) == {
        "orders/create",
        "orders/paid",
        "refunds/create",
        "customers/create",
        "customers/update",
        "checkouts/create",
        "checkouts/update",
    }
    assert set(WOOCOMMERCE.topics) == {"order.created", "order.updated", "customer.created"}
