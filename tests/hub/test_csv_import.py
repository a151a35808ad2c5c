"""CSV import and export of master data, on the real app and database.

All or nothing: every bad line is reported (line, column, message) and nothing is
written; a dry run reports the same and writes nothing; an export imports back as a no-op.
"""

from __future__ import annotations

import csv
import itertools
import time
import weakref
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.api import Api
from warelink.hub import csvio
from warelink.hub.access import Role
from warelink.protocol.epc import Sgtin96, Sscc96, encode_epc_hex
from warelink.protocol.gs1 import check_digit

GTIN = "09506000134352"
SSCC = "106141411234567897"
BAD_GTIN = GTIN[:-1] + str((int(GTIN[-1]) + 1) % 10)
SKU_HEADER = "code,gtin,name,unit,unit_weight_kg,tracking,requires_qc,shelf_life_days"
_numbers = itertools.count(1)


def with_check(digits: str) -> str:
    return digits + str(check_digit(digits))


def fresh_gtin() -> str:
    """A valid GTIN-14 no other test row uses."""
    return with_check(f"1{next(_numbers):012d}")


_admins: weakref.WeakKeyDictionary[Api, httpx.AsyncClient] = weakref.WeakKeyDictionary()


async def admin_of(api: Api) -> httpx.AsyncClient:
    """One admin client per test: Hypothesis examples share it (keys are argon2-hashed)."""
    if api not in _admins:
        _admins[api] = await api.client("alice")
    return _admins[api]


async def post_csv(
    client: httpx.AsyncClient, entity: str, text: str, **params: Any
) -> httpx.Response:
    return await client.post(
        f"/api/v1/masterdata/{entity}/import",
        params={k: str(v).lower() for k, v in params.items()},
        content=text.encode(),
        headers={"Content-Type": "text/csv"},
    )


async def scalar(api: Api, query: str) -> Any:
    async with api.hub.pool.connection() as conn:
        cur = await conn.execute(query)
        row = await cur.fetchone()
    assert row is not None
    return row[0]


def spots(response: httpx.Response) -> set[tuple[int, str | None]]:
    return {(e["line"], e["column"]) for e in response.json()["errors"]}


async def test_every_bad_line_is_reported_and_nothing_is_written(api: Api) -> None:
    admin = await api.client("alice")
    await admin.post("/api/v1/skus", json={"code": "OLD", "gtin": GTIN})
    text = "\n".join([
        SKU_HEADER,
        "A,,Alpha,EA,1.5,none,false,",  # 2: fine
        f"B,{BAD_GTIN},Beta,EA,,none,no,",  # 3: check digit
        "C,,Gamma,CRATE,,none,no,",  # 4: unknown unit
        "A,,Again,EA,,none,no,",  # 5: duplicate of line 2
        "D,,Delta,EA,heavy,none,no,",  # 6: not a number
        "E,,Eps,EA,,none,maybe,",  # 7: not a boolean
        f"F,{GTIN},Phi,EA,,none,no,",  # 8: GTIN of SKU OLD
        "G,,Gee,EA,,sometimes,no,-3",  # 9: tracking and shelf life
        "H,,Aitch,EA",  # 10: too few fields
    ])  # fmt: skip
    for dry_run in (True, False):
        r = await post_csv(admin, "skus", text, dry_run=dry_run)
        assert r.status_code == 422, r.text
        assert spots(r) == {
            (3, "gtin"), (4, "unit"), (5, "code"), (6, "unit_weight_kg"), (7, "requires_qc"),
            (8, "gtin"), (9, "tracking"), (9, "shelf_life_days"), (10, None),
        }  # fmt: skip
        messages = {e["line"]: e["message"] for e in r.json()["errors"]}
        assert "check digit" in messages[3] and "also on line 2" in messages[5]
        assert "belongs to SKU 'OLD'" in messages[8] and "unknown unit 'CRATE'" in messages[4]
        assert r.json()["rows"] == 9 and "nothing written" in r.json()["detail"]
    assert await scalar(api, "SELECT count(*) FROM skus") == 1
    assert await scalar(api, "SELECT count(*) FROM audit_log WHERE action LIKE '%import'") == 0


