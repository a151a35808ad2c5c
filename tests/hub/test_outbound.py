"""Outbound over the real API and database: release (FIFO/FEFO), pick, verify, ship."""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal
from typing import Any

import httpx
from psycopg import AsyncConnection

from tests.support.api import Api
from warelink.hub.access import Role
from warelink.hub.operations.verification import record_verification
from warelink.hub.stock import ledger

SITE = "north"
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
URL = f"/api/v1/sites/{SITE}"


async def _site(conn: AsyncConnection) -> None:
    await conn.execute("INSERT INTO sites (id) VALUES (%s)", (SITE,))
    await conn.execute(
        "INSERT INTO zones (site, code, kind) VALUES (%s, 'S', 'storage'), (%s, 'P', 'staging'),"
        " (%s, 'D', 'dock')",
        (SITE, SITE, SITE),
    )
    await conn.execute(
        "INSERT INTO locations (site, code, kind, zone) VALUES"
        " (%s, 'A-01', 'internal', 'S'), (%s, 'A-02', 'internal', 'S'),"
        " (%s, 'A-03', 'internal', 'S'), (%s, 'STAGE', 'internal', 'P'),"
        " (%s, 'DOCK', 'internal', 'D')",
        (SITE,) * 5,
    )


async def _sku(conn: AsyncConnection, code: str, **fields: Any) -> None:
    columns = ["code", *fields]
    await conn.execute(
        f"INSERT INTO skus ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})",
        [code, *fields.values()],
    )


async def _lot(
    conn: AsyncConnection, sku: str, lot: str, received: dt.datetime, expiry: dt.date | None
) -> None:
    await conn.execute(
        "INSERT INTO lots (sku, lot, first_received_at, expiry) VALUES (%s, %s, %s, %s)",
        (sku, lot, received, expiry),
    )


async def _stock(
    conn: AsyncConnection, sku: str, location: str, quantity: int, lot: str = "", serial: str = ""
) -> None:
    await ledger.post(
        [ledger.Leg(site=SITE, sku=sku, quantity=Decimal(quantity), from_location="SUPPLIER",
                    to_location=location, kind="receipt", occurred_at=T0, actor="test", lot=lot,
                    serial=serial)],
        conn=conn,
    )  # fmt: skip


async def _balance(conn: AsyncConnection, location: str, sku: str, lot: str = "") -> Decimal:
    cur = await conn.execute(
        "SELECT coalesce(sum(quantity), 0) FROM balances WHERE site = %s AND location = %s"
        " AND sku = %s AND lot = %s AND status = 'available'",
        (SITE, location, sku, lot),
    )
    row = await cur.fetchone()
    assert row is not None
    value: Decimal = row[0]
    return value


async def _reservations(conn: AsyncConnection, task: int) -> list[tuple[str, int]]:
    cur = await conn.execute(
        "SELECT state, quantity FROM reservations WHERE document = %s ORDER BY id",
        (f"pick:{task}",),
    )
    return [(state, int(q)) for state, q in await cur.fetchall()]


async def _release(
    client: httpx.AsyncClient, reference: str, *lines: dict[str, Any], **extra: Any
) -> httpx.Response:
    return await client.post(
        f"{URL}/orders", json={"reference": reference, "lines": list(lines), **extra}
    )


def _tasks(order: dict[str, Any]) -> list[tuple[str, str, int]]:
    return [(t["location"], t["lot"], int(Decimal(t["quantity"]))) for t in order["tasks"]]


