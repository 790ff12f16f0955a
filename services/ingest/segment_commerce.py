"""Segment's e-commerce spec v2 mapped onto the native catalogue: pure functions, no I/O.

:data:`_COMMERCE` holds, by the snake_case of a ``track`` event's name, the builder for each
semantic e-commerce event (Order Completed/Refunded/Cancelled, Checkout Started, Product Viewed,
Product Added/Removed, Cart Viewed, Signed Up); ``products`` become native ``items``
(:func:`_products_to_items`) and money is rounded. :mod:`services.ingest.segment_mapping` routes
``track`` messages here.
"""

from __future__ import annotations

from typing import Any

from services.ingest.segment_common import Builder, Native, _reject, _round_money


def _item(product: dict[str, Any], native: Native, origin: str, target: str) -> dict[str, Any]:
    item = dict(product)
    if "product_id" not in item:
        # Spec v1 called it ``id``; a catalogue that only knows SKUs sends ``sku``.
        if "id" in item:
            item["product_id"] = item.pop("id")
            native.origins[f"{target}.product_id"] = f"{origin}.id"
        elif "sku" in item:
            item["product_id"] = item["sku"]
        else:
            raise _reject(f"{origin}.product_id", "product_id (or sku) is required")
    _round_money(item)
    return item


def _products_to_items(props: dict[str, Any], native: Native) -> None:
    if "products" not in props or "items" in props:
        return  # a client that already sends native ``items`` means them as they are
    products = props.pop("products")
    if not isinstance(products, list):
        raise _reject("properties.products", "must be an array of products")
    items = []
    for index, product in enumerate(products):
        origin = f"properties.products.{index}"
        if not isinstance(product, dict):
            raise _reject(origin, "must be a JSON object")
        items.append(_item(product, native, origin, f"properties.items.{index}"))
    props["items"] = items
    native.origins["properties.items"] = "properties.products"


def _order(
    type_: str, *, totals: tuple[str, ...], needs_total: bool, currency_with_total: bool = True
) -> Builder:
    """Order Completed/Refunded/Cancelled and Checkout Started: ``products`` become ``items``,
    ``total`` falls back to the given fields, money is rounded."""
    names = " or ".join(totals)

    def build(props: dict[str, Any], native: Native) -> None:
        _products_to_items(props, native)
        for name in totals:
            if props.get(name) is not None:
                props["total"] = props[name]
                native.origins["properties.total"] = f"properties.{name}"
                break
        if needs_total and props.get("total") is None:
            raise _reject("properties.total", f"{names} is required for {type_}")
        if currency_with_total and props.get("total") is not None and not props.get("currency"):
            raise _reject(
                "properties.currency",
                'currency is required with an amount (an ISO 4217 code such as "EUR"): Segment '
                "assumes USD when it is missing; Ciclo does not guess the currency of money",
            )
        # Spec v2 identifies a checkout by the order id it will become.
        checkout = type_ == "checkout_started" and props.get("checkout_id") is None
        if checkout and props.get("order_id") is not None:
            props["checkout_id"] = props["order_id"]
            native.origins["properties.checkout_id"] = "properties.order_id"
        _round_money(props)
        native.event.update(type=type_, properties=props)

    return build


def _product_viewed(props: dict[str, Any], native: Native) -> None:
    item = _item(props, native, "properties", "properties")
    native.event.update(type="product_viewed", properties=item)


def _cart_id(props: dict[str, Any], native: Native) -> Any:
    cart_id = props.pop("cart_id", None)
    if cart_id is not None and cart_id != "":
        native.origins["properties.cart_id"] = "properties.cart_id"
        return cart_id  # the catalogue turns a number into a string and refuses the rest
    # Segment makes cart_id optional; the catalogue needs one. The browser's anonymous id
    # outlives a mid-session login, so it names the cart before the user id does.
    person = native.event["anonymous_id"] or native.event["customer_id"]
    native.origins["properties.cart_id"] = (
        "anonymousId" if native.event["anonymous_id"] else "userId"
    )
    return f"cart:{person}"


def _cart_action(action: str) -> Builder:
    def build(props: dict[str, Any], native: Native) -> None:
        cart: dict[str, Any] = {"cart_id": _cart_id(props, native), "action": action}
        if "currency" in props:
            cart["currency"] = props.pop("currency")
        # Every other property describes the product added or removed: the item is the change,
        # not the whole cart (``action`` says so).
        cart["items"] = [_item(props, native, "properties", "properties.items.0")]
        native.origins["properties.items.0"] = "properties"
        native.event.update(type="cart_updated", properties=cart)

    return build


def _cart_viewed(props: dict[str, Any], native: Native) -> None:
    props["cart_id"] = _cart_id(props, native)
    _products_to_items(props, native)
    _round_money(props)
    # The products of Cart Viewed are the whole cart: ``viewed`` marks a full snapshot.
    props.setdefault("action", "viewed")
    native.event.update(type="cart_updated", properties=props)


def _signed_up(props: dict[str, Any], native: Native) -> None:
    native.event.update(type="signup", properties=props)


# Keyed by the snake_case of the name, so "Order Completed", "order completed" and
# "OrderCompleted" all map alike.
_COMMERCE: dict[str, Builder] = {
    "order_completed": _order("order_completed", totals=("total", "revenue"), needs_total=True),
    "order_refunded": _order("order_refunded", totals=("total", "revenue"), needs_total=False),
    "order_cancelled": _order(
        "order_cancelled", totals=(), needs_total=False, currency_with_total=False
    ),
    "checkout_started": _order(
        "checkout_started", totals=("total", "revenue", "value"), needs_total=True
    ),
    "product_viewed": _product_viewed,
    "product_added": _cart_action("added"),
    "product_removed": _cart_action("removed"),
    "cart_viewed": _cart_viewed,
    "signed_up": _signed_up,
}
