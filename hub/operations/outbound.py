"""Outbound: release orders into pick tasks with reservations, pick, cancel, ship.

Releasing a line reserves stock by the SKU's pick policy (FIFO by a lot's first receipt,
FEFO by expiry skipping expired lots; stock without a lot comes last) and turns each
location and lot it draws from into one pick task. Reserved quantity lives only in
``reservations`` (document ``pick:<task>``); picked and shipped quantities are sums over
the movements of that document. Rows are locked order → pick tasks (by id) → balances
(in key order), the same order everywhere, so concurrent writers never deadlock and two
releases can never reserve the same stock twice.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from warelink.hub.errors import Conflict, Invalid, NotFound
from warelink.hub.stock import audit, ledger
from warelink.hub.stock.balances import quantity_text
from warelink.hub.stock.ledger import CUSTOMER, Leg
from warelink.hub.stock.sites import require_location, require_site

ZERO = Decimal(0)
PICKABLE_ZONE_KINDS = ("storage",)  # besides locations in no zone
PICKED_TASK_STATES = ("picked", "verified")

# location, sku, lot, serial, lpn: what a reservation names
StockKey = tuple[str, str, str, str, str]


@dataclass(frozen=True)
class OrderLine:
    sku: str
    quantity: Decimal
    lot: str = ""


@dataclass(frozen=True)
class Candidate:
    """Available stock at one balance row, with what orders it for picking."""

    location: str
    sku: str
    lot: str
    serial: str
    lpn: str
    quantity: Decimal
    first_received_at: dt.datetime | None
    expiry: dt.date | None

    @property
    def key(self) -> StockKey:
        return (self.location, self.sku, self.lot, self.serial, self.lpn)


def document(task: int) -> str:
    return f"pick:{task}"


# ------------------------------------------------------------------ release


async def release_order(
    site: str,
    *,
    reference: str,
    customer: str,
    lines: Sequence[OrderLine],
    staging: str | None,
    partial: bool,
    actor: str,
    at: dt.datetime,
    conn: AsyncConnection,
) -> dict[str, Any]:
    """Create the order, its lines, and pick tasks with reservations for what is there."""
    await require_site(site, conn=conn)
    skus = await _skus([line.sku for line in lines], conn=conn)
    for line in lines:
        info = skus.get(line.sku)
        if info is None:
            raise Invalid(f"unknown SKU {line.sku!r}: create it in master data first")
        if info["tracking"] == "serial" and line.quantity != line.quantity.to_integral_value():
            raise Invalid(f"SKU {line.sku!r} is serial-tracked: order whole units")
    to_location = await _staging_location(site, staging, conn=conn)
    cur = await conn.execute(
        "INSERT INTO orders (site, reference, customer, released_at, released_by)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING reference",
        (site, reference, customer, at, actor),
    )
    if await cur.fetchone() is None:
        raise Conflict(f"order {reference!r} already exists at site {site!r}")
    await _insert_lines(site, reference, lines, conn=conn)

    candidates = await _lock_candidates(site, sorted(skus), exclude=to_location, conn=conn)
    reserved = await _reserved(site, sorted(skus), conn=conn)
    today = at.date()
    short: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        ordered = _by_policy(candidates.get(line.sku, []), skus[line.sku]["pick_policy"], today)
        allocations = _allocate(line, ordered, reserved)
        for (location, lot), draws in allocations.items():
            task = await _insert_task(
                site, reference, number, line.sku, lot, location, to_location,
                sum((q for _, q in draws), ZERO), at, conn=conn,
            )  # fmt: skip
            await _insert_reservations(site, task, draws, at, conn=conn)
        got = sum((q for draws in allocations.values() for _, q in draws), ZERO)
        if got < line.quantity:
            short.append({"line": number, "sku": line.sku, "lot": line.lot,
                          "ordered": line.quantity, "short": line.quantity - got})  # fmt: skip
    if short and not partial:
        listed = ", ".join(f"line {s['line']} ({s['sku']}): {s['short']} short" for s in short)
        raise Conflict(f"not enough available stock to release {reference!r}: {listed}")
    shown = [{**s, "ordered": quantity_text(s["ordered"]), "short": quantity_text(s["short"])}
             for s in short]  # fmt: skip
    await audit.record(
        actor, "order.release", site=site, subject=reference,
        detail={"lines": len(lines), "short": shown}, conn=conn,
    )  # fmt: skip
    await _refresh_order_state(site, reference, conn=conn)
    return await get_order(site, reference, conn=conn)


async def _skus(codes: Sequence[str], *, conn: AsyncConnection) -> dict[str, dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT code, tracking, pick_policy FROM skus WHERE code = ANY(%s)", (list(codes),)
    )
    return {row["code"]: row for row in await cur.fetchall()}


async def _staging_location(site: str, named: str | None, *, conn: AsyncConnection) -> str:
    """The named location, or the site's first location in a staging zone."""
    if named is not None:
        await require_location(site, named, conn=conn)
        return named
    cur = await conn.execute(
        "SELECT l.code FROM locations l JOIN zones z ON z.site = l.site AND z.code = l.zone"
        " WHERE l.site = %s AND z.kind = 'staging' AND l.kind = 'internal' ORDER BY l.code"
        " LIMIT 1",
        (site,),
    )
    row = await cur.fetchone()
    if row is None:
        raise Invalid(f"site {site!r} has no location in a staging zone: name one with 'staging'")
    code: str = row[0]
    return code


