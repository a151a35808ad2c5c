"""Edge → Mosquitto → hub → PostgreSQL, exactly once, across a hub outage."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
from pathlib import Path

import aiomqtt
import msgspec
import psycopg

from tests.conftest import MQTT_HOST, MQTT_PORT
from tests.support.gateways import GTINS, edge_settings, wait_caught_up
from tests.support.hub import HubProcess
from tests.support.sites import site_config
from warelink.edge.gateway import Gateway, running
from warelink.hub.settings import HubSettings
from warelink.protocol import wire
from warelink.protocol.ids import new_event_id
from warelink.protocol.messages import Ack, Event, EventBatch, Receipt, TrafficClass, WeightReading
from warelink.protocol.topics import Kind, Topics


async def produce(
    gateway: Gateway,
    *,
    rate: float,
    seed: int,
    expected: dict[tuple[str, str], int],
    stop: asyncio.Event,
) -> None:
    """Receipts and weights into the gateway's outbox, as its drivers would emit them.

    Stops when ``stop`` is set, never in the middle of an append: a cancelled append may
    still commit, and the truth would miss it.
    """
    rng = random.Random(seed)
    site = gateway.config.gateway.site
    while not stop.is_set():
        gtin = rng.choice(GTINS)
        quantity = rng.randint(1, 40)
        await gateway.outbox.add(
            "scanner-1",
            TrafficClass.LEDGER,
            Receipt(location="DOCK-1", gtin=gtin, quantity=quantity, lot="L1"),
        )
        expected[(site, gtin)] = expected.get((site, gtin), 0) + quantity
        await gateway.outbox.add(
            "scale-1", TrafficClass.LEDGER, WeightReading(rng.uniform(1, 900), "kg", True)
        )
        await asyncio.sleep(1 / rate)


async def test_hub_killed_for_20s_loses_and_doubles_nothing(
    hub: HubProcess, hub_settings: HubSettings, mqtt_prefix: str, tmp_path: Path
) -> None:
    gateways = [
        Gateway(
            site_config(tmp_path, site=f"site-{n}", gateway=f"gw-{n}", ack_timeout_s=2.0),
            edge_settings(mqtt_prefix),
        )
        for n in ("a", "b")
    ]
    expected: dict[tuple[str, str], int] = {}
    async with contextlib.AsyncExitStack() as stack:
        for gateway in gateways:
            await stack.enter_async_context(running(gateway))
        async with asyncio.TaskGroup() as tasks:
            stop = asyncio.Event()
            for i, g in enumerate(gateways):
                tasks.create_task(produce(g, rate=100, seed=i, expected=expected, stop=stop))
            await asyncio.sleep(3)
            before = {row["id"]: row["acked_seq"] for row in await hub.get("/api/v1/gateways")}
            assert all(before.get(g.config.gateway.id, 0) > 0 for g in gateways), before
            await hub.kill()
            await asyncio.sleep(20)
            assert all(g.outbox.status().depth > 0 for g in gateways)  # held while the hub was away
            await hub.start()
            await asyncio.sleep(3)  # live events keep flowing during catch-up
            stop.set()
        rows = await wait_caught_up(hub, gateways, timeout=60)

    with psycopg.connect(hub_settings.db_url) as conn:
        for row in rows:
            gateway = next(g for g in gateways if g.config.gateway.id == row["id"])
            counts = conn.execute(
                "SELECT count(*), count(DISTINCT event_id), max(seq) FROM events"
                " WHERE gateway = %s",
                (row["id"],),
            ).fetchone()
            assert counts is not None
            stored, distinct, top = counts
            assert row["acked_seq"] == gateway.outbox.last_seq == top
            origin = gateway.outbox.last_seq - stored  # a new outbox starts at the clock
            assert stored == distinct == row["events_received"]
            (first,) = conn.execute(
                "SELECT min(seq) FROM events WHERE gateway = %s", (row["id"],)
            ).fetchone() or (None,)
            assert first == origin + 1  # nothing missing: the seqs are gapless
        stock = dict(
            ((site, sku), int(qty))
            for site, sku, qty in conn.execute(
                "SELECT site, sku, sum(quantity) FROM balances WHERE location = 'DOCK-1'"
                " GROUP BY 1, 2"
            ).fetchall()
        )
        assert stock == expected
        zero_sum = conn.execute(
            "SELECT count(*) FROM (SELECT site, sku, lot, sum(quantity) s FROM balances"
            " GROUP BY 1, 2, 3) t WHERE s <> 0"
        ).fetchone()
        assert zero_sum == (0,)


async def test_malformed_events_payload_is_quarantined_and_ingest_goes_on(
    hub: HubProcess, mqtt_prefix: str, tmp_path: Path
) -> None:
    """Garbage under a gateway's topic is kept with its reason (issue 9); garbage under a
    topic that names no gateway is counted and dropped."""
    garbage = [b"", b"\xc1\xff\x00garbage", b"\x92\x01\x81\xa1k\xa5batch", b"\x92\x07\xc0"]
    async with aiomqtt.Client(MQTT_HOST, MQTT_PORT) as client:
        for payload in garbage:
            await client.publish(f"{mqtt_prefix}/v1/site-x/gw-x/events", payload, qos=1)
        await client.publish(f"{mqtt_prefix}/v1/site x/gw-x/events", b"garbage", qos=1)
    async with asyncio.timeout(10), hub.client() as http:
        while True:
            metrics = (await http.get("/metrics")).text
            counts = {
                text.split()[0]: float(text.split()[-1])
                for text in metrics.splitlines()
                if text.startswith(("warelink_hub_malformed_dropped_total",
                                    "warelink_hub_quarantined_messages_total"))
            }  # fmt: skip
            if counts["warelink_hub_quarantined_messages_total"] >= len(garbage):
                break
            await asyncio.sleep(0.1)
    assert counts == {
        "warelink_hub_quarantined_messages_total": len(garbage),
        "warelink_hub_malformed_dropped_total": 1,
    }
    kept = await hub.get("/api/v1/quarantine?gateway=gw-x")
    payloads = [(await hub.get(f"/api/v1/quarantine/{e['id']}"))["payload_hex"] for e in kept]
    assert sorted(bytes.fromhex(p) for p in payloads) == sorted(garbage)

    gateway = Gateway(
        site_config(tmp_path, site="site-x", gateway="gw-x"), edge_settings(mqtt_prefix)
    )
    async with running(gateway):
        await gateway.outbox.add(
            "scanner-1", TrafficClass.LEDGER, Receipt(location="DOCK-1", gtin=GTINS[0], quantity=3)
        )
        await wait_caught_up(hub, [gateway], timeout=20)
    stock = await hub.get("/api/v1/sites/site-x/stock")
    assert stock["lines"] == [
        {"location": "DOCK-1", "sku": GTINS[0], "lot": "", "serial": "", "lpn": "",
         "status": "available", "quantity": "3"}
    ]  # fmt: skip


async def test_batches_delivered_twice_are_stored_once(hub: HubProcess, mqtt_prefix: str) -> None:
    """The same batches published again (as after a lost ack) are dropped as duplicates."""
    topics = Topics(mqtt_prefix)
    now = dt.datetime.now(dt.UTC)
    receipt = Receipt(location="DOCK-1", gtin=GTINS[0], quantity=1)
    events = [
        Event(gateway="gw-d", seq=seq, id=new_event_id(), device="scanner-1",
              cls=TrafficClass.LEDGER, occurred_at=now, body=receipt)
        for seq in range(1, 51)
    ]  # fmt: skip
    raw = [msgspec.Raw(wire.encode_event(e)) for e in events]
    payloads = [
        wire.encode(
            EventBatch(
                gateway="gw-d",
                session=1,
                first_seq=i + 1,
                last_seq=i + 10,
                sent_at=now,
                events=raw[i : i + 10],
            )
        )
        for i in range(0, 50, 10)
    ]
    acks: list[int] = []
    async with aiomqtt.Client(MQTT_HOST, MQTT_PORT) as client:
        await client.subscribe(topics.gateway("site-d", "gw-d", Kind.ACK), qos=1)
        for payload in payloads + payloads[::-1] + payloads:
            await client.publish(topics.gateway("site-d", "gw-d", Kind.EVENTS), payload, qos=1)
        async with asyncio.timeout(20):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                ack = wire.decode(message.payload)
                assert isinstance(ack, Ack)
                acks.append(ack.seq)
                rows = await hub.get("/api/v1/gateways")
                if rows and rows[0]["duplicates_dropped"] == 100:
                    break
    assert acks == sorted(acks) and acks[-1] == 50  # cumulative, never backwards
    assert rows[0]["events_received"] == 50
    assert rows[0]["acked_seq"] == 50
    stock = await hub.get("/api/v1/sites/site-d/stock")
    assert stock["lines"][0]["quantity"] == "50"


async def test_a_gateway_idle_past_the_ack_timeout_does_not_time_out_on_its_next_send(
    hub: HubProcess, mqtt_prefix: str, tmp_path: Path
) -> None:
    """The ack timeout counts from the send, not from the last ack before a quiet spell."""
    gateway = Gateway(
        site_config(tmp_path, site="site-q", gateway="gw-q", ack_timeout_s=1.0),
        edge_settings(mqtt_prefix),
    )
    receipt = Receipt(location="DOCK-1", gtin=GTINS[0], quantity=1)
    async with running(gateway):
        await gateway.outbox.add("scanner-1", TrafficClass.LEDGER, receipt)
        await wait_caught_up(hub, [gateway], timeout=20)
        await asyncio.sleep(2.5)  # quiet for longer than the ack timeout
        await gateway.outbox.add("scanner-1", TrafficClass.LEDGER, receipt)
        await wait_caught_up(hub, [gateway], timeout=20)
        await asyncio.sleep(1.0)
    assert gateway.uplink.stats.ack_timeouts == 0
    assert gateway.uplink.stats.events_resent == 0