async def test_fifo_takes_the_oldest_lot_first_then_stock_without_a_lot(api: Api) -> None:
    async with api.hub.pool.connection() as conn:
        await _site(conn)
        await _sku(conn, "BOLT", tracking="lot")
        await _lot(conn, "BOLT", "NEW", T0 + dt.timedelta(days=5), None)
        await _lot(conn, "BOLT", "OLD", T0, None)
        await _stock(conn, "BOLT", "A-01", 10, lot="NEW")
        await _stock(conn, "BOLT", "A-02", 4, lot="OLD")
        await _stock(conn, "BOLT", "A-03", 50)
        await _stock(conn, "BOLT", "DOCK", 99, lot="OLD")  # a dock is not picked from
    admin = await api.client("alice")

    answer = await _release(admin, "SO-1", {"sku": "BOLT", "quantity": 20})
    assert answer.status_code == 201, answer.text
    order = answer.json()
    assert _tasks(order) == [("A-02", "OLD", 4), ("A-01", "NEW", 10), ("A-03", "", 6)]
    assert all(t["to_location"] == "STAGE" and t["line"] == 1 for t in order["tasks"])
    assert order["lines"][0]["reserved"] == "20" and order["lines"][0]["short"] == "0"

    async with api.hub.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT location, lot, quantity FROM reservations WHERE state = 'open' ORDER BY id"
        )
        assert await cur.fetchall() == [("A-02", "OLD", 4), ("A-01", "NEW", 10), ("A-03", "", 6)]
        cur = await conn.execute("SELECT action, subject FROM audit_log")
        assert await cur.fetchall() == [("order.release", "SO-1")]
        # releasing reserves only: no stock moved
        assert await _balance(conn, "A-02", "BOLT", "OLD") == 4


async def test_fefo_takes_the_soonest_expiry_and_skips_expired_lots(api: Api) -> None:
    today = dt.datetime.now(dt.UTC).date()
    async with api.hub.pool.connection() as conn:
        await _site(conn)
        await _sku(conn, "MILK", tracking="lot", pick_policy="fefo")
        await _lot(conn, "MILK", "GONE", T0, today - dt.timedelta(days=1))
        await _lot(conn, "MILK", "SOON", T0 + dt.timedelta(days=9), today + dt.timedelta(days=2))
        await _lot(conn, "MILK", "LATE", T0 + dt.timedelta(days=1), today + dt.timedelta(days=30))
        await _stock(conn, "MILK", "A-01", 8, lot="GONE")
        await _stock(conn, "MILK", "A-02", 5, lot="LATE")
        await _stock(conn, "MILK", "A-03", 3, lot="SOON")
    admin = await api.client("alice")

    order = (await _release(admin, "SO-2", {"sku": "MILK", "quantity": 6})).json()
    assert _tasks(order) == [("A-03", "SOON", 3), ("A-02", "LATE", 3)]

    # only unexpired stock counts: 13 more cannot be had, the expired lot stays put
    short = (await _release(admin, "SO-3", {"sku": "MILK", "quantity": 13})).json()
    assert _tasks(short) == [("A-02", "LATE", 2)]
    assert short["lines"][0]["short"] == "11"


async def test_a_line_for_a_lot_and_a_refused_partial_release(api: Api) -> None:
    async with api.hub.pool.connection() as conn:
        await _site(conn)
        await _sku(conn, "NUT", tracking="lot")
        await _lot(conn, "NUT", "L1", T0, None)
        await _lot(conn, "NUT", "L2", T0 + dt.timedelta(days=1), None)
        await _stock(conn, "NUT", "A-01", 5, lot="L1")
        await _stock(conn, "NUT", "A-02", 5, lot="L2")
        await _stock(conn, "NUT", "A-03", 5, lot="L2")
    admin = await api.client("alice")

    order = (await _release(admin, "SO-4", {"sku": "NUT", "quantity": 7, "lot": "L2"})).json()
    assert _tasks(order) == [("A-02", "L2", 5), ("A-03", "L2", 2)]

    refused = await _release(admin, "SO-5", {"sku": "NUT", "quantity": 9}, partial=False)
    assert refused.status_code == 409
    assert "line 1 (NUT): 1 short" in refused.json()["detail"]
    assert (await admin.get(f"{URL}/orders/SO-5")).status_code == 404

    again = await _release(admin, "SO-4", {"sku": "NUT", "quantity": 1})
    assert again.status_code == 409
    unknown = await _release(admin, "SO-6", {"sku": "NOPE", "quantity": 1})
    assert unknown.status_code == 422 and "NOPE" in unknown.json()["detail"]
    no_site = await admin.post(
        "/api/v1/sites/south/orders", json={"reference": "X", "lines": [{"sku": "NUT",
                                                                         "quantity": 1}]}
    )  # fmt: skip
    assert no_site.status_code == 404


