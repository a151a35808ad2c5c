"""Zebra ZPL II, the parts a warehouse needs: GS1 pallet labels out, host status in.

Sans-I/O. Labels are built as bytes (``sscc_pallet_label``); the printer's answer to
``~HS`` is three strings ``<STX>…<ETX><CR><LF>`` (ZPL II Programming Guide, ``~HS``):

* string 1 ``aaa,b,c,dddd,eee,f,g,h,iii,j,k,l``: communication settings, paper out,
  pause, label length (dots), formats in the receive buffer, buffer full,
  communications diagnostic mode, partial format, unused, corrupt RAM, under
  temperature, over temperature;
* string 2 ``mmm,n,o,p,q,r,s,t,uuuuuuuu,v,www``: function settings, unused, head up,
  ribbon out, thermal transfer mode, print mode, print width mode, label waiting
  (peel-off), labels remaining in batch, format while printing, graphic images stored;
* string 3 ``xxxx,y``: password, static RAM installed.

The printer side is here too (``ZplStreamDecoder`` splits a host's byte stream into
formats and control commands, ``read_label`` reads a format back, ``encode_host_status``
answers), so the simulator and the tests use the same code paths as the driver.

GS1-128 in ZPL: ``^BC`` with mode N and Code 128 invocation codes in the data:
``>;`` start in subset C, ``>8`` FNC1, ``>6`` switch to subset B, ``>5`` back to C,
``><`` a literal ``>``. A leading FNC1 makes the symbol GS1-128; an FNC1 after a
variable-length value that is not last is the GS separator.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Final, Literal

import msgspec

from warelink.protocol.errors import DecodeError
from warelink.protocol.gs1 import GS, check_digit, encode_element_string, is_valid_check_digit

STX: Final = 0x02
ETX: Final = 0x03
HOST_STATUS_REQUEST: Final = b"~HS"
MAX_STATUS_STRING: Final = 128
"""A status string longer than this (between STX and ETX) is garbage."""
MAX_FORMAT_BYTES: Final = 256 * 1024
MAX_GS1_128_DATA: Final = 48
"""GS1-128: at most 48 data characters per symbol (FNC1 not counted)."""

_JOB_KEY: Final = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
_COPIES: Final = re.compile(r"[0-9]{1,8}")  # ^PQ quantity: 1 to 99,999,999 (not "²")
JOB_COMMENT_PREFIX: Final = "warelink-job:"


class ZplDecodeError(DecodeError):
    """Bytes that are not a valid ZPL host status (or label) where one is due."""


# ==================================================================== host status


class HostStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The printer's answer to ``~HS``, all three strings."""

    # string 1
    communication_settings: int = 0
    paper_out: bool = False
    paused: bool = False
    label_length_dots: int = 1218
    formats_in_buffer: int = 0
    buffer_full: bool = False
    diagnostic_mode: bool = False
    partial_format: bool = False
    corrupt_ram: bool = False
    under_temperature: bool = False
    over_temperature: bool = False
    # string 2
    function_settings: int = 0
    head_up: bool = False
    ribbon_out: bool = False
    thermal_transfer: bool = False
    print_mode: str = "2"  # 0 rewind, 1 peel-off, 2 tear-off, 3 cutter, 4 applicator, …
    print_width_mode: int = 0
    label_waiting: bool = False
    labels_remaining: int = 0
    format_while_printing: bool = True
    graphic_images: int = 0
    # string 3
    password: int = 0
    static_ram_installed: bool = False

    @property
    def faults(self) -> list[str]:
        """What stops the printer from printing, by the names ``PrinterState`` uses."""
        flags = (
            ("paper_out", self.paper_out),
            ("ribbon_out", self.ribbon_out),
            ("head_open", self.head_up),
            ("paused", self.paused),
            ("buffer_full", self.buffer_full),
            ("corrupt_ram", self.corrupt_ram),
            ("under_temperature", self.under_temperature),
            ("over_temperature", self.over_temperature),
        )
        return [name for name, on in flags if on]

    @property
    def ready(self) -> bool:
        return not self.faults


