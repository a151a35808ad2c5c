"""REST routes: KPIs per site and side by side, and streamed CSV exports of the ledger."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from psycopg import AsyncConnection

from warelink.hub.access import Permission, Principal
from warelink.hub.api.deps import Allow, Conn, HubDep
from warelink.hub.api.fields import IsoDate, IsoDatetime, SiteId, SitePath
from warelink.hub.api.problems import errors
from warelink.hub.errors import NotFound
from warelink.hub.reports import analytics
from warelink.hub.stock import sites as queries

if TYPE_CHECKING:
    from warelink.hub.api.state import Hub

router = APIRouter(tags=["analytics"])


Since = Annotated[
    IsoDate | None,
    Query(description="First UTC day of the period (default: 30 days before `until`)."),
]
Until = Annotated[
    IsoDate | None, Query(description="Day after the period's last (default: tomorrow, UTC).")
]
FROM_TO = "Half-open [since, until) on `occurred_at`; either may be left out."
SinceTime = Annotated[IsoDatetime | None, Query(description=FROM_TO)]
UntilTime = Annotated[IsoDatetime | None, Query(description=FROM_TO)]

_ERRORS = errors(401, 403, 422)
_SITE_ERRORS = errors(401, 403, 404, 422)
_CSV: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "CSV, header"},
    **_SITE_ERRORS,
}


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


async def _existing(site: str, *, hub: Hub) -> None:
    """404 before the stream starts (a streamed answer's status is sent with its first byte)."""
    async with hub.pool.connection() as conn:
        if not await queries.site_exists(site, conn=conn):
            raise NotFound(f"no site {site!r}")


@router.get(
    "/sites/{site}/kpis",
    response_model=analytics.SiteKpis,
    responses=_SITE_ERRORS,
)
async def site_kpis(
    site: SitePath,
    conn: Conn,
    who: Annotated[Principal, Allow(Permission.LEDGER_READ)],
    since: Since = None,
    until: Until = None,
) -> analytics.SiteKpis:
    """Every KPI of docs/analyst.md for one site over the days ``[since, until)``."""
    start, end = analytics.period(since, until, today=_today())
    if not await queries.site_exists(site, conn=conn):
        raise NotFound(f"no site {site!r}")
    return (await analytics.site_kpis([site], start, end, conn=conn))[0]


@router.get("/kpis", response_model=analytics.KpiComparison, responses=_ERRORS)
async def compare_kpis(
    conn: Conn,
    who: Annotated[Principal, Allow(Permission.LEDGER_READ)],
    since: Since = None,
    until: Until = None,
    site: Annotated[
        list[Annotated[SiteId, Query()]] | None,
        Query(max_length=100, description="Only these sites (default: every site covered)."),
    ] = None,
) -> analytics.KpiComparison:
    """The same KPIs for every site the caller covers (or those named), side by side."""
    start, end = analytics.period(since, until, today=_today())
    sites = await analytics.covered_sites(site, who.sites, conn=conn)
    rows = await analytics.site_kpis(sites, start, end, conn=conn) if sites else []
    return analytics.KpiComparison(since=start, until=end, sites=rows)


def _stream(hub: Hub, make: Callable[[AsyncConnection], AsyncIterator[bytes]]) -> StreamingResponse:
    """The export runs on a pool connection of its own, held while the answer streams."""

    async def body() -> AsyncIterator[bytes]:
        async with hub.pool.connection() as conn:
            async for chunk in make(conn):
                yield chunk

    return StreamingResponse(body(), media_type="text/csv; charset=utf-8")


@router.get(
    "/sites/{site}/movements.csv",
    response_class=StreamingResponse,
    responses=_CSV,
)
async def movements_csv(
    site: SitePath,
    hub: HubDep,
    who: Annotated[Principal, Allow(Permission.LEDGER_READ)],
    since: SinceTime = None,
    until: UntilTime = None,
) -> StreamingResponse:
    """The site's movements (columns of ``analyst.movements``), streamed as CSV."""
    await _existing(site, hub=hub)
    start, end = since, until
    return _stream(hub, lambda c: analytics.movements_csv(site, start, end, conn=c))


@router.get(
    "/sites/{site}/balances.csv",
    response_class=StreamingResponse,
    responses=_CSV,
)
async def balances_csv(
    site: SitePath,
    hub: HubDep,
    who: Annotated[Principal, Allow(Permission.LEDGER_READ)],
) -> StreamingResponse:
    """The site's non-zero balance rows, streamed as CSV."""
    await _existing(site, hub=hub)
    return _stream(hub, lambda c: analytics.balances_csv(site, conn=c))
