"""commit_events against a real PostgreSQL: exactly once, watermark, ledger, in any order."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import AsyncIterator

import msgspec
import psycopg
import pytest
from psycopg import AsyncConnection
from psycopg.types.json import set_json_dumps

from warelink.hub.ingest.commit import IncomingBatch, commit_events
from warelink.protocol.ids import new_event_id
from warelink.protocol.messages import Event, EventBody, Receipt, TrafficClass, WeightReading

WHEN = dt.datetime(2026, 11, 25, tzinfo=dt.UTC)


def batch(
    site: str, events: list[Event], first: int | None = None, last: int | None = None
) -> IncomingBatch:
    """An events message as the hub decodes it; it covers its events' seqs by default."""
    seqs = [e.seq for e in events]
    return IncomingBatch(
        site=site, gateway=events[0].gateway, first_seq=first or min(seqs),
        last_seq=last or max(seqs), events=events, skew_ms=0.0,
    )  # fmt: skip


def event(seq: int, body: EventBody | None = None, gateway: str = "gw-1") -> Event:
    return Event(
        gateway=gateway, seq=seq, id=new_event_id(), device="dev", cls=TrafficClass.LEDGER,
        occurred_at=WHEN, body=body or WeightReading(float(seq), "kg", True),
    )  # fmt: skip


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[AsyncConnection]:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        set_json_dumps(msgspec.json.encode, context=conn)
        yield conn


async def gateway_row(conn: AsyncConnection, gateway: str = "gw-1") -> tuple[int, ...]:
    cur = await conn.execute(
        "SELECT acked_seq, max_seq, events_received, duplicates_dropped FROM gateways"
        " WHERE id = %s",
        (gateway,),
    )
    row = await cur.fetchone()
    assert row is not None
    return tuple(row)


async def test_in_order_batch_moves_the_watermark(conn: AsyncConnection) -> None:
    result = await commit_events([batch("s", [event(1), event(2), event(3)])], conn=conn)
    assert result.acks == {"gw-1": ("s", 3)}
    assert (result.committed, result.duplicates) == (3, 0)
    assert await gateway_row(conn) == (3, 3, 3, 0)


async def test_a_gap_holds_the_watermark_until_it_is_filled(conn: AsyncConnection) -> None:
    first = batch("s", [event(1), event(2)])
    result = await commit_events([first, batch("s", [event(4), event(5)])], conn=conn)
    assert result.acks["gw-1"] == ("s", 2)
    assert result.gaps == {"gw-1": ("s", 3, 3)}
    assert result.gaps_detected == 1
    result = await commit_events([batch("s", [event(7)])], conn=conn)
    assert result.acks["gw-1"] == ("s", 2)
    assert result.gaps_detected == 0  # the same gap, still open
    result = await commit_events([batch("s", [event(3)])], conn=conn)
    assert result.acks["gw-1"] == ("s", 5)  # 3 fills the gap, 4 and 5 were stored
    assert (result.gaps, result.gaps_filled) == ({"gw-1": ("s", 6, 6)}, 1)
    assert await gateway_row(conn) == (5, 7, 6, 0)


async def test_seqs_a_batch_covers_without_events_were_dropped_at_the_edge(
    conn: AsyncConnection,
) -> None:
    result = await commit_events([batch("s", [event(1), event(4)], first=1, last=6)], conn=conn)
    assert result.acks["gw-1"] == ("s", 6)  # 2, 3, 5, 6: telemetry the edge dropped
    assert (result.committed, result.duplicates) == (2, 0)


async def test_duplicates_within_and_across_flushes_are_dropped(conn: AsyncConnection) -> None:
    first = [event(n) for n in range(1, 6)]
    result = await commit_events([batch("s", first), batch("s", first[::-1])], conn=conn)
    assert (result.committed, result.duplicates) == (5, 5)
    result = await commit_events([batch("s", first[2:])], conn=conn)
    assert (result.committed, result.duplicates) == (0, 3)
    assert await gateway_row(conn) == (5, 5, 5, 8)


