"""API keys: creation, hashing, lookup, revocation.

A key is ``ciclo_<scope>_<40 random base62 chars>``: 238 bits of entropy, so a plain SHA-256 is the
right hash (a slow password hash would only slow every request). Lookups go through a short-lived
cache so authentication costs no query per request; revocation is seen within the cache TTL.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import string
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.tenancy.tables import api_keys, workspaces

_ALPHABET = string.ascii_letters + string.digits
_KEY_RE = re.compile(r"^ciclo_(ingest|admin)_[A-Za-z0-9]{40}$")
WORKSPACE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class Scope(StrEnum):
    INGEST = "ingest"  # write key: may only post events
    ADMIN = "admin"  # may read and manage the workspace


@dataclass(frozen=True, slots=True)
class Principal:
    workspace_id: str
    scope: Scope
    key_id: str

    def allows(self, needed: Scope) -> bool:
        return self.scope is Scope.ADMIN or self.scope is needed


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: str
    workspace_id: str
    scope: Scope
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def looks_like_key(plaintext: str) -> bool:
    return bool(_KEY_RE.fullmatch(plaintext))


class WorkspaceError(ValueError):
    pass


class KeyStore:
    def __init__(self, engine: AsyncEngine, *, cache_seconds: float = 10.0) -> None:
        self._engine = engine
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        # One database lookup per key at a time: when a cached key expires under load, every
        # request in flight would otherwise query at once (a stall of seconds every TTL).
        self._lookups: dict[str, asyncio.Future[Principal | None]] = {}

    async def ensure_workspace(self, workspace_id: str, *, name: str | None = None) -> bool:
        """Create the workspace if missing; True when it was created."""
        if not WORKSPACE_RE.fullmatch(workspace_id):
            raise WorkspaceError(
                "workspace id must be 1-64 chars of a-z, 0-9, '_' or '-', starting alphanumeric"
            )
        async with self._engine.begin() as conn:
            found = await conn.execute(
                select(workspaces.c.id).where(workspaces.c.id == workspace_id)
            )
            if found.first() is not None:
                return False
            await conn.execute(
                insert(workspaces).values(
                    id=workspace_id, name=name or workspace_id, created_at=datetime.now(UTC)
                )
            )
            return True

    async def workspace_count(self) -> int:
        async with self._engine.connect() as conn:
            return len((await conn.execute(select(workspaces.c.id))).all())

    async def create_key(self, workspace_id: str, scope: Scope) -> tuple[KeyInfo, str]:
        """Create a key; the plaintext is returned once and never stored."""
        plaintext = f"ciclo_{scope.value}_" + "".join(secrets.choice(_ALPHABET) for _ in range(40))
        info = KeyInfo(
            id="key_" + secrets.token_hex(8),
            workspace_id=workspace_id,
            scope=scope,
            prefix=plaintext[: len(f"ciclo_{scope.value}_") + 4],
            created_at=datetime.now(UTC),
            revoked_at=None,
        )
        async with self._engine.begin() as conn:
            ws = await conn.execute(select(workspaces.c.id).where(workspaces.c.id == workspace_id))
            if ws.first() is None:
                raise WorkspaceError(f"workspace {workspace_id!r} does not exist")
            await conn.execute(
                insert(api_keys).values(
                    id=info.id,
                    workspace_id=workspace_id,
                    scope=scope.value,
                    prefix=info.prefix,
                    hash=hash_key(plaintext),
                    created_at=info.created_at,
                )
            )
        return info, plaintext

    async def list_keys(self, workspace_id: str) -> list[KeyInfo]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(api_keys)
                .where(api_keys.c.workspace_id == workspace_id)
                .order_by(api_keys.c.created_at)
            )
            return [
                KeyInfo(
                    id=r.id,
                    workspace_id=r.workspace_id,
                    scope=Scope(r.scope),
                    prefix=r.prefix,
                    created_at=r.created_at,
                    revoked_at=r.revoked_at,
                )
                for r in rows
            ]

    async def revoke(self, key_id: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
        self._cache.clear()
        return bool(result.rowcount)

    async def authenticate(self, plaintext: str) -> Principal | None:
        if not looks_like_key(plaintext):
            return None
        digest = hash_key(plaintext)
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        lookup = self._lookups.get(digest)
        if lookup is None:
            # A task of its own: a request that is cancelled (client gone) must not cancel the
            # lookup the other requests wait for.
            lookup = asyncio.ensure_future(self._lookup(digest))
            self._lookups[digest] = lookup
            lookup.add_done_callback(lambda _: self._lookups.pop(digest, None))
        return await asyncio.shield(lookup)

    async def _lookup(self, digest: str) -> Principal | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(api_keys.c.id, api_keys.c.workspace_id, api_keys.c.scope).where(
                        api_keys.c.hash == digest, api_keys.c.revoked_at.is_(None)
                    )
                )
            ).first()
        principal = Principal(row.workspace_id, Scope(row.scope), row.id) if row else None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (time.monotonic() + self._cache_seconds, principal)
        return principal
