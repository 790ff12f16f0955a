"""Email and phone normalisation, one definition for every service: ingest validates the
addresses it accepts with it, dispatch checks and keys its suppression list with it.

``email_validator`` takes some 30 µs per address, and both ingest and dispatch meet most addresses
once, so the per-address cache rarely helps. The usual address takes a shorter road with exactly
``email_validator``'s answer: a part before the @-sign that is an ASCII dot-atom (RFC 5322
``atext`` runs separated by single dots, at most 64 characters, not one of the mailbox names
``email_validator`` lowercases) and a domain of ASCII letters, digits, dots and hyphens, 254
characters at most in all, comes back as that local part unchanged, ``@``, and the domain as
``email_validator`` normalises it. The domain's verdict does not depend on the local part, so it is
asked once per domain (``email_validator`` itself, on a one-letter local part) and remembered; a
domain that normalises to anything but its lower-case self (IDNA), or that ``email_validator``
refuses, and every other address, go to ``email_validator`` whole, so its errors and its answers
are the ones given (tests/unit/test_addresses.py compares the two).
"""

from __future__ import annotations

import functools
import re

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES

_ATEXT = r"a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~"
_SIMPLE = re.compile(rf"([{_ATEXT}]+(?:\.[{_ATEXT}]+)*)@([a-zA-Z0-9.-]+)")
_LOCAL_MAX = 64
_ADDRESS_MAX = 254
_MAILBOX_NAMES = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)


def validated_email(value: str) -> str:
    """``email_validator``'s normalised form of ``value`` (ValueError when invalid): the
    definition :func:`normalise_email` answers as."""
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"not a valid email address: {exc}") from None


@functools.lru_cache(maxsize=4096)
def _domain(domain: str) -> str | None:
    """The domain as ``email_validator`` normalises it, when that is its lower-case self in
    both its forms (Unicode and ASCII); None for any other domain, valid or not."""
    try:
        checked = validate_email(f"a@{domain}", check_deliverability=False)
    except EmailNotValidError:
        return None
    lowered = domain.lower()
    return lowered if checked.domain == lowered and checked.ascii_domain == lowered else None


@functools.lru_cache(maxsize=65_536)  # addresses repeat per customer
def normalise_email(value: str) -> str:
    """:func:`validated_email`'s answer or ValueError, the usual address without its cost."""
    simple = _SIMPLE.fullmatch(value)
    if simple is not None and len(value) <= _ADDRESS_MAX:
        local, domain = simple.groups()
        if len(local) <= _LOCAL_MAX and local.lower() not in _MAILBOX_NAMES:
            normalised = _domain(domain)
            if normalised is not None:
                return f"{local}@{normalised}"
    return validated_email(value)


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
