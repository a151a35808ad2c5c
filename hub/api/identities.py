"""REST routes: logging in, who am I, identities and their API keys, the audit log.

Secrets travel only in the answer that creates them (a token, a new API key) and are never
stored in clear: not in the database, not in the audit log, not in the idempotency store.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import AwareDatetime, BaseModel, Field, StringConstraints

from warelink.hub.access import ROLE_PERMISSIONS, Permission, Principal, Role
from warelink.hub.api.deps import (
    Allow,
    Authenticated,
    Conn,
    HubDep,
    Idempotent,
    Write,
    client_address,
    json_response,
    too_many,
)
from warelink.hub.api.fields import (
    ApiKeyPath,
    FilterQuery,
    IdempotencyKey,
    IdentityId,
    IdentityPath,
    IsoDatetime,
    Limit,
    Name,
    SiteId,
    SiteQuery,
)
from warelink.hub.api.problems import errors
from warelink.hub.identity import audit_search, auth, identities
from warelink.hub.stock import audit
from warelink.protocol import limits

if TYPE_CHECKING:
    from warelink.hub.api.state import Hub

router = APIRouter(tags=["identities"])

Password = Annotated[
    str,
    StringConstraints(min_length=identities.MIN_PASSWORD, max_length=identities.MAX_PASSWORD),
]
Roles = Annotated[list[Role], Field(min_length=1, max_length=len(Role))]
Sites = Annotated[
    list[SiteId] | None,
    Field(max_length=200, description="The sites this identity may act on; null: every site."),
]


class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"]
    expires_in: int = Field(description="seconds until the token expires")


class Me(BaseModel):
    id: str
    kind: Literal["user", "service"]
    roles: list[Role]
    sites: list[str] | None = Field(description="null: every site")
    permissions: list[Permission]


class IdentityInfo(BaseModel):
    id: str
    kind: Literal["user", "service"]
    display_name: str
    roles: list[Role]
    sites: list[str] | None = Field(description="null: every site")
    active: bool
    has_password: bool
    created_by: str
    created_at: dt.datetime


class NewUser(BaseModel):
    id: IdentityId
    display_name: Name = ""
    roles: Roles
    sites: Sites = None
    password: Password = Field(
        description=f"at least {identities.MIN_PASSWORD} characters, not containing the id"
    )


class NewService(BaseModel):
    id: IdentityId
    display_name: Name = ""
    roles: Roles
    sites: Sites = None


class IdentityChange(BaseModel):
    """Only the fields given change; ``sites: null`` means every site."""

    display_name: Name | None = None
    roles: Roles | None = None
    sites: Sites = None
    active: bool | None = None


class PasswordReset(BaseModel):
    password: Password


class PasswordChange(BaseModel):
    current_password: Annotated[str, StringConstraints(max_length=identities.MAX_PASSWORD)]
    new_password: Password


class KeyInfo(BaseModel):
    id: str
    identity: str
    name: str
    created_by: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None


class NewKey(KeyInfo):
    key: str | None = Field(
        description="The whole key, shown this once (null on an idempotent replay: revoke"
        " the key and create another if it was lost). Send it as X-API-Key."
    )


class KeyRequest(BaseModel):
    name: Name = ""
    expires_at: AwareDatetime | None = None


class AuditEntry(BaseModel):
    id: int
    at: dt.datetime
    actor: str
    action: str
    site: str | None
    subject: str
    detail: dict[str, Any]


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next_before: int | None = Field(description="pass as ?before= for the next (older) page")


# ------------------------------------------------------------------ login


@router.post("/auth/token", response_model=Token, responses=errors(401, 422))
async def token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()], request: Request, hub: HubDep
) -> Response:
    """OAuth2 password flow: a user's name and password for a bearer token (8 hours).

    Failures are audited and counted per account and per client address: past the
    limits, 429 with Retry-After until the window has passed, without checking.
    """
    address, account = client_address(request), form.username[:100]

    def wait() -> int:
        return max(
            hub.account_failures.retry_after(account), hub.address_failures.retry_after(address)
        )

    if seconds := wait():
        raise too_many(seconds)
    try:
        await auth.check_password(
            form.username, form.password, authenticator=hub.authenticator, pool=hub.pool,
            allowed=lambda: not wait(),
        )  # fmt: skip
    except auth.MustWait:
        raise too_many(wait() or 1) from None
    except auth.AuthError as exc:
        locked = hub.account_failures.fail(account)
        locked = hub.address_failures.fail(address) or locked
        actor = "".join(c for c in account if c.isprintable())
        detail = {"address": address, "reason": str(exc), "locked": locked}
        async with hub.pool.connection() as conn, conn.transaction():
            await audit.record(actor, "auth.login.failed", detail=detail, conn=conn)
        raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None
    hub.account_failures.clear(account)
    async with hub.pool.connection() as conn, conn.transaction():
        bearer, expires = await auth.issue_token(
            form.username, authenticator=hub.authenticator, conn=conn
        )
        credential = (auth.split(bearer) or ("", "", ""))[1]
        await audit.record(form.username, "auth.login", subject=credential, conn=conn)
    seconds = int((expires - dt.datetime.now(dt.UTC)).total_seconds())
    response = json_response(
        {"access_token": bearer, "token_type": "bearer", "expires_in": seconds}
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/auth/me", response_model=Me, responses=errors(401))
async def me(who: Authenticated) -> Response:
    """Who the credentials belong to, and what they allow (any valid credential)."""
    permissions = sorted({p for role in who.roles for p in ROLE_PERMISSIONS[role]})
    return json_response({
        "id": who.id, "kind": who.kind, "roles": sorted(who.roles),
        "sites": None if who.sites is None else sorted(who.sites), "permissions": permissions,
    })  # fmt: skip


@router.post("/auth/password", response_model=IdentityInfo, responses=errors(401, 422))
async def change_own_password(
    body: PasswordChange, who: Authenticated, hub: HubDep, write: Write
) -> Response:
    """A user changes their own password; their other login tokens are revoked."""
    return await write(who, {"own_password": who.id}, lambda: identities.change_own_password(
        body.current_password, body.new_password, authenticator=hub.authenticator, who=who,
        conn=write.conn,
    ))  # fmt: skip


# ------------------------------------------------------------------ identities

Admin = Annotated[Principal, Allow(Permission.IDENTITIES_ADMIN)]


@router.get("/identities", response_model=list[IdentityInfo], responses=errors(401, 403, 422))
async def list_identities(
    who: Admin,
    conn: Conn,
    kind: Literal["user", "service"] | None = None,
    active: bool | None = None,
) -> Response:
    """Identities the caller may manage (a site-scoped admin: those within their sites)."""
    return json_response(await identities.list_all(who=who, kind=kind, active=active, conn=conn))


async def _create(
    body: NewUser | NewService, kind: str, who: Principal, hub: Hub, write: Write
) -> Response:
    password = body.password if isinstance(body, NewUser) else None
    payload = body.model_dump(mode="json", exclude={"password"})  # no secret in the store
    return await write(who, {"kind": kind, **payload}, lambda: identities.create(
        body.id, kind=kind, roles=body.roles, sites=body.sites, display_name=body.display_name,
        password=password, authenticator=hub.authenticator, who=who, conn=write.conn,
    ))  # fmt: skip


@router.post(
    "/identities/users",
    response_model=IdentityInfo,
    status_code=201,
    responses=errors(401, 403, 409, 422),
)
async def create_user(body: NewUser, who: Admin, hub: HubDep, write: Write) -> Response:
    """A person who logs in with a password (``POST /auth/token``)."""
    return await _create(body, "user", who, hub, write)


@router.post(
    "/identities/services",
    response_model=IdentityInfo,
    status_code=201,
    responses=errors(401, 403, 409, 422),
)
async def create_service(body: NewService, who: Admin, hub: HubDep, write: Write) -> Response:
    """A gateway or another system; it authenticates with API keys. A gateway: one site."""
    return await _create(body, "service", who, hub, write)


@router.get(
    "/identities/{identity}", response_model=IdentityInfo, responses=errors(401, 403, 404, 422)
)
async def get_identity(identity: IdentityPath, who: Admin, conn: Conn) -> Response:
    return json_response(await identities.get(identity, who=who, conn=conn))


@router.patch(
    "/identities/{identity}",
    response_model=IdentityInfo,
    responses=errors(401, 403, 404, 409, 422),
)
async def update_identity(
    identity: IdentityPath,
    body: IdentityChange,
    who: Admin,
    write: Write,
) -> Response:
    """Change roles, sites, display name or active; effective at once, on every hub."""
    changes = body.model_dump(mode="json", exclude_unset=True)
    for field in ("display_name", "roles", "active"):
        if field in changes and changes[field] is None:
            del changes[field]  # null there means "unchanged"; only sites has a null meaning
    return await write(who, {"identity": identity, **changes}, lambda: (
        identities.update(identity, changes, who=who, conn=write.conn)
    ))  # fmt: skip


@router.put(
    "/identities/{identity}/password",
    response_model=IdentityInfo,
    responses=errors(401, 403, 404, 422),
)
async def reset_password(
    identity: IdentityPath,
    body: PasswordReset,
    who: Admin,
    hub: HubDep,
    write: Write,
) -> Response:
    """Set a user's password (e.g. when forgotten); their login tokens are revoked."""
    return await write(who, {"password_of": identity}, lambda: identities.set_password(
        identity, body.password, action="identity.password.reset",
        authenticator=hub.authenticator, who=who, conn=write.conn,
    ))  # fmt: skip


