"""The bounds of every value that crosses a boundary, declared once.

The wire decoders (``messages`` through msgspec's ``Meta``), the gateway's handheld API
and the hub's REST models (pydantic, from the same constants) all enforce these, so a
value that one entrance refuses is refused at every other, and nothing that passes can
overflow a PostgreSQL column or index (a btree row holds at most 2704 bytes; ``text``
cannot hold NUL; ``jsonb`` cannot hold NaN). Checks that need a clock (``event_problem``)
take it as an argument: this module does no I/O.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated, Any, Final

import msgspec

# ------------------------------------------------------------------ strings

ID_MAX: Final = 64  # site, gateway and device ids: they become MQTT topic levels
ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# A device id on the wire: an id, or ``$``-prefixed for the gateway itself ("$gateway"
# reports command outcomes), which no configured device can be named.
DEVICE_PATTERN: Final = r"^\$?[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
CODE_MAX: Final = 64  # locations, SKUs, lots, serials, LPNs, orders, zones, map ids
# Codes and names: no control characters (no NUL, no line breaks, no escapes).
CODE_PATTERN: Final = r"^[^\x00-\x1f\x7f]*$"
# Names and subjects people type (a supplier, a customer, a floor report's subject): one
# line; some are indexed (an open report is unique by subject), so well under 2704 bytes.
NAME_MAX: Final = 200
TEXT_MAX: Final = 2000  # free text: details, reasons, error descriptions
# Free text and raw scans: anything but NUL (GS1 scans carry the GS separator, 0x1d).
TEXT_PATTERN: Final = r"^[^\x00]*$"
RAW_SCAN_MAX: Final = 4296  # a barcode's raw text: the most a QR code holds
KEY_MAX: Final = 128  # idempotency keys and command keys
GTIN_PATTERN: Final = r"^\d{14}$"
SSCC_PATTERN: Final = r"^\d{18}$"
EPC_HEX_MAX: Final = 128  # an EPC in hex (496 bits at most in Gen2)
EPC_PATTERN: Final = r"^[0-9A-Fa-f]{1,128}$"
UNIT_MAX: Final = 16

# ----------------------------------------------------------------- numbers

INT8_MAX: Final = 2**63 - 1  # PostgreSQL bigint
SEQ_MAX: Final = INT8_MAX  # a gateway's sequence numbers: 1..SEQ_MAX
SESSION_MAX: Final = INT8_MAX
QUANTITY_MAX: Final = 1_000_000_000  # units in one movement, count or verification
REFERENCE_MAX: Final = 2**62  # ids of hub rows a client refers to (pick tasks, notices)
# Any reading (weights, coordinates, counters — seqs among them): finite, within ±this.
MEASURE_MAX: Final = 1e18
ANTENNA_MAX: Final = 65_535
# A gap wider than this is more than any gateway's outbox can hold (a 1 GiB disk budget
# of ~60-byte events is under 20 million): an anomaly to report, not a range to replay.
GAP_MAX: Final = 50_000_000

# ------------------------------------------------------------- collections

ELEMENTS_MAX: Final = 64  # GS1 element strings of one scan, decoded fields of one tag
READINGS_MAX: Final = 256  # named values of one telemetry event, counters of one stats
LIST_MAX: Final = 64  # faults, errors
DEVICES_MAX: Final = 4096  # devices a birth announces
BATCH_EVENTS_MAX: Final = 10_000  # events in one batch (the edge sends 500 by default)
ARGS_DEPTH_MAX: Final = 8  # nesting of a command's arguments
ARGS_BYTES_MAX: Final = 64 * 1024
MESSAGE_BYTES_MAX: Final = 16 * 1024 * 1024  # an MQTT payload the hub or the edge reads

# -------------------------------------------------------------------- time

# An event's occurred_at must lie within this window of the receiver's clock when it
# arrives (the hub's, at ingest): a gateway may have been cut off for months, but not
# for years, and its clock may run ahead by a day at most.
EVENT_MAX_AGE: Final = dt.timedelta(days=400)
EVENT_MAX_AHEAD: Final = dt.timedelta(days=1)

# ------------------------------------------------ msgspec types for the wire

Timestamp = Annotated[dt.datetime, msgspec.Meta(tz=True)]  # with its time zone, always
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=ID_MAX, pattern=ID_PATTERN)]
DeviceId = Annotated[str, msgspec.Meta(min_length=1, max_length=ID_MAX + 1, pattern=DEVICE_PATTERN)]
Code = Annotated[str, msgspec.Meta(min_length=1, max_length=CODE_MAX, pattern=CODE_PATTERN)]
OptCode = Annotated[str, msgspec.Meta(max_length=CODE_MAX, pattern=CODE_PATTERN)]
Text = Annotated[str, msgspec.Meta(max_length=TEXT_MAX, pattern=TEXT_PATTERN)]
Key = Annotated[str, msgspec.Meta(min_length=1, max_length=KEY_MAX, pattern=CODE_PATTERN)]
Gtin = Annotated[str, msgspec.Meta(pattern=GTIN_PATTERN)]
# What an event's ``gtin`` carries: a GTIN-14, or a SKU code where a device or an app
# knows the item by its code (an AGV's load, a clerk's app); the hub resolves either.
Item = Code
Sscc = Annotated[str, msgspec.Meta(pattern=SSCC_PATTERN)]
EpcHex = Annotated[str, msgspec.Meta(pattern=EPC_PATTERN)]
Unit = Annotated[str, msgspec.Meta(max_length=UNIT_MAX, pattern=CODE_PATTERN)]
RawScan = Annotated[str, msgspec.Meta(max_length=RAW_SCAN_MAX, pattern=TEXT_PATTERN)]
Seq = Annotated[int, msgspec.Meta(ge=1, le=SEQ_MAX)]
SeqOrZero = Annotated[int, msgspec.Meta(ge=0, le=SEQ_MAX)]
Session = Annotated[int, msgspec.Meta(ge=0, le=SESSION_MAX)]
Quantity = Annotated[int, msgspec.Meta(ge=1, le=QUANTITY_MAX)]
Counted = Annotated[int, msgspec.Meta(ge=0, le=QUANTITY_MAX)]
Reference = Annotated[int, msgspec.Meta(ge=1, le=REFERENCE_MAX)]
Antenna = Annotated[int, msgspec.Meta(ge=0, le=ANTENNA_MAX)]
# ge/le also refuse NaN (no comparison holds for it) and the infinities.
Measure = Annotated[float, msgspec.Meta(ge=-MEASURE_MAX, le=MEASURE_MAX)]
Elements = Annotated[dict[Code, Text], msgspec.Meta(max_length=ELEMENTS_MAX)]
Readings = Annotated[dict[Code, Measure], msgspec.Meta(max_length=READINGS_MAX)]
Units = Annotated[dict[Code, Unit], msgspec.Meta(max_length=READINGS_MAX)]
Codes = Annotated[list[Code], msgspec.Meta(max_length=LIST_MAX)]
DeviceIds = Annotated[list[Id], msgspec.Meta(max_length=DEVICES_MAX)]

# ------------------------------------------------------------------ checks


def event_problem(occurred_at: dt.datetime, now: dt.datetime) -> str | None:
    """Why an event's time is out of bounds at ``now`` (the receiver's clock), or None."""
    if occurred_at.tzinfo is None:
        return "occurred_at has no time zone"
    if occurred_at < now - EVENT_MAX_AGE:
        return f"occurred_at {occurred_at.isoformat()} is more than {EVENT_MAX_AGE.days} days old"
    if occurred_at > now + EVENT_MAX_AHEAD:
        return f"occurred_at {occurred_at.isoformat()} is more than a day ahead of this clock"
    return None


def args_problem(args: dict[str, Any]) -> str | None:
    """Why a command's free-form arguments are out of bounds, or None: nested too deep,
    too large, or holding what PostgreSQL's ``jsonb`` cannot (NUL, NaN, infinity)."""
    problem = _scan(args, 0)
    if problem is not None:
        return problem
    try:
        size = len(msgspec.msgpack.encode(args))
    except (UnicodeEncodeError, TypeError, OverflowError) as exc:
        return f"args cannot be encoded: {exc}"
    if size > ARGS_BYTES_MAX:
        return f"args of {size} bytes: at most {ARGS_BYTES_MAX}"
    return None


def _scan(value: object, level: int) -> str | None:
    if level > ARGS_DEPTH_MAX:
        return f"args nested deeper than {ARGS_DEPTH_MAX}"
    if isinstance(value, str):
        return "args hold a NUL character" if "\x00" in value else None
    if isinstance(value, float):
        return None if math.isfinite(value) else "args hold a number that is not finite"
    if isinstance(value, dict):
        children: list[object] = [*value.keys(), *value.values()]
    elif isinstance(value, list | tuple):
        children = list(value)
    else:
        return None
    for child in children:
        problem = _scan(child, level + 1)
        if problem is not None:
            return problem
    return None
