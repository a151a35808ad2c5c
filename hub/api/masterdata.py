"""REST routes: master data (sites, zones, locations, SKUs, lots, serials, licence plates)
and its CSV import and export.

Reads need ``masterdata.read``, writes ``masterdata.write``. Writes are idempotent with an
``Idempotency-Key`` and leave one audit row; a CSV import is one write, all or nothing.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
from decimal import Decimal
from typing import Annotated, Any, Generic, Literal, TypeVar

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from warelink.hub import csvio
from warelink.hub.access import Permission, Principal
from warelink.hub.api.deps import Allow, Conn, Idempotent, Write, json_response
from warelink.hub.api.fields import (
    CodePath,
    CodeQuery,
    Coordinate,
    Gln,
    IdempotencyKey,
    Limit,
    LpnCode,
    Offset,
    QuantityOut,
    RecordCode,
    RecordEpc,
    RecordGtin,
    RecordIdent,
    RecordName,
    RecordNumber,
    RecordPositive,
    ShelfLife,
    SiteId,
    SitePath,
    SiteQuery,
)
from warelink.hub.api.problems import READ_ERRORS, WRITE_ERRORS, errors
from warelink.hub.errors import Forbidden, Invalid
from warelink.hub.masterdata import records as masterdata
from warelink.hub.stock import sites as queries

router = APIRouter(tags=["master data"])

MAX_IMPORT_BYTES = 20 * 1024 * 1024
DEFAULT_PAGE = 100

ZoneKind = Literal["dock", "storage", "qc", "staging", "shipping"]
Tracking = Literal["none", "lot", "serial"]
PickPolicy = Literal["fifo", "fefo"]
# Records are made with RecordCode (fields), stricter than the CodePath that names one:
# devices may name locations outside it.


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# ------------------------------------------------------------------ models


class SiteIn(Input):
    id: SiteId
    name: RecordName = ""
    gln: Gln | None = None


class SitePatch(Input):
    name: RecordName | None = None
    gln: Gln | None = None


class SiteDetail(BaseModel):
    id: str
    name: str
    gln: str | None
    created_at: dt.datetime
    zones: int
    locations: int
    virtual_locations: int
    lpns: int
    gateways: int


class ZoneIn(Input):
    code: RecordCode
    name: RecordName = ""
    kind: ZoneKind = "storage"


class ZonePatch(Input):
    name: RecordName | None = None
    kind: ZoneKind | None = None


class Zone(BaseModel):
    site: str
    code: str
    name: str
    kind: str


class LocationPatch(Input):
    zone: RecordCode | None = None
    gln: Gln | None = None
    x: Coordinate | None = None
    y: Coordinate | None = None
    capacity: RecordNumber | None = Field(None, description="units it holds; null: unlimited")
    sku_class: RecordCode | None = None
    held: bool | None = Field(None, description="stock moved in opens an exception")
    usable: bool | None = Field(None, description="counts toward utilisation")


class LocationIn(LocationPatch):
    code: RecordCode
    held: bool = False
    usable: bool = True


class Location(BaseModel):
    site: str
    code: str
    kind: str
    zone: str | None
    gln: str | None
    x: float | None
    y: float | None
    capacity: QuantityOut | None
    sku_class: str | None
    held: bool
    usable: bool


class SkuPatch(Input):
    gtin: RecordGtin | None = None
    name: RecordName | None = None
    unit: RecordCode | None = None
    unit_weight_kg: RecordPositive | None = None
    weight_tolerance_pct: RecordNumber | None = None
    tracking: Tracking | None = None
    shelf_life_days: ShelfLife | None = None
    sku_class: RecordCode | None = None
    requires_qc: bool | None = None
    pick_policy: PickPolicy | None = None


class SkuIn(SkuPatch):
    code: RecordCode
    name: RecordName = ""
    unit: RecordCode = "EA"
    weight_tolerance_pct: RecordNumber = Decimal(2)
    tracking: Tracking = "none"
    requires_qc: bool = False
    pick_policy: PickPolicy = "fifo"


class Sku(BaseModel):
    code: str
    gtin: str | None
    name: str
    unit: str
    unit_weight_kg: QuantityOut | None
    weight_tolerance_pct: QuantityOut
    tracking: str
    shelf_life_days: int | None
    sku_class: str | None
    requires_qc: bool
    pick_policy: str
    verified: bool = Field(description="false: made by the ledger from an unknown GTIN")
    created_at: dt.datetime


class LotPatch(Input):
    expiry: dt.date | None = None


class LotIn(LotPatch):
    lot: RecordIdent


class Lot(BaseModel):
    sku: str
    lot: str
    expiry: dt.date | None
    first_received_at: dt.datetime


class SerialPatch(Input):
    epc: RecordEpc | None = Field(None, description="the item's SGTIN-96 tag")


class SerialIn(SerialPatch):
    serial: RecordIdent


class Serial(BaseModel):
    sku: str
    serial: str
    epc: str | None


class LpnPatch(Input):
    site: SiteId | None = None
    epc: RecordEpc | None = Field(None, description="the pallet's SSCC-96 tag")


class LpnIn(LpnPatch):
    code: LpnCode


class Lpn(BaseModel):
    code: str
    site: str | None
    epc: str | None
    created_at: dt.datetime


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    limit: int
    offset: int
    next_offset: int | None = Field(description="the offset of the next page; null: last page")


class ImportEntity(enum.StrEnum):
    zones = "zones"
    locations = "locations"
    skus = "skus"
    lots = "lots"
    serials = "serials"
    lpns = "lpns"


class LineErrorOut(BaseModel):
    line: int = Field(description="1 is the header line")
    column: str | None
    message: str


class ImportReport(BaseModel):
    entity: str
    dry_run: bool
    mode: str
    rows: int
    created: int
    updated: int
    unchanged: int
    errors: list[LineErrorOut]


class ImportRejected(BaseModel):
    detail: str | list[dict[str, Any]]
    errors: list[LineErrorOut] = []


# ------------------------------------------------------------------ helpers


READ = READ_ERRORS
WRITE = WRITE_ERRORS


def _page(rows: list[dict[str, Any]], limit: int, offset: int) -> Response:
    more = len(rows) > limit
    next_offset = offset + limit if more else None
    return json_response(
        {"items": rows[:limit], "limit": limit, "offset": offset, "next_offset": next_offset}
    )


async def _list(
    entity: str, conn: Conn, limit: int, offset: int, who: Principal, **filters: Any
) -> Response:
    rows = await masterdata.fetch(
        csvio.ENTITIES[entity], filters={k: v for k, v in filters.items() if v is not None},
        scope=who.sites, limit=limit + 1, offset=offset, conn=conn,
    )  # fmt: skip
    return _page(rows, limit, offset)


async def _get(entity: str, key: tuple[str, ...], conn: Conn, who: Principal) -> Response:
    row = await masterdata.get(csvio.ENTITIES[entity], key, scope=who.sites, conn=conn)
    return json_response(row)


async def _create(
    entity: str, parent: dict[str, str], body: Input, write: Write, who: Principal
) -> Response:
    values = {**parent, **body.model_dump()}

    async def created() -> dict[str, Any]:
        if "site" in parent:
            await queries.require_site(parent["site"], conn=write.conn)
        if "sku" in parent:
            await masterdata.require_sku(parent["sku"], conn=write.conn)
        return await masterdata.create(
            csvio.ENTITIES[entity], values, scope=who.sites, actor=who.actor, conn=write.conn
        )

    return await write(who, {"create": entity, **parent, **_fp(body)}, created)


async def _update(
    entity: str, path: tuple[str, ...], body: Input, write: Write, who: Principal
) -> Response:
    changes = body.model_dump(exclude_unset=True)
    return await write(who, {"update": entity, "key": path, **_fp(body)}, lambda: (
        masterdata.update(csvio.ENTITIES[entity], path, changes, scope=who.sites,
                          actor=who.actor, conn=write.conn)
    ))  # fmt: skip


def _fp(body: BaseModel) -> dict[str, Any]:
    return body.model_dump(mode="json", exclude_unset=True)


ReadWho = Annotated[Principal, Allow(Permission.MASTERDATA_READ)]
WriteWho = Annotated[Principal, Allow(Permission.MASTERDATA_WRITE)]

# ------------------------------------------------------------------ sites


@router.post("/sites", response_model=SiteDetail, status_code=201, responses=WRITE)
async def create_site(body: SiteIn, write: Write, who: WriteWho) -> Response:
    """A new site with its virtual locations (supplier, customer, adjustment, scrap, transit).

    Only an identity covering every site may create one.
    """
    return await write(who, {"create": "site", **_fp(body)}, lambda: masterdata.create_site(
        body.id, body.name, body.gln, scope=who.sites, actor=who.actor, conn=write.conn
    ))  # fmt: skip


@router.get("/sites/{site}", response_model=SiteDetail, responses=READ)
async def get_site(site: SitePath, conn: Conn, who: ReadWho) -> Response:
    """A site with how many zones, locations, licence plates and gateways it has."""
    return json_response(await masterdata.site_detail(site, conn=conn))


@router.patch("/sites/{site}", response_model=SiteDetail, responses=WRITE)
async def update_site(site: SitePath, body: SitePatch, write: Write, who: WriteWho) -> Response:
    """Rename a site or set its GLN (null clears the GLN)."""
    changes = body.model_dump(exclude_unset=True)
    if changes.get("name", "") is None:
        changes["name"] = ""
    return await write(who, {"update": "site", "site": site, **_fp(body)}, lambda: (
        masterdata.update_site(site, changes, actor=who.actor, conn=write.conn)
    ))  # fmt: skip


# ------------------------------------------------------------------ zones and locations


@router.get("/sites/{site}/zones", response_model=Page[Zone], responses=READ)
async def list_zones(
    site: SitePath, conn: Conn, who: ReadWho, limit: Limit = DEFAULT_PAGE, offset: Offset = 0
) -> Response:
    return await _list("zones", conn, limit, offset, who, site=site)


@router.post("/sites/{site}/zones", response_model=Zone, status_code=201, responses=WRITE)
async def create_zone(site: SitePath, body: ZoneIn, write: Write, who: WriteWho) -> Response:
    return await _create("zones", {"site": site}, body, write, who)


@router.get("/sites/{site}/zones/{code}", response_model=Zone, responses=READ)
async def get_zone(site: SitePath, code: CodePath, conn: Conn, who: ReadWho) -> Response:
    return await _get("zones", (site, code), conn, who)


@router.patch("/sites/{site}/zones/{code}", response_model=Zone, responses=WRITE)
async def update_zone(
    site: SitePath, code: CodePath, body: ZonePatch, write: Write, who: WriteWho
) -> Response:
    return await _update("zones", (site, code), body, write, who)


@router.get("/sites/{site}/locations", response_model=Page[Location], responses=READ)
async def list_locations(
    site: SitePath, conn: Conn, who: ReadWho, limit: Limit = DEFAULT_PAGE, offset: Offset = 0,
    zone: CodeQuery = None,
) -> Response:  # fmt: skip
    """Locations of a site, virtual ones included (``kind`` says which)."""
    return await _list("locations", conn, limit, offset, who, site=site, zone=zone)


@router.post("/sites/{site}/locations", response_model=Location, status_code=201,
             responses=WRITE)  # fmt: skip
async def create_location(
    site: SitePath, body: LocationIn, write: Write, who: WriteWho
) -> Response:
    """A storage location; virtual locations come with the site and cannot be made here."""
    return await _create("locations", {"site": site}, body, write, who)


@router.get("/sites/{site}/locations/{code}", response_model=Location, responses=READ)
async def get_location(site: SitePath, code: CodePath, conn: Conn, who: ReadWho) -> Response:
    return await _get("locations", (site, code), conn, who)


@router.patch("/sites/{site}/locations/{code}", response_model=Location, responses=WRITE)
async def update_location(
    site: SitePath, code: CodePath, body: LocationPatch, write: Write, who: WriteWho
) -> Response:
    """Change a location; null resets a field to its default. Virtual ones cannot change."""
    return await _update("locations", (site, code), body, write, who)


# ------------------------------------------------------------------ SKUs, lots, serials


@router.get("/skus", response_model=Page[Sku], responses=READ)
async def list_skus(
    conn: Conn, who: ReadWho, limit: Limit = DEFAULT_PAGE, offset: Offset = 0,
    verified: Annotated[bool | None, Query(description="false: only unverified SKUs")] = None,
) -> Response:  # fmt: skip
    return await _list("skus", conn, limit, offset, who, verified=verified)


@router.post("/skus", response_model=Sku, status_code=201, responses=WRITE)
async def create_sku(body: SkuIn, write: Write, who: WriteWho) -> Response:
    return await _create("skus", {}, body, write, who)


@router.get("/skus/{code}", response_model=Sku, responses=READ)
async def get_sku(code: CodePath, conn: Conn, who: ReadWho) -> Response:
    return await _get("skus", (code,), conn, who)


@router.patch("/skus/{code}", response_model=Sku, responses=WRITE)
async def update_sku(code: CodePath, body: SkuPatch, write: Write, who: WriteWho) -> Response:
    """Change a SKU; null resets a field to its default. Any change verifies an unverified
    SKU (one the ledger made from an unknown GTIN)."""
    return await _update("skus", (code,), body, write, who)


@router.get("/skus/{sku}/lots", response_model=Page[Lot], responses=READ)
async def list_lots(
    sku: CodePath, conn: Conn, who: ReadWho, limit: Limit = DEFAULT_PAGE, offset: Offset = 0
) -> Response:
    return await _list("lots", conn, limit, offset, who, sku=sku)


@router.post("/skus/{sku}/lots", response_model=Lot, status_code=201, responses=WRITE)
async def create_lot(sku: CodePath, body: LotIn, write: Write, who: WriteWho) -> Response:
    return await _create("lots", {"sku": sku}, body, write, who)


@router.get("/skus/{sku}/lots/{lot:path}", response_model=Lot, responses=READ)
async def get_lot(sku: CodePath, lot: CodePath, conn: Conn, who: ReadWho) -> Response:
    return await _get("lots", (sku, lot), conn, who)


@router.patch("/skus/{sku}/lots/{lot:path}", response_model=Lot, responses=WRITE)
async def update_lot(
    sku: CodePath, lot: CodePath, body: LotPatch, write: Write, who: WriteWho
) -> Response:
    """Set or clear (null) a lot's expiry."""
    return await _update("lots", (sku, lot), body, write, who)


