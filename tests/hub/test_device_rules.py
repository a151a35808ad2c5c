"""What device events do to the ledger, through the real ingest commit and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from decimal import Decimal

import msgspec
import psycopg
import pytest
from psycopg import AsyncConnection
from psycopg.types.json import set_json_dumps

from warelink.hub.ingest.commit import IncomingBatch, commit_events
from warelink.hub.operations import outbound
from warelink.protocol.ids import new_event_id
from warelink.protocol.messages import (
    Count,
    Event,
    EventBody,
    Movement,
    Receipt,
    TrafficClass,
    Verification,
    ZoneChange,
    ZoneTransition,
)

GTIN = "09506000134352"
T0 = dt.datetime(2026, 11, 25, 8, tzinfo=dt.UTC)


class Gateway:
    """A gateway's events, one batch per event, seqs counting up."""

    def __init__(self, conn: AsyncConnection, site: str = "north") -> None:
        self.conn, self.site, self.seq = conn, site, 0

    async def send(self, body: EventBody, at: dt.datetime = T0) -> None:
        self.seq += 1
        event = Event(gateway="gw-1", seq=self.seq, id=new_event_id(), device="handheld",
                      cls=TrafficClass.LEDGER, occurred_at=at, body=body)  # fmt: skip
        batch = IncomingBatch(self.site, "gw-1", self.seq, self.seq, [event], 0.0)
        async with self.conn.transaction():
            await commit_events([batch], conn=self.conn)


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[AsyncConnection]:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        set_json_dumps(msgspec.json.encode, context=conn)
        await conn.execute("INSERT INTO sites (id) VALUES ('north')")
        await conn.execute(
            "INSERT INTO skus (code, gtin, tracking, unit_weight_kg, weight_tolerance_pct)"
            " VALUES ('SKU-A', %s, 'lot', 2.5, 4)",
            (GTIN,),
        )
        yield conn


async def rows(conn: AsyncConnection, query: str) -> list[tuple[object, ...]]:
    cur = await conn.execute(query)
    return [tuple(row) for row in await cur.fetchall()]


async def test_an_unknown_gtin_is_booked_and_opens_unknown_sku(conn: AsyncConnection) -> None:
    gateway = Gateway(conn)
    await gateway.send(Receipt(location="DOCK-1", gtin="00012345678905", quantity=3))
    await gateway.send(Receipt(location="DOCK-1", gtin="00012345678905", quantity=1))
    assert await rows(conn, "SELECT code, verified FROM skus WHERE gtin = '00012345678905'") == [
        ("00012345678905", False)
    ]
    assert await rows(conn, "SELECT quantity FROM balances WHERE location = 'DOCK-1'") == [
        (Decimal(4),)
    ]
    assert await rows(conn, "SELECT kind, subject FROM exceptions") == [
        ("unknown_sku", "00012345678905")
    ]


async def test_a_receipt_of_a_sku_that_needs_qc_lands_on_hold(conn: AsyncConnection) -> None:
    await conn.execute("UPDATE skus SET requires_qc = true")
    await Gateway(conn).send(
        Receipt(location="DOCK-1", gtin=GTIN, quantity=5, lot="L1", expiry=dt.date(2027, 1, 31))
    )
    on_hold = await rows(conn, "SELECT status, quantity FROM balances WHERE location = 'DOCK-1'")
    assert on_hold == [("qc_hold", Decimal(5))]
    assert await rows(conn, "SELECT lot, expiry FROM lots") == [("L1", dt.date(2027, 1, 31))]


async def test_a_device_count_awaits_approval_and_reports_its_variance(
    conn: AsyncConnection,
) -> None:
    gateway = Gateway(conn)
    await gateway.send(Receipt(location="A-1", gtin=GTIN, quantity=10, lot="L1"))
    await gateway.send(Count(location="A-1", gtin=GTIN, counted=7, lot="L1"),
                       at=T0 + dt.timedelta(hours=1))  # fmt: skip
    assert await rows(conn, "SELECT state, created_by FROM counts") == [("counted", "gateway:gw-1")]
    assert await rows(conn, "SELECT sku, lot, counted FROM count_lines") == [
        ("SKU-A", "L1", Decimal(7))
    ]
    assert [kind for (kind,) in await rows(conn, "SELECT kind FROM exceptions")] == [
        "count_variance"
    ]
    # Nothing moves until a supervisor approves: a count is an observation.
    assert await rows(conn, "SELECT quantity FROM balances WHERE location = 'A-1'") == [
        (Decimal(10),)
    ]


