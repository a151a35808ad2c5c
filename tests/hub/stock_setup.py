"""Sites, locations, SKUs and stock for the stock-control tests, through the real ledger."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from tests.support.api import Api
from warelink.hub.stock import ledger

NOW = dt.datetime.now(dt.UTC)


async def make_site(api: Api, site: str, locations: tuple[str, ...] = ("A1",)) -> None:
    async with api.hub.pool.connection() as conn, conn.transaction():
        await conn.execute("INSERT INTO sites (id) VALUES (%s)", (site,))
        for code in locations:
            await conn.execute(
                "INSERT INTO locations (site, code, kind) VALUES (%s, %s, 'internal')",
                (site, code),
            )
        for sku in ("S1", "S2"):
            await conn.execute("INSERT INTO skus (code) VALUES (%s) ON CONFLICT DO NOTHING", (sku,))


async def two_sites(api: Api) -> None:
    """Two sites, dock/storage/staging locations, a SKU with stock, a device on a gateway."""
    async with api.hub.pool.connection() as conn, conn.transaction():
        await conn.execute("INSERT INTO sites (id) VALUES ('north'), ('south')")
        await conn.execute(
            "INSERT INTO zones (site, code, kind) VALUES ('north', 'DOCK', 'dock'),"
            " ('north', 'STORE', 'storage'), ('north', 'STAGE', 'staging'),"
            " ('south', 'STORE', 'storage')"
        )
        await conn.execute(
            "INSERT INTO locations (site, code, kind, zone) VALUES"
            " ('north', 'D1', 'internal', 'DOCK'), ('north', 'A1', 'internal', 'STORE'),"
            " ('north', 'P1', 'internal', 'STAGE'), ('south', 'B1', 'internal', 'STORE')"
        )
        await conn.execute("INSERT INTO skus (code) VALUES ('PLAIN')")
        await conn.execute("INSERT INTO gateways (id, site) VALUES ('gw-1', 'north')")
        await conn.execute(
            "INSERT INTO devices (site, gateway, id) VALUES ('north', 'gw-1', 'scale-1')"
        )
    await post(api, receipt("north", 100, location="A1", sku="PLAIN"))


async def post(api: Api, *legs: ledger.Leg) -> ledger.Posted:
    async with api.hub.pool.connection() as conn, conn.transaction():
        return await ledger.post(legs, conn=conn)


def receipt(
    site: str,
    quantity: int,
    *,
    location: str = "A1",
    sku: str = "S1",
    lot: str = "",
    at: dt.datetime | None = None,
    status: str = "available",
) -> ledger.Leg:
    return ledger.Leg(
        site=site, sku=sku, lot=lot, quantity=Decimal(quantity), from_location=ledger.SUPPLIER,
        to_location=location, to_status=status, kind="receipt",
        occurred_at=at or NOW - dt.timedelta(hours=1), actor="test",
    )  # fmt: skip


def device_ship(
    site: str, quantity: int, *, at: dt.datetime, seq: int, location: str = "A1"
) -> ledger.Leg:
    """A shipment as a gateway reports it (it may arrive late)."""
    return ledger.Leg(
        site=site, sku="S1", quantity=Decimal(quantity), from_location=location,
        to_location=ledger.CUSTOMER, kind="ship", occurred_at=at, actor="gateway:gw1",
        source_gateway="gw1", source_seq=seq,
    )  # fmt: skip


async def balance(
    api: Api, site: str, sku: str = "S1", location: str = "A1", status: str = "available"
) -> Decimal:
    async with api.hub.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT coalesce(sum(quantity), 0) FROM balances WHERE site = %s AND location = %s"
            " AND sku = %s AND status = %s",
            (site, location, sku, status),
        )
        row = await cur.fetchone()
        assert row is not None
        return Decimal(row[0])


async def drift(api: Api) -> list[ledger.Drift]:
    async with api.hub.pool.connection() as conn:
        return await ledger.check(conn=conn)


async def audit_actions(api: Api, subject: str) -> list[tuple[str, str]]:
    async with api.hub.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT actor, action FROM audit_log WHERE subject = %s ORDER BY id", (subject,)
        )
        return [(actor, action) for actor, action in await cur.fetchall()]
