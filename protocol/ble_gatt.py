"""BLE GATT payloads of the floor's BLE devices: a sans-I/O codec and a scan framer.

**Weight scale** — the standard Weight Scale service (0x181D). Its Weight Measurement
characteristic (0x2A9D, indicate) carries, little-endian (GATT Specification Supplement,
Weight Measurement):

====== ======= =============================================================
bytes  field   meaning
====== ======= =============================================================
1      flags   bit 0 imperial units, bit 1 time stamp present, bit 2 user id
               present, bit 3 BMI and height present; bits 4–7 reserved
2      weight  uint16: 0.005 kg (SI) or 0.01 lb (imperial); 0xFFFF means
               "measurement unsuccessful"
7      time    Date Time: year uint16 (0 unknown), month, day (0 unknown),
               hours, minutes, seconds — only with flag bit 1
1      user    uint8, 255 = unknown user — only with flag bit 2
2 + 2  BMI,    BMI uint16 in 0.1 kg/m²; height uint16 in 0.001 m (SI) or
       height  0.1 in (imperial) — both, only with flag bit 3
====== ======= =============================================================

The Weight Scale Feature characteristic (0x2A9E, read) is a uint32 saying which of the
optional fields the scale sends and its weight/height resolution.

**Barcode scanner** — no SIG profile exists for scanners; handheld BLE scanners that do
not pose as a keyboard (HID) expose a serial-port-like service. warelink expects the
Nordic UART Service (NUS), the most common of these: service
``6E400001-B5A3-F393-E0A9-E50E24DCCA9E``, TX characteristic ``6E400003-…`` (notify,
scanner → gateway) and RX ``6E400002-…`` (write, gateway → scanner, unused). Each scan
is UTF-8 text — ``<symbology id><data>`` as on a serial scanner — terminated by CR, LF or
CR LF, and split across as many notifications as the negotiated MTU needs (20 bytes each
at the default ATT MTU of 23). ``ScanFramer`` puts the notifications back together.
"""

from __future__ import annotations

import calendar
import datetime as dt
import enum
import re
import struct
from typing import Final

import msgspec

from warelink.protocol.errors import DecodeError
from warelink.protocol.gs1 import Malformed

__all__ = [
    "MAX_SCAN_BYTES",
    "NUS_RX_UUID",
    "NUS_SERVICE_UUID",
    "NUS_TX_UUID",
    "WEIGHT_MEASUREMENT_UUID",
    "WEIGHT_SCALE_FEATURE_UUID",
    "WEIGHT_SCALE_SERVICE_UUID",
    "BleDateTime",
    "BleDecodeError",
    "Malformed",
    "ScanFramer",
    "WeightMeasurement",
    "WeightScaleFeature",
    "WeightUnit",
    "decode_weight_measurement",
    "decode_weight_scale_feature",
    "encode_weight_measurement",
    "encode_weight_scale_feature",
    "split_notifications",
]

# 128-bit forms, lower case, as bleak reports them.
WEIGHT_SCALE_SERVICE_UUID: Final = "0000181d-0000-1000-8000-00805f9b34fb"
WEIGHT_MEASUREMENT_UUID: Final = "00002a9d-0000-1000-8000-00805f9b34fb"
WEIGHT_SCALE_FEATURE_UUID: Final = "00002a9e-0000-1000-8000-00805f9b34fb"
NUS_SERVICE_UUID: Final = "6e400001-b5a3-f393-e0a9-e50e24dcca9e"
NUS_RX_UUID: Final = "6e400002-b5a3-f393-e0a9-e50e24dcca9e"
NUS_TX_UUID: Final = "6e400003-b5a3-f393-e0a9-e50e24dcca9e"

MAX_SCAN_BYTES: Final = 512
UNSUCCESSFUL: Final = 0xFFFF
UNKNOWN_USER: Final = 0xFF


