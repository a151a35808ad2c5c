"""The hub's FastAPI application: REST, the live websocket, and the ingest worker.

``create_app`` builds everything from one ``HubSettings``; the ingest worker runs in the
app's lifespan, so ``hub serve`` is one process that ingests and serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Iterator
from importlib import resources
from typing import Annotated, Any

import orjson
import psycopg
from fastapi import FastAPI, HTTPException, Query, Request, WebSocket
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.websockets import WebSocketDisconnect

from warelink.hub import auth, commands, queries
from warelink.hub.access import Permission, Principal
from warelink.hub.api import ROUTERS
from warelink.hub.api.deps import Allow, HubDep
from warelink.hub.api.problems import errors
from warelink.hub.errors import RequestError
from warelink.hub.ingest import Ingest
from warelink.hub.live import LiveHub, balance
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
        self.authenticator = auth.Authenticator()

    async def bootstrap(self) -> None:
        if self.settings.bootstrap_api_key:
            async with self.pool.connection() as conn, conn.transaction():
                await auth.ensure_bootstrap(
                    self.settings.bootstrap_api_key, authenticator=self.authenticator, conn=conn
                )


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
            ("warelink_hub_malformed_dropped", stats.malformed_dropped, "malformed dropped"),
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
            " version + 1 each; a gap in versions means a missed delta: reconnect."
        ),
        lifespan=lifespan,
    )
    app.state.hub = hub

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

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def metrics(hub: HubDep) -> Response:
        """Prometheus text: the ingest worker's counters, and each gateway's, by label."""
        async with hub.pool.connection() as conn:
            gateways = await queries.list_gateways(conn=conn)
        scrape = CollectorRegistry()
        scrape.register(GatewaysCollector(gateways))
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
        site: str,
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
        site: str,
        device: str,
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
        key: str, hub: HubDep, who: Annotated[Principal, Allow(Permission.COMMANDS_READ)]
    ) -> Response:
        """A command and, once the edge reported it, its outcome."""
        async with hub.pool.connection() as conn:
            row = await commands.get(key, conn=conn)
        if row is None or not who.covers(row["site"]):
            raise HTTPException(404, f"no command {key!r}")
        return json_response(row)

    @app.websocket("/api/v1/live")
    async def live(websocket: WebSocket, site: str, access_token: str | None = None) -> None:
        """A snapshot of the site, then deltas, each with the site's version number.

        Credentials as for REST, or as ``access_token`` in the query (browsers cannot set
        headers on a websocket); ``stock.read`` on the site is needed.
        """
        hub: Hub = websocket.app.state.hub
        presented = access_token or websocket.headers.get("x-api-key") or ""
        bearer = websocket.headers.get("authorization", "")
        if bearer.lower().startswith("bearer "):
            presented = bearer[7:]
        try:
            async with hub.pool.connection() as conn:
                who = await hub.authenticator.authenticate(presented, conn=conn)
        except auth.AuthError as exc:
            await websocket.close(code=4401, reason=str(exc)[:120])
            return
        if not who.allows(Permission.STOCK_READ) or not who.covers(site):
            await websocket.close(code=4403, reason=f"no access to site {site!r}")
            return
        await websocket.accept()
        with hub.live.subscribe(site) as subscriber:
            version = hub.live.versions[site]
            async with hub.pool.connection() as conn:
                balances = await queries.site_stock(site, conn=conn)
            await websocket.send_text(hub.live.snapshot(site, version, balances))
            try:
                while True:
                    frame = await subscriber.queue.get()
                    if frame is None:
                        await websocket.close(code=1013, reason="too slow: reconnect")
                        return
                    await websocket.send_text(frame)
            except WebSocketDisconnect:
                return

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        page = resources.files("warelink.dashboards").joinpath("index.html").read_text()
        return HTMLResponse(page)

    return app
