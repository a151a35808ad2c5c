"""REST routes: stock control — cycle counts, adjustments and their reason codes.

Thin: validate, call ``hub.counts`` / ``hub.adjustments`` inside ``Idempotent`` for
writes, answer with the pydantic model the route declares.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import AwareDatetime, BaseModel, Field, PlainSerializer

from warelink.hub.access import Permission, Principal
from warelink.hub.api.deps import Allow, Conn, HubDep, IdempotencyKey, Idempotent
from warelink.hub.api.fields import (
    Change,
    Code,
    CodeQuery,
    Counted,
    OptCode,
    ReferencePath,
    SitePath,
    Text,
)
from warelink.hub.api.problems import READ_ERRORS, WRITE_ERRORS, errors
from warelink.hub.operations import adjustments, counts

router = APIRouter(tags=["stock control"])

Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=10**9)]
# Quantities leave as plain decimal strings ("12.5", never "1.25E+1"): exact, and JSON-safe.
QuantityOut = Annotated[Decimal, PlainSerializer(lambda q: format(q, "f"), return_type=str)]


# ------------------------------------------------------------------ counts

CountState = Literal["open", "counted", "recount", "approved", "rejected"]


class OpenCount(BaseModel):
    location: Code


class CountedLineIn(BaseModel):
    sku: Code
    lot: OptCode = ""
    counted: Counted


class RecordCount(BaseModel):
    lines: Annotated[list[CountedLineIn], Field(min_length=1, max_length=1000)]
    counted_at: AwareDatetime | None = Field(
        None, description="When the shelf was counted (default: now); a paper count may be"
        " entered later with its real time.",
    )  # fmt: skip
    complete: bool = Field(
        True, description="The lines are everything at the location: any SKU/lot the location"
        " has held and is not on a line was counted as zero.",
    )  # fmt: skip


class CountLine(BaseModel):
    sku: str
    lot: str
    counted: QuantityOut
    baseline: QuantityOut | None = Field(
        description="The ledger's quantity as of counted_at (all statuses); null when blind"
    )
    variance: QuantityOut | None = Field(description="counted − baseline; null when blind")


class CountSummary(BaseModel):
    id: int
    site: str
    location: str
    state: CountState
    recount_of: int | None
    recount: int | None = Field(description="the count that recounts this one")
    created_by: str
    created_at: dt.datetime
    counted_by: str | None
    counted_at: dt.datetime | None
    decided_by: str | None
    decided_at: dt.datetime | None


class Count(CountSummary):
    blind: bool = Field(description="true: system quantities are withheld from this caller")
    lines: list[CountLine]
    movements: list[int] = Field(description="the count movements its approval posted")


def _sees_quantities(who: Principal) -> bool:
    """Counting is blind: only those who decide on counts or read the ledger see variance."""
    return who.allows(Permission.COUNT_APPROVE) or who.allows(Permission.LEDGER_READ)


async def _count(site: str, count_id: int, *, blind: bool, conn: Conn) -> dict[str, Any]:
    row = await counts.get(site, count_id, with_variance=not blind, conn=conn)
    return Count.model_validate(row).model_dump(mode="json")


@router.post("/sites/{site}/counts", response_model=Count, status_code=201,
             responses=WRITE_ERRORS)  # fmt: skip
async def open_count(
    site: SitePath,
    body: OpenCount,
    conn: Conn,
    who: Annotated[Principal, Allow(Permission.COUNT)],
    key: IdempotencyKey = None,
) -> Response:
    """Open a cycle count of a location, to be counted blind."""
    payload = {"op": "count.open", "site": site, **body.model_dump(mode="json")}
    async with Idempotent(conn, who, key, payload) as write:
        if write.stored:
            return write.stored
        count_id = await counts.open_count(site, body.location, actor=who.actor, conn=conn)
        return await write.answer(201, await _count(site, count_id, blind=True, conn=conn))


@router.get("/sites/{site}/counts", response_model=list[CountSummary], responses=READ_ERRORS)
async def list_counts(
    site: SitePath,
    conn: Conn,
    who: Annotated[Principal, Allow(Permission.STOCK_READ)],
    state: CountState | None = None,
    location: CodeQuery = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> list[CountSummary]:
    """A site's counts, newest first."""
    rows = await counts.list_counts(site, state=state, location=location, limit=limit,
                                    offset=offset, conn=conn)  # fmt: skip
    return [CountSummary.model_validate(row) for row in rows]


