"""A customer's commerce and engagement aggregates, kept up to date one event at a time.

``Profile`` holds what segments, lifecycle stages and templates ask about a customer without
replaying history: first and last order, order count, revenue (converted into the workspace
currency, and per original currency), discounts, refunds, cancellations, last open and click, and
the marketing sends since the customer last engaged. Traits (consent per channel, time zone,
names) are not here: ``CustomerState.traits`` keeps them.

Every update is O(1) and the state stays small: the only list, ``recent_orders``, keeps the last
``RECENT_ORDERS`` orders (by when they were placed), enough to count an order reported twice only
once and to take a refund or a cancellation off the order it belongs to.

Money:

* ``rates`` maps a currency to how many units of the workspace currency one unit of it is worth;
  the workspace currency itself needs no rate. An order is converted with the rate in force when
  it is counted, and its refunds and cancellation are taken off at that same rate, so a fully
  refunded order leaves the revenue exactly where it was.
* An order in a currency without a rate keeps its original amount (``revenue_original``) and is
  left out of ``revenue`` and of the average order value (``unconverted_orders`` counts those).
  A rate added later does not convert it retroactively.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from services.journey.domain.conditions import read_by_get, utc_instant, utc_text

RECENT_ORDERS = 20
"""Orders remembered by id: duplicates, refunds and cancellations of these are exact."""

_CONVERTED_PLACES = 6  # the catalogue's precision for amounts
_AOV = Decimal("0.01")
_ZERO = Decimal(0)
_DAY = timedelta(days=1)
_VERSION = 1


class ProfileEvent(Protocol):
    """What the profile reads of an event (``EventEnvelope`` has it)."""

    @property
    def type(self) -> str: ...
    @property
    def properties(self) -> dict[str, Any]: ...
    @property
    def occurred_at(self) -> datetime: ...


@dataclass(slots=True)
class OrderEntry:
    """One remembered order: enough to recognise it again and to undo it exactly."""

    order_id: str
    at: datetime
    currency: str
    total: Decimal
    """In the order's own currency."""
    rate: Decimal | None
    """Workspace-currency units per unit of ``currency`` when it was counted; None: no rate."""
    discounted: bool = False
    taken_off: Decimal = _ZERO
    """Refunded (or, once cancelled, taken off) so far, in its own currency; at most
    ``total``."""
    cancelled: bool = False
    """Cancelled: no longer counted. An order cancelled before it was seen is remembered as a
    cancelled entry with a zero total, so that it is not counted when it shows up later."""

    @property
    def remaining(self) -> Decimal:
        return _ZERO if self.cancelled else self.total - self.taken_off


