"""The field types of the REST API, from the bounds in ``warelink.protocol.limits``.

A value the gateway's wire decoders refuse is refused here too, with a 422 that names
the field, so nothing a client posts can overflow a column or an index, or hold a NUL
that PostgreSQL text cannot. Body models use the plain types; route signatures use the
``…Path`` and ``…Query`` aliases, which carry the same constraints as parameters. Every
route takes its types from here, so one field means one thing everywhere.

Quantities go out one way, the exact decimal as a JSON string ("12.5"): ``QuantityOut`` in
response models; ``deps.json_response`` writes any decimal of an answer built by hand
the same way (both through ``stock.balances.quantity_text``).
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal, InvalidOperation
from typing import Annotated

from fastapi import Header, Path, Query
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
)

from warelink.hub import csvio
from warelink.hub.identity.identities import IDENTITY_PATTERN
from warelink.hub.stock.balances import quantity_text
from warelink.protocol.limits import (
    CODE_MAX,
    CODE_PATTERN,
    EPC_PATTERN,
    GTIN_PATTERN,
    ID_MAX,
    ID_PATTERN,
    KEY_MAX,
    MEASURE_MAX,
    NAME_MAX,
    QUANTITY_MAX,
    REFERENCE_MAX,
    SSCC_PATTERN,
    TEXT_MAX,
    TEXT_PATTERN,
)

# How people enter decimals (the wire carries whole units only).
DECIMAL_PLACES = 6  # quantities and weights a person enters: to micro-units
EXACT_PLACES_MAX = 30  # counts and adjustments take any exact decimal up to this

# ------------------------------------------------------------------ strings

_ID = StringConstraints(min_length=1, max_length=ID_MAX, pattern=ID_PATTERN)
SiteId = Annotated[str, _ID]
"""A site id: it becomes an MQTT topic level, so letters, digits and ``._-`` only."""
DeviceId = Annotated[str, _ID]
GatewayId = Annotated[str, _ID]
IdentityId = Annotated[str, StringConstraints(pattern=IDENTITY_PATTERN)]
"""A user or a service: lower case, as the identities table checks."""
Code = Annotated[str, StringConstraints(min_length=1, max_length=CODE_MAX, pattern=CODE_PATTERN)]
"""Locations, SKUs (or GTINs), lots, serials, LPNs, orders, zones: no control characters."""
OptCode = Annotated[str, StringConstraints(max_length=CODE_MAX, pattern=CODE_PATTERN)]
"""A code that may be left empty (``""``: none, e.g. no lot)."""
Name = Annotated[str, StringConstraints(max_length=NAME_MAX, pattern=CODE_PATTERN)]
"""A supplier, a customer, a subject: one line, no control characters."""
RequiredName = Annotated[
    str, StringConstraints(min_length=1, max_length=NAME_MAX, pattern=CODE_PATTERN)
]
Text = Annotated[str, StringConstraints(max_length=TEXT_MAX, pattern=TEXT_PATTERN)]
"""Free text (notes, reasons): anything but NUL."""
Reason = Annotated[str, StringConstraints(min_length=1, max_length=TEXT_MAX, pattern=TEXT_PATTERN)]
"""Free text that must be given."""
Key = Annotated[str, StringConstraints(min_length=1, max_length=KEY_MAX, pattern=CODE_PATTERN)]
"""An idempotency or command key."""
Gtin = Annotated[str, StringConstraints(pattern=GTIN_PATTERN)]
Sscc = Annotated[str, StringConstraints(pattern=SSCC_PATTERN)]
EpcHex = Annotated[str, StringConstraints(pattern=EPC_PATTERN)]
Filter = Annotated[str, StringConstraints(min_length=1, max_length=NAME_MAX, pattern=TEXT_PATTERN)]
"""What a search matches (an actor, an action, a subject)."""

# ------------------------------------------------------------------ master data records

# A record made through the API is held to the CSV import's rules (csvio), stricter than
# the codes above: a device may name a location no record would be given.
RecordCode = Annotated[
    str, StringConstraints(min_length=1, max_length=CODE_MAX, pattern=csvio.CODE_PATTERN)
]
"""Zones, locations, SKUs, units, classes: letters, digits and ``._-``."""
RecordIdent = Annotated[
    str, StringConstraints(min_length=1, max_length=CODE_MAX, pattern=csvio.IDENT_PATTERN)
]
"""Lots and serials: printable ASCII without spaces."""
RecordName = Annotated[str, StringConstraints(max_length=NAME_MAX, pattern=csvio.TEXT_PATTERN)]
RecordGtin = Annotated[
    str,
    Field(pattern=r"^([0-9]{8}|[0-9]{12,14})$", description="GTIN-8/12/13/14, check digit valid;"
          " stored as 14 digits"),
    AfterValidator(csvio.gtin),
]  # fmt: skip
Gln = Annotated[
    str, Field(pattern=r"^[0-9]{13}$", description="GLN, check digit valid"),
    AfterValidator(csvio.gln),
]  # fmt: skip
RecordEpc = Annotated[
    str, Field(pattern=r"^(0[xX])?[0-9A-Fa-f]{24}$", description="96-bit EPC in hex"),
    AfterValidator(csvio.epc),
]  # fmt: skip
LpnCode = Annotated[
    str,
    Field(min_length=1, max_length=CODE_MAX, pattern=csvio.CODE_PATTERN,
          description="an SSCC (18 digits, check digit valid) or another code with a letter"),
    AfterValidator(csvio.lpn_code),
]  # fmt: skip
Coordinate = Annotated[
    float, Field(ge=-csvio.MAX_COORDINATE, le=csvio.MAX_COORDINATE, allow_inf_nan=False)
]
RecordNumber = Annotated[Decimal, Field(ge=0, le=csvio.MAX_NUMBER, allow_inf_nan=False)]
"""A capacity or a tolerance of a record: zero or more."""
RecordPositive = Annotated[Decimal, Field(gt=0, le=csvio.MAX_NUMBER, allow_inf_nan=False)]
ShelfLife = Annotated[int, Field(gt=0, le=36500)]

# ------------------------------------------------------------------ numbers

Reference = Annotated[int, Field(ge=1, le=REFERENCE_MAX)]
"""The id of a hub row a client refers to (a notice, a task, a count, an exception)."""
Quantity = Annotated[
    Decimal, Field(gt=0, le=QUANTITY_MAX, decimal_places=DECIMAL_PLACES, allow_inf_nan=False)
]
"""Units moved, ordered, picked or verified: more than zero."""
Weight = Annotated[
    Decimal, Field(ge=0, le=MEASURE_MAX, decimal_places=DECIMAL_PLACES, allow_inf_nan=False)
]


def _exact(value: object) -> object:
    """A quantity may come as a JSON number or, exactly, as a decimal string."""
    if not isinstance(value, str):
        return value
    try:
        quantity = Decimal(value)
    except InvalidOperation:
        raise ValueError("not a decimal number") from None
    if not quantity.is_finite() or int(quantity.as_tuple().exponent) < -EXACT_PLACES_MAX:
        raise ValueError(f"a finite decimal with at most {EXACT_PLACES_MAX} places")
    return quantity


def _non_zero(quantity: Decimal) -> Decimal:
    if quantity == 0:
        raise ValueError("must not be zero: + found, - lost")
    return quantity


Counted = Annotated[
    Decimal,
    BeforeValidator(_exact),
    Field(ge=0, le=QUANTITY_MAX),
    WithJsonSchema({"type": "number", "minimum": 0, "maximum": QUANTITY_MAX}, mode="validation"),
]
"""What a shelf holds, as counted: zero or more."""
Change = Annotated[
    Decimal,
    BeforeValidator(_exact),
    Field(ge=-QUANTITY_MAX, le=QUANTITY_MAX),
    AfterValidator(_non_zero),
    WithJsonSchema(
        {"type": "number", "minimum": -QUANTITY_MAX, "maximum": QUANTITY_MAX,
         "not": {"const": 0}, "description": "the change: + found, - lost (not 0)"},
        mode="validation",
    ),
]  # fmt: skip
"""A stock adjustment: + found, - lost, never zero."""

QUANTITY_TEXT = r"^-?(0|[1-9][0-9]*)(\.[0-9]*[1-9])?$"
QuantityOut = Annotated[
    Decimal,
    PlainSerializer(quantity_text, return_type=str, when_used="json"),
    WithJsonSchema(
        {"type": "string", "pattern": QUANTITY_TEXT, "examples": ["12.5"],
         "description": "an exact decimal, as text"},
        mode="serialization",
    ),
]  # fmt: skip
"""A quantity (or a capacity, a weight) in an answer: the exact decimal as a JSON string,
positional, without trailing zeros: "12.5", "10", "-3" (see ``quantity_text``)."""

# ------------------------------------------------------------------ times


def _iso_8601(value: object) -> object:
    if isinstance(value, str) and not _ISO_DATE.match(value):
        raise ValueError("expected ISO 8601, e.g. 2026-11-25 or 2026-11-25T08:00:00Z")
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
IsoDatetime = Annotated[dt.datetime, BeforeValidator(_iso_8601), AfterValidator(_utc)]
"""A date-time query parameter in ISO 8601 (pydantic alone would also take ``0`` as a Unix
time); one without an offset is UTC."""
IsoDate = Annotated[dt.date, BeforeValidator(_iso_8601)]
"""A day query parameter in ISO 8601 (``2026-11-25``), not a number."""

# ------------------------------------------------------------------ route parameters

SitePath = Annotated[SiteId, Path()]
DevicePath = Annotated[DeviceId, Path()]
CodePath = Annotated[Code, Path()]
KeyPath = Annotated[Key, Path()]
ReferencePath = Annotated[Reference, Path()]
IdentityPath = Annotated[IdentityId, Path(description="identity id")]
ApiKeyPath = Annotated[Code, Path(description="API key id")]
SiteQuery = Annotated[SiteId | None, Query()]
CodeQuery = Annotated[Code | None, Query()]
GatewayQuery = Annotated[GatewayId | None, Query(description="a gateway id")]
FilterQuery = Annotated[Filter | None, Query()]

PAGE_MAX = 1000
OFFSET_MAX = 1_000_000_000
Limit = Annotated[int, Query(ge=1, le=PAGE_MAX, description="rows per page")]
Offset = Annotated[int, Query(ge=0, le=OFFSET_MAX, description="rows to skip")]

IdempotencyKey = Annotated[
    Key | None,
    Header(
        alias="Idempotency-Key",
        description="Retry-safe writes: the same key returns the stored answer; the same key"
        " with a different body is refused (422).",
    ),
]
