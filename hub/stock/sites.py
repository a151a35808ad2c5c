"""Sites and their locations: which exist, and how many of a site's gateways are online.

A request that names a site or a location that does not exist gets NotFound (404), from
``require_site`` and ``require_location``, whatever the operation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from warelink.hub.errors import Invalid, NotFound


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


async def require_location(
    site: str, code: str, *, conn: AsyncConnection, zone_kinds: Sequence[str] = ()
) -> str | None:
    """A real (internal) location of the site, in a zone of one of ``zone_kinds`` if given;
    returns its zone's kind.

    NotFound (404) if the site has no such location; Invalid (422) for a virtual one
    (SUPPLIER, CUSTOMER, …: stock is handled at real places only) or a zone not allowed.
    """
    cur = await conn.execute(
        "SELECT l.kind, z.kind FROM locations l LEFT JOIN zones z"
        " ON z.site = l.site AND z.code = l.zone WHERE l.site = %s AND l.code = %s",
        (site, code),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no location {code!r} at site {site!r}")
    kind, zone_kind = row
    if kind != "internal":
        raise Invalid(f"{code!r} is the virtual {kind} location: name a real location")
    if zone_kinds and zone_kind not in zone_kinds:
        raise Invalid(
            f"{code!r} is not in a {' or '.join(zone_kinds)} zone (its zone is"
            f" {zone_kind or 'not set'})"
        )
    return zone_kind  # type: ignore[no-any-return]
