"""Transfers between sites, through the sending site's TRANSIT location.

Shipping posts site A location → A:TRANSIT (``transfer_out``); each receipt at site B
posts A:TRANSIT → B:location as one leg crossing sites (``transfer_in``), so the goods
are in exactly one place the whole way. All movements carry ``transfer:<id>``: what was
shipped, received and is still in transit are sums over them (reversals included), and
the transfer is ``received`` once nothing of it is left in transit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from psycopg import AsyncConnection

from warelink.hub.errors import Conflict, Forbidden, Invalid, NotFound
from warelink.hub.operations.inbound import (
    check_tracking,
    find_sku,
    now,
    post_from_stock,
)
from warelink.hub.stock import audit, ledger
from warelink.hub.stock.ledger import TRANSIT, Leg
from warelink.hub.stock.sites import require_location, require_site


@dataclass(frozen=True)
class TransferLineIn:
    sku: str  # code or GTIN
    quantity: Decimal
    location: str = ""  # where it leaves from at the sending site (shipping only)
    lot: str = ""
    serial: str = ""
    lpn: str = ""


@dataclass(frozen=True)
class TransferLine:
    sku: str
    lot: str
    serial: str
    lpn: str
    shipped: Decimal
    received: Decimal

    @property
    def in_transit(self) -> Decimal:
        return self.shipped - self.received


@dataclass(frozen=True)
class Transfer:
    id: int
    from_site: str
    to_site: str
    state: str
    created_by: str
    created_at: dt.datetime
    lines: list[TransferLine]
    movements: list[int]  # posted by the request that answered (empty for a read)
    exceptions: list[int]


# Shipped: A's locations → A:TRANSIT, less its reversals; received: A:TRANSIT → B, less its.
_LINES = (
    "SELECT sku, lot, serial, lpn,"
    " sum(CASE WHEN site = %(a)s AND to_site = %(a)s AND to_location = 'TRANSIT' THEN quantity"
    "  WHEN site = %(a)s AND to_site = %(a)s AND from_location = 'TRANSIT' THEN -quantity"
    "  ELSE 0 END),"
    " sum(CASE WHEN site = %(a)s AND to_site = %(b)s AND from_location = 'TRANSIT' THEN quantity"
    "  WHEN site = %(b)s AND to_site = %(a)s AND to_location = 'TRANSIT' THEN -quantity"
    "  ELSE 0 END)"
    " FROM movements WHERE document = %(doc)s GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
)


async def _lines(
    transfer: int, from_site: str, to_site: str, *, conn: AsyncConnection
) -> list[TransferLine]:
    cur = await conn.execute(_LINES, {"a": from_site, "b": to_site, "doc": f"transfer:{transfer}"})
    return [TransferLine(*row) for row in await cur.fetchall()]


async def get(
    transfer: int, *, visible: Callable[[str], bool], conn: AsyncConnection, lock: bool = False
) -> Transfer:
    """A transfer, if the caller covers one of its sites (otherwise it does not exist)."""
    cur = await conn.execute(
        "SELECT id, from_site, to_site, state, created_by, created_at FROM transfers"
        f" WHERE id = %s{' FOR UPDATE' if lock else ''}",
        (transfer,),
    )
    row = await cur.fetchone()
    if row is None or not (visible(row[1]) or visible(row[2])):
        raise NotFound(f"no transfer {transfer}")
    lines = await _lines(transfer, row[1], row[2], conn=conn)
    number, from_site, to_site, state, created_by, created_at = row
    return Transfer(number, from_site, to_site, state, created_by, created_at, lines, [], [])


async def list_transfers(
    site: str | None, state: str | None, limit: int, offset: int,
    *, visible_sites: frozenset[str] | None, conn: AsyncConnection,
) -> list[Transfer]:  # fmt: skip
    """Transfers from or to ``site`` (any site the caller covers if None), newest first."""
    cur = await conn.execute(
        "SELECT id FROM transfers WHERE (%(site)s::text IS NULL OR %(site)s IN"
        " (from_site, to_site)) AND (%(state)s::text IS NULL OR state = %(state)s)"
        " AND (%(sites)s::text[] IS NULL OR from_site = ANY(%(sites)s)"
        "  OR to_site = ANY(%(sites)s))"
        " ORDER BY id DESC LIMIT %(limit)s OFFSET %(offset)s",
        {"site": site, "state": state, "limit": limit, "offset": offset,
         "sites": None if visible_sites is None else sorted(visible_sites)},
    )  # fmt: skip
    ids = [row[0] for row in await cur.fetchall()]
    return [await get(i, visible=lambda _: True, conn=conn) for i in ids]


async def ship(
    from_site: str, to_site: str, lines: Sequence[TransferLineIn],
    *, actor: str, conn: AsyncConnection,
) -> Transfer:  # fmt: skip
    """Send stock from site A to site B: it waits in A's TRANSIT until B receives it."""
    if from_site == to_site:
        raise Invalid("a transfer goes between two different sites")
    await require_site(from_site, conn=conn)
    await require_site(to_site, conn=conn)
    legs = []
    for line in lines:
        if not line.location:
            raise Invalid("each line names the location it leaves from")
        await require_location(from_site, line.location, conn=conn)
        sku = await find_sku(line.sku, conn=conn)
        check_tracking(sku, lot=line.lot, serial=line.serial, quantity=line.quantity)
        legs.append((sku.code, line))
    cur = await conn.execute(
        "INSERT INTO transfers (from_site, to_site, created_by) VALUES (%s, %s, %s) RETURNING id",
        (from_site, to_site, actor),
    )
    row = await cur.fetchone()
    assert row is not None
    transfer = int(row[0])
    posted = await post_from_stock(
        [
            Leg(
                site=from_site, sku=sku, quantity=line.quantity, from_location=line.location,
                to_location=TRANSIT, kind="transfer_out", occurred_at=now(), actor=actor,
                lot=line.lot, serial=line.serial, lpn=line.lpn, document=f"transfer:{transfer}",
            )
            for sku, line in legs
        ],
        conn=conn,
    )  # fmt: skip
    await audit.record(
        actor, "transfer.ship", site=from_site, subject=f"transfer:{transfer}",
        detail={"to_site": to_site, "lines": len(legs), "movements": posted.movements},
        conn=conn,
    )  # fmt: skip
    answer = await get(transfer, visible=lambda _: True, conn=conn)
    return _with(answer, posted)


