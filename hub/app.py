"""The hub's FastAPI application: REST, the live websocket, and the ingest worker.

``create_app`` builds everything from one ``HubSettings``; the ingest worker runs in the
app's lifespan, so ``hub serve`` is one process that ingests and serves.

The front door, in the order a request meets it: a body over ``max_body_bytes`` is cut
off (413) before anything reads it; security headers go on every answer; credentials
are checked, failures throttled per client address (429); a JSON body with text that
cannot be stored is refused (422) before any route runs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import re
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import psycopg
from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from warelink.hub.api import OPS_ROUTERS, ROUTERS
from warelink.hub.api.deps import (
    json_response,
    storable_text,
)
from warelink.hub.api.problems import errors
from warelink.hub.api.state import Hub
from warelink.hub.errors import RequestError
from warelink.hub.settings import HubSettings

# ------------------------------------------------------------------ API models

AUTH_ERRORS = errors(401, 403)


# ------------------------------------------------------------------ state


# ------------------------------------------------------------------ front door

BASE_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}
API_CSP = "default-src 'none'; frame-ancestors 'none'"
TOO_MANY = {
    "description": "too many failed attempts (from this address, or for this account):"
    " wait Retry-After seconds",
    "headers": {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}},
    "content": {"application/json": {"schema": {
        "type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"],
    }}},
}  # fmt: skip


class SecurityHeaders:
    """Headers on every answer, streamed ones too (a pure ASGI middleware).

    No framing, no type sniffing, no referrer; an answer that is not a page gets a CSP
    that allows nothing (the dashboard sets its own, ``/docs`` keeps none: it loads
    Swagger UI from a CDN); an answer to a request that carried credentials is stored by
    no cache.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        asked = Headers(scope=scope)
        credentials = "authorization" in asked or "x-api-key" in asked

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in BASE_HEADERS.items():
                    headers.setdefault(name, value)
                if not headers.get("content-type", "").startswith("text/html"):
                    headers.setdefault("content-security-policy", API_CSP)
                if credentials:
                    headers.setdefault("cache-control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)


def dashboard_page() -> tuple[str, str]:
    """The dashboard and a CSP that lets exactly its own inline script and styles run.

    The hashes are taken from the page as shipped, so editing it needs no CSP edit; it
    may fetch from and open websockets to its own host only ('self' covers ws:/wss:).
    """
    page = resources.files("warelink.dashboards").joinpath("index.html").read_text()

    def hashes(pattern: str) -> str:
        found = re.findall(pattern, page, flags=re.DOTALL)
        return " ".join(
            f"'sha256-{base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()}'"
            for text in found
        )

    styles = hashes(r"<style>(.*?)</style>")
    attributes = hashes(r'style="([^"]*)"')
    policy = [
        "default-src 'none'",
        f"script-src {hashes(r'<script>(.*?)</script>')}",
        f"style-src {styles} 'unsafe-hashes' {attributes}" if attributes else f"style-src {styles}",
        "connect-src 'self'",
        "img-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
    return page, "; ".join(policy)


def document_front_door(app: FastAPI) -> None:
    """Every operation that may answer 401 may also answer 429 (a throttled address)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            for operations in schema["paths"].values():
                for operation in operations.values():
                    if "401" in operation.get("responses", {}):
                        operation["responses"].setdefault("429", TOO_MANY)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


# ------------------------------------------------------------------ app


def create_app(settings: HubSettings) -> FastAPI:
    hub = Hub(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await hub.pool.open()
        await hub.bootstrap()
        workers = [
            asyncio.create_task(hub.ingest.run(), name="hub-ingest"),
            asyncio.create_task(hub.live.run(), name="hub-live-feed"),
        ]
        try:
            yield
        finally:
            hub.live.close()  # any live socket still open ends now, with 1001
            for worker in workers:
                worker.cancel()
            for worker in workers:
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
            await hub.pool.close()

    app = FastAPI(
        title="warelink hub",
        version="0.1.0",
        description=(
            "Stock ledger and live state of every warehouse site.\n\n"
            "Live websocket (not expressible in OpenAPI): `GET /api/v1/live?site=SITE` sends"
            " a JSON snapshot `{kind: 'snapshot', site, epoch, version, balances, devices,"
            " gateways}`, then deltas `{kind: 'delta', site, epoch, version, at, balances,"
            " devices, exceptions, gateways, commands}` with version + 1 each, for every"
            " change committed on any hub. To reconnect (to any hub) without a snapshot,"
            " add `since=VERSION&epoch=EPOCH`: the deltas missed follow, or a snapshot when"
            " they are no longer kept. The credential is checked again every few seconds:"
            " revoked, expired or disabled closes the socket with 4401, lost access with"
            " 4403; 1001 means the hub is stopping, 1013 that the client fell behind."
        ),
        lifespan=lifespan,
        max_body_size=settings.max_body_bytes,
        dependencies=[Depends(storable_text)],
    )
    app.state.hub = hub
    app.add_middleware(SecurityHeaders)
    document_front_door(app)
    page, page_policy = dashboard_page()

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError) -> Response:
        return json_response({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        """A body that is not even UTF-8 is as invalid as bad JSON: 422, in the same shape."""
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            error = {"type": "body_unreadable", "loc": ["body"], "msg": "send UTF-8 JSON"}
            return json_response({"detail": [error]}, 422)
        return await http_exception_handler(request, exc)

    @app.exception_handler(psycopg.DataError)
    async def data_error(request: Request, exc: psycopg.DataError) -> Response:
        """Input the database cannot hold (a NUL byte, a number out of range) is the
        caller's to fix: 422, not 500."""
        message = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        return json_response({"detail": f"invalid value: {message}"}, status_code=422)

    for router in OPS_ROUTERS:
        app.include_router(router)
    for router in ROUTERS:
        app.include_router(router, prefix="/api/v1")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": page_policy})

    return app