# (field name, kind, digits when encoded); kind "b" flag, "n" number, "c" one character
_Kind = Literal["b", "n", "c", "unused"]
_STRING_1: Final[tuple[tuple[str, _Kind, int], ...]] = (
    ("communication_settings", "n", 3),
    ("paper_out", "b", 1),
    ("paused", "b", 1),
    ("label_length_dots", "n", 4),
    ("formats_in_buffer", "n", 3),
    ("buffer_full", "b", 1),
    ("diagnostic_mode", "b", 1),
    ("partial_format", "b", 1),
    ("", "unused", 3),
    ("corrupt_ram", "b", 1),
    ("under_temperature", "b", 1),
    ("over_temperature", "b", 1),
)
_STRING_2: Final[tuple[tuple[str, _Kind, int], ...]] = (
    ("function_settings", "n", 3),
    ("", "unused", 1),
    ("head_up", "b", 1),
    ("ribbon_out", "b", 1),
    ("thermal_transfer", "b", 1),
    ("print_mode", "c", 1),
    ("print_width_mode", "n", 1),
    ("label_waiting", "b", 1),
    ("labels_remaining", "n", 8),
    ("format_while_printing", "b", 1),
    ("graphic_images", "n", 3),
)
_STRING_3: Final[tuple[tuple[str, _Kind, int], ...]] = (
    ("password", "n", 4),
    ("static_ram_installed", "b", 1),
)
_STRINGS: Final = (_STRING_1, _STRING_2, _STRING_3)
_MAX_NUMBER_DIGITS: Final = 8
_PRINT_MODE: Final = re.compile(r"[0-9A-Z]")


def _parse_string(index: int, payload: bytes) -> dict[str, int | bool | str]:
    """The fields of status string ``index`` (0–2) from its payload between STX and ETX."""
    layout = _STRINGS[index]
    try:
        text = payload.decode("ascii")
    except UnicodeDecodeError:
        raise ZplDecodeError(f"status string {index + 1}: not ASCII") from None
    parts = text.split(",")
    if len(parts) != len(layout):
        raise ZplDecodeError(
            f"status string {index + 1}: {len(parts)} fields, {len(layout)} expected"
        )
    fields: dict[str, int | bool | str] = {}
    for (name, kind, _), part in zip(layout, parts, strict=True):
        where = f"status string {index + 1}, {name or 'unused field'}"
        if kind == "c":
            if not _PRINT_MODE.fullmatch(part):
                raise ZplDecodeError(f"{where}: {part!r} is not a mode character")
            fields[name] = part
            continue
        if not (part.isascii() and part.isdigit() and len(part) <= _MAX_NUMBER_DIGITS):
            raise ZplDecodeError(f"{where}: {part!r} is not a number")
        if kind == "b":
            if part not in ("0", "1"):
                raise ZplDecodeError(f"{where}: flag {part!r} is not 0 or 1")
            fields[name] = part == "1"
        elif kind == "n":
            fields[name] = int(part)
    return fields


def _string_index(payload: bytes) -> int | None:
    """Which status string a payload is, by its number of fields (12, 11 or 2)."""
    count = payload.count(b",") + 1
    for index, layout in enumerate(_STRINGS):
        if count == len(layout):
            return index
    return None


def _encode_string(index: int, status: HostStatus) -> bytes:
    parts: list[str] = []
    for name, kind, digits in _STRINGS[index]:
        if kind == "unused":
            parts.append("0" * digits)
        elif kind == "c":
            value = getattr(status, name)
            if not (isinstance(value, str) and _PRINT_MODE.fullmatch(value)):
                raise ValueError(f"{name}: {value!r} is not a mode character")
            parts.append(value)
        elif kind == "b":
            parts.append("1" if getattr(status, name) else "0")
        else:
            number = getattr(status, name)
            if not 0 <= number < 10**_MAX_NUMBER_DIGITS:
                raise ValueError(f"{name}: {number} out of range")
            parts.append(f"{number:0{digits}d}")
    return bytes([STX]) + ",".join(parts).encode("ascii") + bytes([ETX]) + b"\r\n"


