"""What a workspace decides for its sending, and the checks before every send (pure).

Before a message goes to a provider, in this order (the first that applies decides):

1. an address for the channel (``no_address``), valid once normalised (``invalid_address``);
2. consent: marketing email goes unless the customer revoked it (``email_marketing_consent`` =
   revoked); marketing SMS needs an explicit grant (``sms_marketing_consent`` = granted), as SMS
   marketing law requires (TCPA, GDPR): ``no_consent``. Transactional messages (an order
   confirmation) need no marketing consent;
3. the suppression list: a hard bounce or complaint stops every message to the address, an
   unsubscribe stops marketing (``suppressed:<reason>``);
4. quiet hours of the channel in the customer's time zone: a marketing message is *held* until
   they end, never dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.contracts.addresses import normalise_address
from shared.localtime import window_opens, zone

_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class QuietHours(BaseModel):
    """No marketing message of the channel between ``start`` and ``end`` (local time); the window
    may cross midnight (21:00 to 08:00)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    start: str = Field(examples=["21:00"], description="HH:MM, local time of the customer")
    end: str = Field(examples=["08:00"], description="HH:MM, local time of the customer")

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not _HHMM.fullmatch(value):
            raise ValueError("must be a time of day HH:MM (00:00 to 23:59)")
        return value

    def bounds(self) -> tuple[time, time]:
        return time.fromisoformat(self.start), time.fromisoformat(self.end)


_DEFAULT_QUIET: dict[Literal["email", "sms"], QuietHours] = {
    "sms": QuietHours(start="21:00", end="08:00")
}


class DispatchPolicy(BaseModel):
    """A workspace's sending settings (``PUT /v1/dispatch-settings``); unset fields take the
    service defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    quiet_hours: dict[Literal["email", "sms"], QuietHours] = Field(
        default_factory=lambda: _DEFAULT_QUIET,
        description="Per channel; a channel left out has none. Default: SMS 21:00 to 08:00.",
    )
    timezone: str = Field(
        "UTC", description="Zone of customers without a `timezone` trait (IANA name)."
    )
    from_email: str | None = Field(None, description="Sender address (default: the service's).")
    from_name: str | None = Field(None, description="Sender name (default: the service's).")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        if _zone_or_none(value) is None:
            raise ValueError(f"unknown time zone {value!r}")
        return value


def _zone_or_none(name: object) -> ZoneInfo | None:
    if not isinstance(name, str) or not name or len(name) > 100:
        return None
    try:
        return zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class Refuse:
    reason: str


@dataclass(frozen=True, slots=True)
class Hold:
    until: datetime
    reason: str = "quiet_hours"


@dataclass(frozen=True, slots=True)
class Go:
    address: str


Decision = Refuse | Hold | Go


def address_of(channel: str, recipient: dict[str, Any]) -> str | Refuse:
    raw = recipient.get("email" if channel == "email" else "phone")
    if not raw or not isinstance(raw, str):
        return Refuse("no_address")
    try:
        return normalise_address(channel, raw)
    except ValueError:
        return Refuse("invalid_address")


def consent_refusal(channel: str, category: str, traits: dict[str, Any]) -> Refuse | None:
    if category != "marketing":
        return None
    consent = traits.get(f"{channel}_marketing_consent")
    if channel == "sms":
        return None if consent == "granted" else Refuse("no_consent")
    return Refuse("no_consent") if consent == "revoked" else None


def quiet_until(now: datetime, tz: ZoneInfo, window: QuietHours) -> datetime | None:
    """The end of the quiet hours when ``now`` falls inside them, else None: the quiet hours
    are the complement of a send window from their end to their start."""
    start, end = window.bounds()
    return window_opens(now, end, start, tz)


def decide(
    *,
    channel: str,
    category: str,
    recipient: dict[str, Any],
    suppressed: str | None,
    policy: DispatchPolicy,
    now: datetime,
) -> Decision:
    """The checks of the module docstring, in order. ``suppressed`` is the reason of a
    suppression that blocks this message (the caller matched scope and category)."""
    address = address_of(channel, recipient)
    if isinstance(address, Refuse):
        return address
    traits = recipient.get("traits") or {}
    refusal = consent_refusal(channel, category, traits)
    if refusal is not None:
        return refusal
    if suppressed is not None:
        return Refuse(f"suppressed:{suppressed}")
    window = policy.quiet_hours.get(channel)  # type: ignore[call-overload]  # a str channel
    if category == "marketing" and window is not None:
        tz = _zone_or_none(traits.get("timezone")) or zone(policy.timezone)
        until = quiet_until(now, tz, window)
        if until is not None:
            return Hold(until)
    return Go(address)
