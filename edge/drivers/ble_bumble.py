"""bleak backends over a bumble host: the gateway's BLE adapter when it is not the system's.

bleak normally talks to the platform's Bluetooth stack (BlueZ over D-Bus on Linux). A
``BumbleAdapter`` is the alternative: the gateway's adapter is a bumble ``Device`` acting
as central, with bumble's own host stack, and ``client_backend`` / ``scanner_backend`` are
bleak backend classes (``BaseBleakClient`` / ``BaseBleakScanner``) over it, handed to
``BleakClient(..., backend=...)`` and ``BleakScanner(backend=...)``. The drivers keep
using bleak's public API only; advertising, connecting, ATT discovery, CCCD writes,
notifications and indications travel as real HCI/LL/ATT packets.

Where the controller is decides the subclass: ``HciBleAdapter`` opens any bumble HCI
transport (``tcp-client:HOST:PORT`` or ``unix:PATH`` to a controller in another process,
as the demo's simulator serves one; ``serial:``, ``usb:``, ``hci-socket:`` for a real
controller the OS stack does not own), and ``warelink.sim.ble_link.VirtualBleLink`` puts
one on an in-process virtual link for tests. One adapter is shared by every client and
scanner of a gateway, as one HCI adapter is on a real box (one connection attempt at a
time).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar, cast

import structlog
from bleak.args import SizedBuffer
from bleak.assigned_numbers import gatt_char_props_to_strs
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakDeviceNotFoundError, BleakError
from bumble import core, hci
from bumble.device import Advertisement, Connection, Device
from bumble.gatt_client import CharacteristicProxy
from bumble.host import Host
from bumble.transport import open_transport
from bumble.transport.common import Transport

log = structlog.get_logger(__name__)

T = TypeVar("T")

DEFAULT_CENTRAL_ADDRESS = "F0:F0:F0:F0:F0:F0"
"""The gateway adapter's own (static random) address."""


def bleak_uuid(value: core.UUID) -> str:
    """bumble's UUID (any size) as bleak spells it: 128-bit, lower case, dashed."""
    return str(uuid.UUID(bytes=bytes(reversed(value.uuid_128_bytes))))


def bleak_address(address: hci.Address) -> str:
    return address.to_string(with_type_qualifier=False)


def advertisement_data(adv: Advertisement) -> AdvertisementData:
    """bleak's view of a bumble advertisement (name, services, service and maker data)."""
    data = adv.data
    service_uuids: list[str] = []
    for ad_type in (
        core.AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
        core.AdvertisingData.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
        core.AdvertisingData.COMPLETE_LIST_OF_32_BIT_SERVICE_CLASS_UUIDS,
        core.AdvertisingData.INCOMPLETE_LIST_OF_32_BIT_SERVICE_CLASS_UUIDS,
        core.AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
        core.AdvertisingData.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
    ):
        for uuids in data.get_all(ad_type):
            for value in uuids:
                if (text := bleak_uuid(value)) not in service_uuids:
                    service_uuids.append(text)
    service_data: dict[str, bytes] = {}
    for ad_type, size in (
        (core.AdvertisingData.SERVICE_DATA_16_BIT_UUID, 2),
        (core.AdvertisingData.SERVICE_DATA_32_BIT_UUID, 4),
        (core.AdvertisingData.SERVICE_DATA_128_BIT_UUID, 16),
    ):
        for raw in data.get_all(ad_type, raw=True):
            service_data[bleak_uuid(core.UUID.from_bytes(raw[:size]))] = raw[size:]
    manufacturer_data: dict[int, bytes] = {}
    for item in data.get_all(core.AdvertisingData.MANUFACTURER_SPECIFIC_DATA):
        company, payload = item
        manufacturer_data[company] = payload
    name = data.get(core.AdvertisingData.COMPLETE_LOCAL_NAME) or data.get(
        core.AdvertisingData.SHORTENED_LOCAL_NAME
    )
    tx_power = data.get(core.AdvertisingData.TX_POWER_LEVEL)
    return AdvertisementData(
        local_name=name,
        manufacturer_data=manufacturer_data,
        service_data=service_data,
        service_uuids=service_uuids,
        tx_power=tx_power,
        rssi=adv.rssi,
        platform_data=(adv,),
    )


