"""The handheld API keeps the floor working while the hub is away; nothing stored twice."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import httpx
import psycopg

from tests.support.canary import handheld_ready
from tests.support.gateways import edge_settings, wait_caught_up
from tests.support.hub import HubProcess
from tests.support.services import free_port
from tests.support.sites import site_config
from warelink.edge.gateway import Gateway, running
from warelink.hub.settings import HubSettings
from warelink.protocol import wire
from warelink.protocol.messages import Movement, Verification
from warelink.sim.scale import SimulatedScale

GTIN = "09506000134352"


async def test_clerks_work_offline_and_every_request_is_stored_once(
    hub_settings: HubSettings, mqtt_prefix: str, tmp_path: Path
) -> None:
    port = free_port()
    config = site_config(tmp_path, site="site-h", gateway="gw-h",
                         handheld_api=f"127.0.0.1:{port}")  # fmt: skip
    gateway = Gateway(config, edge_settings(mqtt_prefix))
    async with running(gateway), httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as api:
        await handheld_ready(api)

        async def post(operation: str, key: str | None, body: dict[str, object]) -> httpx.Response:
            headers = {"Idempotency-Key": key} if key else {}
            return await api.post(f"/api/v1/{operation}", json=body, headers=headers)

        receipt = {"location": "DOCK-1", "gtin": GTIN, "quantity": 10, "lot": "L1",
                   "expiry": "2027-03-31", "device": "pda-7"}  # fmt: skip
        first = await post("receive", "r-1", receipt)
        assert first.status_code == 201, first.text
        again = await post("receive", "r-1", receipt)  # the clerk tapped twice
        assert again.status_code == 200
        assert again.json() == first.json() | {"replayed": True}
        other = await post("receive", "r-1", receipt | {"quantity": 11})
        assert other.status_code == 422 and "another request" in other.json()["detail"]
        assert (await post("receive", None, receipt)).status_code == 400
        bad = await post("receive", "r-2", receipt | {"gtin": "123"})
        assert bad.status_code == 422 and bad.json()["detail"].startswith("gtin:")
        unknown_scale = await post("verify", "v-1", {"gtin": GTIN, "quantity": 1, "scale": "s"})
        assert unknown_scale.status_code == 409
        move = {"from_location": "DOCK-1", "to_location": "A-01-1", "gtin": GTIN,
                "quantity": 6, "lot": "L1"}  # fmt: skip
        assert (await post("putaway", "p-1", move)).status_code == 201
        ship = {"location": "A-01-1", "gtin": GTIN, "quantity": 2, "lot": "L1"}
        assert (await post("ship", "s-1", ship)).status_code == 201
        count = {"location": "A-01-1", "gtin": GTIN, "counted": 4, "lot": "L1"}
        assert (await post("count", "c-1", count)).status_code == 201
        status = (await api.get("/api/v1/status")).json()
        assert status["waiting_for_hub"] >= 4  # no hub yet: all held at the gateway

        hub = HubProcess(hub_settings, log_path=os.path.join(tmp_path, "hub.log"))
        await hub.start()
        try:
            await wait_caught_up(hub, [gateway], timeout=30)
            stock = await hub.get("/api/v1/sites/site-h/stock")
        finally:
            await hub.stop()
    lines = {(line["location"], line["lot"]): line["quantity"] for line in stock["lines"]}
    assert lines == {("DOCK-1", "L1"): "4", ("A-01-1", "L1"): "4"}
    with psycopg.connect(hub_settings.db_url) as conn:
        rows = conn.execute(
            "SELECT type, device, count(*) FROM events WHERE device <> 'dock-scanner'"
            " AND type <> 'device_status' GROUP BY 1, 2 ORDER BY 1"
        ).fetchall()
    assert rows == [("count", "handheld", 1), ("movement", "handheld", 1),
                    ("receipt", "pda-7", 1), ("shipment", "handheld", 1)]  # fmt: skip


async def test_verify_records_the_scales_latest_stable_weight(
    mqtt_prefix: str, tmp_path: Path
) -> None:
    port = free_port()
    scale_port = tmp_path / "dev" / "scale"
    config = site_config(
        tmp_path, site="site-v", gateway="gw-v", handheld_api=f"127.0.0.1:{port}",
        devices=[{"id": "pack-scale", "kind": "mtsics_scale", "port": str(scale_port),
                  "poll_interval_s": 0.05}],
    )  # fmt: skip
    gateway = Gateway(config, edge_settings(mqtt_prefix))
    scale = SimulatedScale(scale_port, random.Random(5), settle_s=(0.1, 0.2))
    async with (
        scale,
        running(gateway),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as api,
    ):
        scale.place(2.5)
        async with asyncio.timeout(15):
            while "pack-scale" not in gateway.weights.kg:
                await asyncio.sleep(0.05)
        response = await api.post(
            "/api/v1/verify", headers={"Idempotency-Key": "v-9"},
            json={"gtin": GTIN, "quantity": 3, "scale": "pack-scale", "order": "SO-1"},
        )  # fmt: skip
        assert response.status_code == 201, response.text
        rows, _ = gateway.outbox.read_batch(response.json()["seq"] - 1, 1)
        # A pick against the hub's pick task carries the task, for the hub to confirm.
        picked = await api.post(
            "/api/v1/pick", headers={"Idempotency-Key": "p-9"},
            json={"from_location": "A-1", "to_location": "STAGE", "gtin": GTIN,
                  "quantity": 3, "task": 41},
        )  # fmt: skip
        assert picked.status_code == 201, picked.text
        pick_rows, _ = gateway.outbox.read_batch(picked.json()["seq"] - 1, 1)
    event = wire.decode_event(rows[0][1])
    assert event.body == Verification(gtin=GTIN, quantity=3, weight=2.5, scale="pack-scale",
                                      order="SO-1")  # fmt: skip
    assert wire.decode_event(pick_rows[0][1]).body == Movement(
        from_location="A-1", to_location="STAGE", gtin=GTIN, quantity=3, task=41
    )
