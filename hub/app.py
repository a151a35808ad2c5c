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
import datetime as dt
import hashlib
import re
from collections.abc import AsyncIterator, Iterator
from importlib import resources
from typing import Annotated, Any

import orjson
import psycopg
from fastapi import Depends, FastAPI, HTTPException, Query, Request, WebSocket
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

from warelink.hub import auth, commands, queries
from warelink.hub.access import Permission, Principal
from warelink.hub.api import ROUTERS
from warelink.hub.api.deps import (
    Allow,
    HubDep,
    authenticate,
    client_address,
    storable_text,
)
from warelink.hub.api.fields import DevicePath, KeyPath, SiteId, SitePath
from warelink.hub.api.problems import errors
from warelink.hub.errors import RequestError
from warelink.hub.ingest import Ingest
from warelink.hub.live import LiveHub, Subscriber, balance
from warelink.hub.migrate import unapplied
from warelink.hub.settings import HubSettings

# ------------------------------------------------------------------ API models

AUTH_ERRORS = errors(401, 403)


class Site(BaseModel):
    id: str
    created_at: dt.datetime
    gateways: int
    gateways_online: int


class StockLine(BaseModel):
    location: str
    sku: str
    lot: str
    serial: str
    lpn: str
    status: str
    quantity: float


class SiteStock(BaseModel):
    site: str
    lines: list[StockLine]


class GatewayInfo(BaseModel):
    id: str
    site: str
    online: bool
    session: int
    last_seq_received: int
    acked_seq: int
    birth_last_seq: int
    events_received: int
    duplicates_dropped: int
    gaps_detected: int
    gaps_filled: int
    replays_requested: int
    pending_ranges: list[list[int]]
    clock_skew_ms: float | None
    clock_skew_flagged: bool
    edge_counters: dict[str, float]
    edge_counters_at: dt.datetime | None
    first_seen_at: dt.datetime
    last_seen_at: dt.datetime
    quarantined: int = Field(description="open quarantine entries (GET /api/v1/quarantine)")
    quarantine_overflow: int = Field(description="malformed messages counted, not kept")
    gap_anomalies: int = Field(description="gaps too wide for any outbox: reported, not asked for")


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}


def json_response(data: Any, status_code: int = 200) -> Response:
    """Prebuilt bytes: orjson is several times faster than FastAPI's encoder."""
    return Response(orjson.dumps(data), status_code=status_code, media_type="application/json")


# ------------------------------------------------------------------ state


class Hub:
    """What the routes need, built once per app."""

    def __init__(self, settings: HubSettings) -> None:
        self.settings = settings
        self.ingest = Ingest(settings)
        self.live = LiveHub(epoch=self.ingest.instance)
        self.ingest.on_commit = self.live.on_commit
        self.pool = AsyncConnectionPool(settings.db_url, min_size=1, max_size=8, open=False)
        self.authenticator = auth.Authenticator(concurrency=settings.argon2_concurrency)
        # Failures in this process's memory (bounded): see auth.Throttle.
        window = settings.auth_window_s
        self.account_failures = auth.Throttle(settings.login_failures_per_account, window)
        self.address_failures = auth.Throttle(settings.auth_failures_per_address, window)

    async def bootstrap(self) -> None:
        """The configured bootstrap key works, an earlier one no longer does."""
        async with self.pool.connection() as conn, conn.transaction():
            await auth.ensure_bootstrap(
                self.settings.bootstrap_api_key, authenticator=self.authenticator, conn=conn
            )
        await self.authenticator.dummy_hash()  # made now, not during someone's login