async def _insert_lines(
    site: str, reference: str, lines: Sequence[OrderLine], *, conn: AsyncConnection
) -> None:
    await conn.execute(
        "INSERT INTO order_lines (site, order_ref, line, sku, lot, quantity)"
        " SELECT %s, %s, * FROM unnest(%s::int[], %s::text[], %s::text[], %s::numeric[])",
        (site, reference, list(range(1, len(lines) + 1)), [line.sku for line in lines],
         [line.lot for line in lines], [line.quantity for line in lines]),
    )  # fmt: skip


async def _lock_candidates(
    site: str, skus: Sequence[str], *, exclude: str, conn: AsyncConnection
) -> dict[str, list[Candidate]]:
    """Available stock at pickable locations, its balance rows locked in key order."""
    cur = await conn.execute(
        "SELECT b.location, b.sku, b.lot, b.serial, b.lpn, b.quantity, lt.first_received_at,"
        " lt.expiry FROM balances b"
        " JOIN locations l ON l.site = b.site AND l.code = b.location"
        " LEFT JOIN zones z ON z.site = l.site AND z.code = l.zone"
        " LEFT JOIN lots lt ON lt.sku = b.sku AND lt.lot = b.lot"
        " WHERE b.site = %s AND b.sku = ANY(%s) AND b.status = 'available' AND b.quantity > 0"
        " AND l.kind = 'internal' AND l.usable AND NOT l.held AND l.code <> %s"
        " AND (l.zone IS NULL OR z.kind = ANY(%s))"
        " ORDER BY b.site, b.location, b.sku, b.lot, b.serial, b.lpn, b.status FOR UPDATE OF b",
        (site, list(skus), exclude, list(PICKABLE_ZONE_KINDS)),
    )
    found: dict[str, list[Candidate]] = defaultdict(list)
    for row in await cur.fetchall():
        candidate = Candidate(*row)
        found[candidate.sku].append(candidate)
    return found


async def _reserved(
    site: str, skus: Sequence[str], *, conn: AsyncConnection
) -> dict[StockKey, Decimal]:
    """Open reservations by balance row (read after the rows are locked)."""
    cur = await conn.execute(
        "SELECT location, sku, lot, serial, lpn, sum(quantity) FROM reservations"
        " WHERE site = %s AND sku = ANY(%s) AND state = 'open' GROUP BY 1, 2, 3, 4, 5",
        (site, list(skus)),
    )
    reserved: dict[StockKey, Decimal] = defaultdict(Decimal)
    for *key, quantity in await cur.fetchall():
        reserved[(key[0], key[1], key[2], key[3], key[4])] = quantity
    return reserved


