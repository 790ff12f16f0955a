"""The generic webhook's signature: ``X-Ciclo-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret,
"<t>." + raw body)>``, what a receiver's verification accepts and refuses, and that the bytes on
the wire are the bytes signed."""

from __future__ import annotations

import json

import httpx
import pytest

from services.dispatch.adapters.providers.webhook import (
    WebhookProvider,
    payload,
    sign,
    verify,
)
from services.dispatch.domain.messages import Outbound, Rendered
from services.dispatch.domain.providers import WebhookConfig

SECRET = "whsec_0123456789abcdef"
NOW = 1_700_000_000
BODY = b'{"message_id":"msg_1"}'
# Computed independently of our code:
#   printf '%s' '1700000000.{"message_id":"msg_1"}' | openssl dgst -sha256 -hmac "$SECRET"
VECTOR = "029072562030fdba81eca1c98c12476fb06e48048da18404074125f7a8347d86"


def message() -> Outbound:
    return Outbound(
        message_id="msg_1",
        workspace_id="ws_demo",
        customer_id="c1",
        channel="email",
        template="welcome-1",
        category="marketing",
        to="ana@example.org",
        sender="shop@example.com",
        sender_name="Shop",
        content=Rendered(subject="Hi", html="<p>Hi ✓</p>", text="Hi ✓"),
        headers={"List-Unsubscribe": "<https://ciclo.example.com/u/t>"},
    )


def test_the_signature_matches_an_independent_hmac() -> None:
    assert sign(SECRET, BODY, NOW) == f"t={NOW},v1={VECTOR}"


def test_a_fresh_signature_verifies() -> None:
    header = sign(SECRET, BODY, NOW)
    assert verify(SECRET, header, BODY, now=NOW)
    assert verify(SECRET, header, BODY, now=NOW + 299)
    assert verify(SECRET, header, BODY, now=NOW - 299)  # a receiver's clock may be behind


@pytest.mark.parametrize(
    ("secret", "body", "now"),
    [
        ("whsec_another-secret-x", BODY, NOW),  # wrong secret
        (SECRET, BODY.replace(b"msg_1", b"msg_2"), NOW),  # body changed
        (SECRET, BODY + b" ", NOW),  # even by a byte of whitespace
        (SECRET, BODY, NOW + 301),  # stale: a replay
        (SECRET, BODY, NOW - 301),  # from the future
    ],
)
def test_a_signature_is_refused_when_anything_differs(secret: str, body: bytes, now: int) -> None:
    assert not verify(secret, sign(SECRET, BODY, NOW), body, now=now)


@pytest.mark.parametrize(
    "header",
    [
        "",
        f"v1={VECTOR}",  # no timestamp
        f"t={NOW}",  # no signature
        f"t=abc,v1={VECTOR}",
        f"t={NOW},v0={VECTOR}",  # an unknown scheme is not v1
        f"t={NOW + 1},v1={VECTOR}",  # the timestamp is part of what is signed
        f"t={NOW},v1={VECTOR.upper()[:-1]}",
    ],
)
def test_malformed_or_forged_headers_are_refused(header: str) -> None:
    assert not verify(SECRET, header, BODY, now=NOW)


def test_tolerance_is_the_receivers_choice() -> None:
    header = sign(SECRET, BODY, NOW)
    assert not verify(SECRET, header, BODY, now=NOW + 61, tolerance=60)
    assert verify(SECRET, header, BODY, now=NOW + 3600, tolerance=3600)


def test_rotation_old_and_new_secrets_both_verify() -> None:
    old, new = "whsec_old-0123456789", "whsec_new-0123456789"
    assert verify([new, old], sign(old, BODY, NOW), BODY, now=NOW)
    assert verify([new, old], sign(new, BODY, NOW), BODY, now=NOW)
    # A header may carry several v1 values; one match is enough.
    both = f"{sign(old, BODY, NOW)},v1={sign(new, BODY, NOW).rpartition('=')[2]}"
    assert verify(new, both, BODY, now=NOW)


async def test_the_bytes_sent_are_the_bytes_signed() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"id": "rcv_1"})

    config = WebhookConfig(url="https://hooks.example.com/ciclo", secret=SECRET)
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        provider = WebhookProvider(client, config, clock=lambda: NOW + 0.9)
        receipt = await provider.send(message())
    [request] = seen
    assert str(request.url) == "https://hooks.example.com/ciclo"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-ciclo-message-id"] == "msg_1"
    header = request.headers["x-ciclo-signature"]
    assert header.startswith(f"t={NOW},v1=")  # whole seconds
    assert verify(SECRET, header, request.content, now=NOW)
    assert json.loads(request.content) == payload(message())
    assert receipt.provider_message_id == "rcv_1"


async def test_a_receiver_that_answers_without_an_id_gets_ours() -> None:
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(lambda _: httpx.Response(204))
    ) as client:
        config = WebhookConfig(url="https://hooks.example.com/ciclo", secret=SECRET)
        receipt = await WebhookProvider(client, config).send(message())
    assert receipt.provider_message_id == "msg_1"
