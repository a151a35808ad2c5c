"""EPC binary encodings of RFID tags (GS1 EPC Tag Data Standard): SGTIN-96 and SSCC-96.

A UHF tag's EPC bank holds a header byte naming the scheme, then the scheme's fields.
SGTIN-96 (header 0x30): filter (3 bits) | partition (3) | company prefix (M) | item
reference (N) | serial (38), with M + N = 44. SSCC-96 (header 0x31): filter (3) |
partition (3) | company prefix (M) | serial reference (N) | 24 reserved bits, M + N = 58.
The partition says how many bits and decimal digits the company prefix takes; 7 is
invalid. The item reference's first digit is the GTIN's indicator digit; the serial
reference's first digit is the SSCC's extension digit. The check digits are not stored:
they are recomputed (GS1 mod 10).

``decode_epc`` accepts exactly 96 bits. Another scheme's 96-bit EPC becomes an
``UnknownEpc``; anything that is not 96 bits of hex, or an SGTIN-96/SSCC-96 with an
invalid partition or a field value with more digits than its partition allows, raises
``EpcDecodeError``. The 24 reserved bits of SSCC-96 are ignored when decoding (the TDS
fills them with zeros; readers in the field do not check them) and zero when encoding.
"""

from __future__ import annotations

from typing import Final

import msgspec

from warelink.protocol.errors import DecodeError
from warelink.protocol.gs1 import check_digit

SGTIN_96_HEADER: Final = 0x30
SSCC_96_HEADER: Final = 0x31
EPC_96_BYTES: Final = 12

# partition → (company prefix bits, digits, item reference bits, digits)
_SGTIN_PARTITIONS: Final = (
    (40, 12, 4, 1),
    (37, 11, 7, 2),
    (34, 10, 10, 3),
    (30, 9, 14, 4),
    (27, 8, 17, 5),
    (24, 7, 20, 6),
    (20, 6, 24, 7),
)
# partition → (company prefix bits, digits, serial reference bits, digits)
_SSCC_PARTITIONS: Final = (
    (40, 12, 18, 5),
    (37, 11, 21, 6),
    (34, 10, 24, 7),
    (30, 9, 28, 8),
    (27, 8, 31, 9),
    (24, 7, 34, 10),
    (20, 6, 38, 11),
)
_SGTIN_SERIAL_BITS: Final = 38


class EpcDecodeError(DecodeError):
    """Bytes or hex that are not a valid 96-bit EPC (or not a valid SGTIN-96/SSCC-96)."""


def _check_digits(name: str, value: str, digits: int) -> None:
    if len(value) != digits or not (value.isascii() and value.isdigit()):
        raise EpcDecodeError(f"{name} {value!r}: {digits} digits expected")


def _check_range(name: str, value: int, bits: int) -> None:
    if not 0 <= value < 1 << bits:
        raise EpcDecodeError(f"{name} {value} does not fit in {bits} bits")