class IngestCollector:
    """Prometheus view of the ingest worker's counters (no module-level metrics)."""

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self.ingest.stats
        for name, value, text in (
            ("warelink_hub_messages", stats.messages, "MQTT messages received"),
            ("warelink_hub_events_committed", stats.events_committed, "events stored"),
            ("warelink_hub_duplicates_dropped", stats.duplicates_dropped, "duplicates dropped"),
            (
                "warelink_hub_malformed_dropped",
                stats.malformed_dropped,
                "malformed messages no gateway could be named for, dropped",
            ),
            ("warelink_hub_quarantined_events", stats.quarantined_events, "events quarantined"),
            (
                "warelink_hub_quarantined_messages",
                stats.quarantined_messages,
                "whole messages quarantined (or counted past the per-gateway cap)",
            ),
            (
                "warelink_hub_gap_anomalies",
                stats.gap_anomalies,
                "gaps wider than any outbox could hold (reported, not asked for)",
            ),
            ("warelink_hub_flushes", stats.flushes, "ingest transactions committed"),
            ("warelink_hub_gaps_detected", stats.gaps_detected, "sequence gaps detected"),
            ("warelink_hub_gaps_filled", stats.gaps_filled, "sequence gaps filled"),
            ("warelink_hub_replays_requested", stats.replays_requested, "replay requests"),
        ):
            yield CounterMetricFamily(name, text, value=value)
        yield GaugeMetricFamily(
            "warelink_hub_gateways_held",
            "gateways whose events the hub cannot commit now (held back, not acked)",
            value=stats.gateways_held,
        )
        yield GaugeMetricFamily(
            "warelink_hub_mqtt_connected", "1 if connected", value=int(self.ingest.mqtt_connected)
        )