async def test_a_gateway_under_another_site_is_rejected(conn: AsyncConnection) -> None:
    await commit_events([batch("site-a", [event(1)])], conn=conn)
    result = await commit_events([batch("site-b", [event(2)])], conn=conn)
    assert (result.committed, result.rejected) == (0, 1)
    assert await gateway_row(conn) == (1, 1, 1, 0)


async def test_receipts_post_double_entry_movements_and_balances(conn: AsyncConnection) -> None:
    receipt = Receipt(location="DOCK-1", gtin="09506000134352", quantity=7, lot="L1")
    result = await commit_events([batch("s", [event(1, receipt), event(2, receipt)])], conn=conn)
    assert {(b.location, int(b.quantity)) for b in result.balances} == {
        ("DOCK-1", 14), ("SUPPLIER", -14),
    }  # fmt: skip
    await commit_events([batch("s", [event(1, receipt)])], conn=conn)  # a resend: no effect
    cur = await conn.execute("SELECT location, quantity FROM balances ORDER BY location")
    assert [(loc, int(q)) for loc, q in await cur.fetchall()] == [
        ("DOCK-1", 14), ("SUPPLIER", -14),
    ]  # fmt: skip
    cur = await conn.execute("SELECT count(*) FROM movements")
    assert await cur.fetchone() == (2,)
    with pytest.raises(psycopg.errors.RaiseException, match="insert-only"):
        await conn.execute("UPDATE movements SET quantity = 1")


@pytest.mark.parametrize("seed", range(6))
async def test_any_delivery_order_with_duplicates_stores_each_event_once(
    conn: AsyncConnection, seed: int
) -> None:
    rng = random.Random(seed)
    gateways = ["gw-1", "gw-2", "gw-3"]
    events = {g: [event(n, gateway=g) for n in range(1, 201)] for g in gateways}
    deliveries = []
    for g in gateways:
        n = 0
        while n < 200:
            size = rng.randint(1, 30)
            deliveries.append(batch("s", events[g][n : n + size]))
            n += size
    deliveries += rng.sample(deliveries, len(deliveries) // 3)  # resends
    rng.shuffle(deliveries)
    acked: dict[str, int] = {}
    while deliveries:
        cut = rng.randint(1, 8)
        flush, deliveries = deliveries[:cut], deliveries[cut:]
        result = await commit_events(flush, conn=conn)
        for g, (_, seq) in result.acks.items():
            assert seq >= acked.get(g, 0)  # never backwards
            acked[g] = seq
    for g in gateways:
        assert acked[g] == 200
        assert (await gateway_row(conn, g))[:3] == (200, 200, 200)
    cur = await conn.execute("SELECT gateway, count(*), count(DISTINCT seq) FROM events GROUP BY 1")
    assert sorted(await cur.fetchall()) == [(g, 200, 200) for g in gateways]


async def test_the_ledger_takes_events_in_seq_order_even_when_they_arrive_early(
    conn: AsyncConnection,
) -> None:
    receipt = Receipt(location="DOCK-1", gtin="09506000134352", quantity=1)
    events = [event(n, receipt) for n in range(1, 7)]
    result = await commit_events([batch("s", events[0:2]), batch("s", events[4:6])], conn=conn)
    assert result.acks["gw-1"] == ("s", 2)
    assert [int(b.quantity) for b in result.balances if b.location == "DOCK-1"] == [2]
    result = await commit_events([batch("s", events[2:4])], conn=conn)
    assert result.acks["gw-1"] == ("s", 6)
    assert [int(b.quantity) for b in result.balances if b.location == "DOCK-1"] == [6]
    cur = await conn.execute("SELECT source_seq FROM movements ORDER BY id")
    assert [row[0] for row in await cur.fetchall()] == [1, 2, 3, 4, 5, 6]