async def test_a_device_count_from_a_clock_ahead_is_not_in_the_future(
    conn: AsyncConnection,
) -> None:
    ahead = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    await Gateway(conn).send(Count(location="A-9", gtin=GTIN, counted=1, lot="L1"), at=ahead)
    (counted_at,) = (await rows(conn, "SELECT counted_at FROM counts"))[0]
    assert isinstance(counted_at, dt.datetime) and counted_at < ahead - dt.timedelta(days=1)


async def test_a_verification_checks_the_weight_against_the_tolerance(
    conn: AsyncConnection,
) -> None:
    gateway = Gateway(conn)
    # 4 × 2.5 kg = 10 kg, ± 4 %: 10.3 passes, 11 does not.
    await gateway.send(Verification(gtin=GTIN, quantity=4, lot="L1", weight=10.3, scale="s"))
    await gateway.send(Verification(gtin=GTIN, quantity=4, lot="L1", weight=11.0, scale="s"))
    assert await rows(conn, "SELECT ok, weight_kg FROM verifications ORDER BY id") == [
        (True, Decimal("10.3")), (False, Decimal("11.0")),
    ]  # fmt: skip
    assert [kind for (kind,) in await rows(conn, "SELECT kind FROM exceptions")] == [
        "verify_mismatch"
    ]


async def test_a_refused_device_fact_is_reported_and_ingest_goes_on(
    conn: AsyncConnection,
) -> None:
    gateway = Gateway(conn)
    await gateway.send(Count(location="A-1", gtin=GTIN, counted=-2, lot="L1"))
    await gateway.send(Receipt(location="A-1", gtin=GTIN, quantity=2, lot="L1"))
    assert await rows(conn, "SELECT acked_seq FROM gateways") == [(2,)]
    assert await rows(conn, "SELECT count(*) FROM events") == [(2,)]
    assert await rows(conn, "SELECT kind, subject FROM exceptions") == [
        ("floor_report", "refused:gw-1:1")
    ]
    assert await rows(conn, "SELECT count(*) FROM counts") == [(0,)]


async def test_an_rfid_arrival_of_an_unknown_tag_opens_unknown_epc(conn: AsyncConnection) -> None:
    gateway = Gateway(conn)
    known = {"scheme": "sgtin-96", "gtin": GTIN, "serial": "1"}
    pallet = {"scheme": "sscc-96", "sscc": "106141412345678908"}
    for epc, decoded in (("30aa", known), ("30bb", {"scheme": "unknown"}), ("31cc", pallet)):
        await gateway.send(ZoneTransition(epc=epc, change=ZoneChange.ARRIVED, zone="dock",
                                          decoded=decoded))  # fmt: skip
    await gateway.send(ZoneTransition(epc="30bb", change=ZoneChange.DEPARTED, zone="dock"))
    assert await rows(conn, "SELECT kind, subject FROM exceptions") == [("unknown_epc", "30bb")]


async def test_a_fact_the_schema_refuses_is_reported_and_the_rest_posts(
    conn: AsyncConnection,
) -> None:
    gateway = Gateway(conn)
    serial_of_five = Receipt(location="A-1", gtin=GTIN, quantity=5, lot="L1", serial="S1")
    fine = Receipt(location="A-1", gtin=GTIN, quantity=2, lot="L1")
    gateway.seq += 2
    events = [
        Event(gateway="gw-1", seq=seq, id=new_event_id(), device="d", cls=TrafficClass.LEDGER,
              occurred_at=T0, body=body)
        for seq, body in ((1, serial_of_five), (2, fine))
    ]  # fmt: skip
    async with conn.transaction():
        await commit_events([IncomingBatch("north", "gw-1", 1, 2, events, 0.0)], conn=conn)
    assert await rows(conn, "SELECT quantity FROM balances WHERE location = 'A-1'") == [
        (Decimal(2),)
    ]
    assert await rows(conn, "SELECT kind, subject FROM exceptions") == [
        ("floor_report", "refused:gw-1:1")
    ]
    assert await rows(conn, "SELECT acked_seq FROM gateways") == [(2,)]


