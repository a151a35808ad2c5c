"""One encoding of a quantity in every answer: the exact decimal as a JSON string.

Positional, without trailing zeros ("12.5", "10", "-3"), never an exponent and never a
float that rounds: whether the answer comes from a response model (``QuantityOut``) or is
built by hand (``json_response``), a write or a read, stored for a retry or not.
"""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from tests.hub.stock_setup import two_sites
from tests.support.api import Api
from warelink.hub.api.fields import QUANTITY_TEXT
from warelink.hub.stock.balances import quantity_text

S = "/api/v1/sites/north"
TINY = "0.000000000000000000000000000001"  # a count may have 30 places; a float has not


@pytest.mark.parametrize(
    ("value", "text"),
    [("12.500", "12.5"), ("1E+1", "10"), ("-3", "-3"), ("-0.00", "0"), ("0E-7", "0"),
     ("1e-30", TINY), ("123456789012345678901234567890.5", "123456789012345678901234567890.5")],
)  # fmt: skip
def test_a_quantity_is_written_positional_exact_and_without_trailing_zeros(
    value: str, text: str
) -> None:
    assert quantity_text(Decimal(value)) == text
    assert re.fullmatch(QUANTITY_TEXT, text)  # what the OpenAPI schema promises


async def test_every_answer_writes_quantities_the_same_way(api: Api) -> None:
    await two_sites(api)  # 100 PLAIN at A1
    admin = await api.client("alice")
    body = {"location": "D1", "sku": "PLAIN", "quantity": "12.50"}
    received = await admin.post(f"{S}/receipts", json=body, headers={"Idempotency-Key": "r1"})
    again = await admin.post(f"{S}/receipts", json=body, headers={"Idempotency-Key": "r1"})
    assert received.status_code == again.status_code == 201, received.text
    assert received.json()["quantity"] == again.json()["quantity"] == "12.5"

    found = {"location": "A1", "sku": "PLAIN", "quantity": TINY, "reason": "FOUND"}
    adjusted = await admin.post(f"{S}/adjustments", json=found)
    assert adjusted.status_code == 201 and adjusted.json()["quantity"] == TINY, adjusted.text
    stock = (await admin.get(f"{S}/stock")).json()["lines"]
    assert {(line["location"], line["quantity"]) for line in stock} == {
        ("A1", f"100{TINY[1:]}"), ("D1", "12.5")}  # fmt: skip

    changed = await admin.patch(f"{S}/locations/A1", json={"capacity": "250.0"})
    assert changed.status_code == 200 and changed.json()["capacity"] == "250", changed.text
    assert (await admin.get(f"{S}/locations/A1")).json() == changed.json()

    schema = (await admin.get("/openapi.json")).json()["components"]["schemas"]
    assert schema["StockLine"]["properties"]["quantity"]["type"] == "string"
