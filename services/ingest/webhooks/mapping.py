"""What the Shopify and WooCommerce mappers share: the delivery, identities, money, validation.

A mapper is a pure function from a decoded payload to native event dicts (the shape
``POST /v1/events`` takes); :func:`build_events` validates them with the catalogue's
``parse_event``, so webhook events obey exactly the rules of the native API. No I/O, no clock:
``occurred_at`` comes from the payload, or the envelope's ``received_at`` when it has none.

Errors::

    CicloError
    └── MappingError    the payload maps to an event the catalogue rejects (HTTP 422); carries
                        one FieldError per problem, naming the payload's field and the event's
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Protocol

from pydantic import ValidationError

from services.ingest.catalogue import EventBase, error_field, parse_event
from services.ingest.countries import ISO_3166
from shared.contracts.addresses import normalise_email, normalise_phone
from shared.contracts.currencies import is_decimal_text
from shared.errors import CicloError

Source = Literal["shopify", "woocommerce"]
SOURCES: tuple[Source, ...] = ("shopify", "woocommerce")
Payload = dict[str, Any]

_SIX_PLACES = Decimal("0.000001")


@dataclass(frozen=True, slots=True)
class Delivery:
    """One verified webhook request: who sent it, about what, under which delivery id."""

    source: Source
    topic: str
    delivery_id: str
    origin: str | None = None  # the shop domain (Shopify) or site URL (WooCommerce)

    @property
    def event_id(self) -> str:
        """Deterministic, so a redelivery that races past the dedupe table publishes an event the
        journey service already knows and drops. The topic is part of it because Shopify's event
        id names the shop event, which is not promised to be one topic's alone."""
        return f"{self.source}:{self.topic}:{self.delivery_id}"

    def context(self) -> Payload:
        webhook = {"source": self.source, "topic": self.topic, "delivery_id": self.delivery_id}
        if self.origin:
            webhook["origin"] = self.origin
        return {"webhook": webhook}


@dataclass(frozen=True, slots=True)
class Identity:
    customer_id: str | None = None
    anonymous_id: str | None = None


class Mapper(Protocol):
    def __call__(
        self, payload: Payload, delivery: Delivery, /, *, owner: Identity | None
    ) -> list[Payload]:
        """Native event dicts for one delivery; an empty list when there is nothing to say.

        ``owner`` is the customer of the order the payload refers to, when the topic needs one
        (``Topic.order_field``) and ingest has seen the order before.
        """
        ...


@dataclass(frozen=True, slots=True)
class Topic:
    mapper: Mapper
    origins: Mapping[str, str] = field(default_factory=dict)
    """Event field prefix → payload field, so a 422 names what the platform actually sent."""
    order_field: str | None = None
    """The payload field holding an order id whose customer the mapper needs (refunds carry no
    customer of their own)."""


@dataclass(frozen=True, slots=True)
class Platform:
    """Everything the routes need to know about one platform's webhooks."""

    source: Source
    signature_header: str
    topic_header: str
    delivery_headers: tuple[str, ...]
    origin_header: str
    topics: Mapping[str, Topic]


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    event_field: str
    message: str


class MappingError(CicloError):
    """The payload maps to an event the catalogue rejects."""

    def __init__(self, errors: list[FieldError]) -> None:
        first = errors[0]
        super().__init__(f"{first.field}: {first.message}")
        self.errors = errors


def build_events(
    topic: Topic, payload: Payload, delivery: Delivery, *, owner: Identity | None = None
) -> list[EventBase]:
    """Map and validate; raises :class:`MappingError` naming every offending field."""
    events: list[EventBase] = []
    errors: list[FieldError] = []
    for native in topic.mapper(payload, delivery, owner=owner):
        try:
            events.append(parse_event(native))
        except ValidationError as exc:
            for error in exc.errors():
                where = error_field(error["loc"])
                errors.append(
                    FieldError(
                        field=payload_field(topic.origins, where),
                        event_field=where,
                        message=error["msg"],
                    )
                )
    if errors:
        raise MappingError(errors)
    return events


def payload_field(origins: Mapping[str, str], event_field: str) -> str:
    """The payload path behind an event path (longest known prefix), else the event path."""
    for prefix in sorted(origins, key=len, reverse=True):
        if event_field == prefix or event_field.startswith(prefix + "."):
            return origins[prefix] + event_field[len(prefix) :]
    return event_field


# --- reading payloads: platforms send nulls, empty strings and numbers where one expects text.


def obj(value: Any) -> Payload:
    return value if isinstance(value, dict) else {}


