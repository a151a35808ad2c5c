"""BLE across processes: the gateway's adapter opened as a real HCI transport.

The peripherals and a virtual controller live in a simulator (``warelink sim run``, or
``VirtualBleLink.serve_hci`` here); the drivers run over ``HciBleAdapter``, a bumble host
that reaches that controller through a socket, as the demo's gateway process does.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.support.drivers import EmitCollector, running
from tests.support.services import free_port
from tests.support.sites import site_config, write_site_config
from warelink.edge.config import ConfigError, load_site_config
from warelink.edge.drivers.base import Backoff
from warelink.edge.drivers.ble import (
    BleScaleConfig,
    BleScaleDriver,
    BleScannerConfig,
    BleScannerDriver,
    hci_backend,
)
from warelink.edge.drivers.ble_bumble import HciBleAdapter
from warelink.protocol.messages import DeviceState, Receipt, TrafficClass, WeightReading
from warelink.sim.ble_devices import SimulatedBleScale
from warelink.sim.ble_link import VirtualBleLink

SCALE = "C0:FF:EE:00:03:01"
SCANNER = "C0:FF:EE:00:03:02"
WAIT_S = 30.0  # a simulator process starts in a few seconds


async def _until(predicate: Callable[[], bool], timeout: float = WAIT_S) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


def _ble_site(directory: Path, hci_transport: str) -> Path:
    return write_site_config(
        directory,
        site="ble-site",
        gateway="gw-ble",
        ble={"hci_transport": hci_transport},
        devices=[
            {"id": "dock-3-ble-scale", "kind": "ble_scale", "address": SCALE,
             "location": "DOCK-3", "scan_timeout_s": 1.0},
            {"id": "dock-3-ble-scanner", "kind": "ble_scanner", "address": SCANNER,
             "purpose": "receive", "location": "DOCK-3", "scan_timeout_s": 1.0},
        ],
    )  # fmt: skip


@asynccontextmanager
async def sim_process(config: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """``warelink sim run`` for ``config``, stopped as the demo stops it (SIGTERM)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "warelink.edge.cli", "sim", "run", "--config", str(config),
        "--interval", "0.3", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), 20)
        text = output.decode()
        assert process.returncode == 0, text[-3000:]
        assert "Traceback" not in text and "[error" not in text, text[-3000:]


async def test_drivers_in_this_process_reach_peripherals_in_a_simulator_process(
    tmp_path: Path,
) -> None:
    path = _ble_site(tmp_path, f"tcp-client:127.0.0.1:{free_port()}")
    config = load_site_config(path)
    adapter = hci_backend(config.gateway.ble)
    assert isinstance(adapter, HciBleAdapter)
    scale_config, scanner_config = config.devices
    assert isinstance(scale_config, BleScaleConfig)
    assert isinstance(scanner_config, BleScannerConfig)
    events = EmitCollector()
    backoff = Backoff(initial=0.1, cap=0.5)
    scale = BleScaleDriver(scale_config, events, backend=adapter, backoff=backoff)
    scanner = BleScannerDriver(
        scanner_config, events, backend=adapter, backoff=Backoff(initial=0.1, cap=0.5)
    )

    def states(device: str) -> list[DeviceState]:
        return [
            body.state for who, _, body in events.events if who == device and hasattr(body, "state")
        ]

    def receipts() -> list[Receipt]:
        return events.bodies(Receipt, TrafficClass.LEDGER)

    try:
        async with running(scale), running(scanner):
            async with sim_process(path):
                # The simulator's dock: a parcel weighed, its label scanned, taken off.
                await _until(lambda: len(receipts()) >= 2)
                await _until(lambda: bool(events.bodies(WeightReading, TrafficClass.LEDGER)))
                assert {r.location for r in receipts()} == {"DOCK-3"}
                weights = events.bodies(WeightReading, TrafficClass.LEDGER)
                assert all(
                    w.stable and w.unit == "kg" and 80 <= w.weight <= 327.67 for w in weights
                )
                assert states(scale.device_id)[-1] == DeviceState.ONLINE
                assert states(scanner.device_id)[-1] == DeviceState.ONLINE

            # The simulator stopped: its controller is gone, both devices are offline, once.
            await _until(lambda: states(scanner.device_id)[-1] == DeviceState.OFFLINE, 10)
            await _until(lambda: states(scale.device_id)[-1] == DeviceState.OFFLINE, 10)
            before, changes = len(receipts()), len(events.events)
            await asyncio.sleep(1.5)  # retries fail (nothing listens): no new state, no error
            assert len(events.events) == changes
            async with sim_process(path):  # and back: the adapter opens the transport again
                await _until(lambda: len(receipts()) > before)
                assert states(scanner.device_id)[-1] == DeviceState.ONLINE
    finally:
        await adapter.aclose()