@router.get("/skus/{sku}/serials", response_model=Page[Serial], responses=READ)
async def list_serials(
    sku: CodePath, conn: Conn, who: ReadWho, limit: Limit = DEFAULT_PAGE, offset: Offset = 0
) -> Response:
    return await _list("serials", conn, limit, offset, who, sku=sku)


@router.post("/skus/{sku}/serials", response_model=Serial, status_code=201, responses=WRITE)
async def create_serial(sku: CodePath, body: SerialIn, write: Write, who: WriteWho) -> Response:
    """A serial, with the EPC of its tag (an SGTIN-96 of the SKU's GTIN) if it has one."""
    return await _create("serials", {"sku": sku}, body, write, who)


@router.get("/skus/{sku}/serials/{serial:path}", response_model=Serial, responses=READ)
async def get_serial(sku: CodePath, serial: CodePath, conn: Conn, who: ReadWho) -> Response:
    return await _get("serials", (sku, serial), conn, who)


@router.patch("/skus/{sku}/serials/{serial:path}", response_model=Serial, responses=WRITE)
async def update_serial(
    sku: CodePath, serial: CodePath, body: SerialPatch, write: Write, who: WriteWho
) -> Response:
    """Set or clear (null) a serial's EPC."""
    return await _update("serials", (sku, serial), body, write, who)


