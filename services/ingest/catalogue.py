"""The native event catalogue: one typed model per storefront event, plus custom events.

``Event`` is a discriminated union on ``type``. Known types have typed properties (money as
Decimal with an ISO 4217 currency); any other type name is a custom event with free properties.
Unknown fields are kept everywhere (``extra="allow"``), never silently dropped. Traits carry
profile data; ``email`` and ``phone`` are validated and normalised (phone to E.164), ``timezone``
must be an IANA name.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from services.ingest.countries import ISO_3166
from shared.contracts.addresses import normalise_email, normalise_phone
from shared.contracts.currencies import ISO_4217, is_decimal_text
from shared.contracts.events import EARLIEST, LATEST
from shared.localtime import parse_date_trait


def _currency(value: str) -> str:
    code = value.upper()
    if code not in ISO_4217:
        raise ValueError(f"{value!r} is not an ISO 4217 currency code")
    return code


Currency = Annotated[str, Field(min_length=3, max_length=3), AfterValidator(_currency)]


def _decimal_text(value: Any) -> Any:
    # Decimal reads "1_000" as 1000 and "1e5" as 1E+5, which travels on as "1E+5": a journey
    # condition (total gte 50) does not read that as a number, and a template shows it as is.
    if isinstance(value, str) and not is_decimal_text(value):
        shown = value[:64]
        raise ValueError(
            f"{shown!r} is not a decimal amount: send a JSON number or a string such as "
            f"\"59.90\" (ASCII digits and one point; no underscores, exponents or '+')"
        )
    return value


Amount = Annotated[
    Decimal, BeforeValidator(_decimal_text), Field(ge=0, max_digits=18, decimal_places=6)
]
Id = Annotated[str, Field(min_length=1, max_length=200)]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _no_control(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError(
            "must not contain control characters (U+0000 to U+001F, U+007F): an id with one "
            "cannot be named in /v1/customers/{id}, so the customer could not be read or erased"
        )
    return value


_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")
"""How an RFC 3339 date-time starts (pydantic checks the rest, and the zone)."""

SubjectId = Annotated[Id, AfterValidator(_no_control)]
"""An id that names a customer or an event (customer, anonymous, previous and event ids): it
becomes a bus key and a path segment of the customer API, which refuses control characters."""


class _Open(BaseModel):
    """Typed fields are checked; anything else is kept as sent."""

    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)


class Traits(_Open):
    """Profile traits. Known ones are validated; any other trait is kept."""

    email: str | None = None
    phone: str | None = None
    country: str | None = Field(None, min_length=2, max_length=2, description="ISO 3166 alpha-2")
    timezone: str | None = Field(None, description="IANA time zone, e.g. Europe/Berlin")
    first_name: str | None = Field(None, max_length=200)
    last_name: str | None = Field(None, max_length=200)
    birthday: str | None = Field(None, pattern=r"^(\d{4}-)?\d{2}-\d{2}$|^--\d{2}-\d{2}$")

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        return None if value is None else normalise_email(value)

    @field_validator("first_name", "last_name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        # Forms send what was typed: " Ana " greets as "Hi  Ana ,", and a name of spaces only
        # as "Hi   ," where the template would have said "Hi there,". No name is a null (which
        # removes the trait), as the templates' defaults expect.
        if value is None:
            return None
        return value.strip() or None

    @field_validator("birthday")
    @classmethod
    def _birthday(cls, value: str | None) -> str | None:
        # The pattern checks the shape; this, that it is a day of the calendar (2020-13-45 is
        # not, and a birthday journey would silently never fire for it).
        if value is not None and parse_date_trait(value) is None:  # as the journeys read it
            raise ValueError(f"{value!r} is not a date: give YYYY-MM-DD, or --MM-DD without a year")
        return value

    @field_validator("country")
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        if value is None:
            return None
        code = value.upper()
        if code not in ISO_3166:
            hint = " (the United Kingdom is GB)" if code == "UK" else ""
            raise ValueError(f"{value!r} is not an ISO 3166 alpha-2 country code{hint}")
        return code

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone") from None
        return value

    @model_validator(mode="after")
    def _phone(self) -> Traits:
        if self.phone is not None:
            self.phone = normalise_phone(self.phone, self.country)
        return self


def _empty(model: type[_Open]) -> Callable[[], Any]:
    """A default factory for an absent model field: the model's validator applied to ``{}``,
    called directly rather than through ``model()`` and its Python ``__init__``, once per event
    that leaves the field out."""
    return partial(model.__pydantic_validator__.validate_python, {})


class LineItem(_Open):
    product_id: Id
    sku: str | None = None
    name: str | None = None
    category: str | None = None
    brand: str | None = None
    variant: str | None = None
    price: Amount
    quantity: int = Field(1, ge=1)
    url: str | None = None
    image_url: str | None = None


class NoProperties(_Open):
    pass


class PageViewed(_Open):
    url: str | None = None
    path: str | None = None
    title: str | None = None
    referrer: str | None = None


class ProductViewed(_Open):
    product_id: Id
    name: str | None = None
    category: str | None = None
    price: Amount | None = None
    currency: Currency | None = None


class CartUpdated(_Open):
    cart_id: Id
    items: list[LineItem] = Field(default_factory=list)
    total: Amount | None = None
    currency: Currency | None = None
    url: str | None = Field(None, description="Where the customer can get back to the cart.")


class CheckoutStarted(_Open):
    checkout_id: Id | None = None
    cart_id: Id | None = None
    items: list[LineItem] = Field(default_factory=list)
    total: Amount
    currency: Currency


class OrderCompleted(_Open):
    order_id: Id
    cart_id: Id | None = None
    checkout_id: Id | None = None
    total: Amount
    currency: Currency
    subtotal: Amount | None = None
    shipping: Amount | None = None
    tax: Amount | None = None
    discount: Amount | None = None
    coupon: str | None = None
    items: list[LineItem] = Field(default_factory=list)


class OrderRefunded(_Open):
    order_id: Id
    total: Amount | None = Field(None, description="Amount refunded.")
    currency: Currency | None = None
    items: list[LineItem] = Field(default_factory=list)

    @model_validator(mode="after")
    def _currency_with_total(self) -> OrderRefunded:
        if self.total is not None and self.currency is None:
            raise ValueError("currency is required with total")
        return self


class OrderCancelled(_Open):
    order_id: Id
    reason: str | None = None


class ConsentUpdated(_Open):
    channel: Literal["email", "sms", "push"]
    status: Literal["granted", "revoked"]
    category: Literal["marketing", "transactional"] = "marketing"
    source: str | None = Field(None, description="Where consent was given: checkout, form, …")


class Alias(_Open):
    """Links two identities: ``previous_id`` (an anonymous id or an old customer id) is the same
    person as the event's ``customer_id``; the journey service merges their profiles."""

    previous_id: SubjectId


