"""REST routes: inbound — advance notices, receipts, QC, putaway, returns, transfers.

Thin: validate, run the domain function of ``hub.operations.inbound``, ``.putaway`` or
``.transfers`` (writes through ``Write``), answer. Quantities are decimals and travel as
JSON strings in answers (exact); requests take numbers or strings.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import AwareDatetime, BaseModel, Field

from warelink.hub.access import Permission, Principal
from warelink.hub.api.deps import Allow, Conn, Write
from warelink.hub.api.fields import (
    Code,
    Limit,
    Name,
    Offset,
    OptCode,
    Quantity,
    QuantityOut,
    Reason,
    Reference,
    ReferencePath,
    SiteId,
    SitePath,
    SiteQuery,
    Text,
)
from warelink.hub.api.problems import READ_ERRORS, WRITE_ERRORS
from warelink.hub.errors import Forbidden
from warelink.hub.operations import inbound, putaway, transfers

router = APIRouter(tags=["inbound"])


READ = READ_ERRORS
WRITE = WRITE_ERRORS


def _body(op: str, scope: object, body: BaseModel) -> dict[str, Any]:
    """What the Idempotency-Key fingerprint covers: the operation, its path and its body."""
    return {"op": op, "scope": scope, "body": body.model_dump(mode="json")}


# ------------------------------------------------------------------ advance notices


class NoticeLineIn(BaseModel):
    sku: Code = Field(description="SKU code or GTIN")
    quantity: Quantity
    lot: OptCode = ""
    expiry: dt.date | None = None


class NoticeIn(BaseModel):
    reference: Code
    supplier: Name = ""
    expected_at: AwareDatetime | None = None
    lines: list[NoticeLineIn] = Field(min_length=1, max_length=500)


class NoticeLineOut(BaseModel):
    line: int
    sku: str
    lot: str
    expiry: dt.date | None
    expected: QuantityOut
    received: QuantityOut = Field(description="sum of the movements of document asn:<id>/<line>")


class NoticeOut(BaseModel):
    id: int
    site: str
    reference: str
    supplier: str
    expected_at: dt.datetime | None
    state: Literal["open", "closed", "cancelled"]
    created_by: str
    created_at: dt.datetime
    lines: list[NoticeLineOut]


class NoticeSummaryOut(BaseModel):
    id: int
    reference: str
    supplier: str
    expected_at: dt.datetime | None
    state: Literal["open", "closed", "cancelled"]
    created_at: dt.datetime
    lines: int
    expected: QuantityOut
    received: QuantityOut


@router.post("/sites/{site}/notices", status_code=201, response_model=NoticeOut, responses=WRITE)
async def create_notice(
    site: SitePath,
    body: NoticeIn,
    write: Write,
    who: Annotated[Principal, Allow(Permission.NOTICES_WRITE)],
) -> Response:
    """Announce an inbound shipment (ASN): its lines say what is expected."""
    lines = [inbound.NoticeLineIn(**line.model_dump()) for line in body.lines]
    return await write(who, _body("notice.create", site, body), lambda: inbound.create_notice(
        site, body.reference, body.supplier, body.expected_at, lines,
        actor=who.actor, conn=write.conn,
    ))  # fmt: skip


@router.get("/sites/{site}/notices", response_model=list[NoticeSummaryOut], responses=READ)
async def list_notices(
    site: SitePath,
    conn: Conn,
    who: Annotated[Principal, Allow(Permission.STOCK_READ)],
    state: Literal["open", "closed", "cancelled"] | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[NoticeSummaryOut]:
    """Notices of a site, newest first, with expected and received totals."""
    found = await inbound.list_notices(site, state, limit, offset, conn=conn)
    return [NoticeSummaryOut.model_validate(n, from_attributes=True) for n in found]


@router.get("/sites/{site}/notices/{notice}", response_model=NoticeOut, responses=READ)
async def get_notice(
    site: SitePath,
    notice: ReferencePath,
    conn: Conn,
    who: Annotated[Principal, Allow(Permission.STOCK_READ)],
) -> NoticeOut:
    """A notice with each line's expected and received quantity."""
    found = await inbound.get_notice(site, notice, conn=conn)
    return NoticeOut.model_validate(found, from_attributes=True)


