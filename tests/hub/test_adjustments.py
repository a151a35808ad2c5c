"""Adjustments: posted at once within the threshold, else approved by another supervisor."""

from __future__ import annotations

from decimal import Decimal

from tests.hub.stock_setup import audit_actions, balance, drift, make_site, post, receipt
from tests.support.api import Api
from warelink.hub.access import Role

URL = "/api/v1/sites/north/adjustments"


async def _movements(api: Api, adjustment_id: int) -> list[tuple[object, ...]]:
    async with api.hub.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT from_location, to_location, quantity, kind, reason, from_status, to_status"
            " FROM movements WHERE document = %s ORDER BY id",
            (f"adjustment:{adjustment_id}",),
        )
        return list(await cur.fetchall())


async def test_a_small_adjustment_is_posted_at_once(api: Api) -> None:
    assert api.hub.settings.adjustment_approval_threshold == 10
    await make_site(api, "north")
    await post(api, receipt("north", 20))
    clerk = await api.client("bob", Role.CLERK, sites=["north"])
    lost = await clerk.post(URL, json={"location": "A1", "sku": "S1", "quantity": -3,
                                       "reason": "LOST", "note": "shelf 2"})  # fmt: skip
    assert lost.status_code == 201, lost.text
    body = lost.json()
    assert (body["state"], body["quantity"], body["decided_by"]) == ("posted", "-3", "bob")
    assert await _movements(api, body["id"]) == [
        ("A1", "ADJUSTMENT", Decimal(3), "adjustment", "LOST", "available", "available")
    ]
    found = await clerk.post(URL, json={"location": "A1", "sku": "S1", "quantity": "10",
                                        "reason": "FOUND", "status": "damaged"})  # fmt: skip
    assert found.json()["state"] == "posted"  # exactly the threshold: still at once
    assert await balance(api, "north") == 17
    assert await balance(api, "north", status="damaged") == 10
    assert await audit_actions(api, f"adjustment:{body['id']}") == [("bob", "adjustment.request")]
    assert await drift(api) == []


async def test_a_large_adjustment_waits_for_another_supervisor(api: Api) -> None:
    await make_site(api, "north")
    await post(api, receipt("north", 50))
    clerk = await api.client("bob", Role.CLERK, sites=["north"])
    sue = await api.client("sue", Role.SUPERVISOR, sites=["north"])
    tom = await api.client("tom", Role.SUPERVISOR, sites=["north"])
    asked = await sue.post(URL, json={"location": "A1", "sku": "S1", "quantity": -11,
                                      "reason": "DAMAGED"})  # fmt: skip
    assert asked.status_code == 201 and asked.json()["state"] == "pending"
    one = f"{URL}/{asked.json()['id']}"
    assert await _movements(api, asked.json()["id"]) == []
    pending = (await sue.get(URL, params={"state": "pending"})).json()
    assert [a["id"] for a in pending] == [asked.json()["id"]]

    assert (await clerk.post(f"{one}/approve")).status_code == 403  # no adjust.approve
    own = await sue.post(f"{one}/approve")
    assert own.status_code == 403 and "requested by sue" in own.json()["detail"]
    approved = await tom.post(f"{one}/approve")
    assert approved.status_code == 200, approved.text
    assert (approved.json()["state"], approved.json()["decided_by"]) == ("posted", "tom")
    assert len(approved.json()["movements"]) == 1
    assert await balance(api, "north") == 39
    assert (await tom.post(f"{one}/approve")).status_code == 409
    assert (await tom.post(f"{one}/reject")).status_code == 409

    other = await clerk.post(URL, json={"location": "A1", "sku": "S1", "quantity": 30,
                                        "reason": "FOUND"})  # fmt: skip
    rejected = await sue.post(f"{URL}/{other.json()['id']}/reject")
    assert rejected.status_code == 200 and rejected.json()["state"] == "rejected"
    assert await _movements(api, other.json()["id"]) == []
    assert await balance(api, "north") == 39
    assert await audit_actions(api, f"adjustment:{asked.json()['id']}") == [
        ("sue", "adjustment.request"), ("tom", "adjustment.approve"),
    ]  # fmt: skip


async def test_adjustment_requests_are_checked_and_idempotent(api: Api) -> None:
    await make_site(api, "north")
    admin = await api.client("alice")
    codes = (await admin.get("/api/v1/reason-codes")).json()
    assert {"code": "LOST", "description": "not found"} in codes
    good = {"location": "A1", "sku": "S1", "quantity": 2, "reason": "FOUND"}
    for change, words in (
        ({"reason": "WHIM"}, "reason code"),
        ({"location": "SCRAP"}, "virtual"),
        ({"sku": "NOPE"}, "NOPE"),
        ({"quantity": 0}, "zero"),
        ({"quantity": "1e-40"}, "30 places"),
        ({"serial": "SN1"}, "serial"),
    ):
        answer = await admin.post(URL, json=good | change)
        assert answer.status_code == 422, (change, answer.text)
        assert words in str(answer.json()["detail"]), answer.text
    assert (await admin.post(URL, json=good | {"status": "lost"})).status_code == 422
    unknown = await admin.post(URL, json=good | {"location": "B9"})
    assert unknown.status_code == 404 and "no location 'B9'" in unknown.json()["detail"]
    assert (await admin.post("/api/v1/sites/nowhere/adjustments", json=good)).status_code == 404
    assert (await admin.get(f"{URL}/12345")).status_code == 404

    headers = {"Idempotency-Key": "adj-1"}
    first = await admin.post(URL, json=good, headers=headers)
    again = await admin.post(URL, json=good, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert await balance(api, "north") == 2  # posted once
    changed = await admin.post(URL, json=good | {"quantity": 3}, headers=headers)
    assert changed.status_code == 422 and "different body" in changed.json()["detail"]
