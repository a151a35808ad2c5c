"""The field types of the REST API, from the bounds in ``warelink.protocol.limits``.

A value the gateway's wire decoders refuse is refused here too, with a 422 that names
the field, so nothing a client posts can overflow a column or an index, or hold a NUL
that PostgreSQL text cannot. Body models use the plain types; route signatures use the
``…Path`` and ``…Query`` aliases, which carry the same constraints as parameters.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated

from fastapi import Path, Query
from pydantic import AfterValidator, BeforeValidator, Field, StringConstraints, WithJsonSchema

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

# ------------------------------------------------------------------ route parameters

SitePath = Annotated[SiteId, Path()]
DevicePath = Annotated[DeviceId, Path()]
CodePath = Annotated[Code, Path()]
KeyPath = Annotated[Key, Path()]
ReferencePath = Annotated[Reference, Path()]
SiteQuery = Annotated[SiteId | None, Query()]
CodeQuery = Annotated[Code | None, Query()]
