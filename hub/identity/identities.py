"""Managing identities and their API keys: who may act, where, and with which secret.

An administrator scoped to some sites manages only identities inside those sites, and can
grant no more than they cover: site isolation holds for administration too. Every write
records one audit row (never a secret) in the caller's transaction.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from warelink.hub.access import Permission, Principal, Role
from warelink.hub.errors import Conflict, Forbidden, Invalid, NotFound
from warelink.hub.identity import auth
from warelink.hub.stock import audit

IDENTITY_PATTERN = r"^[a-z0-9][a-z0-9._@-]{0,63}$"  # as the identities table checks
MIN_PASSWORD = 12
MAX_PASSWORD = 256

IDENTITY_COLUMNS = (
    "id, kind, display_name, roles, sites, active, created_by, created_at,"
    " password_hash IS NOT NULL AS has_password"
)
KEY_COLUMNS = "id, identity, name, created_by, created_at, expires_at, revoked_at"


def check_password(identity: str, password: str) -> None:
    """The password policy: long enough to resist guessing, and not the user's name."""
    if len(password) < MIN_PASSWORD:
        raise Invalid(f"the password must have at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise Invalid(f"the password must have at most {MAX_PASSWORD} characters")
    if identity.lower() in password.lower():
        raise Invalid("the password must not contain the user name")


def visible(who: Principal, sites: Iterable[str] | None) -> bool:
    """Whether a (site-scoped) administrator may see and manage an identity of these sites."""
    if who.sites is None:
        return True
    return sites is not None and set(sites) <= who.sites


def audit_site(sites: list[str] | None) -> str | None:
    """An identity of one site is audited under that site, so its own staff can review it."""
    return sites[0] if sites is not None and len(sites) == 1 else None


async def _check_grant(
    who: Principal, kind: str, roles: set[Role], sites: list[str] | None, *, conn: AsyncConnection
) -> None:
    if Role.GATEWAY in roles and (kind != "service" or sites is None or len(sites) != 1):
        raise Invalid("the gateway role is for service identities of exactly one site")
    if not visible(who, sites):
        covered = ", ".join(sorted(who.sites or ()))
        raise Forbidden(f"you may grant only sites you cover ({covered}), not every site")
    if sites:
        cur = await conn.execute(
            "SELECT array_agg(s) FROM unnest(%s::text[]) s"
            " WHERE NOT EXISTS (SELECT 1 FROM sites WHERE id = s)",
            (sites,),
        )
        row = await cur.fetchone()
        if row is not None and row[0]:
            raise Invalid(f"unknown sites: {', '.join(sorted(row[0]))}")


async def create(
    identity: str,
    *,
    kind: str,
    roles: Iterable[Role],
    sites: Iterable[str] | None,
    display_name: str,
    password: str | None,
    authenticator: auth.Authenticator,
    who: Principal,
    conn: AsyncConnection,
) -> dict[str, Any]:
    """A new user (with a password) or service identity (which then gets API keys)."""
    if not re.fullmatch(IDENTITY_PATTERN, identity):
        raise Invalid(f"{identity!r} is not an identity id: lower case a-z 0-9 . _ @ -, 1-64")
    roles, sites = set(roles), None if sites is None else sorted(set(sites))
    await _check_grant(who, kind, roles, sites, conn=conn)
    if password is not None:
        check_password(identity, password)
    cur = await conn.execute("SELECT 1 FROM identities WHERE id = %s", (identity,))
    if await cur.fetchone() is not None:
        raise Conflict(f"identity {identity!r} exists already")
    hashed = None if password is None else await authenticator.hash(password)
    await auth.create_identity(
        identity, kind=kind, roles=roles, sites=sites, created_by=who.actor,
        password_hash=hashed, display_name=display_name, conn=conn,
    )  # fmt: skip
    row = await get(identity, who=who, conn=conn)
    detail = {k: row[k] for k in ("kind", "roles", "sites", "display_name")}
    await audit.record(
        who.actor, "identity.create", site=audit_site(sites), subject=identity,
        detail=detail, conn=conn,
    )  # fmt: skip
    return row


async def get(identity: str, *, who: Principal, conn: AsyncConnection) -> dict[str, Any]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {IDENTITY_COLUMNS} FROM identities WHERE id = %s", (identity,))
        row = await cur.fetchone()
    if row is None or not visible(who, row["sites"]):
        raise NotFound(f"no identity {identity!r}")
    return row


async def list_all(
    *, who: Principal, kind: str | None, active: bool | None, conn: AsyncConnection
) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {IDENTITY_COLUMNS} FROM identities"
            " WHERE (%(kind)s::text IS NULL OR kind = %(kind)s)"
            " AND (%(active)s::boolean IS NULL OR active = %(active)s) ORDER BY id",
            {"kind": kind, "active": active},
        )
        rows = await cur.fetchall()
    return [row for row in rows if visible(who, row["sites"])]


async def _lock(identity: str, *, who: Principal, conn: AsyncConnection) -> dict[str, Any]:
    await conn.execute("SELECT 1 FROM identities WHERE id = %s FOR UPDATE", (identity,))
    return await get(identity, who=who, conn=conn)


