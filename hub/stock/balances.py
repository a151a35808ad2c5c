"""Balances: the projection of the ledger per location, item, lot, serial, LPN and status."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from psycopg import AsyncConnection


@dataclass(frozen=True)
class BalanceChange:
    """One balance line as it stands after a change (absolute, not a difference)."""

    site: str
    location: str
    sku: str
    lot: str
    quantity: Decimal
    serial: str = ""
    lpn: str = ""
    status: str = "available"


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