def encode_host_status(status: HostStatus) -> bytes:
    """The printer's answer to ``~HS``: three ``<STX>…<ETX><CR><LF>`` strings."""
    return b"".join(_encode_string(index, status) for index in range(3))


class Malformed(msgspec.Struct, frozen=True):
    """Bytes that did not form a status (or a format): at most the first 512, and why."""

    data: bytes
    reason: str


_MALFORMED_KEEP: Final = 512


def _malformed(data: bytes | bytearray, reason: str) -> Malformed:
    return Malformed(bytes(data[:_MALFORMED_KEEP]), reason)


class HostStatusDecoder:
    """Frames the printer's answers into ``HostStatus`` values, whatever the chunking.

    A string is STX … ETX; CR and LF between strings are skipped. Strings are told apart
    by their number of fields, so the framer resynchronises on the next string 1 after
    garbage. Anything else becomes one ``Malformed``: bytes outside a string (reported
    when the next string starts), a string 2 or 3 out of order, a string whose fields do
    not parse, an STX before the ETX, a string longer than ``MAX_STATUS_STRING``. Never
    raises; any chunking of the same stream yields the same list.
    """

    def __init__(self) -> None:
        self._junk = bytearray()  # bytes outside a string, not yet reported
        self._string: bytearray | None = None  # inside STX … ETX
        self._discarding = False  # inside an overlong string
        self._group: list[tuple[bytes, dict[str, int | bool | str]]] = []

    @property
    def pending(self) -> int:
        """Bytes held back: an unfinished string, a partial status, unreported junk."""
        held = len(self._junk) + sum(len(raw) + 2 for raw, _ in self._group)
        return held + (len(self._string) + 1 if self._string is not None else 0)

    def feed(self, data: bytes) -> list[HostStatus | Malformed]:
        out: list[HostStatus | Malformed] = []
        for byte in data:
            if self._string is None:
                if byte == STX:
                    self._flush_junk(out)
                    self._string = bytearray()
                    self._discarding = False
                elif byte in (0x0D, 0x0A):
                    continue
                else:
                    self._junk.append(byte)
                    if len(self._junk) > _MALFORMED_KEEP:
                        self._flush_junk(out)
            elif byte == ETX:
                payload, self._string = bytes(self._string), None
                if not self._discarding:
                    self._on_string(payload, out)
                self._discarding = False
            elif byte == STX:
                out.append(self._abandon(bytes([STX]) + self._string, "STX before ETX"))
                self._string = bytearray()
                self._discarding = False
            elif not self._discarding:
                self._string.append(byte)
                if len(self._string) > MAX_STATUS_STRING:
                    out.append(
                        self._abandon(
                            bytes([STX]) + self._string,
                            f"status string longer than {MAX_STATUS_STRING} bytes",
                        )
                    )
                    self._discarding = True
        return out

    def _flush_junk(self, out: list[HostStatus | Malformed]) -> None:
        if self._junk:
            out.append(self._abandon(self._junk, "bytes outside a status string"))
            self._junk = bytearray()

    def _abandon(self, data: bytes | bytearray, reason: str) -> Malformed:
        """A Malformed for ``data``, taking any partial status along with it."""
        held = b"".join(bytes([STX]) + raw + bytes([ETX]) for raw, _ in self._group)
        self._group = []
        return _malformed(held + bytes(data), reason)

    def _on_string(self, payload: bytes, out: list[HostStatus | Malformed]) -> None:
        framed = bytes([STX]) + payload + bytes([ETX])
        index = _string_index(payload)
        if index is None:
            out.append(self._abandon(framed, "not a host status string"))
            return
        try:
            fields = _parse_string(index, payload)
        except ZplDecodeError as exc:
            out.append(self._abandon(framed, str(exc)))
            return
        if index == 0 and self._group:
            out.append(self._abandon(b"", "status strings 2 and 3 missing"))
        elif index != len(self._group):
            out.append(self._abandon(framed, f"status string {index + 1} out of order"))
            return
        self._group.append((payload, fields))
        if len(self._group) == len(_STRINGS):
            merged: dict[str, int | bool | str] = {}
            for _, part in self._group:
                merged.update(part)
            merged.pop("", None)
            self._group = []
            out.append(msgspec.convert(merged, HostStatus))