async def test_concurrent_releases_never_reserve_more_than_is_there(api: Api) -> None:
    async with api.hub.pool.connection() as conn:
        await _site(conn)
        await _sku(conn, "GEAR")
        await _stock(conn, "GEAR", "A-01", 10)
        await _stock(conn, "GEAR", "A-02", 6)
    clients = [await api.client(f"coord{i}", Role.COORDINATOR) for i in range(8)]

    answers = await asyncio.gather(
        *(_release(c, f"SO-{i}", {"sku": "GEAR", "quantity": 5}) for i, c in enumerate(clients))
    )
    assert all(a.status_code == 201 for a in answers), [a.text for a in answers]
    got = sorted(Decimal(a.json()["lines"][0]["reserved"]) for a in answers)
    assert sum(got) == 16 and got[-3:] == [5, 5, 5]

    async with api.hub.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT b.location, b.quantity, coalesce(sum(r.quantity), 0) FROM balances b"
            " LEFT JOIN reservations r ON r.site = b.site AND r.location = b.location"
            " AND r.sku = b.sku AND r.lot = b.lot AND r.state = 'open'"
            " WHERE b.sku = 'GEAR' AND b.location IN ('A-01', 'A-02') GROUP BY 1, 2 ORDER BY 1"
        )
        assert await cur.fetchall() == [("A-01", 10, 10), ("A-02", 6, 6)]


async def test_pick_moves_stock_to_staging_and_consumes_the_reservation(api: Api) -> None:
    async with api.hub.pool.connection() as conn:
        await _site(conn)
        await _sku(conn, "CUP")
        await _stock(conn, "CUP", "A-01", 10)
        await _stock(conn, "CUP", "A-02", 10)
    admin = await api.client("alice")
    clerk = await api.client("bob", Role.CLERK, sites=[SITE])
    first = (await _release(admin, "SO-7", {"sku": "CUP", "quantity": 8})).json()["tasks"][0]
    second = (await _release(admin, "SO-8", {"sku": "CUP", "quantity": 6})).json()["tasks"]
    assert [(t["location"], t["quantity"]) for t in second] == [("A-01", "2"), ("A-02", "4")]

    # A-01's last 2 are reserved for SO-8: taking 9 from there is refused
    over = await clerk.post(
        f"{URL}/pick-tasks/{first['id']}/pick", json={"location": "A-01", "quantity": 9}
    )
    assert over.status_code == 422  # more than the task asks
    await_free = await clerk.post(
        f"{URL}/pick-tasks/{second[1]['id']}/pick", json={"location": "A-01", "quantity": 4}
    )
    assert await_free.status_code == 409 and "free to pick" in await_free.json()["detail"]

    picked = await clerk.post(
        f"{URL}/pick-tasks/{first['id']}/pick",
        json={"location": "A-01", "quantity": 8},
        headers={"Idempotency-Key": "p1"},
    )
    assert picked.status_code == 200, picked.text
    assert picked.json()["state"] == "picked" and picked.json()["picked"] == "8"
    replay = await clerk.post(
        f"{URL}/pick-tasks/{first['id']}/pick",
        json={"location": "A-01", "quantity": 8},
        headers={"Idempotency-Key": "p1"},
    )
    assert replay.json() == picked.json()

    # a short pick, from another location than suggested
    short = await clerk.post(
        f"{URL}/pick-tasks/{second[1]['id']}/pick", json={"location": "A-02", "quantity": 3}
    )
    assert short.status_code == 200, short.text
    async with api.hub.pool.connection() as conn:
        assert await _balance(conn, "A-01", "CUP") == 2
        assert await _balance(conn, "A-02", "CUP") == 7
        assert await _balance(conn, "STAGE", "CUP") == 11
        cur = await conn.execute(
            "SELECT document, from_location, to_location, quantity, actor FROM movements"
            " WHERE kind = 'pick' ORDER BY id"
        )
        assert await cur.fetchall() == [
            (f"pick:{first['id']}", "A-01", "STAGE", 8, "bob"),
            (f"pick:{second[1]['id']}", "A-02", "STAGE", 3, "bob"),
        ]
        assert await _reservations(conn, first["id"]) == [("consumed", 8)]
        assert await _reservations(conn, second[1]["id"]) == [("consumed", 3), ("released", 1)]
        cur = await conn.execute("SELECT count(*) FROM audit_log WHERE action = 'pick_task.pick'")
        assert await cur.fetchone() == (2,)
        assert await ledger.check(conn=conn) == []
    again = await clerk.post(
        f"{URL}/pick-tasks/{first['id']}/pick", json={"location": "A-01", "quantity": 1}
    )
    assert again.status_code == 409
    order = (await admin.get(f"{URL}/orders/SO-8")).json()
    assert order["state"] == "released"  # one task still open
    assert order["lines"][0]["short"] == "1"


