"""What routes depend on: the hub, a database connection, and an authorised principal.

``Allow(Permission.X)`` is the one way a route states who may call it: it answers 401
without valid credentials, 403 without the permission, and 403 when the route's
``{site}`` is outside the principal's sites; a client address whose credentials failed
too often gets 429 instead of another argon2 check. ``Write`` is how a write route runs
its work: in one transaction, answered once per ``Idempotency-Key`` (``Idempotent``
underneath). ``json_response`` is the one way a route answers with prebuilt JSON.
``storable_text`` runs before every route (an app-wide dependency).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import structlog
from fastapi import Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from pydantic import BaseModel
from starlette.requests import HTTPConnection

from warelink.hub.access import Permission, Principal
from warelink.hub.api.fields import IdempotencyKey
from warelink.hub.identity.auth import AuthError, MustWait, WrongCredential
from warelink.hub.stock.balances import quantity_text

log = structlog.get_logger(__name__)

if TYPE_CHECKING:
    from warelink.hub.api.state import Hub


def get_hub(connection: HTTPConnection) -> Hub:
    """The app's shared state, for REST routes and websockets alike."""
    hub: Hub = connection.app.state.hub
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


def too_many(seconds: int) -> HTTPException:
    return HTTPException(
        429, f"too many failed attempts: try again in {seconds} s",
        headers={"Retry-After": str(seconds)},
    )  # fmt: skip


def client_address(connection: HTTPConnection) -> str:
    """The peer's address, what failures are counted by (uvicorn takes it from
    X-Forwarded-For only from a proxy it trusts: ``--forwarded-allow-ips``)."""
    return connection.client.host if connection.client else "unknown"


async def authenticate(hub: Hub, presented: str, address: str) -> Principal:
    """The principal of a credential, else 401; 429 (before argon2) for an address that
    failed too often, unless the credential is one that matched before."""

    def allowed() -> bool:
        return not hub.address_failures.retry_after(address)

    try:
        return await hub.authenticator.authenticate(presented, pool=hub.pool, allowed=allowed)
    except MustWait:
        raise too_many(hub.address_failures.retry_after(address) or 1) from None
    except WrongCredential as exc:
        if hub.address_failures.fail(address):
            log.warning("auth.address_throttled", address=address, reason="credentials")
        raise _unauthorized(str(exc)) from None
    except AuthError as exc:
        raise _unauthorized(str(exc)) from None


def presented_credential(connection: HTTPConnection) -> str:
    """The credential a websocket presents: ``Authorization: Bearer …`` or ``X-API-Key``
    as for REST, or ``access_token`` in the query (browsers cannot set headers on a
    websocket). "" when none."""
    bearer = connection.headers.get("authorization", "")
    if bearer.lower().startswith("bearer "):
        return bearer[7:]
    return connection.headers.get("x-api-key") or connection.query_params.get("access_token", "")


