"""Commit-to-screen latency of the change feed: two hubs, live clients on both.

Two hub processes (``warelink hub serve``) share one database and one broker prefix.
``--clients`` websocket clients per hub watch one site while people's work (REST
receipts, on either hub in turn) and devices' work (weight readings published to the
broker, ingested by whichever hub the shared subscription picks) commit changes. For
every change the latency is the time from its commit (``changes.at``, taken with
``clock_timestamp()`` by the trigger that records it) to the moment the *last* of all
clients on both hubs received it. Same machine, same clock.

    .venv/bin/python bench/live_fanout.py                # ~40 s
    .venv/bin/python bench/live_fanout.py --seconds 60 --clients 10

Target (issue #10): p99 from commit to both clients ≤ 250 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiomqtt
import psycopg
from psycopg import sql
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support import forge
from tests.support.hub import HubProcess
from tests.support.services import free_port
from warelink.hub.migrate import migrate
from warelink.hub.settings import HubSettings
from warelink.protocol.messages import WeightReading
from warelink.protocol.topics import Kind, Topics

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
SITE = "bench-site"


def prepare(db_url: str) -> None:
    migrate(db_url)
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO sites (id) VALUES (%s)", (SITE,))
        conn.execute("INSERT INTO zones (site, code, kind) VALUES (%s, 'DOCK', 'dock')", (SITE,))
        conn.execute(
            "INSERT INTO locations (site, code, kind, zone) VALUES (%s, 'D1', 'internal', 'DOCK')",
            (SITE,),
        )
        conn.execute("INSERT INTO skus (code) VALUES ('PLAIN')")


async def watch(url: str, received: dict[int, float], ready: asyncio.Event) -> None:
    """One client: the wall time each version arrived (the latest client wins)."""
    async with connect(url, max_size=None) as socket:
        ready.set()
        async for text in socket:
            frame = json.loads(text)
            if frame["kind"] == "delta":
                now = time.time()
                version = frame["version"]
                received[version] = max(received.get(version, 0.0), now)


async def people(hubs: list[HubProcess], stop: asyncio.Event, rate: float) -> int:
    done = 0
    clients = [hub.client() for hub in hubs]
    try:
        while not stop.is_set():
            client = clients[done % len(clients)]
            answer = await client.post(
                f"/api/v1/sites/{SITE}/receipts",
                json={"location": "D1", "sku": "PLAIN", "quantity": 1},
            )
            answer.raise_for_status()
            done += 1
            await asyncio.sleep(1 / rate)
    finally:
        for client in clients:
            await client.aclose()
    return done


async def devices(prefix: str, stop: asyncio.Event, rate: float) -> int:
    topics = Topics(prefix)
    seq = 0
    async with aiomqtt.Client("127.0.0.1", 1883) as mq:
        while not stop.is_set():
            seq += 1
            body = WeightReading(weight=float(seq % 900), unit="kg", stable=True)
            event = forge.event("bench-gw", seq, body, device=f"scale-{seq % 8}")
            topic = topics.gateway(SITE, "bench-gw", Kind.EVENTS)
            await mq.publish(topic, forge.batch("bench-gw", seq, seq, [event]), qos=1)
            await asyncio.sleep(1 / rate)
    return seq


async def main(args: argparse.Namespace) -> None:
    run = uuid.uuid4().hex[:8]
    db = f"wl_bench_live_{run}"
    db_url = psycopg.conninfo.make_conninfo(ADMIN, dbname=db)
    prefix = f"wlbench-{run}"
    root = Path(tempfile.mkdtemp(prefix="wl-live-"))
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    hubs: list[HubProcess] = []
    try:
        await asyncio.to_thread(prepare, db_url)
        for n in range(2):
            settings = HubSettings(db_url=db_url, mqtt_prefix=prefix,
                                   http=f"127.0.0.1:{free_port()}")  # fmt: skip
            hub = HubProcess(settings, log_path=str(root / f"hub-{n}.log"))
            if hubs:
                hub.key, hub.headers = hubs[0].key, hubs[0].headers
            await hub.start()
            hubs.append(hub)
        received: dict[int, float] = {}
        readers = []
        for hub in hubs:
            for _ in range(args.clients):
                ready = asyncio.Event()
                url = f"ws://{hub.settings.http}/api/v1/live?site={SITE}&access_token={hub.key}"
                readers.append(asyncio.create_task(watch(url, received, ready)))
                await ready.wait()
        stop = asyncio.Event()
        print(f"{2 * args.clients} clients on 2 hubs; {args.seconds:.0f} s of REST receipts"
              f" ({args.rest_rate}/s) and device readings ({args.device_rate}/s) …",
              flush=True)  # fmt: skip
        work = [
            asyncio.create_task(people(hubs, stop, args.rest_rate)),
            asyncio.create_task(devices(prefix, stop, args.device_rate)),
        ]
        await asyncio.sleep(args.seconds)
        stop.set()
        receipts, readings = await asyncio.gather(*work)
        await asyncio.sleep(2)  # the last changes on their way
        for reader in readers:
            reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*readers, return_exceptions=True)
        with psycopg.connect(db_url) as conn:
            rows = conn.execute(
                "SELECT version, extract(epoch FROM at) FROM changes WHERE site = %s", (SITE,)
            ).fetchall()
        committed = {int(v): float(at) for v, at in rows}
        latencies = sorted(
            (received[v] - at) * 1000 for v, at in committed.items() if v in received
        )
        missing = [v for v in committed if v not in received]
    finally:
        for hub in hubs:
            await hub.stop()
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db))
            )
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"\n{'figure':<48}{'value':>14}")
    print(f"{'REST receipts / device readings sent':<48}{receipts:>7,} / {readings:<6,}")
    print(f"{'changes committed (site versions)':<48}{len(committed):>14,}")
    print(f"{'changes not seen by every client':<48}{len(missing):>14,}")
    print(f"{'commit → last of all clients, p50 (ms)':<48}{p50:>14.1f}")
    print(f"{'commit → last of all clients, p99 (ms)':<48}{p99:>14.1f}")
    print(f"{'commit → last of all clients, max (ms)':<48}{latencies[-1]:>14.1f}")
    print(
        f"SUMMARY live fan-out {dt.date.today()}: p99 {p99:.0f} ms from commit to all"
        f" {2 * args.clients} clients on 2 hubs (target ≤ 250 ms), {len(missing)} missed"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--clients", type=int, default=5, help="per hub")
    parser.add_argument("--rest-rate", type=float, default=20, help="receipts per second")
    parser.add_argument("--device-rate", type=float, default=100, help="readings per second")
    asyncio.run(main(parser.parse_args()))