async def _finish(site: str, notice: int, to_state: str, write: Write, who: Principal) -> Response:
    return await write(
        who,
        {"op": to_state, "scope": [site, notice]},
        lambda: inbound.finish_notice(site, notice, to_state, actor=who.actor, conn=write.conn),
    )


@router.post("/sites/{site}/notices/{notice}/close", response_model=NoticeOut, responses=WRITE)
async def close_notice(
    site: SitePath,
    notice: ReferencePath,
    write: Write,
    who: Annotated[Principal, Allow(Permission.RECEIVE)],
) -> Response:
    """Receiving is done: the notice closes, short lines stay short (see the audit log)."""
    return await _finish(site, notice, "closed", write, who)


@router.post("/sites/{site}/notices/{notice}/cancel", response_model=NoticeOut, responses=WRITE)
async def cancel_notice(
    site: SitePath,
    notice: ReferencePath,
    write: Write,
    who: Annotated[Principal, Allow(Permission.NOTICES_WRITE)],
) -> Response:
    """The shipment will not come: only a notice with nothing received can be cancelled."""
    return await _finish(site, notice, "cancelled", write, who)


# ------------------------------------------------------------------ receipts and returns


class ReceiptIn(BaseModel):
    location: Code = Field(description="a location in a dock zone")
    quantity: Quantity
    sku: OptCode = Field("", description="SKU code or GTIN; may be left out with a notice")
    notice: Reference | None = None
    line: int | None = Field(None, ge=1, le=100_000)
    lot: OptCode = ""
    expiry: dt.date | None = None
    serial: OptCode = ""
    lpn: OptCode = Field("", description="licence plate; 18 digits: an SSCC, check digit checked")
    qc: bool = Field(False, description="put on QC hold even if the SKU does not require it")


class ReceivedOut(BaseModel):
    movement: int
    sku: str
    lot: str
    expiry: dt.date | None
    serial: str
    lpn: str
    location: str
    status: Literal["available", "qc_hold"]
    quantity: QuantityOut
    notice: int | None
    line: int | None
    expected: QuantityOut | None
    received: QuantityOut | None = Field(description="on the notice line, this receipt included")
    over_received: QuantityOut = Field(description="the notice line's receipts beyond expected")
    exceptions: list[int] = Field(description="exceptions the posting opened")


@router.post("/sites/{site}/receipts", status_code=201, response_model=ReceivedOut, responses=WRITE)
async def receive(
    site: SitePath,
    body: ReceiptIn,
    write: Write,
    who: Annotated[Principal, Allow(Permission.RECEIVE)],
) -> Response:
    """Receive goods into a dock location, against a notice line or without one."""
    receipt = inbound.ReceiptIn(**body.model_dump())
    return await write(
        who,
        _body("receive", site, body),
        lambda: inbound.receive(site, receipt, actor=who.actor, conn=write.conn),
    )


class ReturnIn(BaseModel):
    reference: Code = Field(description="the customer's return (RMA) reference")
    location: Code
    sku: Code = Field(description="SKU code or GTIN")
    quantity: Quantity
    reason: Text = ""
    lot: OptCode = ""
    expiry: dt.date | None = None
    serial: OptCode = ""
    lpn: OptCode = ""


@router.post("/sites/{site}/returns", status_code=201, response_model=ReceivedOut, responses=WRITE)
async def receive_return(
    site: SitePath,
    body: ReturnIn,
    write: Write,
    who: Annotated[Principal, Allow(Permission.RETURNS)],
) -> Response:
    """Take goods back from a customer: always onto QC hold (document return:<reference>)."""
    returned = inbound.ReturnIn(**body.model_dump())
    return await write(
        who,
        _body("return", site, body),
        lambda: inbound.receive_return(site, returned, actor=who.actor, conn=write.conn),
    )


