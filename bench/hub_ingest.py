"""Hub ingest throughput, beside a raw COPY binary of the same rows in the same run.

(a) ``commit_events`` called directly, flushes of 5000 events (ten 500-event messages
    from the gateways, round robin), receipts and weight readings mixed; then the same
    events offered again (every one a duplicate); then telemetry only (no ledger effect).
    Raw baseline: ``COPY raw_events (EVENT_COLUMNS) FROM STDIN (FORMAT BINARY)`` with
    ``store.EVENT_TYPES``, one commit per 5000 prebuilt rows, into a copy of ``events``
    (``LIKE events INCLUDING ALL``: same columns, same primary key) in the same database.
(b) through the broker: the real ``Ingest`` worker runs in-process; simulated gateways
    publish pre-encoded ``EventBatch``es (500 events, QoS 1, awaited like the uplink)
    keeping at most ``--window`` batches unacked by the hub; events/s from the first
    publish until every gateway's last seq is acked on its ack topic.

The database (``wl_bench_<random>``) and the MQTT prefix (``wlbench-<random>``) are the
run's own; the database is dropped and the hub's retained presence cleared at the end.

    .venv/bin/python bench/hub_ingest.py [--events 200000] [--gateways 4] [--part a b]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import aiomqtt
import msgspec
import psycopg
import structlog
from psycopg import AsyncConnection, sql
from psycopg.types.json import set_json_dumps

from warelink.hub.ingest import store
from warelink.hub.ingest.commit import IncomingBatch, commit_events
from warelink.hub.ingest.worker import Ingest
from warelink.hub.migrate import migrate
from warelink.hub.settings import HubSettings
from warelink.protocol import wire
from warelink.protocol.ids import new_event_id
from warelink.protocol.messages import (
    Ack,
    Event,
    EventBatch,
    HubPresence,
    Receipt,
    TrafficClass,
    WeightReading,
)
from warelink.protocol.topics import Kind, Topics

# Recent: the hub quarantines events dated outside its window (protocol/limits.py).
T0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
MESSAGE_EVENTS = 500
Batches = list[IncomingBatch]


def make_events(total: int, gateways: int, receipt_share: float) -> dict[str, list[Event]]:
    """Events per gateway, seq 1..n each; every k-th a receipt, the rest weights."""
    per = total // gateways
    every = round(1 / receipt_share) if receipt_share > 0 else 0
    out: dict[str, list[Event]] = {}
    for g in range(gateways):
        gateway = f"gw-{g}"
        events = []
        for seq in range(1, per + 1):
            i = g * per + seq
            if every and seq % every == 0:
                body: Receipt | WeightReading = Receipt(
                    location=f"A-{i % 97:02d}-{i % 7}",
                    gtin=f"0950600013{i % 1000:04d}",
                    quantity=1 + i % 24,
                    lot=f"L{i % 50}",
                )
                cls, device = TrafficClass.LEDGER, f"rfid-{i % 8}"
            else:
                body = WeightReading(weight=12.5 + (i % 400) / 10, unit="kg", stable=True)
                cls, device = TrafficClass.TELEMETRY, f"scale-{i % 8}"
            events.append(
                Event(
                    gateway=gateway,
                    seq=seq,
                    id=new_event_id(),
                    device=device,
                    cls=cls,
                    occurred_at=T0 + dt.timedelta(milliseconds=i),
                    body=body,
                )
            )
        out[gateway] = events
    return out


def site_of(gateway: str) -> str:
    return f"site-{int(gateway.rsplit('-', 1)[1]) % 2}"


def messages_round_robin(per_gateway: dict[str, list[Event]]) -> list[IncomingBatch]:
    """500-event messages, gateways interleaved, each gateway's in seq order."""
    chunks = {
        gw: [evs[i : i + MESSAGE_EVENTS] for i in range(0, len(evs), MESSAGE_EVENTS)]
        for gw, evs in per_gateway.items()
    }
    out = []
    for k in range(max(len(c) for c in chunks.values())):
        for gw, c in chunks.items():
            if k < len(c):
                seqs = (c[k][0].seq, c[k][-1].seq)
                out.append(IncomingBatch(site_of(gw), gw, *seqs, c[k], skew_ms=0.0))
    return out


