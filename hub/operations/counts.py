"""Cycle counts by location: blind counting, variance against the ledger, approval.

A count is a fact about a shelf at a moment (``counted_at``). Its baseline is what the
ledger says was at the location then: the sum of every movement of that SKU/lot, in
every status, serial and licence plate, with ``occurred_at <= counted_at`` — so device
events that arrive late but happened before the count are part of the comparison.
Approval posts the difference as ``count`` movements against ADJUSTMENT (baseline plus
delta, never "set quantity"); after that the ledger compensates late events dated
before the count, so its result stands.

States: open → counted → approved | rejected | recount (a new count, ``recount_of``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from warelink.hub.errors import Conflict, Forbidden, Invalid, NotFound
from warelink.hub.stock import audit, exceptions, ledger
from warelink.hub.stock.sites import require_location, require_site

STATES = ("open", "counted", "recount", "approved", "rejected")
# what each step needs the count to be in, and what it leaves it in
TRANSITIONS = {
    "record": ("open", "counted"),
    "approve": ("counted", "approved"),
    "recount": ("counted", "recount"),
    "reject": ("counted", "rejected"),
}
# a short shortfall is taken from stock in this status order
_STATUS_ORDER = {"available": 0, "damaged": 1, "qc_hold": 2}

Item = tuple[str, str]  # sku, lot


@dataclass(frozen=True)
class CountedLine:
    sku: str
    lot: str
    counted: Decimal


# ------------------------------------------------------------------ checks shared with adjustments


async def require_skus(skus: Sequence[str], *, conn: AsyncConnection) -> None:
    cur = await conn.execute(
        "SELECT s FROM unnest(%s::text[]) AS s WHERE NOT EXISTS"
        " (SELECT 1 FROM skus WHERE code = s) ORDER BY s",
        (sorted(set(skus)),),
    )
    unknown = [row[0] for row in await cur.fetchall()]
    if unknown:
        raise Invalid(f"unknown SKU(s): {', '.join(unknown)}")


# ------------------------------------------------------------------ the ledger as of a moment


async def baselines(
    site: str, location: str, items: Sequence[Item], *, as_of: dt.datetime, conn: AsyncConnection
) -> dict[Item, Decimal]:
    """The ledger's quantity of each SKU/lot at the location as of a moment, all statuses."""
    if not items:
        return {}
    cur = await conn.execute(
        "SELECT m.sku, m.lot, sum(CASE WHEN m.to_site = %(site)s AND m.to_location = %(loc)s"
        " THEN m.quantity ELSE 0 END - CASE WHEN m.site = %(site)s AND m.from_location ="
        " %(loc)s THEN m.quantity ELSE 0 END)"
        " FROM movements m JOIN unnest(%(skus)s::text[], %(lots)s::text[]) AS i (sku, lot)"
        " ON i.sku = m.sku AND i.lot = m.lot"
        " WHERE m.occurred_at <= %(as_of)s AND ((m.to_site = %(site)s AND m.to_location ="
        " %(loc)s) OR (m.site = %(site)s AND m.from_location = %(loc)s))"
        " GROUP BY m.sku, m.lot",
        {"site": site, "loc": location, "as_of": as_of,
         "skus": [i[0] for i in items], "lots": [i[1] for i in items]},
    )  # fmt: skip
    found = {(sku, lot): qty for sku, lot, qty in await cur.fetchall()}
    return {item: found.get(item, Decimal(0)) for item in items}


async def _items_ever_at(site: str, location: str, *, conn: AsyncConnection) -> list[Item]:
    """Every SKU/lot the location has held (a balance row stays once made)."""
    cur = await conn.execute(
        "SELECT DISTINCT sku, lot FROM balances WHERE site = %s AND location = %s ORDER BY 1, 2",
        (site, location),
    )
    return [(sku, lot) for sku, lot in await cur.fetchall()]


# ------------------------------------------------------------------ SQL


async def _lock(site: str, count_id: int, *, conn: AsyncConnection) -> dict[str, Any]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT * FROM counts WHERE id = %s AND site = %s FOR UPDATE", (count_id, site)
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no count {count_id} at site {site!r}")
    return row


