"""Routes: sites, their stock, and the gateways that feed them."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from warelink.hub.access import Permission, Principal
from warelink.hub.api.deps import Allow, HubDep, json_response
from warelink.hub.api.fields import QuantityOut, SitePath
from warelink.hub.api.problems import errors
from warelink.hub.ingest import gateways as gateway_queries
from warelink.hub.stock import balances
from warelink.hub.stock import sites as site_queries

router = APIRouter()
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
    quantity: QuantityOut


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
    outbox: str | None = Field(description="the identity of the outbox the hub acks for")
    refused_outbox: str | None = Field(
        description="the latest other outbox under this id, refused: neither stored nor acked"
    )
    refused_at: dt.datetime | None
    refused_messages: int = Field(description="births and batches of refused outboxes")


@router.get("/sites", response_model=list[Site], tags=["sites"], responses=AUTH_ERRORS)
async def sites(hub: HubDep, who: Annotated[Principal, Allow(Permission.STOCK_READ)]) -> Response:
    """The sites the caller may see."""
    async with hub.pool.connection() as conn:
        rows = await site_queries.list_sites(conn=conn)
    return json_response([row for row in rows if who.covers(row["id"])])


@router.get(
    "/sites/{site}/stock",
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
        await site_queries.require_site(site, conn=conn)
        lines = await balances.site_stock(site, include_virtual=include_virtual, conn=conn)
    return json_response({"site": site, "lines": [balances.line_json(b) for b in lines]})


@router.get(
    "/gateways", response_model=list[GatewayInfo], tags=["gateways"],
    responses=AUTH_ERRORS,
)  # fmt: skip
async def gateways(
    hub: HubDep, who: Annotated[Principal, Allow(Permission.GATEWAYS_READ)]
) -> Response:
    """Each gateway's session, sequence watermarks and counters (of the caller's sites)."""
    async with hub.pool.connection() as conn:
        rows = await gateway_queries.list_gateways(conn=conn)
    return json_response([row for row in rows if who.covers(row["site"])])
