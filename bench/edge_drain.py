"""Catch-up after an outage: a gateway with 1,000,000 buffered events drains to the hub
while live scans keep coming; then everything is sent a second time.

Prints: the drain rate (buffered events acked per second) beside the live rate, the live
events' latency while the backlog drains (scan stored at the edge → committed at the hub),
the edge process's peak RSS (target < 150 MB), and the hub's duplicates-dropped rate when
the whole backlog is replayed.

    .venv/bin/python bench/edge_drain.py [--events 1000000] [--live-rate 200]

Runs against the local PostgreSQL and Mosquitto with a database and topic prefix of its
own (removed at the end); the hub and the gateway are real processes.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiomqtt
import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.hub import HubProcess
from tests.support.services import free_port
from tests.support.sites import write_site_config
from warelink.edge.gateway import OUTBOX_FILE
from warelink.edge.outbox import Draft, Outbox
from warelink.hub.migrate import migrate
from warelink.hub.settings import HubSettings
from warelink.protocol import wire
from warelink.protocol.messages import (
    Receipt,
    ReplayRequest,
    TrafficClass,
    WeightReading,
)
from warelink.protocol.topics import Kind, Topics
from warelink.sim.scanner import SimulatedLineScanner

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def fill_outbox(path: Path, gateway: str, events: int) -> None:
    """The outage: events stored at the edge that the hub has not seen (half receipts)."""
    when = dt.datetime.now(dt.UTC)
    async with Outbox(path, gateway) as outbox:
        chunk = []
        for i in range(events):
            body = (
                Receipt(location="DOCK-1", gtin="09506000134352", quantity=1, lot=f"L{i % 50}")
                if i % 2
                else WeightReading(float(i % 900), "kg", True)
            )
            chunk.append(Draft("backlog", TrafficClass.LEDGER, body, when))
            if len(chunk) == 1000:
                await outbox.append(chunk)
                chunk = []
        if chunk:
            await outbox.append(chunk)


async def hub_row(db_url: str, gateway: str) -> tuple[int, int]:
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        cur = await conn.execute(
            "SELECT acked_seq, duplicates_dropped FROM gateways WHERE id = %s", (gateway,)
        )
        row = await cur.fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


async def main(args: argparse.Namespace) -> None:
    run = uuid.uuid4().hex[:8]
    root = Path(tempfile.mkdtemp(prefix="wl-drain-"))
    db = f"wl_bench_drain_{run}"
    db_url = psycopg.conninfo.make_conninfo(ADMIN, dbname=db)
    prefix = f"wlbench-{run}"
    site, gateway = "bench-site", "bench-gw"
    scanner_port = root / "dev" / "scanner"
    config = write_site_config(
        root, site=site, gateway=gateway, retention_s=3600.0,
        devices=[{"id": "dock-scanner", "kind": "line_scanner", "port": str(scanner_port),
                  "purpose": "receive", "location": "DOCK-2"}],
    )  # fmt: skip
    print(f"filling the outbox with {args.events:,} events (the outage) …", flush=True)
    started = time.perf_counter()
    await fill_outbox(root / gateway / OUTBOX_FILE, gateway, args.events)
    print(f"  stored in {time.perf_counter() - started:.1f} s", flush=True)
    await asyncio.to_thread(migrate, db_url)
    settings = HubSettings(db_url=db_url, mqtt_prefix=prefix, http=f"127.0.0.1:{free_port()}")
    hub = HubProcess(settings, log_path=str(root / "hub.log"))
    edge: asyncio.subprocess.Process | None = None
    try:
        await hub.start()
        async with SimulatedLineScanner(scanner_port, seed=1) as scanner:
            env = os.environ | {"WARELINK_MQTT_PREFIX": prefix}
            with open(root / "edge.log", "ab") as log:  # noqa: ASYNC230 - once
                edge = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "warelink.edge.cli", "edge", "run",
                    "--config", str(config), env=env, stdout=log, stderr=log,
                )  # fmt: skip
            live_sent = 0

            async def live() -> None:
                nonlocal live_sent
                await asyncio.sleep(1.0)  # the driver opens its port
                while True:
                    await scanner.scan_receipt()
                    live_sent += 1
                    await asyncio.sleep(1 / args.live_rate)

            started = time.perf_counter()
            async with asyncio.TaskGroup() as tasks:
                feeder = tasks.create_task(live())
                while (await hub_row(db_url, gateway))[0] < args.events:
                    await asyncio.sleep(0.2)
                drained_s = time.perf_counter() - started
                feeder.cancel()
            await asyncio.sleep(2)
            async with await psycopg.AsyncConnection.connect(db_url) as conn:
                cur = await conn.execute(
                    "SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY"
                    " extract(epoch FROM received_at - occurred_at)), count(*) FROM events"
                    " WHERE gateway = %s AND type = 'receipt' AND body->>'location' = 'DOCK-2'",
                    (gateway,),
                )
                row = await cur.fetchone()
            assert row is not None
            (p50, p99), live_stored = row[0] or (0.0, 0.0), row[1]
            # Everything again: a replay of the whole backlog is all duplicates for the hub.
            _, dups_before = await hub_row(db_url, gateway)
            async with aiomqtt.Client("127.0.0.1", 1883) as client:
                topic = Topics(prefix).gateway(site, gateway, Kind.REPLAY)
                request = ReplayRequest(gateway=gateway, from_seq=1, to_seq=args.events)
                await client.publish(topic, wire.encode(request), qos=1)
            started = time.perf_counter()
            while (await hub_row(db_url, gateway))[1] - dups_before < args.events:
                await asyncio.sleep(0.2)
            dup_s = time.perf_counter() - started
            rss = peak_rss_mb(edge.pid)
    finally:
        if edge is not None and edge.returncode is None:
            edge.send_signal(signal.SIGTERM)
            await edge.wait()
        await hub.stop()
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db))
            )
    drain_rate = args.events / drained_s
    print(f"\n{'figure':<44}{'value':>16}")
    print(f"{'backlog drained (events acked/s)':<44}{drain_rate:>16,.0f}")
    print(f"{'live rate meanwhile (scans/s)':<44}{args.live_rate:>16,.0f}")
    print(f"{'drain ÷ live':<44}{drain_rate / args.live_rate:>15,.0f}×")
    print(f"{'live scans stored at the hub':<44}{live_stored:>16,}  of {live_sent:,} sent")
    print(f"{'live latency p50 / p99 during drain (s)':<44}{p50:>8.2f} / {p99:<6.2f}")
    print(f"{'edge peak RSS (MB)':<44}{rss:>16.1f}")
    print(f"{'hub duplicates dropped/s (all sent twice)':<44}{args.events / dup_s:>16,.0f}")
    print(
        f"SUMMARY drain {drain_rate:,.0f} ev/s = {drain_rate / args.live_rate:,.0f}× live;"
        f" live p99 {p99:.2f} s; edge peak RSS {rss:.0f} MB (target < 150);"
        f" duplicates dropped {args.events / dup_s:,.0f}/s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--live-rate", type=float, default=200.0)
    asyncio.run(main(parser.parse_args()))
