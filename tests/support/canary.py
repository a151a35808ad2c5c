"""A canary: a real gateway (in process, real outbox, real broker) whose handheld API a
task feeds with receipts, so a test can show that honest traffic keeps flowing while it
throws bad input at every entrance. The truth is what the handheld API answered 201 to.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

from tests.support.gateways import edge_settings
from tests.support.services import free_port
from tests.support.sites import site_config
from warelink.edge.gateway import Gateway, running

GTIN = "09506000134352"


@dataclass
class Canary:
    gateway: Gateway
    api: httpx.AsyncClient
    stored: list[int] = field(default_factory=list)  # seqs the handheld API stored
    # Seconds from a receipt's 201 to the hub's ack of it: the longest is the longest
    # time honest ingest stood still.
    latencies: list[float] = field(default_factory=list)
    _pending: dict[int, float] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.gateway.config.gateway.id

    async def feed(self, *, rate: float, stop: asyncio.Event) -> None:
        """Receipts at ``rate`` per second until ``stop``; never stops mid-request."""
        n = 0
        while not stop.is_set():
            n += 1
            body = {"location": "DOCK-1", "gtin": GTIN, "quantity": 1, "lot": "CANARY"}
            response = await self.api.post(
                "/api/v1/receive", json=body, headers={"Idempotency-Key": f"c-{n}"}
            )
            assert response.status_code == 201, response.text
            seq = response.json()["seq"]
            self.stored.append(seq)
            self._pending[seq] = time.monotonic()
            self._settle()
            await asyncio.sleep(1 / rate)

    def _settle(self) -> None:
        acked, now = self.gateway.uplink.acked, time.monotonic()
        for seq in [s for s in self._pending if s <= acked]:
            self.latencies.append(now - self._pending.pop(seq))

    async def watch(self) -> None:
        """Record ack latencies as acks come (every 50 ms)."""
        while True:
            self._settle()
            await asyncio.sleep(0.05)

    @property
    def longest_wait(self) -> float:
        """The longest a receipt waited for its ack, the unacked ones included."""
        now = time.monotonic()
        waiting = [now - at for at in self._pending.values()]
        return max([*self.latencies, *waiting], default=0.0)

    async def caught_up(self, *, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while self.gateway.uplink.acked < max(self.stored, default=0):
                await asyncio.sleep(0.1)
        self._settle()

    def assert_all_stored_once(self, db_url: str) -> None:
        """Stored at the hub = generated, each exactly once."""
        with psycopg.connect(db_url) as conn:
            rows = conn.execute(
                "SELECT seq FROM events WHERE gateway = %s AND type = 'receipt' ORDER BY seq",
                (self.id,),
            ).fetchall()
        assert [seq for (seq,) in rows] == sorted(self.stored)


async def handheld_ready(api: httpx.AsyncClient, *, timeout: float = 10) -> None:
    """Wait until a gateway's handheld API answers (it comes up with the gateway)."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                await api.get("/api/v1/status")
                return
            except httpx.TransportError:
                await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def canary(
    tmp_path: Path, mqtt_prefix: str, *, site: str = "site-canary", gateway: str = "gw-canary"
) -> AsyncIterator[Canary]:
    port = free_port()
    config = site_config(tmp_path, site=site, gateway=gateway, ack_timeout_s=2.0,
                         handheld_api=f"127.0.0.1:{port}")  # fmt: skip
    gw = Gateway(config, edge_settings(mqtt_prefix))
    async with (
        running(gw),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as api,
    ):
        await handheld_ready(api)
        bird = Canary(gw, api)
        watcher = asyncio.create_task(bird.watch(), name="canary-watch")
        try:
            yield bird
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
