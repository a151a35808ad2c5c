"""Balances: the projection of the ledger per location, item, lot, serial, LPN and status."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection


def quantity_text(quantity: Decimal) -> str:
    """A quantity as every answer and frame writes it: a JSON string of the exact decimal,
    positional, without trailing zeros ("12.5", "10", "-3", "0.000001"), never "1E+1".

    JSON numbers would reach most clients as binary floats, which cannot hold a count
    entered to 30 places nor sums beyond 2**53 exactly; text can. In SQL the same is
    ``trim_scale(quantity)::text``.
    """
    text = format(quantity, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


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


def line_json(line: BalanceChange) -> dict[str, Any]:
    """A balance line as answers and live frames carry it (the site is said around it)."""
    return {
        "location": line.location,
        "sku": line.sku,
        "lot": line.lot,
        "serial": line.serial,
        "lpn": line.lpn,
        "status": line.status,
        "quantity": quantity_text(line.quantity),
    }


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
