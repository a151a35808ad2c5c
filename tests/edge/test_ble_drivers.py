"""The BLE scale and scanner drivers against simulated peripherals on the virtual link.

The drivers are the production code, unchanged: they use bleak's public BleakScanner and
BleakClient, given ``VirtualBleLink``'s backend classes instead of BlueZ's.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import Callable

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from tests.support.drivers import EmitCollector, running
from warelink.edge.drivers.base import Backoff
from warelink.edge.drivers.ble import (
    BleScaleConfig,
    BleScaleDriver,
    BleScannerConfig,
    BleScannerDriver,
)
from warelink.protocol.ble_gatt import WeightMeasurement, WeightUnit, encode_weight_measurement
from warelink.protocol.messages import (
    DeviceState,
    DeviceStatus,
    Receipt,
    Scan,
    TrafficClass,
    WeightReading,
)
from warelink.sim.ble_devices import SimulatedBleScale, SimulatedBleScanner
from warelink.sim.ble_link import VirtualBleLink

SCALE = "C0:FF:EE:00:01:01"
SCANNER = "C0:FF:EE:00:01:02"
TODAY = dt.date(2026, 3, 14)
WAIT_S = 5.0


def _fast_backoff() -> Backoff:
    return Backoff(initial=0.02, cap=0.1)


def _scale_config() -> BleScaleConfig:
    return BleScaleConfig(
        kind="ble_scale",
        id="dock-1-ble-scale",
        address=SCALE.lower(),
        name="WS-DOCK1",
        scan_timeout_s=0.3,
        connect_timeout_s=2.0,
    )


def _scanner_config(purpose: str = "receive") -> BleScannerConfig:
    return BleScannerConfig.model_validate(
        {
            "kind": "ble_scanner",
            "id": "dock-1-ble-scanner",
            "address": SCANNER,
            "purpose": purpose,
            "location": "DOCK-1" if purpose == "receive" else None,
            "scan_timeout_s": 0.3,
            "connect_timeout_s": 2.0,
        }
    )


async def _wait_until(predicate: Callable[[], bool]) -> None:
    """For state the driver does not announce (its retry count): checked every 10 ms."""
    async with asyncio.timeout(WAIT_S):
        while not predicate():
            await asyncio.sleep(0.01)


# ------------------------------------------------------------------------ scale


async def test_weight_placed_is_one_ledger_reading() -> None:
    link = VirtualBleLink()
    events = EmitCollector()
    driver = BleScaleDriver(_scale_config(), events, backend=link, backoff=_fast_backoff())
    async with (
        SimulatedBleScale(link, SCALE, rng=random.Random(11), settle_s=0.05) as scale,
        running(driver),
    ):
        await events.wait_for(lambda: DeviceState.ONLINE in events.states())
        await scale.place(23.45)
        await events.wait_for(lambda: bool(events.bodies(WeightReading)))
        assert events.bodies(WeightReading, TrafficClass.LEDGER) == [
            WeightReading(weight=23.45, unit="kg", stable=True)
        ]
        # The scale resends the same measurement (as after a reconnect): not a new load.
        scale.send_raw(encode_weight_measurement(WeightMeasurement.of(23.45)))
        await scale.remove()
        await events.wait_for(lambda: len(events.bodies(WeightReading)) == 2)
        assert events.bodies(WeightReading, TrafficClass.TELEMETRY) == [
            WeightReading(weight=0.0, unit="kg", stable=True)
        ]
        # The same load placed again after the pan was emptied counts again.
        await scale.place(23.45)
        await events.wait_for(lambda: len(events.bodies(WeightReading, TrafficClass.LEDGER)) == 2)
    assert [device for device, _, _ in events.events] == [driver.device_id] * len(events.events)
    assert events.states() == [DeviceState.ONLINE]


async def test_imperial_scale_keeps_pounds() -> None:
    link = VirtualBleLink()
    events = EmitCollector()
    driver = BleScaleDriver(_scale_config(), events, backend=link, backoff=_fast_backoff())
    async with (
        SimulatedBleScale(link, SCALE, unit=WeightUnit.LB, timestamps=True, settle_s=0.01) as scale,
        running(driver),
    ):
        await events.wait_for(lambda: DeviceState.ONLINE in events.states())
        await scale.place(51.7)
        await events.wait_for(lambda: bool(events.bodies(WeightReading)))
        assert events.bodies(WeightReading, TrafficClass.LEDGER) == [
            WeightReading(weight=51.7, unit="lb", stable=True)
        ]


async def test_garbage_and_unsuccessful_measurements_are_dropped_and_logged_once() -> None:
    link = VirtualBleLink()
    events = EmitCollector()
    driver = BleScaleDriver(_scale_config(), events, backend=link, backoff=_fast_backoff())
    with capture_logs() as logs:
        async with (
            SimulatedBleScale(link, SCALE, settle_s=0.01) as scale,
            running(driver),
        ):
            await events.wait_for(lambda: DeviceState.ONLINE in events.states())
            scale.send_raw(b"\x00", b"\x02\x10", bytes.fromhex("00 ff ff"))
            await scale.place(8.0)
            await events.wait_for(lambda: bool(events.bodies(WeightReading)))
    assert events.bodies(WeightReading) == [WeightReading(weight=8.0, unit="kg", stable=True)]
    unusable = [e for e in logs if e["event"] == "BLE scale sent data that is not usable"]
    assert len(unusable) == 1 and unusable[0]["count"] == 2
    assert any(e["event"] == "BLE scale reports an unsuccessful measurement" for e in logs)


async def test_scale_out_of_range_is_offline_once_then_back_online() -> None:
    link = VirtualBleLink()
    events = EmitCollector()
    backoff = _fast_backoff()
    driver = BleScaleDriver(_scale_config(), events, backend=link, backoff=backoff)
    async with (
        SimulatedBleScale(link, SCALE, settle_s=0.01) as scale,
        running(driver),
    ):
        await events.wait_for(lambda: DeviceState.ONLINE in events.states())
        await scale.go_out_of_range()
        await events.wait_for(lambda: events.states()[-1] == DeviceState.OFFLINE)
        await _wait_until(lambda: backoff.attempts >= 3)  # several scans found nothing
        assert events.states() == [DeviceState.ONLINE, DeviceState.OFFLINE]
        offline = events.bodies(DeviceStatus)[-1]
        assert offline.detail == "link lost"

        await scale.come_back()
        await events.wait_for(lambda: events.states()[-1] == DeviceState.ONLINE)
        await scale.place(12.0)
        await events.wait_for(lambda: bool(events.bodies(WeightReading)))
        assert events.bodies(WeightReading, TrafficClass.LEDGER) == [
            WeightReading(weight=12.0, unit="kg", stable=True)
        ]
    assert events.states() == [DeviceState.ONLINE, DeviceState.OFFLINE, DeviceState.ONLINE]


async def test_scale_absent_from_the_start_is_offline_once() -> None:
    link = VirtualBleLink()
    events = EmitCollector()
    backoff = _fast_backoff()
    driver = BleScaleDriver(_scale_config(), events, backend=link, backoff=backoff)
    async with running(driver):
        await _wait_until(lambda: backoff.attempts >= 2)
    assert events.states() == [DeviceState.OFFLINE]
    assert "out of range" in events.bodies(DeviceStatus)[0].detail


# ---------------------------------------------------------------------- scanner


async def test_receiving_scan_is_a_receipt() -> None:
    link = VirtualBleLink()
    events = EmitCollector()
    driver = BleScannerDriver(_scanner_config(), events, backend=link, backoff=_fast_backoff())
    async with SimulatedBleScanner(link, SCANNER, seed=5) as scanner, running(driver):
        await events.wait_for(lambda: DeviceState.ONLINE in events.states())
        label = await scanner.scan_receipt(today=TODAY)
        await events.wait_for(lambda: bool(events.bodies(Receipt)))
    [(device, cls, receipt)] = [e for e in events.events if isinstance(e[2], Receipt)]
    assert (device, cls) == ("dock-1-ble-scanner", TrafficClass.LEDGER)
    assert receipt == Receipt(
        location="DOCK-1",
        gtin=label.gtin,
        quantity=label.count,
        lot=label.lot,
        expiry=label.expiry,
        sscc=label.sscc,
    )


async def test_scan_purpose_gives_scans_and_bad_scans_are_logged() -> None:
    link = VirtualBleLink()
    events = EmitCollector()
    driver = BleScannerDriver(
        _scanner_config("scan"), events, backend=link, backoff=_fast_backoff()
    )
    with capture_logs() as logs:
        async with SimulatedBleScanner(link, SCANNER, seed=6) as scanner, running(driver):
            await events.wait_for(lambda: DeviceState.ONLINE in events.states())
            scanner.send_raw(b"\xff\xfe garbage\r")
            text = await scanner.scan({"01": "09506000134352", "10": "LOT7"})
            await events.wait_for(lambda: bool(events.bodies(Scan)))
    [scan] = events.bodies(Scan, TrafficClass.LEDGER)
    assert scan == Scan(
        raw=text, symbology="gs1-128", elements={"01": "09506000134352", "10": "LOT7"}
    )
    assert not events.bodies(Receipt)
    assert [
        e["count"] for e in logs if e["event"] == "BLE scanner sent data that is not usable"
    ] == [1]


async def test_scanner_out_of_range_then_back_delivers_scans_again() -> None:
    link = VirtualBleLink()
    events = EmitCollector()
    backoff = _fast_backoff()
    driver = BleScannerDriver(_scanner_config(), events, backend=link, backoff=backoff)
    async with SimulatedBleScanner(link, SCANNER, seed=8) as scanner, running(driver):
        await events.wait_for(lambda: DeviceState.ONLINE in events.states())
        first = await scanner.scan_receipt(today=TODAY)
        await events.wait_for(lambda: len(events.bodies(Receipt)) == 1)

        await scanner.go_out_of_range()
        await events.wait_for(lambda: events.states()[-1] == DeviceState.OFFLINE)
        await _wait_until(lambda: backoff.attempts >= 3)
        second = await scanner.scan_receipt(today=TODAY)  # kept in the scanner meanwhile
        assert events.states() == [DeviceState.ONLINE, DeviceState.OFFLINE]

        await scanner.come_back()
        await events.wait_for(lambda: len(events.bodies(Receipt)) == 2)
        third = await scanner.scan_receipt(today=TODAY)
        await events.wait_for(lambda: len(events.bodies(Receipt)) == 3)
    assert [r.sscc for r in events.bodies(Receipt)] == [first.sscc, second.sscc, third.sscc]
    assert events.states() == [DeviceState.ONLINE, DeviceState.OFFLINE, DeviceState.ONLINE]


async def test_two_drivers_share_one_adapter() -> None:
    link = VirtualBleLink()
    events = EmitCollector()
    scale_driver = BleScaleDriver(_scale_config(), events, backend=link, backoff=_fast_backoff())
    scanner_driver = BleScannerDriver(
        _scanner_config(), events, backend=link, backoff=_fast_backoff()
    )
    async with (
        SimulatedBleScale(link, SCALE, settle_s=0.01) as scale,
        SimulatedBleScanner(link, SCANNER, seed=9) as scanner,
        running(scale_driver),
        running(scanner_driver),
    ):
        await events.wait_for(lambda: events.states().count(DeviceState.ONLINE) == 2)
        await scale.place(64.05)
        label = await scanner.scan_receipt(today=TODAY)
        await events.wait_for(
            lambda: bool(events.bodies(WeightReading)) and bool(events.bodies(Receipt))
        )
    assert events.bodies(WeightReading)[0].weight == 64.05
    assert events.bodies(Receipt)[0].sscc == label.sscc


# ----------------------------------------------------------------------- config


def test_config_validation() -> None:
    assert _scale_config().address == SCALE
    with pytest.raises(ValidationError, match="Bluetooth address"):
        BleScaleConfig(kind="ble_scale", id="s", address="not-an-address")
    with pytest.raises(ValidationError, match="needs a location"):
        BleScannerConfig(kind="ble_scanner", id="s", address=SCANNER, purpose="receive")
    mac_uuid = "0B4C5E2A-1F0D-4C3B-9A8E-7D6C5B4A3F21"
    assert BleScannerConfig(kind="ble_scanner", id="s", address=mac_uuid).purpose == "scan"
