"""A whole site's floor from one seed: pallets arrive at the docks, are weighed, scanned.

Every device the site config declares gets its simulator on the port the config names,
so the gateway under test opens exactly what it would open on real hardware. At each dock
(a receiving scanner, and the scale at the same location or the site's first scale) a
pallet is put on the scale, settles, its label is scanned, and it is taken off.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import structlog

from warelink.edge.config import SiteConfig
from warelink.edge.device_config import LineScannerConfig, MtSicsScaleConfig
from warelink.edge.drivers.zpl_printer import ZplPrinterConfig
from warelink.sim.scale import SimulatedScale
from warelink.sim.scanner import ReceiptLabel, SimulatedLineScanner
from warelink.sim.zpl_printer import SimulatedZplPrinter

log = structlog.get_logger(__name__)


@dataclass
class Dock:
    location: str
    scanner: SimulatedLineScanner
    scale: SimulatedScale | None


@dataclass
class ScenarioLog:
    """What the scenario did: its own truth, to compare the ledger against."""

    labels: list[tuple[str, ReceiptLabel]] = field(default_factory=list)  # (location, label)


class DockScenario:
    def __init__(
        self,
        config: SiteConfig,
        *,
        seed: int = 1,
        interval_s: float = 3.0,
        garbage_rate: float = 0.0,
    ) -> None:
        self.config = config
        self.rng = random.Random(seed)
        self.interval_s = interval_s
        self.garbage_rate = garbage_rate
        self.truth = ScenarioLog()
        self.scales: dict[str, SimulatedScale] = {}
        self.scanners: dict[str, SimulatedLineScanner] = {}
        self.printers: dict[str, SimulatedZplPrinter] = {}
        self.docks: list[Dock] = []

    async def run(self) -> None:
        """Simulate until cancelled."""
        async with self.devices():
            await self.arrivals()

    @contextlib.asynccontextmanager
    async def devices(self) -> AsyncIterator[DockScenario]:
        """Every declared device on its port; the ports vanish on exit."""
        async with contextlib.AsyncExitStack() as stack:
            for device in self.config.devices:
                if isinstance(device, MtSicsScaleConfig):
                    scale = SimulatedScale(
                        device.port,
                        random.Random(self.rng.random()),
                        serial=f"SIM{abs(hash(device.id)) % 10**7:07d}",
                        capacity=1500.0,
                        garbage_rate=self.garbage_rate,
                    )
                    self.scales[device.id] = await stack.enter_async_context(scale)
                elif isinstance(device, LineScannerConfig):
                    scanner = SimulatedLineScanner(device.port, seed=self.rng.randrange(2**32))
                    self.scanners[device.id] = await stack.enter_async_context(scanner)
                elif isinstance(device, ZplPrinterConfig):
                    printer = SimulatedZplPrinter(
                        random.Random(self.rng.random()), host=device.host, port=device.port
                    )
                    self.printers[device.id] = await stack.enter_async_context(printer)
            self.docks = self._docks()
            log.info(
                "sim.devices_up",
                site=self.config.gateway.site,
                scales=len(self.scales),
                scanners=len(self.scanners),
                printers=len(self.printers),
                docks=len(self.docks),
            )
            yield self

    def _docks(self) -> list[Dock]:
        scales = [d for d in self.config.devices if isinstance(d, MtSicsScaleConfig)]
        docks = []
        for device in self.config.devices:
            if isinstance(device, LineScannerConfig) and device.purpose == "receive":
                assert device.location is not None
                same_place = [s for s in scales if s.location == device.location]
                chosen = same_place or scales
                scale = self.scales[chosen[0].id] if chosen else None
                docks.append(Dock(device.location, self.scanners[device.id], scale))
        return docks

    async def arrivals(self, count: int | None = None) -> None:
        """Receive ``count`` pallets (forever if None), docks taking turns."""
        if not self.docks:
            log.warning("sim.no_docks", site=self.config.gateway.site)
            await asyncio.Event().wait()
        n = 0
        while count is None or n < count:
            await self.receive_pallet(self.docks[n % len(self.docks)])
            n += 1
            await asyncio.sleep(self.interval_s * self.rng.uniform(0.5, 1.5))

    async def receive_pallet(self, dock: Dock) -> ReceiptLabel:
        if dock.scale is not None:
            dock.scale.place(round(self.rng.uniform(80.0, 950.0), 1))
            await asyncio.sleep(2.0)  # settles within 1.5 s; the gateway polls meanwhile
        label = await dock.scanner.scan_receipt()
        self.truth.labels.append((dock.location, label))
        if dock.scale is not None:
            await asyncio.sleep(0.5)
            dock.scale.remove()
        return label