async def finish_hci(operation: Awaitable[T]) -> T:
    """Await a bumble operation that sends HCI commands, letting it finish even if the
    caller is cancelled meanwhile (then re-raising the cancellation): bumble's host would
    hand a cancelled command's late response to the next command, and break."""
    task = asyncio.ensure_future(operation)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


POWER_ON_TIMEOUT_S = 5.0
"""A controller that does not finish its reset and setup within this is not there."""


class BumbleAdapter:
    """The gateway's adapter: one central ``Device``, opened on first use and shared by
    every client and scanner of ``client_backend`` / ``scanner_backend``. Subclasses say
    where its controller is (``_open_host``)."""

    def __init__(self, *, address: str = DEFAULT_CENTRAL_ADDRESS) -> None:
        self.central_address = address
        self._central: Device | None = None
        self._central_lock = asyncio.Lock()
        self._connect_lock = asyncio.Lock()
        self._scan_lock = asyncio.Lock()
        self._scanners: list[BumbleScannerBackend] = []
        self._clients: set[BumbleClientBackend] = set()
        self.client_backend = cast(
            type[BumbleClientBackend],
            type("BumbleClientBackend", (BumbleClientBackend,), {"adapter": self}),
        )
        self.scanner_backend = cast(
            type[BumbleScannerBackend],
            type("BumbleScannerBackend", (BumbleScannerBackend,), {"adapter": self}),
        )

    async def _open_host(self) -> Host:
        """A bumble host attached to this adapter's controller."""
        raise NotImplementedError

    async def _close_host(self) -> None:
        """Let go of what ``_open_host`` opened."""

    async def central(self) -> Device:
        """The gateway's adapter, powered on."""
        async with self._central_lock:
            if self._central is None:
                host = await self._open_host()
                device = Device(
                    name="gateway-adapter", address=hci.Address(self.central_address), host=host
                )
                try:
                    async with asyncio.timeout(POWER_ON_TIMEOUT_S):
                        await device.power_on()
                except (TimeoutError, core.BaseBumbleError) as exc:
                    await self._close_host()
                    raise BleakError(f"BLE adapter did not power on: {exc!r}") from None
                device.on(device.EVENT_ADVERTISEMENT, self._on_advertisement)
                self._central = device
            return self._central

    def _controller_lost(self) -> None:
        """The controller went away: the central and every link through it are gone
        (a new central is opened on next use)."""
        self._central = None
        for client in list(self._clients):
            client._on_disconnection(hci.HCI_CONNECTION_TIMEOUT_ERROR)

    async def aclose(self) -> None:
        """Let go of the controller; links through it end (a new use opens it again)."""
        async with self._central_lock:
            await self._close_host()
            self._controller_lost()

    # ------------------------------------------------------------ scanning

    async def _start_scan(self, scanner: BumbleScannerBackend) -> None:
        central = await self.central()
        async with self._scan_lock:
            if scanner not in self._scanners:
                self._scanners.append(scanner)
            if not central.is_scanning:
                await finish_hci(central.start_scanning(filter_duplicates=False))

    async def _stop_scan(self, scanner: BumbleScannerBackend) -> None:
        async with self._scan_lock:
            if scanner in self._scanners:
                self._scanners.remove(scanner)
            central = self._central
            if not self._scanners and central is not None and central.is_scanning:
                await finish_hci(central.stop_scanning())

    def _on_advertisement(self, adv: Advertisement) -> None:
        for scanner in list(self._scanners):
            scanner.on_advertisement(adv)