async def update(
    identity: str,
    changes: dict[str, Any],
    *,
    who: Principal,
    conn: AsyncConnection,
) -> dict[str, Any]:
    """Change display name, roles, sites or active; takes effect at once (every request
    reads them)."""
    row = await _lock(identity, who=who, conn=conn)
    roles = {Role(r) for r in changes.get("roles", row["roles"])}
    sites = row["sites"] if "sites" not in changes else changes["sites"]
    sites = None if sites is None else sorted(set(sites))
    if "roles" in changes or "sites" in changes:
        await _check_grant(who, row["kind"], roles, sites, conn=conn)
    after = Principal(id=identity, kind=row["kind"], roles=frozenset(roles), sites=None)
    if identity == who.id and (
        changes.get("active") is False or not after.allows(Permission.IDENTITIES_ADMIN)
    ):
        raise Conflict("you cannot disable yourself or drop your own identities.admin")
    await conn.execute(
        "UPDATE identities SET display_name = %s, roles = %s, sites = %s, active = %s"
        " WHERE id = %s",
        (changes.get("display_name", row["display_name"]), sorted(r.value for r in roles), sites,
         changes.get("active", row["active"]), identity),
    )  # fmt: skip
    changed = await get(identity, who=who, conn=conn)
    await audit.record(
        who.actor, "identity.update", site=audit_site(changed["sites"]), subject=identity,
        detail={k: changed[k] for k in changes}, conn=conn,
    )  # fmt: skip
    return changed


async def set_password(
    identity: str,
    password: str,
    *,
    keep_credential: str = "",
    action: str,
    authenticator: auth.Authenticator,
    who: Principal,
    conn: AsyncConnection,
) -> dict[str, Any]:
    """A new password; the user's login tokens are revoked (except ``keep_credential``)."""
    row = await _lock(identity, who=who, conn=conn)
    if row["kind"] != "user":
        raise Invalid(f"{identity!r} is a service identity: it has API keys, not a password")
    check_password(identity, password)
    await conn.execute(
        "UPDATE identities SET password_hash = %s WHERE id = %s",
        (await authenticator.hash(password), identity),
    )
    cur = await conn.execute(
        "UPDATE credentials SET revoked_at = now() WHERE identity = %s AND kind = 'token'"
        " AND revoked_at IS NULL AND id <> %s RETURNING id",
        (identity, keep_credential),
    )
    revoked = [r[0] for r in await cur.fetchall()]
    await audit.record(
        who.actor, action, site=audit_site(row["sites"]), subject=identity,
        detail={"tokens_revoked": len(revoked)}, conn=conn,
    )  # fmt: skip
    return await get(identity, who=who, conn=conn)


async def change_own_password(
    current: str,
    new: str,
    *,
    authenticator: auth.Authenticator,
    who: Principal,
    conn: AsyncConnection,
) -> dict[str, Any]:
    """A user changes their own password, proving the current one; this session stays."""
    cur = await conn.execute(
        "SELECT password_hash FROM identities WHERE id = %s AND kind = 'user'", (who.id,)
    )
    row = await cur.fetchone()
    if row is None or row[0] is None:
        raise Invalid("only users have a password; service identities use API keys")
    if not await authenticator.verify(row[0], current):
        raise Invalid("the current password is wrong")
    itself = Principal(id=who.id, kind=who.kind, roles=who.roles, sites=None)
    return await set_password(
        who.id, new, keep_credential=who.credential, action="identity.password.own",
        authenticator=authenticator, who=itself, conn=conn,
    )  # fmt: skip


async def create_key(
    identity: str,
    *,
    name: str,
    expires_at: dt.datetime | None,
    authenticator: auth.Authenticator,
    who: Principal,
    conn: AsyncConnection,
) -> dict[str, Any]:
    """A new API key; the returned ``key`` is the only time the secret is seen."""
    row = await _lock(identity, who=who, conn=conn)
    if expires_at is not None and expires_at <= dt.datetime.now(dt.UTC):
        raise Invalid("expires_at must be in the future")
    key = await auth.create_credential(
        identity, kind="api_key", authenticator=authenticator, created_by=who.actor,
        name=name, expires_at=expires_at, conn=conn,
    )  # fmt: skip
    _, key_id, _ = auth.split(key) or ("", "", "")
    info = await get_key(identity, key_id, who=who, conn=conn)
    await audit.record(
        who.actor, "key.create", site=audit_site(row["sites"]), subject=f"{identity}/{key_id}",
        detail={"name": name, "expires_at": None if expires_at is None else str(expires_at)},
        conn=conn,
    )  # fmt: skip
    return {**info, "key": key}


async def get_key(
    identity: str, key_id: str, *, who: Principal, conn: AsyncConnection
) -> dict[str, Any]:
    await get(identity, who=who, conn=conn)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {KEY_COLUMNS} FROM credentials"
            " WHERE identity = %s AND id = %s AND kind = 'api_key'",
            (identity, key_id),
        )
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no API key {key_id!r} of {identity!r}")
    return row


async def list_keys(
    identity: str, *, who: Principal, conn: AsyncConnection
) -> list[dict[str, Any]]:
    await get(identity, who=who, conn=conn)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {KEY_COLUMNS} FROM credentials WHERE identity = %s AND kind = 'api_key'"
            " ORDER BY created_at, id",
            (identity,),
        )
        return await cur.fetchall()


async def revoke_key(
    identity: str,
    key_id: str,
    *,
    who: Principal,
    conn: AsyncConnection,
) -> dict[str, Any]:
    """Revoke: refused at once by every hub process (each request reads the key's row)."""
    row = await _lock(identity, who=who, conn=conn)
    key = await get_key(identity, key_id, who=who, conn=conn)
    if key["revoked_at"] is not None:
        raise Conflict(f"API key {key_id!r} was revoked at {key['revoked_at']:%Y-%m-%d %H:%M:%S}")
    await conn.execute("UPDATE credentials SET revoked_at = now() WHERE id = %s", (key_id,))
    await audit.record(
        who.actor, "key.revoke", site=audit_site(row["sites"]), subject=f"{identity}/{key_id}",
        conn=conn,
    )  # fmt: skip
    return await get_key(identity, key_id, who=who, conn=conn)