class BleDecodeError(DecodeError):
    """Bytes that are not a valid value of the characteristic."""


class WeightUnit(enum.StrEnum):
    KG = "kg"
    LB = "lb"


class _Flag(enum.IntFlag):
    IMPERIAL = 0x01
    TIMESTAMP = 0x02
    USER_ID = 0x04
    BMI_HEIGHT = 0x08


_KNOWN_FLAGS: Final = 0x0F


class BleDateTime(msgspec.Struct, frozen=True):
    """The SIG Date Time field; year, month or day 0 means "not known"."""

    year: int
    month: int
    day: int
    hours: int = 0
    minutes: int = 0
    seconds: int = 0

    @classmethod
    def from_datetime(cls, when: dt.datetime) -> BleDateTime:
        return cls(when.year, when.month, when.day, when.hour, when.minute, when.second)

    def to_datetime(self) -> dt.datetime | None:
        """The naive local time it names (the scale's clock has no zone); None if partial."""
        if not (self.year and self.month and self.day):
            return None
        return dt.datetime(self.year, self.month, self.day, self.hours, self.minutes, self.seconds)

    def check(self) -> None:
        if self.year and not 1582 <= self.year <= 9999:
            raise BleDecodeError(f"date time: year {self.year} out of 1582–9999")
        if not 0 <= self.month <= 12:
            raise BleDecodeError(f"date time: month {self.month}")
        if not 0 <= self.day <= 31:
            raise BleDecodeError(f"date time: day {self.day}")
        if self.year and self.month and self.day > calendar.monthrange(self.year, self.month)[1]:
            raise BleDecodeError(f"date time: day {self.day} of {self.year}-{self.month:02d}")
        if not (0 <= self.hours <= 23 and 0 <= self.minutes <= 59 and 0 <= self.seconds <= 59):
            raise BleDecodeError(
                f"date time: {self.hours:02d}:{self.minutes:02d}:{self.seconds:02d}"
            )


class WeightMeasurement(msgspec.Struct, frozen=True, kw_only=True):
    """One Weight Measurement value, kept in the characteristic's integer counts so that
    encoding what was decoded gives the same bytes. ``weight_counts`` None: the scale
    reported "measurement unsuccessful"."""

    unit: WeightUnit = WeightUnit.KG
    weight_counts: int | None
    timestamp: BleDateTime | None = None
    user_id: int | None = None
    bmi_counts: int | None = None
    height_counts: int | None = None

    @classmethod
    def of(
        cls,
        weight: float | None,
        unit: WeightUnit = WeightUnit.KG,
        *,
        timestamp: BleDateTime | None = None,
        user_id: int | None = None,
        bmi: float | None = None,
        height: float | None = None,
    ) -> WeightMeasurement:
        """From values in ``unit`` (kg/m or lb/in), rounded to the characteristic's steps."""
        imperial = unit is WeightUnit.LB
        return cls(
            unit=unit,
            weight_counts=None if weight is None else round(weight * (100 if imperial else 200)),
            timestamp=timestamp,
            user_id=user_id,
            bmi_counts=None if bmi is None else round(bmi * 10),
            height_counts=None if height is None else round(height * (10 if imperial else 1000)),
        )

    @property
    def successful(self) -> bool:
        return self.weight_counts is not None

    @property
    def weight(self) -> float | None:
        """In ``unit``: kg to 0.005, lb to 0.01; None if the measurement was unsuccessful."""
        if self.weight_counts is None:
            return None
        if self.unit is WeightUnit.LB:
            return round(self.weight_counts / 100, 2)
        return round(self.weight_counts * 5 / 1000, 3)

    @property
    def bmi(self) -> float | None:
        return None if self.bmi_counts is None else round(self.bmi_counts / 10, 1)

    @property
    def height(self) -> float | None:
        """In metres (SI) or inches (imperial)."""
        if self.height_counts is None:
            return None
        if self.unit is WeightUnit.LB:
            return round(self.height_counts / 10, 1)
        return round(self.height_counts / 1000, 3)


