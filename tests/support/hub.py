"""A real hub as a child process (``warelink hub serve``) that tests can kill and restart."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
from typing import Any

import httpx

from warelink.hub.settings import HubSettings


class HubProcess:
    def __init__(self, settings: HubSettings, *, log_path: str) -> None:
        self.settings = settings
        self.url = f"http://{settings.http}"
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None
        self.key = f"wlk_boot{secrets.token_hex(4)}_{secrets.token_urlsafe(16)}"  # admin
        self.headers = {"X-API-Key": self.key}

    def env(self) -> dict[str, str]:
        return os.environ | {
            "WARELINK_DB_URL": self.settings.db_url,
            "WARELINK_MQTT_URL": str(self.settings.mqtt_url),
            "WARELINK_MQTT_PREFIX": self.settings.mqtt_prefix,
            "WARELINK_HTTP": self.settings.http,
            "WARELINK_BOOTSTRAP_API_KEY": self.key,
        }

    async def start(self, *, timeout: float = 30) -> None:
        with open(self.log_path, "ab") as log:  # noqa: ASYNC230 - a local file, once
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "warelink.edge.cli", "hub", "serve",
                env=self.env(), stdout=log, stderr=log,
            )  # fmt: skip
        await self.wait_ready(timeout=timeout)

    async def wait_ready(self, *, timeout: float) -> None:
        async with asyncio.timeout(timeout), httpx.AsyncClient() as client:
            while True:
                assert self.process is not None
                if self.process.returncode is not None:
                    raise RuntimeError(f"hub exited ({self.process.returncode}): {self.tail()}")
                try:
                    response = await client.get(f"{self.url}/readyz", timeout=1)
                    if response.status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)

    async def kill(self) -> None:
        """SIGKILL: no goodbye, no flush; the broker publishes the hub's Will."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            async with asyncio.timeout(10):
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()

    def client(self) -> httpx.AsyncClient:
        """An HTTP client on the hub, as its bootstrap admin."""
        return httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=10)

    async def get(self, path: str) -> Any:
        async with self.client() as client:
            response = await client.get(path)
            response.raise_for_status()
            return response.json()

    def tail(self, lines: int = 40) -> str:
        with open(self.log_path, errors="replace") as log:
            return "".join(log.readlines()[-lines:])