def _by_policy(candidates: Sequence[Candidate], policy: str, today: dt.date) -> list[Candidate]:
    """FIFO: oldest lot first; FEFO: soonest expiry first, expired lots left out.

    Stock without a lot comes after every lot; ties go by location code.
    """
    far = dt.datetime.max.replace(tzinfo=dt.UTC)

    def received(c: Candidate) -> dt.datetime:
        return c.first_received_at or far

    if policy == "fefo":
        usable = [c for c in candidates if c.expiry is None or c.expiry >= today]
        return sorted(
            usable,
            key=lambda c: (c.lot == "", c.expiry is None, c.expiry or dt.date.max, received(c),
                           c.lot, c.location, c.serial, c.lpn),
        )  # fmt: skip
    return sorted(
        candidates, key=lambda c: (c.lot == "", received(c), c.lot, c.location, c.serial, c.lpn)
    )


def _allocate(
    line: OrderLine, candidates: Sequence[Candidate], reserved: dict[StockKey, Decimal]
) -> dict[tuple[str, str], list[tuple[StockKey, Decimal]]]:
    """Draw the line's quantity from free stock in order; one group per location and lot."""
    remaining = line.quantity
    groups: dict[tuple[str, str], list[tuple[StockKey, Decimal]]] = {}
    for candidate in candidates:
        if remaining <= 0:
            break
        if line.lot and candidate.lot != line.lot:
            continue
        free = candidate.quantity - reserved[candidate.key]
        take = min(free, remaining)
        if take <= 0:
            continue
        reserved[candidate.key] += take
        remaining -= take
        groups.setdefault((candidate.location, candidate.lot), []).append((candidate.key, take))
    return groups


async def _insert_task(
    site: str, reference: str, line: int, sku: str, lot: str, location: str, to_location: str,
    quantity: Decimal, at: dt.datetime, *, conn: AsyncConnection,
) -> int:  # fmt: skip
    cur = await conn.execute(
        "INSERT INTO pick_tasks (site, order_ref, line, sku, lot, location, to_location,"
        " quantity, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (site, reference, line, sku, lot, location, to_location, quantity, at),
    )
    row = await cur.fetchone()
    assert row is not None
    task: int = row[0]
    return task


async def _insert_reservations(
    site: str,
    task: int,
    draws: Sequence[tuple[StockKey, Decimal]],
    at: dt.datetime,
    *,
    conn: AsyncConnection,
) -> None:
    await conn.execute(
        "INSERT INTO reservations (site, location, sku, lot, serial, lpn, quantity, document,"
        " created_at) SELECT %s, *, %s, %s FROM unnest(%s::text[], %s::text[], %s::text[],"
        " %s::text[], %s::text[], %s::numeric[])",
        (site, document(task), at, *[[key[i] for key, _ in draws] for i in range(5)],
         [quantity for _, quantity in draws]),
    )  # fmt: skip


# ------------------------------------------------------------------ reading


_TASK_COLUMNS = (
    "t.id, t.site, t.order_ref, t.line, t.sku, t.lot, t.location, t.to_location, t.quantity,"
    " t.state, t.created_at, t.picked_by, t.picked_at,"
    " coalesce((SELECT sum(r.quantity) FROM reservations r WHERE r.document = 'pick:' || t.id"
    " AND r.state = 'open'), 0) AS reserved,"
    " coalesce((SELECT sum(m.quantity) FROM movements m WHERE m.document = 'pick:' || t.id"
    " AND m.kind = 'pick' AND NOT EXISTS (SELECT 1 FROM movements x WHERE x.reverses = m.id)),"
    " 0) AS picked,"
    " coalesce((SELECT sum(m.quantity) FROM movements m WHERE m.document = 'pick:' || t.id"
    " AND m.kind = 'ship' AND NOT EXISTS (SELECT 1 FROM movements x WHERE x.reverses = m.id)),"
    " 0) AS shipped"
)


