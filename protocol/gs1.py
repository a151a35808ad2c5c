"""GS1 element strings as barcode scanners send them: a sans-I/O parser and line framer.

A scanner sends one scan per line: an optional symbology identifier (``]C1`` GS1-128,
``]d2`` GS1 DataMatrix, ``]Q3`` GS1 QR, ``]e0`` GS1 DataBar), then the data. GS1 data is
a run of element strings, each an application identifier (AI) and its value; a value of
variable length ends with GS (0x1D) unless it is the last. The human-readable form with
parentheses, ``(01)09506000134352(17)201225(10)ABC``, is accepted too (tests, sims,
hand-typed input); it cannot carry values containing parentheses.

Two-digit years follow GS1 General Specifications §7.12, a sliding window around the
reference year (the current one unless given): a year 51–99 ahead of it belongs to the
previous century, one 50–99 behind it to the next, anything else to the current one.
Day ``00`` means the last day of the month.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal

import msgspec

from warelink.protocol.errors import DecodeError

GS: Final = "\x1d"
MAX_LINE_BYTES: Final = 512


class Gs1DecodeError(DecodeError):
    """Text that is not a valid scan (or not a valid GS1 element string where one is due)."""


# ----------------------------------------------------------------- check digits


def _is_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def check_digit(digits: str) -> int:
    """The GS1 mod-10 check digit of the data digits (GTIN, GLN, SSCC, without the check)."""
    if not _is_digits(digits):
        raise Gs1DecodeError(f"check digit of {digits!r}: digits expected")
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return (10 - total % 10) % 10


def is_valid_check_digit(number: str) -> bool:
    """Whether the last digit of ``number`` is the GS1 check digit of the ones before it."""
    if len(number) < 2 or not _is_digits(number):
        return False
    return check_digit(number[:-1]) == int(number[-1])


# ------------------------------------------------------- application identifiers

_Kind = Literal["n", "n..", "x..", "date", "decimal"]


@dataclass(frozen=True, slots=True)
class _AiSpec:
    """The value format of one AI: exact digits, up to ``length`` digits or characters,
    a YYMMDD date or a 6-digit decimal whose AI's last digit counts the decimals."""

    kind: _Kind
    length: int
    check: bool = False


def _ai_table() -> dict[str, _AiSpec]:
    table: dict[str, _AiSpec] = {
        "00": _AiSpec("n", 18, check=True),  # SSCC
        "01": _AiSpec("n", 14, check=True),  # GTIN
        "02": _AiSpec("n", 14, check=True),  # GTIN of contained trade items
        "03": _AiSpec("n", 14, check=True),  # made-to-order GTIN
        "10": _AiSpec("x..", 20),  # batch/lot
        "20": _AiSpec("n", 2),  # variant
        "21": _AiSpec("x..", 20),  # serial
        "22": _AiSpec("x..", 20),  # consumer product variant
        "240": _AiSpec("x..", 30),  # additional product id
        "241": _AiSpec("x..", 30),  # customer part number
        "250": _AiSpec("x..", 30),  # secondary serial
        "251": _AiSpec("x..", 30),  # reference to source entity
        "30": _AiSpec("n..", 8),  # variable count
        "37": _AiSpec("n..", 8),  # count of contained trade items
        "400": _AiSpec("x..", 30),  # customer's purchase order
        "401": _AiSpec("x..", 30),  # consignment number
        "402": _AiSpec("n", 17),  # shipment id (fixed, yet not predefined: needs GS)
        "403": _AiSpec("x..", 30),  # routing code
        "420": _AiSpec("x..", 20),  # ship-to postal code
        "422": _AiSpec("n", 3),  # country of origin
        "90": _AiSpec("x..", 30),  # mutually agreed
    }
    for ai in ("11", "12", "13", "15", "16", "17"):  # production, due, packaging, best
        table[ai] = _AiSpec("date", 6)  # before, sell by, expiry
    for gln_ai in range(410, 418):  # GLNs: ship to, bill to, … party
        table[str(gln_ai)] = _AiSpec("n", 13, check=True)
    for internal_ai in range(91, 100):  # company internal
        table[str(internal_ai)] = _AiSpec("x..", 90)
    measures = [*range(310, 317), *range(320, 338), *range(340, 358), *range(360, 370)]
    for prefix in measures:  # trade and logistic measures, n6 with n decimals
        for decimals in range(6):
            table[f"{prefix}{decimals}"] = _AiSpec("decimal", 6)
    return table