def _check_step(count: dict[str, Any], step: str) -> None:
    needs, _ = TRANSITIONS[step]
    if count["state"] != needs:
        raise Conflict(f"count {count['id']} is {count['state']}: it must be {needs} to {step}")


async def _insert_count(
    site: str, location: str, *, actor: str, recount_of: int | None, conn: AsyncConnection
) -> int:
    cur = await conn.execute(
        "INSERT INTO counts (site, location, recount_of, created_by) VALUES (%s, %s, %s, %s)"
        " RETURNING id",
        (site, location, recount_of, actor),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def _set_state(count_id: int, state: str, *, actor: str, conn: AsyncConnection) -> None:
    await conn.execute(
        "UPDATE counts SET state = %s, decided_by = %s, decided_at = now() WHERE id = %s",
        (state, actor, count_id),
    )


async def _lines(count_id: int, *, conn: AsyncConnection) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT sku, lot, counted, baseline FROM count_lines WHERE count_id = %s ORDER BY 1, 2",
        (count_id,),
    )
    return await cur.fetchall()


# ------------------------------------------------------------------ steps


async def open_count(site: str, location: str, *, actor: str, conn: AsyncConnection) -> int:
    """A new count of a location, to be counted blind (no system quantities shown)."""
    await require_site(site, conn=conn)
    await require_location(site, location, conn=conn)
    count_id = await _insert_count(site, location, actor=actor, recount_of=None, conn=conn)
    await audit.record(actor, "count.open", site=site, subject=f"count:{count_id}",
                       detail={"location": location}, conn=conn)  # fmt: skip
    return count_id


async def record(
    site: str,
    count_id: int,
    lines: Sequence[CountedLine],
    *,
    actor: str,
    counted_at: dt.datetime,
    complete: bool,
    conn: AsyncConnection,
) -> None:
    """Record what was counted; ``complete``: whatever the location held and is not on a
    line was counted as zero."""
    count = await _lock(site, count_id, conn=conn)
    _check_step(count, "record")
    await _record(count, lines, actor=actor, counted_at=counted_at, complete=complete,
                  conn=conn)  # fmt: skip


async def record_counted(
    site: str,
    location: str,
    lines: Sequence[CountedLine],
    *,
    actor: str,
    counted_at: dt.datetime,
    conn: AsyncConnection,
) -> int:
    """A device's count: a count already counted (lines as given), variance checked."""
    count_id = await _insert_count(site, location, actor=actor, recount_of=None, conn=conn)
    count = {"id": count_id, "site": site, "location": location}
    await _record(count, lines, actor=actor, counted_at=counted_at, complete=False, conn=conn)
    return count_id


async def _record(
    count: dict[str, Any],
    lines: Sequence[CountedLine],
    *,
    actor: str,
    counted_at: dt.datetime,
    complete: bool,
    conn: AsyncConnection,
) -> None:
    items = [(line.sku, line.lot) for line in lines]
    if any(line.counted < 0 for line in lines):
        raise Invalid("a counted quantity cannot be negative")
    if len(set(items)) != len(items):
        raise Invalid("each SKU/lot may appear on one line only")
    if counted_at > dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5):
        raise Invalid(f"counted_at {counted_at.isoformat()} is in the future")
    await require_skus([line.sku for line in lines], conn=conn)
    counted = {(line.sku, line.lot): line.counted for line in lines}
    if complete:
        for item in await _items_ever_at(count["site"], count["location"], conn=conn):
            counted.setdefault(item, Decimal(0))
    site, location = count["site"], count["location"]
    await conn.execute(
        "INSERT INTO count_lines (count_id, sku, lot, counted)"
        " SELECT %s, * FROM unnest(%s::text[], %s::text[], %s::numeric[])",
        (count["id"], [i[0] for i in counted], [i[1] for i in counted], list(counted.values())),
    )
    await conn.execute(
        "UPDATE counts SET state = 'counted', counted_by = %s, counted_at = %s WHERE id = %s",
        (actor, counted_at, count["id"]),
    )
    base = await baselines(site, location, list(counted), as_of=counted_at, conn=conn)
    off = sorted(item for item, qty in counted.items() if qty != base[item])
    if off:
        # which lines differ, not by how much: the exception queue is not blind
        await exceptions.open_many(
            [exceptions.Raised(site, "count_variance", f"count:{count['id']}",
                               {"count": count["id"], "location": location,
                                "lines": [{"sku": s, "lot": lot} for s, lot in off]}, actor)],
            conn=conn,
        )  # fmt: skip
    await audit.record(actor, "count.record", site=site, subject=f"count:{count['id']}",
                       detail={"lines": len(counted), "counted_at": counted_at.isoformat(),
                               "variances": len(off)}, conn=conn)  # fmt: skip