_DATE_TIME: Final = struct.Struct("<HBBBBB")


def decode_weight_measurement(data: bytes | bytearray) -> WeightMeasurement:
    """Decode one Weight Measurement value; raises ``BleDecodeError`` on anything invalid.

    Reserved flag bits are ignored, and so are bytes after the known fields when a
    reserved bit announces them (a later spec's field); otherwise the length must match.
    """
    data = bytes(data)
    if len(data) < 3:
        raise BleDecodeError(f"weight measurement: {len(data)} bytes, at least 3 expected")
    flags = _Flag(data[0] & _KNOWN_FLAGS)
    expected = 3
    expected += _DATE_TIME.size if flags & _Flag.TIMESTAMP else 0
    expected += 1 if flags & _Flag.USER_ID else 0
    expected += 4 if flags & _Flag.BMI_HEIGHT else 0
    if len(data) < expected or (len(data) > expected and not data[0] & ~_KNOWN_FLAGS):
        raise BleDecodeError(
            f"weight measurement with flags 0x{data[0]:02x}: {len(data)} bytes, {expected} expected"
        )
    (weight,) = struct.unpack_from("<H", data, 1)
    pos = 3
    timestamp: BleDateTime | None = None
    if flags & _Flag.TIMESTAMP:
        timestamp = BleDateTime(*_DATE_TIME.unpack_from(data, pos))
        timestamp.check()
        pos += _DATE_TIME.size
    user_id: int | None = None
    if flags & _Flag.USER_ID:
        user_id = data[pos]
        pos += 1
    bmi: int | None = None
    height: int | None = None
    if flags & _Flag.BMI_HEIGHT:
        bmi, height = struct.unpack_from("<HH", data, pos)
    return WeightMeasurement(
        unit=WeightUnit.LB if flags & _Flag.IMPERIAL else WeightUnit.KG,
        weight_counts=None if weight == UNSUCCESSFUL else weight,
        timestamp=timestamp,
        user_id=user_id,
        bmi_counts=bmi,
        height_counts=height,
    )


def _uint16(name: str, value: int) -> bytes:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"weight measurement: {name} {value} does not fit in uint16")
    return struct.pack("<H", value)


def encode_weight_measurement(value: WeightMeasurement) -> bytes:
    """The characteristic bytes of ``value``; raises ``ValueError`` if a field does not fit."""
    flags = _Flag(0)
    if value.unit is WeightUnit.LB:
        flags |= _Flag.IMPERIAL
    if value.weight_counts == UNSUCCESSFUL:
        raise ValueError("weight measurement: 0xFFFF is reserved; use weight_counts=None")
    body = _uint16("weight", UNSUCCESSFUL if value.weight_counts is None else value.weight_counts)
    if value.timestamp is not None:
        flags |= _Flag.TIMESTAMP
        try:
            value.timestamp.check()
        except BleDecodeError as exc:
            raise ValueError(str(exc)) from None
        ts = value.timestamp
        body += _DATE_TIME.pack(ts.year, ts.month, ts.day, ts.hours, ts.minutes, ts.seconds)
    if value.user_id is not None:
        if not 0 <= value.user_id <= 0xFF:
            raise ValueError(f"weight measurement: user id {value.user_id} out of 0–255")
        flags |= _Flag.USER_ID
        body += bytes([value.user_id])
    if (value.bmi_counts is None) != (value.height_counts is None):
        raise ValueError("weight measurement: BMI and height go together")
    if value.bmi_counts is not None and value.height_counts is not None:
        flags |= _Flag.BMI_HEIGHT
        body += _uint16("BMI", value.bmi_counts) + _uint16("height", value.height_counts)
    return bytes([flags]) + body


# ------------------------------------------------------------ weight scale feature

_WEIGHT_STEP_KG: Final = (None, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005)