async def receive(
    transfer: int, location: str, lines: Sequence[TransferLineIn],
    *, visible: Callable[[str], bool], actor: str, conn: AsyncConnection,
) -> Transfer:  # fmt: skip
    """Book (part of) a transfer in at the receiving site; it is received when all is in."""
    head = await get(transfer, visible=visible, conn=conn, lock=True)
    if not visible(head.to_site):
        raise Forbidden(f"receiving transfer {transfer} needs access to site {head.to_site!r}")
    if head.state != "in_transit":
        raise Conflict(f"transfer {transfer} is {head.state}: nothing is left to receive")
    await require_location(head.to_site, location, conn=conn)
    left = {(x.sku, x.lot, x.serial, x.lpn): x.in_transit for x in head.lines}
    legs = []
    for line in lines:
        sku = await find_sku(line.sku, conn=conn)
        key = (sku.code, line.lot, line.serial, line.lpn)
        if left.get(key, Decimal(0)) < line.quantity:
            item = " ".join(part for part in key if part)
            raise Conflict(
                f"transfer {transfer} has {left.get(key, Decimal(0))} of {item} in transit,"
                f" not {line.quantity}"
            )
        left[key] -= line.quantity
        legs.append(
            Leg(
                site=head.from_site, to_site=head.to_site, sku=sku.code, quantity=line.quantity,
                from_location=TRANSIT, to_location=location, kind="transfer_in",
                occurred_at=now(), actor=actor, lot=line.lot, serial=line.serial, lpn=line.lpn,
                document=f"transfer:{transfer}",
            )
        )  # fmt: skip
    posted = await ledger.post(legs, conn=conn)
    if posted.skipped:
        raise Conflict("a serial of this transfer is already in stock at the receiving site")
    done = not any(left.values())
    if done:
        await conn.execute("UPDATE transfers SET state = 'received' WHERE id = %s", (transfer,))
    await audit.record(
        actor, "transfer.receive", site=head.to_site, subject=f"transfer:{transfer}",
        detail={"location": location, "lines": len(legs), "movements": posted.movements,
                "complete": done},
        conn=conn,
    )  # fmt: skip
    return _with(await get(transfer, visible=lambda _: True, conn=conn), posted)


def _with(transfer: Transfer, posted: ledger.Posted) -> Transfer:
    return Transfer(
        transfer.id, transfer.from_site, transfer.to_site, transfer.state, transfer.created_by,
        transfer.created_at, transfer.lines, posted.movements, posted.exceptions,
    )  # fmt: skip
