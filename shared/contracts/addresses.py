"""Email and phone normalisation, one definition for every service: ingest validates the
addresses it accepts with it, dispatch checks and keys its suppression list with it."""

from __future__ import annotations

import functools

import phonenumbers
from email_validator import EmailNotValidError, validate_email


@functools.lru_cache(maxsize=65_536)  # addresses repeat per customer; validation is costly
def normalise_email(value: str) -> str:
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"not a valid email address: {exc}") from None


@functools.lru_cache(maxsize=65_536)
def normalise_phone(value: str, region: str | None = None) -> str:
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        raise ValueError(
            "not a phone number: give E.164 (+4930…) or a national number with traits.country"
        ) from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_address(channel: str, value: str) -> str:
    """The address of a channel in its one canonical form (raises ValueError when invalid)."""
    return normalise_email(value) if channel == "email" else normalise_phone(value)