def flushes_of(messages: list[IncomingBatch], flush_events: int) -> list[Batches]:
    per = max(1, flush_events // MESSAGE_EVENTS)
    return [messages[i : i + per] for i in range(0, len(messages), per)]


async def connect(url: str) -> AsyncConnection:
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    set_json_dumps(msgspec.json.encode, context=conn)
    return conn


async def reset(conn: AsyncConnection) -> None:
    await conn.execute(
        "TRUNCATE events, raw_events, movements, balances, locations, gateways, sites CASCADE"
    )
    await conn.execute("CHECKPOINT")


# ------------------------------------------------------------------------- (a)


async def raw_copy(conn: AsyncConnection, flushes: list[Batches]) -> float:
    now = dt.datetime.now(dt.UTC)
    row_flushes = [
        [row for b in flush for row in store.event_rows(b.site, b.events, now)] for flush in flushes
    ]
    total = sum(len(rows) for rows in row_flushes)
    start = time.perf_counter()
    for rows in row_flushes:
        async with (
            conn.transaction(),
            conn.cursor() as cur,
            cur.copy(f"COPY raw_events ({store.EVENT_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy,
        ):
            copy.set_types(store.EVENT_TYPES)
            for row in rows:
                await copy.write_row(row)
    return total / (time.perf_counter() - start)


async def run_commits(conn: AsyncConnection, flushes: list[Batches]) -> tuple[float, int, int]:
    committed = duplicates = 0
    offered = sum(len(b.events) for flush in flushes for b in flush)
    start = time.perf_counter()
    for flush in flushes:
        result = await commit_events(flush, conn=conn)
        committed += result.committed
        duplicates += result.duplicates
    return offered / (time.perf_counter() - start), committed, duplicates


async def part_a(url: str, args: argparse.Namespace) -> dict[str, float]:
    mixed = flushes_of(
        messages_round_robin(make_events(args.events, args.gateways, args.receipt_share)),
        args.flush_events,
    )
    telemetry = flushes_of(
        messages_round_robin(make_events(args.events, args.gateways, 0.0)), args.flush_events
    )
    total = sum(len(b.events) for f in mixed for b in f)
    receipts = sum(isinstance(e.body, Receipt) for f in mixed for b in f for e in b.events)
    figures: dict[str, list[float]] = {k: [] for k in ("raw", "mixed", "dup", "telemetry")}
    async with await connect(url) as conn:
        for _ in range(args.repeat):
            await reset(conn)
            figures["raw"].append(await raw_copy(conn, mixed))
            rate, committed, dups = await run_commits(conn, mixed)
            assert committed == total and dups == 0, (committed, dups)
            figures["mixed"].append(rate)
            rate, committed, dups = await run_commits(conn, mixed)
            assert committed == 0 and dups == total, (committed, dups)
            figures["dup"].append(rate)
            cur = await conn.execute("SELECT count(*) FROM movements")
            assert (await cur.fetchone()) == (receipts,)
            await reset(conn)
            rate, committed, _ = await run_commits(conn, telemetry)
            assert committed == total
            figures["telemetry"].append(rate)
    med = {k: statistics.median(v) for k, v in figures.items()}
    raw = med["raw"]
    print(
        f"(a) commit_events direct: {total:,} events, {args.gateways} gateways, flushes of "
        f"{args.flush_events}, {receipts:,} receipts; median of {args.repeat}"
    )
    rows = [
        ("raw COPY binary, 5000/commit", "rows/s", raw),
        ("commit_events, mixed (ledger+ack)", "events/s", med["mixed"]),
        ("commit_events, same again (dups)", "dups dropped/s", med["dup"]),
        ("commit_events, telemetry only", "events/s", med["telemetry"]),
    ]
    table(rows, raw)
    return med


def table(rows: list[tuple[str, str, float]], raw: float) -> None:
    header = f"  {'case':<38}{'unit':<16}{'rate':>12}{'× raw COPY':>12}"
    print(header)
    print("  " + "-" * (len(header) - 2))
    for name, unit, rate in rows:
        print(f"  {name:<38}{unit:<16}{rate:>12,.0f}{rate / raw:>11.2f}×")


# ------------------------------------------------------------------------- (b)


async def part_b(url: str, args: argparse.Namespace, raw: float | None) -> tuple[float, float]:
    run_id = uuid.uuid4().hex[:10]
    prefix = f"wlbench-{run_id}"
    topics = Topics(prefix)
    per_gateway = make_events(args.events, args.gateways, args.receipt_share)
    session = 1
    payloads = {
        gw: [
            wire.encode(
                EventBatch(
                    gateway=gw,
                    session=session,
                    first_seq=evs[i].seq,
                    last_seq=evs[min(i + MESSAGE_EVENTS, len(evs)) - 1].seq,
                    sent_at=dt.datetime.now(dt.UTC),
                    events=[msgspec.Raw(wire.encode_event(e)) for e in evs[i : i + MESSAGE_EVENTS]],
                )
            )
            for i in range(0, len(evs), MESSAGE_EVENTS)
        ]
        for gw, evs in per_gateway.items()
    }
    last_seq = {gw: len(evs) for gw, evs in per_gateway.items()}
    total = sum(last_seq.values())
    async with await connect(url) as conn:
        await reset(conn)
        if raw is None:
            raw = await raw_copy(conn, flushes_of(messages_round_robin(per_gateway), 5000))
            await reset(conn)

    settings = HubSettings(
        db_url=url,
        mqtt_url=f"mqtt://{args.mqtt_host}:{args.mqtt_port}",  # type: ignore[arg-type]
        mqtt_prefix=prefix,
        http="127.0.0.1:0",
        share_group=f"bench-{run_id}",
    )
    ingest = Ingest(settings)
    started = asyncio.Event()
    done_at: dict[str, float] = {}
    first_publish: list[float] = []

    async def gateway(gw: str, ready: asyncio.Event) -> None:
        acked = 0
        progress = asyncio.Event()
        client = aiomqtt.Client(
            args.mqtt_host,
            args.mqtt_port,
            identifier=f"wlbench-{run_id}-{gw}",
            protocol=aiomqtt.ProtocolVersion.V5,
        )
        async with client:
            await client.subscribe(topics.gateway(site_of(gw), gw, Kind.ACK), qos=1)

            async def receive() -> None:
                nonlocal acked
                async for message in client.messages:
                    ack = wire.decode(bytes(message.payload))  # type: ignore[arg-type]
                    if isinstance(ack, Ack) and ack.seq > acked:
                        acked = ack.seq
                        progress.set()
                        if acked >= last_seq[gw]:
                            done_at[gw] = time.perf_counter()
                            return

            async def send() -> None:
                ready.set()
                await started.wait()
                topic = topics.gateway(site_of(gw), gw, Kind.EVENTS)
                if not first_publish:
                    first_publish.append(time.perf_counter())
                for k, payload in enumerate(payloads[gw]):
                    while k * MESSAGE_EVENTS - acked >= args.window * MESSAGE_EVENTS:
                        progress.clear()
                        await progress.wait()
                    await client.publish(topic, payload, qos=1)

            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(receive(), name=f"{gw}-acks")
                tasks.create_task(send(), name=f"{gw}-send")

    async def hub_online() -> None:
        async with aiomqtt.Client(args.mqtt_host, args.mqtt_port) as watcher:
            await watcher.subscribe(topics.all_hub_presence(), qos=1)
            async for message in watcher.messages:
                payload = message.payload
                if isinstance(payload, bytes) and payload:
                    presence = wire.decode(payload)
                    if isinstance(presence, HubPresence) and presence.online:
                        return

    hub_task = asyncio.create_task(ingest.run(), name="hub-ingest")
    try:
        async with asyncio.timeout(args.timeout):
            await hub_online()
            readies = [asyncio.Event() for _ in payloads]
            async with asyncio.TaskGroup() as tasks:
                for gw, ready in zip(payloads, readies, strict=True):
                    tasks.create_task(gateway(gw, ready), name=f"gateway-{gw}")
                for ready in readies:
                    await ready.wait()
                started.set()
    finally:
        hub_task.cancel()
        await asyncio.gather(hub_task, return_exceptions=True)  # it clears its presence
    elapsed = max(done_at.values()) - first_publish[0]
    rate = total / elapsed
    async with await connect(url) as conn:
        cur = await conn.execute("SELECT count(*) FROM events")
        stored = (await cur.fetchone() or (0,))[0]
    stats = ingest.stats
    assert stored == total == stats.events_committed, (stored, total, stats)
    print(
        f"\n(b) through Mosquitto into the in-process Ingest worker: {total:,} events, "
        f"{args.gateways} gateways × {len(payloads['gw-0'])} batches of {MESSAGE_EVENTS}, "
        f"window {args.window} batches, {elapsed:.2f} s"
    )
    print(
        f"    hub: {stats.messages} messages in {stats.flushes} flushes "
        f"({total / max(stats.flushes, 1):,.0f} events/flush), "
        f"{stats.duplicates_dropped} duplicates"
    )
    table(
        [
            ("raw COPY binary, 5000/commit", "rows/s", raw),
            ("broker → Ingest → acked", "events/s", rate),
        ],
        raw,
    )
    return rate, raw


# ------------------------------------------------------------------------ main


async def with_database(admin: str, body: Callable[[str], Awaitable[None]]) -> None:
    name = f"wl_bench_{uuid.uuid4().hex[:12]}"
    url = psycopg.conninfo.make_conninfo(admin, dbname=name)
    await asyncio.to_thread(migrate, url)
    try:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute("CREATE TABLE raw_events (LIKE events INCLUDING ALL)")
        await body(url)
    finally:
        async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
            await conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--gateways", type=int, default=4)
    parser.add_argument("--flush-events", type=int, default=5000)
    parser.add_argument("--receipt-share", type=float, default=0.5)
    parser.add_argument("--window", type=int, default=20, help="unacked batches per gateway")
    parser.add_argument("--repeat", type=int, default=1, help="runs of (a); median reported")
    parser.add_argument("--part", nargs="+", default=["a", "b"], choices=["a", "b"])
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--mqtt-host", default="127.0.0.1")
    parser.add_argument("--mqtt-port", type=int, default=1883)
    parser.add_argument("--timeout", type=float, default=120, help="bound on part (b), s")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    summary: list[str] = []

    async def body(url: str) -> None:
        raw = None
        if "a" in args.part:
            med = await part_a(url, args)
            raw = med["raw"]
            summary.append(
                f"commit_events {med['mixed']:,.0f} ev/s = {med['mixed'] / raw:.2f}×"
                f" raw COPY {raw:,.0f} (telemetry only {med['telemetry'] / raw:.2f}×),"
                f" dups {med['dup']:,.0f}/s"
            )
        if "b" in args.part:
            rate, raw = await part_b(url, args, raw)
            summary.append(f"via broker {rate:,.0f} ev/s = {rate / raw:.2f}× raw COPY {raw:,.0f}")

    asyncio.run(with_database(args.pg, body))
    print("SUMMARY " + "; ".join(summary) + " — target ≥ 0.8× raw COPY (≥ 200k ev/s)")


if __name__ == "__main__":
    main()
