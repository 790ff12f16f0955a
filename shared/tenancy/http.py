"""FastAPI dependencies that turn a request's credentials into a :class:`Principal`.

Accepted: ``Authorization: Bearer <key>`` and HTTP Basic with the key as user and an empty password
(what Segment libraries send). 401 when no valid key is given, 403 when the key lacks the scope.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import Depends, Request

from shared.http import Forbidden, TooManyRequests, Unauthorized, require_json
from shared.ratelimit import RateLimiter, retry_after_header
from shared.tenancy.keys import KeyStore, Principal, Scope

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="ciclo"'}


def credentials(request: Request) -> str | None:
    return credentials_from_header(request.headers.get("authorization"))


def credentials_from_header(header: str | None) -> str | None:
    """The key an ``Authorization`` header carries; None without one; 401 if malformed."""
    if not header:
        return None
    kind, _, value = header.partition(" ")
    kind = kind.lower()
    if kind == "bearer":
        return value.strip() or None
    if kind == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized(
                "malformed Basic credentials", field="Authorization", headers=_CHALLENGE
            ) from None
        return decoded.partition(":")[0] or None
    raise Unauthorized(
        f"unsupported authorization scheme {kind!r}", field="Authorization", headers=_CHALLENGE
    )


async def authenticate(keys: KeyStore, plaintext: str | None, needed: Scope) -> Principal:
    if not plaintext:
        raise Unauthorized(
            "missing API key: send Authorization: Bearer <key>",
            field="Authorization",
            headers=_CHALLENGE,
        )
    principal = await keys.authenticate(plaintext)
    if principal is None:
        raise Unauthorized("unknown or revoked API key", field="Authorization", headers=_CHALLENGE)
    if not principal.allows(needed):
        raise Forbidden(
            f"this key has scope {principal.scope.value!r}; {needed.value!r} is needed",
            field="Authorization",
        )
    return principal


def keystore(request: Request) -> KeyStore:
    """The app's key store (``app.state.keys``, set by the runtime that builds the app)."""
    keys: KeyStore = request.app.state.keys
    return keys


def limit(request: Request, principal: Principal) -> Principal:
    """Apply the app's per-key rate limit (``app.state.rate_limiter``; absent: no limit)."""
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        wait = limiter.acquire(principal.key_id)
        if wait:
            raise TooManyRequests(
                f"rate limit of {limiter.rate:g} requests/s for this key exceeded; retry later",
                field="Authorization",
                headers={"Retry-After": retry_after_header(wait)},
            )
    return principal


async def ingest_principal(request: Request) -> Principal:
    principal = await authenticate(keystore(request), credentials(request), Scope.INGEST)
    return limit(request, principal)


async def json_ingest_principal(request: Request) -> Principal:
    """:func:`~shared.http.require_json` (415), then :func:`ingest_principal` (401, 403, 429):
    the checks, and their order, of ``dependencies=[Depends(require_json)]`` followed by an
    ``IngestPrincipal`` parameter, as one dependency. FastAPI solves each dependency as a
    dependant of its own (query, header and cookie parameters, cache key, scopes), which costs
    more per request than both checks together."""
    await require_json(request)
    return await ingest_principal(request)


async def admin_principal(request: Request) -> Principal:
    principal = await authenticate(keystore(request), credentials(request), Scope.ADMIN)
    return limit(request, principal)


IngestPrincipal = Annotated[Principal, Depends(ingest_principal)]
JsonIngestPrincipal = Annotated[Principal, Depends(json_ingest_principal)]
AdminPrincipal = Annotated[Principal, Depends(admin_principal)]
