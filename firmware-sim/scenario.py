"""A whole site's floor from one seed: pallets arrive at the docks, are weighed, scanned.

Every device the site config declares gets its simulator on the port the config names,
so the gateway under test opens exactly what it would open on real hardware. At each dock
(a receiving scanner, and the scale at the same location or the site's first scale) a
pallet is put on the scale, settles, its label is scanned, and it is taken off.

BLE devices (a Weight Scale service scale, a Nordic-UART scanner) are bumble peripherals
on one virtual link; the gateway, another process, reaches them through a virtual
controller on that link served where ``[gateway.ble] hci_transport`` points. A receiving
BLE scanner makes a dock like a serial one, with the BLE scale at its location.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from warelink.edge.config import SiteConfig
from warelink.edge.device_config import LineScannerConfig, MtSicsScaleConfig
from warelink.edge.drivers.ble import BleScaleConfig, BleScannerConfig
from warelink.edge.drivers.llrp_reader import LlrpReaderConfig
from warelink.edge.drivers.modbus import ModbusDeviceConfig, ModbusScaleConfig
from warelink.edge.drivers.vda5050_agv import Vda5050AgvConfig
from warelink.edge.drivers.zpl_printer import ZplPrinterConfig
from warelink.sim.agv import SimulatedAgv
from warelink.sim.llrp_reader import SimulatedLlrpReader, make_sgtin_epc
from warelink.sim.modbus_devices import (
    AgvSlave,
    ConveyorSlave,
    ModbusRtuLine,
    ModbusSlave,
    ModbusTcpSlaves,
    ScaleSlave,
)
from warelink.sim.scale import SimulatedScale
from warelink.sim.scanner import ReceiptLabel, SimulatedLineScanner
from warelink.sim.zpl_printer import SimulatedZplPrinter

if TYPE_CHECKING:  # bumble is imported only by a site that declares BLE devices
    from warelink.sim.ble_devices import SimulatedBleScale, SimulatedBleScanner

log = structlog.get_logger(__name__)


@dataclass
class Dock:
    location: str
    scanner: SimulatedLineScanner | SimulatedBleScanner
    scale: SimulatedScale | SimulatedBleScale | None


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
        self.readers: dict[str, SimulatedLlrpReader] = {}
        self.agvs: dict[str, SimulatedAgv] = {}
        self.modbus_scales: dict[str, ScaleSlave] = {}
        self.ble_scales: dict[str, SimulatedBleScale] = {}
        self.ble_scanners: dict[str, SimulatedBleScanner] = {}
        self._loaded: set[str] = set()
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
                elif isinstance(device, LlrpReaderConfig):
                    reader = SimulatedLlrpReader(
                        seed=self.rng.randrange(2**32), host=device.host, port=device.port,
                        antennas=sorted(device.antennas),
                    )  # fmt: skip
                    self.readers[device.id] = await stack.enter_async_context(reader)
                elif isinstance(device, Vda5050AgvConfig):
                    agv = SimulatedAgv.for_config(device, random.Random(self.rng.random()))
                    self.agvs[device.id] = await stack.enter_async_context(agv)
            await self._modbus(stack)
            await self._ble(stack)
            self.docks = self._docks()
            log.info(
                "sim.devices_up",
                site=self.config.gateway.site,
                scales=len(self.scales),
                scanners=len(self.scanners),
                printers=len(self.printers),
                ble=len(self.ble_scales) + len(self.ble_scanners),
                docks=len(self.docks),
            )
            yield self

    async def _modbus(self, stack: contextlib.AsyncExitStack) -> None:
        """One simulated endpoint per Modbus bus: a TCP server or an RS-485 line on a pty."""
        buses: dict[tuple[str, ...], list[ModbusSlave]] = {}
        for device in self.config.devices:
            if isinstance(device, ModbusScaleConfig):
                scale = ScaleSlave(device.unit_id, random.Random(self.rng.random()))
                self.modbus_scales[device.id] = scale
                slave: ModbusSlave = scale
            elif isinstance(device, ModbusDeviceConfig):
                maker = ConveyorSlave if device.role == "conveyor" else AgvSlave
                slave = maker(device.unit_id, random.Random(self.rng.random()))
                if isinstance(slave, ConveyorSlave):
                    slave.holding[0] = 1  # the conveyor runs
            else:
                continue
            if device.transport == "tcp":
                key: tuple[str, ...] = ("tcp", device.host or "127.0.0.1", str(device.port))
            else:
                key = ("rtu", str(device.serial_port))
            buses.setdefault(key, []).append(slave)
        for key, slaves in buses.items():
            if key[0] == "tcp":
                await stack.enter_async_context(ModbusTcpSlaves(slaves, key[1], int(key[2])))
            else:
                line = ModbusRtuLine(key[1], slaves, random.Random(self.rng.random()))
                await stack.enter_async_context(line)

    async def _ble(self, stack: contextlib.AsyncExitStack) -> None:
        """The BLE peripherals on one virtual link, and the gateway's controller on it,
        served for the gateway process where its ``hci_transport`` points."""
        declared = [
            d for d in self.config.devices if isinstance(d, BleScaleConfig | BleScannerConfig)
        ]
        if not declared:
            return
        transport = self.config.gateway.ble.hci_transport
        if transport is None:
            log.warning(
                "sim.ble_not_simulated",
                reason="no [gateway.ble] hci_transport to serve the gateway's adapter on",
                devices=[d.id for d in declared],
            )
            return
        from warelink.sim.ble_devices import SimulatedBleScale, SimulatedBleScanner
        from warelink.sim.ble_link import VirtualBleLink

        link = VirtualBleLink()
        for device in declared:
            if isinstance(device, BleScaleConfig):
                scale = SimulatedBleScale(
                    link,
                    device.address,
                    name=device.name or "WS-SIM",
                    rng=random.Random(self.rng.random()),
                    settle_s=0.5,
                )
                self.ble_scales[device.id] = await stack.enter_async_context(scale)
            else:
                scanner = SimulatedBleScanner(
                    link, device.address, name=device.name or "BS-SIM",
                    seed=self.rng.randrange(2**32),
                )  # fmt: skip
                self.ble_scanners[device.id] = await stack.enter_async_context(scanner)
        await stack.enter_async_context(link.serve_hci(transport))

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
            elif (
                isinstance(device, BleScannerConfig)
                and device.purpose == "receive"
                and device.id in self.ble_scanners
            ):
                assert device.location is not None
                ble_scale = next(
                    (
                        self.ble_scales[d.id]
                        for d in self.config.devices
                        if isinstance(d, BleScaleConfig)
                        and d.location == device.location
                        and d.id in self.ble_scales
                    ),
                    None,
                )
                docks.append(Dock(device.location, self.ble_scanners[device.id], ble_scale))
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
            most = 950.0 if isinstance(dock.scale, SimulatedScale) else dock.scale.capacity
            await _place(dock.scale, round(self.rng.uniform(80.0, most), 1))
            await asyncio.sleep(2.0)  # settles within 1.5 s; the gateway polls meanwhile
        label = await dock.scanner.scan_receipt()
        self.truth.labels.append((dock.location, label))
        if dock.scale is not None:
            await asyncio.sleep(0.5)
            await _place(dock.scale, 0.0)
        for reader in self.readers.values():  # a tagged case passes the dock's RFID portal
            await reader.walk_through(make_sgtin_epc(self.rng), [1, 2], dwell_s=1.0)
        for name, floor_scale in self.modbus_scales.items():  # and something is weighed inside
            if name in self._loaded:
                floor_scale.remove()
                self._loaded.discard(name)
            else:
                floor_scale.place(round(self.rng.uniform(5.0, 60.0), 1))
                self._loaded.add(name)
        return label


async def _place(scale: SimulatedScale | SimulatedBleScale, load: float) -> None:
    """Put ``load`` on a serial scale (it settles by itself) or a BLE one (it settles,
    then indicates)."""
    if isinstance(scale, SimulatedScale):
        scale.place(load)
    else:
        await scale.place(load)
