"""Adjustments: stock found or lost, with a reason code, approved above a threshold.

A small change is posted at once; a change of more units than the site's threshold waits
for a supervisor other than the requester, so no one writes off (or conjures) much stock
on their own. Posting moves the quantity between the location and ADJUSTMENT (kind
``adjustment``, document ``adjustment:<id>``); the adjustment row keeps the decision,
the ledger keeps the quantities.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from warelink.hub.errors import Conflict, Forbidden, Invalid, NotFound
from warelink.hub.operations.counts import require_skus
from warelink.hub.stock import audit, ledger
from warelink.hub.stock.balances import quantity_text
from warelink.hub.stock.sites import require_location, require_site


@dataclass(frozen=True)
class Requested:
    """A change of stock someone asks for: + found, − lost."""

    location: str
    sku: str
    quantity: Decimal
    reason: str
    lot: str = ""
    serial: str = ""
    status: str = "available"
    note: str = ""


async def reason_codes(*, conn: AsyncConnection) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute("SELECT code, description FROM reason_codes ORDER BY code")
    return await cur.fetchall()


async def _require_reason(code: str, *, conn: AsyncConnection) -> None:
    cur = await conn.execute("SELECT 1 FROM reason_codes WHERE code = %s", (code,))
    if await cur.fetchone() is None:
        raise Invalid(f"unknown reason code {code!r}: see GET /api/v1/reason-codes")


async def request(
    site: str, change: Requested, *, actor: str, threshold: Decimal, conn: AsyncConnection
) -> int:
    """Record the request; post it now if |quantity| is within the threshold."""
    await require_site(site, conn=conn)
    await require_location(site, change.location, conn=conn)
    await require_skus([change.sku], conn=conn)
    await _require_reason(change.reason, conn=conn)
    if change.status not in ledger.STATUSES:
        raise Invalid(f"status must be one of {', '.join(ledger.STATUSES)}")
    if change.serial and abs(change.quantity) != 1:
        raise Invalid("a serial is one unit: quantity must be 1 or -1")
    if change.quantity == 0:
        raise Invalid("quantity must not be zero")
    immediate = abs(change.quantity) <= threshold
    cur = await conn.execute(
        "INSERT INTO adjustments (site, location, sku, lot, serial, status, quantity, reason,"
        " note, state, requested_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'pending', %s)"
        " RETURNING id",
        (site, change.location, change.sku, change.lot, change.serial, change.status,
         change.quantity, change.reason, change.note, actor),
    )  # fmt: skip
    row = await cur.fetchone()
    assert row is not None
    adjustment_id = int(row[0])
    movements: list[int] = []
    if immediate:
        movements = await _post(adjustment_id, actor=actor, conn=conn)
    await audit.record(actor, "adjustment.request", site=site,
                       subject=f"adjustment:{adjustment_id}",
                       detail={"quantity": quantity_text(change.quantity), "reason": change.reason,
                               "posted": immediate, "movements": movements},
                       conn=conn)  # fmt: skip
    return adjustment_id


async def _post(adjustment_id: int, *, actor: str, conn: AsyncConnection) -> list[int]:
    """Move the quantity between the location and ADJUSTMENT; mark the adjustment posted."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "UPDATE adjustments SET state = 'posted', decided_by = %s, decided_at = now()"
        " WHERE id = %s RETURNING *",
        (actor, adjustment_id),
    )
    adj = await cur.fetchone()
    assert adj is not None
    found = adj["quantity"] > 0
    leg = ledger.Leg(
        site=adj["site"], sku=adj["sku"], lot=adj["lot"], serial=adj["serial"],
        quantity=abs(adj["quantity"]),
        from_location=ledger.ADJUSTMENT if found else adj["location"],
        to_location=adj["location"] if found else ledger.ADJUSTMENT,
        from_status="available" if found else adj["status"],
        to_status=adj["status"] if found else "available",
        kind="adjustment", occurred_at=dt.datetime.now(dt.UTC), actor=actor,
        reason=adj["reason"], document=f"adjustment:{adjustment_id}",
    )  # fmt: skip
    posted = await ledger.post([leg], conn=conn)
    return posted.movements


async def _lock_pending(
    site: str, adjustment_id: int, *, actor: str, conn: AsyncConnection
) -> dict[str, Any]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT * FROM adjustments WHERE id = %s AND site = %s FOR UPDATE",
        (adjustment_id, site),
    )
    adj = await cur.fetchone()
    if adj is None:
        raise NotFound(f"no adjustment {adjustment_id} at site {site!r}")
    if adj["state"] != "pending":
        raise Conflict(f"adjustment {adjustment_id} is {adj['state']}, not pending")
    if adj["requested_by"] == actor:
        raise Forbidden(
            f"adjustment {adjustment_id} was requested by {actor}: another supervisor decides"
        )
    return adj


async def approve(site: str, adjustment_id: int, *, actor: str, conn: AsyncConnection) -> None:
    await _lock_pending(site, adjustment_id, actor=actor, conn=conn)
    movements = await _post(adjustment_id, actor=actor, conn=conn)
    await audit.record(actor, "adjustment.approve", site=site,
                       subject=f"adjustment:{adjustment_id}", detail={"movements": movements},
                       conn=conn)  # fmt: skip


async def reject(site: str, adjustment_id: int, *, actor: str, conn: AsyncConnection) -> None:
    await _lock_pending(site, adjustment_id, actor=actor, conn=conn)
    await conn.execute(
        "UPDATE adjustments SET state = 'rejected', decided_by = %s, decided_at = now()"
        " WHERE id = %s",
        (actor, adjustment_id),
    )
    await audit.record(actor, "adjustment.reject", site=site,
                       subject=f"adjustment:{adjustment_id}", conn=conn)  # fmt: skip


_SELECT = (
    "SELECT a.*, (SELECT coalesce(array_agg(m.id ORDER BY m.id), '{}') FROM movements m"
    " WHERE m.document = 'adjustment:' || a.id) AS movements FROM adjustments a"
)


async def get(site: str, adjustment_id: int, *, conn: AsyncConnection) -> dict[str, Any]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(f"{_SELECT} WHERE a.id = %s AND a.site = %s", (adjustment_id, site))
    adj = await cur.fetchone()
    if adj is None:
        raise NotFound(f"no adjustment {adjustment_id} at site {site!r}")
    return adj


async def list_adjustments(
    site: str, *, state: str | None, limit: int, offset: int, conn: AsyncConnection
) -> list[dict[str, Any]]:
    """A site's adjustments, newest first."""
    await require_site(site, conn=conn)
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"{_SELECT} WHERE a.site = %s AND (%s::text IS NULL OR a.state = %s)"
        " ORDER BY a.id DESC LIMIT %s OFFSET %s",
        (site, state, state, limit, offset),
    )
    return await cur.fetchall()
