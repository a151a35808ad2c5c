"""Master data as CSV: the columns of each entity, and parsing that reports every bad cell.

Pure (no I/O): text in, typed rows and line-by-line errors out; rows in, text out. What
needs the database (unknown unit, site, zone or SKU; duplicates against stored rows) is
checked in ``warelink.hub.masterdata.records``. The same value checks back the REST models, so a
cell and a JSON field are held to one rule.

A cell left empty takes the column's default (``None`` where the column may be empty);
a column left out of the header keeps what is stored (or the default for a new row).

``row`` is the one place the hub writes a CSV line (master data and the ledger exports
alike): every cell is made ``safe`` for spreadsheets there.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from warelink.protocol import limits
from warelink.protocol.epc import EpcDecodeError, Sgtin96, Sscc96, decode_epc
from warelink.protocol.gs1 import is_valid_check_digit

# Master data is stricter than the wire's codes (protocol/limits.py), within its lengths.
CODE = re.compile(limits.ID_PATTERN.strip("^$"))  # SKUs, locations, zones: as site ids
IDENT = re.compile(f"[!-~]{{1,{limits.CODE_MAX}}}")  # lots and serials: printable ASCII
TEXT = re.compile(f"[^\\x00-\\x1f\\x7f]{{0,{limits.NAME_MAX}}}")  # names (cells stripped first)
CODE_PATTERN = f"^{CODE.pattern}$"
IDENT_PATTERN = f"^{IDENT.pattern}$"
TEXT_PATTERN = f"^{TEXT.pattern}$"
TRUE = {"true", "t", "yes", "y", "1"}
FALSE = {"false", "f", "no", "n", "0"}
MAX_COORDINATE = 1e6  # metres: a floor plan, not a map of the earth
MAX_NUMBER = Decimal("1e12")
VIRTUAL_CODES = frozenset({"SUPPLIER", "CUSTOMER", "ADJUSTMENT", "SCRAP", "TRANSIT"})


# ------------------------------------------------------------------ value checks


def code(value: str) -> str:
    if not CODE.fullmatch(value):
        raise ValueError("1–64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return value


def ident(value: str) -> str:
    if not IDENT.fullmatch(value):
        raise ValueError("1–64 printable ASCII characters without spaces")
    return value


def text(value: str) -> str:
    if not TEXT.fullmatch(value):
        raise ValueError("at most 200 characters, no control characters")
    return value.strip()


def gtin(value: str) -> str:
    """A GTIN-8/12/13/14 with a valid check digit, as the 14 digits the ledger keys on."""
    if not (value.isascii() and value.isdigit()) or len(value) not in (8, 12, 13, 14):
        raise ValueError("a GTIN has 8, 12, 13 or 14 digits")
    if not is_valid_check_digit(value):
        raise ValueError(f"GTIN {value}: wrong check digit")
    return value.zfill(14)


def gln(value: str) -> str:
    if not (value.isascii() and value.isdigit()) or len(value) != 13:
        raise ValueError("a GLN has 13 digits")
    if not is_valid_check_digit(value):
        raise ValueError(f"GLN {value}: wrong check digit")
    return value


def lpn_code(value: str) -> str:
    """A licence plate: an SSCC (18 digits, check digit valid) or another code with a letter."""
    code(value)
    if value.isdigit() and (len(value) != 18 or not is_valid_check_digit(value)):
        raise ValueError(
            f"{value}: an all-digit licence plate is an SSCC: 18 digits with a valid check digit"
        )
    return value


def epc(value: str) -> str:
    """A 96-bit EPC as 24 upper-case hex digits."""
    try:
        decode_epc(value)
    except EpcDecodeError as exc:
        raise ValueError(f"EPC: {exc}") from None
    return (value[2:] if value[:2] in ("0x", "0X") else value).upper()


def sgtin_of(value: str) -> str:
    """The GTIN an item's EPC (SGTIN-96) encodes; ValueError for another scheme."""
    decoded = decode_epc(value)
    if not isinstance(decoded, Sgtin96):
        raise ValueError("an item's EPC must be an SGTIN-96")
    return decoded.gtin


def sscc_of(value: str) -> str:
    """The SSCC a licence plate's EPC (SSCC-96) encodes; ValueError for another scheme."""
    decoded = decode_epc(value)
    if not isinstance(decoded, Sscc96):
        raise ValueError("a licence plate's EPC must be an SSCC-96")
    return decoded.sscc


def boolean(value: str) -> bool:
    lowered = value.lower()
    if lowered in TRUE:
        return True
    if lowered in FALSE:
        return False
    raise ValueError(f"{value!r} is not a boolean (true/false)")


