"""Read-side SQL for the REST API; each function takes the connection as a keyword."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from warelink.hub.errors import NotFound
from warelink.hub.store import BalanceChange

SKEW_FLAG_MS = 2000.0  # an edge clock this far off the hub's is flagged, never "corrected"


async def list_sites(*, conn: AsyncConnection) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT s.id, s.created_at,"
        " (SELECT count(*) FROM gateways g WHERE g.site = s.id) AS gateways,"
        " (SELECT count(*) FROM gateways g WHERE g.site = s.id AND g.online) AS gateways_online"
        " FROM sites s ORDER BY s.id"
    )
    return await cur.fetchall()


async def site_exists(site: str, *, conn: AsyncConnection) -> bool:
    cur = await conn.execute("SELECT 1 FROM sites WHERE id = %s", (site,))
    return await cur.fetchone() is not None


async def require_site(site: str, *, conn: AsyncConnection) -> None:
    """NotFound (404) unless the site exists."""
    if not await site_exists(site, conn=conn):
        raise NotFound(f"no site {site!r}")


async def site_stock(
    site: str, *, include_virtual: bool = False, conn: AsyncConnection
) -> list[BalanceChange]:
    cur = await conn.execute(
        "SELECT b.site, b.location, b.sku, b.lot, b.quantity, b.serial, b.lpn, b.status"
        " FROM balances b"
        " JOIN locations l ON l.site = b.site AND l.code = b.location"
        " WHERE b.site = %s AND (%s OR l.kind = 'internal') AND b.quantity <> 0"
        " ORDER BY b.location, b.sku, b.lot, b.serial, b.lpn, b.status",
        (site, include_virtual),
    )
    return [BalanceChange(*row) for row in await cur.fetchall()]


async def list_gateways(*, conn: AsyncConnection) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT id, site, online, session, max_seq AS last_seq_received, acked_seq,"
        " birth_last_seq, events_received, duplicates_dropped, gaps_detected, gaps_filled,"
        " replays_requested, early_ranges AS pending_ranges, clock_skew_ms,"
        " abs(coalesce(clock_skew_ms, 0)) > %s AS clock_skew_flagged,"
        " edge_counters, edge_counters_at, first_seen_at, last_seen_at, gap_anomalies,"
        " (SELECT count(*) FROM quarantine q WHERE q.gateway = g.id AND q.state = 'open')"
        "   AS quarantined, quarantine_overflow"
        " FROM gateways g ORDER BY site, id",
        (SKEW_FLAG_MS,),
    )
    return await cur.fetchall()