class Sgtin96(msgspec.Struct, frozen=True, kw_only=True):
    """A serialised trade item. ``company_prefix`` and ``item_reference`` are digit
    strings whose lengths the partition fixes (together 13 digits)."""

    filter: int
    partition: int
    company_prefix: str
    item_reference: str
    serial: int

    def __post_init__(self) -> None:
        _check_range("filter", self.filter, 3)
        if not 0 <= self.partition < len(_SGTIN_PARTITIONS):
            raise EpcDecodeError(f"invalid SGTIN partition {self.partition}")
        _, cp_digits, _, ir_digits = _SGTIN_PARTITIONS[self.partition]
        _check_digits("company prefix", self.company_prefix, cp_digits)
        _check_digits("item reference", self.item_reference, ir_digits)
        _check_range("serial", self.serial, _SGTIN_SERIAL_BITS)

    @property
    def scheme(self) -> str:
        return "sgtin-96"

    @property
    def gtin(self) -> str:
        """GTIN-14: indicator digit, company prefix, rest of the item reference, check."""
        data = self.item_reference[0] + self.company_prefix + self.item_reference[1:]
        return data + str(check_digit(data))

    @property
    def uri(self) -> str:
        """The pure identity URI, e.g. ``urn:epc:id:sgtin:0614141.812345.6789``."""
        return f"urn:epc:id:sgtin:{self.company_prefix}.{self.item_reference}.{self.serial}"

    @property
    def tag_uri(self) -> str:
        return (
            f"urn:epc:tag:sgtin-96:{self.filter}.{self.company_prefix}."
            f"{self.item_reference}.{self.serial}"
        )

    def fields(self) -> dict[str, str]:
        """The decoded form carried on events (``TagRead.decoded``)."""
        return {"scheme": self.scheme, "gtin": self.gtin, "serial": str(self.serial)}

    @classmethod
    def from_gtin(
        cls, gtin: str, serial: int, *, company_prefix_length: int, filter: int = 1
    ) -> Sgtin96:
        """The SGTIN of a GTIN-14 (check digit verified) and a numeric serial."""
        _check_digits("GTIN", gtin, 14)
        if check_digit(gtin[:13]) != int(gtin[13]):
            raise EpcDecodeError(f"GTIN {gtin}: wrong check digit")
        if not 6 <= company_prefix_length <= 12:
            raise EpcDecodeError(f"company prefix length {company_prefix_length} not in 6–12")
        return cls(
            filter=filter,
            partition=12 - company_prefix_length,
            company_prefix=gtin[1 : 1 + company_prefix_length],
            item_reference=gtin[0] + gtin[1 + company_prefix_length : 13],
            serial=serial,
        )


class Sscc96(msgspec.Struct, frozen=True, kw_only=True):
    """A logistic unit (pallet). ``company_prefix`` and ``serial_reference`` are digit
    strings whose lengths the partition fixes (together 17 digits)."""

    filter: int
    partition: int
    company_prefix: str
    serial_reference: str

    def __post_init__(self) -> None:
        _check_range("filter", self.filter, 3)
        if not 0 <= self.partition < len(_SSCC_PARTITIONS):
            raise EpcDecodeError(f"invalid SSCC partition {self.partition}")
        _, cp_digits, _, sr_digits = _SSCC_PARTITIONS[self.partition]
        _check_digits("company prefix", self.company_prefix, cp_digits)
        _check_digits("serial reference", self.serial_reference, sr_digits)

    @property
    def scheme(self) -> str:
        return "sscc-96"

    @property
    def sscc(self) -> str:
        """SSCC-18: extension digit, company prefix, rest of the serial reference, check."""
        data = self.serial_reference[0] + self.company_prefix + self.serial_reference[1:]
        return data + str(check_digit(data))

    @property
    def uri(self) -> str:
        return f"urn:epc:id:sscc:{self.company_prefix}.{self.serial_reference}"

    @property
    def tag_uri(self) -> str:
        return f"urn:epc:tag:sscc-96:{self.filter}.{self.company_prefix}.{self.serial_reference}"

    def fields(self) -> dict[str, str]:
        return {"scheme": self.scheme, "sscc": self.sscc}

    @classmethod
    def from_sscc(cls, sscc: str, *, company_prefix_length: int, filter: int = 0) -> Sscc96:
        """The SSCC-96 of an SSCC-18 (check digit verified)."""
        _check_digits("SSCC", sscc, 18)
        if check_digit(sscc[:17]) != int(sscc[17]):
            raise EpcDecodeError(f"SSCC {sscc}: wrong check digit")
        if not 6 <= company_prefix_length <= 12:
            raise EpcDecodeError(f"company prefix length {company_prefix_length} not in 6–12")
        return cls(
            filter=filter,
            partition=12 - company_prefix_length,
            company_prefix=sscc[1 : 1 + company_prefix_length],
            serial_reference=sscc[0] + sscc[1 + company_prefix_length : 17],
        )


class UnknownEpc(msgspec.Struct, frozen=True, kw_only=True):
    """A 96-bit EPC of a scheme this module does not decode (SGLN-96, GRAI-96, …)."""

    header: int
    hex: str

    @property
    def scheme(self) -> str:
        return f"unknown-{self.header:02x}"

    def fields(self) -> dict[str, str]:
        return {"scheme": self.scheme}


Epc = Sgtin96 | Sscc96 | UnknownEpc