@dataclass(slots=True)
class Profile:
    first_order_at: datetime | None = None
    last_order_at: datetime | None = None
    order_count: int = 0
    """Orders placed and not cancelled (refunded ones still count)."""
    revenue: Decimal = _ZERO
    """Net of refunds and cancellations, in the workspace currency (converted orders only)."""
    revenue_original: dict[str, Decimal] = field(default_factory=dict)
    """Currency → net revenue in that currency, for every order, converted or not."""
    unconverted_orders: int = 0
    """Counted orders whose currency had no rate (left out of ``revenue``)."""
    discounted_orders: int = 0
    """Counted orders with a discount amount above zero or a coupon."""
    refunded: Decimal = _ZERO
    """Every refund, in the workspace currency (refunds in a currency without a rate: not)."""
    cancelled_orders: int = 0
    last_open_at: datetime | None = None
    last_click_at: datetime | None = None
    last_engaged_at: datetime | None = None
    """The later of the last open and the last click."""
    marketing_sends_since_engaged: int = 0
    """Marketing messages sent (any channel) after the last open or click."""
    recent_orders: list[OrderEntry] = field(default_factory=list)

    @property
    def average_order_value(self) -> Decimal | None:
        """Revenue per converted order, to the cent; None before the first one."""
        converted = self.order_count - self.unconverted_orders
        if converted <= 0:
            return None
        return (self.revenue / converted).quantize(_AOV)

    @property
    def discount_share(self) -> float | None:
        """Share of orders (0 to 1) that had a discount; None before the first order."""
        if self.order_count <= 0:
            return None
        return self.discounted_orders / self.order_count

    @property
    def last_order_id(self) -> str | None:
        live = self._live()
        return max(live, key=lambda e: e.at).order_id if live else None

    @property
    def previous_order_at(self) -> datetime | None:
        """When the order before the last one was placed; None when there is none or it is
        no longer remembered."""
        if self.order_count < 2:
            return None
        times = sorted(e.at for e in self._live())
        return times[-2] if len(times) >= 2 else None

    def _live(self) -> list[OrderEntry]:
        return [e for e in self.recent_orders if not e.cancelled]

    def _entry(self, order_id: str | None) -> OrderEntry | None:
        if order_id is None:
            return None
        for entry in self.recent_orders:
            if entry.order_id == order_id:
                return entry
        return None

    def _remember(self, entry: OrderEntry) -> None:
        self.recent_orders.append(entry)
        if len(self.recent_orders) > RECENT_ORDERS:
            oldest = min(range(len(self.recent_orders)), key=lambda i: self.recent_orders[i].at)
            del self.recent_orders[oldest]

    # ── Reading ──

    def view(
        self,
        now: datetime,
        *,
        first_seen_at: datetime | None = None,
        last_seen_at: datetime | None = None,
    ) -> dict[str, Any]:
        """What conditions read under ``profile.``: plain JSON values.

        Instants are RFC 3339 strings (UTC, so they order as text), money decimal strings (which
        conditions compare as numbers), ``days_since_*`` whole days elapsed until ``now``. A name
        with nothing to say yet is present with None, so ``exists`` tells. ``first_seen_at`` and
        ``last_seen_at`` (kept by ``CustomerState``) add ``first_seen_at``, ``last_seen_at`` and
        ``days_since_last_seen`` when given."""
        names = _SEEN_VIEW if first_seen_at is not None or last_seen_at is not None else _VIEW
        return {name: read(self, now, first_seen_at, last_seen_at) for name, read in names.items()}

    def _snapshot(self) -> dict[str, Any]:
        """The names ``observe`` reports, with their values (nothing that moves with time)."""
        return {
            "order_count": self.order_count,
            "first_order_at": self.first_order_at,
            "last_order_at": self.last_order_at,
            "last_order_id": self.last_order_id,
            "revenue": self.revenue,
            "revenue_original": dict(self.revenue_original),
            "average_order_value": self.average_order_value,
            "discounted_orders": self.discounted_orders,
            "discount_share": self.discount_share,
            "refunded": self.refunded,
            "cancelled_orders": self.cancelled_orders,
            "last_open_at": self.last_open_at,
            "last_click_at": self.last_click_at,
            "last_engaged_at": self.last_engaged_at,
            "marketing_sends_since_engaged": self.marketing_sends_since_engaged,
        }

    # ── Storage ──

    def to_json(self) -> dict[str, Any]:
        """Compact and exact: defaults left out, Decimals as strings, instants RFC 3339;
        each remembered order is ``[id, at, currency, total, rate|null, taken_off, flags]``
        (flags: 1 discounted, 2 cancelled)."""
        data: dict[str, Any] = {"v": _VERSION}
        for name in ("first_order_at", "last_order_at", "last_open_at", "last_click_at"):
            value = getattr(self, name)
            if value is not None:
                data[name] = _instant(value)
        if self.last_engaged_at is not None:
            data["last_engaged_at"] = _instant(self.last_engaged_at)
        for name in (
            "order_count",
            "unconverted_orders",
            "discounted_orders",
            "cancelled_orders",
            "marketing_sends_since_engaged",
        ):
            if getattr(self, name):
                data[name] = getattr(self, name)
        if self.revenue:
            data["revenue"] = _money(self.revenue)
        if self.refunded:
            data["refunded"] = _money(self.refunded)
        if self.revenue_original:
            data["revenue_original"] = {c: _money(v) for c, v in self.revenue_original.items()}
        if self.recent_orders:
            data["orders"] = [
                [
                    e.order_id,
                    _instant(e.at),
                    e.currency,
                    _money(e.total),
                    None if e.rate is None else _money(e.rate),
                    _money(e.taken_off),
                    (1 if e.discounted else 0) | (2 if e.cancelled else 0),
                ]
                for e in self.recent_orders
            ]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Profile:
        if data.get("v", _VERSION) != _VERSION:
            raise ValueError(f"unknown profile version {data.get('v')!r}")
        if data.keys() <= {"v"}:  # {"v": 1}: what ``to_json`` writes for an empty profile
            return cls()

        def instant(name: str) -> datetime | None:
            value = data.get(name)
            return None if value is None else utc_instant(value)

        return cls(
            first_order_at=instant("first_order_at"),
            last_order_at=instant("last_order_at"),
            order_count=int(data.get("order_count", 0)),
            revenue=Decimal(data.get("revenue", "0")),
            revenue_original={c: Decimal(v) for c, v in data.get("revenue_original", {}).items()},
            unconverted_orders=int(data.get("unconverted_orders", 0)),
            discounted_orders=int(data.get("discounted_orders", 0)),
            refunded=Decimal(data.get("refunded", "0")),
            cancelled_orders=int(data.get("cancelled_orders", 0)),
            last_open_at=instant("last_open_at"),
            last_click_at=instant("last_click_at"),
            last_engaged_at=instant("last_engaged_at"),
            marketing_sends_since_engaged=int(data.get("marketing_sends_since_engaged", 0)),
            recent_orders=[
                OrderEntry(
                    order_id=order_id,
                    at=utc_instant(at),
                    currency=currency,
                    total=Decimal(total),
                    rate=None if rate is None else Decimal(rate),
                    taken_off=Decimal(taken_off),
                    discounted=bool(flags & 1),
                    cancelled=bool(flags & 2),
                )
                for order_id, at, currency, total, rate, taken_off, flags in data.get("orders", [])
            ],
        )


