"""Unsubscribe tokens and the RFC 8058 headers that carry them.

A token names the subscriber a message went to (workspace, customer, channel, normalised address)
and the message it came from, signed with HMAC-SHA256. Mailbox providers POST the one-click
unsubscribe with no cookies and no credentials (RFC 8058), so the signature is the only thing that
stops a stranger from unsubscribing someone else: the token is the authority.

Format, version 1: ``v1.<payload>.<mac>``, both parts base64url without padding. The payload is
the five fields joined by U+001F (which no field may contain); the MAC is HMAC-SHA256 over a
context label, the version and the payload, truncated to 128 bits (RFC 2104 allows truncation to
half the hash length; forging one still takes 2**128 guesses, and every guess is a request). A
new format gets a new prefix and ``verify`` learns it alongside the old one, because tokens in
mail already sent must keep working.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, urlsplit

from services.dispatch.errors import DispatchError
from shared.contracts.addresses import normalise_address

Channel = Literal["email", "sms"]

VERSION = "v1"
# Tokens never expire: mail stays in inboxes for years and RFC 8058 expects its link to keep
# working for as long as the message exists. Nothing here reads a clock, on purpose.
# ASCII fields at their limits make ~870 characters; sign() refuses a token longer than this, so a
# link stays well within what browsers and mail clients keep intact.
MAX_TOKEN_LENGTH = 2048
_MAC_BYTES = 16
_CONTEXT = b"ciclo-unsubscribe\x00"
_SEPARATOR = "\x1f"
_CODES: dict[str, Channel] = {"e": "email", "s": "sms"}
_CODE_OF: dict[Channel, str] = {"email": "e", "sms": "s"}
_B64 = re.compile(r"[A-Za-z0-9_-]+")
# Bounds of the columns and events the fields end up in.
_LIMITS = {"workspace_id": 64, "customer_id": 200, "address": 320, "message_id": 100}


class BadToken(DispatchError):
    """The token is malformed, of an unknown version, or not signed with our secret."""


@dataclass(frozen=True, slots=True)
class Subscriber:
    """Who a token unsubscribes: one address of one customer, from the message that carried it."""

    workspace_id: str
    customer_id: str
    channel: Channel
    address: str
    message_id: str


def sign(
    *,
    workspace_id: str,
    customer_id: str,
    channel: Channel,
    address: str,
    message_id: str,
    secret: str,
) -> str:
    """A token for the subscriber; the address is normalised first, as the suppression list keys
    it. Raises ValueError for an invalid address or a field that cannot be carried."""
    if channel not in _CODE_OF:
        raise ValueError(f"channel must be email or sms, not {channel!r}")
    fields = {
        "workspace_id": workspace_id,
        "customer_id": customer_id,
        "address": normalise_address(channel, address),
        "message_id": message_id,
    }
    for name, value in fields.items():
        if not value or len(value) > _LIMITS[name] or _SEPARATOR in value:
            raise ValueError(f"{name} must be 1 to {_LIMITS[name]} characters without U+001F")
    payload = _SEPARATOR.join(
        (workspace_id, customer_id, _CODE_OF[channel], fields["address"], message_id)
    ).encode()
    token = f"{VERSION}.{_encode(payload)}.{_encode(_mac(_key(secret), payload))}"
    if len(token) > MAX_TOKEN_LENGTH:
        raise ValueError(f"the fields make a token longer than {MAX_TOKEN_LENGTH} characters")
    return token


def verify(token: str, secret: str, *, older_secrets: Sequence[str] = ()) -> Subscriber:
    """The subscriber a token names; BadToken unless it is intact and signed with ``secret`` (or
    one of ``older_secrets``, so links in mail sent before a rotation keep working)."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise BadToken("the link is too long to be one of ours")
    version, _, rest = token.partition(".")
    if version != VERSION:
        raise BadToken("the link is not one of ours (unknown format)")
    encoded_payload, _, encoded_mac = rest.partition(".")
    payload, mac = _decode(encoded_payload), _decode(encoded_mac)
    if not any(
        hmac.compare_digest(mac, _mac(_key(key), payload)) for key in (secret, *older_secrets)
    ):
        raise BadToken("the link is damaged or was not issued by us (signature does not match)")
    # Signed by us, so well formed; checked anyway, since a bug in sign() must not become a crash.
    parts = payload.decode(errors="replace").split(_SEPARATOR)
    if len(parts) != 5 or parts[2] not in _CODES:
        raise BadToken("the link carries fields we do not understand")
    workspace_id, customer_id, code, address, message_id = parts
    return Subscriber(
        workspace_id=workspace_id,
        customer_id=customer_id,
        channel=_CODES[code],
        address=address,
        message_id=message_id,
    )


def unsubscribe_url(public_url: str, token: str) -> str:
    """The one-click URL: POST unsubscribes, GET shows a confirmation page."""
    return f"{public_base(public_url)}/u/{token}"


def preferences_url(public_url: str, token: str) -> str:
    """The preference centre of the token's address."""
    return f"{public_base(public_url)}/preferences/{token}"


def list_unsubscribe_headers(*, public_url: str, token: str, mailto: str = "") -> dict[str, str]:
    """The RFC 2369 + RFC 8058 headers of a marketing email.

    The HTTPS URL comes first: RFC 8058 one-click needs it, and Gmail and Yahoo require one-click
    from bulk senders. A ``mailto`` (``unsubscribe@shop.example``, with or without the scheme) is
    offered as well for clients that only speak mail."""
    targets = [f"<{unsubscribe_url(public_url, token)}>"]
    address = mailto.strip().removeprefix("mailto:")
    if address:
        if any(c in address for c in "<>,?\r\n\t ") or "@" not in address:
            raise ValueError(f"unsubscribe mailto must be a plain email address, not {mailto!r}")
        targets.append(f"<mailto:{quote(address, safe='@')}?subject=unsubscribe>")
    return {
        "List-Unsubscribe": ", ".join(targets),
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def public_base(public_url: str) -> str:
    """The base of every link to Ciclo's pages, without a trailing slash; ValueError when it is
    not an absolute http(s) URL with a host (the settings check it at start with this)."""
    base = public_url.strip().rstrip("/")
    if (
        not base.startswith(("https://", "http://"))
        or any(c in base for c in "<>\"' \r\n\t")
        or not urlsplit(base).hostname
    ):
        raise ValueError(f"must be an absolute http(s) URL, not {public_url!r}")
    return base


def _key(secret: str) -> bytes:
    if not secret:
        raise ValueError("the unsubscribe secret must not be empty")
    return secret.encode()


def _mac(key: bytes, payload: bytes) -> bytes:
    message = _CONTEXT + VERSION.encode() + b"\x00" + payload
    return hmac.new(key, message, hashlib.sha256).digest()[:_MAC_BYTES]


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes:
    """Strict base64url: Python's decoder skips stray characters and ignores the unused bits of
    the last one, so several strings would decode alike; only the canonical spelling passes."""
    if not _B64.fullmatch(text):
        raise BadToken("the link is damaged (not base64url)")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        raise BadToken("the link is damaged (not base64url)") from None
    if _encode(data) != text:
        raise BadToken("the link is damaged (not base64url)")
    return data