async def _picked_order(api: Api, sku: str, quantity: int, **sku_fields: Any) -> int:
    async with api.hub.pool.connection() as conn:
        await _site(conn)
        await _sku(conn, sku, **sku_fields)
        await _stock(conn, sku, "A-01", 20)
    admin = await api.client("alice")
    task = (await _release(admin, "SO-9", {"sku": sku, "quantity": quantity})).json()["tasks"][0]
    picked = await admin.post(
        f"{URL}/pick-tasks/{task['id']}/pick", json={"location": "A-01", "quantity": quantity}
    )
    assert picked.status_code == 200, picked.text
    assert (await admin.get(f"{URL}/orders/SO-9")).json()["state"] == "picked"
    task_id: int = task["id"]
    return task_id


async def test_verify_by_weight_then_ship_only_with_a_supervisor_override(api: Api) -> None:
    task = await _picked_order(api, "JAR", 4, unit_weight_kg=Decimal("0.5"),
                               weight_tolerance_pct=5)  # fmt: skip
    clerk = await api.client("bob", Role.CLERK, sites=[SITE])
    boss = await api.client("carol", Role.SUPERVISOR, sites=[SITE])

    good = await clerk.post(
        f"{URL}/verifications",
        json={"sku": "JAR", "quantity": 4, "weight_kg": "2.09", "order_ref": "SO-9"},
    )
    assert good.status_code == 201, good.text
    assert good.json()["ok"] and good.json()["method"] == "scale"
    assert Decimal(good.json()["expected_kg"]) == 2
    assert Decimal(good.json()["tolerance_kg"]) == Decimal("0.1")
    assert (await clerk.get(f"{URL}/pick-tasks/{task}")).json()["state"] == "verified"

    bad = await clerk.post(
        f"{URL}/verifications",
        json={"sku": "JAR", "quantity": 4, "weight_kg": 2.2, "order_ref": "SO-9"},
    )
    assert bad.status_code == 201 and not bad.json()["ok"]
    assert "outside" in bad.json()["detail"]
    async with api.hub.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT kind, subject, state, owner_role FROM exceptions WHERE kind = 'verify_mismatch'"
        )
        assert await cur.fetchall() == [("verify_mismatch", "SO-9/JAR/", "open", "clerk")]

    refused = await clerk.post(f"{URL}/orders/SO-9/ship", json={})
    assert refused.status_code == 409 and "failed verification" in refused.json()["detail"]
    forbidden = await clerk.post(
        f"{URL}/orders/SO-9/ship", json={"override": True, "reason": "checked"}
    )
    assert forbidden.status_code == 403
    no_reason = await boss.post(f"{URL}/orders/SO-9/ship", json={"override": True})
    assert no_reason.status_code == 422
    shipped = await boss.post(
        f"{URL}/orders/SO-9/ship", json={"override": True, "reason": "reweighed by hand"}
    )
    assert shipped.status_code == 200, shipped.text
    order = shipped.json()
    assert order["state"] == "shipped" and order["shipped_at"] is not None
    assert order["tasks"][0]["state"] == "shipped" and order["lines"][0]["shipped"] == "4"
    async with api.hub.pool.connection() as conn:
        assert await _balance(conn, "STAGE", "JAR") == 0
        assert await _balance(conn, "A-01", "JAR") == 16
        cur = await conn.execute(
            "SELECT from_location, to_location, quantity, document, actor FROM movements"
            " WHERE kind = 'ship'"
        )
        assert await cur.fetchall() == [("STAGE", "CUSTOMER", 4, f"pick:{task}", "carol")]
        cur = await conn.execute(
            "SELECT detail->>'override' FROM audit_log WHERE action = 'order.ship'"
        )
        assert await cur.fetchall() == [("true",)]
        assert await ledger.check(conn=conn) == []
    twice = await boss.post(f"{URL}/orders/SO-9/ship", json={})
    assert twice.status_code == 409