async def list_tasks(
    site: str,
    *,
    order_ref: str | None = None,
    state: str | None = None,
    limit: int = 100,
    offset: int = 0,
    conn: AsyncConnection,
) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"SELECT {_TASK_COLUMNS} FROM pick_tasks t WHERE t.site = %s"
        " AND (%s::text IS NULL OR t.order_ref = %s) AND (%s::text IS NULL OR t.state = %s)"
        " ORDER BY t.id LIMIT %s OFFSET %s",
        (site, order_ref, order_ref, state, state, limit, offset),
    )
    return await cur.fetchall()


async def get_task(site: str, task: int, *, conn: AsyncConnection) -> dict[str, Any]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"SELECT {_TASK_COLUMNS} FROM pick_tasks t WHERE t.site = %s AND t.id = %s", (site, task)
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no pick task {task} at site {site!r}")
    return row


async def list_orders(
    site: str,
    *,
    state: str | None = None,
    limit: int = 100,
    offset: int = 0,
    conn: AsyncConnection,
) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT site, reference, customer, state, released_at, released_by, shipped_at"
        " FROM orders WHERE site = %s AND (%s::text IS NULL OR state = %s)"
        " ORDER BY released_at, reference LIMIT %s OFFSET %s",
        (site, state, state, limit, offset),
    )
    return await cur.fetchall()


async def get_order(site: str, reference: str, *, conn: AsyncConnection) -> dict[str, Any]:
    """The order with its lines (ordered, planned, reserved, picked, shipped, short)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT site, reference, customer, state, released_at, released_by, shipped_at"
        " FROM orders WHERE site = %s AND reference = %s",
        (site, reference),
    )
    order = await cur.fetchone()
    if order is None:
        raise NotFound(f"no order {reference!r} at site {site!r}")
    tasks = await list_tasks(site, order_ref=reference, limit=10_000, conn=conn)
    await cur.execute(
        "SELECT line, sku, lot, quantity FROM order_lines WHERE site = %s AND order_ref = %s"
        " ORDER BY line",
        (site, reference),
    )
    lines = await cur.fetchall()
    for line in lines:
        mine = [t for t in tasks if t["line"] == line["line"] and t["state"] != "cancelled"]
        line["planned"] = sum((t["quantity"] for t in mine), ZERO)
        line["reserved"] = sum((t["reserved"] for t in mine), ZERO)
        line["picked"] = sum((t["picked"] for t in mine), ZERO)
        line["shipped"] = sum((t["shipped"] for t in mine), ZERO)
        coming = sum((t["quantity"] if t["state"] == "open" else t["picked"] for t in mine), ZERO)
        line["short"] = max(line["quantity"] - coming, ZERO)
    await cur.execute(
        "SELECT * FROM verifications WHERE site = %s AND order_ref = %s ORDER BY id",
        (site, reference),
    )
    verifications = await cur.fetchall()
    return {**order, "lines": lines, "tasks": tasks, "verifications": verifications}


# ------------------------------------------------------------------ locks and state


async def lock_order(site: str, reference: str, *, conn: AsyncConnection) -> dict[str, Any]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT reference, state FROM orders WHERE site = %s AND reference = %s FOR UPDATE",
        (site, reference),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no order {reference!r} at site {site!r}")
    return row


async def _lock_task(site: str, task: int, *, conn: AsyncConnection) -> dict[str, Any]:
    """The task, locked after its order (the lock order every outbound write keeps)."""
    cur = await conn.execute(
        "SELECT order_ref FROM pick_tasks WHERE site = %s AND id = %s", (site, task)
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no pick task {task} at site {site!r}")
    await lock_order(site, row[0], conn=conn)
    dcur = conn.cursor(row_factory=dict_row)
    await dcur.execute("SELECT * FROM pick_tasks WHERE id = %s FOR UPDATE", (task,))
    locked = await dcur.fetchone()
    assert locked is not None
    return locked


async def _refresh_order_state(site: str, reference: str, *, conn: AsyncConnection) -> None:
    """A released order whose tasks are all picked (or cancelled) is 'picked', and back."""
    await conn.execute(
        "UPDATE orders o SET state = CASE"
        " WHEN EXISTS (SELECT 1 FROM pick_tasks t WHERE t.site = o.site"
        "   AND t.order_ref = o.reference AND t.state = 'open') THEN 'released'"
        " WHEN EXISTS (SELECT 1 FROM pick_tasks t WHERE t.site = o.site"
        "   AND t.order_ref = o.reference AND t.state IN ('picked', 'verified')) THEN 'picked'"
        " ELSE 'released' END"
        " WHERE o.site = %s AND o.reference = %s AND o.state IN ('released', 'picked')",
        (site, reference),
    )


async def _close_reservations(
    task: int, consumed: Decimal, at: dt.datetime, *, conn: AsyncConnection
) -> None:
    """Consume the task's open reservations up to ``consumed``; release the rest."""
    cur = await conn.execute(
        "SELECT id, quantity FROM reservations WHERE document = %s AND state = 'open'"
        " ORDER BY id FOR UPDATE",
        (document(task),),
    )
    left = consumed
    for rid, quantity in await cur.fetchall():
        if left >= quantity:
            await _set_reservation(rid, "consumed", at, conn=conn)
        elif left > 0:  # split: the part picked is consumed, the rest released
            await conn.execute(
                "INSERT INTO reservations (site, location, sku, lot, serial, lpn, quantity,"
                " document, state, created_at, closed_at) SELECT site, location, sku, lot,"
                " serial, lpn, quantity - %s, document, 'released', created_at, %s"
                " FROM reservations WHERE id = %s",
                (left, at, rid),
            )
            await conn.execute(
                "UPDATE reservations SET quantity = %s, state = 'consumed', closed_at = %s"
                " WHERE id = %s",
                (left, at, rid),
            )
        else:
            await _set_reservation(rid, "released", at, conn=conn)
        left = max(left - quantity, ZERO)


