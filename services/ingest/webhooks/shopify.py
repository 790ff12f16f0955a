"""Shopify webhook topics mapped onto the catalogue.

============================  ==========================================================
``orders/create``             ``order_completed``
``orders/paid``               custom ``order_paid``
``refunds/create``            ``order_refunded`` (customer from the order seen before)
``customers/create``          ``signup`` (+ ``consent_updated`` per channel with a state)
``customers/update``          ``identify`` (+ ``consent_updated`` per channel with a state)
``checkouts/create|update``   ``checkout_started``; nothing once the checkout is completed
============================  ==========================================================

Shopify retries a delivery under the same ``X-Shopify-Event-Id``; that id, prefixed
``shopify:``, is the event id. Amounts are the shop's currency (``currency``, ``total_price``),
not the buyer's presentment currency.
"""

from __future__ import annotations

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
)

# Shopify's consent states: only these two say something; "not_subscribed" (never asked) and
# "pending" (double opt-in unconfirmed) must not revoke a consent given elsewhere.
_CONSENT = {"subscribed": "granted", "unsubscribed": "revoked", "redacted": "revoked"}


def _items(lines: Any) -> list[Payload]:
    items = []
    for index, line in enumerate(objs(lines)):
        # Custom line items have no product: fall back to the variant, the SKU, the line.
        product = (
            text(line.get("product_id"))
            or text(line.get("variant_id"))
            or text(line.get("sku"))
            or f"line:{text(line.get('id')) or text(line.get('key')) or index}"
        )
        items.append(
            {
                "product_id": product,
                "variant_id": text(line.get("variant_id")),
                "sku": text(line.get("sku")),
                "name": text(line.get("title")) or text(line.get("name")),
                "variant": text(line.get("variant_title")),
                "brand": text(line.get("vendor")),
                "price": money(line.get("price")),
                "quantity": line.get("quantity"),
            }
        )
    return [compact(item) for item in items]


def _codes(payload: Payload) -> list[str]:
    return [c for c in (text(d.get("code")) for d in objs(payload.get("discount_codes"))) if c]


def _buyer(payload: Payload, *, fallback: str) -> tuple[Identity, Payload]:
    """Who an order or checkout belongs to, and what it says about them."""
    customer = obj(payload.get("customer"))
    billing = obj(payload.get("billing_address"))
    address = billing or obj(payload.get("shipping_address"))
    traits = contact_traits(
        email=text(customer.get("email")) or text(payload.get("email")),
        phone=text(customer.get("phone")) or text(payload.get("phone")) or billing.get("phone"),
        first_name=text(customer.get("first_name")) or billing.get("first_name"),
        last_name=text(customer.get("last_name")) or billing.get("last_name"),
        country=address.get("country_code"),
    )
    email = traits.get("email") or traits.get("email_raw")
    return identity(customer_id=customer.get("id"), email=email, fallback=fallback), traits


def order_created(order: Payload, delivery: Delivery, *, owner: Identity | None) -> list[Payload]:
    who, traits = _buyer(order, fallback=f"shopify:order:{text(order.get('id'))}")
    codes = _codes(order)
    shipping = obj(obj(order.get("total_shipping_price_set")).get("shop_money")).get("amount")
    properties = {
        "order_id": text(order.get("id")),
        "order_number": text(order.get("name")),
        # The checkout token is the checkout_id of checkout_started: the order closes it.
        "checkout_id": text(order.get("checkout_token")),
        "cart_id": text(order.get("cart_token")),
        "total": money(order.get("total_price")),
        "currency": text(order.get("currency")),
        "subtotal": money(order.get("subtotal_price")),
        "discount": money(order.get("total_discounts")),
        "tax": money(order.get("total_tax")),
        "shipping": money(shipping),
        "coupon": codes[0] if codes else None,
        "coupons": codes if len(codes) > 1 else None,
        "items": _items(order.get("line_items")),
        "url": text(order.get("order_status_url")),
    }
    return [
        native(
            "order_completed",
            event_id=delivery.event_id,
            who=who,
            delivery=delivery,
            occurred_at=text(order.get("created_at")),
            properties=properties,
            traits=traits,
        )
    ]