async def test_a_passing_reverification_clears_the_way_to_ship(api: Api) -> None:
    await _picked_order(api, "JAR", 4, unit_weight_kg=Decimal("0.5"))
    clerk = await api.client("bob", Role.CLERK, sites=[SITE])
    for quantity, ok in ((3, False), (4, True)):  # scan only: quantity against the picked
        answer = await clerk.post(
            f"{URL}/verifications", json={"sku": "JAR", "quantity": quantity, "order_ref": "SO-9"}
        )
        assert answer.json()["ok"] is ok and answer.json()["method"] == "scan"
    shipped = await clerk.post(f"{URL}/orders/SO-9/ship", json={})
    assert shipped.status_code == 200, shipped.text


async def test_verify_by_rfid_wants_exactly_the_picked_serials_tags(api: Api) -> None:
    async with api.hub.pool.connection() as conn:
        await _site(conn)
        await _sku(conn, "DRILL", tracking="serial")
        for n in range(1, 5):
            await conn.execute(
                "INSERT INTO serials (sku, serial, epc) VALUES ('DRILL', %s, %s)",
                (f"S{n}", f"3034AA{n:018X}"),
            )
            await _stock(conn, "DRILL", "A-01", 1, serial=f"S{n}")
    admin = await api.client("alice")
    order = (await _release(admin, "SO-10", {"sku": "DRILL", "quantity": 2})).json()
    task = order["tasks"][0]["id"]
    wrong = await admin.post(
        f"{URL}/pick-tasks/{task}/pick", json={"location": "A-01", "quantity": 2}
    )
    assert wrong.status_code == 422 and "serial" in wrong.json()["detail"]
    picked = await admin.post(
        f"{URL}/pick-tasks/{task}/pick",
        json={"location": "A-01", "quantity": 2, "serials": ["S3", "S4"]},
    )
    assert picked.status_code == 200, picked.text

    def tags(*ns: int) -> list[str]:
        return [f"3034aa{n:018x}" for n in ns]

    for read, ok in ((tags(3), False), (tags(1, 3), False), (tags(3, 4, 2), False),
                     (tags(4, 3), True)):  # fmt: skip
        answer = await admin.post(
            f"{URL}/verifications",
            json={"sku": "DRILL", "quantity": 2, "epcs": read, "order_ref": "SO-10"},
        )
        assert answer.status_code == 201 and answer.json()["method"] == "rfid"
        assert answer.json()["ok"] is ok, (read, answer.json()["detail"])
    async with api.hub.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT serial, location FROM balances WHERE sku = 'DRILL' AND quantity > 0"
            " AND location <> 'SUPPLIER' ORDER BY serial"
        )
        assert await cur.fetchall() == [("S1", "A-01"), ("S2", "A-01"), ("S3", "STAGE"),
                                        ("S4", "STAGE")]  # fmt: skip
        cur = await conn.execute("SELECT count(*) FROM exceptions WHERE kind = 'verify_mismatch'")
        assert await cur.fetchone() == (1,)  # one open exception for the order's SKU


