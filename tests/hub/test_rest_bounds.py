"""Every REST entrance holds values to the bounds of ``protocol/limits.py``, as the wire does.

A code of 4,000 characters, a NUL or control character in a code, a quantity of 2^62, a
quantity that must be positive and is not, an id beyond bigint: each is refused with 422
whose detail names the field, on a representative write or query route of every module.
A valid request to each of those routes (values at the bounds included) still succeeds.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.hub.stock_setup import two_sites
from tests.support.api import Api
from warelink.protocol.limits import CODE_MAX, ID_MAX, QUANTITY_MAX, TEXT_MAX

S = "/api/v1/sites/north"
LONG = "L" * 4000
HUGE = 2**62
BEYOND_BIGINT = 2**63

RECEIPT = {"location": "D1", "sku": "PLAIN", "quantity": 5}
NOTICE = {"reference": "PO-1", "lines": [{"sku": "PLAIN", "quantity": 2}]}
TRANSFER = {"from_site": "north", "to_site": "south",
            "lines": [{"location": "A1", "sku": "PLAIN", "quantity": 1}]}  # fmt: skip
ORDER = {"reference": "SO-1", "lines": [{"sku": "PLAIN", "quantity": 1}]}
VERIFICATION = {"sku": "PLAIN", "quantity": 1}
COUNTED = {"lines": [{"sku": "PLAIN", "counted": 1}]}
ADJUSTMENT = {"location": "A1", "sku": "PLAIN", "quantity": 2, "reason": "FOUND"}
REPORT = {"subject": "leaking roof", "location": "A1"}
COMMAND = {"action": "tare", "key": "tare-1"}
COMMANDS = f"{S}/devices/scale-1/commands"


def _nested(depth: int) -> dict[str, Any]:
    args: dict[str, Any] = {"v": 1}
    for _ in range(depth):
        args = {"n": args}
    return args


Case = tuple[str, str, Any, str]
"""method, URL, JSON body, and the field the 422 must name (or the status expected)."""

REFUSED: dict[str, list[Case]] = {
    "inbound": [
        ("POST", f"{S}/receipts", RECEIPT | {"location": LONG}, "location"),
        ("POST", f"{S}/receipts", RECEIPT | {"sku": "PL\x00AIN"}, "sku"),
        ("POST", f"{S}/receipts", RECEIPT | {"lot": "L\n1"}, "lot"),
        ("POST", f"{S}/receipts", RECEIPT | {"quantity": HUGE}, "quantity"),
        ("POST", f"{S}/receipts", RECEIPT | {"quantity": 0}, "quantity"),
        ("POST", f"{S}/receipts", RECEIPT | {"notice": BEYOND_BIGINT}, "notice"),
        ("POST", f"/api/v1/sites/{LONG}/receipts", RECEIPT, "site"),
        ("POST", "/api/v1/sites/no%00rth/receipts", RECEIPT, "site"),
        ("POST", f"{S}/notices", NOTICE | {"reference": "PO\x01"}, "reference"),
        (
            "POST",
            f"{S}/notices",
            NOTICE | {"lines": [{"sku": "PLAIN", "quantity": -1}]},
            "quantity",
        ),
        ("POST", f"{S}/notices/{BEYOND_BIGINT}/close", None, "notice"),
        ("POST", "/api/v1/transfers", TRANSFER | {"to_site": "south\x00"}, "to_site"),
        ("GET", f"{S}/putaway/suggestion?sku=PLAIN&quantity={HUGE}", None, "quantity"),
        ("GET", f"{S}/putaway/suggestion?sku=PLAIN&quantity=1&from={LONG}", None, "from"),
        ("GET", f"/api/v1/transfers?site={LONG}", None, "site"),
    ],
    "outbound": [
        ("POST", f"{S}/orders", ORDER | {"reference": LONG}, "reference"),
        (
            "POST",
            f"{S}/orders",
            ORDER | {"lines": [{"sku": "PLAIN", "quantity": HUGE}]},
            "quantity",
        ),
        ("POST", f"{S}/orders", ORDER | {"customer": "AC\x00ME"}, "customer"),
        ("POST", f"{S}/pick-tasks/{BEYOND_BIGINT}/pick", {"location": "A1", "quantity": 1}, "task"),
        ("POST", f"{S}/pick-tasks/1/pick", {"location": LONG, "quantity": 1}, "location"),
        ("POST", f"{S}/verifications", VERIFICATION | {"quantity": 0}, "quantity"),
        ("POST", f"{S}/verifications", VERIFICATION | {"epcs": ["XYZ"]}, "epcs"),
        ("GET", f"{S}/pick-tasks?order=SO%00", None, "order"),
    ],
    "stock_control": [
        ("POST", f"{S}/counts", {"location": LONG}, "location"),
        ("POST", f"{S}/counts", {"location": "A\x001"}, "location"),
        ("POST", f"{S}/counts/{BEYOND_BIGINT}/lines", COUNTED, "count_id"),
        ("POST", f"{S}/counts/1/lines", {"lines": [{"sku": "PLAIN", "counted": HUGE}]}, "counted"),
        ("POST", f"{S}/counts/1/lines", {"lines": [{"sku": "PLAIN", "counted": -1}]}, "counted"),
        ("POST", f"{S}/adjustments", ADJUSTMENT | {"quantity": -HUGE}, "quantity"),
        ("POST", f"{S}/adjustments", ADJUSTMENT | {"sku": "S\x001"}, "sku"),
        ("POST", f"{S}/adjustments", ADJUSTMENT | {"note": "x" * (TEXT_MAX + 1)}, "note"),
        ("GET", f"{S}/counts?location={LONG}", None, "location"),
        ("GET", f"{S}/adjustments/{BEYOND_BIGINT}", None, "adjustment_id"),
    ],
    "exceptions": [
        ("POST", f"{S}/exceptions", REPORT | {"subject": LONG}, "subject"),
        ("POST", f"{S}/exceptions", REPORT | {"location": "A\x001"}, "location"),
        ("POST", f"/api/v1/exceptions/{BEYOND_BIGINT}/assign", {}, "exception_id"),
        ("POST", "/api/v1/exceptions/1/resolve", {"resolution": "ok\x00"}, "resolution"),
        ("GET", "/api/v1/exceptions?assignee=a%00b", None, "assignee"),
    ],
    "masterdata": [
        ("POST", f"{S}/locations", {"code": LONG}, "code"),
        ("POST", "/api/v1/skus", {"code": "NEW\x00"}, "code"),
        ("PATCH", f"{S}/locations/{LONG}", {"held": True}, "code"),
        ("POST", "/api/v1/sites", {"id": "x" * (ID_MAX + 1)}, "id"),
        ("GET", f"/api/v1/lpns?site={LONG}", None, "site"),
    ],
    "commands": [
        ("POST", COMMANDS, COMMAND | {"action": "t\x00re"}, "action"),
        ("POST", COMMANDS, COMMAND | {"key": LONG}, "key"),
        ("POST", COMMANDS, COMMAND | {"args": _nested(12)}, "args"),
        ("POST", COMMANDS, COMMAND | {"args": {"blob": "x" * 70_000}}, "args"),
        ("POST", COMMANDS, COMMAND | {"args": {"v": "a\x00"}}, "args"),
        ("POST", "/api/v1/sites/north/devices/sc%00ale/commands", COMMAND, "device"),
        ("GET", f"/api/v1/commands/{LONG}", None, "key"),
    ],
    "sites, identities, analytics, quarantine": [
        ("GET", f"/api/v1/sites/{LONG}/stock", None, "site"),
        ("GET", "/api/v1/audit?actor=a%00b", None, "actor"),
        ("POST", "/api/v1/identities/alice/keys", {"name": "k\x00"}, "name"),
        ("GET", f"/api/v1/sites/{LONG}/kpis", None, "site"),
        ("GET", f"/api/v1/quarantine?gateway={LONG}", None, "gateway"),
        ("POST", f"/api/v1/quarantine/{BEYOND_BIGINT}/dismiss", {}, "entry"),
    ],
}


def _shown(method: str, url: str, body: Any) -> str:
    return f"{method} {url[:70]} {str(body)[:70]}"


@pytest.mark.parametrize("module", REFUSED)
async def test_out_of_bounds_values_are_refused_naming_the_field(api: Api, module: str) -> None:
    admin = await api.client("alice")
    wrong = []
    for method, url, body, field in REFUSED[module]:
        answer = await admin.request(method, url, json=body)
        detail = answer.json()["detail"]
        if answer.status_code != 422 or not isinstance(detail, list):  # a field error
            wrong.append(f"{_shown(method, url, body)}: {answer.status_code} {str(detail)[:200]}")
        elif not any(field in [str(part) for part in error["loc"]] for error in detail):
            named = [error["loc"] for error in detail]
            wrong.append(f"{_shown(method, url, body)}: {field!r} not named in {named}")
    assert wrong == []


ACCEPTED: dict[str, list[Case]] = {
    "inbound": [
        ("POST", f"{S}/receipts", RECEIPT | {"quantity": QUANTITY_MAX}, "201"),
        ("POST", f"{S}/notices", NOTICE | {"supplier": "ACME Ltd."}, "201"),
        ("POST", "/api/v1/transfers", TRANSFER, "201"),
        ("GET", f"{S}/putaway/suggestion?sku=PLAIN&quantity=1.5&from=D1", None, "200"),
        ("GET", "/api/v1/transfers?site=north", None, "200"),
    ],
    "outbound": [
        ("POST", f"{S}/orders", ORDER | {"customer": "Bob's shop"}, "201"),
        ("POST", f"{S}/verifications", VERIFICATION | {"epcs": ["30" + "A" * 22]}, "201"),
        ("GET", f"{S}/pick-tasks?order=SO-1", None, "200"),
    ],
    "stock_control": [
        ("POST", f"{S}/counts", {"location": "A1"}, "201"),
        ("POST", f"{S}/adjustments", ADJUSTMENT | {"note": "line 1\nline 2"}, "201"),
        ("GET", f"{S}/counts?location=A1", None, "200"),
    ],
    "exceptions": [
        ("POST", f"{S}/exceptions", REPORT, "201"),
        ("GET", "/api/v1/exceptions?site=north&assignee=bob", None, "200"),
    ],
    "masterdata": [
        ("POST", f"{S}/locations", {"code": "B" * CODE_MAX}, "201"),
        ("POST", "/api/v1/skus", {"code": "NEW"}, "201"),
        ("GET", "/api/v1/lpns?site=north", None, "200"),
        ("POST", "/api/v1/sites", {"id": "w" * ID_MAX}, "201"),
    ],
    "commands": [
        ("POST", COMMANDS, COMMAND | {"args": _nested(6)}, "202"),
    ],
}


@pytest.mark.parametrize("module", ACCEPTED)
async def test_valid_requests_within_the_bounds_still_succeed(api: Api, module: str) -> None:
    await two_sites(api)
    admin = await api.client("alice")
    wrong = []
    for method, url, body, status in ACCEPTED[module]:
        answer = await admin.request(method, url, json=body)
        if answer.status_code != int(status):
            wrong.append(f"{_shown(method, url, body)}: {answer.status_code} {answer.text[:200]}")
    assert wrong == []
