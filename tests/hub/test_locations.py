"""One rule for a location a request names, whatever the operation: one the site does not
have is 404 (like an unknown site), a virtual one (SUPPLIER, …) is 422.

Each case is the smallest valid request but for its location, so the answer can only be
the location's: inbound, putaway, transfers, outbound, counts, adjustments, floor reports.
"""

from __future__ import annotations

from typing import Any

from tests.hub.stock_setup import two_sites
from tests.support.api import Api

S = "/api/v1/sites/north"
ONE = {"sku": "PLAIN", "quantity": 1}


def _cases(location: str, task: int, transfer: int) -> list[tuple[str, str, Any]]:
    """method, URL and body of every request that names a location, naming ``location``."""
    return [
        ("POST", f"{S}/receipts", ONE | {"location": location}),
        ("POST", f"{S}/returns", ONE | {"reference": "RMA-1", "location": location}),
        ("POST", f"{S}/qc", ONE | {"decision": "release", "location": location, "reason": "ok"}),
        ("GET", f"{S}/putaway/suggestion?sku=PLAIN&quantity=1&from={location}", None),
        ("POST", f"{S}/putaways", ONE | {"from_location": location, "to_location": "A1"}),
        ("POST", f"{S}/putaways", ONE | {"from_location": "A1", "to_location": location}),
        ("POST", "/api/v1/transfers",
         {"from_site": "north", "to_site": "south", "lines": [ONE | {"location": location}]}),
        ("POST", f"/api/v1/transfers/{transfer}/receipts", {"location": location, "lines": [ONE]}),
        ("POST", f"{S}/orders", {"reference": "SO-2", "lines": [ONE], "staging": location}),
        ("POST", f"{S}/pick-tasks/{task}/pick", {"location": location, "quantity": 1}),
        ("POST", f"{S}/counts", {"location": location}),
        ("POST", f"{S}/adjustments", ONE | {"location": location, "reason": "FOUND"}),
        ("POST", f"{S}/exceptions", {"subject": "leaking roof", "location": location}),
    ]  # fmt: skip


async def test_a_location_is_404_where_the_site_has_none_and_422_where_it_is_virtual(
    api: Api,
) -> None:
    await two_sites(api)
    async with api.hub.pool.connection() as conn:  # the transfer is received at south
        await conn.execute("INSERT INTO locations (site, code, kind) VALUES ('south', 'SUPPLIER',"
                           " 'supplier') ON CONFLICT DO NOTHING")  # fmt: skip
    admin = await api.client("alice")
    order = await admin.post(f"{S}/orders", json={"reference": "SO-1", "lines": [ONE]})
    shipped = await admin.post("/api/v1/transfers", json={
        "from_site": "north", "to_site": "south", "lines": [ONE | {"location": "A1"}]})  # fmt: skip
    assert order.status_code == shipped.status_code == 201, (order.text, shipped.text)
    task, transfer = order.json()["tasks"][0]["id"], shipped.json()["id"]

    wrong = []
    for location, status, says in (("NOWHERE", 404, "no location 'NOWHERE'"),
                                   ("SUPPLIER", 422, "virtual")):  # fmt: skip
        for method, url, body in _cases(location, task, transfer):
            answer = await admin.request(method, url, json=body)
            if answer.status_code != status or says not in str(answer.json()["detail"]):
                wrong.append(f"{method} {url} {body}: {answer.status_code} {answer.text[:160]}")
    assert wrong == []