def _epc_bytes(data: str | bytes | bytearray | memoryview) -> bytes:
    if isinstance(data, str):
        text = data[2:] if data[:2] in ("0x", "0X") else data
        if not text.isascii() or any(c not in "0123456789abcdefABCDEF" for c in text):
            raise EpcDecodeError(f"not hex: {data[:40]!r}")
        if len(text) != 2 * EPC_96_BYTES:
            raise EpcDecodeError(f"{len(text)} hex digits, 24 (96 bits) expected")
        return bytes.fromhex(text)
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        if len(raw) != EPC_96_BYTES:
            raise EpcDecodeError(f"{len(raw)} bytes, 12 (96 bits) expected")
        return raw
    raise EpcDecodeError(f"hex text or bytes expected, got {type(data).__name__}")


def _field(value: int, offset: int, width: int) -> int:
    """Bits ``[offset, offset + width)`` of a 96-bit value, counted from the MSB."""
    return (value >> (96 - offset - width)) & ((1 << width) - 1)


def _digits(name: str, value: int, digits: int) -> str:
    if value >= 10**digits:
        raise EpcDecodeError(f"{name} {value} has more than {digits} digits")
    return f"{value:0{digits}d}"


def decode_epc(data: str | bytes | bytearray | memoryview) -> Epc:
    """Decode a 96-bit EPC given as 24 hex digits (``0x`` allowed) or 12 bytes.

    Raises ``EpcDecodeError`` on bad input and nothing else.
    """
    raw = _epc_bytes(data)
    value = int.from_bytes(raw, "big")
    header = raw[0]
    if header not in (SGTIN_96_HEADER, SSCC_96_HEADER):
        return UnknownEpc(header=header, hex=raw.hex().upper())
    filter_value = _field(value, 8, 3)
    partition = _field(value, 11, 3)
    if partition == 7:
        raise EpcDecodeError("invalid partition 7")
    if header == SGTIN_96_HEADER:
        cp_bits, cp_digits, ir_bits, ir_digits = _SGTIN_PARTITIONS[partition]
        return Sgtin96(
            filter=filter_value,
            partition=partition,
            company_prefix=_digits("company prefix", _field(value, 14, cp_bits), cp_digits),
            item_reference=_digits(
                "item reference", _field(value, 14 + cp_bits, ir_bits), ir_digits
            ),
            serial=_field(value, 58, _SGTIN_SERIAL_BITS),
        )
    cp_bits, cp_digits, sr_bits, sr_digits = _SSCC_PARTITIONS[partition]
    return Sscc96(
        filter=filter_value,
        partition=partition,
        company_prefix=_digits("company prefix", _field(value, 14, cp_bits), cp_digits),
        serial_reference=_digits(
            "serial reference", _field(value, 14 + cp_bits, sr_bits), sr_digits
        ),
    )


def encode_epc(epc: Sgtin96 | Sscc96) -> bytes:
    """The 12 bytes of an SGTIN-96 or SSCC-96 (what a tag's EPC bank holds)."""
    if isinstance(epc, Sgtin96):
        cp_bits, _, ir_bits, _ = _SGTIN_PARTITIONS[epc.partition]
        value = SGTIN_96_HEADER
        for field_value, bits in (
            (epc.filter, 3),
            (epc.partition, 3),
            (int(epc.company_prefix), cp_bits),
            (int(epc.item_reference), ir_bits),
            (epc.serial, _SGTIN_SERIAL_BITS),
        ):
            value = value << bits | field_value
    else:
        cp_bits, _, sr_bits, _ = _SSCC_PARTITIONS[epc.partition]
        value = SSCC_96_HEADER
        for field_value, bits in (
            (epc.filter, 3),
            (epc.partition, 3),
            (int(epc.company_prefix), cp_bits),
            (int(epc.serial_reference), sr_bits),
            (0, 24),
        ):
            value = value << bits | field_value
    return value.to_bytes(EPC_96_BYTES, "big")


def encode_epc_hex(epc: Sgtin96 | Sscc96) -> str:
    """``encode_epc`` as 24 upper-case hex digits, the form readers and events use."""
    return encode_epc(epc).hex().upper()