class SurveyCompleted(_Open):
    survey_id: str | None = None
    answers: dict[str, Any]


class _EventBase(BaseModel):
    model_config = ConfigDict(extra="allow")

    event_id: SubjectId | None = Field(None, description="Your id for the event; retries reuse it.")
    customer_id: SubjectId | None = None
    anonymous_id: SubjectId | None = None
    occurred_at: AwareDatetime | None = Field(
        None, description="RFC 3339 with a zone; defaults to the time of receipt."
    )
    traits: Traits = Field(default_factory=_empty(Traits))
    context: dict[str, Any] = Field(default_factory=dict)

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _rfc3339(cls, value: Any) -> Any:
        # pydantic also reads a number, or a string of digits, as Unix seconds: an export's
        # basic-format date 20250301 became 1970-08-23, accepted and silently wrong.
        if value is None or isinstance(value, datetime):
            return value
        if not isinstance(value, str) or not _DATE_TIME.match(value):
            shown = value[:64] if isinstance(value, str) else value
            raise ValueError(
                f"must be an RFC 3339 timestamp with a zone, e.g. 2026-11-23T09:30:00+01:00; "
                f"got {shown!r}"
            )
        return value

    @field_validator("occurred_at")
    @classmethod
    def _plausible(cls, value: datetime | None) -> datetime | None:
        if value is not None and not EARLIEST <= value <= LATEST:
            raise ValueError(f"must lie between {EARLIEST:%Y} and {LATEST:%Y}")
        return value

    @model_validator(mode="after")
    def _needs_identity(self) -> _EventBase:
        if not self.customer_id and not self.anonymous_id:
            raise ValueError("customer_id or anonymous_id is required")
        return self


class Signup(_EventBase):
    type: Literal["signup"]
    properties: NoProperties = Field(default_factory=_empty(NoProperties))