async def current_principal(
    request: Request,
    token: Annotated[str | None, Depends(bearer)],
    key: Annotated[str | None, Depends(api_key)],
) -> Principal:
    presented = token or key
    if not presented:
        raise _unauthorized("credentials required: Authorization: Bearer … or X-API-Key")
    return await authenticate(get_hub(request), presented, client_address(request))


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


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _is_json(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _lone_surrogate(text: str) -> str | None:
    if text.isascii():
        return None
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        return text[exc.start]
    return None


def _unstorable(value: Any, loc: list[Any]) -> tuple[list[Any], str] | None:
    """Where in a JSON value a string holds a lone surrogate, and which."""
    if isinstance(value, str):
        found = _lone_surrogate(value)
        return None if found is None else (loc, found)
    if isinstance(value, dict):
        items: Iterable[tuple[Any, Any]] = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for name, item in items:
        key = name.encode("utf-8", "backslashreplace").decode() if isinstance(name, str) else name
        if isinstance(name, str) and (found := _lone_surrogate(name)) is not None:
            return [*loc, key], found
        if (inner := _unstorable(item, [*loc, key])) is not None:
            return inner
    return None


async def storable_text(connection: HTTPConnection) -> None:
    """Refuse text that cannot be stored, before any route runs: 422 saying where.

    JSON may spell a lone UTF-16 surrogate (``"\\udcff"``); Python decodes it into a str
    that no UTF-8 encoder (psycopg, orjson) takes, so each write route would fail its own
    way (500). Only JSON escapes can make one (form and query decoding replace bad
    bytes), so only JSON bodies that spell one are looked into.
    """
    if not isinstance(connection, Request):
        return
    if not _is_json(connection.headers.get("content-type", "")):
        return
    if not _SURROGATE_ESCAPE.search(await connection.body()):
        return
    try:
        data = await connection.json()
    except ValueError:
        return  # not JSON: the route's own validation says so
    found = _unstorable(data, ["body"])
    if found is not None:
        loc, char = found
        message = f"a lone surrogate (U+{ord(char):04X}) is not text: send valid Unicode"
        raise RequestValidationError([{"type": "string_unicode", "loc": loc, "msg": message}])


def _decimal(value: object) -> str:
    if isinstance(value, Decimal):
        return quantity_text(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def json_bytes(data: Any) -> bytes:
    """JSON as a response model writes it: a decimal as quantity text ("12.5"), a UTC time
    with Z; orjson is several times faster than FastAPI's encoder."""
    return orjson.dumps(data, default=_decimal, option=orjson.OPT_UTC_Z)


def json_response(data: Any, status_code: int = 200) -> Response:
    """An answer built by hand (rows, dicts): the one way, through ``json_bytes``."""
    return Response(json_bytes(data), status_code=status_code, media_type="application/json")


def fingerprint(payload: Any) -> str:
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


class Idempotent:
    """One write, in one transaction, answered once per Idempotency-Key.

    Routes use ``Write``; this is for the few whose answer is not simply what they store
    (a secret shown once, a dry run): ``async with Idempotent(conn, who, key, payload) as
    write:`` then either return ``write.stored`` (a retry) or do the work and
    ``return await write.answer(status, data)``.
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
                self.stored = json_response(row[2], status_code=row[1])

    async def __aexit__(self, *exc: object) -> None:
        await self._transaction.__aexit__(*exc)

    async def answer(self, status: int, data: Any) -> Response:
        body = json_bytes(data)
        if self.key is not None:
            await self.conn.execute(
                "INSERT INTO api_requests (actor, key, fingerprint, status, response)"
                " VALUES (%s, %s, %s, %s, %s)",
                (self.who.id, self.key, self.print, status, Jsonb(orjson.loads(body))),
            )
        return Response(body, status_code=status, media_type="application/json")


class Writer:
    """A write route's work, run once per ``Idempotency-Key`` (the dependency ``Write``).

    ``return await write(who, payload, work)`` runs ``work`` in one transaction on
    ``write.conn`` and answers what it returns, shaped by the route's ``response_model``
    and sent with the route's ``status_code``; the stored answer is the same JSON. The
    same key again gets the stored answer without running ``work``; the same key with
    another ``payload`` (what the key's fingerprint covers: the operation and its input)
    a 422. The connection is taken from the pool only then: none is held while the
    caller is authenticated.
    """

    def __init__(self, request: Request, key: IdempotencyKey = None) -> None:
        route: APIRoute = request.scope["route"]
        self.hub, self.key = get_hub(request), key
        self.status: int = route.status_code or 200
        self.model: Any = route.response_model
        self._conn: AsyncConnection | None = None

    @property
    def conn(self) -> AsyncConnection:
        """The write's connection, in its transaction: for ``work`` only."""
        if self._conn is None:
            raise RuntimeError("write.conn is there only while write(...) runs its work")
        return self._conn

    async def __call__(
        self, who: Principal, payload: Any, work: Callable[[], Awaitable[Any]]
    ) -> Response:
        async with self.hub.pool.connection() as conn:
            self._conn = conn
            try:
                async with Idempotent(conn, who, self.key, payload) as write:
                    if write.stored:
                        return write.stored
                    return await write.answer(self.status, self.shaped(await work()))
            finally:
                self._conn = None

    def shaped(self, data: Any) -> Any:
        """``data`` as the JSON the route's response model describes."""
        if isinstance(self.model, type) and issubclass(self.model, BaseModel):
            return self.model.model_validate(data, from_attributes=True).model_dump(mode="json")
        return data


Write = Annotated[Writer, Depends()]