@router.get("/sites/{site}/counts/{count_id}", response_model=Count, responses=READ_ERRORS)
async def get_count(
    site: SitePath,
    count_id: ReferencePath,
    conn: Conn,
    who: Annotated[Principal, Allow(Permission.STOCK_READ)],
) -> Count:
    """A count with its lines; baseline and variance only for those who decide on counts."""
    row = await counts.get(site, count_id, with_variance=_sees_quantities(who), conn=conn)
    return Count.model_validate(row)


@router.post("/sites/{site}/counts/{count_id}/lines", response_model=Count,
             responses=WRITE_ERRORS)  # fmt: skip
async def record_count(
    site: SitePath,
    count_id: ReferencePath,
    body: RecordCount,
    conn: Conn,
    who: Annotated[Principal, Allow(Permission.COUNT)],
    key: IdempotencyKey = None,
) -> Response:
    """Record what was counted (open → counted); a variance opens a count_variance exception."""
    payload = {"op": "count.record", "site": site, "count": count_id,
               **body.model_dump(mode="json")}  # fmt: skip
    async with Idempotent(conn, who, key, payload) as write:
        if write.stored:
            return write.stored
        lines = [counts.CountedLine(line.sku, line.lot, line.counted) for line in body.lines]
        await counts.record(
            site, count_id, lines, actor=who.actor, complete=body.complete, conn=conn,
            counted_at=body.counted_at or dt.datetime.now(dt.UTC),
        )  # fmt: skip
        return await write.answer(200, await _count(site, count_id, blind=True, conn=conn))


async def _decide(
    site: str, count_id: int, step: str, who: Principal, key: str | None, conn: Conn
) -> Response:
    async with Idempotent(conn, who, key, {"op": f"count.{step}", "site": site,
                                           "count": count_id}) as write:  # fmt: skip
        if write.stored:
            return write.stored
        status, shown = 200, count_id
        if step == "approve":
            await counts.approve(site, count_id, actor=who.actor, conn=conn)
        elif step == "reject":
            await counts.reject(site, count_id, actor=who.actor, conn=conn)
        else:
            status = 201
            shown = await counts.request_recount(site, count_id, actor=who.actor, conn=conn)
        return await write.answer(status, await _count(site, shown, blind=step == "recount",
                                                       conn=conn))  # fmt: skip


@router.post("/sites/{site}/counts/{count_id}/approve", response_model=Count,
             responses=WRITE_ERRORS)  # fmt: skip
async def approve_count(
    site: SitePath,
    count_id: ReferencePath,
    conn: Conn,
    who: Annotated[Principal, Allow(Permission.COUNT_APPROVE)],
    key: IdempotencyKey = None,
) -> Response:
    """Approve (counted → approved): store each baseline, post counted − baseline.

    The approver must not be the counter (403).
    """
    return await _decide(site, count_id, "approve", who, key, conn)


@router.post("/sites/{site}/counts/{count_id}/recount", response_model=Count, status_code=201,
             responses=WRITE_ERRORS)  # fmt: skip
async def recount(
    site: SitePath,
    count_id: ReferencePath,
    conn: Conn,
    who: Annotated[Principal, Allow(Permission.COUNT_APPROVE)],
    key: IdempotencyKey = None,
) -> Response:
    """Ask for a recount (counted → recount); answers the new, open count."""
    return await _decide(site, count_id, "recount", who, key, conn)


@router.post("/sites/{site}/counts/{count_id}/reject", response_model=Count,
             responses=WRITE_ERRORS)  # fmt: skip
async def reject_count(
    site: SitePath,
    count_id: ReferencePath,
    conn: Conn,
    who: Annotated[Principal, Allow(Permission.COUNT_APPROVE)],
    key: IdempotencyKey = None,
) -> Response:
    """Reject (counted → rejected): nothing is posted."""
    return await _decide(site, count_id, "reject", who, key, conn)


# ------------------------------------------------------------------ adjustments

AdjustmentState = Literal["pending", "posted", "rejected"]
Status = Literal["available", "qc_hold", "damaged"]


class ReasonCode(BaseModel):
    code: str
    description: str


class AdjustmentRequest(BaseModel):
    location: Code
    sku: Code
    lot: OptCode = ""
    serial: OptCode = ""
    status: Status = "available"
    quantity: Change
    reason: Code = Field(description="a code from GET /api/v1/reason-codes")
    note: Text = ""


class Adjustment(BaseModel):
    id: int
    site: str
    location: str
    sku: str
    lot: str
    serial: str
    status: Status
    quantity: QuantityOut
    reason: str
    note: str
    state: AdjustmentState
    requested_by: str
    requested_at: dt.datetime
    decided_by: str | None
    decided_at: dt.datetime | None
    movements: list[int]


