"""Drivers for BLE floor devices through bleak: a weight scale and a handheld scanner.

Each driver finds its device by address (``BleakScanner.find_device_by_address`` with a
time-out), connects, subscribes to one characteristic and turns what arrives into events.
A device that is not advertising, or whose link drops, is OFFLINE — one status event and
one log line — and is looked for again with capped backoff until it is back.

Only bleak's public API is used. ``backend`` (anything with ``client_backend`` and
``scanner_backend`` bleak backend classes: a ``BumbleAdapter`` from ``ble_bumble``)
replaces bleak's platform backend; without it bleak picks the platform's (BlueZ on Linux).
The gateway's ``[gateway.ble] hci_transport`` chooses: absent, the system's adapter; set,
an ``HciBleAdapter`` on that bumble HCI transport, shared by all BLE devices of the site.

**Scale** (Weight Scale service 0x181D, Weight Measurement 0x2A9D, indications): the
standard characteristic carries *completed* measurements only — a scale indicates once
the weight has settled — so every indicated weight is a stable reading; there is no
unstable telemetry. A non-zero measurement is one LEDGER ``WeightReading``, except when it
repeats the previous one (same weight, unit and time stamp: the scale resent a stored
measurement after a reconnect). A zero measurement means the pan was emptied: a
TELEMETRY reading, and the same load placed again counts again. The unit stays what the
scale reports: ``kg`` (0.005 kg steps) or ``lb`` (0.01 lb steps), as the MT-SICS driver
keeps the scale's unit. "Measurement unsuccessful" (0xFFFF) is logged and dropped.

**Scanner** (Nordic UART Service, TX notifications; see ``warelink.protocol.ble_gatt``):
notifications are reassembled into CR/LF-terminated scans; each scan becomes a
``Receipt`` on a receiving dock (``purpose = "receive"``) or a ``Scan``, by the same rule
as the serial line scanner. A partial scan cut by a link drop is discarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import TYPE_CHECKING, Literal, Protocol

import structlog
from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient
from bleak.backends.scanner import BaseBleakScanner
from bleak.exc import BleakError
from pydantic import Field, field_validator, model_validator

from warelink.edge.device_config import DeviceBase, StrictModel
from warelink.edge.drivers.base import Backoff, DriverSpec, Emit, Presence
from warelink.edge.drivers.scan_events import scan_to_event
from warelink.protocol.ble_gatt import (
    NUS_TX_UUID,
    WEIGHT_MEASUREMENT_UUID,
    BleDecodeError,
    Malformed,
    ScanFramer,
    WeightMeasurement,
    decode_weight_measurement,
)
from warelink.protocol.gs1 import Gs1DecodeError, Gs1Scan, parse_scan
from warelink.protocol.messages import (
    Scan,
    TrafficClass,
    WeightReading,
)

if TYPE_CHECKING:
    from warelink.edge.drivers.ble_bumble import HciBleAdapter

_MAC = re.compile(r"[0-9A-F]{2}(:[0-9A-F]{2}){5}")
_APPLE_ID = re.compile(r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}")

_LINK_ERRORS = (BleakError, TimeoutError, OSError, EOFError)
"""What bleak backends raise when a device or the adapter fails (BleakError and its
subclasses; time-outs; D-Bus and socket errors on BlueZ)."""

DISCONNECT_TIMEOUT_S = 2.0


# ------------------------------------------------------------------------ config


class _BleDevice(DeviceBase):
    address: str = Field(description="Bluetooth address AA:BB:CC:DD:EE:FF (a UUID on macOS).")
    name: str | None = Field(
        default=None, description="What the device advertises; for people and logs."
    )
    scan_timeout_s: float = Field(
        default=10.0, gt=0, description="Look this long for its advertising."
    )
    connect_timeout_s: float = Field(
        default=10.0, gt=0, description="Connect and discover within this."
    )

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        value = value.strip().upper()
        if not (_MAC.fullmatch(value) or _APPLE_ID.fullmatch(value)):
            raise ValueError("a Bluetooth address AA:BB:CC:DD:EE:FF (or a CoreBluetooth UUID)")
        return value


class BleScaleConfig(_BleDevice):
    """A scale with the Bluetooth Weight Scale service (0x181D)."""

    kind: Literal["ble_scale"]


class BleScannerConfig(_BleDevice):
    """A handheld barcode scanner sending scans over the Nordic UART Service."""

    kind: Literal["ble_scanner"]
    purpose: Literal["scan", "receive"] = "scan"

    @model_validator(mode="after")
    def _receive_needs_location(self) -> BleScannerConfig:
        if self.purpose == "receive" and not self.location:
            raise ValueError(f"device {self.id!r}: purpose 'receive' needs a location")
        return self


HCI_TRANSPORTS = {
    "tcp-client": "tcp-client:HOST:PORT",
    "unix": "unix:PATH",
    "serial": "serial:DEVICE[,SPEED]",
    "usb": "usb:INDEX or usb:VID:PID",
    "hci-socket": "hci-socket:INDEX",
}
"""The bumble HCI transports a gateway may open, as ``bumble.transport.open_transport``
spells them."""


class BleAdapterConfig(StrictModel):
    """The gateway's BLE adapter. Without ``hci_transport``, bleak uses the system's
    Bluetooth stack (BlueZ on Linux); with it, bleak runs over bumble's host on the
    controller behind that transport (a simulator's virtual one, or a dongle the OS stack
    does not own)."""

    hci_transport: str | None = Field(
        default=None,
        description="A bumble HCI transport, e.g. tcp-client:127.0.0.1:7801; none: the system's.",
    )

    @field_validator("hci_transport")
    @classmethod
    def _transport(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        scheme, _, spec = value.partition(":")
        expected = ", ".join(HCI_TRANSPORTS.values())
        if scheme not in HCI_TRANSPORTS:
            raise ValueError(f"{value!r} is not an HCI transport; use one of: {expected}")
        if not spec:
            raise ValueError(f"{value!r}: give it as {HCI_TRANSPORTS[scheme]}")
        if scheme == "tcp-client":
            host, _, port = spec.rpartition(":")
            if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError(f"{value!r}: give it as tcp-client:HOST:PORT (port 1-65535)")
        if scheme == "hci-socket" and not spec.isdigit():
            raise ValueError(f"{value!r}: give it as hci-socket:INDEX (e.g. hci-socket:0)")
        return value


def hci_backend(config: BleAdapterConfig) -> HciBleAdapter | None:
    """The adapter ``config`` names, or None for the system's (bleak's own backend)."""
    if config.hci_transport is None:
        return None
    try:
        from warelink.edge.drivers.ble_bumble import HciBleAdapter
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"gateway.ble.hci_transport needs bumble (missing {exc.name}): pip install bumble",
            name=exc.name,
        ) from None
    return HciBleAdapter(config.hci_transport)


class BleBackend(Protocol):
    """A pair of bleak backend classes to use instead of the platform's."""

    @property
    def client_backend(self) -> type[BaseBleakClient]: ...

    @property
    def scanner_backend(self) -> type[BaseBleakScanner]: ...