async def _set_reservation(rid: int, state: str, at: dt.datetime, *, conn: AsyncConnection) -> None:
    await conn.execute(
        "UPDATE reservations SET state = %s, closed_at = %s WHERE id = %s", (state, at, rid)
    )


# ------------------------------------------------------------------ pick


async def pick(
    site: str,
    task: int,
    *,
    location: str,
    lot: str | None,
    quantity: Decimal,
    serials: Sequence[str] | None,
    actor: str,
    at: dt.datetime,
    conn: AsyncConnection,
) -> dict[str, Any]:
    """Confirm a pick: location → the task's staging location, as the picker says it went.

    The picker may take another location or lot than suggested, never more than the task
    asks, and only stock that is there and not reserved for another task (else 409).
    """
    row = await _lock_task(site, task, conn=conn)
    if row["state"] != "open":
        raise Conflict(f"pick task {task} is {row['state']}: only an open task can be picked")
    if quantity > row["quantity"]:
        raise Invalid(f"pick task {task} asks for {row['quantity']}: {quantity} is too many")
    lot = row["lot"] if lot is None else lot
    await require_location(site, location, conn=conn)
    tracking = (await _skus([row["sku"]], conn=conn))[row["sku"]]["tracking"]
    wanted = list(serials or [])
    if tracking == "serial":
        if len(set(wanted)) != len(wanted) or Decimal(len(wanted)) != quantity:
            raise Invalid(f"SKU {row['sku']!r} is serial-tracked: name {quantity} distinct serials")
    elif wanted:
        raise Invalid(f"SKU {row['sku']!r} is not serial-tracked: leave 'serials' out")
    draws = await _draw(site, task, row["sku"], location, lot, quantity, wanted, conn=conn)
    legs = [
        Leg(site=site, sku=row["sku"], quantity=q, from_location=location,
            to_location=row["to_location"], kind="pick", occurred_at=at, actor=actor,
            lot=lot, serial=serial, lpn=lpn, document=document(task))
        for (serial, lpn), q in draws
    ]  # fmt: skip
    posted = await ledger.post(legs, conn=conn)
    await _close_reservations(task, quantity, at, conn=conn)
    await conn.execute(
        "UPDATE pick_tasks SET state = 'picked', picked_by = %s, picked_at = %s WHERE id = %s",
        (actor, at, task),
    )
    await _refresh_order_state(site, row["order_ref"], conn=conn)
    await audit.record(
        actor, "pick_task.pick", site=site, subject=str(task),
        detail={"order": row["order_ref"], "location": location, "lot": lot,
                "quantity": quantity_text(quantity),
                "short": quantity_text(row["quantity"] - quantity),
                "serials": wanted, "movements": posted.movements},
        conn=conn,
    )  # fmt: skip
    return await get_task(site, task, conn=conn)