def objs(value: Any) -> list[Payload]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def text(value: Any) -> str | None:
    """Text or None: ids arrive as numbers, absent values as null or ``""``."""
    if value is None or isinstance(value, bool | dict | list):
        return None
    result = str(value).strip()
    return result or None


def money(value: Any) -> Any:
    """An amount for the catalogue. Strings pass through (the catalogue parses and reports them);
    floats (WooCommerce's line prices) become decimals through their shortest repr, rounded to
    the six places the catalogue keeps, so 9.99 never turns into 9.9900000000000002131…"""
    if value is None or value == "":
        return None
    if not isinstance(value, float):
        return value
    amount = Decimal(repr(value))  # the repr of any float parses, inf and nan included
    if not amount.is_finite():
        return value  # the catalogue refuses it and names the field
    try:
        rounded = amount.quantize(_SIX_PLACES)
    except InvalidOperation:
        return amount  # too many digits to round: the catalogue refuses it and names the field
    return rounded if rounded != amount else amount


def money_abs(value: Any) -> Any:
    """A refund amount; WooCommerce records refunds as negative totals."""
    amount = money(value)
    if isinstance(amount, str):
        return amount.lstrip("-")
    if isinstance(amount, Decimal | int):
        return abs(amount)
    return amount


def sum_amounts(values: list[Any]) -> Any:
    """The sum of several amounts; the first unreadable one as it is (the catalogue names it);
    None when there are none."""
    total = Decimal(0)
    for value in values:
        amount = money_abs(value)
        if isinstance(amount, str) and not is_decimal_text(amount):
            return amount  # Decimal would read "1_000" as 1000: the catalogue refuses it instead
        try:
            total += Decimal(str(amount))
        except InvalidOperation:
            return amount
    return total if values else None


def utc_text(value: Any) -> str | None:
    """WooCommerce's ``*_gmt`` timestamps are UTC without a zone; say so."""
    when = text(value)
    if when is None or when.endswith("Z") or "+" in when[10:] or "-" in when[10:]:
        return when
    return when + "+00:00"


def compact(values: Payload) -> Payload:
    """Without the Nones: an absent value from a platform must never clear a known one."""
    return {k: v for k, v in values.items() if v is not None and v != [] and v != {}}


def guest_id(email: str) -> str:
    """The anonymous id of a shopper known only by email: stable across orders and platforms,
    without putting the address itself into bus keys and logs."""
    return "email_sha256:" + hashlib.sha256(email.strip().lower().encode()).hexdigest()


def identity(*, customer_id: Any, email: str | None, fallback: str) -> Identity:
    """The customer id when the platform has one; the email-derived guest id alongside it (so
    earlier guest activity links to the customer) or alone; else ``fallback``."""
    customer = text(customer_id)
    if customer == "0":  # WooCommerce's guest
        customer = None
    anonymous = guest_id(email) if email else None
    if customer is None and anonymous is None:
        anonymous = fallback
    return Identity(customer_id=customer, anonymous_id=anonymous)


def contact_traits(
    *,
    email: Any = None,
    phone: Any = None,
    first_name: Any = None,
    last_name: Any = None,
    country: Any = None,
) -> Payload:
    """Profile traits from platform contact data.

    Platforms accept contact data the catalogue would refuse (a phone typed without its country,
    an address with a typo). Refusing the whole order for that would lose the order, so an email
    or phone that does not validate is kept as ``email_raw`` / ``phone_raw`` instead.
    """
    given = (text(country) or "").upper()
    country_code = given if given in ISO_3166 else None  # Shopify's ZZ: unknown region
    traits: Payload = {
        "first_name": text(first_name),
        "last_name": text(last_name),
        "country": country_code,
    }
    raw_email = text(email)
    if raw_email:
        try:
            traits["email"] = normalise_email(raw_email)
        except ValueError:
            traits["email_raw"] = raw_email
    raw_phone = text(phone)
    if raw_phone:
        try:
            traits["phone"] = normalise_phone(raw_phone, country_code)
        except ValueError:
            traits["phone_raw"] = raw_phone
    return compact(traits)


def native(
    event_type: str,
    *,
    event_id: str,
    who: Identity,
    delivery: Delivery,
    occurred_at: str | None,
    properties: Payload | None = None,
    traits: Payload | None = None,
) -> Payload:
    """One native event dict, as a client of ``POST /v1/events`` would send it."""
    return compact(
        {
            "type": event_type,
            "event_id": event_id,
            "customer_id": who.customer_id,
            "anonymous_id": who.anonymous_id,
            "occurred_at": occurred_at,
            "properties": compact(properties or {}),
            "traits": compact(traits or {}),
            "context": delivery.context(),
        }
    )