# ------------------------------------------------------------------ licence plates


@router.get("/lpns", response_model=Page[Lpn], responses=READ)
async def list_lpns(
    conn: Conn, who: ReadWho, limit: Limit = DEFAULT_PAGE, offset: Offset = 0,
    site: SiteQuery = None,
) -> Response:  # fmt: skip
    """Licence plates of the caller's sites, and those not bound to a site."""
    return await _list("lpns", conn, limit, offset, who, site=site)


@router.post("/lpns", response_model=Lpn, status_code=201, responses=WRITE)
async def create_lpn(body: LpnIn, write: Write, who: WriteWho) -> Response:
    """A licence plate: an SSCC (check digit validated) or an internal code."""
    return await _create("lpns", {}, body, write, who)


@router.get("/lpns/{code}", response_model=Lpn, responses=READ)
async def get_lpn(code: CodePath, conn: Conn, who: ReadWho) -> Response:
    return await _get("lpns", (code,), conn, who)


@router.patch("/lpns/{code}", response_model=Lpn, responses=WRITE)
async def update_lpn(code: CodePath, body: LpnPatch, write: Write, who: WriteWho) -> Response:
    """Bind a licence plate to a site, or set its EPC (null clears either)."""
    return await _update("lpns", (code,), body, write, who)


