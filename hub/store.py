"""SQL of the ingest path: events, gateway watermarks, and the ledger effect of receipts.

Small functions taking the connection as a keyword argument; the caller owns the
transaction. Everything here for one flush commits together, so an event, its ledger
effect and the ack watermark that covers it are never apart.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from psycopg import AsyncConnection

from warelink.protocol.messages import BODY_TYPES, Event, Receipt

EVENT_COLUMNS = "gateway, seq, event_id, site, device, type, cls, occurred_at, received_at, body"
EVENT_TYPES = [
    "text", "int8", "uuid", "text", "text", "text", "int2", "timestamptz", "timestamptz", "jsonb",
]  # fmt: skip
SUPPLIER = "SUPPLIER"

Row = tuple[object, ...]


@dataclass
class GatewayMark:
    id: str
    site: str
    acked_seq: int
    max_seq: int


@dataclass(frozen=True)
class BalanceChange:
    site: str
    location: str
    sku: str
    lot: str
    quantity: Decimal


def event_rows(site: str, events: Iterable[Event], received_at: dt.datetime) -> list[Row]:
    """COPY rows of events (one list comprehension: this is the hot path of ingest)."""
    types = BODY_TYPES
    return [
        (e.gateway, e.seq, e.id, site, e.device, types[type(e.body)], e.cls, e.occurred_at,
         received_at, e.body)
        for e in events
    ]  # fmt: skip


async def ensure_gateways(pairs: Iterable[tuple[str, str]], *, conn: AsyncConnection) -> None:
    """Register sites and gateways seen for the first time (site, gateway)."""
    pairs = sorted(set(pairs))
    sites = sorted({site for site, _ in pairs})
    async with conn.cursor() as cur:
        await cur.execute(
            "INSERT INTO sites (id) SELECT unnest(%b::text[]) ON CONFLICT DO NOTHING", (sites,)
        )
        await cur.execute(
            "INSERT INTO gateways (site, id) SELECT * FROM unnest(%b::text[], %b::text[])"
            " ON CONFLICT DO NOTHING",
            ([s for s, _ in pairs], [g for _, g in pairs]),
        )


async def lock_gateways(ids: Sequence[str], *, conn: AsyncConnection) -> dict[str, GatewayMark]:
    """Lock the gateways' rows in a fixed order (so concurrent hubs never deadlock)."""
    cur = await conn.execute(
        "SELECT id, site, acked_seq, max_seq FROM gateways WHERE id = ANY(%s)"
        " ORDER BY id FOR UPDATE",
        (sorted(ids),),
    )
    return {row[0]: GatewayMark(*row) for row in await cur.fetchall()}


