"""Sites: which exist, and how many of their gateways are online."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from warelink.hub.errors import NotFound


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