def order_paid(order: Payload, delivery: Delivery, *, owner: Identity | None) -> list[Payload]:
    who, traits = _buyer(order, fallback=f"shopify:order:{text(order.get('id'))}")
    names = order.get("payment_gateway_names")
    gateways = [g for g in (text(n) for n in names) if g] if isinstance(names, list) else []
    properties = {
        "order_id": text(order.get("id")),
        "order_number": text(order.get("name")),
        "total": text(order.get("total_price")),  # a custom event: money stays a decimal string
        "currency": text(order.get("currency")),
        "financial_status": text(order.get("financial_status")),
        "gateway": gateways[0] if gateways else None,
    }
    return [
        native(
            "order_paid",
            event_id=delivery.event_id,
            who=who,
            delivery=delivery,
            occurred_at=text(order.get("processed_at")) or text(order.get("updated_at")),
            properties=properties,
            traits=traits,
        )
    ]


def refund_created(refund: Payload, delivery: Delivery, *, owner: Identity | None) -> list[Payload]:
    order_id = text(refund.get("order_id"))
    # A refund names its order but not its customer: ingest remembers who placed the order.
    who = owner or Identity(anonymous_id=f"shopify:order:{order_id}")
    paid_back = [
        t
        for t in objs(refund.get("transactions"))
        if t.get("kind") == "refund" and t.get("status") == "success"
    ]
    items = []
    for refunded in objs(refund.get("refund_line_items")):
        item = _items([obj(refunded.get("line_item"))])[0]
        items.append({**item, "quantity": refunded.get("quantity")})
    properties = {
        "order_id": order_id,
        "refund_id": text(refund.get("id")),
        "total": sum_amounts([t.get("amount") for t in paid_back]),
        "currency": text(paid_back[0].get("currency")) if paid_back else None,
        "reason": text(refund.get("note")),
        "items": items,
    }
    return [
        native(
            "order_refunded",
            event_id=delivery.event_id,
            who=who,
            delivery=delivery,
            occurred_at=text(refund.get("created_at")),
            properties=properties,
        )
    ]


def _customer(customer: Payload) -> tuple[Identity, Payload]:
    traits = contact_traits(
        email=customer.get("email"),
        phone=customer.get("phone"),
        first_name=customer.get("first_name"),
        last_name=customer.get("last_name"),
        country=obj(customer.get("default_address")).get("country_code"),
    )
    email = traits.get("email") or traits.get("email_raw")
    fallback = f"shopify:customer:{text(customer.get('id'))}"
    return identity(customer_id=customer.get("id"), email=email, fallback=fallback), traits


def _consents(customer: Payload, delivery: Delivery, who: Identity) -> list[Payload]:
    """A consent_updated per channel whose state says granted or revoked.

    ``customers/update`` fires on any change, consent or not. The event id is built from the
    consent itself (channel, state, when it changed), so an unchanged consent repeated by later
    updates is one event the journey service drops, not a stream of duplicates.
    """
    events = []
    for channel, key in (("email", "email_marketing_consent"), ("sms", "sms_marketing_consent")):
        consent = obj(customer.get(key))
        status = _CONSENT.get(text(consent.get("state")) or "")
        if status is None:
            continue
        changed_at = text(consent.get("consent_updated_at"))
        event_id = (
            f"shopify:consent:{who.customer_id}:{channel}:{status}:{changed_at}"
            if changed_at and who.customer_id
            else f"{delivery.event_id}:consent:{channel}"
        )
        properties = {
            "channel": channel,
            "status": status,
            "category": "marketing",
            "source": "shopify",
            "opt_in_level": text(consent.get("opt_in_level")),
            "collected_from": text(consent.get("consent_collected_from")),
        }
        events.append(
            native(
                "consent_updated",
                event_id=event_id,
                who=who,
                delivery=delivery,
                occurred_at=changed_at or text(customer.get("updated_at")),
                properties=properties,
            )
        )
    return events