def parse_host_status(data: bytes) -> HostStatus:
    """One complete ``~HS`` answer (three strings, CR LF optional) → ``HostStatus``.

    Raises ``ZplDecodeError`` on anything else, and nothing else.
    """
    if not isinstance(data, bytes | bytearray):
        raise ZplDecodeError(f"bytes expected, got {type(data).__name__}")
    decoder = HostStatusDecoder()
    items = decoder.feed(bytes(data))
    for item in items:
        if isinstance(item, Malformed):
            raise ZplDecodeError(f"not a host status: {item.reason}")
    if decoder.pending:
        raise ZplDecodeError("incomplete host status")
    if len(items) != 1:
        raise ZplDecodeError(f"{len(items)} host status answers, one expected")
    status = items[0]
    assert isinstance(status, HostStatus)
    return status


# ========================================================= the host's byte stream


class ZplFormat(msgspec.Struct, frozen=True):
    """One label format as received: ``^XA`` … ``^XZ`` inclusive, tilde commands removed."""

    data: bytes


class ZplControl(msgspec.Struct, frozen=True):
    """A tilde command, processed on receipt: ``HS`` host status, ``PS`` resume, …"""

    command: str


_FORMAT_START: Final = b"^XA"
_FORMAT_END: Final = b"^XZ"


