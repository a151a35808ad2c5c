"""The ledger effect of device events: double-entry movements and the balance projection.

Receipts move goods supplier → location, shipments location → customer, movements
location → location. Device events are facts: posted even into a negative balance.
Balance rows are upserted in key order, so concurrent writers lock them in the same
order; the caller owns the transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal

from psycopg import AsyncConnection

from warelink.hub.store import BalanceChange
from warelink.protocol.messages import Event, Movement, Receipt, Shipment

SUPPLIER = "SUPPLIER"
CUSTOMER = "CUSTOMER"
VIRTUAL = {SUPPLIER: "supplier", CUSTOMER: "customer"}

Key = tuple[str, str, str, str]  # site, location, sku, lot


def movement_of(event: Event) -> tuple[str, str, str, str, int] | None:
    """(from, to, sku, lot, quantity) of an event that moves stock, else None."""
    body = event.body
    if type(body) is Receipt:
        return SUPPLIER, body.location, body.gtin, body.lot or "", body.quantity
    if type(body) is Shipment:
        return body.location, CUSTOMER, body.gtin, body.lot or "", body.quantity
    if type(body) is Movement:
        return body.from_location, body.to_location, body.gtin, body.lot or "", body.quantity
    return None


async def post_movements(
    events: Sequence[tuple[str, list[Event]]], *, conn: AsyncConnection
) -> list[BalanceChange]:
    """Post the movements of new events (per site, in seq order); returns new balances."""
    columns: list[list[object]] = [[] for _ in range(9)]
    deltas: dict[Key, Decimal] = defaultdict(Decimal)
    locations: set[tuple[str, str, str]] = set()
    for site, site_events in events:
        for event in site_events:
            moved = movement_of(event)
            if moved is None:
                continue
            source, target, sku, lot, quantity = moved
            if quantity <= 0 or source == target:
                continue  # nothing moves; the event itself is still stored
            for column, value in zip(
                columns,
                (site, sku, lot, source, target, quantity, event.occurred_at, event.gateway,
                 event.seq),
                strict=True,
            ):  # fmt: skip
                column.append(value)
            deltas[(site, source, sku, lot)] -= quantity
            deltas[(site, target, sku, lot)] += quantity
            for code in (source, target):
                locations.add((site, code, VIRTUAL.get(code, "internal")))
    if not deltas:
        return []
    keys = sorted(deltas)
    rows = sorted(locations)
    async with conn.cursor() as cur:
        await cur.execute(
            "INSERT INTO locations (site, code, kind)"
            " SELECT * FROM unnest(%b::text[], %b::text[], %b::text[]) ON CONFLICT DO NOTHING",
            ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]),
        )
        await cur.execute(
            "INSERT INTO movements (site, sku, lot, from_location, to_location, quantity,"
            " occurred_at, source_gateway, source_seq)"
            " SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[],"
            " %b::numeric[], %b::timestamptz[], %b::text[], %b::int8[])",
            tuple(columns),
        )
        await cur.execute(
            "INSERT INTO balances (site, location, sku, lot, quantity)"
            " SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::numeric[])"
            " ORDER BY 1, 2, 3, 4"
            " ON CONFLICT (site, location, sku, lot) DO UPDATE"
            " SET quantity = balances.quantity + excluded.quantity, updated_at = now()"
            " RETURNING site, location, sku, lot, quantity",
            (
                [k[0] for k in keys],
                [k[1] for k in keys],
                [k[2] for k in keys],
                [k[3] for k in keys],
                [deltas[k] for k in keys],
            ),
        )
        return [BalanceChange(*row) for row in await cur.fetchall()]
