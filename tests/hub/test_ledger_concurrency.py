"""Eight writers post to the same SKU and location at once, on the real PostgreSQL.

Each writer has its own connection and posts its own random mix of receipts, moves,
picks to customers, status changes and serial moves, all touching the same location and
SKU, in transactions of one to five legs. Afterwards every invariant holds: the sum over
all locations of each SKU/lot is zero, the balances equal a rebuild from the movements,
each balance equals what the writers' legs add up to, and no serial is in two places.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections import Counter
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import AsyncConnection

from warelink.hub.stock import ledger
from warelink.hub.stock.ledger import CUSTOMER, SUPPLIER, Leg

WRITERS = 8
TRANSACTIONS = 40
HOT = "A-01"  # every writer posts into and out of this location
PLACES = [HOT, "B-02", "C-03"]


def random_legs(rng: random.Random, writer: int, n: int) -> list[Leg]:
    legs = []
    for _ in range(rng.randint(1, 5)):
        at = dt.datetime.now(dt.UTC)
        common: dict[str, Any] = {
            "site": "north", "sku": "SKU-HOT", "occurred_at": at, "actor": f"w{writer}",
        }  # fmt: skip
        roll = rng.random()
        quantity = Decimal(rng.randint(1, 9))
        lot = rng.choice(["", "L1", "L2"])
        if roll < 0.3:
            legs.append(Leg(**common, quantity=quantity, from_location=SUPPLIER, to_location=HOT,
                            kind="receipt", lot=lot))  # fmt: skip
        elif roll < 0.55:
            other = rng.choice(PLACES[1:])
            source, target = (HOT, other) if rng.random() < 0.5 else (other, HOT)
            legs.append(Leg(**common, quantity=quantity, from_location=source,
                            to_location=target, kind="move", lot=lot))  # fmt: skip
        elif roll < 0.75:
            legs.append(Leg(**common, quantity=quantity, from_location=HOT,
                            to_location=CUSTOMER, kind="ship", lot=lot))  # fmt: skip
        elif roll < 0.85:
            held = rng.random() < 0.5
            legs.append(Leg(**common, quantity=quantity, from_location=HOT, to_location=HOT,
                            from_status="available" if held else "qc_hold",
                            to_status="qc_hold" if held else "available",
                            kind="move" if held else "qc_release", lot=lot))  # fmt: skip
        else:  # serials shared by all writers: the serial rule under contention
            serial = f"S{rng.randint(1, 6)}"
            source = rng.choice([SUPPLIER, *PLACES])
            target = rng.choice([p for p in [*PLACES, CUSTOMER] if p != source])
            legs.append(Leg(**common, quantity=Decimal(1), from_location=source,
                            to_location=target, kind="move", serial=serial))  # fmt: skip
    return legs


async def writer(db_url: str, number: int) -> list[int]:
    rng = random.Random(number)
    ids: list[int] = []
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        for n in range(TRANSACTIONS):
            # Rows are locked in one fixed order: a deadlock here is a bug, not bad luck.
            async with conn.transaction():
                posted = await ledger.post(random_legs(rng, number, n), conn=conn)
            ids += posted.movements
    return ids


async def test_eight_writers_on_one_location_keep_every_invariant(db_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await conn.execute("INSERT INTO sites (id) VALUES ('north')")
        await conn.execute("INSERT INTO skus (code, tracking) VALUES ('SKU-HOT', 'lot')")
        for place in PLACES:
            await conn.execute("INSERT INTO locations (site, code, kind) VALUES ('north', %s,"
                               " 'internal')", (place,))  # fmt: skip

    results = await asyncio.gather(*(writer(db_url, n) for n in range(WRITERS)))
    posted = [i for ids in results for i in ids]
    assert len(posted) == len(set(posted)) > WRITERS * TRANSACTIONS

    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await assert_invariants(conn)
        cur = await conn.execute("SELECT count(*) FROM movements")
        assert await cur.fetchone() == (len(posted),)


async def assert_invariants(conn: AsyncConnection) -> None:
    cur = await conn.execute("SELECT sku, lot, sum(quantity) FROM balances GROUP BY 1, 2")
    for sku, lot, total in await cur.fetchall():
        assert total == 0, f"{sku}/{lot} sums to {total}, not 0"
    assert await ledger.check(conn=conn) == []
    cur = await conn.execute(
        "SELECT to_location, from_location, to_status, from_status, lot, serial, quantity"
        " FROM movements"
    )
    expected: Counter[tuple[str, str, str, str]] = Counter()
    for target, source, to_status, from_status, lot, serial, quantity in await cur.fetchall():
        expected[(target, lot, serial, to_status)] += quantity
        expected[(source, lot, serial, from_status)] -= quantity
    cur = await conn.execute("SELECT location, lot, serial, status, quantity FROM balances")
    actual = {tuple(row[:4]): row[4] for row in await cur.fetchall()}
    assert {k: v for k, v in actual.items() if v} == {k: v for k, v in expected.items() if v}
    cur = await conn.execute(
        "SELECT b.serial, count(*) FROM balances b JOIN locations l"
        " ON l.site = b.site AND l.code = b.location AND l.kind = 'internal'"
        " WHERE b.serial <> '' AND b.quantity > 0 GROUP BY 1 HAVING count(*) > 1"
    )
    assert await cur.fetchall() == [], "a serial is in two places"
    cur = await conn.execute(
        "SELECT count(*) FROM balances WHERE serial <> '' AND quantity > 1"
        " AND location NOT IN ('SUPPLIER', 'CUSTOMER')"
    )
    assert await cur.fetchone() == (0,)
