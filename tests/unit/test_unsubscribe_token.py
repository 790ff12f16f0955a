"""Unsubscribe tokens (sign, verify, tampering) and the RFC 8058 header format."""

from __future__ import annotations

import re
import string
from typing import Any

import pytest

from services.dispatch.domain.unsubscribe import (
    MAX_TOKEN_LENGTH,
    BadToken,
    Subscriber,
    list_unsubscribe_headers,
    preferences_url,
    sign,
    unsubscribe_url,
    verify,
)

SECRET = "s3cret-for-tests"
FIELDS: dict[str, Any] = {
    "workspace_id": "demo",
    "customer_id": "cus_42",
    "channel": "email",
    "address": "Ana@EXAMPLE.com",
    "message_id": "msg_0123456789abcdef0123456789abcdef",
}
ALPHABET = string.ascii_letters + string.digits + "-_."


def token(*, secret: str = SECRET, **overrides: Any) -> str:
    return sign(**{**FIELDS, **overrides}, secret=secret)


def test_round_trip_names_the_subscriber_with_the_address_normalised() -> None:
    assert verify(token(), SECRET) == Subscriber(
        workspace_id="demo",
        customer_id="cus_42",
        channel="email",
        address="Ana@example.com",
        message_id="msg_0123456789abcdef0123456789abcdef",
    )


def test_round_trip_of_a_phone_number_in_e164() -> None:
    subscriber = verify(token(channel="sms", address="+49 151 12345678"), SECRET)
    assert (subscriber.channel, subscriber.address) == ("sms", "+4915112345678")


def test_unicode_fields_survive() -> None:
    subscriber = verify(token(customer_id="kunde-übermaß", address="jörg@bücher.example"), SECRET)
    assert subscriber.customer_id == "kunde-übermaß"
    assert subscriber.address == "jörg@bücher.example"


def test_token_is_url_safe_versioned_and_short() -> None:
    value = token()
    assert re.fullmatch(r"v1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{22}", value)
    assert len(value) < 150
    # No clock in it: the same subscriber and message always get the same link (it never expires).
    assert token() == value


def test_the_largest_fields_still_fit_a_url() -> None:
    value = token(
        workspace_id="w" * 64,
        customer_id="c" * 200,
        address="a" * 64 + "@" + ".".join(["d" * 60] * 3) + ".com",
        message_id="m" * 100,
    )
    assert len(value) <= MAX_TOKEN_LENGTH
    assert verify(value, SECRET).customer_id == "c" * 200


@pytest.mark.parametrize("position", range(len(token())))
def test_changing_any_character_fails(position: int) -> None:
    original = token()
    for replacement in ALPHABET:
        if replacement == original[position]:
            continue
        tampered = original[:position] + replacement + original[position + 1 :]
        with pytest.raises(BadToken):
            verify(tampered, SECRET)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("workspace_id", "other"),
        ("customer_id", "cus_43"),
        ("channel", "sms"),
        ("address", "bob@example.com"),
        ("message_id", "msg_other"),
    ],
)
def test_a_payload_of_another_subscriber_under_our_mac_fails(field: str, value: str) -> None:
    ours = token().split(".")
    other = token(**{field: value, **({"address": "+4915112345678"} if value == "sms" else {})})
    swapped = ".".join([ours[0], other.split(".")[1], ours[2]])
    with pytest.raises(BadToken, match="signature"):
        verify(swapped, SECRET)


def test_another_secret_fails_and_an_older_one_is_accepted_when_named() -> None:
    value = token(secret="the-old-secret")
    with pytest.raises(BadToken, match="signature"):
        verify(value, SECRET)
    assert verify(value, SECRET, older_secrets=["the-old-secret"]).customer_id == "cus_42"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "v1",
        "v1..",
        "v2." + token().split(".", 1)[1],
        token() + "=",
        token().replace(".", "..", 1),
        token() + ".extra",
        "v1.ä." + token().split(".")[2],
        "v1." + "A" * MAX_TOKEN_LENGTH,
    ],
)
def test_malformed_tokens_fail(value: str) -> None:
    with pytest.raises(BadToken):
        verify(value, SECRET)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"channel": "push"}, "channel"),
        ({"address": "not-an-address"}, "valid email"),
        ({"workspace_id": ""}, "workspace_id"),
        ({"customer_id": "c" * 201}, "customer_id"),
        ({"message_id": "msg\x1fsmuggled"}, "message_id"),
        (
            {
                "workspace_id": "𝄞" * 64,
                "customer_id": "𝄞" * 200,
                "address": "a" * 64 + "@" + ".".join(["d" * 60] * 3) + ".com",
                "message_id": "𝄞" * 100,
            },
            "longer than 2048",
        ),
        ({"secret": ""}, "secret"),
    ],
)
def test_sign_refuses_what_a_token_cannot_carry(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        token(**overrides)


def test_headers_are_exactly_rfc_8058() -> None:
    value = token()
    assert list_unsubscribe_headers(public_url="https://shop.example/", token=value) == {
        "List-Unsubscribe": f"<https://shop.example/u/{value}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def test_headers_offer_mailto_after_the_https_url() -> None:
    value = token()
    headers = list_unsubscribe_headers(
        public_url="https://shop.example", token=value, mailto="mailto:unsubscribe@shop.example"
    )
    assert headers["List-Unsubscribe"] == (
        f"<https://shop.example/u/{value}>, <mailto:unsubscribe@shop.example?subject=unsubscribe>"
    )
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


@pytest.mark.parametrize("mailto", ["no-at-sign", "a@b.example>, <https://evil", "a@b?x=1"])
def test_a_mailto_that_would_break_the_header_is_refused(mailto: str) -> None:
    with pytest.raises(ValueError, match="mailto"):
        list_unsubscribe_headers(public_url="https://shop.example", token=token(), mailto=mailto)


def test_body_links_keep_the_path_prefix_of_the_public_url() -> None:
    value = token()
    assert unsubscribe_url("https://shop.example/ciclo/", value) == (
        f"https://shop.example/ciclo/u/{value}"
    )
    assert preferences_url("https://shop.example/ciclo", value) == (
        f"https://shop.example/ciclo/preferences/{value}"
    )


@pytest.mark.parametrize(
    "public_url", ["shop.example", "ftp://shop.example", "https://a b", "https://", "https:///x"]
)
def test_a_public_url_that_is_not_absolute_http_is_refused(public_url: str) -> None:
    with pytest.raises(ValueError, match="must be an absolute http"):
        unsubscribe_url(public_url, token())