def number(low: Decimal, *, inclusive: bool) -> Callable[[str], Decimal]:
    def parse(value: str) -> Decimal:
        try:
            parsed = Decimal(value)
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a number") from None
        if not parsed.is_finite() or parsed > MAX_NUMBER:
            raise ValueError(f"{value!r} is not a finite number up to {MAX_NUMBER}")
        if parsed < low or (parsed == low and not inclusive):
            raise ValueError(f"{value} must be {'at least' if inclusive else 'more than'} {low}")
        return parsed

    return parse


def coordinate(value: str) -> float:
    try:
        parsed = float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number") from None
    if not math.isfinite(parsed) or abs(parsed) > MAX_COORDINATE:
        raise ValueError(f"{value!r} is not a coordinate within ±{MAX_COORDINATE:g} m")
    return parsed


def days(value: str) -> int:
    if not (value.isascii() and value.isdigit()) or not 0 < int(value) <= 36500:
        raise ValueError(f"{value!r} is not a whole number of days from 1 to 36500")
    return int(value)


def date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def one_of(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
        return value

    return parse


# ------------------------------------------------------------------ entities


@dataclass(frozen=True)
class Column:
    name: str
    parse: Callable[[str], Any]
    key: bool = False  # part of the row's identity: required
    default: Any = None  # what an empty cell means (None: stored as NULL)
    sql_type: str = "text"


@dataclass(frozen=True)
class Entity:
    name: str
    table: str
    columns: tuple[Column, ...]
    site_column: str | None = None  # the column naming the site a row belongs to

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.key)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


_NONNEG = number(Decimal(0), inclusive=True)
_POSITIVE = number(Decimal(0), inclusive=False)

ENTITIES: dict[str, Entity] = {
    e.name: e
    for e in (
        Entity("zones", "zones", (
            Column("site", code, key=True),
            Column("code", code, key=True),
            Column("name", text, default=""),
            Column("kind", one_of("dock", "storage", "qc", "staging", "shipping"),
                   default="storage"),
        ), site_column="site"),
        Entity("locations", "locations", (
            Column("site", code, key=True),
            Column("code", code, key=True),
            Column("zone", code),
            Column("gln", gln),
            Column("x", coordinate, sql_type="float8"),
            Column("y", coordinate, sql_type="float8"),
            Column("capacity", _NONNEG, sql_type="numeric"),
            Column("sku_class", code),
            Column("held", boolean, default=False, sql_type="bool"),
            Column("usable", boolean, default=True, sql_type="bool"),
        ), site_column="site"),
        Entity("skus", "skus", (
            Column("code", code, key=True),
            Column("gtin", gtin),
            Column("name", text, default=""),
            Column("unit", code, default="EA"),
            Column("unit_weight_kg", _POSITIVE, sql_type="numeric"),
            Column("weight_tolerance_pct", _NONNEG, default=Decimal(2), sql_type="numeric"),
            Column("tracking", one_of("none", "lot", "serial"), default="none"),
            Column("shelf_life_days", days, sql_type="int4"),
            Column("sku_class", code),
            Column("requires_qc", boolean, default=False, sql_type="bool"),
            Column("pick_policy", one_of("fifo", "fefo"), default="fifo"),
        )),
        Entity("lots", "lots", (
            Column("sku", code, key=True),
            Column("lot", ident, key=True),
            Column("expiry", date, sql_type="date"),
        )),
        Entity("serials", "serials", (
            Column("sku", code, key=True),
            Column("serial", ident, key=True),
            Column("epc", epc),
        )),
        Entity("lpns", "lpns", (
            Column("code", lpn_code, key=True),
            Column("site", code),
            Column("epc", epc),
        ), site_column="site"),
    )
}  # fmt: skip


# ------------------------------------------------------------------ parsing


@dataclass(frozen=True)
class LineError:
    line: int  # 1 is the header
    column: str | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "column": self.column, "message": self.message}


@dataclass(frozen=True)
class Row:
    line: int
    values: dict[str, Any]  # only the header's columns, parsed

    def key(self, entity: Entity) -> tuple[Any, ...]:
        return tuple(self.values[k] for k in entity.keys)


@dataclass
class Parsed:
    columns: tuple[str, ...] = ()
    records: int = 0  # data lines read, good or bad
    rows: list[Row] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)


def _header(cells: list[str], line: int, entity: Entity, parsed: Parsed) -> None:
    names = [c.strip().lower() for c in cells]
    for name in names:
        if name not in entity.names:
            parsed.errors.append(
                LineError(line, name, f"unknown column; columns: {', '.join(entity.names)}")
            )
    for name in sorted({n for n in names if names.count(n) > 1}):
        parsed.errors.append(LineError(line, name, "column given twice"))
    for name in entity.keys:
        if name not in names:
            parsed.errors.append(LineError(line, name, "required column missing"))
    if not parsed.errors:
        parsed.columns = tuple(names)


