"""What routes depend on: the hub, a database connection, and an authorised principal.

``Allow(Permission.X)`` is the one way a route states who may call it: it answers 401
without valid credentials, 403 without the permission, and 403 when the route's
``{site}`` is outside the principal's sites. ``Idempotent`` runs a write in one
transaction and remembers its answer under the caller's ``Idempotency-Key``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from fastapi import Depends, Header, HTTPException, Request
from fastapi.responses import Response
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from pydantic import AfterValidator, BeforeValidator

from warelink.hub.access import Permission, Principal
from warelink.hub.auth import AuthError

if TYPE_CHECKING:
    from warelink.hub.app import Hub


def get_hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


HubDep = Annotated["Hub", Depends(get_hub)]


async def get_conn(request: Request) -> AsyncIterator[AsyncConnection]:
    async with get_hub(request).pool.connection() as conn:
        yield conn


Conn = Annotated[AsyncConnection, Depends(get_conn)]

bearer = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)
api_key = APIKeyHeader(name="X-API-Key", auto_error=False)


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


async def current_principal(
    request: Request,
    token: Annotated[str | None, Depends(bearer)],
    key: Annotated[str | None, Depends(api_key)],
) -> Principal:
    presented = token or key
    if not presented:
        raise _unauthorized("credentials required: Authorization: Bearer … or X-API-Key")
    hub = get_hub(request)
    try:
        async with hub.pool.connection() as conn:
            return await hub.authenticator.authenticate(presented, conn=conn)
    except AuthError as exc:
        raise _unauthorized(str(exc)) from None


Authenticated = Annotated[Principal, Depends(current_principal)]
"""Any valid credential, no permission: only for routes about the caller (``/auth/me``)."""


def allowed(permission: Permission) -> Callable[..., Awaitable[Principal]]:
    async def check(
        request: Request, principal: Annotated[Principal, Depends(current_principal)]
    ) -> Principal:
        if not principal.allows(permission):
            roles = ", ".join(sorted(principal.roles)) or "none"
            raise HTTPException(403, f"{permission.value!r} is not allowed for roles: {roles}")
        site = request.path_params.get("site")
        if site is not None and not principal.covers(site):
            raise HTTPException(403, f"no access to site {site!r}")
        return principal

    check.permission = permission  # type: ignore[attr-defined]  # read by the role-matrix test
    return check


def Allow(permission: Permission) -> Any:
    """``who: Annotated[Principal, Allow(Permission.RECEIVE)]``: the principal, checked."""
    return Depends(allowed(permission))


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="Retry-safe writes: the same key returns the stored answer; the same key"
        " with a different body is refused (422).",
    ),
]


def _iso_8601(value: object) -> object:
    if isinstance(value, str) and not _ISO_DATE.match(value):
        raise ValueError("expected ISO 8601, e.g. 2026-11-25 or 2026-11-25T08:00:00Z")
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
IsoDatetime = Annotated[dt.datetime, BeforeValidator(_iso_8601), AfterValidator(_utc)]
"""A date-time query parameter in ISO 8601 (pydantic alone would also take ``0`` as a Unix
time); one without an offset is UTC."""
IsoDate = Annotated[dt.date, BeforeValidator(_iso_8601)]
"""A day query parameter in ISO 8601 (``2026-11-25``), not a number."""


def fingerprint(payload: Any) -> str:
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


class Idempotent:
    """One write, in one transaction, answered once per Idempotency-Key.

    ``async with Idempotent(conn, who, key, payload) as write:`` then either return
    ``write.stored`` (a retry) or do the work and ``return write.answer(status, data)``.
    """

    def __init__(
        self, conn: AsyncConnection, who: Principal, key: str | None, payload: Any
    ) -> None:
        self.conn, self.who, self.key = conn, who, key
        self.print = fingerprint(payload)
        self.stored: Response | None = None
        self._transaction: Any = None

    async def __aenter__(self) -> Idempotent:
        self._transaction = self.conn.transaction()
        await self._transaction.__aenter__()
        try:
            await self._look_up()
        except BaseException as exc:
            await self._transaction.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def _look_up(self) -> None:
        if self.key is not None:
            # Serialise retries of one key: the second waits, then sees the first's answer.
            await self.conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"{self.who.id}/{self.key}",),
            )
            cur = await self.conn.execute(
                "SELECT fingerprint, status, response FROM api_requests"
                " WHERE actor = %s AND key = %s",
                (self.who.id, self.key),
            )
            row = await cur.fetchone()
            if row is not None:
                if row[0] != self.print:
                    raise HTTPException(
                        422, f"Idempotency-Key {self.key!r} was used with a different body"
                    )
                self.stored = Response(
                    orjson.dumps(row[2]), status_code=row[1], media_type="application/json"
                )

    async def __aexit__(self, *exc: object) -> None:
        await self._transaction.__aexit__(*exc)

    async def answer(self, status: int, data: Any) -> Response:
        body = orjson.dumps(data)
        if self.key is not None:
            await self.conn.execute(
                "INSERT INTO api_requests (actor, key, fingerprint, status, response)"
                " VALUES (%s, %s, %s, %s, %s)",
                (self.who.id, self.key, self.print, status, Jsonb(orjson.loads(body))),
            )
        return Response(body, status_code=status, media_type="application/json")
