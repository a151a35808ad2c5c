"""`warelink demo` brings every simulated device kind up on two sites, without errors."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import httpx
import psycopg

from tests.conftest import MQTT_HOST, MQTT_PORT
from tests.support.services import free_port


async def test_the_demo_runs_two_sites_with_live_data_and_no_error(
    db_url: str, mqtt_prefix: str, tmp_path: Path
) -> None:
    http = f"127.0.0.1:{free_port()}"
    env = os.environ | {
        "WARELINK_DB_URL": db_url,
        "WARELINK_MQTT_URL": f"mqtt://{MQTT_HOST}:{MQTT_PORT}",
        "WARELINK_MQTT_PREFIX": mqtt_prefix,
        "WARELINK_HTTP": http,
        "WARELINK_BOOTSTRAP_API_KEY": "",  # unset: the demo makes its own and keeps it
    }
    demo = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "warelink.edge.cli", "demo", "--dir", str(tmp_path / "demo"),
        "--duration", "45", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output = asyncio.ensure_future(demo.communicate())
    await asyncio.sleep(40)
    key = (tmp_path / "demo" / "admin.key").read_text().strip()
    headers = {"X-API-Key": key}
    async with httpx.AsyncClient(base_url=f"http://{http}", timeout=10, headers=headers) as client:
        gateways = (await client.get("/api/v1/gateways")).json()
        stock = (await client.get("/api/v1/sites/north/stock")).json()
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        ble = await (
            await conn.execute(
                "SELECT gateway, device, type FROM events"
                " WHERE device LIKE 'dock-3-ble-%' AND cls = 1 GROUP BY 1, 2, 3"
            )
        ).fetchall()
        unknown = await (
            await conn.execute("SELECT count(*) FROM exceptions WHERE kind = 'unknown_sku'")
        ).fetchone()
        floor = await (
            await conn.execute("SELECT count(*) FROM locations WHERE x IS NOT NULL")
        ).fetchone()
    out, _ = await asyncio.wait_for(output, 60)
    log = out.decode()
    assert demo.returncode == 0, log[-3000:]
    assert sorted(g["id"] for g in gateways) == ["gw-north", "gw-south"]
    assert all(g["online"] and g["events_received"] > 50 for g in gateways), gateways
    # Every device kind's events are within the wire's bounds: nothing quarantined.
    assert all(g["quarantined"] == 0 and g["quarantine_overflow"] == 0 for g in gateways)
    assert "_quarantined" not in log and "uplink.bad_message" not in log
    assert stock["lines"], "no stock at the north site"
    assert f"/#key={key}" in log
    # The demo imports its catalog and floor plan: scanned GTINs are known SKUs.
    assert (
        unknown == (0,) and floor is not None and floor[0] >= 14
    )  # the dashboard link signs the browser in
    assert "demo clerk: the hub did not answer" not in log
    # BLE devices cross processes too: the simulator hosts them, the gateway reaches them
    # over an HCI transport, and their ledger events (weights, receipts) reach the hub.
    assert sorted(ble) == [
        (gateway, device, kind)
        for gateway in ("gw-north", "gw-south")
        for device, kind in (("dock-3-ble-scale", "weight"), ("dock-3-ble-scanner", "receipt"))
    ]
    problems = [line for line in log.splitlines()
                if "[error" in line or "[critical" in line or "Traceback" in line
                or "Unhandled exception" in line]  # fmt: skip
    assert problems == [], "\n".join(problems[:20])