# ------------------------------------------------------------------ scan events


# ------------------------------------------------------------------------ driver


class _BleDriver:
    """One BLE device: find, connect, subscribe, hand each payload to ``_on_payload``."""

    characteristic_uuid: str
    what: str

    def __init__(
        self,
        config: BleScaleConfig | BleScannerConfig,
        emit: Emit,
        *,
        backend: BleBackend | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.device_id = config.id
        self._address = config.address
        self._config = config
        self._emit = emit
        self._client_backend = None if backend is None else backend.client_backend
        self._scanner_backend = None if backend is None else backend.scanner_backend
        self._backoff = backoff or Backoff()
        self._log = structlog.get_logger(__name__).bind(device=config.id, address=config.address)
        self._presence = Presence(config.id, emit, self._log, config.kind)
        self._bad_payloads = 0
        self._bad_reason = ""

    async def run(self) -> None:
        """Talk to the device until cancelled; reconnects with backoff, never raises."""
        while True:
            detail = await self._session()
            await self._presence.down(detail)
            await asyncio.sleep(self._backoff.next_delay())

    async def _session(self) -> str:
        """One find–connect–listen cycle; returns why it ended."""
        scan_timeout = self._config.scan_timeout_s
        try:
            if self._scanner_backend is None:
                find = BleakScanner.find_device_by_address(self._address, timeout=scan_timeout)
            else:
                find = BleakScanner.find_device_by_address(
                    self._address, timeout=scan_timeout, backend=self._scanner_backend
                )
            device = await find
        except _LINK_ERRORS as exc:
            return f"scan failed: {exc or type(exc).__name__}"
        if device is None:
            return f"out of range: not advertising within {self._config.scan_timeout_s:g} s"
        payloads: asyncio.Queue[bytes | None] = asyncio.Queue()
        client = BleakClient(
            device,
            disconnected_callback=lambda _client: payloads.put_nowait(None),
            timeout=self._config.connect_timeout_s,
            backend=self._client_backend,
        )
        try:
            await client.connect()
        except _LINK_ERRORS as exc:
            return f"connect failed: {exc or type(exc).__name__}"
        try:
            self._on_connected()

            def on_notify(_char: BleakGATTCharacteristic, data: bytearray) -> None:
                payloads.put_nowait(bytes(data))

            await client.start_notify(self.characteristic_uuid, on_notify)
            self._backoff.reset()
            await self._presence.up(name=self._config.name)
            while (data := await payloads.get()) is not None:
                await self._on_payload(data)
            return "link lost"
        except _LINK_ERRORS as exc:
            return f"link failed: {exc or type(exc).__name__}"
        finally:
            self._flush_bad_payloads()
            with contextlib.suppress(*_LINK_ERRORS):
                async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
                    await client.disconnect()

    def _on_connected(self) -> None:
        """A new link: forget what the last one left half done."""

    async def _on_payload(self, data: bytes) -> None:
        raise NotImplementedError

    def _bad_payload(self, reason: str) -> None:
        if not self._bad_payloads:
            self._bad_reason = reason
        self._bad_payloads += 1

    def _flush_bad_payloads(self) -> None:
        if self._bad_payloads:
            self._log.warning(
                f"{self.what} sent data that is not usable",
                count=self._bad_payloads,
                first_reason=self._bad_reason,
            )
            self._bad_payloads = 0


class BleScaleDriver(_BleDriver):
    """A Bluetooth Weight Scale: each settled load is one ledger weight."""

    characteristic_uuid = WEIGHT_MEASUREMENT_UUID
    what = "BLE scale"

    def __init__(
        self,
        config: BleScaleConfig,
        emit: Emit,
        *,
        backend: BleBackend | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__(config, emit, backend=backend, backoff=backoff)
        self.config = config
        self._settled: WeightMeasurement | None = None  # the last load reported

    async def _on_payload(self, data: bytes) -> None:
        try:
            measurement = decode_weight_measurement(data)
        except BleDecodeError as exc:
            self._bad_payload(str(exc))
            return
        self._flush_bad_payloads()
        weight = measurement.weight
        if weight is None:
            self._log.info("BLE scale reports an unsuccessful measurement")
            return
        reading = WeightReading(weight=weight, unit=measurement.unit.value, stable=True)
        if measurement.weight_counts == 0:
            if self._settled is not None:  # the pan was emptied
                self._settled = None
                await self._emit(self.device_id, TrafficClass.TELEMETRY, reading)
            return
        if measurement == self._settled:
            return  # the same measurement again: resent after a reconnect
        self._settled = measurement
        await self._emit(self.device_id, TrafficClass.LEDGER, reading)


class BleScannerDriver(_BleDriver):
    """A BLE handheld scanner: scans become ledger ``Receipt``s or ``Scan``s."""

    characteristic_uuid = NUS_TX_UUID
    what = "BLE scanner"

    def __init__(
        self,
        config: BleScannerConfig,
        emit: Emit,
        *,
        backend: BleBackend | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        if config.purpose == "receive" and not config.location:
            raise ValueError(f"BLE scanner {config.id!r}: purpose 'receive' needs a location")
        super().__init__(config, emit, backend=backend, backoff=backoff)
        self.config = config
        self._framer = ScanFramer()

    def _on_connected(self) -> None:
        self._framer.reset()

    async def _on_payload(self, data: bytes) -> None:
        for item in self._framer.feed(data):
            if isinstance(item, Malformed):
                self._bad_payload(item.reason)
                continue
            try:
                scan = parse_scan(item)
            except Gs1DecodeError as exc:
                self._bad_payload(str(exc))
                continue
            await self._on_scan(scan)

    async def _on_scan(self, scan: Gs1Scan) -> None:
        receiving = self.config.purpose == "receive"
        if receiving and not scan.is_gs1:
            self._bad_payload("not a GS1 scan")
        else:
            self._flush_bad_payloads()
        event = scan_to_event(scan, purpose=self.config.purpose, location=self.config.location)
        if receiving and isinstance(event, Scan) and (scan.gtin or scan.content_gtin):
            self._log.warning("receipt scan with count 0, sent as a plain scan", raw=scan.raw)
        await self._emit(self.device_id, TrafficClass.LEDGER, event)


# ------------------------------------------------------------- registry entry

SCALE_SPEC = DriverSpec(
    kind="ble_scale",
    config=BleScaleConfig,
    build=lambda config, context: BleScaleDriver(config, context.emit, backend=context.ble),
    example='address = "C4:7C:8D:6A:11:02"',
)

SCANNER_SPEC = DriverSpec(
    kind="ble_scanner",
    config=BleScannerConfig,
    build=lambda config, context: BleScannerDriver(config, context.emit, backend=context.ble),
    example='address = "D0:2B:20:71:0C:9A"',
)
