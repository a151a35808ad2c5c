"""A gateway whose events the hub cannot commit is held back; the others go on.

The fault is made real in the database: a trigger refuses one gateway's events, as a bug
in a ledger rule or a bad row would. The hub process must not stop, must keep acking the
healthy gateway, must not ack the held one (its edge keeps the events), and must take
the held gateway's resent events once the fault is gone.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import aiomqtt
import msgspec
import psycopg

from tests.conftest import MQTT_HOST, MQTT_PORT
from tests.support.hub import HubProcess
from warelink.protocol import wire
from warelink.protocol.ids import new_event_id
from warelink.protocol.messages import Ack, Event, EventBatch, Receipt, TrafficClass
from warelink.protocol.topics import Kind, Topics

SITE = "site-i"


def batch(gateway: str, seq: int) -> bytes:
    event = Event(
        gateway=gateway, seq=seq, id=new_event_id(), device="scanner", cls=TrafficClass.LEDGER,
        occurred_at=dt.datetime.now(dt.UTC),
        body=Receipt(location="DOCK-1", gtin="09506000134352", quantity=1),
    )  # fmt: skip
    return wire.encode(
        EventBatch(gateway=gateway, session=1, first_seq=seq, last_seq=seq,
                   sent_at=dt.datetime.now(dt.UTC),
                   events=[msgspec.Raw(wire.encode_event(event))])
    )  # fmt: skip


async def test_a_gateway_the_hub_cannot_commit_is_held_and_the_others_go_on(
    hub: HubProcess, mqtt_prefix: str
) -> None:
    with psycopg.connect(hub.settings.db_url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION refuse_bad() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " IF NEW.gateway = 'gw-bad' THEN RAISE EXCEPTION 'simulated fault'; END IF;"
            " RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER refuse_bad BEFORE INSERT ON events FOR EACH ROW"
            " EXECUTE FUNCTION refuse_bad()"
        )
    topics = Topics(mqtt_prefix)
    acks: dict[str, int] = {}
    async with aiomqtt.Client(MQTT_HOST, MQTT_PORT) as client:
        for gateway in ("gw-good", "gw-bad"):
            await client.subscribe(topics.gateway(SITE, gateway, Kind.ACK), qos=1)

        async def collect() -> None:
            async for message in client.messages:
                ack = wire.decode(bytes(message.payload))
                if isinstance(ack, Ack):
                    acks[ack.gateway] = max(acks.get(ack.gateway, 0), ack.seq)

        collector = asyncio.create_task(collect())
        try:
            for seq in (1, 2, 3):  # in the same flushes: both gateways' batches together
                for gateway in ("gw-bad", "gw-good"):
                    await client.publish(topics.gateway(SITE, gateway, Kind.EVENTS),
                                         batch(gateway, seq), qos=1)  # fmt: skip
            async with asyncio.timeout(20):
                while acks.get("gw-good") != 3:
                    await asyncio.sleep(0.05)
            await asyncio.sleep(1)
            assert "gw-bad" not in acks  # never acked: its edge keeps its events
            assert hub.process is not None and hub.process.returncode is None  # still up
            async with hub.client() as http:
                metrics = await http.get("/metrics")
            assert "warelink_hub_gateways_held 1.0" in metrics.text

            with psycopg.connect(hub.settings.db_url, autocommit=True) as conn:
                conn.execute("DROP TRIGGER refuse_bad ON events")
            for seq in (1, 2, 3):  # the edge resends what was not acked
                await client.publish(topics.gateway(SITE, "gw-bad", Kind.EVENTS),
                                     batch("gw-bad", seq), qos=1)  # fmt: skip
            async with asyncio.timeout(20):
                while acks.get("gw-bad") != 3:
                    await asyncio.sleep(0.05)
        finally:
            collector.cancel()
    with psycopg.connect(hub.settings.db_url) as conn:
        rows = conn.execute("SELECT gateway, count(*) FROM events GROUP BY 1 ORDER BY 1")
        assert rows.fetchall() == [("gw-bad", 3), ("gw-good", 3)]
    assert "ingest.gateway_held" in hub.tail(200)
    assert "ingest.gateway_released" in hub.tail(200)
