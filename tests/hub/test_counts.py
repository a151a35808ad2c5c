"""Cycle counts: blind counting, variance as of counted_at, approval by another, recount."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from tests.hub.stock_setup import (
    audit_actions,
    balance,
    device_ship,
    drift,
    make_site,
    post,
    receipt,
)
from tests.support.api import Api
from warelink.hub.access import Role
from warelink.hub.operations import counts


async def _exception(api: Api, count_id: int) -> tuple[str, dict[str, object]] | None:
    async with api.hub.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT state, detail FROM exceptions WHERE kind = 'count_variance' AND subject = %s",
            (f"count:{count_id}",),
        )
        row = await cur.fetchone()
        return (row[0], row[1]) if row else None


async def test_blind_count_then_approval_posts_the_difference(api: Api) -> None:
    await make_site(api, "north")
    await post(api, receipt("north", 10))
    clerk = await api.client("bob", Role.CLERK, sites=["north"])
    boss = await api.client("sue", Role.SUPERVISOR, sites=["north"])

    opened = await clerk.post("/api/v1/sites/north/counts", json={"location": "A1"})
    assert opened.status_code == 201, opened.text
    count = opened.json()
    assert (count["state"], count["lines"], count["blind"]) == ("open", [], True)

    url = f"/api/v1/sites/north/counts/{count['id']}"
    recorded = await clerk.post(f"{url}/lines", json={"lines": [{"sku": "S1", "counted": 8}]})
    assert recorded.status_code == 200, recorded.text
    body = recorded.json()
    assert body["state"] == "counted" and body["counted_by"] == "bob"
    assert body["lines"] == [
        {"sku": "S1", "lot": "", "counted": "8", "baseline": None, "variance": None}
    ]
    assert (await clerk.get(url)).json()["lines"][0]["baseline"] is None  # blind
    seen = (await boss.get(url)).json()["lines"][0]
    assert (seen["baseline"], seen["variance"]) == ("10", "-2")
    state, detail = await _exception(api, count["id"]) or ("", {})
    assert state == "open" and detail["lines"] == [{"sku": "S1", "lot": ""}]
    assert "10" not in str(detail)  # the queue does not tell the counter the book figure

    assert (await clerk.post(f"{url}/approve")).status_code == 403  # no count.approve
    approved = await boss.post(f"{url}/approve")
    assert approved.status_code == 200, approved.text
    assert approved.json()["state"] == "approved"
    assert approved.json()["lines"][0]["baseline"] == "10"
    assert len(approved.json()["movements"]) == 1
    assert (await boss.post(f"{url}/approve")).status_code == 409

    assert await balance(api, "north") == 8
    async with api.hub.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT from_location, to_location, quantity, kind, actor FROM movements"
            " WHERE document = %s",
            (f"count:{count['id']}",),
        )
        assert await cur.fetchall() == [("A1", "ADJUSTMENT", Decimal(2), "count", "sue")]
        cur = await conn.execute(
            "SELECT baseline, counted FROM count_lines WHERE count_id = %s", (count["id"],)
        )
        assert await cur.fetchall() == [(Decimal(10), Decimal(8))]
    assert (await _exception(api, count["id"]) or ("",))[0] == "resolved"
    assert await audit_actions(api, f"count:{count['id']}") == [
        ("bob", "count.open"), ("bob", "count.record"), ("sue", "count.approve"),
    ]  # fmt: skip
    assert await drift(api) == []


async def test_the_counter_cannot_approve_their_own_count(api: Api) -> None:
    await make_site(api, "north")
    await post(api, receipt("north", 5))
    sue = await api.client("sue", Role.SUPERVISOR)
    tom = await api.client("tom", Role.SUPERVISOR)
    count = (await sue.post("/api/v1/sites/north/counts", json={"location": "A1"})).json()
    url = f"/api/v1/sites/north/counts/{count['id']}"
    await sue.post(f"{url}/lines", json={"lines": [{"sku": "S1", "counted": 6}]})
    own = await sue.post(f"{url}/approve")
    assert own.status_code == 403 and "another supervisor" in own.json()["detail"]
    assert await balance(api, "north") == 5
    assert (await tom.post(f"{url}/approve")).status_code == 200
    assert await balance(api, "north") == 6


async def test_baseline_is_the_ledger_as_of_counted_at_with_late_events(api: Api) -> None:
    await make_site(api, "north")
    await post(api, receipt("north", 10))
    clerk = await api.client("bob", Role.CLERK, sites=["north"])
    boss = await api.client("sue", Role.SUPERVISOR, sites=["north"])
    counted_at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30)
    count = (await clerk.post("/api/v1/sites/north/counts", json={"location": "A1"})).json()
    url = f"/api/v1/sites/north/counts/{count['id']}"
    recorded = await clerk.post(f"{url}/lines", json={
        "lines": [{"sku": "S1", "counted": 10}], "counted_at": counted_at.isoformat()})  # fmt: skip
    assert recorded.status_code == 200, recorded.text
    assert await _exception(api, count["id"]) is None  # 10 = 10: no variance

    # a shipment that happened before the count arrives late; one after it does not count
    await post(api, device_ship("north", 3, at=counted_at - dt.timedelta(minutes=5), seq=1))
    await post(api, device_ship("north", 1, at=counted_at + dt.timedelta(minutes=5), seq=2))
    line = (await boss.get(url)).json()["lines"][0]
    assert (line["baseline"], line["variance"]) == ("7", "3")

    assert (await boss.post(f"{url}/approve")).status_code == 200
    assert await balance(api, "north") == 10 - 3 - 1 + 3  # the shelf as counted, less 1 since

    # after approval, a late event dated before the count is compensated: the count stands
    await post(api, device_ship("north", 2, at=counted_at - dt.timedelta(minutes=1), seq=3))
    assert await balance(api, "north") == 9
    assert await drift(api) == []


async def test_recount_and_reject_follow_the_state_machine(api: Api) -> None:
    await make_site(api, "north")
    await post(api, receipt("north", 4))
    clerk = await api.client("bob", Role.CLERK, sites=["north"])
    boss = await api.client("sue", Role.SUPERVISOR, sites=["north"])
    first = (await clerk.post("/api/v1/sites/north/counts", json={"location": "A1"})).json()
    url = f"/api/v1/sites/north/counts/{first['id']}"
    assert (await boss.post(f"{url}/approve")).status_code == 409  # not counted yet
    await clerk.post(f"{url}/lines", json={"lines": [{"sku": "S1", "counted": 1}]})
    again = await clerk.post(f"{url}/lines", json={"lines": [{"sku": "S1", "counted": 2}]})
    assert again.status_code == 409

    recount = await boss.post(f"{url}/recount")
    assert recount.status_code == 201, recount.text
    second = recount.json()
    assert (second["state"], second["recount_of"]) == ("open", first["id"])
    assert (await boss.get(url)).json()["recount"] == second["id"]
    assert (await boss.get(url)).json()["state"] == "recount"
    assert (await _exception(api, first["id"]) or ("",))[0] == "dismissed"
    assert (await boss.post(f"{url}/reject")).status_code == 409  # recount is final

    url2 = f"/api/v1/sites/north/counts/{second['id']}"
    await clerk.post(f"{url2}/lines", json={"lines": [{"sku": "S1", "counted": 3}]})
    rejected = await boss.post(f"{url2}/reject")
    assert rejected.status_code == 200 and rejected.json()["state"] == "rejected"
    assert (await boss.post(f"{url2}/approve")).status_code == 409
    assert await balance(api, "north") == 4  # nothing posted
    listed = (await boss.get("/api/v1/sites/north/counts", params={"state": "rejected"})).json()
    assert [c["id"] for c in listed] == [second["id"]]


async def test_a_complete_count_counts_what_is_missing_as_zero(api: Api) -> None:
    await make_site(api, "north")
    await post(api, receipt("north", 10), receipt("north", 5, sku="S2"),
               receipt("north", 2, sku="S2", status="damaged"))  # fmt: skip
    clerk = await api.client("bob", Role.CLERK, sites=["north"])
    boss = await api.client("sue", Role.SUPERVISOR, sites=["north"])
    count = (await clerk.post("/api/v1/sites/north/counts", json={"location": "A1"})).json()
    url = f"/api/v1/sites/north/counts/{count['id']}"
    await clerk.post(f"{url}/lines", json={"lines": [{"sku": "S1", "counted": 10}]})
    lines = {line["sku"]: line for line in (await boss.get(url)).json()["lines"]}
    assert (lines["S2"]["counted"], lines["S2"]["baseline"]) == ("0", "7")  # all statuses
    assert (await boss.post(f"{url}/approve")).status_code == 200
    assert await balance(api, "north", "S2") == 0
    assert await balance(api, "north", "S2", status="damaged") == 0
    assert await balance(api, "north", "S1") == 10
    assert await drift(api) == []


async def test_a_device_count_arrives_counted_and_opens_its_variance(api: Api) -> None:
    await make_site(api, "north")
    await post(api, receipt("north", 10))
    async with api.hub.pool.connection() as conn, conn.transaction():
        count_id = await counts.record_counted(
            "north", "A1", [counts.CountedLine("S1", "", Decimal(12))], actor="gateway:gw1",
            counted_at=dt.datetime.now(dt.UTC), conn=conn,
        )  # fmt: skip
    assert (await _exception(api, count_id) or ("",))[0] == "open"
    boss = await api.client("sue", Role.SUPERVISOR)
    approved = await boss.post(f"/api/v1/sites/north/counts/{count_id}/approve")
    assert approved.status_code == 200, approved.text
    assert await balance(api, "north") == 12


async def test_bad_count_requests_get_clear_answers(api: Api) -> None:
    await make_site(api, "north")
    admin = await api.client("alice")
    counts_url = "/api/v1/sites/north/counts"
    assert (await admin.post("/api/v1/sites/nowhere/counts", json={"location": "A1"})
            ).status_code == 404  # fmt: skip
    for location, status in (("ZZ", 404), ("ADJUSTMENT", 422)):  # unknown; virtual
        answer = await admin.post(counts_url, json={"location": location})
        assert answer.status_code == status and location in answer.json()["detail"]
    assert (await admin.get(f"{counts_url}/999")).status_code == 404

    headers = {"Idempotency-Key": "k1"}
    first = await admin.post(counts_url, json={"location": "A1"}, headers=headers)
    replay = await admin.post(counts_url, json={"location": "A1"}, headers=headers)
    assert first.status_code == replay.status_code == 201
    assert first.json()["id"] == replay.json()["id"]
    assert len((await admin.get(counts_url)).json()) == 1
    url = f"{counts_url}/{first.json()['id']}/lines"
    unknown = await admin.post(url, json={"lines": [{"sku": "NOPE", "counted": 1}]})
    assert unknown.status_code == 422 and "NOPE" in unknown.json()["detail"]
    twice = await admin.post(url, json={"lines": [{"sku": "S1", "counted": 1}] * 2})
    assert twice.status_code == 422
    negative = await admin.post(url, json={"lines": [{"sku": "S1", "counted": -1}]})
    assert negative.status_code == 422
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    later = await admin.post(url, json={"lines": [{"sku": "S1", "counted": 1}],
                                        "counted_at": future.isoformat()})  # fmt: skip
    assert later.status_code == 422
    south = await api.client("bob", Role.CLERK, sites=["south"])
    assert (await south.post(counts_url, json={"location": "A1"})).status_code == 403