# ------------------------------------------------------------------ CSV


class CsvResponse(Response):
    media_type = "text/csv"


@router.get(
    "/masterdata/{entity}.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}},
                     "description": "the entity's rows, in the import's columns"},
               **errors(401, 403, 422)},
)  # fmt: skip
async def export_csv(
    entity: ImportEntity, conn: Conn, who: ReadWho,
    site: SiteQuery = None,
) -> Response:  # fmt: skip
    """Master data as CSV, in the columns the import takes: an export imports back unchanged.

    Virtual locations are left out; site-bound rows only of the caller's sites.
    """
    spec = csvio.ENTITIES[entity]
    if site is not None and not who.covers(site):
        raise Forbidden(f"no access to site {site!r}")
    filters = {"site": site} if site is not None and spec.site_column else {}
    rows = await masterdata.fetch(spec, filters=filters, scope=who.sites,
                                  internal_only=entity == "locations", conn=conn)  # fmt: skip
    return CsvResponse(
        csvio.write(rows, spec),
        headers={"Content-Disposition": f'attachment; filename="{entity}.csv"'},
    )


CSV_BODY = {
    "requestBody": {
        "required": True,
        "content": {"text/csv": {"schema": {"type": "string"}}},
        "description": "UTF-8 CSV with a header line; see docs/operations.md for the columns",
    }
}