# ------------------------------------------------------------------ QC


class QcIn(BaseModel):
    decision: Literal["release", "reject"]
    location: Code
    sku: Code = Field(description="SKU code or GTIN")
    quantity: Quantity
    reason: Reason
    disposition: Literal["scrap", "damaged"] = Field(
        "scrap", description="for a reject: to SCRAP, or kept in place as damaged"
    )
    lot: OptCode = ""
    serial: OptCode = ""
    lpn: OptCode = ""


class DecidedOut(BaseModel):
    movement: int
    kind: Literal["qc_release", "qc_reject"]
    sku: str
    lot: str
    serial: str
    lpn: str
    from_location: str
    to_location: str
    to_status: Literal["available", "damaged"]
    quantity: QuantityOut
    reason: str
    exceptions: list[int]


@router.post("/sites/{site}/qc", status_code=201, response_model=DecidedOut, responses=WRITE)
async def decide_qc(
    site: SitePath,
    body: QcIn,
    write: Write,
    who: Annotated[Principal, Allow(Permission.QC)],
) -> Response:
    """Release stock on QC hold (available in place) or reject it, with a reason."""
    decision = inbound.QcIn(**body.model_dump())
    return await write(
        who,
        _body("qc", site, body),
        lambda: inbound.decide_qc(site, decision, actor=who.actor, conn=write.conn),
    )


# ------------------------------------------------------------------ putaway


class CandidateOut(BaseModel):
    location: str
    zone: str
    capacity: QuantityOut | None
    on_hand: QuantityOut
    holds_sku: bool
    holds_lot: bool


class SuggestionOut(BaseModel):
    sku: str
    lot: str
    quantity: QuantityOut
    location: str | None = Field(description="null: no storage location fits")
    reason: str
    alternatives: list[CandidateOut]


@router.get("/sites/{site}/putaway/suggestion", response_model=SuggestionOut, responses=READ)
async def suggest_putaway(
    site: SitePath,
    conn: Conn,
    who: Annotated[Principal, Allow(Permission.PUTAWAY)],
    sku: Annotated[Code, Query()],
    quantity: Annotated[Quantity, Query()],
    lot: Annotated[OptCode, Query()] = "",
    from_location: Annotated[Code | None, Query(alias="from")] = None,
) -> SuggestionOut:
    """Where to put stock away, by zone, SKU class, free capacity and what is there."""
    found = await putaway.suggest(site, sku, lot, quantity, from_location, conn=conn)
    return SuggestionOut.model_validate(found, from_attributes=True)


class PutawayIn(BaseModel):
    from_location: Code
    to_location: Code
    sku: Code = Field(description="SKU code or GTIN")
    quantity: Quantity
    lot: OptCode = ""
    serial: OptCode = ""
    lpn: OptCode = ""
    status: Literal["available", "qc_hold", "damaged"] = "available"


class PutAwayOut(BaseModel):
    movement: int
    sku: str
    lot: str
    serial: str
    lpn: str
    status: str
    quantity: QuantityOut
    from_location: str
    to_location: str
    suggested: str | None = Field(description="where the suggestion rule would have put it")
    warnings: list[str]
    exceptions: list[int]


@router.post("/sites/{site}/putaways", status_code=201, response_model=PutAwayOut, responses=WRITE)
async def put_away(
    site: SitePath,
    body: PutawayIn,
    write: Write,
    who: Annotated[Principal, Allow(Permission.PUTAWAY)],
) -> Response:
    """Move stock from the dock into a location (the suggested one or the clerk's choice)."""
    move = putaway.PutawayIn(**body.model_dump())
    return await write(
        who,
        _body("putaway", site, body),
        lambda: putaway.put_away(site, move, actor=who.actor, conn=write.conn),
    )