async def approve(site: str, count_id: int, *, actor: str, conn: AsyncConnection) -> list[int]:
    """Store each line's baseline and post the difference; returns the movements posted."""
    count = await _lock(site, count_id, conn=conn)
    _check_step(count, "approve")
    if count["counted_by"] == actor:
        raise Forbidden(f"count {count_id} was counted by {actor}: another supervisor approves")
    lines = await _lines(count_id, conn=conn)
    items = [(line["sku"], line["lot"]) for line in lines]
    base = await baselines(site, count["location"], items, as_of=count["counted_at"], conn=conn)
    await conn.execute(
        "UPDATE count_lines l SET baseline = b.baseline FROM unnest(%s::text[], %s::text[],"
        " %s::numeric[]) AS b (sku, lot, baseline)"
        " WHERE l.count_id = %s AND l.sku = b.sku AND l.lot = b.lot",
        ([i[0] for i in items], [i[1] for i in items], [base[i] for i in items], count_id),
    )
    legs: list[ledger.Leg] = []
    for line in lines:
        item = (line["sku"], line["lot"])
        delta = line["counted"] - base[item]
        legs += await _delta_legs(count, item, delta, actor=actor, conn=conn)
    posted = await ledger.post(legs, conn=conn)
    await _set_state(count_id, "approved", actor=actor, conn=conn)
    await exceptions.close_open(
        site, "count_variance", f"count:{count_id}", state="resolved",
        resolution=f"count {count_id} approved by {actor}: variance posted", actor=actor,
        conn=conn,
    )  # fmt: skip
    await audit.record(actor, "count.approve", site=site, subject=f"count:{count_id}",
                       detail={"movements": posted.movements}, conn=conn)  # fmt: skip
    return posted.movements


async def _delta_legs(
    count: dict[str, Any], item: Item, delta: Decimal, *, actor: str, conn: AsyncConnection
) -> list[ledger.Leg]:
    """Found stock comes in as available; missing stock leaves from what is there now
    (available first, whole serials), any rest from plain available stock."""
    site, location = count["site"], count["location"]
    sku, lot = item

    def leg(quantity: Decimal, *, found: bool, serial: str = "", lpn: str = "",
            status: str = "available") -> ledger.Leg:  # fmt: skip
        return ledger.Leg(
            site=site, sku=sku, lot=lot, serial=serial, lpn=lpn, quantity=quantity,
            from_location=ledger.ADJUSTMENT if found else location,
            to_location=location if found else ledger.ADJUSTMENT,
            from_status="available" if found else status,
            to_status=status if found else "available",
            kind="count", occurred_at=count["counted_at"], actor=actor,
            document=f"count:{count['id']}",
        )  # fmt: skip

    if delta > 0:
        return [leg(delta, found=True)]
    missing = -delta
    legs: list[ledger.Leg] = []
    if missing == 0:
        return legs
    cur = await conn.execute(
        "SELECT serial, lpn, status, quantity FROM balances WHERE site = %s AND location = %s"
        " AND sku = %s AND lot = %s AND quantity > 0 ORDER BY serial, lpn",
        (site, location, sku, lot),
    )
    rows = sorted(await cur.fetchall(), key=lambda r: (_STATUS_ORDER.get(r[2], 9), r[0] != ""))
    for serial, lpn, status, quantity in rows:
        take = Decimal(1) if serial else min(missing, quantity)
        if serial and missing < 1:
            continue
        legs.append(leg(take, found=False, serial=serial, lpn=lpn, status=status))
        missing -= take
        if missing == 0:
            break
    if missing > 0:
        legs.append(leg(missing, found=False))
    return legs