@router.post(
    "/masterdata/{entity}/import",
    response_model=ImportReport,
    openapi_extra=CSV_BODY,
    max_body_size=MAX_IMPORT_BYTES,  # more than the app's limit for JSON bodies
    responses={**errors(401, 403, 409, 413),
               422: {"model": ImportRejected, "description": "bad lines: nothing written"}},
)  # fmt: skip
async def import_csv(
    entity: ImportEntity,
    request: Request,
    conn: Conn,
    who: WriteWho,
    dry_run: Annotated[bool, Query(description="check and count only; write nothing")] = False,
    mode: Annotated[
        masterdata.Mode,
        Query(description="upsert: create new rows, update existing ones; create: an existing"
                          " row is an error"),
    ] = "upsert",
    key: IdempotencyKey = None,
) -> Response:  # fmt: skip
    """Create and update master data from CSV, all or nothing.

    Every line is checked; any error (each reported with its line, column and message)
    writes nothing and answers 422. A dry run answers the same report and writes nothing.
    """
    data = await _read_csv(request)
    spec = csvio.ENTITIES[entity]
    parsed = csvio.parse(data, spec)
    report: dict[str, Any] = {
        "entity": entity.value,
        "dry_run": dry_run,
        "mode": mode,
        "rows": parsed.records,
    }
    if not parsed.columns:  # no usable header: no line can be read
        return _rejected(report, parsed.errors)
    payload = {"import": entity.value, "mode": mode, "dry_run": dry_run,
               "sha256": hashlib.sha256(data.encode()).hexdigest()}  # fmt: skip
    async with Idempotent(conn, who, key if not dry_run else None, payload) as write:
        if write.stored:
            return write.stored
        # Lines that parsed are still checked against the database, so every error shows.
        plan = await masterdata.import_rows(
            spec, parsed.rows, parsed.columns, mode=mode, dry_run=dry_run or bool(parsed.errors),
            scope=who.sites, actor=who.actor, conn=conn,
        )  # fmt: skip
        if parsed.errors or plan.errors:
            return _rejected(report, parsed.errors + plan.errors)
        report |= {**plan.counts(), "errors": []}
        return json_response(report) if dry_run else await write.answer(200, report)


async def _read_csv(request: Request) -> str:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_IMPORT_BYTES:
            raise _TooLarge(f"the file is over {MAX_IMPORT_BYTES // 2**20} MiB: split it")
        chunks.append(chunk)
    try:
        return b"".join(chunks).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Invalid(f"the file is not UTF-8 (byte {exc.start})") from None


class _TooLarge(Invalid):
    status = 413


def _rejected(report: dict[str, Any], errors: list[csvio.LineError]) -> Response:
    ordered = sorted(errors, key=lambda e: (e.line, e.column or ""))
    lines = len({e.line for e in ordered})
    return json_response(
        {**report, "detail": f"{len(ordered)} errors on {lines} lines: nothing written",
         "errors": [e.as_dict() for e in ordered]},
        status_code=422,
    )  # fmt: skip
