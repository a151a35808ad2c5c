"""Verification at the pack bench: does what is packed match what was picked?

Three checks, each applied when its reading is given:

- scan: with an order, the scanned quantity of the SKU (and lot) equals what stands
  picked for it (always checked when there is an order);
- scale: the weight is within the SKU's tolerance of unit weight × quantity;
- RFID: the EPCs read are exactly the EPCs of the serials picked for the order (without
  an order: as many as the quantity, each a serial of the SKU).

The same function serves REST and the gateway's ``Verification`` events; an event's
(gateway, seq) is unique, so a replay returns the stored row and changes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from warelink.hub.errors import NotFound
from warelink.hub.operations import outbound
from warelink.hub.stock import audit, exceptions
from warelink.hub.stock.sites import require_site


async def record_verification(
    site: str,
    *,
    sku: str,
    lot: str,
    quantity: Decimal,
    weight_kg: Decimal | None,
    epcs: Sequence[str] | None,
    order_ref: str | None,
    actor: str,
    at: dt.datetime,
    source_gateway: str | None = None,
    source_seq: int | None = None,
    conn: AsyncConnection,
) -> dict[str, Any]:
    """Check, store one ``verifications`` row, open ``verify_mismatch`` if it failed.

    ``sku`` is a SKU code or GTIN. An unknown site or SKU is ``NotFound``; so is an
    unknown order from REST, while a device event naming an unknown order is stored as a
    mismatch.
    """
    if source_gateway is not None and source_seq is not None:
        stored = await _by_source(source_gateway, source_seq, conn=conn)
        if stored is not None:
            return stored
    await require_site(site, conn=conn)
    item = await _sku(sku, conn=conn)
    code = item["code"]
    method = "rfid" if epcs is not None else "scale" if weight_kg is not None else "scan"
    problems: list[str] = []
    order_known = False
    picked, picked_serials = Decimal(0), set[str]()
    if order_ref is not None:
        try:
            await outbound.lock_order(site, order_ref, conn=conn)
            order_known = True
        except NotFound:
            if source_gateway is None:
                raise
            problems.append(f"no order {order_ref!r} at site {site!r}")
    if order_known:
        assert order_ref is not None
        picked, picked_serials = await outbound.picked_of_order(
            site, order_ref, code, lot, conn=conn
        )
        if picked != quantity:
            problems.append(f"order {order_ref!r} has {picked} of {_item(code, lot)} picked,"
                            f" {quantity} verified")  # fmt: skip
    expected_kg = tolerance_kg = None
    if weight_kg is not None:
        expected_kg, tolerance_kg, problem = _scale(item, quantity, weight_kg)
        if problem:
            problems.append(problem)
    if epcs is not None:
        problems += await _rfid(code, quantity, epcs, order_known, picked_serials, conn=conn)
    ok = not problems
    row = await _insert(
        {"site": site, "order_ref": order_ref,
         "pick_task": await _task_of(site, order_ref, code, conn=conn) if order_known else None,
         "sku": code, "lot": lot, "quantity": quantity, "method": method,
         "weight_kg": weight_kg, "expected_kg": expected_kg, "tolerance_kg": tolerance_kg,
         "ok": ok, "detail": "; ".join(problems), "actor": actor, "at": at,
         "source_gateway": source_gateway, "source_seq": source_seq},
        conn=conn,
    )  # fmt: skip
    if row is None:  # a concurrent replay of the same event stored it first
        stored = await _by_source(source_gateway or "", source_seq or 0, conn=conn)
        assert stored is not None
        return stored
    verified: list[int] = []
    if ok and order_known:
        assert order_ref is not None
        verified = await outbound.mark_verified(site, order_ref, code, lot, conn=conn)
    if not ok:
        subject = f"{order_ref}/{code}/{lot}" if order_known else f"verification:{row['id']}"
        await exceptions.open_many(
            [exceptions.Raised(site, "verify_mismatch", subject,
                               {"verification": row["id"], "order": order_ref, "sku": code,
                                "lot": lot, "method": method, "detail": row["detail"]},
                               actor)],
            conn=conn,
        )  # fmt: skip
    await audit.record(
        actor, "verification.record", site=site, subject=str(row["id"]),
        detail={"order": order_ref, "sku": code, "lot": lot, "method": method, "ok": ok,
                "tasks_verified": verified, "source_gateway": source_gateway,
                "source_seq": source_seq},
        conn=conn,
    )  # fmt: skip
    return row


def _item(code: str, lot: str) -> str:
    return f"{code} lot {lot!r}" if lot else code


def _scale(
    item: dict[str, Any], quantity: Decimal, weight_kg: Decimal
) -> tuple[Decimal | None, Decimal | None, str | None]:
    unit = item["unit_weight_kg"]
    if unit is None:
        return None, None, f"SKU {item['code']!r} has no unit weight: the scale cannot check it"
    expected = unit * quantity
    tolerance = expected * item["weight_tolerance_pct"] / 100
    if abs(weight_kg - expected) > tolerance:
        return expected, tolerance, (
            f"weight {weight_kg} kg is outside {expected} ± {tolerance} kg"
        )  # fmt: skip
    return expected, tolerance, None


async def _rfid(
    code: str,
    quantity: Decimal,
    epcs: Sequence[str],
    order_known: bool,
    picked_serials: set[str],
    *,
    conn: AsyncConnection,
) -> list[str]:
    read = {epc.upper() for epc in epcs}
    cur = await conn.execute(
        "SELECT serial, upper(epc) FROM serials WHERE sku = %s AND epc IS NOT NULL", (code,)
    )
    epc_of: dict[str, str] = {serial: epc for serial, epc in await cur.fetchall()}
    if order_known:
        expected = {epc_of[s] for s in picked_serials if s in epc_of}
        without = sorted(s for s in picked_serials if s not in epc_of)
        problems = [f"picked serials without an EPC: {without}"] if without else []
    else:
        expected = read & set(epc_of.values())
        problems = [] if Decimal(len(read)) == quantity else [
            f"{len(read)} tags read for a quantity of {quantity}"
        ]  # fmt: skip
    if missing := sorted(expected - read):
        problems.append(f"expected tags not read: {missing}")
    if extra := sorted(read - expected):
        problems.append(f"tags read that were not expected: {extra}")
    return problems


async def _sku(sku: str, *, conn: AsyncConnection) -> dict[str, Any]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT code, unit_weight_kg, weight_tolerance_pct FROM skus"
        " WHERE code = %s OR gtin = %s ORDER BY code = %s DESC LIMIT 1",
        (sku, sku, sku),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no SKU {sku!r}")
    return row


async def _task_of(
    site: str, order_ref: str | None, sku: str, *, conn: AsyncConnection
) -> int | None:
    """The order's one live task of the SKU, when there is exactly one."""
    cur = await conn.execute(
        "SELECT id FROM pick_tasks WHERE site = %s AND order_ref = %s AND sku = %s"
        " AND state <> 'cancelled'",
        (site, order_ref, sku),
    )
    rows = await cur.fetchall()
    return rows[0][0] if len(rows) == 1 else None


async def _insert(values: dict[str, Any], *, conn: AsyncConnection) -> dict[str, Any] | None:
    columns = list(values)
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"INSERT INTO verifications ({', '.join(columns)})"
        f" VALUES ({', '.join(['%s'] * len(columns))})"
        " ON CONFLICT (source_gateway, source_seq) DO NOTHING RETURNING *",
        list(values.values()),
    )
    return await cur.fetchone()


async def _by_source(gateway: str, seq: int, *, conn: AsyncConnection) -> dict[str, Any] | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT * FROM verifications WHERE source_gateway = %s AND source_seq = %s",
        (gateway, seq),
    )
    return await cur.fetchone()