async def test_a_bad_header_is_reported_on_line_one(api: Api) -> None:
    admin = await api.client("alice")
    r = await post_csv(admin, "zones", "site,colour\nnorth,red\n")
    assert r.status_code == 422
    assert spots(r) == {(1, "colour"), (1, "code")}
    assert (await post_csv(admin, "zones", "")).status_code == 422
    r = await admin.post("/api/v1/masterdata/zones/import", content=b"site,code\n\xff\n")
    assert r.status_code == 422 and "UTF-8" in r.json()["detail"]
    assert (await post_csv(admin, "gadgets", "code\nx\n")).status_code == 422


async def test_dry_run_counts_and_upsert_writes_once_with_one_audit_row(api: Api) -> None:
    admin = await api.client("alice")
    first = f"{SKU_HEADER}\nA,,Alpha,EA,1.5,none,false,\nB,,Beta,CS,,lot,true,30\n"
    r = await post_csv(admin, "skus", first, dry_run=True)
    assert r.status_code == 200, r.text
    assert (r.json()["created"], r.json()["updated"], r.json()["dry_run"]) == (2, 0, True)
    assert await scalar(api, "SELECT count(*) FROM skus") == 0

    r = await post_csv(admin, "skus", first)
    assert (r.json()["created"], r.json()["updated"], r.json()["unchanged"]) == (2, 0, 0)
    second = f"{SKU_HEADER}\nA,,Alpha,EA,1.5,none,false,\nB,,Beta v2,CS,,lot,true,30\nC,,,,,,,\n"
    r = await post_csv(admin, "skus", second)
    assert (r.json()["created"], r.json()["updated"], r.json()["unchanged"]) == (1, 1, 1)
    sku = (await admin.get("/api/v1/skus/C")).json()
    assert (sku["unit"], sku["tracking"], sku["weight_tolerance_pct"]) == ("EA", "none", "2")
    assert (await admin.get("/api/v1/skus/B")).json()["name"] == "Beta v2"

    # A column left out keeps what is stored.
    r = await post_csv(admin, "skus", "code,name\nA,Alpha 2\n")
    assert r.json()["updated"] == 1
    assert (await admin.get("/api/v1/skus/A")).json()["unit_weight_kg"] == "1.5"

    audits = await scalar(
        api, "SELECT json_agg(detail ORDER BY id) FROM audit_log WHERE action = 'masterdata.import'"
    )
    assert [(a["created"], a["updated"], a["rows"]) for a in audits] == [
        (2, 0, 2), (1, 1, 3), (0, 1, 1),
    ]  # fmt: skip

    r = await post_csv(admin, "skus", "code,name\nA,x\nZ,z\n", mode="create")
    assert r.status_code == 422 and spots(r) == {(2, "code")}
    assert "exists already" in r.json()["errors"][0]["message"]


async def test_importing_an_unverified_sku_with_real_data_verifies_it(api: Api) -> None:
    admin = await api.client("alice")
    async with api.hub.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO skus (code, gtin, verified) VALUES (%s, %s, false)", (GTIN, GTIN)
        )
    exported = (await admin.get("/api/v1/masterdata/skus.csv")).text
    assert (await post_csv(admin, "skus", exported)).json()["unchanged"] == 1
    assert (await admin.get(f"/api/v1/skus/{GTIN}")).json()["verified"] is False
    r = await post_csv(admin, "skus", f"code,name,unit_weight_kg\n{GTIN},Widget,0.4\n")
    assert r.json()["updated"] == 1
    assert (await admin.get(f"/api/v1/skus/{GTIN}")).json()["verified"] is True