class WeightScaleFeature(msgspec.Struct, frozen=True, kw_only=True):
    """What the scale sends: optional fields and its resolutions (codes 0 = not specified,
    1–7 = 0.5 kg … 0.005 kg / 1 lb … 0.01 lb for weight, 1–3 = 0.01 m … 0.001 m for height)."""

    timestamp: bool = False
    multiple_users: bool = False
    bmi: bool = False
    weight_resolution: int = 0
    height_resolution: int = 0

    @property
    def weight_step_kg(self) -> float | None:
        return _WEIGHT_STEP_KG[self.weight_resolution] if self.weight_resolution < 8 else None


def decode_weight_scale_feature(data: bytes | bytearray) -> WeightScaleFeature:
    if len(data) != 4:
        raise BleDecodeError(f"weight scale feature: {len(data)} bytes, 4 expected")
    (bits,) = struct.unpack("<I", bytes(data))
    return WeightScaleFeature(
        timestamp=bool(bits & 1),
        multiple_users=bool(bits & 2),
        bmi=bool(bits & 4),
        weight_resolution=(bits >> 3) & 0x0F,
        height_resolution=(bits >> 7) & 0x07,
    )


def encode_weight_scale_feature(value: WeightScaleFeature) -> bytes:
    if not (0 <= value.weight_resolution <= 15 and 0 <= value.height_resolution <= 7):
        raise ValueError("weight scale feature: resolution code out of range")
    bits = value.timestamp | value.multiple_users << 1 | value.bmi << 2
    bits |= value.weight_resolution << 3 | value.height_resolution << 7
    return struct.pack("<I", bits)


# ------------------------------------------------------------------ scan framing

_TERMINATOR: Final = re.compile(rb"[\r\n]")


class ScanFramer:
    """Reassembles a BLE scanner's notifications into scans (text, terminator removed).

    Never raises; blank lines are skipped; a scan longer than ``MAX_SCAN_BYTES`` becomes
    one ``Malformed`` as soon as it overflows and the rest of it is discarded; a scan that
    is not UTF-8 is ``Malformed``. Any split of the same bytes into notifications yields
    the same list.
    """

    def __init__(self, *, max_bytes: int = MAX_SCAN_BYTES) -> None:
        self._buffer = bytearray()
        self._discarding = False
        self._max = max_bytes

    @property
    def pending(self) -> int:
        """Bytes of an unterminated scan held back."""
        return len(self._buffer)

    def reset(self) -> None:
        """Forget a partial scan (the link dropped: its rest will never come)."""
        self._buffer.clear()
        self._discarding = False

    def feed(self, data: bytes | bytearray) -> list[str | Malformed]:
        out: list[str | Malformed] = []
        buffer = self._buffer
        buffer += data
        start = 0
        for match in _TERMINATOR.finditer(buffer):
            line = bytes(buffer[start : match.start()])
            start = match.end()
            if self._discarding:
                self._discarding = False
            elif len(line) > self._max:
                out.append(self._too_long(line))
            elif line:
                out.append(_decode(line))
        del buffer[:start]
        if self._discarding:
            buffer.clear()
        elif len(buffer) > self._max:
            out.append(self._too_long(bytes(buffer)))
            buffer.clear()
            self._discarding = True
        return out

    def _too_long(self, line: bytes) -> Malformed:
        return Malformed(line[: self._max], f"scan longer than {self._max} bytes")


def _decode(line: bytes) -> str | Malformed:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return Malformed(line, "not UTF-8 text")


def split_notifications(data: bytes, payload_size: int = 20) -> list[bytes]:
    """``data`` cut into notification payloads of at most ``payload_size`` bytes
    (ATT MTU − 3), as a scanner sends a scan longer than one notification."""
    if payload_size < 1:
        raise ValueError("payload size must be positive")
    return [data[i : i + payload_size] for i in range(0, len(data), payload_size)]