async def test_a_sku_code_where_a_gtin_belongs_is_taken_as_that_sku(
    conn: AsyncConnection,
) -> None:
    await Gateway(conn).send(Receipt(location="A-1", gtin="SKU-A", quantity=2, lot="L1"))
    assert await rows(conn, "SELECT sku, quantity FROM balances WHERE location = 'A-1'") == [
        ("SKU-A", Decimal(2))
    ]
    assert await rows(conn, "SELECT count(*) FROM skus") == [(1,)]


async def released_task(gateway: Gateway, reference: str, quantity: int) -> int:
    """A storage shelf with stock, a staging lane, and an order released against them."""
    conn = gateway.conn
    async with conn.transaction():
        for zone, kind in (("STORE", "storage"), ("OUT", "staging")):
            await conn.execute("INSERT INTO zones (site, code, kind) VALUES ('north', %s, %s)"
                               " ON CONFLICT DO NOTHING", (zone, kind))  # fmt: skip
        for code, zone in (("A-1", "STORE"), ("STAGE", "OUT")):
            await conn.execute("INSERT INTO locations (site, code, kind, zone) VALUES"
                               " ('north', %s, 'internal', %s) ON CONFLICT DO NOTHING",
                               (code, zone))  # fmt: skip
    await gateway.send(Receipt(location="A-1", gtin=GTIN, quantity=10, lot="L1"))
    async with conn.transaction():
        order = await outbound.release_order(
            "north", reference=reference, customer="", staging="STAGE", partial=True,
            lines=[outbound.OrderLine("SKU-A", Decimal(quantity))], actor="sup",
            at=dt.datetime.now(dt.UTC), conn=conn,
        )  # fmt: skip
    return int(order["tasks"][0]["id"])


async def test_a_handheld_pick_against_a_task_confirms_it(conn: AsyncConnection) -> None:
    gateway = Gateway(conn)
    task = await released_task(gateway, "o-1", 4)
    pick = Movement(from_location="A-1", to_location="STAGE", gtin=GTIN, quantity=4,
                    lot="L1", task=task)  # fmt: skip
    await gateway.send(pick)
    assert await rows(conn, f"SELECT state FROM pick_tasks WHERE id = {task}") == [("picked",)]
    assert await rows(conn, "SELECT state FROM reservations") == [("consumed",)]
    assert await rows(conn, "SELECT kind, from_location, to_location, quantity, document"
                            " FROM movements WHERE kind = 'pick'") == [
        ("pick", "A-1", "STAGE", Decimal(4), f"pick:{task}")
    ]  # fmt: skip
    # The same task picked again by another handheld: refused as a pick, posted as the
    # move it physically was, and reported.
    await gateway.send(pick)
    assert await rows(conn, "SELECT kind, count(*) FROM movements WHERE to_location = 'STAGE'"
                            " GROUP BY 1 ORDER BY 1") == [("move", 1), ("pick", 1)]  # fmt: skip
    assert await rows(conn, "SELECT kind, subject FROM exceptions") == [
        ("floor_report", f"refused:gw-1:{gateway.seq}")
    ]


async def test_scanned_receipts_fill_the_oldest_open_notice_lines(conn: AsyncConnection) -> None:
    async with conn.transaction():
        for reference, quantity in (("ASN-1", 6), ("ASN-2", 10)):
            cur = await conn.execute(
                "INSERT INTO advance_notices (site, reference, created_by) VALUES"
                " ('north', %s, 'coordinator') RETURNING id",
                (reference,),
            )
            row = await cur.fetchone()
            assert row is not None
            await conn.execute(
                "INSERT INTO advance_notice_lines (notice, line, sku, lot, quantity)"
                " VALUES (%s, 1, 'SKU-A', '', %s)",
                (row[0], quantity),
            )
    gateway = Gateway(conn)
    for quantity in (4, 4, 10):  # 4 → ASN-1, 4 → ASN-1 (over by 2), 10 → ASN-2
        await gateway.send(Receipt(location="DOCK-1", gtin=GTIN, quantity=quantity, lot="L1"))
    await gateway.send(Receipt(location="DOCK-1", gtin=GTIN, quantity=1, lot="L1"))  # none
    documents = await rows(conn, "SELECT n.reference, m.quantity FROM movements m"
                                 " LEFT JOIN advance_notices n ON m.document"
                                 " = 'asn:' || n.id || '/1' ORDER BY m.id")  # fmt: skip
    assert documents == [("ASN-1", Decimal(4)), ("ASN-1", Decimal(4)), ("ASN-2", Decimal(10)),
                         (None, Decimal(1))]  # fmt: skip