async def test_cancel_releases_reservations_and_reverses_picks(api: Api) -> None:
    async with api.hub.pool.connection() as conn:
        await _site(conn)
        await _sku(conn, "PEN")
        await _stock(conn, "PEN", "A-01", 5)
        await _stock(conn, "PEN", "A-02", 5)
    admin = await api.client("alice")
    clerk = await api.client("bob", Role.CLERK, sites=[SITE])
    tasks = (await _release(admin, "SO-11", {"sku": "PEN", "quantity": 8})).json()["tasks"]
    await admin.post(f"{URL}/pick-tasks/{tasks[0]['id']}/pick",
                     json={"location": "A-01", "quantity": 5})  # fmt: skip

    assert (await clerk.post(f"{URL}/orders/SO-11/cancel", json={})).status_code == 403
    one = await admin.post(f"{URL}/pick-tasks/{tasks[1]['id']}/cancel", json={"reason": "x"})
    assert one.json()["state"] == "cancelled" and one.json()["reserved"] == "0"
    order = (await admin.get(f"{URL}/orders/SO-11")).json()
    assert order["state"] == "picked" and order["lines"][0]["short"] == "3"

    cancelled = await admin.post(f"{URL}/orders/SO-11/cancel", json={"reason": "customer"})
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    async with api.hub.pool.connection() as conn:
        assert await _balance(conn, "A-01", "PEN") == 5
        assert await _balance(conn, "STAGE", "PEN") == 0
        cur = await conn.execute("SELECT count(*) FROM reservations WHERE state = 'open'")
        assert await cur.fetchone() == (0,)
        cur = await conn.execute("SELECT count(*) FROM movements WHERE kind = 'reversal'")
        assert await cur.fetchone() == (1,)
        assert await ledger.check(conn=conn) == []
    assert (await admin.post(f"{URL}/orders/SO-11/ship", json={})).status_code == 409
    assert (await admin.get(f"{URL}/pick-tasks/999999")).status_code == 404


async def test_a_device_verification_is_stored_once_and_needs_no_order(api: Api) -> None:
    async with api.hub.pool.connection() as conn:
        await _site(conn)
        await _sku(conn, "TIN", gtin="09506000134352", unit_weight_kg=Decimal("1.2"))
        for _ in range(2):
            async with conn.transaction():
                row = await record_verification(
                    SITE, sku="09506000134352", lot="", quantity=Decimal(5),
                    weight_kg=Decimal("7.5"), epcs=None, order_ref="NO-SUCH", actor="gateway:g1",
                    at=T0, source_gateway="g1", source_seq=42, conn=conn,
                )  # fmt: skip
            assert row["sku"] == "TIN" and not row["ok"]
        async with conn.transaction():
            plain = await record_verification(
                SITE, sku="TIN", lot="", quantity=Decimal(5), weight_kg=Decimal("6.05"),
                epcs=None, order_ref=None, actor="gateway:g1", at=T0, source_gateway="g1",
                source_seq=43, conn=conn,
            )  # fmt: skip
        assert plain["ok"] and plain["order_ref"] is None
        cur = await conn.execute("SELECT count(*) FROM verifications")
        assert await cur.fetchone() == (2,)
        cur = await conn.execute("SELECT count(*) FROM exceptions WHERE kind = 'verify_mismatch'")
        assert await cur.fetchone() == (1,)
        cur = await conn.execute("SELECT count(*) FROM audit_log")
        assert await cur.fetchone() == (2,)
    admin = await api.client("alice")
    missing = await admin.post(
        f"{URL}/verifications", json={"sku": "TIN", "quantity": 1, "order_ref": "NO-SUCH"}
    )
    assert missing.status_code == 404
