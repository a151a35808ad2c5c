"""No single message, event or request stops the pipeline (issue 9).

Each test throws bad input at one entrance of a real deployment — the hub process over
the real broker, a real gateway's topics, its handheld API — while a canary gateway
delivers receipts; the bad input is refused or quarantined with its reason, and the
canary's receipts all arrive, once each.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import aiomqtt
import psycopg

from tests.conftest import MQTT_HOST, MQTT_PORT
from tests.support.canary import Canary, canary
from tests.support.forge import GTIN, batch, event
from tests.support.gateways import edge_settings
from tests.support.hub import HubProcess
from tests.support.sites import site_config
from warelink.edge.gateway import Gateway, running
from warelink.protocol import wire
from warelink.protocol.messages import (
    Ack,
    Birth,
    Command,
    GatewayStats,
    HubPresence,
    Receipt,
    Shipment,
)
from warelink.protocol.topics import Kind, Topics

SITE = "site-x"
NOW = dt.datetime.now(dt.UTC)


async def quarantine(hub: HubProcess, **filters: str) -> list[dict[str, Any]]:
    query = "&".join(f"{k}={v}" for k, v in filters.items())
    entries: list[dict[str, Any]] = await hub.get(f"/api/v1/quarantine?{query}")
    return entries


async def gateway_row(hub: HubProcess, gateway: str) -> dict[str, Any]:
    rows = {row["id"]: row for row in await hub.get("/api/v1/gateways")}
    row: dict[str, Any] = rows[gateway]
    return row


async def until(predicate: Any, *, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.1)


async def feeding(bird: Canary, stop: asyncio.Event) -> asyncio.Task[None]:
    task = asyncio.create_task(bird.feed(rate=10, stop=stop), name="canary-feed")
    await asyncio.sleep(0.5)
    return task


async def finish(bird: Canary, task: asyncio.Task[None], stop: asyncio.Event, db: str) -> None:
    stop.set()
    await task
    await bird.caught_up(timeout=30)
    bird.assert_all_stored_once(db)
    assert len(bird.stored) >= 5


def assert_ingest_never_stopped(hub: HubProcess) -> None:
    log = hub.tail(2000)
    assert "ingest.disconnected" not in log and "ingest.failed" not in log, log[-3000:]
    assert hub.process is not None and hub.process.returncode is None


# ----------------------------------------------------------------- the hub's MQTT door


async def test_poison_messages_are_quarantined_and_ingest_goes_on(
    hub: HubProcess, mqtt_prefix: str, tmp_path: Path
) -> None:
    topics = Topics(mqtt_prefix)
    forged = "gw-forged"
    birth = topics.gateway(SITE, forged, Kind.BIRTH)
    stats = topics.gateway(SITE, forged, Kind.STATS)
    events = topics.gateway(SITE, forged, Kind.EVENTS)
    huge = 2**63
    nul_device = Birth(gateway=forged, site=SITE, session=1, last_seq=0, devices=["scale\x00"])
    nul_counter = GatewayStats(gateway=forged, session=1, sent_at=NOW, counters={"depth\x00": 1})
    poison = [  # (topic, payload, what the reason says)
        (birth, wire.encode(Birth(gateway=forged, site=SITE, session=huge, last_seq=0)), "<="),
        (birth, wire.encode(Birth(gateway=forged, site=SITE, session=1, last_seq=huge)), "<="),
        (birth, wire.encode(nul_device), "devices"),
        (stats, wire.encode(nul_counter), "counters"),
        (events, b"\x92\x01" + b"\x91" * 5000 + b"\x00", "nested too deeply"),
        (birth, b"\x92\x01" + b"\x91" * 5000 + b"\x00", "nested too deeply"),
        (
            events,
            batch(forged, 1, 1, [event(forged, 1)]).replace(forged.encode(), b"\xff" * 9),
            "UTF-8",
        ),
        (events, b"not msgpack at all", "envelope"),
    ]
    stop = asyncio.Event()
    async with canary(tmp_path, mqtt_prefix) as bird, aiomqtt.Client(MQTT_HOST, MQTT_PORT) as mq:
        await mq.subscribe(topics.gateway(SITE, forged, Kind.REPLAY), qos=1)
        replays: list[bytes] = []

        async def listen() -> None:
            async for message in mq.messages:
                replays.append(bytes(message.payload))

        listener = asyncio.create_task(listen())
        task = await feeding(bird, stop)
        for topic, payload, _ in poison:
            await mq.publish(topic, payload, qos=1)
        # A batch claiming seq 10^18 opens a gap no outbox could hold: reported, not asked.
        await mq.publish(events, batch(forged, 10**18, 10**18, [event(forged, 10**18)]), qos=1)

        async def all_kept() -> bool:
            return len(await quarantine(hub, gateway=forged)) == len(poison)

        await until(all_kept)
        await asyncio.sleep(7)  # three replay intervals: none may be asked for
        await finish(bird, task, stop, hub.settings.db_url)
        listener.cancel()
    entries = sorted(await quarantine(hub, gateway=forged), key=lambda e: e["id"])
    for entry, (topic, _, why) in zip(entries, poison, strict=True):
        assert entry["kind"] == "message" and entry["topic"] == topic
        assert why in entry["reason"], (why, entry["reason"])
    assert replays == []
    row = await gateway_row(hub, forged)
    assert row["gap_anomalies"] == 1 and row["quarantined"] == len(poison)
    assert hub.tail(2000).count("ingest.gap_anomaly") == 1
    assert 'ingest.gap"' not in hub.tail(2000) and "event='ingest.gap'" not in hub.tail(2000)
    async with hub.client() as http:
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
        metrics = (await http.get("/metrics")).text
    quarantined = [line for line in metrics.splitlines()
                   if line.startswith("warelink_hub_quarantined_messages_total")]  # fmt: skip
    assert quarantined == [f"warelink_hub_quarantined_messages_total {float(len(poison))}"]
    assert_ingest_never_stopped(hub)


async def test_bad_events_are_quarantined_alone_and_their_gateway_goes_on(
    hub: HubProcess, mqtt_prefix: str, tmp_path: Path
) -> None:
    topics = Topics(mqtt_prefix)
    evil = "gw-evil"
    long_location = Receipt(location="L" * 4000, gtin=GTIN, quantity=1)
    utf8 = event(evil, 11, device="scanner").replace(b"scanner", b"\xff\xfe\xfd\xfc\xfb\xfa\xf9")
    batches = [
        (1, 3, [event(evil, 1), event(evil, 2, occurred_at=dt.datetime(1, 1, 1, tzinfo=dt.UTC)),
                event(evil, 3)]),
        (4, 6, [event(evil, 4), event(evil, 5, occurred_at=dt.datetime(9999, 1, 1,
                                                                      tzinfo=dt.UTC)),
                event(evil, 6)]),
        (7, 9, [event(evil, 7), event(evil, 8, body=long_location), event(evil, 9)]),
        (10, 12, [event(evil, 10),  utf8, event(evil, 12)]),
        (13, 13, [event(evil, 13, body=Shipment(location="DOCK-1", gtin=GTIN,
                                                 quantity=2**62))]),
        (14, 14, [event("gw-other", 14)]),  # another gateway's event in this one's batch
    ]  # fmt: skip
    stop = asyncio.Event()
    acks: list[int] = []
    async with canary(tmp_path, mqtt_prefix) as bird, aiomqtt.Client(MQTT_HOST, MQTT_PORT) as mq:
        await mq.subscribe(topics.gateway(SITE, evil, Kind.ACK), qos=1)

        async def listen() -> None:
            async for message in mq.messages:
                ack = wire.decode(bytes(message.payload))
                assert isinstance(ack, Ack)
                acks.append(ack.seq)

        listener = asyncio.create_task(listen())
        task = await feeding(bird, stop)
        for first, last, events in batches:
            await mq.publish(topics.gateway(SITE, evil, Kind.EVENTS),
                             batch(evil, first, last, events), qos=1)  # fmt: skip
        # 4 KB strings at 20 per second: each event refused alone, the stream goes on.
        for seq in range(15, 55):
            payload = batch(evil, seq, seq, [event(evil, seq, body=long_location)])
            await mq.publish(topics.gateway(SITE, evil, Kind.EVENTS), payload, qos=1)
            await asyncio.sleep(0.05)
        await mq.publish(topics.gateway(SITE, evil, Kind.EVENTS),
                         batch(evil, 55, 55, [event(evil, 55)]), qos=1)  # fmt: skip

        async def acked_all() -> bool:
            return max(acks, default=0) == 55

        await until(acked_all)
        await finish(bird, task, stop, hub.settings.db_url)
        listener.cancel()
    with psycopg.connect(hub.settings.db_url) as conn:
        stored = [s for (s,) in conn.execute(
            "SELECT seq FROM events WHERE gateway = %s ORDER BY seq", (evil,))]  # fmt: skip
    assert stored == [1, 3, 4, 6, 7, 9, 10, 12, 55]
    entries = {e["seq"]: e for e in await quarantine(hub, gateway=evil, limit="500")}
    assert {s for s in entries if s is not None} == {2, 5, 8, 11, 13, 14, *range(15, 55)}
    assert "days old" in entries[2]["reason"] and "ahead" in entries[5]["reason"]
    assert "length <= 64" in entries[8]["reason"] and "UTF-8" in entries[11]["reason"]
    assert "<= 1000000000" in entries[13]["reason"] and "gw-other" in entries[14]["reason"]
    assert all(e["kind"] == "event" for e in entries.values())
    row = await gateway_row(hub, evil)
    assert row["quarantined"] == len(entries) and row["acked_seq"] == 55
    async with hub.client() as http:
        # A date out of the window is a supervisor's call: released, it is applied.
        dated = await http.post(f"/api/v1/quarantine/{entries[2]['id']}/release", json={})
        assert dated.status_code == 200, dated.text
        # A value out of bounds is not: it still does not decode, and stays open.
        still = await http.post(f"/api/v1/quarantine/{entries[8]['id']}/release", json={})
        assert still.status_code == 409 and "does not decode" in still.text
    with psycopg.connect(hub.settings.db_url) as conn:
        assert conn.execute(
            "SELECT extract(year FROM occurred_at) FROM events WHERE gateway = %s AND seq = 2",
            (evil,),
        ).fetchone() == (1,)
    assert (await gateway_row(hub, evil))["quarantined"] == len(entries) - 1
    assert_ingest_never_stopped(hub)


async def test_a_data_error_quarantines_one_event_which_is_released_after_the_fix(
    hub: HubProcess, mqtt_prefix: str, tmp_path: Path
) -> None:
    """A value the database refuses (here a CHECK constraint stands in for any data error
    PostgreSQL may raise) is that event's fault: found alone, quarantined, the rest of its
    batch and its gateway go on; released once the constraint is gone, with an audit row."""
    topics = Topics(mqtt_prefix)
    gw = "gw-poison"
    with psycopg.connect(hub.settings.db_url, autocommit=True) as conn:
        conn.execute(
            "ALTER TABLE events ADD CONSTRAINT no_poison"
            " CHECK (body->>'lot' IS DISTINCT FROM 'POISON')"
        )
    poisoned = Receipt(location="DOCK-1", gtin=GTIN, quantity=7, lot="POISON")
    dismissable = Receipt(location="DOCK-1", gtin=GTIN, quantity=1, lot="POISON")
    events = [event(gw, seq) for seq in range(1, 21)]
    events[12] = event(gw, 13, body=poisoned)
    events[16] = event(gw, 17, body=dismissable)
    stop = asyncio.Event()
    async with canary(tmp_path, mqtt_prefix) as bird, aiomqtt.Client(MQTT_HOST, MQTT_PORT) as mq:
        task = await feeding(bird, stop)
        await mq.publish(topics.gateway(SITE, gw, Kind.EVENTS), batch(gw, 1, 20, events), qos=1)
        await mq.publish(topics.gateway(SITE, gw, Kind.EVENTS),
                         batch(gw, 21, 21, [event(gw, 21)]), qos=1)  # fmt: skip

        async def caught_up() -> bool:
            return bool((await gateway_row(hub, gw))["acked_seq"] == 21)

        await until(caught_up)
        await finish(bird, task, stop, hub.settings.db_url)
    with psycopg.connect(hub.settings.db_url, autocommit=True) as conn:
        stored = [s for (s,) in conn.execute(
            "SELECT seq FROM events WHERE gateway = %s ORDER BY seq", (gw,))]  # fmt: skip
        assert stored == [s for s in range(1, 22) if s not in (13, 17)]
        conn.execute("ALTER TABLE events DROP CONSTRAINT no_poison")  # the fix
    entries = {e["seq"]: e for e in await quarantine(hub, gateway=gw)}
    assert set(entries) == {13, 17} and "no_poison" in entries[13]["reason"]
    async with hub.client() as http:
        released = await http.post(f"/api/v1/quarantine/{entries[13]['id']}/release",
                                   json={"note": "constraint was wrong"})  # fmt: skip
        assert released.status_code == 200, released.text
        assert released.json()["state"] == "released"
        again = await http.post(f"/api/v1/quarantine/{entries[13]['id']}/release", json={})
        assert again.status_code == 409 and "already released" in again.text
        dismissed = await http.post(f"/api/v1/quarantine/{entries[17]['id']}/dismiss",
                                    json={"note": "test scan"})  # fmt: skip
        assert dismissed.status_code == 200 and dismissed.json()["state"] == "dismissed"
        stock = (await http.get(f"/api/v1/sites/{SITE}/stock")).json()
    assert {(line["lot"], line["quantity"]) for line in stock["lines"]} >= {("POISON", "7")}
    with psycopg.connect(hub.settings.db_url) as conn:
        assert conn.execute(
            "SELECT count(*) FROM events WHERE gateway = %s AND seq = 13", (gw,)
        ).fetchone() == (1,)
        audit = conn.execute(
            "SELECT action, subject FROM audit_log WHERE action LIKE 'quarantine.%%' ORDER BY id"
        ).fetchall()
    assert audit == [("quarantine.release", str(entries[13]["id"])),
                     ("quarantine.dismiss", str(entries[17]["id"]))]  # fmt: skip
    assert (await gateway_row(hub, gw))["quarantined"] == 0
    assert_ingest_never_stopped(hub)


# ------------------------------------------------------------- the gateway's own doors


async def test_the_gateway_survives_garbage_on_its_topics_and_refuses_bad_requests(
    hub: HubProcess, mqtt_prefix: str, tmp_path: Path
) -> None:
    topics = Topics(mqtt_prefix)
    stop = asyncio.Event()
    async with canary(tmp_path, mqtt_prefix) as bird, aiomqtt.Client(MQTT_HOST, MQTT_PORT) as mq:
        site = bird.gateway.config.gateway.site
        task = await feeding(bird, stop)
        ack_topic = topics.gateway(site, bird.id, Kind.ACK)
        bad_ack = wire.encode(Ack(gateway=bird.id, seq=1)).replace(bird.id.encode(), b"\xff" * 9)
        garbage = [
            (ack_topic, bad_ack),
            (ack_topic, wire.encode(Ack(gateway=bird.id, seq=2**62))),  # never stored: ignored
            (ack_topic, b"\x92\x01" + b"\x91" * 5000 + b"\x00"),
            (topics.gateway(site, bird.id, Kind.REPLAY), b"\xc1\xc1\xc1"),
            (topics.gateway(site, bird.id, Kind.COMMAND),
             wire.encode(Command(key="k", device="nope", action="print",
                                 args={"a": [[[[[[[[[[1]]]]]]]]]]}))),
        ]  # fmt: skip
        for topic, payload in garbage:
            await mq.publish(topic, payload, qos=1)
        # Handheld requests out of bounds: refused before they are stored.
        for body in (
            {"location": "L" * 4000, "gtin": GTIN, "quantity": 1},
            {"location": "DOCK\x00", "gtin": GTIN, "quantity": 1},
            {"location": "DOCK-1", "gtin": GTIN, "quantity": 2**62},
            {"location": "DOCK-1", "gtin": GTIN, "quantity": 1, "lot": "x" * 65},
        ):
            response = await bird.api.post(
                "/api/v1/receive", json=body, headers={"Idempotency-Key": "bad"}
            )
            assert response.status_code == 422, response.text
        # Garbage retained where the hub's presence belongs: every gateway reads it at start.
        presence = topics.hub_presence("forged")
        retained = wire.encode(HubPresence(online=True, instance="x")).replace(b"x", b"\xff")
        await mq.publish(presence, retained, qos=1, retain=True)
        fresh = Gateway(site_config(tmp_path, site="site-fresh", gateway="gw-fresh"),
                        edge_settings(mqtt_prefix))  # fmt: skip
        async with running(fresh):
            await asyncio.sleep(2)
            assert fresh.uplink.stats.connected and fresh.uplink.stats.bad_messages >= 1
        await asyncio.sleep(1)
        await finish(bird, task, stop, hub.settings.db_url)
        assert bird.gateway.uplink.stats.bad_messages >= 4
        assert bird.gateway.outbox.acked_seq() == max(bird.stored)
        # The hub puts its presence back when it reconnects; here the test clears it.
        await mq.publish(presence, b"", qos=1, retain=True)
    with psycopg.connect(hub.settings.db_url) as conn:
        assert conn.execute(
            "SELECT count(*) FROM events WHERE gateway = %s AND body->>'location' <> 'DOCK-1'",
            (bird.id,),
        ).fetchone() == (0,)
    assert_ingest_never_stopped(hub)
