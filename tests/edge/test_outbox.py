"""The outbox: sequence, durability across SIGKILL, acks that only move forward."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from warelink.edge.outbox import Draft, Outbox, OutboxPolicy, Pressure, read_status
from warelink.protocol import wire
from warelink.protocol.messages import Receipt, TrafficClass, WeightReading

WHEN = dt.datetime(2026, 11, 25, tzinfo=dt.UTC)
FROM_ZERO = OutboxPolicy(seq_origin=0)  # readable seqs; production starts at the clock


def draft(n: int) -> Draft:
    return Draft("scale-1", TrafficClass.LEDGER, WeightReading(float(n), "kg", True), WHEN)


async def test_concurrent_appends_get_one_gapless_sequence(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "o.db", "gw-a", FROM_ZERO) as outbox:
        ends = await asyncio.gather(*(outbox.append([draft(i)] * 3) for i in range(200)))
        assert sorted(ends) == list(range(3, 601, 3))
        rows, covered = outbox.read_batch(0, 10_000)
    assert covered == 600
    assert [seq for seq, _ in rows] == list(range(1, 601))
    events = [wire.decode_event(payload) for _, payload in rows]
    assert {e.gateway for e in events} == {"gw-a"}
    assert len({e.id for e in events}) == 600
    assert all(e.seq == seq for e, (seq, _) in zip(events, rows, strict=True))


async def test_sequence_and_session_continue_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    async with Outbox(path, "gw-a", FROM_ZERO) as outbox:
        await outbox.add("d", TrafficClass.LEDGER, Receipt(location="L", gtin="1", quantity=1))
        assert outbox.next_session() == 1
    async with Outbox(path, "gw-a", FROM_ZERO) as outbox:
        assert outbox.last_seq == 1
        assert await outbox.append([draft(1)]) == 2
        assert outbox.next_session() == 2


async def test_ack_never_moves_back_or_past_the_end(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "o.db", "gw-a", FROM_ZERO) as outbox:
        await outbox.append([draft(i) for i in range(10)])
        assert outbox.mark_acked(4) == 4
        assert outbox.status().depth == 6
        assert outbox.mark_acked(2) == 4
        assert outbox.mark_acked(99) == 10
        status = outbox.status()
    assert (status.last_seq, status.acked_seq, status.depth, status.retained) == (10, 10, 0, 10)


def test_sigkill_loses_nothing_reported_stored(tmp_path: Path) -> None:
    """Every seq the writer said was stored is there after a SIGKILL mid-stream."""
    path = tmp_path / "o.db"
    script = textwrap.dedent(f"""
        import asyncio, datetime as dt, sys
        from warelink.edge.outbox import Draft, Outbox
        from warelink.protocol.messages import TrafficClass, WeightReading
        async def main():
            async with Outbox(__import__("pathlib").Path({str(path)!r}), "gw-a") as outbox:
                while True:
                    d = Draft("s", TrafficClass.LEDGER, WeightReading(1.0, "kg", True),
                              dt.datetime.now(dt.UTC))
                    seq = await outbox.append([d] * 10)
                    print(seq, flush=True)
        asyncio.run(main())
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    reported = 0
    for line in child.stdout:
        reported = int(line)
        if reported >= status_origin(path) + 3000:
            break
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stdout.close()
    conn = sqlite3.connect(path)
    status = read_status(conn)
    seqs = [row[0] for row in conn.execute("SELECT seq FROM outbox ORDER BY seq")]
    conn.close()
    assert status.last_seq >= reported
    assert seqs == list(range(seqs[0], status.last_seq + 1))  # gapless
    assert seqs[0] == status.acked_seq + 1  # the first seq follows the origin


def telemetry(n: int) -> Draft:
    return Draft("scale-1", TrafficClass.TELEMETRY, WeightReading(float(n), "kg", False), WHEN)


