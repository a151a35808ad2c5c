"""REST routes: stock control — cycle counts, adjustments and their reason codes.

Thin: validate, call ``hub.operations.counts`` / ``.adjustments`` (writes through
``Write``), answer with the pydantic model the route declares.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from fastapi.responses import Response
from psycopg import AsyncConnection
from pydantic import AwareDatetime, BaseModel, Field

from warelink.hub.access import Permission, Principal
from warelink.hub.api.deps import Allow, Conn, HubDep, Write
from warelink.hub.api.fields import (
    Change,
    Code,
    CodeQuery,
    Counted,
    Limit,
    Offset,
    OptCode,
    QuantityOut,
    ReferencePath,
    SitePath,
    Text,
)
from warelink.hub.api.problems import READ_ERRORS, WRITE_ERRORS, errors
from warelink.hub.operations import adjustments, counts

router = APIRouter(tags=["stock control"])


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


async def _blind(site: str, count_id: int, *, conn: AsyncConnection) -> dict[str, Any]:
    """What the counter sees of a count: no system quantities."""
    return await counts.get(site, count_id, with_variance=False, conn=conn)


@router.post("/sites/{site}/counts", response_model=Count, status_code=201,
             responses=WRITE_ERRORS)  # fmt: skip
async def open_count(
    site: SitePath,
    body: OpenCount,
    write: Write,
    who: Annotated[Principal, Allow(Permission.COUNT)],
) -> Response:
    """Open a cycle count of a location, to be counted blind."""

    async def opened() -> dict[str, Any]:
        count_id = await counts.open_count(site, body.location, actor=who.actor, conn=write.conn)
        return await _blind(site, count_id, conn=write.conn)

    payload = {"op": "count.open", "site": site, **body.model_dump(mode="json")}
    return await write(who, payload, opened)


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
    write: Write,
    who: Annotated[Principal, Allow(Permission.COUNT)],
) -> Response:
    """Record what was counted (open → counted); a variance opens a count_variance exception."""
    lines = [counts.CountedLine(line.sku, line.lot, line.counted) for line in body.lines]

    async def recorded() -> dict[str, Any]:
        await counts.record(
            site, count_id, lines, actor=who.actor, complete=body.complete, conn=write.conn,
            counted_at=body.counted_at or dt.datetime.now(dt.UTC),
        )  # fmt: skip
        return await _blind(site, count_id, conn=write.conn)

    payload = {"op": "count.record", "site": site, "count": count_id,
               **body.model_dump(mode="json")}  # fmt: skip
    return await write(who, payload, recorded)


async def _decide(site: str, count_id: int, step: str, who: Principal, write: Write) -> Response:
    """Approve or reject (answers the count), or ask for a recount (answers the new one)."""

    async def decided() -> dict[str, Any]:
        conn = write.conn
        if step == "recount":
            recount_id = await counts.request_recount(site, count_id, actor=who.actor, conn=conn)
            return await _blind(site, recount_id, conn=conn)
        decide = counts.approve if step == "approve" else counts.reject
        await decide(site, count_id, actor=who.actor, conn=conn)
        return await counts.get(site, count_id, with_variance=True, conn=conn)

    return await write(who, {"op": f"count.{step}", "site": site, "count": count_id}, decided)


@router.post("/sites/{site}/counts/{count_id}/approve", response_model=Count,
             responses=WRITE_ERRORS)  # fmt: skip
async def approve_count(
    site: SitePath,
    count_id: ReferencePath,
    write: Write,
    who: Annotated[Principal, Allow(Permission.COUNT_APPROVE)],
) -> Response:
    """Approve (counted → approved): store each baseline, post counted − baseline.

    The approver must not be the counter (403).
    """
    return await _decide(site, count_id, "approve", who, write)


@router.post("/sites/{site}/counts/{count_id}/recount", response_model=Count, status_code=201,
             responses=WRITE_ERRORS)  # fmt: skip
async def recount(
    site: SitePath,
    count_id: ReferencePath,
    write: Write,
    who: Annotated[Principal, Allow(Permission.COUNT_APPROVE)],
) -> Response:
    """Ask for a recount (counted → recount); answers the new, open count."""
    return await _decide(site, count_id, "recount", who, write)


@router.post("/sites/{site}/counts/{count_id}/reject", response_model=Count,
             responses=WRITE_ERRORS)  # fmt: skip
async def reject_count(
    site: SitePath,
    count_id: ReferencePath,
    write: Write,
    who: Annotated[Principal, Allow(Permission.COUNT_APPROVE)],
) -> Response:
    """Reject (counted → rejected): nothing is posted."""
    return await _decide(site, count_id, "reject", who, write)


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


@router.post("/sites/{site}/adjustments", response_model=Adjustment, status_code=201,
             responses=WRITE_ERRORS)  # fmt: skip
async def request_adjustment(
    site: SitePath,
    body: AdjustmentRequest,
    write: Write,
    hub: HubDep,
    who: Annotated[Principal, Allow(Permission.ADJUST)],
) -> Response:
    """Request an adjustment: posted at once within the approval threshold, else pending."""
    change = adjustments.Requested(**body.model_dump())
    threshold = Decimal(hub.settings.adjustment_approval_threshold)

    async def requested() -> dict[str, Any]:
        adjustment_id = await adjustments.request(site, change, actor=who.actor,
                                                  threshold=threshold, conn=write.conn)  # fmt: skip
        return await adjustments.get(site, adjustment_id, conn=write.conn)

    payload = {"op": "adjustment.request", "site": site, **body.model_dump(mode="json")}
    return await write(who, payload, requested)


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
    site: str, adjustment_id: int, approve: bool, who: Principal, write: Write
) -> Response:
    step, decide = ("approve", adjustments.approve) if approve else ("reject", adjustments.reject)

    async def decided() -> dict[str, Any]:
        await decide(site, adjustment_id, actor=who.actor, conn=write.conn)
        return await adjustments.get(site, adjustment_id, conn=write.conn)

    payload = {"op": f"adjustment.{step}", "site": site, "adjustment": adjustment_id}
    return await write(who, payload, decided)


@router.post("/sites/{site}/adjustments/{adjustment_id}/approve", response_model=Adjustment,
             responses=WRITE_ERRORS)  # fmt: skip
async def approve_adjustment(
    site: SitePath,
    adjustment_id: ReferencePath,
    write: Write,
    who: Annotated[Principal, Allow(Permission.ADJUST_APPROVE)],
) -> Response:
    """Approve a pending adjustment (posted); not the requester's own (403)."""
    return await _decide_adjustment(site, adjustment_id, True, who, write)


@router.post("/sites/{site}/adjustments/{adjustment_id}/reject", response_model=Adjustment,
             responses=WRITE_ERRORS)  # fmt: skip
async def reject_adjustment(
    site: SitePath,
    adjustment_id: ReferencePath,
    write: Write,
    who: Annotated[Principal, Allow(Permission.ADJUST_APPROVE)],
) -> Response:
    """Reject a pending adjustment (nothing posted); not the requester's own (403)."""
    return await _decide_adjustment(site, adjustment_id, False, who, write)