class GatewaysCollector:
    """Per-gateway figures from the database, labelled by gateway and site."""

    NUMBERS = (
        "acked_seq", "last_seq_received", "events_received", "duplicates_dropped",
        "gaps_detected", "gaps_filled", "replays_requested", "clock_skew_ms",
    )  # fmt: skip

    def __init__(self, gateways: list[dict[str, Any]]) -> None:
        self.gateways = gateways

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["gateway", "site"]
        families = {
            name: GaugeMetricFamily(f"warelink_gateway_{name}", name.replace("_", " "),
                                    labels=labels)
            for name in (*self.NUMBERS, "online", "pending_ranges")
        }  # fmt: skip
        edge = GaugeMetricFamily(
            "warelink_gateway_edge", "the gateway's own counters", labels=[*labels, "counter"]
        )
        for row in self.gateways:
            key = [row["id"], row["site"]]
            for name in self.NUMBERS:
                if row[name] is not None:
                    families[name].add_metric(key, float(row[name]))
            families["online"].add_metric(key, float(row["online"]))
            families["pending_ranges"].add_metric(key, float(len(row["pending_ranges"])))
            for counter, value in row["edge_counters"].items():
                edge.add_metric([*key, counter], float(value))
        yield from families.values()
        yield edge


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
    registry = CollectorRegistry()
    registry.register(IngestCollector(hub.ingest))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await hub.pool.open()
        await hub.bootstrap()
        ingest = asyncio.create_task(hub.ingest.run(), name="hub-ingest")
        try:
            yield
        finally:
            ingest.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ingest
            await hub.pool.close()

    app = FastAPI(
        title="warelink hub",
        version="0.1.0",
        description=(
            "Stock ledger and live state of every warehouse site.\n\n"
            "Live websocket (not expressible in OpenAPI): `GET /api/v1/live?site=SITE` sends"
            " a JSON snapshot `{kind: 'snapshot', site, epoch, version, balances, devices}`,"
            " then deltas `{kind: 'delta', site, epoch, version, balances, devices}` with"
            " version + 1 each; a gap in versions means a missed delta: reconnect. The"
            " credential is checked again every few seconds: revoked, expired or disabled"
            " closes the socket with 4401, lost access with 4403."
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

    for router in ROUTERS:
        app.include_router(router, prefix="/api/v1")

    @app.get("/healthz", response_model=Health, tags=["ops"])
    async def healthz() -> Response:
        """The process is up."""
        return json_response({"status": "ok", "checks": {}})

    @app.get(
        "/readyz",
        response_model=Health,
        tags=["ops"],
        responses={503: {"model": Health, "description": "not ready"}},
    )
    async def readyz(hub: HubDep) -> Response:
        """Ready to ingest: database reachable and migrated, broker connected."""
        checks: dict[str, str] = {}
        try:
            async with hub.pool.connection(timeout=2) as conn:
                cur = await conn.execute("SELECT version FROM schema_migrations")
                todo = unapplied({row[0] for row in await cur.fetchall()})
            checks["database"] = "ok" if not todo else f"migrations pending: {todo}"
        except (psycopg.Error, TimeoutError) as exc:
            checks["database"] = f"unavailable: {exc.__class__.__name__}"
        checks["mqtt"] = "ok" if hub.ingest.mqtt_connected else "disconnected"
        ready = all(v == "ok" for v in checks.values())
        return json_response(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    @app.get("/metrics", tags=["ops"], response_class=Response, responses=AUTH_ERRORS)
    async def metrics(
        hub: HubDep, who: Annotated[Principal, Allow(Permission.GATEWAYS_READ)]
    ) -> Response:
        """Prometheus text: the ingest worker's counters, and each gateway's (of the
        caller's sites), by label. Scrape with a key: ``authorization: {credentials: wlk_…}``.
        """
        async with hub.pool.connection() as conn:
            gateways = await queries.list_gateways(conn=conn)
        scrape = CollectorRegistry()
        scrape.register(GatewaysCollector([g for g in gateways if who.covers(g["site"])]))
        body = generate_latest(registry) + generate_latest(scrape)
        return Response(body, media_type="text/plain; version=0.0.4")

    @app.get("/api/v1/sites", response_model=list[Site], tags=["sites"], responses=AUTH_ERRORS)
    async def sites(
        hub: HubDep, who: Annotated[Principal, Allow(Permission.STOCK_READ)]
    ) -> Response:
        """The sites the caller may see."""
        async with hub.pool.connection() as conn:
            rows = await queries.list_sites(conn=conn)
        return json_response([row for row in rows if who.covers(row["id"])])

    @app.get(
        "/api/v1/sites/{site}/stock",
        response_model=SiteStock,
        tags=["sites"],
        responses={**AUTH_ERRORS, 404: {"description": "no such site"}},
    )
    async def stock(
        site: SitePath,
        hub: HubDep,
        who: Annotated[Principal, Allow(Permission.STOCK_READ)],
        include_virtual: Annotated[
            bool, Query(description="Include supplier/customer/… virtual locations.")
        ] = False,
    ) -> Response:
        """Non-zero balances of a site by location, SKU and lot."""
        async with hub.pool.connection() as conn:
            if not await queries.site_exists(site, conn=conn):
                raise HTTPException(404, f"no site {site!r}")
            lines = await queries.site_stock(site, include_virtual=include_virtual, conn=conn)
        return json_response({"site": site, "lines": [balance(b) for b in lines]})

    @app.get(
        "/api/v1/gateways", response_model=list[GatewayInfo], tags=["gateways"],
        responses=AUTH_ERRORS,
    )  # fmt: skip
    async def gateways(
        hub: HubDep, who: Annotated[Principal, Allow(Permission.GATEWAYS_READ)]
    ) -> Response:
        """Each gateway's session, sequence watermarks and counters (of the caller's sites)."""
        async with hub.pool.connection() as conn:
            rows = await queries.list_gateways(conn=conn)
        return json_response([row for row in rows if who.covers(row["site"])])

    @app.post(
        "/api/v1/sites/{site}/devices/{device}/commands",
        response_model=commands.CommandInfo,
        status_code=202,
        tags=["commands"],
        responses={
            **AUTH_ERRORS,
            404: {"description": "no such device"},
            409: {"description": "key taken"},
        },
    )
    async def post_command(
        site: SitePath,
        device: DevicePath,
        request: commands.CommandRequest,
        hub: HubDep,
        who: Annotated[Principal, Allow(Permission.COMMANDS_WRITE)],
    ) -> Response:
        """Send a command to a device through its gateway; the outcome comes back later.

        Idempotent by ``key``: the same key again returns the stored command.
        """
        async with hub.pool.connection() as conn:
            gateway = await commands.device_gateway(site, device, conn=conn)
            if gateway is None:
                raise HTTPException(404, f"no device {device!r} at site {site!r}")
            try:
                row = await commands.create(site, gateway, device, request, conn=conn)
            except commands.CommandConflict as exc:
                raise HTTPException(409, str(exc)) from None
            if row["outcome"] is None and await hub.ingest.send_command(
                site, gateway, commands.as_message(row)
            ):
                await conn.execute(
                    "UPDATE commands SET sent_count = sent_count + 1 WHERE key = %s",
                    (row["key"],),
                )
                row["sent_count"] += 1
        return json_response(row, status_code=202)

    @app.get(
        "/api/v1/commands/{key}",
        response_model=commands.CommandInfo,
        tags=["commands"],
        responses={**AUTH_ERRORS, 404: {"description": "no such command"}},
    )
    async def get_command(
        key: KeyPath, hub: HubDep, who: Annotated[Principal, Allow(Permission.COMMANDS_READ)]
    ) -> Response:
        """A command and, once the edge reported it, its outcome."""
        async with hub.pool.connection() as conn:
            row = await commands.get(key, conn=conn)
        if row is None or not who.covers(row["site"]):
            raise HTTPException(404, f"no command {key!r}")
        return json_response(row)

    @app.websocket("/api/v1/live")
    async def live(
        websocket: WebSocket, site: Annotated[SiteId, Query()], access_token: str | None = None
    ) -> None:
        """A snapshot of the site, then deltas, each with the site's version number.

        Credentials as for REST, or as ``access_token`` in the query (browsers cannot set
        headers on a websocket); ``stock.read`` on the site is needed, at the start and
        again every ``live_recheck_s`` while the socket is open.
        """
        hub: Hub = websocket.app.state.hub
        presented = access_token or websocket.headers.get("x-api-key") or ""
        bearer = websocket.headers.get("authorization", "")
        if bearer.lower().startswith("bearer "):
            presented = bearer[7:]
        address = client_address(websocket)

        async def refusal() -> tuple[int, str] | None:
            """Why the socket may not (or no longer) stream: a close code and reason."""
            try:
                who = await authenticate(hub, presented, address)
            except HTTPException as exc:
                return 4000 + exc.status_code, str(exc.detail)[:120]
            if not who.allows(Permission.STOCK_READ) or not who.covers(site):
                return 4403, f"no access to site {site!r}"
            return None

        async def until_gone() -> None:
            """The client sends nothing the hub uses; its leaving ends the stream at once
            (not at the next frame, which may be long in coming)."""
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass
            raise WebSocketDisconnect

        async def send_frames(subscriber: Subscriber) -> None:
            """Deltas as they come; the credential checked again every live_recheck_s."""
            loop = asyncio.get_running_loop()
            recheck_at = loop.time() + settings.live_recheck_s
            while True:
                try:
                    async with asyncio.timeout_at(recheck_at):
                        frame = await subscriber.queue.get()
                except TimeoutError:
                    frame = ""  # nothing new: only the check is due
                if loop.time() >= recheck_at:
                    if (closing := await refusal()) is not None:
                        await websocket.close(*closing)
                        raise WebSocketDisconnect(closing[0])
                    recheck_at = loop.time() + settings.live_recheck_s
                if frame is None:
                    await websocket.close(code=1013, reason="too slow: reconnect")
                    raise WebSocketDisconnect(1013)
                if frame:
                    await websocket.send_text(frame)

        if (closing := await refusal()) is not None:
            await websocket.close(*closing)
            return
        await websocket.accept()
        with hub.live.subscribe(site) as subscriber:
            try:
                version = hub.live.versions[site]
                async with hub.pool.connection() as conn:
                    balances = await queries.site_stock(site, conn=conn)
                await websocket.send_text(hub.live.snapshot(site, version, balances))
                async with asyncio.TaskGroup() as group:
                    group.create_task(until_gone(), name=f"live-{site}-receive")
                    group.create_task(send_frames(subscriber), name=f"live-{site}-send")
            except* WebSocketDisconnect:
                pass  # either side ended it

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": page_policy})

    return app
