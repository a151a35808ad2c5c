"""A virtual BLE radio: bumble controllers on one in-process link, and a bleak backend on it.

There is no radio on the test machines (and none in the demo), so the BLE drivers run
against this instead: every simulated peripheral is a bumble ``Device`` with its own
virtual ``Controller`` on a shared ``LocalLink``, and the gateway's adapter is one more
bumble ``Device`` acting as central. ``VirtualBleLink.client_backend`` and
``.scanner_backend`` are bleak backend classes (``BaseBleakClient`` /
``BaseBleakScanner``) over that central, handed to ``BleakClient(..., backend=...)`` and
``BleakScanner(backend=...)``: the drivers keep using bleak's public API only, and
advertising, connecting, ATT discovery, CCCD writes, notifications and indications all
travel as real HCI/LL/ATT packets through bumble's host and controller stacks.

A device out of range is modelled the way a central sees it: its link drops with reason
"connection timeout" (0x08, supervision timeout) and it stops advertising, so scans and
connects time out until it comes back.
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
from bumble.controller import Controller
from bumble.device import Advertisement, Connection, Device
from bumble.gatt_client import CharacteristicProxy
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink

log = structlog.get_logger(__name__)

T = TypeVar("T")

DEFAULT_CENTRAL_ADDRESS = "F0:F0:F0:F0:F0:F0"
"""The gateway adapter's (static random) address on the virtual link."""


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


class _Controller(Controller):
    """bumble's virtual controller, completing what 0.0.236 leaves out of LE Create
    Connection Cancel: it must drop the pending connection and report an LE Connection
    Complete with status 0x02 (Core spec Vol 4, Part E, 7.8.13). Without that, a connect
    that timed out (peer not advertising) leaves the controller initiating forever and the
    host waiting for ever; every later connect is refused as "command disallowed"."""

    def on_hci_le_create_connection_cancel_command(
        self, command: hci.HCI_LE_Create_Connection_Cancel_Command
    ) -> hci.HCI_StatusReturnParameters:
        pending = self.pending_le_connection
        if pending is None:
            return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.COMMAND_DISALLOWED_ERROR)
        self.pending_le_connection = None
        failed = hci.HCI_LE_Connection_Complete_Event(
            status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
            connection_handle=0,
            role=hci.Role.CENTRAL,
            peer_address_type=pending.peer_address.address_type,
            peer_address=pending.peer_address,
            connection_interval=0,
            peripheral_latency=0,
            supervision_timeout=0,
            central_clock_accuracy=0,
        )
        # After this command's own Command Complete, as a real controller orders them.
        asyncio.get_running_loop().call_soon(self.send_hci_packet, failed)
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)


class VirtualBleLink:
    """One shared "air": peripherals join it with ``add_device``; the gateway's adapter
    is created on first use and shared by every client and scanner of this link, as one
    HCI adapter is on a real gateway box (one connection attempt at a time)."""

    def __init__(self, *, central_address: str = DEFAULT_CENTRAL_ADDRESS) -> None:
        self.link = LocalLink()  # type: ignore[no-untyped-call]
        self.central_address = central_address
        self._central: Device | None = None
        self._central_lock = asyncio.Lock()
        self._connect_lock = asyncio.Lock()
        self._scan_lock = asyncio.Lock()
        self._scanners: list[BumbleScannerBackend] = []
        self._controllers: dict[int, Controller] = {}
        self.client_backend = cast(
            type[BumbleClientBackend],
            type("BumbleClientBackend", (BumbleClientBackend,), {"link": self}),
        )
        self.scanner_backend = cast(
            type[BumbleScannerBackend],
            type("BumbleScannerBackend", (BumbleScannerBackend,), {"link": self}),
        )

    def add_device(self, name: str, address: str) -> Device:
        """A new bumble device (not powered on yet) with its own controller on the link."""
        controller = _Controller(name, link=self.link, public_address=address)
        device = Device(
            name=name,
            address=hci.Address(address),
            host=Host(controller, AsyncPipeSink(controller)),
        )
        self._controllers[id(device)] = controller
        return device

    def remove_device(self, device: Device) -> None:
        """Take a device's controller off the link: nothing it sends arrives any more."""
        controller = self._controllers.pop(id(device), None)
        if controller is not None and controller in self.link.controllers:
            self.link.remove_controller(controller)

    async def central(self) -> Device:
        """The gateway's adapter, powered on."""
        async with self._central_lock:
            if self._central is None:
                device = self.add_device("gateway-adapter", self.central_address)
                await finish_hci(device.power_on())
                device.on(device.EVENT_ADVERTISEMENT, self._on_advertisement)
                self._central = device
            return self._central

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


class BumbleScannerBackend(BaseBleakScanner):
    """bleak scanner backend over a ``VirtualBleLink`` (use ``link.scanner_backend``)."""

    link: ClassVar[VirtualBleLink]

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
        await self.link._start_scan(self)

    async def stop(self) -> None:
        await self.link._stop_scan(self)

    def on_advertisement(self, adv: Advertisement) -> None:
        data = advertisement_data(adv)
        if not self.is_allowed_uuid(data.service_uuids):
            return
        address = bleak_address(adv.address)
        device = self.create_or_update_device(address, address, data.local_name, adv, data)
        self.call_detection_callbacks(device, data)


class BumbleClientBackend(BaseBleakClient):
    """bleak client backend over a ``VirtualBleLink`` (use ``link.client_backend``)."""

    link: ClassVar[VirtualBleLink]

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
            raise BleakError("the virtual BLE link does not pair")
        central = await self.link.central()
        try:
            peer_address = hci.Address(self.address)
        except (ValueError, core.InvalidArgumentError):
            raise BleakDeviceNotFoundError(
                self.address, f"not an address: {self.address}"
            ) from None
        async with self.link._connect_lock:
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
        self._connection = None
        self._subscriptions.clear()
        if self._closing:
            return
        log.debug("virtual BLE link dropped", address=self.address, reason=reason)
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

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        raise BleakError("the virtual BLE link does not pair")

    async def unpair(self) -> None:
        raise BleakError("the virtual BLE link does not pair")

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
