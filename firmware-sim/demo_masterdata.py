"""The demo's master data: the catalog the simulated devices scan, and each site's floor.

Imported through the hub's CSV import, as an administrator would, so the demo's ledger
books known SKUs into known, zoned locations with floor-plan coordinates (the live map
needs them), and its exceptions queue shows real floor problems rather than a missing
catalog. Upsert: importing it again on the next run changes nothing.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

import httpx

from warelink.sim.scanner import CATALOG

NAMES = (
    "Mineral water 6 x 1.5 l", "Orange juice 12 x 1 l", "Coffee beans 6 x 1 kg",
    "Dish soap 12 x 750 ml", "Paper towels 8 rolls", "Rice 10 x 1 kg",
    "Olive oil 6 x 750 ml", "Tomato passata 12 x 500 g",
)  # fmt: skip
WEIGHTS_KG = ("9.4", "12.6", "6.3", "9.5", "1.6", "10.2", "5.1", "6.4")

# code, zone, x, y (metres): the docks, the rack faces and the shipping lane the devices and
# the AGV's floor graph name.
FLOOR = (
    ("DOCK-1", "DOCK", 0.0, 0.0), ("DOCK-2", "DOCK", 0.0, 8.0), ("DOCK-3", "DOCK", 0.0, 16.0),
    ("A-01", "STORE", 12.0, 0.0), ("A-02", "STORE", 12.0, 8.0),
    ("PACK-1", "PACK", 16.0, 12.0), ("SHIP", "SHIP", 20.0, 4.0),
)  # fmt: skip
ZONES = (("DOCK", "Docks", "dock"), ("STORE", "Racks", "storage"),
         ("PACK", "Packing", "staging"), ("SHIP", "Shipping lane", "shipping"))  # fmt: skip


def as_csv(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def documents(sites: Sequence[str]) -> dict[str, str]:
    """The CSV per entity, in the order they import (zones before locations)."""
    skus = (
        (f"SKU-{gtin[-6:-1]}", gtin, name, "CS", weight, "3", "lot", "365", "fefo")
        for gtin, name, weight in zip(CATALOG, NAMES, WEIGHTS_KG, strict=True)
    )
    zones = ((site, *zone) for site in sites for zone in ZONES)
    locations = (
        (site, code, zone, x, y, 2000 if zone == "STORE" else "")
        for site in sites
        for code, zone, x, y in FLOOR
    )
    sku_columns = (
        "code", "gtin", "name", "unit", "unit_weight_kg", "weight_tolerance_pct", "tracking",
        "shelf_life_days", "pick_policy",
    )  # fmt: skip
    return {
        "skus": as_csv(sku_columns, skus),
        "zones": as_csv(("site", "code", "name", "kind"), zones),
        "locations": as_csv(("site", "code", "zone", "x", "y", "capacity"), locations),
    }


async def seed(http: httpx.AsyncClient, sites: Sequence[str]) -> None:
    """Create the sites and import their master data; raises with the hub's answer."""
    for site in sites:
        response = await http.post("/api/v1/sites", json={"id": site, "name": site.title()})
        if response.status_code not in (201, 409):  # 409: there from an earlier run
            response.raise_for_status()
    for entity, body in documents(sites).items():
        response = await http.post(
            f"/api/v1/masterdata/{entity}/import", content=body.encode(),
            headers={"Content-Type": "text/csv"}, params={"dry_run": "false"},
        )  # fmt: skip
        if response.status_code != 200:
            raise RuntimeError(f"master data {entity}: {response.status_code} {response.text}")
