"""Analyst views, KPIs and CSV exports over a small history whose figures are worked by hand.

Site ``north``: storage A1..A3 (usable), DOCK and STAGE (not usable). Days D1..D5 are
2025-03-01..05 (UTC); the KPI period is [D1, D6).

- D1 08:00 receive 10 SKU-1/L1 into DOCK, put away 10:00 to A1 (2 h)
- D1 09:00 receive 5 SKU-2 into DOCK, put away 15:00 to A2 (6 h)
- D2 08:00 receive 4 SKU-2 into DOCK, put away 18:00 to A3 (10 h)
- D2 order O1 released 09:00, 3 SKU-1 picked A1 → STAGE 11:00, verified ok, shipped 13:00
- D2 order O2 released 10:00; D3 5 SKU-2 picked A2 → STAGE 10:00 (A2 empties), a failed
  verification, shipped 16:00; D3 10:30 a pick of 1 SKU-1 that is reversed
- D3 12:00 receive 4 SKU-1/L1 into DOCK, not put away
- D4 12:00 counts: A1 right (7 = 7), A3 one short (baseline 4, counted 3; posted)
- devices: scale-1 online D1 00:00, offline D1 18:00, online D2 00:00; rfid-1 online D3
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal
from typing import Any

import msgspec
import psycopg
import pytest
from psycopg import AsyncConnection

from tests.support.api import Api
from warelink.hub.access import Role
from warelink.hub.stock import ledger
from warelink.hub.stock.ledger import Leg
from warelink.protocol.messages import DeviceState, DeviceStatus


def day(n: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(2025, 3, n, hour, minute, tzinfo=dt.UTC)


def leg(when: dt.datetime, sku: str, qty: int, src: str, dst: str, kind: str, lot: str = "") -> Leg:
    return Leg(
        site="north", sku=sku, quantity=Decimal(qty), from_location=src, to_location=dst,
        kind=kind, occurred_at=when, actor="test", lot=lot,
    )  # fmt: skip


async def build_history(conn: AsyncConnection) -> None:
    await conn.execute("INSERT INTO sites (id) VALUES ('north'), ('south')")
    await conn.execute(
        "INSERT INTO locations (site, code, kind, usable) VALUES"
        " ('north', 'DOCK', 'internal', false), ('north', 'STAGE', 'internal', false),"
        " ('north', 'A1', 'internal', true), ('north', 'A2', 'internal', true),"
        " ('north', 'A3', 'internal', true), ('south', 'S1', 'internal', true)"
    )
    await conn.execute(
        "INSERT INTO skus (code, gtin, name) VALUES ('SKU-1', '09506000134352', 'one'),"
        " ('SKU-2', '09506000134369', 'two')"
    )
    await conn.execute("INSERT INTO lots (sku, lot, expiry) VALUES ('SKU-1', 'L1', '2025-12-31')")
    await conn.execute(
        "INSERT INTO orders (site, reference, released_at, released_by, state, shipped_at)"
        " VALUES ('north', 'O1', %s, 'test', 'shipped', %s),"
        " ('north', 'O2', %s, 'test', 'shipped', %s)",
        (day(2, 9), day(2, 13), day(2, 10), day(3, 16)),
    )
    cur = await conn.execute(
        "INSERT INTO pick_tasks (site, order_ref, sku, lot, location, to_location, quantity,"
        " state, picked_by, picked_at) VALUES"
        " ('north', 'O1', 'SKU-1', 'L1', 'A1', 'STAGE', 3, 'shipped', 'test', %s),"
        " ('north', 'O2', 'SKU-2', '', 'A2', 'STAGE', 5, 'shipped', 'test', %s) RETURNING id",
        (day(2, 11), day(3, 10)),
    )
    task1, task2 = [row[0] for row in await cur.fetchall()]
    await conn.execute(
        "INSERT INTO verifications (site, order_ref, pick_task, sku, lot, quantity, method, ok,"
        " actor, at) VALUES ('north', 'O1', %s, 'SKU-1', 'L1', 3, 'scale', true, 'test', %s),"
        " ('north', NULL, %s, 'SKU-2', '', 5, 'scale', false, 'test', %s),"
        " ('north', 'O2', %s, 'SKU-2', '', 5, 'scan', true, 'test', %s)",
        (task1, day(2, 12), task2, day(3, 11), task2, day(3, 12)),
    )
    posted = await ledger.post(
        [
            leg(day(1, 8), "SKU-1", 10, "SUPPLIER", "DOCK", "receipt", "L1"),
            leg(day(1, 9), "SKU-2", 5, "SUPPLIER", "DOCK", "receipt"),
            leg(day(1, 10), "SKU-1", 10, "DOCK", "A1", "putaway", "L1"),
            leg(day(1, 15), "SKU-2", 5, "DOCK", "A2", "putaway"),
            leg(day(2, 8), "SKU-2", 4, "SUPPLIER", "DOCK", "receipt"),
            leg(day(2, 11), "SKU-1", 3, "A1", "STAGE", "pick", "L1"),
            leg(day(2, 13), "SKU-1", 3, "STAGE", "CUSTOMER", "ship", "L1"),
            leg(day(2, 18), "SKU-2", 4, "DOCK", "A3", "putaway"),
            leg(day(3, 10), "SKU-2", 5, "A2", "STAGE", "pick"),
            leg(day(3, 10, 30), "SKU-1", 1, "A1", "STAGE", "pick", "L1"),
            leg(day(3, 12), "SKU-1", 4, "SUPPLIER", "DOCK", "receipt", "L1"),
            leg(day(3, 16), "SKU-2", 5, "STAGE", "CUSTOMER", "ship"),
            leg(day(4, 12), "SKU-2", 1, "A3", "ADJUSTMENT", "count"),
        ],
        conn=conn,
    )
    await ledger.reverse(posted.movements[9], actor="test", reason="CORRECTION", conn=conn)
    await ledger.post(
        [Leg(site="south", sku="SKU-2", quantity=Decimal(2), from_location="SUPPLIER",
             to_location="S1", kind="receipt", occurred_at=day(1, 12), actor="test")],
        conn=conn,
    )  # fmt: skip
    for location, state, when, lines in (
        ("A1", "approved", day(4, 12), [("SKU-1", "L1", 7, 7)]),
        ("A3", "approved", day(4, 12), [("SKU-2", "", 4, 3)]),
        ("A2", "counted", day(4, 13), [("SKU-2", "", None, 9)]),  # not approved: left out
        ("A1", "approved", day(9, 12), [("SKU-1", "L1", 7, 1)]),  # outside the period
    ):
        cur = await conn.execute(
            "INSERT INTO counts (site, location, state, created_by, counted_by, counted_at)"
            " VALUES ('north', %s, %s, 'test', 'test', %s) RETURNING id",
            (location, state, when),
        )
        count_id = (await cur.fetchone() or (0,))[0]
        for sku, lot, baseline, counted in lines:
            await conn.execute(
                "INSERT INTO count_lines (count_id, sku, lot, baseline, counted)"
                " VALUES (%s, %s, %s, %s, %s)",
                (count_id, sku, lot, baseline, counted),
            )
    for seq, (device, state, when) in enumerate(
        (
            ("scale-1", DeviceState.ONLINE, day(1)),
            ("scale-1", DeviceState.OFFLINE, day(1, 18)),
            ("scale-1", DeviceState.ONLINE, day(2)),
            ("rfid-1", DeviceState.ONLINE, day(3)),
        ),
        start=1,
    ):
        await conn.execute(
            "INSERT INTO events (gateway, seq, event_id, site, device, type, cls, occurred_at,"
            " received_at, body) VALUES ('gw-1', %s, gen_random_uuid(), 'north', %s,"
            " 'device_status', 2, %s, %s, %s::jsonb)",
            (seq, device, when, when, msgspec.json.encode(DeviceStatus(state)).decode()),
        )


@pytest.fixture
async def history(api: Api) -> Api:
    async with api.hub.pool.connection() as conn, conn.transaction():
        await build_history(conn)
    return api


PERIOD = {"since": "2025-03-01", "until": "2025-03-06"}


async def test_site_kpis_match_the_hand_worked_figures(history: Api) -> None:
    analyst = await history.client("ana", Role.ANALYST, sites=["north"])
    response = await analyst.get("/api/v1/sites/north/kpis", params=PERIOD)
    assert response.status_code == 200, response.text
    k = response.json()
    assert (k["since"], k["until"]) == ("2025-03-01", "2025-03-06")
    assert k["inventory_accuracy"] == {"value": 0.5, "total": 2, "correct": 1}
    assert k["unit_accuracy"]["value"] == pytest.approx(1 - 1 / 11)
    assert k["order_picking_accuracy"] == {"value": 0.5, "total": 2, "correct": 1}
    assert k["dock_to_stock"] == {
        "count": 3, "median_hours": pytest.approx(6), "p90_hours": pytest.approx(9.2),
        "mean_hours": pytest.approx(6), "awaiting_putaway": 1,
    }  # fmt: skip
    # on hand at day ends: 15, 16, 15, 14, 14 (average 14.8); 8 units shipped
    turnover = k["turnover"]
    assert turnover["units_shipped"] == 8 and turnover["days"] == 5
    assert turnover["average_on_hand"] == pytest.approx(14.8)
    assert turnover["turnover"] == pytest.approx(8 / 14.8)
    assert turnover["days_on_hand"] == pytest.approx(5 * 14.8 / 8)
    cycle = k["order_cycle_time"]
    assert cycle["count"] == 2 and cycle["median_hours"] == pytest.approx(17)
    assert cycle["p90_hours"] == pytest.approx(27.4)
    # occupied of 3 usable: 2, 3, 2, 2, 2
    assert k["location_utilisation"] == {
        "usable_locations": 3, "average": pytest.approx(11 / 15), "peak": pytest.approx(1.0),
    }  # fmt: skip
    # A1/SKU-1 5 days, A2/SKU-2 5 days (empty D3..D5), A3/SKU-2 4 days
    assert k["stockout_rate"] == {
        "value": pytest.approx(3 / 14), "sku_location_days": 14, "stockout_days": 3,
    }  # fmt: skip
    flow = k["throughput"]
    assert (flow["lines_picked"], flow["units_picked"]) == (2, 8)  # the reversed pick is out
    assert (flow["lines_shipped"], flow["units_shipped"]) == (2, 8)
    assert flow["working_hours"] == 4 and flow["lines_picked_per_hour"] == pytest.approx(0.5)
    uptime = k["device_uptime"]
    assert uptime["value"] == pytest.approx(186 / 192)
    assert {d["device"]: (d["online_hours"], d["observed_hours"]) for d in uptime["devices"]} == {
        "rfid-1": pytest.approx((72, 72)), "scale-1": pytest.approx((114, 120)),
    }  # fmt: skip


async def test_an_empty_spell_counts_as_stockout_for_seven_days_at_most(history: Api) -> None:
    admin = await history.client("alice")
    # D9 is the 7th empty day of A2 (D3..D9); from D10 A2 is taken as released
    kpis = "/api/v1/sites/north/kpis"
    d9 = (await admin.get(kpis, params={"since": "2025-03-09", "until": "2025-03-10"})).json()
    assert d9["stockout_rate"] == {"value": pytest.approx(1 / 3), "sku_location_days": 3,
                                   "stockout_days": 1}  # fmt: skip
    later = (await admin.get(kpis, params={"since": "2025-03-10", "until": "2025-03-12"})).json()
    assert later["stockout_rate"] == {"value": 0.0, "sku_location_days": 4, "stockout_days": 0}
    assert later["inventory_accuracy"]["total"] == 0
    assert later["inventory_accuracy"]["value"] is None


async def test_sites_side_by_side_only_those_the_caller_covers(history: Api) -> None:
    admin = await history.client("alice")
    both = (await admin.get("/api/v1/kpis", params=PERIOD)).json()
    assert [s["site"] for s in both["sites"]] == ["north", "south"]
    south = both["sites"][1]
    assert south["turnover"]["units_shipped"] == 0
    assert south["turnover"]["average_on_hand"] == pytest.approx(2)
    assert south["location_utilisation"]["average"] == pytest.approx(1.0)
    north_only = await history.client("ana", Role.ANALYST, sites=["north"])
    mine = (await north_only.get("/api/v1/kpis", params=PERIOD)).json()
    assert [s["site"] for s in mine["sites"]] == ["north"]
    named = (await admin.get("/api/v1/kpis", params={**PERIOD, "site": ["south"]})).json()
    assert [s["site"] for s in named["sites"]] == ["south"]
    assert (await north_only.get("/api/v1/sites/south/kpis")).status_code == 403
    clerk = await history.client("bob", Role.CLERK, sites=["north"])
    assert (await clerk.get("/api/v1/sites/north/kpis")).status_code == 403
    assert (await history.anonymous().get("/api/v1/kpis")).status_code == 401
    assert (await admin.get("/api/v1/sites/nowhere/kpis")).status_code == 404
    bad = await admin.get("/api/v1/kpis", params={"since": "2025-03-06", "until": "2025-03-01"})
    assert bad.status_code == 422 and "before" in bad.json()["detail"]


def parse(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


async def test_movements_csv_is_the_ledger(history: Api) -> None:
    admin = await history.client("alice")
    response = await admin.get("/api/v1/sites/north/movements.csv")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = parse(response.text)
    async with history.hub.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT id, sku, quantity, kind, from_location, to_location FROM movements"
            " WHERE site = 'north' OR to_site = 'north' ORDER BY id"
        )
        expected = await cur.fetchall()
    assert len(expected) == 14  # the 13 posted and a reversal; not south's
    assert [
        (int(r["movement"]), r["sku"], Decimal(r["quantity"]), r["kind"], r["from_location"],
         r["to_location"]) for r in rows
    ] == expected  # fmt: skip
    first = rows[0]
    assert (first["gtin"], first["expiry"], first["occurred_at"]) == (
        "09506000134352",
        "2025-12-31",
        "2025-03-01 08:00:00+00",
    )
    window = await admin.get(
        "/api/v1/sites/north/movements.csv",
        params={"since": "2025-03-02T00:00:00Z", "until": "2025-03-03T00:00:00"},
    )
    assert sorted(r["kind"] for r in parse(window.text)) == ["pick", "putaway", "receipt", "ship"]


async def test_balances_csv_is_the_projection(history: Api) -> None:
    analyst = await history.client("ana", Role.ANALYST, sites=["north"])
    rows = parse((await analyst.get("/api/v1/sites/north/balances.csv")).text)
    async with history.hub.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT location, sku, lot, status, quantity FROM balances"
            " WHERE site = 'north' AND quantity <> 0 ORDER BY location, sku, lot, serial, lpn"
        )
        expected = await cur.fetchall()
    got = [(r["location"], r["sku"], r["lot"], r["status"], Decimal(r["quantity"])) for r in rows]
    assert got == expected
    assert ("A1", "SKU-1", "L1", "available", Decimal(7)) in got
    assert {r["location_kind"] for r in rows} == {"internal", "supplier", "customer", "adjustment"}
    assert (await analyst.get("/api/v1/sites/south/balances.csv")).status_code == 403
    admin = await history.client("alice")
    assert (await admin.get("/api/v1/sites/nowhere/balances.csv")).status_code == 404


async def test_stock_view_subtracts_open_reservations(history: Api) -> None:
    async with history.hub.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO reservations (site, location, sku, lot, quantity, document, state)"
            " VALUES ('north', 'A1', 'SKU-1', 'L1', 2, 'pick:1', 'open'),"
            " ('north', 'A1', 'SKU-1', 'L1', 5, 'pick:0', 'released')"
        )
        cur = await conn.execute(
            "SELECT location, sku, lot, expiry, status, on_hand, reserved, available"
            " FROM analyst.stock WHERE site = 'north' ORDER BY location, sku"
        )
        rows = await cur.fetchall()
    expiry = dt.date(2025, 12, 31)
    assert rows == [
        ("A1", "SKU-1", "L1", expiry, "available", 7, 2, 5),
        ("A3", "SKU-2", "", None, "available", 3, 0, 3),
        ("DOCK", "SKU-1", "L1", expiry, "available", 4, 0, 4),
    ]  # empty places (A2, STAGE) are left out


async def test_daily_balances_hold_until_the_next_change(history: Api) -> None:
    async with history.hub.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT day, units_in, units_out, closing_quantity, next_change_day"
            " FROM analyst.daily_balances WHERE site = 'north' AND location = 'A1' ORDER BY day"
        )
        rows = await cur.fetchall()
    today = dt.datetime.now(dt.UTC).date()
    assert rows == [
        (dt.date(2025, 3, 1), 10, 0, 10, dt.date(2025, 3, 2)),
        (dt.date(2025, 3, 2), 0, 3, 7, dt.date(2025, 3, 3)),
        (dt.date(2025, 3, 3), 0, 1, 6, today),
        (today, 1, 0, 7, None),  # the reversal, posted today
    ]


async def test_the_analyst_role_reads_the_views_and_nothing_else(history: Api) -> None:
    async with history.hub.pool.connection() as conn:
        await conn.execute("BEGIN")
        await conn.execute("SET LOCAL ROLE warelink_analyst")
        rows: list[Any] = await (await conn.execute("SELECT * FROM analyst.stock")).fetchall()
        assert rows
        await (await conn.execute("SELECT * FROM analyst.kpi_turnover")).fetchall()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("SELECT * FROM movements")
        await conn.execute("ROLLBACK")
