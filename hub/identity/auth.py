"""Identities and their credentials: API keys and bearer tokens, hashed with argon2.

A credential reads ``wlk_<id>_<secret>`` (API key) or ``wlt_<id>_<secret>`` (a token of
the OAuth2 password flow): the id finds the row, the secret is checked against its argon2
hash. The row is read on every request, so revoking a credential, disabling an identity
or changing its roles takes effect at once in every hub process. argon2 is slow on
purpose (~0.1 s, a core and 64 MiB), so what costs it is bounded: a malformed credential
or an unknown id never reaches it; a credential that matched a hash once is remembered
(its SHA-256 with that hash) and is not checked again; at most ``concurrency`` checks run
at once; and the callers throttle failures per client address and per account
(``Throttle``) so that a guesser waits, not everyone else.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import math
import re
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable

import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from warelink.hub.access import Principal, Role
from warelink.hub.stock import audit

log = structlog.get_logger(__name__)

TOKEN_TTL = dt.timedelta(hours=8)
PREFIXES = {"api_key": "wlk", "token": "wlt"}
_CREDENTIAL = re.compile(r"(wlk|wlt)_([A-Za-z0-9.-]{1,64})_([!-~]{1,256})")


def _always() -> bool:
    return True


class AuthError(Exception):
    """Bad credentials; the message says why, without revealing which part was wrong."""


class WrongCredential(AuthError):
    """An unknown credential id, a wrong secret or password: what a guess looks like."""


class MustWait(AuthError):
    """The credential would need an argon2 check, and its client has failed too often."""


def split(presented: str) -> tuple[str, str, str] | None:
    """(kind, id, secret) of a presented credential, or None if it is not one of ours."""
    match = _CREDENTIAL.fullmatch(presented)
    if match is None:
        return None
    kinds = {v: k for k, v in PREFIXES.items()}
    return kinds[match[1]], match[2], match[3]


class Throttle:
    """Failures per key (an account, a client address) in a sliding window.

    In this process's memory: the last ``limit`` failure times of each key, keys in order
    of their last failure, those whose failures all left the window dropped as new ones
    come, and never more than ``max_keys`` (the oldest go first). With several hub
    processes a client gets ``limit`` failures at each.
    """

    def __init__(self, limit: int, window: float, *, max_keys: int = 100_000) -> None:
        self.limit, self.window, self.max_keys = limit, window, max_keys
        self._failures: OrderedDict[Hashable, deque[float]] = OrderedDict()

    def retry_after(self, key: Hashable) -> int:
        """Whole seconds until ``key`` may try again; 0: now."""
        times = self._failures.get(key)
        if times is None or len(times) < self.limit:
            return 0
        wait = times[0] + self.window - time.monotonic()
        return max(1, math.ceil(wait)) if wait > 0 else 0

    def fail(self, key: Hashable) -> bool:
        """Count a failure; True if the key must now wait."""
        now = time.monotonic()
        times = self._failures.pop(key, None) or deque(maxlen=self.limit)
        times.append(now)
        self._failures[key] = times
        while self._failures:
            oldest = next(iter(self._failures.values()))
            if len(self._failures) <= self.max_keys and oldest[-1] > now - self.window:
                break
            self._failures.popitem(last=False)
        return len(times) == self.limit and times[0] > now - self.window

    def clear(self, key: Hashable) -> None:
        self._failures.pop(key, None)


class Authenticator:
    """Checks credentials and passwords, and bounds what argon2 may cost (per process)."""

    def __init__(self, *, concurrency: int = 2, remembered: int = 10_000) -> None:
        self.hasher = PasswordHasher()
        self.verifications = 0  # argon2 checks run, for tests and the curious
        self._slots = asyncio.Semaphore(concurrency)
        self._matched: OrderedDict[bytes, str] = OrderedDict()  # SHA-256 → the hash it matched
        self._remembered = remembered
        self._dummy: str | None = None

    async def hash(self, secret: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self.hasher.hash, secret)

    async def dummy_hash(self) -> str:
        """A hash no secret matches, made once: what an unknown user is checked against."""
        if self._dummy is None:
            self._dummy = await self.hash(secrets.token_urlsafe(32))
        return self._dummy

    async def verify(
        self, hashed: str | None, secret: str, *, allowed: Callable[[], bool] = _always
    ) -> bool:
        """Whether the secret matches; ``None`` (no such user, no password) costs the same
        as a real hash and is False, so the time of an answer does not tell who exists.

        ``allowed`` is asked again once a slot is free: a client's checks that queued up
        before its failures reached the limit are refused (MustWait), not run.
        """
        against = hashed if hashed is not None else await self.dummy_hash()
        async with self._slots:
            if not allowed():
                raise MustWait("too many failed attempts")
            self.verifications += 1
            try:
                matched = await asyncio.to_thread(self.hasher.verify, against, secret)
            except (VerificationError, InvalidHashError):
                return False
        return matched and hashed is not None

    async def authenticate(
        self, presented: str, *, pool: AsyncConnectionPool, allowed: Callable[[], bool] = _always
    ) -> Principal:
        """The principal of a credential, or an AuthError that says why not.

        When ``allowed()`` is False (its client failed too often) only a credential that
        matched before passes; any other raises MustWait, before the database or argon2
        is reached. No database connection is held while argon2 runs (or waits to).
        """
        parts = split(presented)
        if parts is None:
            raise AuthError("not a warelink credential (expected wlk_… or wlt_…)")
        kind, cred_id, secret = parts
        digest = hashlib.sha256(presented.encode()).digest()
        if digest not in self._matched and not allowed():
            raise MustWait("too many failed attempts")
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT c.secret_hash, c.expires_at < now(), c.revoked_at IS NOT NULL, i.id,"
                " i.kind, i.roles, i.sites, i.active FROM credentials c JOIN identities i"
                " ON i.id = c.identity WHERE c.id = %s AND c.kind = %s",
                (cred_id, kind),
            )
            row = await cur.fetchone()
        if row is not None and self._matched.get(digest) == row[0]:
            self._matched.move_to_end(digest)
        elif row is None or not await self.verify(row[0], secret, allowed=allowed):
            raise WrongCredential("unknown or wrong credential")
        else:
            self._matched[digest] = row[0]
            if len(self._matched) > self._remembered:
                self._matched.popitem(last=False)
        _, expired, revoked, identity, identity_kind, roles, sites, active = row
        if expired or revoked or not active:
            why = "expired" if expired else "revoked" if revoked else "identity disabled"
            raise AuthError(f"credential {why}")
        return Principal(
            id=identity,
            kind=identity_kind,
            roles=frozenset(Role(r) for r in roles),
            sites=None if sites is None else frozenset(sites),
            credential=cred_id,
        )


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
    bootstrap: bool = False,
    conn: AsyncConnection,
) -> str:
    """A new credential for the identity; returns it in full (the only time it is seen)."""
    cred_id = cred_id or secrets.token_hex(6)
    secret = secret or secrets.token_urlsafe(24)
    await conn.execute(
        "INSERT INTO credentials (id, identity, kind, name, secret_hash, created_by, expires_at,"
        " bootstrap) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (cred_id, identity, kind, name, await authenticator.hash(secret), created_by,
         expires_at, bootstrap),
    )  # fmt: skip
    return f"{PREFIXES[kind]}_{cred_id}_{secret}"


async def check_password(
    username: str,
    password: str,
    *,
    authenticator: Authenticator,
    pool: AsyncConnectionPool,
    allowed: Callable[[], bool] = _always,
) -> None:
    """The OAuth2 password flow's check: AuthError unless the user exists, is active and
    the password is theirs. An unknown user costs one argon2 check as a known one does
    (against a dummy hash); no database connection is held while it runs."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT password_hash, active FROM identities WHERE id = %s AND kind = 'user'",
            (username,),
        )
        row = await cur.fetchone()
    if not await authenticator.verify(None if row is None else row[0], password, allowed=allowed):
        raise WrongCredential("wrong user name or password")
    if row is None or not row[1]:
        raise AuthError("identity disabled")


