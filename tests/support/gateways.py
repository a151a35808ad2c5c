"""Gateways in process on the machine's broker, and a hub's view of them catching up."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.support.hub import HubProcess
from tests.support.services import MQTT_HOST, MQTT_PORT
from warelink.edge.gateway import Gateway
from warelink.edge.settings import EdgeSettings

GTINS = ["09506000134352", "00012345600012", "04006381333931"]


def edge_settings(prefix: str) -> EdgeSettings:
    return EdgeSettings(mqtt_url=f"mqtt://{MQTT_HOST}:{MQTT_PORT}", mqtt_prefix=prefix)  # type: ignore[arg-type]


async def wait_caught_up(
    hub: HubProcess, gateways: list[Gateway], *, timeout: float
) -> list[dict[str, Any]]:
    """The hub's gateway rows once it has acked every gateway's last seq, and they know."""
    async with asyncio.timeout(timeout):
        while True:
            rows = {row["id"]: row for row in await hub.get("/api/v1/gateways")}
            if all(
                g.config.gateway.id in rows
                and rows[g.config.gateway.id]["acked_seq"] == g.outbox.last_seq
                and g.outbox.acked_seq() == g.outbox.last_seq
                for g in gateways
            ):
                return list(rows.values())
            await asyncio.sleep(0.2)
