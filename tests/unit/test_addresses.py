"""Address normalisation: the short road for the usual email address gives exactly
``email_validator``'s answer or error."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from shared.contracts.addresses import normalise_address, normalise_email, validated_email

_ADDRESSES = [
    "cust-0000001@example.com",
    "A.b+c@Example.COM",
    "Ana.O'Neil@Shop.Example.co.uk",
    "x_y-z!#$%&*/=?^`{|}~@example.org",
    "Postmaster@Example.com",
    "INFO@example.com",
    "a@xn--bcher-kva.example",
    "a@bücher.example",
    "josé@example.com",
    "a@123.com",
    "a@example.123",
    "a@-ex.com",
    "a@ex-.com",
    "a@ex--ample.com",
    "a@xn--ab.com",
    "a@example",
    "a@localhost",
    "a@foo.local",
    "a@invalid",
    "a@ex..com",
    "a@.ex.com",
    "a@ex.com.",
    "a..b@example.com",
    ".a@example.com",
    "a.@example.com",
    "@example.com",
    "a@",
    "a@@example.com",
    '"a b"@example.com',
    "Ana <ana@example.com>",
    " ana@example.com",
    "ana@example.com ",
    "a" * 64 + "@example.com",
    "a" * 65 + "@example.com",
    "a@" + "b" * 63 + ".com",
    "a@" + "b" * 64 + ".com",
    "a" * 60 + "@" + ".".join(["b" * 60] * 3) + ".com",
    "a" * 64 + "@" + ".".join(["b" * 60] * 3) + ".com",
    "a@[127.0.0.1]",
    "a@EXAMPLE.COM",
    "a@exa_mple.com",
]


def _outcome(normalise: Callable[[str], str], value: str) -> str:
    try:
        return normalise(value)
    except ValueError as exc:
        return f"ValueError: {exc}"


@pytest.mark.parametrize("value", _ADDRESSES)
def test_the_short_road_answers_as_email_validator(value: str) -> None:
    assert _outcome(normalise_email, value) == _outcome(validated_email, value)


def test_the_short_road_agrees_on_generated_addresses() -> None:
    rng = random.Random(7)
    local_chars = "aZ09._+-!'~"
    domain_chars = "aZ09.-"
    values = [
        "".join(rng.choice(local_chars) for _ in range(rng.randint(0, 6)))
        + "@"
        + "".join(rng.choice(domain_chars) for _ in range(rng.randint(0, 6)))
        + rng.choice(("", ".com", ".COM", ".x", ".local", ".1"))
        for _ in range(3000)
    ]
    differ = [v for v in values if _outcome(normalise_email, v) != _outcome(validated_email, v)]
    assert differ == []
    # The generator reaches both sides: accepted and refused addresses.
    assert any("ValueError" not in _outcome(normalise_email, v) for v in values)
    assert any("ValueError" in _outcome(normalise_email, v) for v in values)


def test_phone_numbers_are_normalised_to_e164() -> None:
    assert normalise_address("sms", "+4930123456") == "+4930123456"
    with pytest.raises(ValueError, match="not a phone number"):
        normalise_address("sms", "not a number")
