"""The exceptions queue: raise, list, take, hand on for review, resolve, with history."""

from __future__ import annotations

from decimal import Decimal

from tests.hub.stock_setup import NOW, make_site, post
from tests.support.api import Api
from warelink.hub.access import Role
from warelink.hub.stock import ledger


async def test_a_floor_report_from_raising_to_resolution(api: Api) -> None:
    await make_site(api, "north")
    clerk = await api.client("bob", Role.CLERK, sites=["north"])
    boss = await api.client("sue", Role.SUPERVISOR, sites=["north"])
    report = {"subject": "leaking roof over A1", "note": "bucket placed", "location": "A1"}
    raised = await clerk.post("/api/v1/sites/north/exceptions", json=report)
    assert raised.status_code == 201, raised.text
    exc = raised.json()
    assert (exc["kind"], exc["state"], exc["opened_by"]) == ("floor_report", "open", "bob")
    assert (exc["owner_role"], exc["reviewer_role"]) == ("clerk", "supervisor")
    assert exc["detail"] == {"note": "bucket placed", "location": "A1"}
    again = await clerk.post("/api/v1/sites/north/exceptions", json=report)
    assert again.status_code == 409 and str(exc["id"]) in again.json()["detail"]

    url = f"/api/v1/exceptions/{exc['id']}"
    taken = await clerk.post(f"{url}/assign", json={})
    assert taken.status_code == 200 and taken.json()["assignee"] == "bob"
    assert (await clerk.post(f"{url}/resolve", json={"resolution": "x"})).status_code == 403
    review = await clerk.post(f"{url}/review", json={"note": "roofer called"})
    assert review.status_code == 200 and review.json()["state"] == "in_review"
    assert (await clerk.post(f"{url}/review", json={})).status_code == 409
    resolved = await boss.post(f"{url}/resolve", json={"resolution": "roof repaired"})
    assert resolved.status_code == 200, resolved.text
    body = resolved.json()
    assert (body["state"], body["resolved_by"], body["resolution"]) == (
        "resolved", "sue", "roof repaired")  # fmt: skip
    assert [(h["actor"], h["action"]) for h in body["history"]] == [
        ("bob", "exception.open"), ("bob", "exception.assign"), ("bob", "exception.review"),
        ("sue", "exception.resolve"),
    ]  # fmt: skip
    assert body["history"][2]["detail"] == {"note": "roofer called"}
    assert (await boss.post(f"{url}/dismiss", json={"resolution": "y"})).status_code == 409
    assert (await clerk.post(f"{url}/assign", json={})).status_code == 409
    # closed, the same subject may be reported anew
    assert (await clerk.post("/api/v1/sites/north/exceptions", json=report)).status_code == 201


async def test_the_queue_filters_pages_and_keeps_to_the_callers_sites(api: Api) -> None:
    await make_site(api, "north")
    await make_site(api, "south", locations=("B1",))
    admin = await api.client("alice")
    for site, subject in (("north", "n1"), ("north", "n2"), ("north", "n3"), ("south", "s1")):
        answer = await admin.post(f"/api/v1/sites/{site}/exceptions", json={"subject": subject})
        assert answer.status_code == 201
    # the ledger opens one too: a negative balance from a device event
    ship = ledger.Leg(
        site="north", sku="S1", quantity=Decimal(2), from_location="A1",
        to_location=ledger.CUSTOMER, kind="ship", occurred_at=NOW, actor="gateway:gw1",
        source_gateway="gw1", source_seq=1,
    )  # fmt: skip
    await post(api, ship)

    clerk = await api.client("bob", Role.CLERK, sites=["north"])
    everything = (await clerk.get("/api/v1/exceptions")).json()
    assert everything["total"] == 4
    assert {e["site"] for e in everything["items"]} == {"north"}
    page = (await clerk.get("/api/v1/exceptions", params={"limit": 2, "offset": 2})).json()
    assert [e["subject"] for e in page["items"]] == [
        e["subject"] for e in everything["items"][2:4]]  # fmt: skip
    assert (page["total"], page["limit"], page["offset"]) == (4, 2, 2)
    negative = (await clerk.get("/api/v1/exceptions", params={"kind": "negative_balance"})).json()
    assert [e["detail"]["quantity"] for e in negative["items"]] == ["-2"]
    assert (await clerk.get("/api/v1/exceptions", params={"site": "south"})).status_code == 403
    assert (await clerk.get("/api/v1/exceptions", params={"state": "resolved"})).json()[
        "total"] == 0  # fmt: skip
    assert (await admin.get("/api/v1/exceptions", params={"site": "south"})).json()["total"] == 1

    south = (await admin.get("/api/v1/exceptions", params={"site": "south"})).json()["items"][0]
    assert (await clerk.get(f"/api/v1/exceptions/{south['id']}")).status_code == 404
    assert (await clerk.post(f"/api/v1/exceptions/{south['id']}/assign", json={})
            ).status_code == 404  # fmt: skip
    ledgers = (await clerk.get(f"/api/v1/exceptions/{negative['items'][0]['id']}")).json()
    assert [(h["actor"], h["action"]) for h in ledgers["history"]] == [
        ("gateway:gw1", "exception.open")]  # fmt: skip
    assert (await api.anonymous().get("/api/v1/exceptions")).status_code == 401


async def test_assigning_and_closing_follow_roles(api: Api) -> None:
    await make_site(api, "north")
    admin = await api.client("alice")
    await api.client("ann", Role.ANALYST, sites=["north"])
    await api.client("cora", Role.COORDINATOR, sites=["north"])
    await api.client("sam", Role.CLERK, sites=["south"])
    raised = await admin.post("/api/v1/sites/north/exceptions", json={"subject": "odd smell"})
    url = f"/api/v1/exceptions/{raised.json()['id']}"
    for who in ("cora", "sam", "nobody"):
        answer = await admin.post(f"{url}/assign", json={"assignee": who})
        assert answer.status_code == 422 and who in answer.json()["detail"], answer.text
    given = await admin.post(f"{url}/assign", json={"assignee": "ann"})
    assert given.status_code == 200 and given.json()["assignee"] == "ann"
    assert given.json()["history"][-1]["detail"] == {"assignee": "ann", "before": None}

    # a reviewer role other than the supervisor's: only it (or an admin) closes
    async with api.hub.pool.connection() as conn, conn.transaction():
        await conn.execute("UPDATE exceptions SET reviewer_role = 'analyst' WHERE id = %s",
                           (raised.json()["id"],))  # fmt: skip
    boss = await api.client("sue", Role.SUPERVISOR, sites=["north"])
    refused = await boss.post(f"{url}/dismiss", json={"resolution": "not mine"})
    assert refused.status_code == 403 and "analyst" in refused.json()["detail"]
    assert (await admin.post(f"{url}/dismiss", json={"resolution": ""})).status_code == 422
    dismissed = await admin.post(f"{url}/dismiss", json={"resolution": "aired out"})
    assert dismissed.status_code == 200 and dismissed.json()["state"] == "dismissed"
    assert (await admin.get("/api/v1/exceptions/999999")).status_code == 404