_Read = Callable[[Profile, datetime, datetime | None, datetime | None], Any]
"""One name of the view: (profile, now, first seen, last seen) → its value."""

_VIEW: dict[str, _Read] = {
    "order_count": lambda p, now, first, last: p.order_count,
    "first_order_at": lambda p, now, first, last: _instant(p.first_order_at),
    "last_order_at": lambda p, now, first, last: _instant(p.last_order_at),
    "last_order_id": lambda p, now, first, last: p.last_order_id,
    "days_since_first_order": lambda p, now, first, last: _days(p.first_order_at, now),
    "days_since_last_order": lambda p, now, first, last: _days(p.last_order_at, now),
    "revenue": lambda p, now, first, last: _money(p.revenue),
    "revenue_original": lambda p, now, first, last: {
        c: _money(v) for c, v in sorted(p.revenue_original.items())
    },
    "average_order_value": lambda p, now, first, last: _optional_money(p.average_order_value),
    "discounted_orders": lambda p, now, first, last: p.discounted_orders,
    "discount_share": lambda p, now, first, last: p.discount_share,
    "refunded": lambda p, now, first, last: _money(p.refunded),
    "cancelled_orders": lambda p, now, first, last: p.cancelled_orders,
    "last_open_at": lambda p, now, first, last: _instant(p.last_open_at),
    "last_click_at": lambda p, now, first, last: _instant(p.last_click_at),
    "last_engaged_at": lambda p, now, first, last: _instant(p.last_engaged_at),
    "days_since_last_engaged": lambda p, now, first, last: _days(p.last_engaged_at, now),
    "marketing_sends_since_engaged": lambda p, now, first, last: p.marketing_sends_since_engaged,
}
"""``Profile.view``, name by name (its order)."""
_SEEN_VIEW: dict[str, _Read] = {
    **_VIEW,
    "first_seen_at": lambda p, now, first, last: _instant(first),
    "last_seen_at": lambda p, now, first, last: _instant(last),
    "days_since_last_seen": lambda p, now, first, last: _days(last, now),
}
"""The view when first or last seen is known."""