_AIS: Final = _ai_table()

# Element strings whose AI starts with these two digits have a predefined total length
# (AI included) and need no GS after them (GS1 General Specifications, figure 7.8.5-2).
_PREDEFINED_LENGTH: Final = {
    "00": 20,
    "01": 16,
    "02": 16,
    "03": 16,
    "04": 18,
    **{str(p): 8 for p in range(11, 20)},
    "20": 4,
    **{str(p): 10 for p in range(31, 37)},
    "41": 16,
}

_CSET82: Final = re.compile(r"[!\"%-?A-Z_a-z]+")
_HRI_ELEMENT: Final = re.compile(r"\(([0-9]{2,4})\)([^()]*)")


def known_ai(ai: str) -> bool:
    """Whether this parser knows the application identifier ``ai``."""
    return ai in _AIS


def _match_ai(text: str, pos: int) -> str:
    for width in (2, 3, 4):  # AIs are prefix-free: at most one width matches
        candidate = text[pos : pos + width]
        if candidate in _AIS:
            return candidate
    raise Gs1DecodeError(f"unknown application identifier at {pos}: {text[pos : pos + 4]!r}")


def _full_year(two_digits: int, reference_year: int) -> int:
    century = reference_year - reference_year % 100
    diff = two_digits - reference_year % 100
    if 51 <= diff <= 99:
        century -= 100
    elif -99 <= diff <= -50:
        century += 100
    return century + two_digits


def _parse_date(ai: str, value: str, reference_year: int) -> dt.date:
    year = _full_year(int(value[0:2]), reference_year)
    month, day = int(value[2:4]), int(value[4:6])
    if not 1 <= month <= 12:
        raise Gs1DecodeError(f"AI {ai}: month {month:02d} in {value!r}")
    last_day = calendar.monthrange(year, month)[1]
    if day > last_day:
        raise Gs1DecodeError(f"AI {ai}: day {day:02d} in {value!r}")
    return dt.date(year, month, day or last_day)


def _check_value(ai: str, value: str, reference_year: int) -> None:
    spec = _AIS[ai]
    if spec.kind == "x..":
        if not 1 <= len(value) <= spec.length or not _CSET82.fullmatch(value):
            raise Gs1DecodeError(f"AI {ai}: {value!r} is not 1–{spec.length} GS1 characters")
        return
    if spec.kind == "n..":
        if not 1 <= len(value) <= spec.length or not _is_digits(value):
            raise Gs1DecodeError(f"AI {ai}: {value!r} is not 1–{spec.length} digits")
        return
    if len(value) != spec.length or not _is_digits(value):
        raise Gs1DecodeError(f"AI {ai}: {value!r} is not {spec.length} digits")
    if spec.check and not is_valid_check_digit(value):
        raise Gs1DecodeError(f"AI {ai}: {value!r} has a wrong check digit")
    if spec.kind == "date":
        _parse_date(ai, value, reference_year)