class ZplStreamDecoder:
    """Splits the byte stream a host sends a printer into formats and control commands.

    As a printer does: tilde commands (``~`` and two letters) act the moment they arrive,
    even inside a format; ``^XA`` opens a format and ``^XZ`` ends it; bytes outside a
    format are ignored. A format opened again before it ended, or longer than
    ``MAX_FORMAT_BYTES``, is one ``Malformed``. Never raises; chunking does not matter.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._format: bytearray | None = None

    def feed(self, data: bytes) -> list[ZplFormat | ZplControl | Malformed]:
        out: list[ZplFormat | ZplControl | Malformed] = []
        buffer = self._buffer
        buffer += data
        pos = 0
        while True:
            caret, tilde = buffer.find(b"^", pos), buffer.find(b"~", pos)
            hits = [i for i in (caret, tilde) if i >= 0]
            if not hits:
                self._take(buffer[pos:], out)
                pos = len(buffer)
                break
            at = min(hits)
            self._take(buffer[pos:at], out)
            pos = at
            if len(buffer) - at < 3:
                break  # a command prefix whose name has not arrived yet
            name = bytes(buffer[at + 1 : at + 3]).upper()
            if buffer[at] == ord("~"):
                text = name.decode("ascii", "replace")
                out.append(ZplControl(text))
                pos = at + 3
                continue
            if name == b"XA":
                if self._format is not None:
                    out.append(_malformed(self._format, "format not ended before ^XA"))
                self._format = bytearray(_FORMAT_START)
            elif name == b"XZ":
                if self._format is not None:
                    self._format += _FORMAT_END
                    out.append(ZplFormat(bytes(self._format)))
                    self._format = None
            else:
                self._take(buffer[at : at + 3], out)
            pos = at + 3
        del buffer[:pos]
        return out

    def _take(
        self, chunk: bytes | bytearray, out: list[ZplFormat | ZplControl | Malformed]
    ) -> None:
        if self._format is None or not chunk:
            return
        self._format += chunk
        if len(self._format) > MAX_FORMAT_BYTES:
            out.append(_malformed(self._format, f"format longer than {MAX_FORMAT_BYTES} bytes"))
            self._format = None


# ==================================================================== Code 128


def _code128_data(element_string: str) -> str:
    """ZPL ``^BC`` data (mode N) for a GS1 element string: FNC1 first, GS → FNC1.

    Digits go in subset C (pairs), anything else in subset B.
    """
    tokens: list[str] = [GS, *element_string]  # GS stands for FNC1
    out: list[str] = [">;"]
    subset = "C"
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == GS:
            out.append(">8")
            i += 1
            continue
        run = 0
        while i + run < len(tokens) and tokens[i + run].isdigit():
            run += 1
        if subset == "C":
            if run >= 2:
                out.append(tokens[i] + tokens[i + 1])
                i += 2
                continue
            out.append(">6")
            subset = "B"
            continue
        if run >= 4:
            if run % 2:
                out.append(token)  # the odd digit in B, then pairs in C
                i += 1
            out.append(">5")
            subset = "C"
            continue
        out.append("><" if token == ">" else token)
        i += 1
    return "".join(out)


def decode_code128_data(data: str) -> str:
    """The characters a ZPL ``^BC`` data field (mode N) encodes; FNC1 after the first
    becomes GS, a leading FNC1 is dropped. Raises ``ZplDecodeError`` when invalid."""
    out: list[str] = []
    subset = "B"
    i = 0
    first = True
    while i < len(data):
        char = data[i]
        if char == ">":
            code = data[i + 1 : i + 2]
            i += 2
            if code in (";", "5"):
                subset = "C"
            elif code in (":", "6"):
                subset = "B"
            elif code in ("9", "7"):
                subset = "A"
            elif code == "8":
                if not first:
                    out.append(GS)
            elif code in ("<", "0"):
                out.append(">")
            elif code == "=":
                out.append("~")
            else:
                raise ZplDecodeError(f"unknown Code 128 invocation >{code}")
            if code not in (";", ":", "9"):
                first = False
            continue
        first = False
        if subset == "C":
            pair = data[i : i + 2]
            if len(pair) != 2 or not (pair.isascii() and pair.isdigit()):
                raise ZplDecodeError(f"subset C needs digit pairs, got {pair!r}")
            out.append(pair)
            i += 2
        else:
            out.append(char)
            i += 1
    return "".join(out)


# ====================================================================== labels


def _field_text(text: str) -> str:
    """Text for ``^FH^FD``: ``_``, ``^``, ``~``, controls and non-ASCII as ``_XX`` (UTF-8)."""
    out: list[str] = []
    for char in text:
        if char.isascii() and char.isprintable() and char not in "_^~":
            out.append(char)
        else:
            out.extend(f"_{byte:02X}" for byte in char.encode("utf-8"))
    return "".join(out)


def _unhex(text: str, indicator: str) -> str:
    raw = bytearray()
    i = 0
    while i < len(text):
        if text[i] == indicator:
            pair = text[i + 1 : i + 3]
            try:
                raw.append(int(pair, 16))
            except ValueError:
                raise ZplDecodeError(f"bad ^FH escape {indicator}{pair!r}") from None
            i += 3
        else:
            raw += text[i].encode("utf-8")
            i += 1
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ZplDecodeError("^FH field is not UTF-8") from None


def _check_job_key(key: str) -> str:
    if not isinstance(key, str) or not _JOB_KEY.fullmatch(key):
        raise ValueError(
            f"job key {key!r}: 1–128 characters of A-Z a-z 0-9 . _ : @ / + = - expected"
        )
    return key


def _check_gtin(gtin: str) -> str:
    if not (isinstance(gtin, str) and gtin.isascii() and gtin.isdigit()):
        raise ValueError(f"GTIN {gtin!r}: digits expected")
    if len(gtin) not in (8, 12, 13, 14):
        raise ValueError(f"GTIN {gtin!r}: 8, 12, 13 or 14 digits expected, got {len(gtin)}")
    if not is_valid_check_digit(gtin):
        raise ValueError(f"GTIN {gtin}: check digit should be {check_digit(gtin[:-1])}")
    return gtin.rjust(14, "0")


def _check_sscc(sscc: str) -> str:
    if not (isinstance(sscc, str) and sscc.isascii() and sscc.isdigit() and len(sscc) == 18):
        raise ValueError(f"SSCC {sscc!r}: 18 digits expected")
    expected = check_digit(sscc[:17])
    if int(sscc[17]) != expected:
        raise ValueError(f"SSCC {sscc}: check digit should be {expected}, not {sscc[17]}")
    return sscc


def _symbols(pairs: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """Element strings grouped into GS1-128 symbols of at most 48 data characters."""
    symbols: list[list[tuple[str, str]]] = [[]]
    for pair in pairs:
        candidate = [*symbols[-1], pair]
        if symbols[-1] and len(encode_element_string(candidate, symbology="")) > MAX_GS1_128_DATA:
            symbols.append([pair])
        else:
            symbols[-1] = candidate
    return symbols


def sscc_pallet_label(
    sscc: str,
    gtin: str,
    quantity: int,
    lot: str | None,
    expiry: dt.date | None,
    ship_to: str,
    *,
    job_key: str,
    ship_from: str = "",
    date_ai: Literal["15", "17"] = "17",
    copies: int = 1,
) -> bytes:
    """A GS1 logistic label (4 × 6 in at 203 dpi) for one pallet, as a ZPL format.

    From top to bottom: ship from / ship to, the content in human-readable form (SSCC,
    content GTIN, count, lot, best-before or expiry date), a GS1-128 of the content
    ((02)(15|17)(37)(10), split in two symbols if longer than 48 characters) and the
    GS1-128 of the (00) SSCC, each with its text in parentheses. ``job_key`` goes into
    a ``^FX warelink-job:<key>^FS`` comment first in the format, so the printed format
    says which command made it. ``gtin`` may be GTIN-8/12/13/14 (padded to 14).

    Raises ``ValueError`` with the reason on any invalid input.
    """
    key = _check_job_key(job_key)
    sscc = _check_sscc(sscc)
    gtin14 = _check_gtin(gtin)
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise ValueError(f"quantity {quantity!r}: an integer expected")
    if not 1 <= quantity <= 99_999_999:
        raise ValueError(f"quantity {quantity}: 1 to 99999999 expected (AI 37, n..8)")
    if not 1 <= copies <= 99:
        raise ValueError(f"copies {copies}: 1 to 99 expected")
    if date_ai not in ("15", "17"):
        raise ValueError(f"date AI {date_ai!r}: '15' (best before) or '17' (expiry) expected")
    if expiry is not None and not isinstance(expiry, dt.date):
        raise ValueError(f"expiry {expiry!r}: a date expected")
    content: list[tuple[str, str]] = [("02", gtin14)]
    if expiry is not None:
        content.append((date_ai, expiry.strftime("%y%m%d")))
    content.append(("37", str(quantity)))
    if lot is not None:
        if not isinstance(lot, str) or not lot:
            raise ValueError(f"lot {lot!r}: a non-empty string expected")
        content.append(("10", lot))
    try:
        encode_element_string(content, symbology="")
    except ValueError as exc:
        raise ValueError(f"label content: {exc}") from None
    for name, value in (("ship_to", ship_to), ("ship_from", ship_from)):
        if not isinstance(value, str):
            raise ValueError(f"{name}: text expected")
    if not ship_to.strip():
        raise ValueError("ship_to: an address is needed")

    def text(x: int, y: int, size: int, value: str) -> str:
        return f"^FO{x},{y}^A0N,{size},{size}^FH^FD{_field_text(value)}^FS"

    def barcode(y: int, pairs: list[tuple[str, str]]) -> str:
        data = _code128_data(encode_element_string(pairs, symbology=""))
        hri = "".join(f"({ai}){value}" for ai, value in pairs)
        return f"^FO60,{y}^BY3,3,140^BCN,140,N,N,N^FD{data}^FS\n" + text(60, y + 150, 28, hri)

    date_label = "BEST BEFORE" if date_ai == "15" else "EXPIRY"
    parts = [
        "^XA",
        f"^FX {JOB_COMMENT_PREFIX}{key}^FS",
        "^CI28^PW812^LL1218^LH0,0",
        text(30, 25, 24, "FROM"),
    ]
    for i, line in enumerate((ship_from or "-").splitlines()[:3]):
        parts.append(text(30, 55 + 30 * i, 26, line[:30]))
    parts.append(text(420, 25, 24, "TO"))
    for i, line in enumerate(ship_to.splitlines()[:4]):
        parts.append(text(420, 55 + 34 * i, 30, line[:24]))
    parts.append("^FO20,200^GB772,3,3^FS")
    parts.append(text(30, 215, 24, "SSCC"))
    parts.append(text(30, 245, 44, f"{sscc[0]} {sscc[1:8]} {sscc[8:17]} {sscc[17]}"))
    parts.append(text(30, 305, 24, "CONTENT"))
    parts.append(text(30, 335, 36, gtin14))
    parts.append(text(450, 305, 24, "COUNT"))
    parts.append(text(450, 335, 36, str(quantity)))
    if lot is not None:
        parts.append(text(30, 385, 24, "BATCH/LOT"))
        parts.append(text(30, 415, 36, lot))
    if expiry is not None:
        parts.append(text(450, 385, 24, date_label))
        parts.append(text(450, 415, 36, expiry.strftime("%d.%m.%Y")))
    parts.append("^FO20,470^GB772,3,3^FS")
    y = 490
    for symbol in _symbols(content):
        parts.append(barcode(y, symbol))
        y += 200
    parts.append(f"^FO20,{y}^GB772,3,3^FS")
    parts.append(barcode(y + 20, [("00", sscc)]))
    parts.append(f"^PQ{copies},0,1,Y")
    parts.append("^XZ")
    return "\n".join(parts).encode("ascii") + b"\n"


class LabelContent(msgspec.Struct, frozen=True, kw_only=True):
    """What a format prints, read back: for the simulator's record and for tests."""

    job_key: str | None
    barcodes: list[str]  # each ^BC field's element string, GS between variable values
    texts: list[str]
    copies: int = 1

    @property
    def sscc(self) -> str | None:
        """The (00) of the first barcode that is an SSCC alone."""
        for data in self.barcodes:
            if len(data) == 20 and data.startswith("00"):
                return data[2:]
        return None