# ------------------------------------------------------------------ transfers


class TransferLineIn(BaseModel):
    location: Code = Field(description="where it leaves from at the sending site")
    sku: Code = Field(description="SKU code or GTIN")
    quantity: Quantity
    lot: OptCode = ""
    serial: OptCode = ""
    lpn: OptCode = ""


class TransferIn(BaseModel):
    from_site: SiteId
    to_site: SiteId
    lines: list[TransferLineIn] = Field(min_length=1, max_length=500)


class TransferReceiptLineIn(BaseModel):
    sku: Code = Field(description="SKU code or GTIN")
    quantity: Quantity
    lot: OptCode = ""
    serial: OptCode = ""
    lpn: OptCode = ""


class TransferReceiptIn(BaseModel):
    location: Code = Field(description="where it goes at the receiving site")
    lines: list[TransferReceiptLineIn] = Field(min_length=1, max_length=500)


class TransferLineOut(BaseModel):
    sku: str
    lot: str
    serial: str
    lpn: str
    shipped: QuantityOut
    received: QuantityOut
    in_transit: QuantityOut


class TransferOut(BaseModel):
    id: int
    from_site: str
    to_site: str
    state: Literal["in_transit", "received", "cancelled"]
    created_by: str
    created_at: dt.datetime
    lines: list[TransferLineOut]
    movements: list[int] = Field(description="posted by this request (empty for a read)")
    exceptions: list[int]


@router.post("/transfers", status_code=201, response_model=TransferOut, responses=WRITE)
async def ship_transfer(
    body: TransferIn,
    write: Write,
    who: Annotated[Principal, Allow(Permission.TRANSFER)],
) -> Response:
    """Ship stock to another site: it waits in the sending site's TRANSIT until received."""
    if not who.covers(body.from_site):
        raise Forbidden(f"shipping from site {body.from_site!r} needs access to it")
    lines = [transfers.TransferLineIn(**line.model_dump()) for line in body.lines]
    return await write(
        who,
        _body("transfer.ship", None, body),
        lambda: transfers.ship(
            body.from_site, body.to_site, lines, actor=who.actor, conn=write.conn
        ),
    )


@router.get("/transfers", response_model=list[TransferOut], responses=READ)
async def list_transfers(
    conn: Conn,
    who: Annotated[Principal, Allow(Permission.STOCK_READ)],
    site: SiteQuery = None,
    state: Literal["in_transit", "received", "cancelled"] | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[TransferOut]:
    """Transfers from or to the sites the caller covers, newest first."""
    found = await transfers.list_transfers(
        site, state, limit, offset, visible_sites=who.sites, conn=conn
    )
    return [TransferOut.model_validate(t, from_attributes=True) for t in found]


@router.get("/transfers/{transfer}", response_model=TransferOut, responses=READ)
async def get_transfer(
    transfer: ReferencePath, conn: Conn, who: Annotated[Principal, Allow(Permission.STOCK_READ)]
) -> TransferOut:
    """A transfer with what was shipped, received and is still in transit."""
    found = await transfers.get(transfer, visible=who.covers, conn=conn)
    return TransferOut.model_validate(found, from_attributes=True)


@router.post(
    "/transfers/{transfer}/receipts", status_code=201, response_model=TransferOut,
    responses=WRITE,
)  # fmt: skip
async def receive_transfer(
    transfer: ReferencePath,
    body: TransferReceiptIn,
    write: Write,
    who: Annotated[Principal, Allow(Permission.TRANSFER)],
) -> Response:
    """Receive (part of) a transfer at its receiving site; partial receipts are allowed."""
    lines = [transfers.TransferLineIn(**line.model_dump()) for line in body.lines]
    return await write(
        who,
        _body("transfer.receive", transfer, body),
        lambda: transfers.receive(
            transfer, body.location, lines, visible=who.covers, actor=who.actor, conn=write.conn
        ),
    )