async def test_a_gateway_that_vanished_leaves_no_link_behind(tmp_path: Path) -> None:
    """A gateway killed while connected never disconnects; the next one must still find
    the scale advertising (the served controller drops the old host's links)."""
    link = VirtualBleLink()
    transport = f"unix:{tmp_path / 'hci.sock'}"
    scale_config = BleScaleConfig(
        kind="ble_scale", id="s", address=SCALE, scan_timeout_s=0.5, connect_timeout_s=2.0
    )
    async with (
        SimulatedBleScale(link, SCALE, settle_s=0.01) as scale,
        link.serve_hci(transport) as server,
    ):
        first = HciBleAdapter(transport)
        events = EmitCollector()
        slow = Backoff(initial=30.0, cap=30.0)  # it must not come back by itself
        async with running(BleScaleDriver(scale_config, events, backend=first, backoff=slow)):
            await _until(lambda: DeviceState.ONLINE in events.states(), 5)
            await first.aclose()  # the socket closes, no HCI Disconnect was sent
            await _until(lambda: not scale.connected, 5)

        second = HciBleAdapter(transport)
        events = EmitCollector()
        fast = Backoff(initial=0.05, cap=0.2)
        try:
            async with running(BleScaleDriver(scale_config, events, backend=second, backoff=fast)):
                await _until(lambda: DeviceState.ONLINE in events.states(), 5)
                await scale.place(42.5)
                await _until(lambda: bool(events.bodies(WeightReading)), 5)
        finally:
            await second.aclose()
        assert events.bodies(WeightReading) == [WeightReading(weight=42.5, unit="kg", stable=True)]
        assert server.hosts == 2


@pytest.mark.parametrize(
    ("transport", "message"),
    [
        ("tcp:127.0.0.1:7801", "is not an HCI transport; use one of: tcp-client:HOST:PORT"),
        ("tcp-client:127.0.0.1", "give it as tcp-client:HOST:PORT"),
        ("tcp-client:127.0.0.1:70000", "give it as tcp-client:HOST:PORT"),
        ("unix:", "give it as unix:PATH"),
        ("hci-socket:first", "give it as hci-socket:INDEX"),
    ],
)
def test_a_bad_hci_transport_is_refused_with_the_key(
    tmp_path: Path, transport: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=r"gateway\.ble\.hci_transport: Value error, ") as err:
        site_config(tmp_path, site="s", gateway="g", ble={"hci_transport": transport})
    assert message in str(err.value)


def test_without_hci_transport_the_system_adapter_is_used(tmp_path: Path) -> None:
    config = site_config(tmp_path, site="s", gateway="g")
    assert config.gateway.ble.hci_transport is None
    assert hci_backend(config.gateway.ble) is None  # bleak's own (BlueZ) backend
    usb = site_config(tmp_path, site="s", gateway="g", ble={"hci_transport": " usb:0 "})
    assert usb.gateway.ble.hci_transport == "usb:0"