def read_label(data: bytes) -> LabelContent:
    """Read one format back: its job key, barcode data and texts.

    Understands what ``sscc_pallet_label`` writes (and any format of the same commands);
    raises ``ZplDecodeError`` when the data cannot be read.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ZplDecodeError("format is not UTF-8") from None
    job_key: str | None = None
    barcodes: list[str] = []
    texts: list[str] = []
    copies = 1
    barcode_next = False
    hex_indicator: str | None = None
    for command in text.split("^")[1:]:
        name, rest = command[:2].upper(), command[2:]
        if name == "FX":
            comment = rest.strip()
            if comment.startswith(JOB_COMMENT_PREFIX) and job_key is None:
                job_key = comment[len(JOB_COMMENT_PREFIX) :]
        elif name == "BC":
            barcode_next = True
        elif name == "FH":
            hex_indicator = rest[:1] if rest[:1] and not rest[:1].isspace() else "_"
        elif name == "PQ":
            first = rest.split(",")[0].strip()
            copies = int(first) if _COPIES.fullmatch(first) else 1  # ZPL's default
        elif name == "FD":
            value = rest.rstrip("\r\n")
            if barcode_next:
                barcodes.append(decode_code128_data(value))
            else:
                texts.append(_unhex(value, hex_indicator) if hex_indicator else value)
        elif name == "FS":
            barcode_next = False
            hex_indicator = None
    return LabelContent(job_key=job_key, barcodes=barcodes, texts=texts, copies=copies)
