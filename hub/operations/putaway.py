"""Putaway: where received stock should go, and moving it there.

The suggestion rule, in order: only storage-zone locations that are usable, not held,
and take the SKU's class (a location without a class takes any SKU) with room for the
quantity (capacity less everything on hand there; no capacity means unlimited); among
those, first a location already holding the same SKU and lot, then the same SKU, then
the fullest that still fits (least room left afterwards, unlimited last), then by code.
The clerk may put the stock elsewhere: the answer says where the rule would have put it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from psycopg import AsyncConnection

from warelink.hub.errors import Invalid
from warelink.hub.operations.inbound import (
    check_tracking,
    find_sku,
    jsonable,
    now,
    post_from_stock,
)
from warelink.hub.stock import audit
from warelink.hub.stock.ledger import Leg
from warelink.hub.stock.sites import require_location, require_site


@dataclass(frozen=True)
class Candidate:
    location: str
    zone: str
    capacity: Decimal | None
    on_hand: Decimal
    holds_sku: bool
    holds_lot: bool

    @property
    def room_after(self) -> Decimal | None:
        return None if self.capacity is None else self.capacity - self.on_hand

    def why(self, quantity: Decimal) -> str:
        if self.holds_lot:
            first = "already holds this SKU and lot"
        elif self.holds_sku:
            first = "already holds this SKU"
        else:
            first = "no storage location holds this SKU yet"
        if self.capacity is None:
            return f"{first}; unlimited capacity"
        left = self.capacity - self.on_hand - quantity
        return f"{first}; the fullest that fits: {left} of {self.capacity} free after putaway"


@dataclass(frozen=True)
class Suggestion:
    sku: str
    lot: str
    quantity: Decimal
    location: str | None  # None: no storage location fits
    reason: str
    alternatives: list[Candidate]


async def candidates(
    site: str, sku: str, sku_class: str | None, lot: str, quantity: Decimal,
    exclude: str, limit: int, *, conn: AsyncConnection,
) -> list[Candidate]:  # fmt: skip
    """Storage locations that may take the stock, best first (the rule in the docstring)."""
    cur = await conn.execute(
        "WITH on_hand AS (SELECT location, sum(quantity) AS quantity,"
        "  bool_or(sku = %(sku)s) AS holds_sku,"
        "  bool_or(sku = %(sku)s AND lot = %(lot)s) AS holds_lot"
        "  FROM balances WHERE site = %(site)s AND quantity > 0 GROUP BY location)"
        " SELECT l.code, l.zone, l.capacity, coalesce(o.quantity, 0),"
        "  coalesce(o.holds_sku, false), coalesce(o.holds_lot, false)"
        " FROM locations l JOIN zones z ON z.site = l.site AND z.code = l.zone"
        " LEFT JOIN on_hand o ON o.location = l.code"
        " WHERE l.site = %(site)s AND l.kind = 'internal' AND z.kind = 'storage'"
        "  AND l.usable AND NOT l.held AND l.code <> %(exclude)s"
        "  AND (l.sku_class IS NULL OR l.sku_class = %(class)s)"
        "  AND (l.capacity IS NULL OR l.capacity - coalesce(o.quantity, 0) >= %(quantity)s)"
        " ORDER BY 6 DESC, 5 DESC, l.capacity - coalesce(o.quantity, 0) NULLS LAST, l.code"
        " LIMIT %(limit)s",
        {"site": site, "sku": sku, "lot": lot, "class": sku_class, "quantity": quantity,
         "exclude": exclude, "limit": limit},
    )  # fmt: skip
    return [Candidate(*row) for row in await cur.fetchall()]


async def suggest(
    site: str, sku_ref: str, lot: str, quantity: Decimal, from_location: str | None,
    *, conn: AsyncConnection,
) -> Suggestion:  # fmt: skip
    await require_site(site, conn=conn)
    sku = await find_sku(sku_ref, conn=conn)
    if from_location:
        await require_location(site, from_location, conn=conn)
    found = await candidates(
        site, sku.code, sku.sku_class, lot, quantity, from_location or "", 5, conn=conn
    )
    if not found:
        kind = f"class {sku.sku_class}" if sku.sku_class else "no class"
        return Suggestion(
            sku.code, lot, quantity, None,
            f"no usable storage location that takes {kind} has room for {quantity}", [],
        )  # fmt: skip
    best = found[0]
    return Suggestion(sku.code, lot, quantity, best.location, best.why(quantity), found[1:])


@dataclass(frozen=True)
class PutawayIn:
    from_location: str
    to_location: str
    sku: str
    quantity: Decimal
    lot: str = ""
    serial: str = ""
    lpn: str = ""
    status: str = "available"


@dataclass(frozen=True)
class PutAway:
    movement: int
    sku: str
    lot: str
    serial: str
    lpn: str
    status: str
    quantity: Decimal
    from_location: str
    to_location: str
    suggested: str | None  # where the rule would have put it
    warnings: list[str]
    exceptions: list[int]


async def put_away(site: str, p: PutawayIn, *, actor: str, conn: AsyncConnection) -> PutAway:
    """Move stock from the dock (or QC) into a location, the suggested one or another."""
    await require_site(site, conn=conn)
    if p.from_location == p.to_location:
        raise Invalid(f"stock is already at {p.to_location}: name another location")
    await require_location(site, p.from_location, conn=conn)
    zone_kind = await require_location(site, p.to_location, conn=conn)
    sku = await find_sku(p.sku, conn=conn)
    check_tracking(sku, lot=p.lot, serial=p.serial, quantity=p.quantity)
    best = await candidates(
        site, sku.code, sku.sku_class, p.lot, p.quantity, p.from_location, 1, conn=conn
    )
    suggested = best[0].location if best else None
    warnings = await _warnings(site, p, zone_kind, sku.sku_class, conn=conn)
    leg = Leg(
        site=site, sku=sku.code, quantity=p.quantity, from_location=p.from_location,
        to_location=p.to_location, from_status=p.status, to_status=p.status, kind="putaway",
        occurred_at=now(), actor=actor, lot=p.lot, serial=p.serial, lpn=p.lpn,
    )  # fmt: skip
    posted = await post_from_stock([leg], conn=conn)
    answer = PutAway(
        movement=posted.movements[0], sku=sku.code, lot=p.lot, serial=p.serial, lpn=p.lpn,
        status=p.status, quantity=p.quantity, from_location=p.from_location,
        to_location=p.to_location, suggested=suggested, warnings=warnings,
        exceptions=posted.exceptions,
    )  # fmt: skip
    await audit.record(
        actor, "putaway", site=site, subject=f"movement:{answer.movement}",
        detail=jsonable(answer), conn=conn,
    )  # fmt: skip
    return answer


async def _warnings(
    site: str, p: PutawayIn, zone_kind: str | None, sku_class: str | None,
    *, conn: AsyncConnection,
) -> list[str]:  # fmt: skip
    """What the suggestion rule would not have done (allowed: the clerk sees the shelf)."""
    cur = await conn.execute(
        "SELECT l.capacity, l.sku_class, l.held, l.usable,"
        " (SELECT coalesce(sum(quantity), 0) FROM balances b"
        "  WHERE b.site = l.site AND b.location = l.code AND b.quantity > 0)"
        " FROM locations l WHERE l.site = %s AND l.code = %s",
        (site, p.to_location),
    )
    row = await cur.fetchone()
    assert row is not None
    capacity, location_class, held, usable, on_hand = row
    warnings = []
    if zone_kind != "storage":
        warnings.append(f"{p.to_location} is not in a storage zone")
    if location_class is not None and location_class != sku_class:
        what = f"class {sku_class}" if sku_class else "unclassed"
        warnings.append(f"{p.to_location} takes class {location_class}, the SKU is {what}")
    if capacity is not None and on_hand + p.quantity > capacity:
        warnings.append(f"{p.to_location} over capacity: {on_hand + p.quantity} of {capacity}")
    if held:
        warnings.append(f"{p.to_location} is held: an exception was opened")
    if not usable:
        warnings.append(f"{p.to_location} is marked not usable")
    return warnings