@read_by_get
class ProfileView(Mapping[str, Any]):
    """``Profile.view`` computed one name at a time, when read: deciding a segment reads one
    or two names of the profile, and computing all of them (the instants as text, the money
    as decimal strings) costs more than the decision. Each value is the one ``view`` gives;
    read only while the profile does not change (within one decision)."""

    __slots__ = ("_args", "_names", "_values")

    def __init__(
        self,
        profile: Profile,
        now: datetime,
        *,
        first_seen_at: datetime | None = None,
        last_seen_at: datetime | None = None,
    ) -> None:
        self._args = (profile, now, first_seen_at, last_seen_at)
        seen = first_seen_at is not None or last_seen_at is not None
        self._names = _SEEN_VIEW if seen else _VIEW
        self._values: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        values = self._values
        if key in values:
            return values[key]
        value = self._names[key](*self._args)
        values[key] = value
        return value

    def get(self, key: str, default: Any = None) -> Any:
        # ``self[key]`` inlined: compiled conditions read every name through here.
        values = self._values
        if key in values:
            return values[key]
        read = self._names.get(key)
        if read is None:
            return default
        value = values[key] = read(*self._args)
        return value

    def __contains__(self, key: object) -> bool:
        return key in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


# ── Updating ──────────────────────────────────────────────────────────────────────────────────


def observe(
    profile: Profile, event: ProfileEvent, *, currency: str, rates: Mapping[str, Decimal]
) -> set[str]:
    """Fold one event into the profile; the names (as in ``view``) whose value changed.

    An order already remembered (the same ``order_id`` reported twice) changes nothing and
    returns an empty set: the caller can tell a duplicate order by that. ``currency`` is the
    workspace currency and ``rates`` converts into it (see the module docstring)."""
    kind = event.type
    if kind not in _HANDLERS:
        return set()
    names = _ENGAGEMENT_WRITES.get(kind)
    if names is not None:  # only these can change: compared alone, not the whole snapshot
        was = [getattr(profile, name) for name in names]
        _HANDLERS[kind](profile, event, currency.upper(), rates)
        return {n for n, value in zip(names, was, strict=True) if getattr(profile, n) != value}
    before = profile._snapshot()
    _HANDLERS[kind](profile, event, currency.upper(), rates)
    after = profile._snapshot()
    return {name for name, value in after.items() if before[name] != value}


def _order_completed(
    p: Profile, event: ProfileEvent, workspace: str, rates: Mapping[str, Decimal]
) -> None:
    props = event.properties
    order_id = _text(props.get("order_id"))
    if p._entry(order_id) is not None:
        return  # reported twice (or cancelled before it arrived): counted once, or not at all
    order_currency = _currency(props.get("currency")) or workspace
    total = _amount(props.get("total")) or _ZERO
    rate = _rate(order_currency, workspace, rates)
    discount = _amount(props.get("discount")) or _ZERO
    discounted = discount > 0 or _text(props.get("coupon")) is not None
    at = event.occurred_at
    p.order_count += 1
    p.revenue_original[order_currency] = p.revenue_original.get(order_currency, _ZERO) + total
    if rate is None:
        p.unconverted_orders += 1
    else:
        p.revenue += _convert(total, rate)
    if discounted:
        p.discounted_orders += 1
    if p.first_order_at is None or at < p.first_order_at:
        p.first_order_at = at
    if p.last_order_at is None or at > p.last_order_at:
        p.last_order_at = at
    if order_id is not None:
        p._remember(OrderEntry(order_id, at, order_currency, total, rate, discounted))


