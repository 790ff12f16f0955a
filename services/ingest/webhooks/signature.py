"""Webhook signatures: base64 HMAC-SHA256 of the raw body, as Shopify and WooCommerce send them."""

from __future__ import annotations

import base64
import hashlib
import hmac


def sign(secret: str, body: bytes) -> str:
    """The signature a platform sends for ``body`` signed with ``secret``."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify(secret: str, body: bytes, signature: str) -> bool:
    """True when ``signature`` is the body's HMAC under ``secret``.

    Compared in constant time over the base64 text, so neither a wrong length nor a wrong prefix
    answers sooner than a match would.
    """
    expected = sign(secret, body).encode("ascii")
    return hmac.compare_digest(expected, signature.strip().encode("utf-8", "replace"))