# ------------------------------------------------------------------ API keys


@router.get(
    "/identities/{identity}/keys",
    response_model=list[KeyInfo],
    responses=errors(401, 403, 404, 422),
)
async def list_keys(identity: IdentityPath, who: Admin, conn: Conn) -> Response:
    """An identity's API keys, revoked ones included; never their secrets."""
    return json_response(await identities.list_keys(identity, who=who, conn=conn))


@router.post(
    "/identities/{identity}/keys",
    response_model=NewKey,
    status_code=201,
    responses=errors(401, 403, 404, 422),
)
async def create_key(
    identity: IdentityPath,
    body: KeyRequest,
    who: Admin,
    hub: HubDep,
    conn: Conn,
    key: IdempotencyKey = None,
) -> Response:
    """A new API key for the identity; the answer shows it once (send it as X-API-Key)."""
    payload = {"identity": identity, **body.model_dump(mode="json")}
    async with Idempotent(conn, who, key, payload) as write:
        if write.stored:
            return write.stored
        row = await identities.create_key(
            identity, name=body.name, expires_at=body.expires_at,
            authenticator=hub.authenticator, who=who, conn=conn,
        )  # fmt: skip
        secret = row.pop("key")
        await write.answer(201, {**row, "key": None})  # the stored replay holds no secret
        return json_response({**row, "key": secret}, status_code=201)