def customer_created(
    customer: Payload, delivery: Delivery, *, owner: Identity | None
) -> list[Payload]:
    who, traits = _customer(customer)
    signup = native(
        "signup",
        event_id=delivery.event_id,
        who=who,
        delivery=delivery,
        occurred_at=text(customer.get("created_at")),
        traits=traits,
    )
    return [signup, *_consents(customer, delivery, who)]


def customer_updated(
    customer: Payload, delivery: Delivery, *, owner: Identity | None
) -> list[Payload]:
    who, traits = _customer(customer)
    update = native(
        "identify",
        event_id=delivery.event_id,
        who=who,
        delivery=delivery,
        occurred_at=text(customer.get("updated_at")),
        traits=traits,
    )
    return [update, *_consents(customer, delivery, who)]


def checkout(checkout: Payload, delivery: Delivery, *, owner: Identity | None) -> list[Payload]:
    if text(checkout.get("completed_at")):
        return []  # it became an order: orders/create tells the rest
    token = text(checkout.get("token"))
    who, traits = _buyer(checkout, fallback=f"shopify:checkout:{token}")
    codes = _codes(checkout)
    properties = {
        "checkout_id": token,
        "cart_id": text(checkout.get("cart_token")),
        "total": money(checkout.get("total_price")),
        "currency": text(checkout.get("currency")) or text(checkout.get("presentment_currency")),
        "subtotal": money(checkout.get("subtotal_price")),
        "discount": money(checkout.get("total_discounts")),
        "coupon": codes[0] if codes else None,
        "items": _items(checkout.get("line_items")),
        # Where an abandoned-cart message sends the shopper back to.
        "url": text(checkout.get("abandoned_checkout_url")),
    }
    created = delivery.topic == "checkouts/create"
    when = checkout.get("created_at") if created else checkout.get("updated_at")
    return [
        native(
            "checkout_started",
            event_id=delivery.event_id,
            who=who,
            delivery=delivery,
            occurred_at=text(when) or text(checkout.get("created_at")),
            properties=properties,
            traits=traits,
        )
    ]


_ORDER = {
    "properties.order_id": "id",
    "properties.total": "total_price",
    "properties.currency": "currency",
    "properties.subtotal": "subtotal_price",
    "properties.discount": "total_discounts",
    "properties.tax": "total_tax",
    "properties.shipping": "total_shipping_price_set.shop_money.amount",
    "properties.items": "line_items",
    "occurred_at": "created_at",
}
_CHECKOUT = {
    **_ORDER,
    "properties.checkout_id": "token",
    "properties.cart_id": "cart_token",
    "occurred_at": "updated_at",
}
_REFUND = {
    "properties.order_id": "order_id",
    "properties.total": "transactions.amount",
    "properties.currency": "transactions.currency",
    "properties.items": "refund_line_items",
    "occurred_at": "created_at",
}
_CUSTOMER_CREATED = {"customer_id": "id", "occurred_at": "created_at"}
_CUSTOMER_UPDATED = {"customer_id": "id", "occurred_at": "updated_at"}

SHOPIFY = Platform(
    source="shopify",
    signature_header="X-Shopify-Hmac-Sha256",
    topic_header="X-Shopify-Topic",
    # X-Shopify-Event-Id is the same across redeliveries; older API versions only send the
    # webhook id, which Shopify also keeps across retries.
    delivery_headers=("X-Shopify-Event-Id", "X-Shopify-Webhook-Id"),
    origin_header="X-Shopify-Shop-Domain",
    topics={
        "orders/create": Topic(order_created, _ORDER),
        "orders/paid": Topic(order_paid, _ORDER),
        "refunds/create": Topic(refund_created, _REFUND, order_field="order_id"),
        "customers/create": Topic(customer_created, _CUSTOMER_CREATED),
        "customers/update": Topic(customer_updated, _CUSTOMER_UPDATED),
        "checkouts/create": Topic(checkout, _CHECKOUT),
        "checkouts/update": Topic(checkout, _CHECKOUT),
    },
)