def _split_element_string(data: str, reference_year: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(data):
        if data[pos] == GS:  # allowed after any element string, even a fixed one
            pos += 1
            continue
        ai = _match_ai(data, pos)
        start = pos + len(ai)
        predefined = _PREDEFINED_LENGTH.get(ai[:2])
        if predefined is not None:
            end = pos + predefined
            if end > len(data):
                raise Gs1DecodeError(f"AI {ai}: truncated value {data[start:]!r}")
        else:
            gs = data.find(GS, start)
            end = len(data) if gs < 0 else gs
        value = data[start:end]
        _check_value(ai, value, reference_year)
        out.append((ai, value))
        pos = end
    if not out:
        raise Gs1DecodeError("no element strings")
    return out


def _split_hri(data: str, reference_year: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(data):
        match = _HRI_ELEMENT.match(data, pos)
        if match is None:
            raise Gs1DecodeError(f"not a (AI)value pair at {pos}: {data[pos : pos + 8]!r}")
        ai, value = match.groups()
        if ai not in _AIS:
            raise Gs1DecodeError(f"unknown application identifier ({ai})")
        _check_value(ai, value, reference_year)
        out.append((ai, value))
        pos = match.end()
    if not out:
        raise Gs1DecodeError("no element strings")
    return out


def _to_elements(pairs: list[tuple[str, str]]) -> dict[str, str]:
    elements: dict[str, str] = {}
    for ai, value in pairs:
        if ai in elements:
            raise Gs1DecodeError(f"AI {ai} appears twice")
        elements[ai] = value
    if sum(ai.startswith("310") for ai in elements) > 1:
        raise Gs1DecodeError("more than one net weight (310n)")
    return elements


# ------------------------------------------------------------------------ scans

# ISO/IEC 15424 symbology identifiers: name, and whether the data is a GS1 element string
# (True), never one (False: EAN/UPC digits would otherwise pass for AIs such as 21).
_SYMBOLOGIES: Final[dict[str, tuple[str, bool | None]]] = {
    "]C1": ("gs1-128", True),
    "]d2": ("gs1-datamatrix", True),
    "]Q3": ("gs1-qr", True),
    "]e0": ("gs1-databar", True),
    "]C0": ("code128", None),
    "]d1": ("datamatrix", None),
    "]Q1": ("qr", None),
    "]A0": ("code39", None),
    "]E0": ("ean-upc", False),
    "]E1": ("ean-upc", False),
    "]E2": ("ean-upc", False),
    "]E3": ("ean-upc", False),
    "]E4": ("ean-8", False),
}
_SYMBOLOGY_ID: Final = re.compile(r"\][A-Za-z][0-9A-Za-z]")
_GTIN_LENGTHS: Final = frozenset({8, 12, 13, 14})


class Gs1Scan(msgspec.Struct, frozen=True, kw_only=True):
    """One scan. ``elements`` maps AI → raw value; empty when the scan is not GS1.

    The typed fields are the decoded common AIs: ``gtin`` (01), ``content_gtin`` (02),
    ``sscc`` (00), ``lot`` (10), ``serial`` (21), the dates (11, 13, 15, 17), ``count``
    (37) and ``net_weight_kg`` (310n).
    """

    raw: str
    symbology: str
    symbology_id: str = ""
    elements: dict[str, str] = {}
    gtin: str | None = None
    content_gtin: str | None = None
    sscc: str | None = None
    lot: str | None = None
    serial: str | None = None
    production_date: dt.date | None = None
    packaging_date: dt.date | None = None
    best_before: dt.date | None = None
    expiry: dt.date | None = None
    count: int | None = None
    net_weight_kg: Decimal | None = None

    @property
    def is_gs1(self) -> bool:
        return bool(self.elements)


def _gs1_scan(
    raw: str, symbology: str, symbology_id: str, elements: dict[str, str], reference_year: int
) -> Gs1Scan:
    def date(ai: str) -> dt.date | None:
        value = elements.get(ai)
        return None if value is None else _parse_date(ai, value, reference_year)

    count = elements.get("37")
    net_weight: Decimal | None = None
    for decimals in range(6):
        value = elements.get(f"310{decimals}")
        if value is not None:
            net_weight = Decimal(int(value)).scaleb(-decimals)
    return Gs1Scan(
        raw=raw,
        symbology=symbology,
        symbology_id=symbology_id,
        elements=elements,
        gtin=elements.get("01"),
        content_gtin=elements.get("02"),
        sscc=elements.get("00"),
        lot=elements.get("10"),
        serial=elements.get("21"),
        production_date=date("11"),
        packaging_date=date("13"),
        best_before=date("15"),
        expiry=date("17"),
        count=None if count is None else int(count),
        net_weight_kg=net_weight,
    )


def _parse_gs1(data: str, reference_year: int) -> dict[str, str]:
    if data.startswith("("):
        return _to_elements(_split_hri(data, reference_year))
    return _to_elements(_split_element_string(data, reference_year))


def _looks_like_plain_gtin(data: str) -> bool:
    return len(data) in _GTIN_LENGTHS and is_valid_check_digit(data)


def parse_scan(text: str, *, reference_year: int | None = None) -> Gs1Scan:
    """Decode one scanned line (terminator removed).

    With a GS1 symbology identifier the data must be a valid GS1 element string. Without
    one, or with another, data that parses as GS1 is GS1; anything else is a plain scan.
    Exceptions to that guess: EAN/UPC symbologies are never GS1, and bare digits that
    form a GTIN-8/12/13/14 with a valid check digit are taken as a plain GTIN barcode.
    Raises ``Gs1DecodeError`` on anything invalid, and nothing else.
    """
    year = dt.date.today().year if reference_year is None else reference_year
    if not isinstance(text, str):
        raise Gs1DecodeError(f"scan text expected, got {type(text).__name__}")
    symbology_id = text[:3] if _SYMBOLOGY_ID.match(text) else ""
    data = text[len(symbology_id) :]
    symbology, gs1 = _SYMBOLOGIES.get(symbology_id, ("unknown", None))
    if not data:
        raise Gs1DecodeError("empty scan")
    if gs1:
        return _gs1_scan(text, symbology, symbology_id, _parse_gs1(data, year), year)
    if gs1 is None and not (symbology_id == "" and _looks_like_plain_gtin(data)):
        try:
            elements = _parse_gs1(data, year)
        except Gs1DecodeError:
            pass
        else:
            return _gs1_scan(text, symbology, symbology_id, elements, year)
    if not data.isprintable():
        raise Gs1DecodeError(f"control characters in a scan: {text[:40]!r}")
    return Gs1Scan(raw=text, symbology=symbology, symbology_id=symbology_id)


# --------------------------------------------------------------------- encoding


def encode_element_string(
    elements: Iterable[tuple[str, str]] | Mapping[str, str], *, symbology: str = "]C1"
) -> str:
    """The scanner form of ``elements``: the symbology identifier, then the element
    strings in order with GS only after variable-length values that are not last.

    Raises ``ValueError`` (a ``Gs1DecodeError``) on unknown AIs or invalid values.
    """
    pairs = list(elements.items()) if isinstance(elements, Mapping) else list(elements)
    year = dt.date.today().year
    _to_elements(pairs)  # no duplicates
    parts: list[str] = [symbology]
    for index, (ai, value) in enumerate(pairs):
        if ai not in _AIS:
            raise Gs1DecodeError(f"unknown application identifier {ai!r}")
        _check_value(ai, value, year)
        parts.append(ai + value)
        if ai[:2] not in _PREDEFINED_LENGTH and index < len(pairs) - 1:
            parts.append(GS)
    if len(parts) == 1:
        raise Gs1DecodeError("no element strings")
    return "".join(parts)


def format_hri(elements: Iterable[tuple[str, str]] | Mapping[str, str]) -> str:
    """The human-readable form ``(AI)value…`` of ``elements`` (not validated)."""
    pairs = elements.items() if isinstance(elements, Mapping) else elements
    return "".join(f"({ai}){value}" for ai, value in pairs)


# ----------------------------------------------------------------- line framing


class Malformed(msgspec.Struct, frozen=True):
    """A line that is not a valid scan: its bytes (at most the first 512) and why."""

    data: bytes
    reason: str


class LineDecoder:
    """Splits a scanner's byte stream into scans, one per CR, LF or CR LF terminated line.

    Never raises; blank lines are skipped; a line longer than ``MAX_LINE_BYTES`` becomes
    one ``Malformed`` as soon as it overflows and the rest of it is discarded. Any chunking
    of the same stream yields the same list.
    """

    def __init__(self, *, reference_year: int | None = None) -> None:
        self._buffer = bytearray()
        self._discarding = False
        self._reference_year = reference_year

    @property
    def pending(self) -> int:
        """Bytes of an unterminated line held back."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Gs1Scan | Malformed]:
        out: list[Gs1Scan | Malformed] = []
        buffer = self._buffer
        buffer += data
        start = 0
        for match in _TERMINATOR.finditer(buffer):
            line = bytes(buffer[start : match.start()])
            start = match.end()
            if self._discarding:
                self._discarding = False
            elif len(line) > MAX_LINE_BYTES:
                out.append(_too_long(line))
            elif line:
                out.append(self._decode(line))
        del buffer[:start]
        if self._discarding:
            buffer.clear()
        elif len(buffer) > MAX_LINE_BYTES:
            out.append(_too_long(bytes(buffer)))
            buffer.clear()
            self._discarding = True
        return out

    def _decode(self, line: bytes) -> Gs1Scan | Malformed:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            return Malformed(line, "not UTF-8 text")
        try:
            return parse_scan(text, reference_year=self._reference_year)
        except Gs1DecodeError as exc:
            return Malformed(line, str(exc))


_TERMINATOR: Final = re.compile(rb"[\r\n]")


def _too_long(line: bytes) -> Malformed:
    return Malformed(line[:MAX_LINE_BYTES], f"line longer than {MAX_LINE_BYTES} bytes")