async def test_site_bound_rows_check_site_zone_scope_and_virtual_codes(api: Api) -> None:
    admin = await api.client("alice")
    for site in ("north", "south"):
        await admin.post("/api/v1/sites", json={"id": site})
    r = await post_csv(admin, "zones", "site,code,kind\nnorth,A,storage\nnorth,Q,qc\n")
    assert r.json()["created"] == 2
    locations = "\n".join([
        "site,code,zone,x,y,capacity,held",
        "north,A-01,A,1.0,2.0,10,false",  # 2: fine
        "north,A-02,Z,1.0,2.0,10,false",  # 3: unknown zone
        "east,E-01,,1.0,2.0,,false",  # 4: unknown site
        "north,SCRAP,,,,,",  # 5: virtual
        "north,A-03,A,inf,2.0,-1,false",  # 6: coordinate and capacity
        "south,S-01,,,,,",  # 7: the local admin may not
    ])  # fmt: skip
    local = await api.client("nora", Role.ADMIN, sites=["north"])
    r = await post_csv(local, "locations", locations)
    assert r.status_code == 422
    assert spots(r) == {(3, "zone"), (4, "site"), (5, "code"), (6, "x"), (6, "capacity"),
                        (7, "site")}  # fmt: skip
    assert await scalar(api, "SELECT count(*) FROM locations WHERE kind = 'internal'") == 0
    r = await post_csv(admin, "locations", "site,code,zone\nnorth,A-01,A\nsouth,S-01,\n")
    assert r.json()["created"] == 2
    exported = (await local.get("/api/v1/masterdata/locations.csv")).text
    assert exported.splitlines()[1:] == ["north,A-01,A,,,,,,false,true"]
    assert (await local.get("/api/v1/masterdata/locations.csv?site=south")).status_code == 403


async def test_lots_serials_and_licence_plates_round_trip(api: Api) -> None:
    admin = await api.client("alice")
    await admin.post("/api/v1/sites", json={"id": "north"})
    await admin.post("/api/v1/skus", json={"code": "W", "gtin": GTIN})
    epc = encode_epc_hex(Sgtin96.from_gtin(GTIN, serial=5, company_prefix_length=7))
    sscc_epc = encode_epc_hex(Sscc96.from_sscc(SSCC, company_prefix_length=7))
    files = {
        "lots": 'sku,lot,expiry\nW,"L,2",\nW,L1,2031-02-28\n',
        "serials": f"sku,serial,epc\nW,5,{epc}\nW,6,\n",
        "lpns": f"code,site,epc\n{SSCC},north,{sscc_epc}\nTOTE-9,,\n",
    }
    for entity, text in files.items():
        r = await post_csv(admin, entity, text)
        assert r.status_code == 200 and r.json()["created"] == 2, r.text
        exported = (await admin.get(f"/api/v1/masterdata/{entity}.csv")).text
        assert exported == text, entity
        r = await post_csv(admin, entity, exported)
        assert (r.json()["created"], r.json()["updated"], r.json()["unchanged"]) == (0, 0, 2)

    r = await post_csv(admin, "lots", "sku,lot,expiry\nNOPE,L1,\nW,L3,2031-02-30\n")
    assert spots(r) == {(2, "sku"), (3, "expiry")}
    r = await post_csv(admin, "serials", f"sku,serial,epc\nW,7,{epc}\nW,8,{sscc_epc}\n")
    assert spots(r) == {(2, "epc"), (3, "epc")}
    r = await post_csv(admin, "lpns", f"code,site,epc\n{SSCC[:-1]}0,,\nP-1,north,{epc}\n")
    assert spots(r) == {(2, "code"), (3, "epc")}


async def test_ten_thousand_lines_import_in_well_under_a_few_seconds(api: Api) -> None:
    admin = await api.client("alice")
    lines = [SKU_HEADER] + [
        f"S{n:05d},{with_check(f'2{n:012d}')},Item {n},EA,{n % 7 + 1}.25,lot,{n % 2 == 0},365"
        for n in range(10_000)
    ]
    text = "\n".join(lines) + "\n"
    started = time.perf_counter()
    r = await post_csv(admin, "skus", text)
    took = time.perf_counter() - started
    assert r.status_code == 200 and r.json()["created"] == 10_000, r.text[:500]
    assert took < 3.0, f"10k-line import took {took:.2f} s"
    print(f"10k SKUs: import {took:.2f} s")
    started = time.perf_counter()
    exported = (await admin.get("/api/v1/masterdata/skus.csv")).text
    r = await post_csv(admin, "skus", exported)
    took = time.perf_counter() - started
    assert r.json()["unchanged"] == 10_000 and took < 3.0, f"export + re-import {took:.2f} s"
    print(f"10k SKUs: export + no-op re-import {took:.2f} s")