async def _draw(
    site: str,
    task: int,
    sku: str,
    location: str,
    lot: str,
    quantity: Decimal,
    serials: Sequence[str],
    *,
    conn: AsyncConnection,
) -> list[tuple[tuple[str, str], Decimal]]:
    """Which balance rows (serial, lpn) the pick takes from: this task's reserved rows first."""
    cur = await conn.execute(
        "SELECT serial, lpn, quantity FROM balances WHERE site = %s AND location = %s"
        " AND sku = %s AND lot = %s AND status = 'available' AND quantity > 0"
        " AND (cardinality(%s::text[]) = 0 OR serial = ANY(%s::text[]))"
        " ORDER BY site, location, sku, lot, serial, lpn, status FOR UPDATE",
        (site, location, sku, lot, list(serials), list(serials)),
    )
    rows = await cur.fetchall()
    cur = await conn.execute(
        "SELECT serial, lpn, sum(quantity) FILTER (WHERE document <> %s),"
        " sum(quantity) FILTER (WHERE document = %s) FROM reservations"
        " WHERE site = %s AND location = %s AND sku = %s AND lot = %s AND state = 'open'"
        " GROUP BY 1, 2",
        (document(task), document(task), site, location, sku, lot),
    )
    others: dict[tuple[str, str], Decimal] = {}
    mine: set[tuple[str, str]] = set()
    for serial, lpn, by_others, by_me in await cur.fetchall():
        others[(serial, lpn)] = by_others or ZERO
        if by_me:
            mine.add((serial, lpn))
    rows.sort(key=lambda r: (r[0], r[1]) not in mine)
    draws: list[tuple[tuple[str, str], Decimal]] = []
    left = quantity
    for serial, lpn, on_hand in rows:
        take = min(on_hand - others.get((serial, lpn), ZERO), left)
        if take > 0:
            draws.append(((serial, lpn), take))
            left -= take
    if left > 0:
        what = f"{sku}" + (f" lot {lot!r}" if lot else "")
        if serials:
            taken = {serial for (serial, _), _ in draws}
            missing = [s for s in serials if s not in taken]
            raise Conflict(f"serials {missing} of {what} are not free to pick at {location!r}")
        raise Conflict(
            f"{location!r} has only {quantity - left} of {what} free to pick, not {quantity}:"
            " pick elsewhere, pick short, or report it"
        )
    return draws


# ------------------------------------------------------------------ cancel


async def cancel_task(
    site: str, task: int, *, reason: str, actor: str, at: dt.datetime, conn: AsyncConnection
) -> dict[str, Any]:
    """Cancel a task: reservations released, a pick already made reversed back to its shelf."""
    row = await _lock_task(site, task, conn=conn)
    if row["state"] in ("shipped", "cancelled"):
        raise Conflict(f"pick task {task} is {row['state']}: it cannot be cancelled")
    reversed_ = await _undo_task(task, reason=reason, actor=actor, at=at, conn=conn)
    await _refresh_order_state(site, row["order_ref"], conn=conn)
    await audit.record(
        actor, "pick_task.cancel", site=site, subject=str(task),
        detail={"order": row["order_ref"], "reason": reason, "reversed": reversed_},
        conn=conn,
    )  # fmt: skip
    return await get_task(site, task, conn=conn)


