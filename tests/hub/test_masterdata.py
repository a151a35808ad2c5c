"""Master data over REST: sites, zones, locations, SKUs, lots, serials and licence plates.

The real app on a fresh database: every rule (check digits, unknown references, virtual
locations, site scope, verification of SKUs the ledger made) against real rows.
"""

from __future__ import annotations

import httpx

from tests.support.api import Api
from warelink.hub.access import Role
from warelink.protocol.epc import Sgtin96, Sscc96, encode_epc_hex
from warelink.protocol.gs1 import check_digit

GTIN = "09506000134352"  # a valid GTIN-14
SSCC = "106141411234567897"  # a valid SSCC-18


def with_check(digits: str) -> str:
    return digits + str(check_digit(digits))


async def audit_count(api: Api, action: str) -> int:
    async with api.hub.pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM audit_log WHERE action = %s", (action,))
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def make_site(admin: httpx.AsyncClient, site: str = "north") -> None:
    r = await admin.post("/api/v1/sites", json={"id": site, "name": site.title()})
    assert r.status_code == 201, r.text


async def test_site_is_created_with_its_virtual_locations_and_counts(api: Api) -> None:
    admin = await api.client("alice")
    r = await admin.post("/api/v1/sites", json={"id": "north", "name": "North DC",
                                                 "gln": with_check("406141100000")})  # fmt: skip
    assert r.status_code == 201, r.text
    assert r.json()["virtual_locations"] == 5 and r.json()["locations"] == 0
    await admin.post("/api/v1/sites/north/zones", json={"code": "A"})
    await admin.post("/api/v1/sites/north/locations", json={"code": "A-01", "zone": "A"})
    detail = (await admin.get("/api/v1/sites/north")).json()
    assert (detail["zones"], detail["locations"], detail["name"]) == (1, 1, "North DC")
    assert (await admin.post("/api/v1/sites", json={"id": "north"})).status_code == 409
    bad_gln = await admin.post("/api/v1/sites", json={"id": "south", "gln": "4061411000001"})
    assert bad_gln.status_code == 422 and "check digit" in bad_gln.text
    assert (await admin.get("/api/v1/sites/nowhere")).status_code == 404
    r = await admin.patch("/api/v1/sites/north", json={"name": "North"})
    assert r.status_code == 200 and r.json()["name"] == "North"
    assert await audit_count(api, "site.create") == 1
    assert await audit_count(api, "site.update") == 1


async def test_site_scoped_identities_cannot_create_sites_nor_see_others(api: Api) -> None:
    admin = await api.client("alice")
    await make_site(admin, "north")
    await make_site(admin, "south")
    local_admin = await api.client("nora", Role.ADMIN, sites=["north"])
    r = await local_admin.post("/api/v1/sites", json={"id": "west"})
    assert r.status_code == 403 and "sites" in r.json()["detail"]
    assert (await local_admin.get("/api/v1/sites/south")).status_code == 403
    assert (await local_admin.get("/api/v1/sites/south/zones")).status_code == 403
    clerk = await api.client("bob", Role.CLERK, sites=["north"])
    assert (await clerk.get("/api/v1/sites/north/zones")).status_code == 200
    r = await clerk.post("/api/v1/sites/north/zones", json={"code": "B"})
    assert r.status_code == 403 and "masterdata.write" in r.json()["detail"]
    assert (await api.anonymous().get("/api/v1/skus")).status_code == 401


async def test_zones_and_locations_follow_their_site_and_zone(api: Api) -> None:
    admin = await api.client("alice")
    await make_site(admin)
    r = await admin.post("/api/v1/sites/north/zones", json={"code": "DOCK", "kind": "dock"})
    assert r.status_code == 201 and r.json() == {"site": "north", "code": "DOCK",
                                                 "name": "", "kind": "dock"}  # fmt: skip
    assert (await admin.post("/api/v1/sites/north/zones", json={"code": "DOCK"})).status_code == 409
    assert (await admin.post("/api/v1/sites/nowhere/zones", json={"code": "X"})).status_code == 404
    r = await admin.post("/api/v1/sites/north/zones", json={"code": "Q", "kind": "attic"})
    assert r.status_code == 422

    location = {"code": "D-01", "zone": "DOCK", "x": 1.5, "y": -2.0, "capacity": 40,
                "sku_class": "bulky", "held": True, "gln": with_check("406141100001")}  # fmt: skip
    r = await admin.post("/api/v1/sites/north/locations", json=location)
    assert r.status_code == 201, r.text
    assert r.json() | location | {"capacity": "40"} == r.json()  # decimals answer as text
    assert r.json()["kind"] == "internal"
    r = await admin.post("/api/v1/sites/north/locations", json={"code": "D-02", "zone": "NOPE"})
    assert r.status_code == 422 and "unknown zone 'NOPE'" in r.json()["detail"]
    r = await admin.patch("/api/v1/sites/north/locations/D-01", json={"held": False, "x": None})
    assert r.status_code == 200 and (r.json()["held"], r.json()["x"]) == (False, None)
    assert r.json()["capacity"] == "40"  # untouched fields stay
    listed = (await admin.get("/api/v1/sites/north/locations", params={"zone": "DOCK"})).json()
    assert [loc["code"] for loc in listed["items"]] == ["D-01"]