# ------------------------------------------------------------------ properties

names = st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]), max_size=30)
sku_rows = st.fixed_dictionaries({
    "gtin": st.booleans(),
    "name": names.map(str.strip),
    "unit": st.sampled_from(["EA", "CS", "KG"]),
    "unit_weight_kg": st.none() | st.decimals("0.001", "999", places=3),
    "weight_tolerance_pct": st.decimals("0", "50", places=1),
    "tracking": st.sampled_from(["none", "lot", "serial"]),
    "shelf_life_days": st.none() | st.integers(1, 3650),
    "sku_class": st.none() | st.sampled_from(["bulky", "cold", "small"]),
    "requires_qc": st.booleans(),
    "pick_policy": st.sampled_from(["fifo", "fefo"]),
})  # fmt: skip
PROPERTY = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def sku_file(rows: list[dict[str, Any]]) -> str:
    prefix = f"H{next(_numbers)}-"
    full = [
        {**row, "code": f"{prefix}{i}", "gtin": fresh_gtin() if row["gtin"] else None}
        for i, row in enumerate(rows)
    ]
    return csvio.write(full, csvio.ENTITIES["skus"])


@PROPERTY
@given(rows=st.lists(sku_rows, min_size=1, max_size=8))
async def test_export_then_import_is_a_no_op(api: Api, rows: list[dict[str, Any]]) -> None:
    admin = await admin_of(api)
    r = await post_csv(admin, "skus", sku_file(rows))
    assert r.status_code == 200 and r.json()["created"] == len(rows), r.text
    exported = (await admin.get("/api/v1/masterdata/skus.csv")).text
    total = exported.count("\n") - 1
    r = await post_csv(admin, "skus", exported)
    assert r.status_code == 200, r.text
    assert (r.json()["created"], r.json()["updated"], r.json()["unchanged"]) == (0, 0, total)
    assert (await admin.get("/api/v1/masterdata/skus.csv")).text == exported


CORRUPTIONS = {
    "gtin": lambda cells: {**cells, "gtin": BAD_GTIN},
    "unit": lambda cells: {**cells, "unit": "NOPE"},
    "unit_weight_kg": lambda cells: {**cells, "unit_weight_kg": "-1"},
    "requires_qc": lambda cells: {**cells, "requires_qc": "perhaps"},
    "tracking": lambda cells: {**cells, "tracking": "batch"},
    "shelf_life_days": lambda cells: {**cells, "shelf_life_days": "1.5"},
    "code": lambda cells: {**cells, "code": "bad code!"},
}  # fmt: skip


@PROPERTY
@given(
    rows=st.lists(sku_rows, min_size=1, max_size=8),
    where=st.integers(0, 7),
    how=st.sampled_from(sorted(CORRUPTIONS)),
)
async def test_one_corrupt_line_is_reported_on_that_line_and_nothing_is_written(
    api: Api, rows: list[dict[str, Any]], where: int, how: str
) -> None:
    admin = await admin_of(api)
    text = sku_file(rows).split("\n")
    victim = where % len(rows) + 1
    header = text[0].split(",")
    cells = dict(zip(header, next(csv.reader([text[victim]])), strict=True))
    bad = CORRUPTIONS[how](cells)
    text[victim] = csvio.write([bad], csvio.ENTITIES["skus"]).split("\n")[1]
    before = await scalar(api, "SELECT count(*) FROM skus")
    r = await post_csv(admin, "skus", "\n".join(text))
    assert r.status_code == 422, r.text
    assert {e["line"] for e in r.json()["errors"]} == {victim + 1}
    assert how in {e["column"] for e in r.json()["errors"]}
    assert await scalar(api, "SELECT count(*) FROM skus") == before