async def cancel_order(
    site: str, reference: str, *, reason: str, actor: str, at: dt.datetime, conn: AsyncConnection
) -> dict[str, Any]:
    """Cancel an order that has not shipped: every task of it cancelled as above."""
    order = await lock_order(site, reference, conn=conn)
    if order["state"] in ("shipped", "cancelled"):
        raise Conflict(f"order {reference!r} is {order['state']}: it cannot be cancelled")
    cur = await conn.execute(
        "SELECT id FROM pick_tasks WHERE site = %s AND order_ref = %s AND state <> 'cancelled'"
        " ORDER BY id FOR UPDATE",
        (site, reference),
    )
    tasks = [r[0] for r in await cur.fetchall()]
    reversed_: list[int] = []
    for task in tasks:
        reversed_ += await _undo_task(task, reason=reason, actor=actor, at=at, conn=conn)
    await conn.execute(
        "UPDATE orders SET state = 'cancelled' WHERE site = %s AND reference = %s",
        (site, reference),
    )
    await audit.record(
        actor, "order.cancel", site=site, subject=reference,
        detail={"reason": reason, "tasks": tasks, "reversed": reversed_}, conn=conn,
    )  # fmt: skip
    return await get_order(site, reference, conn=conn)


async def _undo_task(
    task: int, *, reason: str, actor: str, at: dt.datetime, conn: AsyncConnection
) -> list[int]:
    """Release the task's reservations, reverse its standing picks; returns reversal ids."""
    await _close_reservations(task, ZERO, at, conn=conn)
    cur = await conn.execute(
        "SELECT m.id FROM movements m WHERE m.document = %s AND m.kind = 'pick'"
        " AND NOT EXISTS (SELECT 1 FROM movements x WHERE x.reverses = m.id) ORDER BY m.id",
        (document(task),),
    )
    reversals: list[int] = []
    for (movement,) in await cur.fetchall():
        posted = await ledger.reverse(movement, actor=actor, reason=reason, conn=conn)
        reversals += posted.movements
    await conn.execute("UPDATE pick_tasks SET state = 'cancelled' WHERE id = %s", (task,))
    return reversals


# ------------------------------------------------------------------ ship


async def ship_order(
    site: str,
    reference: str,
    *,
    override: bool,
    reason: str | None,
    actor: str,
    at: dt.datetime,
    conn: AsyncConnection,
) -> dict[str, Any]:
    """Ship every picked task of the order: staging → CUSTOMER, document ``pick:<task>``.

    Refused while a task is still open, when nothing was picked, and when the latest
    verification of any SKU/lot of the order failed, unless ``override`` (the caller has
    checked the right to it).
    """
    order = await lock_order(site, reference, conn=conn)
    if order["state"] in ("shipped", "cancelled"):
        raise Conflict(f"order {reference!r} is {order['state']}: it cannot be shipped")
    cur = await conn.execute(
        "SELECT id, state FROM pick_tasks WHERE site = %s AND order_ref = %s ORDER BY id"
        " FOR UPDATE",
        (site, reference),
    )
    tasks = await cur.fetchall()
    still_open = [task for task, state in tasks if state == "open"]
    if still_open:
        raise Conflict(
            f"order {reference!r} has open pick tasks {still_open}: pick or cancel them first"
        )
    failed = await failed_verifications(site, reference, conn=conn)
    if failed and not override:
        listed = ", ".join(f"#{v['id']} ({v['sku']}{'/' + v['lot'] if v['lot'] else ''})"
                           for v in failed)  # fmt: skip
        raise Conflict(
            f"order {reference!r} failed verification {listed}: verify again, or a supervisor"
            " ships it with override"
        )
    if override and not (reason or "").strip():
        raise Invalid("an override needs a reason")
    picked = [task for task, state in tasks if state in PICKED_TASK_STATES]
    legs = await _ship_legs(site, picked, actor=actor, at=at, conn=conn)
    if not legs:
        raise Conflict(f"order {reference!r} has nothing picked to ship")
    posted = await ledger.post(legs, conn=conn)
    await conn.execute("UPDATE pick_tasks SET state = 'shipped' WHERE id = ANY(%s)", (picked,))
    await conn.execute(
        "UPDATE orders SET state = 'shipped', shipped_at = %s WHERE site = %s AND reference = %s",
        (at, site, reference),
    )
    await audit.record(
        actor, "order.ship", site=site, subject=reference,
        detail={"tasks": picked, "movements": posted.movements, "override": override,
                "failed_verifications": [v["id"] for v in failed], "reason": reason},
        conn=conn,
    )  # fmt: skip
    return await get_order(site, reference, conn=conn)