class HciBleAdapter(BumbleAdapter):
    """An adapter whose controller is behind a bumble HCI transport, e.g.
    ``tcp-client:127.0.0.1:7801`` (see ``bumble.transport.open_transport``). The transport
    is opened on first use and again after it was lost."""

    def __init__(self, transport: str, *, address: str = DEFAULT_CENTRAL_ADDRESS) -> None:
        super().__init__(address=address)
        self.transport = transport
        self._transport: Transport | None = None
        self._log = log.bind(hci_transport=transport)

    async def _open_host(self) -> Host:
        try:
            transport = await open_transport(self.transport)
        except (OSError, core.BaseBumbleError) as exc:
            raise BleakError(f"HCI transport {self.transport}: {exc}") from None
        self._transport = transport
        transport.source.terminated.add_done_callback(lambda _: self._on_lost(transport))
        self._log.info("BLE adapter opened")
        return Host(controller_source=transport.source, controller_sink=transport.sink)

    def _on_lost(self, transport: Transport) -> None:
        if transport is not self._transport:
            return  # closed on purpose
        self._transport = None
        self._log.warning("BLE adapter lost: its HCI transport closed")
        self._controller_lost()

    async def _close_host(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.close()


class BumbleScannerBackend(BaseBleakScanner):
    """bleak scanner backend over a ``BumbleAdapter`` (use ``adapter.scanner_backend``)."""

    adapter: ClassVar[BumbleAdapter]

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: str = "active",
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        self._scanning_mode = scanning_mode

    async def start(self) -> None:
        self.seen_devices = {}
        await self.adapter._start_scan(self)

    async def stop(self) -> None:
        await self.adapter._stop_scan(self)

    def on_advertisement(self, adv: Advertisement) -> None:
        data = advertisement_data(adv)
        if not self.is_allowed_uuid(data.service_uuids):
            return
        address = bleak_address(adv.address)
        device = self.create_or_update_device(address, address, data.local_name, adv, data)
        self.call_detection_callbacks(device, data)


class BumbleClientBackend(BaseBleakClient):
    """bleak client backend over a ``BumbleAdapter`` (use ``adapter.client_backend``)."""

    adapter: ClassVar[BumbleAdapter]

    def __init__(
        self,
        address_or_ble_device: BLEDevice | str,
        *,
        disconnected_callback: Callable[[], None] | None = None,
        timeout: float = 10.0,
        services: set[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            address_or_ble_device, disconnected_callback=disconnected_callback, timeout=timeout
        )
        self._name = (
            address_or_ble_device.name if isinstance(address_or_ble_device, BLEDevice) else None
        )
        self._wanted_services = services
        self._connection: Connection | None = None
        self._subscriptions: dict[int, Callable[[bytes], None]] = {}
        self._closing = False

    @property
    def name(self) -> str:
        return self._name or self.address.replace(":", "-")

    @property
    def mtu_size(self) -> int:
        if self._connection is None:
            return 23
        return int(self._connection.gatt_client.mtu)

    @property
    def is_connected(self) -> bool:
        return self._connection is not None

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        if pair:
            raise BleakError("the bumble BLE adapter does not pair")
        central = await self.adapter.central()
        try:
            peer_address = hci.Address(self.address)
        except (ValueError, core.InvalidArgumentError):
            raise BleakDeviceNotFoundError(
                self.address, f"not an address: {self.address}"
            ) from None
        async with self.adapter._connect_lock:
            attempt = asyncio.ensure_future(central.connect(peer_address, timeout=self._timeout))
            try:
                connection = await asyncio.shield(attempt)
            except core.TimeoutError:
                raise TimeoutError(
                    f"{self.address}: no connection within {self._timeout:g} s"
                ) from None
            except core.BaseBumbleError as exc:
                raise BleakError(f"{self.address}: connect failed: {exc}") from exc
            except asyncio.CancelledError:
                # Stop initiating, then wait for the attempt to end; a link made meanwhile
                # is closed again.
                with contextlib.suppress(Exception):
                    await finish_hci(central.cancel_connection())  # type: ignore[no-untyped-call]
                with contextlib.suppress(Exception):
                    late = await attempt
                    await finish_hci(late.disconnect())
                raise
        self._closing = False
        self._connection = connection
        self.adapter._clients.add(self)
        connection.on(connection.EVENT_DISCONNECTION, self._on_disconnection)
        try:
            self.services = await self._discover(connection)
        except BaseException:
            await self.disconnect()
            raise

    async def _discover(self, connection: Connection) -> BleakGATTServiceCollection:
        client = connection.gatt_client
        collection = BleakGATTServiceCollection()
        try:
            for service in await client.discover_services():
                service_uuid = bleak_uuid(service.uuid)
                if self._wanted_services and service_uuid not in self._wanted_services:
                    continue
                bleak_service = BleakGATTService(service, service.handle, service_uuid)
                collection.add_service(bleak_service)
                for char in await client.discover_characteristics((), service):
                    properties = sorted(gatt_char_props_to_strs(int(char.properties)))
                    bleak_char = BleakGATTCharacteristic(
                        char,
                        char.handle,
                        bleak_uuid(char.uuid),
                        properties,
                        lambda: self.mtu_size - 3,
                        bleak_service,
                    )
                    collection.add_characteristic(bleak_char)
                    for descriptor in await client.discover_descriptors(char):
                        collection.add_descriptor(
                            BleakGATTDescriptor(
                                descriptor,
                                descriptor.handle,
                                bleak_uuid(descriptor.type),
                                bleak_char,
                            )
                        )
        except core.BaseBumbleError as exc:
            raise BleakError(f"{self.address}: service discovery failed: {exc}") from exc
        return collection

    def _on_disconnection(self, reason: int) -> None:
        if self._connection is None:
            return  # already gone (the controller was lost before its event came)
        self._connection = None
        self.adapter._clients.discard(self)
        self._subscriptions.clear()
        if self._closing:
            return
        log.debug("BLE link dropped", address=self.address, reason=reason)
        if self._disconnected_callback is not None:
            self._disconnected_callback()

    async def disconnect(self) -> None:
        connection = self._connection
        if connection is None:
            return
        self._closing = True
        with contextlib.suppress(core.BaseBumbleError):
            await finish_hci(connection.disconnect(hci.HCI_REMOTE_USER_TERMINATED_CONNECTION_ERROR))
        self._connection = None
        self.adapter._clients.discard(self)

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        raise BleakError("the bumble BLE adapter does not pair")

    async def unpair(self) -> None:
        raise BleakError("the bumble BLE adapter does not pair")

    # ------------------------------------------------------------------ I/O

    def _client(self) -> Any:
        if self._connection is None:
            raise BleakError("Not connected")
        return self._connection.gatt_client

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        return await self._read(characteristic.handle)

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        return await self._read(descriptor.handle)

    async def _read(self, handle: int) -> bytearray:
        try:
            return bytearray(await self._client().read_value(handle))
        except core.BaseBumbleError as exc:
            raise BleakError(f"read of handle {handle} failed: {exc}") from exc

    async def write_gatt_char(
        self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool
    ) -> None:
        await self._write(characteristic.handle, bytes(data), response)

    async def write_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, data: SizedBuffer
    ) -> None:
        await self._write(descriptor.handle, bytes(data), True)

    async def _write(self, handle: int, data: bytes, response: bool) -> None:
        try:
            await self._client().write_value(handle, data, with_response=response)
        except core.BaseBumbleError as exc:
            raise BleakError(f"write of handle {handle} failed: {exc}") from exc

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        proxy = cast(CharacteristicProxy[bytes], characteristic.obj)

        def on_value(value: bytes) -> None:
            callback(bytearray(value))

        # Notifications are preferred over indications when both exist (bleak's rule).
        try:
            await self._client().subscribe(proxy, on_value, prefer_notify=True)
        except core.BaseBumbleError as exc:
            raise BleakError(f"subscribe to {characteristic.uuid} failed: {exc}") from exc
        self._subscriptions[characteristic.handle] = on_value

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        proxy = cast(CharacteristicProxy[bytes], characteristic.obj)
        subscriber = self._subscriptions.pop(characteristic.handle, None)
        try:
            await self._client().unsubscribe(proxy, subscriber)
        except core.BaseBumbleError as exc:
            raise BleakError(f"unsubscribe from {characteristic.uuid} failed: {exc}") from exc
