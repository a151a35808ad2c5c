"""One gateway: its outbox, its device drivers and its uplink, in one TaskGroup."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog

from warelink.edge.config import DeviceConfig, LineScannerConfig, MtSicsScaleConfig, SiteConfig
from warelink.edge.drivers.base import Driver, Emit
from warelink.edge.outbox import Outbox
from warelink.edge.settings import EdgeSettings
from warelink.edge.uplink import Uplink

log = structlog.get_logger(__name__)

OUTBOX_FILE = "outbox.sqlite3"


def make_driver(device: DeviceConfig, emit: Emit) -> Driver:
    # Imported here so a gateway loads only the drivers its site declares.
    if isinstance(device, MtSicsScaleConfig):
        from warelink.edge.drivers.mtsics_scale import MtSicsScaleDriver

        return MtSicsScaleDriver(device, emit)
    if isinstance(device, LineScannerConfig):
        from warelink.edge.drivers.line_scanner import LineScannerDriver

        return LineScannerDriver(device, emit)
    raise AssertionError(f"no driver for {device!r}")


class Gateway:
    """Runs until cancelled. ``started`` is set once the outbox is open."""

    def __init__(self, config: SiteConfig, settings: EdgeSettings) -> None:
        self.config = config
        self.settings = settings
        self.outbox = Outbox(
            config.gateway.data_dir / OUTBOX_FILE,
            config.gateway.id,
            synchronous=config.gateway.synchronous,
        )
        self.uplink = Uplink(
            config.gateway, settings, self.outbox, devices=[d.id for d in config.devices]
        )
        self.drivers = [make_driver(device, self.outbox.add) for device in config.devices]

    async def run(self) -> None:
        gw = self.config.gateway
        async with self.outbox:
            log.info(
                "gateway.started",
                gateway=gw.id,
                site=gw.site,
                devices=len(self.drivers),
                last_seq=self.outbox.last_seq,
            )
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.uplink.run(), name=f"uplink-{gw.id}")
                for driver in self.drivers:
                    tasks.create_task(driver.run(), name=f"driver-{driver.device_id}")


@contextlib.asynccontextmanager
async def running(gateway: Gateway) -> AsyncIterator[Gateway]:
    """Run a gateway in the background of a block (for tests and the demo)."""
    task = asyncio.create_task(gateway.run(), name=f"gateway-{gateway.config.gateway.id}")
    try:
        yield gateway
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
