"""The ledger's own rules, against a real PostgreSQL: double entry, the projection, the
serial rule, negative balances and held locations as exceptions, compensation of late
events before an approved count, reversals, insert-only, and the drift check."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection

from tests.support.cli import warelink
from warelink.hub.stock import ledger
from warelink.hub.stock.ledger import ADJUSTMENT, CUSTOMER, SUPPLIER, Leg

T0 = dt.datetime(2026, 11, 25, 8, tzinfo=dt.UTC)


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[AsyncConnection]:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await conn.execute("INSERT INTO sites (id) VALUES ('north'), ('south')")
        await conn.execute("INSERT INTO skus (code, gtin) VALUES ('SKU-A', '09506000134352')")
        yield conn


def leg(source: str, target: str, quantity: int = 1, **fields: object) -> Leg:
    values: dict[str, Any] = {
        "site": "north", "sku": "SKU-A", "kind": "move", "occurred_at": T0, "actor": "test",
    }  # fmt: skip
    values.update(fields)
    return Leg(from_location=source, to_location=target, quantity=Decimal(quantity), **values)


async def post(conn: AsyncConnection, *legs: Leg) -> ledger.Posted:
    async with conn.transaction():
        return await ledger.post(list(legs), conn=conn)


async def balances(conn: AsyncConnection, site: str = "north") -> dict[tuple[str, ...], Decimal]:
    cur = await conn.execute(
        "SELECT location, sku, lot, serial, status, quantity FROM balances"
        " WHERE site = %s AND quantity <> 0",
        (site,),
    )
    return {tuple(row[:5]): row[5] for row in await cur.fetchall()}


async def open_exceptions(conn: AsyncConnection) -> list[tuple[str, str]]:
    cur = await conn.execute(
        "SELECT kind, subject FROM exceptions WHERE state = 'open' ORDER BY id"
    )
    return [tuple(row) for row in await cur.fetchall()]


async def test_every_movement_is_double_entry_and_balances_follow(conn: AsyncConnection) -> None:
    await post(conn, leg(SUPPLIER, "A-1", 10, kind="receipt", lot="L1"))
    await post(conn, leg("A-1", "B-1", 4, lot="L1"), leg("B-1", CUSTOMER, 1, kind="ship", lot="L1"))
    assert await balances(conn) == {
        ("SUPPLIER", "SKU-A", "L1", "", "available"): Decimal(-10),
        ("A-1", "SKU-A", "L1", "", "available"): Decimal(6),
        ("B-1", "SKU-A", "L1", "", "available"): Decimal(3),
        ("CUSTOMER", "SKU-A", "L1", "", "available"): Decimal(1),
    }
    cur = await conn.execute("SELECT sum(quantity) FROM balances")
    assert (await cur.fetchone()) == (Decimal(0),)
    assert await ledger.check(conn=conn) == []


async def test_movements_are_insert_only(conn: AsyncConnection) -> None:
    posted = await post(conn, leg(SUPPLIER, "A-1", 2, kind="receipt"))
    for statement in ("UPDATE movements SET quantity = 5", "DELETE FROM movements"):
        with pytest.raises(psycopg.errors.RaiseException, match="insert-only"):
            await conn.execute(statement)
    reversal = await ledger.reverse(
        posted.movements[0], actor="sup", reason="wrong dock", conn=conn
    )
    assert await balances(conn) == {}
    with pytest.raises(psycopg.errors.UniqueViolation):  # a movement is reversed once
        await ledger.reverse(posted.movements[0], actor="sup", reason="again", conn=conn)
    cur = await conn.execute("SELECT reverses, kind FROM movements WHERE id = %s",
                             (reversal.movements[0],))  # fmt: skip
    assert await cur.fetchone() == (posted.movements[0], "reversal")


async def test_a_device_fact_goes_negative_and_opens_one_exception(conn: AsyncConnection) -> None:
    first = await post(conn, leg("A-1", CUSTOMER, 3, kind="ship"))
    assert (await balances(conn))[("A-1", "SKU-A", "", "", "available")] == -3
    assert await open_exceptions(conn) == [("negative_balance", "A-1/SKU-A////available")]
    assert len(first.exceptions) == 1
    again = await post(conn, leg("A-1", CUSTOMER, 1, kind="ship"))
    assert again.exceptions == []  # still the same open exception
    assert len(await open_exceptions(conn)) == 1


async def test_stock_moved_into_a_held_location_opens_an_exception(conn: AsyncConnection) -> None:
    await conn.execute("INSERT INTO locations (site, code, kind, held) VALUES"
                       " ('north', 'QUARANTINE', 'internal', true)")  # fmt: skip
    posted = await post(conn, leg(SUPPLIER, "QUARANTINE", 2, kind="receipt"))
    assert (await balances(conn))[("QUARANTINE", "SKU-A", "", "", "available")] == 2
    kinds = [kind for kind, _ in await open_exceptions(conn)]
    assert kinds == ["held_location"] and len(posted.exceptions) == 1


async def test_a_serial_is_in_one_place_at_most(conn: AsyncConnection) -> None:
    await post(conn, leg(SUPPLIER, "A-1", kind="receipt", serial="S1"))
    # A clerk scans it at B-2 as moved from C-3: it leaves from where the ledger has it.
    await post(conn, leg("C-3", "B-2", serial="S1"))
    where = await balances(conn)
    assert where[("B-2", "SKU-A", "", "S1", "available")] == 1
    assert ("A-1", "SKU-A", "", "S1", "available") not in where
    # Received again where it is: nothing posts, an exception says so.
    same = await post(conn, leg(SUPPLIER, "B-2", kind="receipt", serial="S1"))
    assert same.movements == [] and same.skipped == 1
    # Received again elsewhere: the latest observation wins, from where it was.
    again = await post(conn, leg(SUPPLIER, "D-4", kind="receipt", serial="S1"))
    assert len(again.movements) == 1 and again.skipped == 0
    held = {key[0]: q for key, q in (await balances(conn)).items() if q > 0 and key[3] == "S1"}
    assert held == {"D-4": 1}
    cur = await conn.execute("SELECT sum(quantity) FROM balances WHERE serial = 'S1'")
    assert await cur.fetchone() == (Decimal(0),)
    assert [kind for kind, _ in await open_exceptions(conn)] == ["serial_conflict"]
    with pytest.raises(psycopg.errors.CheckViolation):  # one unit per serial movement
        await post(conn, leg(SUPPLIER, "A-1", 2, kind="receipt", serial="S2"))


async def test_a_transfer_crosses_sites_through_transit(conn: AsyncConnection) -> None:
    await post(conn, leg(SUPPLIER, "A-1", 5, kind="receipt"))
    await post(conn, leg("A-1", "TRANSIT", 5, kind="transfer_out"))
    await post(conn, leg("TRANSIT", "R-1", 5, kind="transfer_in", to_site="south"))
    assert await balances(conn, "south") == {("R-1", "SKU-A", "", "", "available"): 5}
    assert ("TRANSIT", "SKU-A", "", "", "available") not in await balances(conn)
    cur = await conn.execute("SELECT sum(quantity) FROM balances WHERE sku = 'SKU-A'")
    assert await cur.fetchone() == (Decimal(0),)


async def approved_count(conn: AsyncConnection, location: str, at: dt.datetime) -> int:
    await conn.execute("INSERT INTO locations (site, code, kind) VALUES ('north', %s,"
                       " 'internal') ON CONFLICT DO NOTHING", (location,))  # fmt: skip
    cur = await conn.execute(
        "INSERT INTO counts (site, location, state, created_by, counted_by, counted_at,"
        " decided_by, decided_at) VALUES ('north', %s, 'approved', 'c', 'c', %s, 's', %s)"
        " RETURNING id",
        (location, at, at),
    )
    row = await cur.fetchone()
    assert row is not None
    await conn.execute(
        "INSERT INTO count_lines (count_id, sku, lot, baseline, counted)"
        " VALUES (%s, 'SKU-A', '', 0, 0)",
        (row[0],),
    )
    return int(row[0])


async def test_a_late_device_event_before_an_approved_count_is_compensated(
    conn: AsyncConnection,
) -> None:
    count = await approved_count(conn, "A-1", T0 + dt.timedelta(hours=1))
    late = leg(SUPPLIER, "A-1", 4, kind="receipt", source_gateway="gw", source_seq=7)
    posted = await post(conn, late)
    assert len(posted.movements) == 2
    assert ("A-1", "SKU-A", "", "", "available") not in await balances(conn)  # count stands
    cur = await conn.execute(
        "SELECT from_location, to_location, quantity, kind, compensates, document"
        " FROM movements WHERE id = %s",
        (posted.movements[1],),
    )
    assert await cur.fetchone() == (
        "A-1", ADJUSTMENT, Decimal(4), "compensation", posted.movements[0], f"count:{count}",
    )  # fmt: skip
    # After the count, or from a person (not a device), nothing is compensated.
    after = leg(SUPPLIER, "A-1", 1, kind="receipt", occurred_at=T0 + dt.timedelta(hours=2),
                source_gateway="gw", source_seq=8)  # fmt: skip
    assert len((await post(conn, after)).movements) == 1
    assert len((await post(conn, leg(SUPPLIER, "A-1", 1, kind="receipt"))).movements) == 1
    assert (await balances(conn))[("A-1", "SKU-A", "", "", "available")] == 2


async def test_the_drift_check_finds_and_repairs_a_tampered_projection(
    conn: AsyncConnection, db_url: str
) -> None:
    await post(conn, leg(SUPPLIER, "A-1", 5, kind="receipt"), leg("A-1", "B-1", 2))
    assert await ledger.check(conn=conn) == []
    env = os.environ | {"WARELINK_DB_URL": db_url}
    clean = await warelink("hub", "ledger", "check", env=env)
    assert "0 balance rows drift" in clean
    await conn.execute("UPDATE balances SET quantity = 9 WHERE location = 'B-1'")
    await conn.execute("DELETE FROM balances WHERE location = 'SUPPLIER'")
    drift = await ledger.check(conn=conn)
    assert {(d.key[1], d.stored, d.rebuilt) for d in drift} == {
        ("B-1", Decimal(9), Decimal(2)), ("SUPPLIER", None, Decimal(-5)),
    }  # fmt: skip
    with pytest.raises(AssertionError, match="exited 1"):
        await warelink("hub", "ledger", "check", env=env)
    repaired = await warelink("hub", "ledger", "check", "--repair", env=env)
    assert "repaired 2 rows" in repaired
    assert await ledger.check(conn=conn) == []