class Identify(_EventBase):
    type: Literal["identify"]
    properties: NoProperties = Field(default_factory=_empty(NoProperties))


class AliasEvent(_EventBase):
    type: Literal["alias"]
    properties: Alias


class PageViewedEvent(_EventBase):
    type: Literal["page_viewed"]
    properties: PageViewed = Field(default_factory=_empty(PageViewed))


class ProductViewedEvent(_EventBase):
    type: Literal["product_viewed"]
    properties: ProductViewed


class CartUpdatedEvent(_EventBase):
    type: Literal["cart_updated"]
    properties: CartUpdated


class CheckoutStartedEvent(_EventBase):
    type: Literal["checkout_started"]
    properties: CheckoutStarted


class OrderCompletedEvent(_EventBase):
    type: Literal["order_completed"]
    properties: OrderCompleted


class OrderRefundedEvent(_EventBase):
    type: Literal["order_refunded"]
    properties: OrderRefunded


class OrderCancelledEvent(_EventBase):
    type: Literal["order_cancelled"]
    properties: OrderCancelled


class ConsentUpdatedEvent(_EventBase):
    type: Literal["consent_updated"]
    properties: ConsentUpdated


class SurveyCompletedEvent(_EventBase):
    type: Literal["survey_completed"]
    properties: SurveyCompleted


_EVENT_NAME = re.compile(r"[A-Za-z0-9_.:\- ]+")


class CustomEvent(_EventBase):
    """Any event name outside the catalogue, with free properties."""

    type: str = Field(
        min_length=1, max_length=200, json_schema_extra={"pattern": f"^{_EVENT_NAME.pattern}$"}
    )
    properties: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _named_in_ascii(cls, value: str) -> str:
        if not _EVENT_NAME.fullmatch(value):
            raise PydanticCustomError(
                "event_name",
                "an event name is ASCII letters, digits, spaces and _ . : - "
                "(such as order_completed or 'Order Completed'), not {value}",
                {"value": repr(value[:64])},
            )
        return value


TYPED: dict[str, type[_EventBase]] = {
    "signup": Signup,
    "identify": Identify,
    "alias": AliasEvent,
    "page_viewed": PageViewedEvent,
    "product_viewed": ProductViewedEvent,
    "cart_updated": CartUpdatedEvent,
    "checkout_started": CheckoutStartedEvent,
    "order_completed": OrderCompletedEvent,
    "order_refunded": OrderRefundedEvent,
    "order_cancelled": OrderCancelledEvent,
    "consent_updated": ConsentUpdatedEvent,
    "survey_completed": SurveyCompletedEvent,
}


def _kind(value: Any) -> str:
    name = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return name if isinstance(name, str) and name in TYPED else "custom"


Event = Annotated[
    Annotated[CustomEvent, Tag("custom")]
    | Annotated[Signup, Tag("signup")]
    | Annotated[Identify, Tag("identify")]
    | Annotated[AliasEvent, Tag("alias")]
    | Annotated[PageViewedEvent, Tag("page_viewed")]
    | Annotated[ProductViewedEvent, Tag("product_viewed")]
    | Annotated[CartUpdatedEvent, Tag("cart_updated")]
    | Annotated[CheckoutStartedEvent, Tag("checkout_started")]
    | Annotated[OrderCompletedEvent, Tag("order_completed")]
    | Annotated[OrderRefundedEvent, Tag("order_refunded")]
    | Annotated[OrderCancelledEvent, Tag("order_cancelled")]
    | Annotated[ConsentUpdatedEvent, Tag("consent_updated")]
    | Annotated[SurveyCompletedEvent, Tag("survey_completed")],
    Discriminator(_kind),
]
EVENT: TypeAdapter[Any] = TypeAdapter(Event)


UNION_TAGS = frozenset([*TYPED, "custom"])


def parse_event(data: Any) -> _EventBase:
    """Validate one native event (a dict as posted); raises pydantic.ValidationError."""
    event: _EventBase = EVENT.validate_python(data)
    return event


def error_field(loc: tuple[int | str, ...]) -> str:
    """A JSON path for an error location, without the union's tag (``order_completed.…``)."""
    parts = [str(p) for p in loc if p != "body"]
    if parts and parts[0] in UNION_TAGS:
        parts = parts[1:]
    return ".".join(parts) or "$"


EventBase = _EventBase
