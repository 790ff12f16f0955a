"""WooCommerce webhook topics mapped onto the catalogue.

====================  ===============================================================
``order.created``     ``order_completed``
``order.updated``     ``order_cancelled`` (status cancelled), ``order_refunded`` (status
                      refunded), else custom ``order_updated`` with the status
``customer.created``  ``signup``
====================  ===============================================================

Payloads are the REST API v3 resources. ``customer_id`` 0 is a guest: the event carries the
email-derived guest id (see ``mapping.guest_id``) instead of a customer id. The first request
WooCommerce sends to a new webhook is an unsigned ping (form body ``webhook_id=N``) that must be
answered 200, or WooCommerce refuses to save the webhook.
"""

from __future__ import annotations

import re
from typing import Any

from services.ingest.webhooks.mapping import (
    Delivery,
    Identity,
    Payload,
    Platform,
    Topic,
    compact,
    contact_traits,
    identity,
    money,
    native,
    obj,
    objs,
    sum_amounts,
    text,
    utc_text,
)

_PING = re.compile(rb"webhook_id=\d{1,20}")


def is_ping(body: bytes) -> bool:
    """The body of WooCommerce's creation ping, which carries no signature."""
    return _PING.fullmatch(body.strip()) is not None


def _id(value: Any) -> str | None:
    """WooCommerce says 0 for "none" (a deleted product, a simple product's variation)."""
    found = text(value)
    return None if found == "0" else found


def _items(lines: Any) -> list[Payload]:
    items = []
    for index, line in enumerate(objs(lines)):
        variation = _id(line.get("variation_id"))
        product = (
            _id(line.get("product_id"))
            or variation
            or text(line.get("sku"))
            or f"line:{text(line.get('id')) or index}"
        )
        item = {
            "product_id": product,
            "variation_id": variation,
            "sku": text(line.get("sku")),
            "name": text(line.get("name")),
            # ``price`` is a JSON number (the unit price after discounts), unlike every total.
            "price": money(line.get("price")),
            "quantity": line.get("quantity"),
            "image_url": text(obj(line.get("image")).get("src")),
        }
        items.append(compact(item))
    return items


def _buyer(order: Payload) -> tuple[Identity, Payload]:
    billing = obj(order.get("billing"))
    traits = contact_traits(
        email=billing.get("email"),
        phone=billing.get("phone"),
        first_name=billing.get("first_name"),
        last_name=billing.get("last_name"),
        country=billing.get("country"),
    )
    email = traits.get("email") or traits.get("email_raw")
    fallback = f"woocommerce:order:{text(order.get('id'))}"
    return identity(customer_id=order.get("customer_id"), email=email, fallback=fallback), traits


def order_created(order: Payload, delivery: Delivery, *, owner: Identity | None) -> list[Payload]:
    who, traits = _buyer(order)
    codes = [c for c in (text(line.get("code")) for line in objs(order.get("coupon_lines"))) if c]
    properties = {
        "order_id": text(order.get("id")),
        "order_number": text(order.get("number")),
        "cart_id": text(order.get("cart_hash")),
        "status": text(order.get("status")),
        "total": money(order.get("total")),
        "currency": text(order.get("currency")),
        "discount": money(order.get("discount_total")),
        "shipping": money(order.get("shipping_total")),
        "tax": money(order.get("total_tax")),
        "coupon": codes[0] if codes else None,
        "coupons": codes if len(codes) > 1 else None,
        "payment_method": text(order.get("payment_method")),
        "items": _items(order.get("line_items")),
    }
    return [
        native(
            "order_completed",
            event_id=delivery.event_id,
            who=who,
            delivery=delivery,
            occurred_at=utc_text(order.get("date_created_gmt")),
            properties=properties,
            traits=traits,
        )
    ]


def order_updated(order: Payload, delivery: Delivery, *, owner: Identity | None) -> list[Payload]:
    """``order.updated`` fires on every change (a note, a tracking number). Cancellation and
    refund are states: their event ids are built from the order and the state, so later updates
    of a cancelled order repeat an event the journey service drops instead of cancelling again."""
    who, traits = _buyer(order)
    order_id = text(order.get("id"))
    status = text(order.get("status"))
    occurred_at = utc_text(order.get("date_modified_gmt"))
    common = {"order_id": order_id, "order_number": text(order.get("number"))}
    if status == "cancelled":
        event_type, event_id = "order_cancelled", f"woocommerce:order:{order_id}:cancelled"
        properties: Payload = common
    elif status == "refunded":
        event_type, event_id = "order_refunded", f"woocommerce:order:{order_id}:refunded"
        refunds = [r.get("total") for r in objs(order.get("refunds"))]
        properties = {
            **common,
            "total": sum_amounts(refunds) if refunds else money(order.get("total")),
            "currency": text(order.get("currency")),
        }
    else:
        event_type, event_id = "order_updated", delivery.event_id
        properties = {
            **common,
            "status": status,
            "total": text(order.get("total")),  # a custom event: money stays a decimal string
            "currency": text(order.get("currency")),
        }
    return [
        native(
            event_type,
            event_id=event_id,
            who=who,
            delivery=delivery,
            occurred_at=occurred_at,
            properties=properties,
            traits=traits,
        )
    ]


def customer_created(
    customer: Payload, delivery: Delivery, *, owner: Identity | None
) -> list[Payload]:
    billing = obj(customer.get("billing"))
    traits = contact_traits(
        email=customer.get("email") or billing.get("email"),
        phone=billing.get("phone"),
        first_name=text(customer.get("first_name")) or billing.get("first_name"),
        last_name=text(customer.get("last_name")) or billing.get("last_name"),
        country=billing.get("country"),
    )
    email = traits.get("email") or traits.get("email_raw")
    fallback = f"woocommerce:customer:{text(customer.get('id'))}"
    return [
        native(
            "signup",
            event_id=delivery.event_id,
            who=identity(customer_id=customer.get("id"), email=email, fallback=fallback),
            delivery=delivery,
            occurred_at=utc_text(customer.get("date_created_gmt")),
            traits=traits,
        )
    ]


_ORDER = {
    "properties.order_id": "id",
    "properties.total": "total",
    "properties.currency": "currency",
    "properties.discount": "discount_total",
    "properties.shipping": "shipping_total",
    "properties.tax": "total_tax",
    "properties.items": "line_items",
    "occurred_at": "date_created_gmt",
}
_ORDER_UPDATED = {**_ORDER, "properties.total": "refunds.total", "occurred_at": "date_modified_gmt"}

WOOCOMMERCE = Platform(
    source="woocommerce",
    signature_header="X-WC-Webhook-Signature",
    topic_header="X-WC-Webhook-Topic",
    delivery_headers=("X-WC-Webhook-Delivery-ID",),
    origin_header="X-WC-Webhook-Source",
    topics={
        "order.created": Topic(order_created, _ORDER),
        "order.updated": Topic(order_updated, _ORDER_UPDATED),
        "customer.created": Topic(
            customer_created, {"customer_id": "id", "occurred_at": "date_created_gmt"}
        ),
    },
)
