"""Replay, gaps, commands and counters through the real hub, broker and gateway."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import aiomqtt
import msgspec

from tests.conftest import MQTT_HOST, MQTT_PORT
from tests.support.cli import warelink
from tests.support.gateways import GTINS, edge_settings, wait_caught_up
from tests.support.hub import HubProcess
from tests.support.services import free_port
from tests.support.sites import site_config, write_site_config
from warelink.edge.config import load_site_config
from warelink.edge.gateway import Gateway, running
from warelink.protocol import wire
from warelink.protocol.ids import new_event_id
from warelink.protocol.messages import (
    Birth,
    Death,
    Event,
    EventBatch,
    Receipt,
    ReplayRequest,
    TrafficClass,
    WeightReading,
)
from warelink.protocol.topics import Kind, Topics
from warelink.sim.scale import SimulatedScale


async def until(check: Any, timeout: float = 20, every: float = 0.1) -> Any:
    async with asyncio.timeout(timeout):
        while not (value := await check()):
            await asyncio.sleep(every)
        return value


async def gateway_row(hub: HubProcess, gateway: str) -> dict[str, Any]:
    rows: dict[str, dict[str, Any]] = {row["id"]: row for row in await hub.get("/api/v1/gateways")}
    return rows.get(gateway, {})


async def test_a_replay_request_is_answered_from_the_retained_outbox(
    hub: HubProcess, mqtt_prefix: str, tmp_path: Path
) -> None:
    gateway = Gateway(
        site_config(tmp_path, site="site-r", gateway="gw-r"), edge_settings(mqtt_prefix)
    )
    async with running(gateway):
        for _ in range(20):
            receipt = Receipt(location="DOCK-1", gtin=GTINS[0], quantity=1)
            await gateway.outbox.add("scanner", TrafficClass.LEDGER, receipt)
        await wait_caught_up(hub, [gateway], timeout=20)
        first = gateway.outbox.last_seq - 19  # the outbox's first seq
        request = ReplayRequest(gateway="gw-r", from_seq=first + 4, to_seq=first + 9)
        async with aiomqtt.Client(MQTT_HOST, MQTT_PORT) as client:
            topic = Topics(mqtt_prefix).gateway("site-r", "gw-r", Kind.REPLAY)
            await client.publish(topic, wire.encode(request), qos=1)

        async def replayed() -> bool:
            return int((await gateway_row(hub, "gw-r")).get("duplicates_dropped", 0)) >= 16

        await until(replayed)  # it resends from seq 5 on: 16 events the hub already has
        assert gateway.uplink.stats.replays_answered == 1
        assert gateway.uplink.stats.events_resent >= 16
    row = await gateway_row(hub, "gw-r")
    assert (row["events_received"], row["acked_seq"]) == (20, gateway.outbox.last_seq)
    stock = await hub.get("/api/v1/sites/site-r/stock")
    assert stock["lines"][0]["quantity"] == "20"


async def test_the_hub_detects_a_gap_asks_for_it_and_counts_it_filled(
    hub: HubProcess, mqtt_prefix: str
) -> None:
    topics = Topics(mqtt_prefix)

    def batch(first: int, last: int) -> bytes:
        now = dt.datetime.now(dt.UTC)  # sent now: the hub measures clock skew from it
        events = [
            Event(gateway="gw-g", seq=seq, id=new_event_id(), device="scale",
                  cls=TrafficClass.LEDGER, occurred_at=now, body=WeightReading(1.0, "kg", True))
            for seq in range(first, last + 1)
        ]  # fmt: skip
        return wire.encode(EventBatch(
            gateway="gw-g", session=1, first_seq=first, last_seq=last, sent_at=now,
            events=[msgspec.Raw(wire.encode_event(e)) for e in events],
        ))  # fmt: skip

    async with aiomqtt.Client(MQTT_HOST, MQTT_PORT) as client:
        await client.subscribe(topics.gateway("site-g", "gw-g", Kind.REPLAY), qos=1)
        events_topic = topics.gateway("site-g", "gw-g", Kind.EVENTS)
        await client.publish(events_topic, batch(1, 5), qos=1)
        await client.publish(events_topic, batch(11, 15), qos=1)
        async with asyncio.timeout(10):
            message = await anext(aiter(client.messages))
        assert isinstance(message.payload, bytes)
        assert wire.decode(message.payload) == ReplayRequest(gateway="gw-g", from_seq=6, to_seq=10)
        await client.publish(events_topic, batch(6, 10), qos=1)

    async def filled() -> dict[str, Any] | None:
        row = await gateway_row(hub, "gw-g")
        return row if row.get("acked_seq") == 15 else None

    row = await until(filled)
    assert (row["gaps_detected"], row["gaps_filled"], row["replays_requested"]) == (1, 1, 1)
    assert row["pending_ranges"] == []
    assert abs(row["clock_skew_ms"]) < 5000 and row["clock_skew_flagged"] is False


async def test_commands_run_once_expire_while_offline_and_report_exactly_once(
    hub: HubProcess, mqtt_prefix: str, tmp_path: Path
) -> None:
    port = tmp_path / "dev" / "scale"
    path = write_site_config(
        tmp_path, site="site-c", gateway="gw-c",
        devices=[{"id": "scale-1", "kind": "mtsics_scale", "port": str(port),
                  "poll_interval_s": 0.1}],
    )  # fmt: skip
    config = load_site_config(path)
    commands = f"{hub.url}/api/v1/sites/site-c/devices/scale-1/commands"
    async with (
        SimulatedScale(port, __import__("random").Random(3)) as scale,
        hub.client() as http,
    ):
        async with running(Gateway(config, edge_settings(mqtt_prefix))):
            await until(lambda: gateway_row(hub, "gw-c"))  # born: the hub knows its devices
            scale.place(2.0)
            response = await http.post(commands, json={"action": "tare", "key": "tare-1"})
            assert response.status_code == 202, response.text

            async def outcome(key: str) -> dict[str, Any] | None:
                row = (await http.get(f"{hub.url}/api/v1/commands/{key}")).json()
                return row if row.get("outcome") else None

            done = await until(lambda: outcome("tare-1"))
            assert (done["outcome"], done["detail"]) == ("done", "tare 2")
            again = await http.post(commands, json={"action": "tare", "key": "tare-1"})
            assert again.json()["outcome"] == "done" and again.json()["sent_count"] == 1
            conflict = await http.post(commands, json={"action": "zero", "key": "tare-1"})
            assert conflict.status_code == 409
            bad = await http.post(commands, json={"action": "explode", "key": "bad-1"})
            assert bad.status_code == 202
            assert (await until(lambda: outcome("bad-1")))["outcome"] == "rejected"
        # The gateway is down: a command with a short life waits at the hub, then expires.
        late = await http.post(commands, json={"action": "zero", "key": "z-late",
                                               "expires_in_s": 0.5})  # fmt: skip
        assert late.status_code == 202
        await asyncio.sleep(1.0)
        async with running(Gateway(config, edge_settings(mqtt_prefix))):
            expired = await until(lambda: outcome("z-late"))
        assert expired["outcome"] == "expired" and expired["sent_count"] >= 1
        missing = await http.post(f"{hub.url}/api/v1/sites/site-c/devices/nope/commands",
                                  json={"action": "zero"})  # fmt: skip
        assert missing.status_code == 404


async def test_every_counter_is_in_edge_status_the_gateways_api_and_both_metrics(
    hub: HubProcess, mqtt_prefix: str, tmp_path: Path
) -> None:
    metrics_port = free_port()
    path = write_site_config(
        tmp_path, site="site-m", gateway="gw-m", stats_interval_s=0.2,
        metrics=f"127.0.0.1:{metrics_port}",
    )  # fmt: skip
    gateway = Gateway(load_site_config(path), edge_settings(mqtt_prefix))
    edge_counters = [
        "outbox_depth", "outbox_depth_ledger", "outbox_depth_telemetry", "oldest_unacked_age_s",
        "acked_seq", "events_resent", "dropped_ledger", "dropped_telemetry", "replays_answered",
    ]  # fmt: skip
    hub_figures = ["duplicates_dropped", "gaps_detected", "gaps_filled", "acked_seq"]
    async with running(gateway), hub.client() as http:
        await gateway.outbox.add("s", TrafficClass.TELEMETRY, WeightReading(1.0, "kg", False))
        await wait_caught_up(hub, [gateway], timeout=20)

        async def reported() -> dict[str, Any] | None:
            row = await gateway_row(hub, "gw-m")
            return row if set(edge_counters) <= row.get("edge_counters", {}).keys() else None

        row = await until(reported)
        assert row["edge_counters"]["acked_seq"] >= 1
        for name in hub_figures:
            assert name in row
        await asyncio.sleep(1.5)  # a housekeeping tick saves the counters for `edge status`
        status = json.loads(await warelink("edge", "status", "--config", str(path), "--json"))
        for name in edge_counters:
            assert name in status or name in status["counters_of_last_run"], name
        assert status["counters_of_last_run"]["events_resent"] >= 0
        edge_metrics = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        for name in edge_counters:
            assert f'warelink_edge_{name}{{gateway="gw-m"}}' in edge_metrics, name
        hub_metrics = (await http.get(f"{hub.url}/metrics")).text
        for name in hub_figures:
            assert f'warelink_gateway_{name}{{gateway="gw-m",site="site-m"}}' in hub_metrics, name
        assert (
            'warelink_gateway_edge{counter="dropped_telemetry",gateway="gw-m",site="site-m"}'
            in hub_metrics
        )
        assert "warelink_hub_duplicates_dropped_total" in hub_metrics


async def test_a_replaced_gateway_box_continues_past_what_the_hub_has(
    hub: HubProcess, mqtt_prefix: str, tmp_path: Path
) -> None:
    """A new outbox (the box replaced, its disk wiped) must not look like old duplicates."""
    config = site_config(tmp_path, site="site-n", gateway="gw-n")
    receipt = Receipt(location="DOCK-1", gtin=GTINS[0], quantity=1)
    for box in range(2):
        gateway = Gateway(config, edge_settings(mqtt_prefix))
        async with running(gateway):
            for _ in range(5):
                await gateway.outbox.add("scanner", TrafficClass.LEDGER, receipt)
            await wait_caught_up(hub, [gateway], timeout=20)
        if box == 0:
            shutil.rmtree(config.gateway.data_dir)
    row = await gateway_row(hub, "gw-n")
    assert row["events_received"] == 10 and row["duplicates_dropped"] == 0
    stock = await hub.get("/api/v1/sites/site-n/stock")
    assert stock["lines"][0]["quantity"] == "10"


async def test_a_death_from_an_older_session_is_ignored(hub: HubProcess, mqtt_prefix: str) -> None:
    topics = Topics(mqtt_prefix)

    async def online() -> bool:
        return bool((await gateway_row(hub, "gw-s")).get("online"))

    async with aiomqtt.Client(MQTT_HOST, MQTT_PORT) as client:
        birth = Birth(gateway="gw-s", site="site-s", session=2, last_seq=0)
        await client.publish(
            topics.gateway("site-s", "gw-s", Kind.BIRTH), wire.encode(birth), qos=1
        )
        await until(online)
        stale = Death(gateway="gw-s", session=1)  # a Will from the connection before
        await client.publish(
            topics.gateway("site-s", "gw-s", Kind.DEATH), wire.encode(stale), qos=1
        )
        current = Death(gateway="gw-s", session=2)
        await asyncio.sleep(0.5)
        assert await online()
        await client.publish(
            topics.gateway("site-s", "gw-s", Kind.DEATH), wire.encode(current), qos=1
        )

    async def offline() -> bool:
        return not await online()

    await until(offline)