async def request_recount(site: str, count_id: int, *, actor: str, conn: AsyncConnection) -> int:
    """Set this count aside and open a new count of the same location; returns its id."""
    count = await _lock(site, count_id, conn=conn)
    _check_step(count, "recount")
    new_id = await _insert_count(site, count["location"], actor=actor, recount_of=count_id,
                                 conn=conn)  # fmt: skip
    await _set_state(count_id, "recount", actor=actor, conn=conn)
    await exceptions.close_open(
        site, "count_variance", f"count:{count_id}", state="dismissed",
        resolution=f"recount requested by {actor} as count {new_id}", actor=actor, conn=conn,
    )  # fmt: skip
    await audit.record(actor, "count.recount", site=site, subject=f"count:{count_id}",
                       detail={"recount": new_id}, conn=conn)  # fmt: skip
    return new_id


async def reject(site: str, count_id: int, *, actor: str, conn: AsyncConnection) -> None:
    """Set the count aside: nothing is posted."""
    count = await _lock(site, count_id, conn=conn)
    _check_step(count, "reject")
    await _set_state(count_id, "rejected", actor=actor, conn=conn)
    await exceptions.close_open(
        site, "count_variance", f"count:{count_id}", state="dismissed",
        resolution=f"count {count_id} rejected by {actor}", actor=actor, conn=conn,
    )  # fmt: skip
    await audit.record(actor, "count.reject", site=site, subject=f"count:{count_id}", conn=conn)


# ------------------------------------------------------------------ reading


async def get(
    site: str, count_id: int, *, with_variance: bool, conn: AsyncConnection
) -> dict[str, Any]:
    """A count and its lines; ``with_variance`` adds baseline and variance (not blind)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT c.*, (SELECT min(r.id) FROM counts r WHERE r.recount_of = c.id) AS recount,"
        " (SELECT coalesce(array_agg(m.id ORDER BY m.id), '{}') FROM movements m"
        "  WHERE m.document = 'count:' || c.id) AS movements"
        " FROM counts c WHERE c.id = %s AND c.site = %s",
        (count_id, site),
    )
    count = await cur.fetchone()
    if count is None:
        raise NotFound(f"no count {count_id} at site {site!r}")
    lines = await _lines(count_id, conn=conn)
    live: dict[Item, Decimal] = {}
    if with_variance and count["counted_at"] is not None and count["state"] != "approved":
        live = await baselines(site, count["location"], [(r["sku"], r["lot"]) for r in lines],
                               as_of=count["counted_at"], conn=conn)  # fmt: skip
    for line in lines:
        baseline = (
            line["baseline"]
            if line["baseline"] is not None
            else live.get((line["sku"], line["lot"]))
        )
        line["baseline"] = baseline if with_variance else None
        line["variance"] = (
            line["counted"] - baseline if with_variance and baseline is not None else None
        )
    count["lines"] = lines
    count["blind"] = not with_variance
    return count


async def list_counts(
    site: str,
    *,
    state: str | None,
    location: str | None,
    limit: int,
    offset: int,
    conn: AsyncConnection,
) -> list[dict[str, Any]]:
    """Counts of a site, newest first, without lines."""
    await require_site(site, conn=conn)
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT c.*, (SELECT min(r.id) FROM counts r WHERE r.recount_of = c.id) AS recount"
        " FROM counts c WHERE c.site = %s AND (%s::text IS NULL OR c.state = %s)"
        " AND (%s::text IS NULL OR c.location = %s) ORDER BY c.id DESC LIMIT %s OFFSET %s",
        (site, state, state, location, location, limit, offset),
    )
    return await cur.fetchall()