def _order_cancelled(
    p: Profile, event: ProfileEvent, workspace: str, rates: Mapping[str, Decimal]
) -> None:
    order_id = _text(event.properties.get("order_id"))
    entry = p._entry(order_id)
    if entry is None:
        # Not remembered: its amount is unknown, so only the cancellation is counted. Remember
        # it, so that the order arriving late (events can overtake each other) is not counted.
        p.cancelled_orders += 1
        if order_id is not None:
            p._remember(OrderEntry(order_id, event.occurred_at, "", _ZERO, None, cancelled=True))
        return
    if entry.cancelled:
        return
    _take_off(p, entry, entry.remaining)
    entry.cancelled = True
    p.order_count -= 1
    p.cancelled_orders += 1
    if entry.rate is None:
        p.unconverted_orders -= 1
    if entry.discounted:
        p.discounted_orders -= 1
    _recompute_order_times(p, entry)


def _recompute_order_times(p: Profile, cancelled: OrderEntry) -> None:
    """First and last order after a cancellation: exact when every counted order is remembered,
    otherwise the last order falls back to the latest remembered one and the first stays."""
    live = p._live()
    if p.order_count <= 0:
        p.first_order_at = p.last_order_at = None
    elif len(live) == p.order_count:
        p.first_order_at = min(e.at for e in live)
        p.last_order_at = max(e.at for e in live)
    elif cancelled.at == p.last_order_at and live:
        p.last_order_at = max(e.at for e in live)


def _order_refunded(
    p: Profile, event: ProfileEvent, workspace: str, rates: Mapping[str, Decimal]
) -> None:
    props = event.properties
    entry = p._entry(_text(props.get("order_id")))
    amount = _amount(props.get("total"))
    refund_currency = _currency(props.get("currency"))
    if entry is not None and entry.cancelled:
        # A cancelled order's money is already out of the revenue; the refund is still money paid.
        cur = refund_currency or entry.currency or workspace
        rate = entry.rate if cur == entry.currency and entry.rate else _rate(cur, workspace, rates)
        if amount is not None and rate is not None:
            p.refunded += _convert(amount, rate)
        return
    if entry is not None and refund_currency not in (None, entry.currency) and amount is not None:
        # Paid back in another currency (a multi-currency shop refunding in its own): taken off
        # the order it names, in the order's currency, so that its cancellation later takes off
        # only what is left. Without the rates to do that, it is taken off the totals below.
        refund_rate = _rate(refund_currency, workspace, rates)
        if refund_rate is not None and entry.rate is not None:
            paid = _convert(amount, refund_rate)
            _take_off(p, entry, min(_convert(paid / entry.rate, Decimal(1)), entry.remaining))
            p.refunded += paid
            return
    if entry is not None and refund_currency in (None, entry.currency):
        if amount is None:
            amount = entry.remaining  # no amount: the whole order (what is left of it)
        _take_off(p, entry, min(amount, entry.remaining))
        rate = entry.rate or _rate(entry.currency, workspace, rates)
        if rate is not None:
            p.refunded += _convert(amount, rate)
        return
    # An order not remembered (or refunded in another currency): take the amount off the
    # totals, never below zero.
    if amount is None:
        return
    cur = refund_currency or workspace
    rate = _rate(cur, workspace, rates)
    if rate is not None:
        converted = _convert(amount, rate)
        p.refunded += converted
        p.revenue = max(p.revenue - converted, _ZERO)
    if cur in p.revenue_original:
        p.revenue_original[cur] = max(p.revenue_original[cur] - amount, _ZERO)


