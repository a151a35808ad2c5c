"""The simulated BLE scale and scanner, seen through bleak's public API.

bleak runs over ``VirtualBleLink``'s backend: advertising, connection, GATT discovery,
CCCD writes, indications and notifications all pass through bumble's host and virtual
controllers on an in-process link.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import Callable

import pytest
from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic

from warelink.protocol.ble_gatt import (
    NUS_SERVICE_UUID,
    NUS_TX_UUID,
    WEIGHT_MEASUREMENT_UUID,
    WEIGHT_SCALE_FEATURE_UUID,
    WEIGHT_SCALE_SERVICE_UUID,
    ScanFramer,
    WeightMeasurement,
    WeightUnit,
    decode_weight_measurement,
    decode_weight_scale_feature,
)
from warelink.protocol.gs1 import parse_scan
from warelink.sim.ble_devices import SimulatedBleScale, SimulatedBleScanner
from warelink.sim.ble_link import VirtualBleLink

SCALE = "C0:FF:EE:00:00:01"
SCANNER = "C0:FF:EE:00:00:02"
WAIT_S = 5.0


Callback = Callable[[BleakGATTCharacteristic, bytearray], None]


def _queue_callback(queue: asyncio.Queue[bytes]) -> tuple[asyncio.Queue[bytes], Callback]:
    def callback(_char: BleakGATTCharacteristic, data: bytearray) -> None:
        queue.put_nowait(bytes(data))

    return queue, callback


async def test_scanner_finds_devices_by_service_and_name() -> None:
    link = VirtualBleLink()
    async with (
        SimulatedBleScale(link, SCALE, name="WS-DOCK1"),
        SimulatedBleScanner(link, SCANNER, name="BS-DOCK1"),
    ):
        found = await BleakScanner.find_device_by_filter(
            lambda d, ad: ad.local_name == "WS-DOCK1",
            timeout=WAIT_S,
            service_uuids=[WEIGHT_SCALE_SERVICE_UUID],
            backend=link.scanner_backend,
        )
        assert found is not None
        assert found.address == SCALE
        nus = await BleakScanner.find_device_by_filter(
            lambda d, ad: NUS_SERVICE_UUID in ad.service_uuids,
            timeout=WAIT_S,
            backend=link.scanner_backend,
        )
        assert nus is not None and nus.address == SCANNER


async def test_scale_indicates_a_settled_weight() -> None:
    link = VirtualBleLink()
    async with (
        SimulatedBleScale(link, SCALE, rng=random.Random(7), settle_s=0.05) as scale,
        BleakClient(SCALE, backend=link.client_backend, timeout=WAIT_S) as client,
    ):
        feature = decode_weight_scale_feature(
            await client.read_gatt_char(WEIGHT_SCALE_FEATURE_UUID)
        )
        assert feature.weight_step_kg == 0.005
        char = client.services.get_characteristic(WEIGHT_MEASUREMENT_UUID)
        assert char is not None and "indicate" in char.properties
        queue, callback = _queue_callback(asyncio.Queue())
        await client.start_notify(WEIGHT_MEASUREMENT_UUID, callback)
        sent = await scale.place(18.235)
        async with asyncio.timeout(WAIT_S):
            got = decode_weight_measurement(await queue.get())
        assert got == sent == WeightMeasurement.of(18.235)
        assert got.weight == 18.235
        assert scale.display == 18.235


async def test_imperial_scale_with_timestamps() -> None:
    link = VirtualBleLink()
    async with (
        SimulatedBleScale(link, SCALE, unit=WeightUnit.LB, timestamps=True, settle_s=0.01) as scale,
        BleakClient(SCALE, backend=link.client_backend, timeout=WAIT_S) as client,
    ):
        queue, callback = _queue_callback(asyncio.Queue())
        await client.start_notify(WEIGHT_MEASUREMENT_UUID, callback)
        await scale.place(40.25)
        async with asyncio.timeout(WAIT_S):
            got = decode_weight_measurement(await queue.get())
        assert (got.unit, got.weight) == (WeightUnit.LB, 40.25)
        assert got.timestamp is not None
        when = got.timestamp.to_datetime()
        assert when is not None and abs(when - dt.datetime.now()) < dt.timedelta(minutes=1)


async def test_scanner_splits_a_scan_across_notifications() -> None:
    link = VirtualBleLink()
    async with (
        SimulatedBleScanner(link, SCANNER, seed=3) as scanner,
        BleakClient(SCANNER, backend=link.client_backend, timeout=WAIT_S) as client,
    ):
        chunks, callback = _queue_callback(asyncio.Queue())
        await client.start_notify(NUS_TX_UUID, callback)
        label = await scanner.scan_receipt(today=dt.date(2026, 3, 14))
        framer = ScanFramer()
        scans: list[object] = []
        count = 0
        async with asyncio.timeout(WAIT_S):
            while not scans:
                chunk = await chunks.get()
                assert len(chunk) <= 20
                count += 1
                scans += framer.feed(chunk)
        assert count > 1
        [text] = scans
        assert isinstance(text, str)
        scan = parse_scan(text, reference_year=2026)
        assert (scan.sscc, scan.content_gtin, scan.count) == (
            label.sscc,
            label.gtin,
            label.count,
        )


async def test_out_of_range_and_back_delivers_what_was_measured_meanwhile() -> None:
    link = VirtualBleLink()
    async with SimulatedBleScale(link, SCALE, settle_s=0.01) as scale:
        lost = asyncio.Event()
        client = BleakClient(
            SCALE,
            disconnected_callback=lambda _c: lost.set(),
            backend=link.client_backend,
            timeout=WAIT_S,
        )
        await client.connect()
        queue, callback = _queue_callback(asyncio.Queue())
        await client.start_notify(WEIGHT_MEASUREMENT_UUID, callback)

        await scale.go_out_of_range()
        async with asyncio.timeout(WAIT_S):
            await lost.wait()
        assert not client.is_connected
        assert (
            await BleakScanner.find_device_by_address(
                SCALE, timeout=0.2, backend=link.scanner_backend
            )
            is None
        )
        with pytest.raises(TimeoutError):
            await BleakClient(SCALE, backend=link.client_backend, timeout=0.2).connect()

        await scale.place(5.0)  # measured while nobody listens: kept in the scale
        assert scale.pending == 1
        await scale.come_back()
        assert (
            await BleakScanner.find_device_by_address(
                SCALE, timeout=WAIT_S, backend=link.scanner_backend
            )
            is not None
        )
        await client.connect()
        await client.start_notify(WEIGHT_MEASUREMENT_UUID, callback)
        async with asyncio.timeout(WAIT_S):
            got = decode_weight_measurement(await queue.get())
        assert got.weight == 5.0
        await client.disconnect()


async def test_device_dropping_the_link_advertises_again() -> None:
    link = VirtualBleLink()
    async with SimulatedBleScanner(link, SCANNER) as scanner:
        lost = asyncio.Event()
        async with BleakClient(
            SCANNER,
            disconnected_callback=lambda _c: lost.set(),
            backend=link.client_backend,
            timeout=WAIT_S,
        ):
            await scanner.drop_connection()
            async with asyncio.timeout(WAIT_S):
                await lost.wait()
        found = await BleakScanner.find_device_by_address(
            SCANNER, timeout=WAIT_S, backend=link.scanner_backend
        )
        assert found is not None
        assert scanner.connects == 1