async def test_virtual_locations_cannot_be_created_or_edited(api: Api) -> None:
    admin = await api.client("alice")
    await make_site(admin)
    r = await admin.post("/api/v1/sites/north/locations", json={"code": "SUPPLIER"})
    assert r.status_code == 422 and "virtual" in r.json()["detail"]
    r = await admin.patch("/api/v1/sites/north/locations/TRANSIT", json={"held": True})
    assert r.status_code == 422 and "virtual" in r.json()["detail"]
    async with api.hub.pool.connection() as conn:
        cur = await conn.execute("SELECT held FROM locations WHERE code = 'TRANSIT'")
        assert await cur.fetchone() == (False,)


async def test_sku_rules_gtin_unit_and_paging(api: Api) -> None:
    admin = await api.client("alice")
    r = await admin.post("/api/v1/skus", json={
        "code": "WIDGET", "gtin": GTIN[1:], "unit": "CS", "unit_weight_kg": "0.25",
        "weight_tolerance_pct": 3, "tracking": "lot", "shelf_life_days": 90,
        "requires_qc": True, "pick_policy": "fefo"})  # fmt: skip
    assert r.status_code == 201, r.text
    sku = r.json()
    assert (sku["gtin"], sku["unit_weight_kg"], sku["verified"]) == (GTIN, "0.25", True)
    assert (await admin.get("/api/v1/skus/WIDGET")).json() == sku  # a read answers the same
    bad = GTIN[:-1] + str((int(GTIN[-1]) + 1) % 10)
    r = await admin.post("/api/v1/skus", json={"code": "B", "gtin": bad})
    assert r.status_code == 422 and "check digit" in r.text
    r = await admin.post("/api/v1/skus", json={"code": "C", "gtin": GTIN})
    assert r.status_code == 422 and "belongs to SKU 'WIDGET'" in r.json()["detail"]
    r = await admin.post("/api/v1/skus", json={"code": "D", "unit": "XYZ"})
    assert r.status_code == 422 and "unknown unit 'XYZ'" in r.json()["detail"]
    r = await admin.post("/api/v1/skus", json={"code": "E", "unit_weight_kg": 0})
    assert r.status_code == 422

    for n in range(5):
        assert (await admin.post("/api/v1/skus", json={"code": f"P{n}"})).status_code == 201
    codes, offset = [], 0
    while offset is not None:
        page = (await admin.get("/api/v1/skus", params={"limit": 2, "offset": offset})).json()
        codes += [s["code"] for s in page["items"]]
        offset = page["next_offset"]
    assert codes == ["P0", "P1", "P2", "P3", "P4", "WIDGET"]
    assert (await admin.get("/api/v1/skus", params={"limit": 0})).status_code == 422


async def test_updating_an_unverified_sku_verifies_it(api: Api) -> None:
    admin = await api.client("alice")
    async with api.hub.pool.connection() as conn:
        await conn.execute("INSERT INTO skus (code, gtin, verified) VALUES (%s, %s, false)",
                           (GTIN, GTIN))  # fmt: skip
    unverified = (await admin.get("/api/v1/skus", params={"verified": False})).json()["items"]
    assert [s["code"] for s in unverified] == [GTIN]
    r = await admin.patch(f"/api/v1/skus/{GTIN}", json={"name": "Widget", "unit_weight_kg": 1.2})
    assert r.status_code == 200, r.text
    assert (r.json()["verified"], r.json()["name"], r.json()["gtin"]) == (True, "Widget", GTIN)
    assert (await admin.patch("/api/v1/skus/NOPE", json={"name": "x"})).status_code == 404
    assert (await admin.patch(f"/api/v1/skus/{GTIN}", json={})).status_code == 422