@router.delete(
    "/identities/{identity}/keys/{key_id}",
    response_model=KeyInfo,
    responses=errors(401, 403, 404, 409, 422),
)
async def revoke_key(
    identity: IdentityPath,
    key_id: ApiKeyPath,
    who: Admin,
    write: Write,
) -> Response:
    """Revoke an API key: refused at once, by every hub process."""
    return await write(who, {"revoke": f"{identity}/{key_id}"}, lambda: (
        identities.revoke_key(identity, key_id, who=who, conn=write.conn)
    ))  # fmt: skip


# ------------------------------------------------------------------ audit


@router.get("/audit", response_model=AuditPage, tags=["audit"], responses=errors(401, 403, 422))
async def audit_log(
    who: Annotated[Principal, Allow(Permission.AUDIT_READ)],
    conn: Conn,
    site: SiteQuery = None,
    actor: FilterQuery = None,
    action: FilterQuery = None,
    subject: FilterQuery = None,
    since: Annotated[IsoDatetime | None, Query(description="at or after")] = None,
    until: Annotated[IsoDatetime | None, Query(description="before")] = None,
    before: Annotated[int | None, Query(ge=1, le=limits.INT8_MAX, description="id cursor")] = None,
    limit: Limit = 100,
) -> Response:
    """Every write with its actor, newest first; site-scoped callers see their sites' rows."""
    rows = await audit_search.search(
        who=who, site=site, actor=actor, action=action, subject=subject, since=since,
        until=until, before=before, limit=limit, conn=conn,
    )  # fmt: skip
    more = len(rows) == limit
    return json_response({"items": rows, "next_before": rows[-1]["id"] if more else None})