def _take_off(p: Profile, entry: OrderEntry, amount: Decimal) -> None:
    """Reduce a counted order by ``amount`` of its own currency, revenue at the order's rate."""
    if amount <= 0:
        return
    before = entry.remaining
    entry.taken_off += amount
    after = entry.remaining
    p.revenue_original[entry.currency] = p.revenue_original.get(entry.currency, _ZERO) - amount
    if entry.rate is not None:
        # Difference of the converted remainders, not the converted difference: the rounding
        # then cancels out and a full refund takes off exactly what the order added.
        p.revenue -= _convert(before, entry.rate) - _convert(after, entry.rate)


def _engaged(p: Profile, at: datetime) -> None:
    if p.last_engaged_at is None or at >= p.last_engaged_at:
        p.last_engaged_at = at
        p.marketing_sends_since_engaged = 0


def _opened(p: Profile, event: ProfileEvent, workspace: str, rates: Mapping[str, Decimal]) -> None:
    at = event.occurred_at
    if p.last_open_at is None or at > p.last_open_at:
        p.last_open_at = at
    _engaged(p, at)


def _clicked(p: Profile, event: ProfileEvent, workspace: str, rates: Mapping[str, Decimal]) -> None:
    at = event.occurred_at
    if p.last_click_at is None or at > p.last_click_at:
        p.last_click_at = at
    _engaged(p, at)


def _sent(p: Profile, event: ProfileEvent, workspace: str, rates: Mapping[str, Decimal]) -> None:
    if event.properties.get("category") != "marketing":
        return
    # A send reported after an engagement that happened later belongs before it.
    if p.last_engaged_at is None or event.occurred_at > p.last_engaged_at:
        p.marketing_sends_since_engaged += 1


_ENGAGEMENT_WRITES: dict[str, tuple[str, ...]] = {
    "message_opened": ("last_open_at", "last_engaged_at", "marketing_sends_since_engaged"),
    "message_clicked": ("last_click_at", "last_engaged_at", "marketing_sends_since_engaged"),
    "message_sent": ("marketing_sends_since_engaged",),
}
"""The names of the snapshot an engagement event's handler may change (``_opened``,
``_clicked``, ``_sent`` write nothing else): ``observe`` compares only these for them."""

_HANDLERS = {
    "order_completed": _order_completed,
    "order_cancelled": _order_cancelled,
    "order_refunded": _order_refunded,
    "message_opened": _opened,
    "message_clicked": _clicked,
    "message_sent": _sent,
}


# ── Values ────────────────────────────────────────────────────────────────────────────────────


def _rate(currency: str, workspace: str, rates: Mapping[str, Decimal]) -> Decimal | None:
    if currency == workspace:
        return Decimal(1)
    rate = rates.get(currency)
    if rate is None or not rate.is_finite() or rate <= 0:
        return None
    return rate


def _convert(amount: Decimal, rate: Decimal) -> Decimal:
    value = amount * rate
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -_CONVERTED_PLACES:
        value = value.quantize(Decimal(1).scaleb(-_CONVERTED_PLACES))
    return value


def _amount(value: Any) -> Decimal | None:
    """Money as the catalogue sends it (a decimal string, or a number from older producers)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int | float | str):
        try:
            amount = Decimal(str(value))
        except InvalidOperation:
            return None
    else:
        return None
    return amount if amount.is_finite() and amount >= 0 else None


def _currency(value: Any) -> str | None:
    return value.upper() if isinstance(value, str) and len(value) == 3 else None


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | str):
        text = str(value).strip()
        return text or None
    return None


def _money(value: Decimal) -> str:
    return format(value, "f")


def _optional_money(value: Decimal | None) -> str | None:
    return None if value is None else _money(value)


def _instant(value: datetime | None) -> str | None:
    return None if value is None else utc_text(value)


def _days(at: datetime | None, now: datetime) -> int | None:
    if at is None:
        return None
    return max(0, math.floor((now - at) / _DAY))


__all__ = ["RECENT_ORDERS", "OrderEntry", "Profile", "ProfileEvent", "ProfileView", "observe"]
