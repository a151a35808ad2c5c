"""Simulated BLE peripherals on a ``VirtualBleLink``: a weight scale and a barcode scanner.

Both are bumble devices with a real GATT server, advertising connectably until a central
connects and again after it leaves. What they measure or scan is queued in the device and
sent once the gateway has subscribed, as real devices keep a small memory of readings
taken while nobody listened (a scan taken while out of range reaches the gateway when
the scanner is back).

* ``SimulatedBleScale`` — Weight Scale service 0x181D: Weight Scale Feature (read) and
  Weight Measurement (indicate). A load placed settles for a moment (its display wobbles,
  nothing is sent: the characteristic carries completed measurements only), then one
  measurement is indicated; taking the load off indicates one zero measurement.
* ``SimulatedBleScanner`` — Nordic UART Service: each scan is ``<symbology id><data>``
  plus CR, notified on TX in chunks of at most ATT MTU − 3 bytes.

Fault modes: ``go_out_of_range()`` (link dropped with "connection timeout", no more
advertising), ``come_back()``, and ``drop_connection()`` (the device ends the link itself,
then advertises again, as after a power-save timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
from collections import deque
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Self

import structlog
from bumble import core, gatt, hci
from bumble.device import Connection, Device

from warelink.edge.drivers.ble_bumble import finish_hci
from warelink.protocol.ble_gatt import (
    NUS_RX_UUID,
    NUS_SERVICE_UUID,
    NUS_TX_UUID,
    BleDateTime,
    WeightMeasurement,
    WeightScaleFeature,
    WeightUnit,
    encode_weight_measurement,
    encode_weight_scale_feature,
    split_notifications,
)
from warelink.protocol.gs1 import encode_element_string
from warelink.sim.ble_link import VirtualBleLink
from warelink.sim.scanner import ReceiptLabel, make_receipt_label

log = structlog.get_logger(__name__)

ADVERTISING_INTERVAL_MS = 20.0
"""Fast advertising, so a scan finds a device within a few tens of milliseconds."""


def _uuid(text: str) -> core.UUID:
    return core.UUID(text.upper())


class _Peripheral:
    """What both simulated devices share: advertising, link faults, and an outgoing queue
    drained to the subscribed central (each item a list of notification payloads)."""

    def __init__(
        self,
        link: VirtualBleLink,
        address: str,
        name: str,
        *,
        service_uuid: core.UUID,
        value: gatt.Characteristic[bytes],
        indicate: bool,
        buffer_limit: int,
    ) -> None:
        self.link = link
        self.address = address.upper()
        self.name = name
        self._service_uuid = service_uuid
        self._value = value
        self._indicate = indicate
        self._queue: deque[list[bytes]] = deque(maxlen=buffer_limit)
        self._queued = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._in_range = True
        self._adv_lock = asyncio.Lock()  # one advertising change at a time
        self._connections: dict[int, Connection] = {}
        self._sender: asyncio.Task[None] | None = None
        self._group: asyncio.TaskGroup | None = None
        self.sent: list[bytes] = []  # every payload delivered, in order
        self.connects = 0
        self.device: Device = link.add_device(name, self.address)

    def services(self) -> list[gatt.Service]:
        raise NotImplementedError

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        device = self.device
        device.add_services(self.services())
        device.on(device.EVENT_CONNECTION, self._on_connection)
        device.gatt_server.on(
            device.gatt_server.EVENT_CHARACTERISTIC_SUBSCRIPTION, self._on_subscription
        )
        await finish_hci(device.power_on())
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        self._sender = self._group.create_task(self._send_loop(), name=f"ble-sim-{self.name}-send")
        await self._advertise()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._sender is not None:
            self._sender.cancel()
        with contextlib.suppress(core.BaseBumbleError):
            await self.go_out_of_range()
        self.link.remove_device(self.device)
        if self._group is not None:
            await self._group.__aexit__(exc_type, exc, tb)

    @property
    def connected(self) -> bool:
        return bool(self._connections)

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    @property
    def pending(self) -> int:
        """Readings queued, not yet delivered."""
        return len(self._queue)

    # --------------------------------------------------------------- faults

    async def go_out_of_range(self) -> None:
        """Walk away: stop advertising, and the link drops by supervision timeout."""
        self._in_range = False
        async with self._adv_lock:
            await finish_hci(self.device.stop_advertising())
        for connection in list(self._connections.values()):
            with contextlib.suppress(core.BaseBumbleError):
                await finish_hci(connection.disconnect(hci.HCI_CONNECTION_TIMEOUT_ERROR))

    async def come_back(self) -> None:
        """Back in range: advertise again so the gateway can find and connect it."""
        self._in_range = True
        await self._advertise()

    async def drop_connection(self) -> None:
        """The device ends the link itself (it advertises again right after)."""
        for connection in list(self._connections.values()):
            with contextlib.suppress(core.BaseBumbleError):
                await finish_hci(
                    connection.disconnect(hci.HCI_REMOTE_USER_TERMINATED_CONNECTION_ERROR)
                )

    def send_raw(self, *payloads: bytes) -> None:
        """Fault injection: queue these bytes as they are, one notification (or
        indication) each, e.g. a corrupt value or a measurement sent twice."""
        self._enqueue(list(payloads))

    # -------------------------------------------------------------- insides

    def advertising_data(self) -> bytes:
        """Flags, the service UUID and the name, all in the advertising PDU itself: bumble's
        virtual controller answers a scan request with the advertising data, not the scan
        response, so a name only in the scan response would never be seen. A name that
        does not fit in the 31 bytes is sent shortened, as real devices do."""
        uuid_bytes = self._service_uuid.to_bytes()
        uuid_type = (
            core.AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS
            if len(uuid_bytes) == 2
            else core.AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS
        )
        room = 31 - 3 - (2 + len(uuid_bytes)) - 2
        name = self.name.encode()
        name_type = core.AdvertisingData.COMPLETE_LOCAL_NAME
        if len(name) > room:
            name, name_type = name[:room], core.AdvertisingData.SHORTENED_LOCAL_NAME
        return bytes(
            core.AdvertisingData(
                [
                    (core.AdvertisingData.FLAGS, bytes([0x06])),  # LE general, no BR/EDR
                    (uuid_type, uuid_bytes),
                    (name_type, name),
                ]
            )
        )

    async def _advertise(self) -> None:
        async with self._adv_lock:
            if not self._in_range or self.connected:
                return
            await finish_hci(
                self.device.start_advertising(
                    advertising_data=self.advertising_data(),
                    advertising_interval_min=ADVERTISING_INTERVAL_MS,
                    advertising_interval_max=ADVERTISING_INTERVAL_MS,
                )
            )

    def _on_connection(self, connection: Connection) -> None:
        self.connects += 1
        self._connections[connection.handle] = connection

        def on_disconnection(reason: int) -> None:
            self._connections.pop(connection.handle, None)
            if not self._connections:
                self._subscribed.clear()
            if self._in_range and self._group is not None:
                self._group.create_task(self._readvertise(), name=f"ble-sim-{self.name}-adv")

        connection.on(connection.EVENT_DISCONNECTION, on_disconnection)

    async def _readvertise(self) -> None:
        with contextlib.suppress(core.BaseBumbleError):
            await self._advertise()

    def _on_subscription(
        self,
        bearer: object,
        characteristic: gatt.Characteristic[bytes],
        notify: bool,
        indicate: bool,
    ) -> None:
        if characteristic is not self._value:
            return
        if notify or indicate:
            self._subscribed.set()
        else:
            self._subscribed.clear()

    def _enqueue(self, payloads: list[bytes]) -> None:
        self._queue.append(payloads)
        self._queued.set()

    async def _send_loop(self) -> None:
        while True:
            await self._queued.wait()
            if not self._queue:
                self._queued.clear()
                continue
            await self._subscribed.wait()
            payloads = self._queue[0]
            try:
                for payload in payloads:
                    if not self._subscribed.is_set():
                        raise ConnectionError("central left")
                    if self._indicate:
                        await self.device.indicate_subscribers(self._value, payload)
                    else:
                        await self.device.notify_subscribers(self._value, payload)
            except (ConnectionError, TimeoutError, core.BaseBumbleError):
                continue  # sent again, whole, to the next subscriber
            if self._queue and self._queue[0] is payloads:
                self._queue.popleft()
            self.sent.extend(payloads)


class SimulatedBleScale(_Peripheral):
    """A BLE weight scale (Weight Scale service) on the virtual link.

    ``await scale.place(kg)`` puts a load on it: after ``settle_s`` of wobble the stable
    measurement is indicated (queued if no gateway is subscribed). ``unit`` LB makes an
    imperial scale (``place`` then takes pounds). ``timestamps`` adds the scale's clock.
    """

    def __init__(
        self,
        link: VirtualBleLink,
        address: str,
        *,
        name: str = "WS-SIM",
        unit: WeightUnit = WeightUnit.KG,
        rng: random.Random | None = None,
        settle_s: float = 0.2,
        timestamps: bool = False,
        buffer_limit: int = 25,
    ) -> None:
        self.unit = unit
        self.rng = rng or random.Random(0)
        self.settle_s = settle_s
        self.timestamps = timestamps
        self.display: float = 0.0  # what the scale shows now, wobble included
        self.measurements: list[WeightMeasurement] = []  # every stable measurement taken
        self._measurement = gatt.Characteristic(
            _uuid("2A9D"),
            gatt.Characteristic.Properties.INDICATE,
            gatt.Characteristic.READABLE,
            b"",
        )
        super().__init__(
            link,
            address,
            name,
            service_uuid=_uuid("181D"),
            value=self._measurement,
            indicate=True,
            buffer_limit=buffer_limit,
        )

    def services(self) -> list[gatt.Service]:
        feature = WeightScaleFeature(timestamp=self.timestamps, weight_resolution=7)
        return [
            gatt.Service(
                _uuid("181D"),
                [
                    gatt.Characteristic(
                        _uuid("2A9E"),
                        gatt.Characteristic.Properties.READ,
                        gatt.Characteristic.READABLE,
                        encode_weight_scale_feature(feature),
                    ),
                    self._measurement,
                ],
            )
        ]

    @property
    def capacity(self) -> float:
        """The most the characteristic can carry: 0xFFFE steps (327.67 kg, 655.34 lb)."""
        return 655.34 if self.unit is WeightUnit.LB else 327.67

    async def place(self, weight: float) -> WeightMeasurement:
        """Put a load of ``weight`` (kg or lb, the scale's unit) on; returns the measurement
        indicated once it settled ("unsuccessful" above ``capacity``)."""
        step = 0.01 if self.unit is WeightUnit.LB else 0.005
        deadline = asyncio.get_running_loop().time() + self.settle_s
        amplitude = max(weight * 0.02, 10 * step)
        while asyncio.get_running_loop().time() < deadline:  # settling: shown, not sent
            self.display = weight + self.rng.uniform(-amplitude, amplitude)
            amplitude /= 2
            await asyncio.sleep(min(0.05, self.settle_s))
        self.display = weight
        timestamp = BleDateTime.from_datetime(dt.datetime.now()) if self.timestamps else None
        if weight > self.capacity:  # overload: the scale cannot measure it
            measurement = WeightMeasurement(unit=self.unit, weight_counts=None, timestamp=timestamp)
        else:
            measurement = WeightMeasurement.of(weight, self.unit, timestamp=timestamp)
        self.measurements.append(measurement)
        self._enqueue([encode_weight_measurement(measurement)])
        return measurement

    async def remove(self) -> WeightMeasurement:
        """Take the load off: the scale settles at zero and says so."""
        return await self.place(0.0)


class SimulatedBleScanner(_Peripheral):
    """A handheld BLE barcode scanner speaking the Nordic UART Service.

    ``await scanner.scan({...})`` sends one GS1 scan; ``scan_receipt()`` draws a pallet
    label from the seeded generator. ``payload_size`` is ATT MTU − 3 (20 by default).
    """

    def __init__(
        self,
        link: VirtualBleLink,
        address: str,
        *,
        name: str = "BS-SIM",
        seed: int = 0,
        symbology: str = "]C1",
        terminator: bytes = b"\r",
        payload_size: int = 20,
        buffer_limit: int = 100,
    ) -> None:
        self.rng = random.Random(seed)
        self.symbology = symbology
        self.terminator = terminator
        self.payload_size = payload_size
        self._tx = gatt.Characteristic(
            _uuid(NUS_TX_UUID),
            gatt.Characteristic.Properties.NOTIFY,
            gatt.Characteristic.READABLE,
            b"",
        )
        super().__init__(
            link,
            address,
            name,
            service_uuid=_uuid(NUS_SERVICE_UUID),
            value=self._tx,
            indicate=False,
            buffer_limit=buffer_limit,
        )

    def services(self) -> list[gatt.Service]:
        rx = gatt.Characteristic(
            _uuid(NUS_RX_UUID),
            gatt.Characteristic.Properties.WRITE
            | gatt.Characteristic.Properties.WRITE_WITHOUT_RESPONSE,
            gatt.Characteristic.WRITEABLE,
            b"",
        )
        return [gatt.Service(_uuid(NUS_SERVICE_UUID), [self._tx, rx])]

    async def scan(
        self,
        elements: Iterable[tuple[str, str]] | Mapping[str, str],
        *,
        symbology: str | None = None,
    ) -> str:
        """Send one GS1 scan; returns its text (without the terminator)."""
        text = encode_element_string(
            elements, symbology=self.symbology if symbology is None else symbology
        )
        await self.scan_raw(text)
        return text

    async def scan_label(self, label: ReceiptLabel) -> str:
        return await self.scan(label.elements())

    async def scan_receipt(self, *, today: dt.date | None = None) -> ReceiptLabel:
        label = make_receipt_label(self.rng, today=today or dt.date.today())
        await self.scan_label(label)
        return label

    async def scan_raw(self, text: str | bytes) -> None:
        """Send ``text`` as it is plus the terminator, split into notifications."""
        data = (text.encode() if isinstance(text, str) else text) + self.terminator
        self._enqueue(split_notifications(data, self.payload_size))