async def test_acked_events_stay_for_the_retention_then_go(tmp_path: Path) -> None:
    policy = OutboxPolicy(retention_s=60, seq_origin=0)
    async with Outbox(tmp_path / "o.db", "gw-a", policy) as outbox:
        await outbox.append([draft(i) for i in range(10)])
        outbox.mark_acked(6)
        outbox.housekeeping(now=time.time() + 30)
        assert outbox.status().retained == 6  # kept: replay and audit
        rows, _ = outbox.read_batch(3, 100)  # a replay reads retained rows too
        assert [seq for seq, _ in rows] == list(range(4, 11))
        outbox.housekeeping(now=time.time() + 61)
        status = outbox.status()
    assert (status.retained, status.depth) == (0, 4)


async def test_telemetry_over_budget_drops_the_oldest_and_batches_cover_the_holes(
    tmp_path: Path,
) -> None:
    policy = OutboxPolicy(telemetry_budget=5, seq_origin=0)
    async with Outbox(tmp_path / "o.db", "gw-a", policy) as outbox:
        await outbox.append([draft(0), *(telemetry(i) for i in range(10)), draft(11)])
        assert outbox.housekeeping() is Pressure.OK
        status = outbox.status()
        assert (status.depth_ledger, status.depth_telemetry, status.dropped_telemetry) == (2, 5, 5)
        rows, covered = outbox.read_batch(0, 100)
    assert covered == 12  # seqs 2-6 are holes the batch covers: dropped on purpose
    assert [seq for seq, _ in rows] == [1, 7, 8, 9, 10, 11, 12]


async def test_at_the_disk_budget_ledger_waits_and_telemetry_is_dropped(tmp_path: Path) -> None:
    policy = OutboxPolicy(disk_budget_bytes=64 * 1024, retention_s=0, seq_origin=0)
    async with Outbox(tmp_path / "o.db", "gw-a", policy) as outbox:
        while outbox.housekeeping() is not Pressure.FULL:
            await outbox.append([draft(i) for i in range(100)])
        outbox.set_pressure(Pressure.FULL)
        stored = outbox.last_seq
        await outbox.append([telemetry(1), telemetry(2)])  # dropped at once, counted
        assert outbox.last_seq == stored
        assert outbox.status().dropped_telemetry == 2
        waiting = asyncio.create_task(outbox.append([draft(1)]))
        await asyncio.sleep(0.2)
        assert not waiting.done()  # a ledger event is never dropped: it waits for room
        outbox.mark_acked(stored)  # the hub has everything: the retention allows a trim
        outbox.set_pressure(outbox.housekeeping())
        assert await asyncio.wait_for(waiting, 5) == stored + 1


async def test_a_command_key_is_claimed_once_and_a_crash_leaves_it_interrupted(
    tmp_path: Path,
) -> None:
    async with Outbox(tmp_path / "o.db", "gw-a", FROM_ZERO) as outbox:
        assert outbox.claim_command("k1") is True
        assert outbox.claim_command("k1") is False
        assert outbox.claim_command("k2") is True
        outbox.command_reported("k2")
    async with Outbox(tmp_path / "o.db", "gw-a", FROM_ZERO) as outbox:
        assert outbox.interrupted_commands() == ["k1"]


def status_origin(path: Path) -> int:
    """The seq a new outbox started from (its acked_seq until the hub acks anything)."""
    conn = sqlite3.connect(path)
    try:
        return read_status(conn).acked_seq
    finally:
        conn.close()


async def test_a_new_outbox_starts_its_sequence_at_the_clock(tmp_path: Path) -> None:
    """A replaced gateway box continues past every seq the hub has seen."""
    before = time.time_ns() // 1000
    async with Outbox(tmp_path / "o.db", "gw-a") as outbox:
        seq = await outbox.append([draft(1)])
        assert outbox.status().acked_seq == seq - 1
    assert before < seq <= time.time_ns() // 1000 + 1
