"""Inbound over the real API and database: notices, receipts, QC, putaway, returns, transfers.

Each test checks the effect in SQL (movements, balances, audit rows), and after each test
the ledger still balances: every SKU/lot sums to zero over all locations, and the balances
equal a rebuild from the movements.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.support.api import Api
from warelink.hub.access import Role
from warelink.hub.stock import ledger
from warelink.protocol.gs1 import check_digit

GTIN_PLAIN = "04006381333931"
SSCC = "00614141" + "123456789"
SSCC += str(check_digit(SSCC))


async def sql(api: Api, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    async with api.hub.pool.connection() as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchall() if cur.description else []


async def setup_floor(api: Api) -> None:
    """Two sites with dock, storage and QC zones, and SKUs of each tracking kind."""
    async with api.hub.pool.connection() as conn, conn.transaction():
        await conn.execute("INSERT INTO sites (id) VALUES ('north'), ('south')")
        await conn.execute(
            "INSERT INTO zones (site, code, kind) VALUES ('north', 'DOCK', 'dock'),"
            " ('north', 'STORE', 'storage'), ('north', 'QCZ', 'qc'),"
            " ('south', 'DOCK', 'dock'), ('south', 'STORE', 'storage')"
        )
        await conn.execute(
            "INSERT INTO locations (site, code, kind, zone, capacity, sku_class, held, usable)"
            " VALUES ('north', 'D1', 'internal', 'DOCK', NULL, NULL, false, true),"
            " ('north', 'Q1', 'internal', 'QCZ', NULL, NULL, false, true),"
            " ('north', 'A1', 'internal', 'STORE', 100, 'dry', false, true),"
            " ('north', 'A2', 'internal', 'STORE', 50, NULL, false, true),"
            " ('north', 'A3', 'internal', 'STORE', NULL, NULL, false, true),"
            " ('north', 'A4', 'internal', 'STORE', 1000, NULL, true, true),"
            " ('north', 'A5', 'internal', 'STORE', 1000, NULL, false, false),"
            " ('north', 'C1', 'internal', 'STORE', 1000, 'cold', false, true),"
            " ('south', 'D1', 'internal', 'DOCK', NULL, NULL, false, true),"
            " ('south', 'B1', 'internal', 'STORE', NULL, NULL, false, true)"
        )
        await conn.execute(
            "INSERT INTO skus (code, gtin, tracking, requires_qc, sku_class) VALUES"
            " ('PLAIN', %s, 'none', false, NULL), ('LOTTED', NULL, 'lot', false, 'dry'),"
            " ('SERIAL', NULL, 'serial', false, NULL), ('CHECKED', NULL, 'none', true, NULL)",
            (GTIN_PLAIN,),
        )


@pytest.fixture
async def floor(api: Api) -> AsyncIterator[Api]:
    """The floor set up; afterwards the ledger must still balance."""
    await setup_floor(api)
    yield api
    unbalanced = await sql(
        api,
        "SELECT sku, lot, sum(quantity) FROM balances GROUP BY sku, lot HAVING sum(quantity) <> 0",
    )
    assert unbalanced == []
    async with api.hub.pool.connection() as conn:
        assert await ledger.check(conn=conn) == []


async def balance(api: Api, site: str, location: str, sku: str, **key: str) -> Decimal:
    rows = await sql(
        api,
        "SELECT coalesce(sum(quantity), 0) FROM balances WHERE site = %s AND location = %s"
        " AND sku = %s AND lot = %s AND serial = %s AND lpn = %s AND status = %s",
        (site, location, sku, key.get("lot", ""), key.get("serial", ""), key.get("lpn", ""),
         key.get("status", "available")),
    )  # fmt: skip
    return Decimal(rows[0][0])


async def audit_actions(api: Api) -> list[str]:
    return [row[0] for row in await sql(api, "SELECT action FROM audit_log ORDER BY id")]


async def received(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    answer = await client.post("/api/v1/sites/north/receipts", json=body)
    assert answer.status_code == 201, answer.text
    result: dict[str, Any] = answer.json()
    return result


# ------------------------------------------------------------------ notices and receipts


async def test_notice_lines_count_what_was_received_and_report_over_receipt(floor: Api) -> None:
    coordinator = await floor.client("cora", Role.COORDINATOR, sites=["north"])
    clerk = await floor.client("bob", Role.CLERK, sites=["north"])
    created = await coordinator.post(
        "/api/v1/sites/north/notices",
        json={"reference": "PO-1", "supplier": "ACME", "lines": [
            {"sku": "PLAIN", "quantity": 10},
            {"sku": "LOTTED", "lot": "L1", "expiry": "2031-01-31", "quantity": 5}]},
    )  # fmt: skip
    assert created.status_code == 201, created.text
    notice = created.json()
    assert [(x["line"], x["sku"], x["expected"], x["received"]) for x in notice["lines"]] == [
        (1, "PLAIN", "10", "0"), (2, "LOTTED", "5", "0"),
    ]  # fmt: skip
    nid = notice["id"]

    first = await received(clerk, notice=nid, line=1, location="D1", quantity=6)
    assert (first["expected"], first["received"], first["over_received"]) == ("10", "6", "0")
    second = await received(clerk, notice=nid, line=1, sku=GTIN_PLAIN[1:], quantity=7,
                            location="D1")  # fmt: skip
    assert (second["received"], second["over_received"]) == ("13", "3")
    lotted = await received(clerk, notice=nid, line=2, location="D1", quantity=5)
    assert (lotted["lot"], lotted["expiry"], lotted["status"]) == ("L1", "2031-01-31", "available")

    got = (await clerk.get(f"/api/v1/sites/north/notices/{nid}")).json()
    assert [(x["expected"], x["received"]) for x in got["lines"]] == [("10", "13"), ("5", "5")]
    rows = await sql(
        floor, "SELECT document, kind, from_location, to_location, quantity, actor"
        " FROM movements ORDER BY id",
    )  # fmt: skip
    assert rows == [
        (f"asn:{nid}/1", "receipt", "SUPPLIER", "D1", Decimal(6), "bob"),
        (f"asn:{nid}/1", "receipt", "SUPPLIER", "D1", Decimal(7), "bob"),
        (f"asn:{nid}/2", "receipt", "SUPPLIER", "D1", Decimal(5), "bob"),
    ]
    assert await balance(floor, "north", "D1", "PLAIN") == 13
    assert await balance(floor, "north", "D1", "LOTTED", lot="L1") == 5
    listed = (await clerk.get("/api/v1/sites/north/notices?state=open")).json()
    assert [(n["id"], n["lines"], n["expected"], n["received"]) for n in listed] == [
        (nid, 2, "15", "18")
    ]

    closed = await clerk.post(f"/api/v1/sites/north/notices/{nid}/close")
    assert closed.status_code == 200 and closed.json()["state"] == "closed"
    late = await clerk.post(
        "/api/v1/sites/north/receipts",
        json={"notice": nid, "line": 1, "location": "D1", "quantity": 1},
    )
    assert late.status_code == 409 and "closed" in late.json()["detail"]
    again = await clerk.post(f"/api/v1/sites/north/notices/{nid}/close")
    assert again.status_code == 409
    assert await audit_actions(floor) == [
        "notice.create",
        "receive",
        "receive",
        "receive",
        "notice.close",
    ]


async def test_notice_rules_and_errors(floor: Api) -> None:
    admin = await floor.client("alice")
    clerk = await floor.client("bob", Role.CLERK, sites=["north"])
    body = {"reference": "PO-2", "lines": [{"sku": "PLAIN", "quantity": 3}]}
    assert (await clerk.post("/api/v1/sites/north/notices", json=body)).status_code == 403
    assert (await admin.post("/api/v1/sites/north/notices", json=body)).status_code == 201
    duplicate = await admin.post("/api/v1/sites/north/notices", json=body)
    assert duplicate.status_code == 409 and "PO-2" in duplicate.json()["detail"]
    unknown = await admin.post(
        "/api/v1/sites/north/notices",
        json={"reference": "PO-3", "lines": [{"sku": "NOPE", "quantity": 1}]},
    )
    assert unknown.status_code == 404 and "NOPE" in unknown.json()["detail"]
    lot_on_plain = await admin.post(
        "/api/v1/sites/north/notices",
        json={"reference": "PO-4", "lines": [{"sku": "PLAIN", "lot": "X", "quantity": 1}]},
    )
    assert lot_on_plain.status_code == 422
    for bad in ({"reference": "PO-5", "lines": []},
                {"reference": "PO-5", "lines": [{"sku": "PLAIN", "quantity": 0}]},
                {"reference": "P\x00", "lines": [{"sku": "PLAIN", "quantity": 1}]}):  # fmt: skip
        assert (await admin.post("/api/v1/sites/north/notices", json=bad)).status_code == 422
    assert (await admin.post("/api/v1/sites/nowhere/notices", json=body)).status_code == 404
    assert (await admin.get("/api/v1/sites/north/notices/999")).status_code == 404
    assert (await clerk.get("/api/v1/sites/south/notices")).status_code == 403

    nid = (await admin.get("/api/v1/sites/north/notices")).json()[0]["id"]
    await received(clerk, notice=nid, line=1, location="D1", quantity=1)
    refused = await admin.post(f"/api/v1/sites/north/notices/{nid}/cancel")
    assert refused.status_code == 409 and "close it" in refused.json()["detail"]
    empty = await admin.post(
        "/api/v1/sites/north/notices",
        json={"reference": "PO-6", "lines": [{"sku": "PLAIN", "quantity": 1}]},
    )
    cancelled = await admin.post(f"/api/v1/sites/north/notices/{empty.json()['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"


async def test_receipt_rules(floor: Api) -> None:
    clerk = await floor.client("bob", Role.CLERK, sites=["north"])

    async def refused(status: int, **body: Any) -> str:
        answer = await clerk.post("/api/v1/sites/north/receipts", json=body)
        assert answer.status_code == status, answer.text
        detail: str = answer.json()["detail"]
        return detail

    assert "dock" in await refused(422, sku="PLAIN", location="A3", quantity=1)
    assert "SUPPLIER" in await refused(422, sku="PLAIN", location="SUPPLIER", quantity=1)
    await refused(404, sku="PLAIN", location="NOWHERE", quantity=1)
    await refused(404, sku="NOPE", location="D1", quantity=1)
    assert "lot" in await refused(422, sku="LOTTED", location="D1", quantity=1)
    assert "expiry" in await refused(422, sku="LOTTED", lot="L9", location="D1", quantity=1)
    assert "serial" in await refused(422, sku="SERIAL", location="D1", quantity=1)
    assert "quantity 1" in await refused(422, sku="SERIAL", serial="S1", location="D1",
                                         quantity=2)  # fmt: skip
    bad_sscc = SSCC[:-1] + str((int(SSCC[-1]) + 1) % 10)
    assert "check digit" in await refused(422, sku="PLAIN", lpn=bad_sscc, location="D1",
                                          quantity=1)  # fmt: skip
    assert "notice" in await refused(422, location="D1", quantity=1)
    await refused(404, notice=77, line=1, location="D1", quantity=1)

    lot = await received(clerk, sku="LOTTED", lot="L1", expiry="2030-06-30", location="D1",
                         quantity=4, lpn=SSCC)  # fmt: skip
    assert lot["lpn"] == SSCC
    assert "expires 2030-06-30" in await refused(409, sku="LOTTED", lot="L1",
                                                 expiry="2030-07-01", location="D1",
                                                 quantity=1)  # fmt: skip
    same_lot = await received(clerk, sku="LOTTED", lot="L1", location="D1", quantity=1)
    assert same_lot["expiry"] == "2030-06-30"  # known lot: its expiry stands
    await received(clerk, sku="SERIAL", serial="S1", location="D1", quantity=1)
    assert "already in stock at north/D1" in await refused(
        409, sku="SERIAL", serial="S1", location="D1", quantity=1
    )
    checked = await received(clerk, sku="CHECKED", location="D1", quantity=2)
    asked = await received(clerk, sku="PLAIN", location="D1", quantity=3, qc=True)
    assert (checked["status"], asked["status"]) == ("qc_hold", "qc_hold")

    assert await balance(floor, "north", "D1", "LOTTED", lot="L1", lpn=SSCC) == 4
    assert await balance(floor, "north", "D1", "CHECKED", status="qc_hold") == 2
    assert await balance(floor, "north", "D1", "PLAIN", status="qc_hold") == 3
    assert await sql(floor, "SELECT code, site FROM lpns") == [(SSCC, "north")]
    assert await sql(floor, "SELECT sku, serial FROM serials") == [("SERIAL", "S1")]
    assert len(await sql(floor, "SELECT 1 FROM movements")) == 5
    assert (await audit_actions(floor)).count("receive") == 5  # refusals leave no trace


# ------------------------------------------------------------------ QC and returns


async def test_qc_release_and_reject(floor: Api) -> None:
    clerk = await floor.client("bob", Role.CLERK, sites=["north"])
    await received(clerk, sku="CHECKED", location="D1", quantity=10)

    async def decide(status: int, **body: Any) -> dict[str, Any]:
        answer = await clerk.post("/api/v1/sites/north/qc", json=body)
        assert answer.status_code == status, answer.text
        result: dict[str, Any] = answer.json()
        return result

    release = await decide(201, decision="release", location="D1", sku="CHECKED", quantity=4,
                           reason="passed inspection")  # fmt: skip
    assert (release["kind"], release["to_location"], release["to_status"]) == (
        "qc_release", "D1", "available"
    )  # fmt: skip
    scrap = await decide(201, decision="reject", location="D1", sku="CHECKED", quantity=2,
                         reason="crushed")  # fmt: skip
    assert (scrap["kind"], scrap["to_location"]) == ("qc_reject", "SCRAP")
    damaged = await decide(201, decision="reject", disposition="damaged", location="D1",
                           sku="CHECKED", quantity=1, reason="dented")  # fmt: skip
    assert (damaged["to_location"], damaged["to_status"]) == ("D1", "damaged")
    short = await decide(409, decision="release", location="D1", sku="CHECKED", quantity=4,
                         reason="x")  # fmt: skip
    assert "3 free" in short["detail"] and "4 asked" in short["detail"]
    await decide(422, decision="release", location="D1", sku="CHECKED", quantity=1, reason="")
    await decide(422, decision="keep", location="D1", sku="CHECKED", quantity=1, reason="x")

    assert await balance(floor, "north", "D1", "CHECKED", status="qc_hold") == 3
    assert await balance(floor, "north", "D1", "CHECKED") == 4
    assert await balance(floor, "north", "D1", "CHECKED", status="damaged") == 1
    assert await balance(floor, "north", "SCRAP", "CHECKED", status="damaged") == 2
    rows = await sql(floor, "SELECT kind, reason, from_status, to_status FROM movements"
                            " WHERE kind LIKE 'qc%%' ORDER BY id")  # fmt: skip
    assert rows == [("qc_release", "passed inspection", "qc_hold", "available"),
                    ("qc_reject", "crushed", "qc_hold", "damaged"),
                    ("qc_reject", "dented", "qc_hold", "damaged")]  # fmt: skip
    assert await audit_actions(floor) == ["receive", "qc.release", "qc.reject", "qc.reject"]
    analyst = await floor.client("ann", Role.ANALYST)
    body = {"decision": "release", "location": "D1", "sku": "CHECKED", "quantity": 1,
            "reason": "x"}  # fmt: skip
    assert (await analyst.post("/api/v1/sites/north/qc", json=body)).status_code == 403


async def test_returns_always_go_on_qc_hold(floor: Api) -> None:
    clerk = await floor.client("bob", Role.CLERK, sites=["north"])
    answer = await clerk.post(
        "/api/v1/sites/north/returns",
        json={"reference": "RMA-9", "location": "Q1", "sku": "PLAIN", "quantity": 2,
              "reason": "wrong size"},
    )  # fmt: skip
    assert answer.status_code == 201, answer.text
    assert answer.json()["status"] == "qc_hold"
    rows = await sql(floor, "SELECT kind, document, from_location, to_location, to_status,"
                            " reason FROM movements")  # fmt: skip
    assert rows == [("return", "return:RMA-9", "CUSTOMER", "Q1", "qc_hold", "wrong size")]
    assert await balance(floor, "north", "Q1", "PLAIN", status="qc_hold") == 2
    await received(clerk, sku="SERIAL", serial="S7", location="D1", quantity=1)
    in_stock = await clerk.post(
        "/api/v1/sites/north/returns",
        json={"reference": "RMA-10", "location": "Q1", "sku": "SERIAL", "serial": "S7",
              "quantity": 1},
    )  # fmt: skip
    assert in_stock.status_code == 409 and "not out" in in_stock.json()["detail"]
    assert await audit_actions(floor) == ["return", "receive"]


# ------------------------------------------------------------------ putaway


async def test_putaway_suggestion_follows_the_rules(floor: Api) -> None:
    clerk = await floor.client("bob", Role.CLERK, sites=["north"])

    async def suggestion(**params: Any) -> dict[str, Any]:
        answer = await clerk.get("/api/v1/sites/north/putaway/suggestion", params=params)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    # PLAIN has no class: A2 (cap 50) is the fullest that fits, then A3 (unlimited);
    # A1 and C1 take other classes, A4 is held, A5 not usable.
    first = await suggestion(sku="PLAIN", quantity=10, **{"from": "D1"})
    assert first["location"] == "A2" and "fullest" in first["reason"]
    assert [c["location"] for c in first["alternatives"]] == ["A3"]
    assert (await suggestion(sku="PLAIN", quantity=51))["location"] == "A3"
    # LOTTED is class dry: A1 (dry, room 100) takes it too, but A2 (room 50) is fuller.
    assert (await suggestion(sku="LOTTED", lot="L1", quantity=10))["location"] == "A2"
    await received(clerk, sku="LOTTED", lot="L1", expiry="2030-01-01", location="D1",
                   quantity=80)  # fmt: skip
    put = await clerk.post("/api/v1/sites/north/putaways", json={
        "from_location": "D1", "to_location": "A1", "sku": "LOTTED", "lot": "L1",
        "quantity": 60})  # fmt: skip
    assert put.status_code == 201, put.text
    assert put.json()["suggested"] == "A1" and put.json()["warnings"] == []  # A2: room 50
    same_lot = await suggestion(sku="LOTTED", lot="L1", quantity=20)
    assert same_lot["location"] == "A1" and "holds this SKU and lot" in same_lot["reason"]
    too_big = await suggestion(sku="LOTTED", lot="L1", quantity=41)
    assert too_big["location"] == "A2"  # A1 has room for 40 only
    nothing = await suggestion(sku="PLAIN", quantity=10**6)
    assert nothing["location"] == "A3"
    await sql(floor, "UPDATE locations SET capacity = 10 WHERE code = 'A3'")
    none = await suggestion(sku="PLAIN", quantity=1000)
    assert none["location"] is None and "no usable storage location" in none["reason"]
    unknown = await clerk.get(
        "/api/v1/sites/north/putaway/suggestion", params={"sku": "NOPE", "quantity": 1}
    )
    assert unknown.status_code == 404


async def test_putaway_moves_stock_and_refuses_what_is_not_there(floor: Api) -> None:
    clerk = await floor.client("bob", Role.CLERK, sites=["north"])
    await received(clerk, sku="PLAIN", location="D1", quantity=30)

    async def put(status: int, **body: Any) -> dict[str, Any]:
        answer = await clerk.post("/api/v1/sites/north/putaways", json=body)
        assert answer.status_code == status, answer.text
        result: dict[str, Any] = answer.json()
        return result

    done = await put(201, from_location="D1", to_location="A2", sku="PLAIN", quantity=20)
    assert done["suggested"] == "A2"
    assert await balance(floor, "north", "D1", "PLAIN") == 10
    assert await balance(floor, "north", "A2", "PLAIN") == 20
    short = await put(409, from_location="D1", to_location="A2", sku="PLAIN", quantity=11)
    assert "10 free" in short["detail"]
    # Reserved stock is not free: a pick task's reservation holds 6 of the 10.
    await sql(floor, "INSERT INTO reservations (site, location, sku, quantity, document)"
                     " VALUES ('north', 'D1', 'PLAIN', 6, 'pick:1')")  # fmt: skip
    held_back = await put(409, from_location="D1", to_location="A3", sku="PLAIN", quantity=5)
    assert "4 free" in held_back["detail"]
    odd = await put(201, from_location="D1", to_location="C1", sku="PLAIN", quantity=4)
    assert odd["warnings"] == ["C1 takes class cold, the SKU is unclassed"]
    await sql(floor, "UPDATE reservations SET state = 'released'")
    into_held = await put(201, from_location="D1", to_location="A4", sku="PLAIN", quantity=6)
    assert into_held["warnings"] == ["A4 is held: an exception was opened"]
    assert len(into_held["exceptions"]) == 1
    kinds = await sql(floor, "SELECT kind FROM exceptions")
    assert kinds == [("held_location",)]
    await put(422, from_location="A2", to_location="A2", sku="PLAIN", quantity=1)
    await put(404, from_location="A2", to_location="Z9", sku="PLAIN", quantity=1)
    serial = await put(409, from_location="A2", to_location="A3", sku="SERIAL", serial="S1",
                       quantity=1)  # fmt: skip
    assert "not there" in serial["detail"]
    assert await sql(floor, "SELECT count(*) FROM movements WHERE kind = 'putaway'") == [(3,)]
    assert (await audit_actions(floor)).count("putaway") == 3


# ------------------------------------------------------------------ transfers


async def test_transfer_through_transit_with_partial_receipts(floor: Api) -> None:
    north = await floor.client("nora", Role.CLERK, sites=["north"])
    south = await floor.client("sam", Role.CLERK, sites=["south"])
    await received(north, sku="LOTTED", lot="L1", expiry="2030-01-01", location="D1",
                   quantity=10)  # fmt: skip
    body = {
        "from_site": "north",
        "to_site": "south",
        "lines": [{"location": "D1", "sku": "LOTTED", "lot": "L1", "quantity": 8}],
    }
    assert (await south.post("/api/v1/transfers", json=body)).status_code == 403
    shipped = await north.post("/api/v1/transfers", json=body)
    assert shipped.status_code == 201, shipped.text
    transfer = shipped.json()
    tid = transfer["id"]
    assert transfer["state"] == "in_transit"
    assert [(x["shipped"], x["received"], x["in_transit"]) for x in transfer["lines"]] == [
        ("8", "0", "8")
    ]
    assert await balance(floor, "north", "TRANSIT", "LOTTED", lot="L1") == 8

    part = {"location": "B1", "lines": [{"sku": "LOTTED", "lot": "L1", "quantity": 5}]}
    refused = await north.post(f"/api/v1/transfers/{tid}/receipts", json=part)
    assert refused.status_code == 403 and "south" in refused.json()["detail"]
    first = await south.post(f"/api/v1/transfers/{tid}/receipts", json=part)
    assert first.status_code == 201, first.text
    assert first.json()["state"] == "in_transit" and first.json()["lines"][0]["in_transit"] == "3"
    over = await south.post(f"/api/v1/transfers/{tid}/receipts", json=part)
    assert over.status_code == 409 and "3 of LOTTED L1 in transit" in over.json()["detail"]
    rest = {"location": "B1", "lines": [{"sku": "LOTTED", "lot": "L1", "quantity": 3}]}
    last = await south.post(f"/api/v1/transfers/{tid}/receipts", json=rest)
    assert last.json()["state"] == "received"
    again = await south.post(f"/api/v1/transfers/{tid}/receipts", json=rest)
    assert again.status_code == 409

    assert await balance(floor, "north", "TRANSIT", "LOTTED", lot="L1") == 0
    assert await balance(floor, "south", "B1", "LOTTED", lot="L1") == 8
    assert await balance(floor, "north", "D1", "LOTTED", lot="L1") == 2
    rows = await sql(floor, "SELECT kind, site, to_site, from_location, to_location, quantity"
                            " FROM movements WHERE document = %s ORDER BY id",
                     (f"transfer:{tid}",))  # fmt: skip
    assert rows == [
        ("transfer_out", "north", "north", "D1", "TRANSIT", Decimal(8)),
        ("transfer_in", "north", "south", "TRANSIT", "B1", Decimal(5)),
        ("transfer_in", "north", "south", "TRANSIT", "B1", Decimal(3)),
    ]
    outsider = await floor.client("olga", Role.CLERK, sites=["west"])
    assert (await outsider.get(f"/api/v1/transfers/{tid}")).status_code == 404
    assert (await outsider.get("/api/v1/transfers")).json() == []
    assert [t["id"] for t in (await south.get("/api/v1/transfers")).json()] == [tid]
    too_much = await north.post(
        "/api/v1/transfers",
        json={
            "from_site": "north",
            "to_site": "south",
            "lines": [{"location": "D1", "sku": "LOTTED", "lot": "L1", "quantity": 3}],
        },
    )
    assert too_much.status_code == 409
    same = await north.post("/api/v1/transfers", json={**body, "to_site": "north"})
    assert same.status_code == 422
    assert await sql(floor, "SELECT count(*) FROM transfers") == [(1,)]
    assert await audit_actions(floor) == [
        "receive",
        "transfer.ship",
        "transfer.receive",
        "transfer.receive",
    ]


# ------------------------------------------------------------------ idempotency


async def test_a_retried_write_is_answered_once(floor: Api) -> None:
    clerk = await floor.client("bob", Role.CLERK, sites=["north"])
    body = {"sku": "PLAIN", "location": "D1", "quantity": 5}
    headers = {"Idempotency-Key": "scan-1"}
    first = await clerk.post("/api/v1/sites/north/receipts", json=body, headers=headers)
    retry = await clerk.post("/api/v1/sites/north/receipts", json=body, headers=headers)
    assert first.status_code == retry.status_code == 201
    assert first.json() == retry.json()
    other = await clerk.post("/api/v1/sites/north/receipts", json={**body, "quantity": 6},
                             headers=headers)  # fmt: skip
    assert other.status_code == 422
    put = {"from_location": "D1", "to_location": "A3", "sku": "PLAIN", "quantity": 5}
    moved = await clerk.post("/api/v1/sites/north/putaways", json=put,
                             headers={"Idempotency-Key": "put-1"})  # fmt: skip
    moved_again = await clerk.post("/api/v1/sites/north/putaways", json=put,
                                   headers={"Idempotency-Key": "put-1"})  # fmt: skip
    assert moved.json() == moved_again.json()
    assert await balance(floor, "north", "A3", "PLAIN") == 5
    assert await sql(floor, "SELECT count(*) FROM movements") == [(2,)]
    assert await audit_actions(floor) == ["receive", "putaway"]


async def test_parallel_putaways_never_take_more_than_is_there(floor: Api) -> None:
    """8 clerks put away from one dock balance at once: exactly what is there moves."""
    clerks = [await floor.client(f"clerk{i}", Role.CLERK, sites=["north"]) for i in range(8)]
    await received(clerks[0], sku="PLAIN", location="D1", quantity=10)
    body = {"from_location": "D1", "to_location": "A3", "sku": "PLAIN", "quantity": 2}
    answers = await asyncio.gather(
        *(clerk.post("/api/v1/sites/north/putaways", json=body) for clerk in clerks)
    )
    assert sorted(a.status_code for a in answers) == [201] * 5 + [409] * 3
    assert await balance(floor, "north", "D1", "PLAIN") == 0
    assert await balance(floor, "north", "A3", "PLAIN") == 10
    assert await sql(floor, "SELECT count(*) FROM exceptions") == [(0,)]