async def test_lots_and_serials_with_epcs_of_their_sku(api: Api) -> None:
    admin = await api.client("alice")
    await admin.post("/api/v1/skus", json={"code": "W", "gtin": GTIN, "tracking": "serial"})
    r = await admin.post("/api/v1/skus/W/lots", json={"lot": "L/01", "expiry": "2030-01-31"})
    assert r.status_code == 201 and r.json()["expiry"] == "2030-01-31"
    assert (await admin.get("/api/v1/skus/W/lots/L/01")).json()["lot"] == "L/01"
    r = await admin.patch("/api/v1/skus/W/lots/L/01", json={"expiry": None})
    assert r.status_code == 200 and r.json()["expiry"] is None
    assert (await admin.post("/api/v1/skus/NOPE/lots", json={"lot": "1"})).status_code == 404

    own = encode_epc_hex(Sgtin96.from_gtin(GTIN, serial=7, company_prefix_length=7))
    other = encode_epc_hex(
        Sgtin96.from_gtin(with_check("0950600013436"), serial=7, company_prefix_length=7)
    )
    r = await admin.post("/api/v1/skus/W/serials", json={"serial": "7", "epc": own.lower()})
    assert r.status_code == 201 and r.json()["epc"] == own.upper()
    r = await admin.post("/api/v1/skus/W/serials", json={"serial": "8", "epc": other})
    assert r.status_code == 422 and "encodes GTIN" in r.json()["detail"]
    r = await admin.post("/api/v1/skus/W/serials", json={"serial": "9", "epc": own})
    assert r.status_code == 422 and "taken by W/7" in r.json()["detail"]
    r = await admin.post("/api/v1/skus/W/serials", json={"serial": "9", "epc": "AB" * 11})
    assert r.status_code == 422
    sscc_epc = encode_epc_hex(Sscc96.from_sscc(SSCC, company_prefix_length=7))
    r = await admin.post("/api/v1/skus/W/serials", json={"serial": "9", "epc": sscc_epc})
    assert r.status_code == 422 and "SGTIN-96" in r.json()["detail"]
    assert (await admin.get("/api/v1/skus/W/serials/404")).json() == {"detail": "no serial W/404"}


async def test_licence_plates_check_the_sscc_and_keep_to_their_site(api: Api) -> None:
    admin = await api.client("alice")
    await make_site(admin, "north")
    await make_site(admin, "south")
    epc = encode_epc_hex(Sscc96.from_sscc(SSCC, company_prefix_length=7))
    r = await admin.post("/api/v1/lpns", json={"code": SSCC, "site": "north", "epc": epc})
    assert r.status_code == 201, r.text
    r = await admin.post("/api/v1/lpns", json={"code": SSCC[:-1] + "0"})
    assert r.status_code == 422 and "SSCC" in r.text
    assert (await admin.post("/api/v1/lpns", json={"code": "TOTE-1"})).status_code == 201
    assert (
        await admin.post("/api/v1/lpns", json={"code": "TOTE-2", "site": "south"})
    ).status_code == 201
    r = await admin.post("/api/v1/lpns", json={"code": "TOTE-3", "epc": epc})
    assert r.status_code == 422 and "taken by " + SSCC in r.json()["detail"]

    clerk = await api.client("bob", Role.CLERK, sites=["north"])
    seen = [p["code"] for p in (await clerk.get("/api/v1/lpns")).json()["items"]]
    assert seen == [SSCC, "TOTE-1"]
    assert (await clerk.get("/api/v1/lpns/TOTE-2")).status_code == 404
    writer = await api.client("nora", Role.ADMIN, sites=["north"])
    r = await writer.post("/api/v1/lpns", json={"code": "TOTE-4", "site": "south"})
    assert r.status_code == 422 and "no access to site 'south'" in r.json()["detail"]


async def test_writes_are_idempotent_and_audited_once(api: Api) -> None:
    admin = await api.client("alice")
    headers = {"Idempotency-Key": "sku-1"}
    first = await admin.post("/api/v1/skus", json={"code": "K"}, headers=headers)
    again = await admin.post("/api/v1/skus", json={"code": "K"}, headers=headers)
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    other = await admin.post("/api/v1/skus", json={"code": "K2"}, headers=headers)
    assert other.status_code == 422
    assert await audit_count(api, "skus.create") == 1
