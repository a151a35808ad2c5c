"""Identities and their credentials: API keys and bearer tokens, hashed with argon2.

A credential reads ``wlk_<id>_<secret>`` (API key) or ``wlt_<id>_<secret>`` (a token of
the OAuth2 password flow): the id finds the row, the secret is checked against its argon2
hash. argon2 is slow on purpose (tens of ms), so a verified credential is remembered for
``CACHE_SECONDS`` under its SHA-256; revoking one clears it here at once, and other hub
processes forget it within ``CACHE_SECONDS``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import secrets
import time
from collections.abc import Iterable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from psycopg import AsyncConnection

from warelink.hub.access import Principal, Role

CACHE_SECONDS = 30.0
TOKEN_TTL = dt.timedelta(hours=8)
PREFIXES = {"api_key": "wlk", "token": "wlt"}


class AuthError(Exception):
    """Bad credentials; the message says why, without revealing which part was wrong."""


def split(presented: str) -> tuple[str, str, str] | None:
    """(kind, id, secret) of a presented credential, or None if it is not one of ours."""
    prefix, _, rest = presented.partition("_")
    cred_id, _, secret = rest.partition("_")
    kinds = {v: k for k, v in PREFIXES.items()}
    if prefix not in kinds or not cred_id or not secret:
        return None
    return kinds[prefix], cred_id, secret


class Authenticator:
    """Checks credentials, with a short cache of verified ones (per hub process)."""

    def __init__(self) -> None:
        self.hasher = PasswordHasher()
        self._cache: dict[bytes, tuple[Principal, float]] = {}

    async def hash(self, secret: str) -> str:
        return await asyncio.to_thread(self.hasher.hash, secret)

    async def verify(self, hashed: str, secret: str) -> bool:
        try:
            return await asyncio.to_thread(self.hasher.verify, hashed, secret)
        except (VerificationError, InvalidHashError):
            return False

    def forget(self, credential_id: str | None = None) -> None:
        """Drop cached verifications (of one credential, or all)."""
        if credential_id is None:
            self._cache.clear()
            return
        for digest, (principal, _) in list(self._cache.items()):
            if principal.credential == credential_id:
                del self._cache[digest]

    def forget_identity(self, identity: str) -> None:
        """Drop cached verifications of an identity whose roles, sites or state changed."""
        for digest, (principal, _) in list(self._cache.items()):
            if principal.id == identity:
                del self._cache[digest]

    async def authenticate(self, presented: str, *, conn: AsyncConnection) -> Principal:
        digest = hashlib.sha256(presented.encode()).digest()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        parts = split(presented)
        if parts is None:
            raise AuthError("not a warelink credential (expected wlk_… or wlt_…)")
        kind, cred_id, secret = parts
        cur = await conn.execute(
            "SELECT c.secret_hash, c.expires_at < now(), c.revoked_at IS NOT NULL, i.id, i.kind,"
            " i.roles, i.sites, i.active FROM credentials c JOIN identities i"
            " ON i.id = c.identity WHERE c.id = %s AND c.kind = %s",
            (cred_id, kind),
        )
        row = await cur.fetchone()
        if row is None or not await self.verify(row[0], secret):
            raise AuthError("unknown or wrong credential")
        _, expired, revoked, identity, identity_kind, roles, sites, active = row
        if expired or revoked or not active:
            why = "expired" if expired else "revoked" if revoked else "identity disabled"
            raise AuthError(f"credential {why}")
        principal = Principal(
            id=identity,
            kind=identity_kind,
            roles=frozenset(Role(r) for r in roles),
            sites=None if sites is None else frozenset(sites),
            credential=cred_id,
        )
        self._cache[digest] = (principal, time.monotonic() + CACHE_SECONDS)
        return principal


async def create_identity(
    identity: str,
    *,
    kind: str,
    roles: Iterable[Role],
    sites: Iterable[str] | None,
    created_by: str,
    password_hash: str | None = None,
    display_name: str = "",
    conn: AsyncConnection,
) -> None:
    await conn.execute(
        "INSERT INTO identities (id, kind, display_name, roles, sites, password_hash,"
        " created_by) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (identity, kind, display_name, sorted(r.value for r in roles),
         None if sites is None else sorted(sites), password_hash, created_by),
    )  # fmt: skip


async def create_credential(
    identity: str,
    *,
    kind: str,
    authenticator: Authenticator,
    created_by: str,
    name: str = "",
    expires_at: dt.datetime | None = None,
    secret: str | None = None,
    cred_id: str | None = None,
    conn: AsyncConnection,
) -> str:
    """A new credential for the identity; returns it in full (the only time it is seen)."""
    cred_id = cred_id or secrets.token_hex(6)
    secret = secret or secrets.token_urlsafe(24)
    await conn.execute(
        "INSERT INTO credentials (id, identity, kind, name, secret_hash, created_by, expires_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (cred_id, identity, kind, name, await authenticator.hash(secret), created_by,
         expires_at),
    )  # fmt: skip
    return f"{PREFIXES[kind]}_{cred_id}_{secret}"


async def login(
    username: str, password: str, *, authenticator: Authenticator, conn: AsyncConnection
) -> tuple[str, dt.datetime]:
    """The OAuth2 password flow: a bearer token for a user's name and password."""
    cur = await conn.execute(
        "SELECT password_hash, active FROM identities WHERE id = %s AND kind = 'user'",
        (username,),
    )
    row = await cur.fetchone()
    if row is None or row[0] is None or not await authenticator.verify(row[0], password):
        raise AuthError("wrong user name or password")
    if not row[1]:
        raise AuthError("identity disabled")
    expires = dt.datetime.now(dt.UTC) + TOKEN_TTL
    token = await create_credential(
        username, kind="token", authenticator=authenticator, created_by=username,
        name="password login", expires_at=expires, conn=conn,
    )  # fmt: skip
    return token, expires


BOOTSTRAP_IDENTITY = "bootstrap-admin"


async def ensure_bootstrap(
    key: str, *, authenticator: Authenticator, conn: AsyncConnection
) -> None:
    """Make the configured bootstrap API key work: an admin service identity for setup.

    For first start (create the real users with it, then unset it) and for the demo and
    tests. Idempotent: a key already stored is left as it is.
    """
    parts = split(key)
    if parts is None or parts[0] != "api_key":
        raise ValueError("WARELINK_BOOTSTRAP_API_KEY must look like wlk_<id>_<secret>")
    _, cred_id, secret = parts
    await conn.execute(
        "INSERT INTO identities (id, kind, display_name, roles, created_by)"
        " VALUES (%s, 'service', 'bootstrap admin', '{admin}', 'hub') ON CONFLICT DO NOTHING",
        (BOOTSTRAP_IDENTITY,),
    )
    cur = await conn.execute("SELECT 1 FROM credentials WHERE id = %s", (cred_id,))
    if await cur.fetchone() is None:
        await create_credential(
            BOOTSTRAP_IDENTITY, kind="api_key", authenticator=authenticator, created_by="hub",
            name="bootstrap", secret=secret, cred_id=cred_id, conn=conn,
        )  # fmt: skip