async def copy_events(rows: Sequence[Row], *, conn: AsyncConnection) -> None:
    """COPY rows that cannot conflict (all past the gateway's max_seq) into events."""
    async with (
        conn.cursor() as cur,
        cur.copy(f"COPY events ({EVENT_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.set_types(EVENT_TYPES)
        for row in rows:
            await copy.write_row(row)


async def insert_events_dedup(
    rows: Sequence[Row], *, conn: AsyncConnection
) -> set[tuple[str, int]]:
    """Insert rows that may already be stored; returns the (gateway, seq) actually new."""
    async with conn.cursor() as cur:
        await cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS ingest_stage"
            " (LIKE events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        async with cur.copy(
            f"COPY ingest_stage ({EVENT_COLUMNS}) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(EVENT_TYPES)
            for row in rows:
                await copy.write_row(row)
        await cur.execute(
            f"INSERT INTO events ({EVENT_COLUMNS}) SELECT {EVENT_COLUMNS} FROM ingest_stage"
            " ORDER BY gateway, seq ON CONFLICT DO NOTHING RETURNING gateway, seq"
        )
        return {(g, s) for g, s in await cur.fetchall()}


async def contiguous_end(gateway: str, acked: int, *, conn: AsyncConnection) -> int:
    """The highest stored seq reachable from ``acked`` without a gap (walks in chunks)."""
    while True:
        cur = await conn.execute(
            "SELECT max(seq) FROM (SELECT seq, seq - row_number() OVER (ORDER BY seq) AS run"
            " FROM (SELECT seq FROM events WHERE gateway = %s AND seq > %s"
            " ORDER BY seq LIMIT 10000) chunk) numbered WHERE run = %s",
            (gateway, acked, acked),
        )
        row = await cur.fetchone()
        end = row[0] if row and row[0] is not None else acked
        if end - acked < 10000:
            return int(end)
        acked = end


async def update_gateway(
    mark: GatewayMark, *, received: int, duplicates: int, conn: AsyncConnection
) -> None:
    await conn.execute(
        "UPDATE gateways SET acked_seq = %s, max_seq = %s,"
        " events_received = events_received + %s,"
        " duplicates_dropped = duplicates_dropped + %s, last_seen_at = now()"
        " WHERE id = %s",
        (mark.acked_seq, mark.max_seq, received, duplicates, mark.id),
    )


async def record_birth(
    site: str, gateway: str, session: int, last_seq: int, *, conn: AsyncConnection
) -> int:
    """Mark the gateway online in its new session; returns its ack watermark."""
    await ensure_gateways([(site, gateway)], conn=conn)
    cur = await conn.execute(
        "UPDATE gateways SET session = %s, online = true, birth_last_seq = %s,"
        " last_seen_at = now() WHERE id = %s AND session <= %s RETURNING acked_seq",
        (session, last_seq, gateway, session),
    )
    row = await cur.fetchone()
    if row is None:  # a birth older than the session we know: only report the watermark
        cur = await conn.execute("SELECT acked_seq FROM gateways WHERE id = %s", (gateway,))
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def record_death(gateway: str, session: int, *, conn: AsyncConnection) -> bool:
    """Mark the gateway offline unless the death is from an older session."""
    cur = await conn.execute(
        "UPDATE gateways SET online = false WHERE id = %s AND session = %s", (gateway, session)
    )
    return cur.rowcount > 0


async def post_receipts(
    receipts: Sequence[tuple[str, Event, Receipt]], *, conn: AsyncConnection
) -> list[BalanceChange]:
    """Double-entry movements supplier → location and the balances, set-based.

    Balance rows are upserted in key order, so concurrent writers lock them in the same
    order. Returns each touched balance with its new quantity.
    """
    if not receipts:
        return []
    locations = sorted(
        {(site, SUPPLIER, "supplier") for site, _, _ in receipts}
        | {(site, r.location, "internal") for site, _, r in receipts}
    )
    deltas: dict[tuple[str, str, str, str], Decimal] = defaultdict(Decimal)
    movements: list[list[object]] = [[] for _ in range(9)]
    for site, event, receipt in receipts:
        lot = receipt.lot or ""
        for column, value in zip(
            movements,
            (site, receipt.gtin, lot, SUPPLIER, receipt.location, receipt.quantity,
             event.occurred_at, event.gateway, event.seq),
            strict=True,
        ):  # fmt: skip
            column.append(value)
        deltas[(site, SUPPLIER, receipt.gtin, lot)] -= receipt.quantity
        deltas[(site, receipt.location, receipt.gtin, lot)] += receipt.quantity
    keys = sorted(deltas)
    async with conn.cursor() as cur:
        await cur.execute(
            "INSERT INTO locations (site, code, kind)"
            " SELECT * FROM unnest(%b::text[], %b::text[], %b::text[]) ON CONFLICT DO NOTHING",
            tuple(list(col) for col in zip(*locations, strict=True)),
        )
        await cur.execute(
            "INSERT INTO movements (site, sku, lot, from_location, to_location, quantity,"
            " occurred_at, source_gateway, source_seq)"
            " SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[],"
            " %b::numeric[], %b::timestamptz[], %b::text[], %b::int8[])",
            tuple(movements),
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