async def _ship_legs(
    site: str, tasks: Sequence[int], *, actor: str, at: dt.datetime, conn: AsyncConnection
) -> list[Leg]:
    """One ship leg per standing pick movement: what was picked is what leaves."""
    cur = await conn.execute(
        "SELECT m.document, m.to_location, m.sku, m.lot, m.serial, m.lpn, m.quantity"
        " FROM movements m WHERE m.document = ANY(%s) AND m.kind = 'pick'"
        " AND NOT EXISTS (SELECT 1 FROM movements x WHERE x.reverses = m.id) ORDER BY m.id",
        ([document(t) for t in tasks],),
    )
    return [
        Leg(site=site, sku=sku, quantity=quantity, from_location=staging, to_location=CUSTOMER,
            kind="ship", occurred_at=at, actor=actor, lot=lot, serial=serial, lpn=lpn,
            document=doc)
        for doc, staging, sku, lot, serial, lpn, quantity in await cur.fetchall()
    ]  # fmt: skip


async def failed_verifications(
    site: str, reference: str, *, conn: AsyncConnection
) -> list[dict[str, Any]]:
    """The latest verification of each SKU/lot of the order, where it failed."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT * FROM (SELECT DISTINCT ON (sku, lot) id, sku, lot, ok, detail"
        " FROM verifications WHERE site = %s AND order_ref = %s ORDER BY sku, lot, id DESC) v"
        " WHERE NOT ok ORDER BY id",
        (site, reference),
    )
    return await cur.fetchall()


# ------------------------------------------------------------------ what verification reads


async def picked_of_order(
    site: str, reference: str, sku: str, lot: str, *, conn: AsyncConnection
) -> tuple[Decimal, set[str]]:
    """Units of a SKU (and lot, unless '') standing picked for an order, and their serials."""
    cur = await conn.execute(
        "SELECT m.serial, m.quantity FROM movements m"
        " JOIN pick_tasks t ON m.document = 'pick:' || t.id"
        " WHERE t.site = %s AND t.order_ref = %s AND t.state <> 'cancelled' AND m.sku = %s"
        " AND (%s = '' OR m.lot = %s) AND m.kind = 'pick'"
        " AND NOT EXISTS (SELECT 1 FROM movements x WHERE x.reverses = m.id)",
        (site, reference, sku, lot, lot),
    )
    rows = await cur.fetchall()
    return sum((q for _, q in rows), ZERO), {serial for serial, _ in rows if serial}


async def mark_verified(
    site: str, reference: str, sku: str, lot: str, *, conn: AsyncConnection
) -> list[int]:
    """Picked tasks of the order holding that SKU (and lot) become 'verified'."""
    cur = await conn.execute(
        "UPDATE pick_tasks t SET state = 'verified' WHERE t.site = %s AND t.order_ref = %s"
        " AND t.sku = %s AND t.state = 'picked' AND (%s = '' OR EXISTS (SELECT 1 FROM"
        " movements m WHERE m.document = 'pick:' || t.id AND m.kind = 'pick' AND m.lot = %s))"
        " RETURNING t.id",
        (site, reference, sku, lot, lot),
    )
    return sorted(row[0] for row in await cur.fetchall())