async def issue_token(
    username: str, *, authenticator: Authenticator, conn: AsyncConnection
) -> tuple[str, dt.datetime]:
    """A bearer token for a user whose password was checked, and when it expires."""
    expires = dt.datetime.now(dt.UTC) + TOKEN_TTL
    token = await create_credential(
        username, kind="token", authenticator=authenticator, created_by=username,
        name="password login", expires_at=expires, conn=conn,
    )  # fmt: skip
    return token, expires


BOOTSTRAP_IDENTITY = "bootstrap-admin"


async def ensure_bootstrap(
    key: str | None, *, authenticator: Authenticator, conn: AsyncConnection
) -> list[str]:
    """Make the configured bootstrap API key work, and no other: returns the ids revoked.

    The key (``WARELINK_BOOTSTRAP_API_KEY``) makes an admin service identity for the first
    setup, the demo and tests. It is stored once, marked as the bootstrap key; a start
    without the variable, or with another key in it, revokes the key stored before (with
    an audit row), so unsetting the variable and restarting is how it is retired. A key
    once revoked stays revoked, even if the variable names it again.
    """
    keep = None
    if key:
        parts = split(key)
        if parts is None or parts[0] != "api_key":
            raise ValueError("WARELINK_BOOTSTRAP_API_KEY must look like wlk_<id>_<secret>")
        _, keep, secret = parts
        await conn.execute(
            "INSERT INTO identities (id, kind, display_name, roles, created_by) VALUES"
            " (%s, 'service', 'bootstrap admin', '{admin}', 'hub') ON CONFLICT DO NOTHING",
            (BOOTSTRAP_IDENTITY,),
        )
        cur = await conn.execute("SELECT revoked_at FROM credentials WHERE id = %s", (keep,))
        stored = await cur.fetchone()
        if stored is None:
            await create_credential(
                BOOTSTRAP_IDENTITY, kind="api_key", authenticator=authenticator,
                created_by="hub", name="bootstrap", secret=secret, cred_id=keep,
                bootstrap=True, conn=conn,
            )  # fmt: skip
        elif stored[0] is not None:
            log.warning("bootstrap.key_revoked", key=keep, revoked_at=str(stored[0]))
    cur = await conn.execute(
        "UPDATE credentials SET revoked_at = now() WHERE bootstrap AND revoked_at IS NULL"
        " AND id IS DISTINCT FROM %s RETURNING identity, id",
        (keep,),
    )
    revoked = await cur.fetchall()
    reason = "another bootstrap key is configured" if key else "WARELINK_BOOTSTRAP_API_KEY unset"
    for identity, cred_id in revoked:
        await audit.record(
            "hub", "key.revoke", subject=f"{identity}/{cred_id}", detail={"reason": reason},
            conn=conn,
        )  # fmt: skip
        log.info("bootstrap.key_revoked_at_start", key=cred_id, reason=reason)
    return [cred_id for _, cred_id in revoked]
