"""Simulated devices → edge → Mosquitto → hub → PostgreSQL → websocket client."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from tests.support.cli import warelink
from tests.support.gateways import edge_settings, wait_caught_up
from tests.support.hub import HubProcess
from tests.support.sites import write_site_config
from warelink.edge.config import load_site_config
from warelink.edge.gateway import Gateway, running
from warelink.protocol.messages import Receipt, TrafficClass
from warelink.sim.scenario import DockScenario


class LiveClient:
    """Keeps a site's state from the live websocket, checking the version sequence."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.version = -1
        self.balances: dict[tuple[str, str, str], Decimal] = {}
        self.devices: dict[str, dict[str, Any]] = {}
        self.deltas = 0

    async def next(self) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(await self.ws.recv())
        if message["kind"] == "snapshot":
            self.version = message["version"]
        else:
            assert message["kind"] == "delta"
            assert message["version"] == self.version + 1, "a delta was missed"
            self.version = message["version"]
            self.deltas += 1
        for line in message["balances"]:
            self.balances[(line["location"], line["sku"], line["lot"])] = Decimal(line["quantity"])
        for reading in message["devices"]:
            self.devices[reading["device"]] = reading
        return message

    async def until(self, done: Any, timeout: float = 20) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                await self.next()


async def test_a_pallet_scanned_at_the_dock_shows_up_live(
    hub: HubProcess, mqtt_prefix: str, tmp_path: Path
) -> None:
    dev = tmp_path / "dev"
    path = write_site_config(
        tmp_path, site="site-e2e", gateway="gw-e2e",
        devices=[
            {"id": "dock-scale", "kind": "mtsics_scale", "port": str(dev / "scale"),
             "location": "DOCK-1", "poll_interval_s": 0.1},
            {"id": "dock-scanner", "kind": "line_scanner", "port": str(dev / "scanner"),
             "purpose": "receive", "location": "DOCK-1"},
        ],
    )  # fmt: skip
    config = load_site_config(path)
    scenario = DockScenario(config, seed=7)
    gateway = Gateway(config, edge_settings(mqtt_prefix))
    ws_url = hub.url.replace("http", "ws") + f"/api/v1/live?site=site-e2e&access_token={hub.key}"
    async with scenario.devices(), running(gateway), connect(ws_url) as ws:
        live = LiveClient(ws)
        snapshot = await live.next()
        assert snapshot["kind"] == "snapshot" and snapshot["site"] == "site-e2e"

        def scanner_online() -> bool:
            status = live.devices.get("dock-scanner", {})
            return bool(status.get("body", {}).get("state") == "online")

        await live.until(scanner_online)
        label = await scenario.receive_pallet(scenario.docks[0])
        key = ("DOCK-1", label.gtin, label.lot)
        await live.until(lambda: live.balances.get(key) == label.count)
        weight = live.devices["dock-scale"]
        assert weight["type"] == "weight"
        await live.until(lambda: live.devices["dock-scanner"]["type"] == "receipt")
        receipt = live.devices["dock-scanner"]["body"]
        assert (receipt["gtin"], receipt["lot"], receipt["quantity"]) == (
            label.gtin, label.lot, label.count,
        )  # fmt: skip
        assert receipt["expiry"] == label.expiry.isoformat()
        assert receipt["sscc"] == label.sscc
        await wait_caught_up(hub, [gateway], timeout=20)

    stored = await hub.get("/api/v1/sites/site-e2e/stock")
    assert {"location": "DOCK-1", "sku": label.gtin, "lot": label.lot, "serial": "",
            "lpn": label.sscc, "status": "available",
            "quantity": str(label.count)} in stored["lines"]  # fmt: skip
    ledger = await hub.get("/api/v1/sites/site-e2e/stock?include_virtual=true")
    assert sum(Decimal(line["quantity"]) for line in ledger["lines"]) == 0  # double entry

    report = json.loads(await warelink("edge", "status", "--config", str(path), "--json"))
    assert report["gateway"] == "gw-e2e"
    assert report["last_seq"] == report["acked_seq"] == gateway.outbox.last_seq > 0
    assert report["outbox_depth"] == 0


async def test_edge_status_shows_the_backlog_while_no_hub_acks(
    mqtt_prefix: str, tmp_path: Path
) -> None:
    path = write_site_config(tmp_path, site="site-s", gateway="gw-s")
    gateway = Gateway(load_site_config(path), edge_settings(mqtt_prefix))
    async with running(gateway):
        await asyncio.sleep(0.2)
        for _ in range(5):
            await gateway.outbox.add(
                "scanner", TrafficClass.LEDGER, Receipt(location="D", gtin="1", quantity=1)
            )
        text = await warelink("edge", "status", "--config", str(path))
    lines = dict(
        line.split(None, 1)
        for line in text.strip().splitlines()
        if not line.startswith(" ") and not line.endswith(":")
    )
    assert int(lines["last_seq"]) - int(lines["acked_seq"]) == 5
    assert lines["outbox_depth"] == "5"