def row_checks(entity: Entity, values: Mapping[str, Any], line: int) -> list[LineError]:
    """Checks across the cells of one row that need no database."""
    try:
        if entity.name == "locations" and values.get("code") in VIRTUAL_CODES:
            raise ValueError("virtual locations cannot be created or edited")
        if entity.name == "serials" and values.get("epc"):
            sgtin_of(values["epc"])
        if entity.name == "lpns" and values.get("epc"):
            sscc = sscc_of(values["epc"])
            if values["code"].isdigit() and values["code"] != sscc:
                raise ValueError(f"the EPC encodes SSCC {sscc}, not {values['code']}")
    except ValueError as exc:
        column = "code" if entity.name == "locations" else "epc"
        return [LineError(line, column, str(exc))]
    return []


def parse(data: str, entity: Entity) -> Parsed:
    """Every row of a CSV text, typed, with an error for each bad line and cell."""
    parsed = Parsed()
    reader = csv.reader(io.StringIO(data, newline=""), strict=True)
    line = 1
    seen: dict[tuple[Any, ...], int] = {}
    columns: list[Column] = []
    try:
        for cells in reader:
            start, line = line, reader.line_num + 1
            if not parsed.columns and not parsed.errors:
                if not cells:
                    continue
                _header(cells, start, entity, parsed)
                if parsed.errors:
                    return parsed
                columns = [entity.column(name) for name in parsed.columns]
                continue
            if not cells or cells == [""]:
                continue
            parsed.records += 1
            if len(cells) != len(parsed.columns):
                parsed.errors.append(
                    LineError(start, None, f"{len(cells)} fields, the header has"
                                           f" {len(parsed.columns)}")
                )  # fmt: skip
                continue
            row = _parse_row(cells, start, entity, columns, parsed)
            if row is None:
                continue
            key = row.key(entity)
            if key in seen:
                parsed.errors.append(
                    LineError(start, entity.keys[-1],
                              f"duplicate {'/'.join(map(str, key))} (also on line {seen[key]})")
                )  # fmt: skip
                continue
            seen[key] = start
            parsed.rows.append(row)
    except csv.Error as exc:
        parsed.errors.append(LineError(line, None, f"not valid CSV: {exc}"))
    if not parsed.columns and not parsed.errors:
        parsed.errors.append(LineError(1, None, "empty file: a header line is required"))
    return parsed


def _parse_row(
    cells: list[str], line: int, entity: Entity, columns: list[Column], parsed: Parsed
) -> Row | None:
    values: dict[str, Any] = {}
    errors: list[LineError] = []
    for column, raw in zip(columns, cells, strict=True):
        name = column.name
        cell = unsafe(raw.strip())
        if not cell:
            if column.key:
                errors.append(LineError(line, name, "required"))
            values[name] = column.default
            continue
        try:
            values[name] = column.parse(cell)
        except ValueError as exc:
            errors.append(LineError(line, name, str(exc)))
    if not errors:
        errors = row_checks(entity, values, line)
    if errors:
        parsed.errors.extend(errors)
        return None
    return Row(line, values)


# ------------------------------------------------------------------ writing

_FORMULA = re.compile(r"'*[=+\-@\t\r]")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_QUOTED = re.compile(r'[,"\r\n]')


def safe(text: str) -> str:
    """A cell a spreadsheet shows as text and never runs as a formula (OWASP, CSV injection).

    Text that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return (after
    any apostrophes) gets an apostrophe in front, which spreadsheets hide; ``unsafe``
    takes it off again, so an export imports back unchanged. A plain number (``-5``,
    ``+1.5e3``) is left as it is: a spreadsheet reads it as a number, which runs
    nothing, and a negative quantity stays a number to sum.
    """
    if _FORMULA.match(text) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


def unsafe(text: str) -> str:
    """The cell ``safe`` was given: one apostrophe it added is taken off."""
    if text.startswith("'") and _FORMULA.match(text, 1) and not _NUMBER.fullmatch(text, 1):
        return text[1:]
    return text


def row(cells: Iterable[str | None]) -> str:
    """One CSV line of text cells, each made ``safe``.

    ``None`` is an empty cell, ``""`` a quoted empty one (as PostgreSQL writes NULL and
    an empty string); a cell is quoted when it holds a comma, a quote or a line break, or
    was made safe (OWASP: quote it too).
    """
    out = []
    for value in cells:
        if value is None:
            out.append("")
            continue
        text = safe(value)
        if text != value or not text or _QUOTED.search(text):
            text = '"' + text.replace('"', '""') + '"'
        out.append(text)
    return ",".join(out) + "\n"


def cell(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def write(rows: Iterable[Mapping[str, Any]], entity: Entity) -> str:
    """CSV text with the entity's columns, as ``parse`` reads it back."""
    lines = [row(entity.names)]
    lines.extend(row(cell(r[name]) for name in entity.names) for r in rows)
    return "".join(lines)