@router.get("/reason-codes", response_model=list[ReasonCode], responses=errors(401, 403))
async def reason_codes(
    conn: Conn, who: Annotated[Principal, Allow(Permission.MASTERDATA_READ)]
) -> list[ReasonCode]:
    """The reasons an adjustment may give."""
    return [ReasonCode.model_validate(row) for row in await adjustments.reason_codes(conn=conn)]


async def _adjustment(site: str, adjustment_id: int, *, conn: Conn) -> dict[str, Any]:
    row = await adjustments.get(site, adjustment_id, conn=conn)
    return Adjustment.model_validate(row).model_dump(mode="json")


@router.post("/sites/{site}/adjustments", response_model=Adjustment, status_code=201,
             responses=WRITE_ERRORS)  # fmt: skip
async def request_adjustment(
    site: SitePath,
    body: AdjustmentRequest,
    conn: Conn,
    hub: HubDep,
    who: Annotated[Principal, Allow(Permission.ADJUST)],
    key: IdempotencyKey = None,
) -> Response:
    """Request an adjustment: posted at once within the approval threshold, else pending."""
    payload = {"op": "adjustment.request", "site": site, **body.model_dump(mode="json")}
    async with Idempotent(conn, who, key, payload) as write:
        if write.stored:
            return write.stored
        change = adjustments.Requested(
            location=body.location, sku=body.sku, lot=body.lot, serial=body.serial,
            status=body.status, quantity=body.quantity, reason=body.reason, note=body.note,
        )  # fmt: skip
        threshold = Decimal(hub.settings.adjustment_approval_threshold)
        adjustment_id = await adjustments.request(site, change, actor=who.actor,
                                                  threshold=threshold, conn=conn)  # fmt: skip
        return await write.answer(201, await _adjustment(site, adjustment_id, conn=conn))


@router.get("/sites/{site}/adjustments", response_model=list[Adjustment], responses=READ_ERRORS)
async def list_adjustments(
    site: SitePath,
    conn: Conn,
    who: Annotated[Principal, Allow(Permission.STOCK_READ)],
    state: AdjustmentState | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> list[Adjustment]:
    """A site's adjustments, newest first (``state=pending``: what awaits approval)."""
    rows = await adjustments.list_adjustments(site, state=state, limit=limit, offset=offset,
                                              conn=conn)  # fmt: skip
    return [Adjustment.model_validate(row) for row in rows]


@router.get("/sites/{site}/adjustments/{adjustment_id}", response_model=Adjustment,
            responses=READ_ERRORS)  # fmt: skip
async def get_adjustment(
    site: SitePath,
    adjustment_id: ReferencePath,
    conn: Conn,
    who: Annotated[Principal, Allow(Permission.STOCK_READ)],
) -> Adjustment:
    return Adjustment.model_validate(await adjustments.get(site, adjustment_id, conn=conn))


async def _decide_adjustment(
    site: str, adjustment_id: int, approve: bool, who: Principal, key: str | None, conn: Conn
) -> Response:
    step = "approve" if approve else "reject"
    async with Idempotent(conn, who, key, {"op": f"adjustment.{step}", "site": site,
                                           "adjustment": adjustment_id}) as write:  # fmt: skip
        if write.stored:
            return write.stored
        decide = adjustments.approve if approve else adjustments.reject
        await decide(site, adjustment_id, actor=who.actor, conn=conn)
        return await write.answer(200, await _adjustment(site, adjustment_id, conn=conn))


@router.post("/sites/{site}/adjustments/{adjustment_id}/approve", response_model=Adjustment,
             responses=WRITE_ERRORS)  # fmt: skip
async def approve_adjustment(
    site: SitePath,
    adjustment_id: ReferencePath,
    conn: Conn,
    who: Annotated[Principal, Allow(Permission.ADJUST_APPROVE)],
    key: IdempotencyKey = None,
) -> Response:
    """Approve a pending adjustment (posted); not the requester's own (403)."""
    return await _decide_adjustment(site, adjustment_id, True, who, key, conn)


@router.post("/sites/{site}/adjustments/{adjustment_id}/reject", response_model=Adjustment,
             responses=WRITE_ERRORS)  # fmt: skip
async def reject_adjustment(
    site: SitePath,
    adjustment_id: ReferencePath,
    conn: Conn,
    who: Annotated[Principal, Allow(Permission.ADJUST_APPROVE)],
    key: IdempotencyKey = None,
) -> Response:
    """Reject a pending adjustment (nothing posted); not the requester's own (403)."""
    return await _decide_adjustment(site, adjustment_id, False, who, key, conn)
