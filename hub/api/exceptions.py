"""REST routes: the exceptions queue — list, read with history, raise, work, close.

Site-less routes scope themselves: the list shows the caller's sites only, and an
exception of another site answers 404 as if it did not exist.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response
from pydantic import BaseModel, Field

from warelink.hub.access import Permission, Principal
from warelink.hub.api.deps import Allow, Conn, IdempotencyKey, Idempotent
from warelink.hub.api.fields import (
    Code,
    CodeQuery,
    Reason,
    ReferencePath,
    RequiredName,
    SitePath,
    SiteQuery,
    Text,
)
from warelink.hub.api.problems import READ_ERRORS, WRITE_ERRORS
from warelink.hub.api.stock_control import Limit, Offset
from warelink.hub.operations.counts import require_internal_location
from warelink.hub.stock import exceptions
from warelink.hub.stock.sites import require_site

router = APIRouter(tags=["exceptions"])

Kind = Literal[
    "negative_balance", "verify_mismatch", "unknown_sku", "unknown_epc", "held_location",
    "count_variance", "serial_conflict", "floor_report",
]  # fmt: skip
State = Literal["open", "in_review", "resolved", "dismissed"]


class ExceptionInfo(BaseModel):
    id: int
    site: str
    kind: Kind
    subject: str
    detail: dict[str, Any]
    state: State
    owner_role: str
    support_role: str
    reviewer_role: str
    assignee: str | None
    opened_by: str
    opened_at: dt.datetime
    resolved_by: str | None
    resolved_at: dt.datetime | None
    resolution: str | None
    movement: int | None


class HistoryEntry(BaseModel):
    at: dt.datetime
    actor: str
    action: str
    detail: dict[str, Any]


class ExceptionDetail(ExceptionInfo):
    history: list[HistoryEntry] = Field(description="every change, oldest first (audit log)")


class ExceptionPage(BaseModel):
    items: list[ExceptionInfo]
    total: int = Field(description="how many match the filters in all")
    limit: int
    offset: int


class FloorReport(BaseModel):
    subject: RequiredName = Field(description="what is wrong, in a few words")
    note: Text = ""
    location: Code | None = None


class Assignment(BaseModel):
    assignee: Code | None = Field(None, description="who works it; default: the caller")


class Handover(BaseModel):
    note: Text = ""


class Closing(BaseModel):
    resolution: Reason


async def _detail(
    exception_id: int, who: Principal, *, conn: Conn, lock: bool = False
) -> dict[str, Any]:
    row = await exceptions.load(exception_id, sites=who.sites, lock=lock, conn=conn)
    row["history"] = await exceptions.history(row, conn=conn)
    return ExceptionDetail.model_validate(row).model_dump(mode="json")


@router.get("/exceptions", response_model=ExceptionPage, responses=READ_ERRORS)
async def list_exceptions(
    conn: Conn,
    who: Annotated[Principal, Allow(Permission.EXCEPTIONS_READ)],
    site: SiteQuery = None,
    state: State | None = None,
    kind: Kind | None = None,
    assignee: CodeQuery = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> ExceptionPage:
    """The queue of the caller's sites, oldest first, filtered and paged."""
    if site is not None and not who.covers(site):
        raise HTTPException(403, f"no access to site {site!r}")
    rows, total = await exceptions.list_queue(
        sites=who.sites, site=site, state=state, kind=kind, assignee=assignee, limit=limit,
        offset=offset, conn=conn,
    )  # fmt: skip
    items = [ExceptionInfo.model_validate(row) for row in rows]
    return ExceptionPage(items=items, total=total, limit=limit, offset=offset)


@router.get("/exceptions/{exception_id}", response_model=ExceptionDetail, responses=READ_ERRORS)
async def get_exception(
    exception_id: ReferencePath,
    conn: Conn,
    who: Annotated[Principal, Allow(Permission.EXCEPTIONS_READ)],
) -> ExceptionDetail:
    """One exception with its history."""
    return ExceptionDetail.model_validate(await _detail(exception_id, who, conn=conn))


@router.post("/sites/{site}/exceptions", response_model=ExceptionDetail, status_code=201,
             responses=WRITE_ERRORS)  # fmt: skip
async def raise_floor_report(
    site: SitePath,
    body: FloorReport,
    conn: Conn,
    who: Annotated[Principal, Allow(Permission.EXCEPTIONS_RAISE)],
    key: IdempotencyKey = None,
) -> Response:
    """Raise a floor report; one open report per subject (409 names the open one)."""
    payload = {"op": "exception.raise", "site": site, **body.model_dump(mode="json")}
    async with Idempotent(conn, who, key, payload) as write:
        if write.stored:
            return write.stored
        await require_site(site, conn=conn)
        detail: dict[str, Any] = {"note": body.note}
        if body.location is not None:
            await require_internal_location(site, body.location, conn=conn)
            detail["location"] = body.location
        exception_id = await exceptions.raise_floor_report(
            site, body.subject, detail, actor=who.actor, conn=conn
        )
        return await write.answer(201, await _detail(exception_id, who, conn=conn))


@router.post("/exceptions/{exception_id}/assign", response_model=ExceptionDetail,
             responses=WRITE_ERRORS)  # fmt: skip
async def assign_exception(
    exception_id: ReferencePath,
    body: Assignment,
    conn: Conn,
    who: Annotated[Principal, Allow(Permission.EXCEPTIONS_WORK)],
    key: IdempotencyKey = None,
) -> Response:
    """Take it (no assignee) or assign it to someone of its site who may work exceptions."""
    payload = {"op": "exception.assign", "id": exception_id, **body.model_dump(mode="json")}
    async with Idempotent(conn, who, key, payload) as write:
        if write.stored:
            return write.stored
        row = await exceptions.load(exception_id, sites=who.sites, lock=True, conn=conn)
        await exceptions.assign(row, body.assignee or who.actor, actor=who.actor, conn=conn)
        return await write.answer(200, await _detail(exception_id, who, conn=conn))


@router.post("/exceptions/{exception_id}/review", response_model=ExceptionDetail,
             responses=WRITE_ERRORS)  # fmt: skip
async def hand_for_review(
    exception_id: ReferencePath,
    body: Handover,
    conn: Conn,
    who: Annotated[Principal, Allow(Permission.EXCEPTIONS_WORK)],
    key: IdempotencyKey = None,
) -> Response:
    """Hand it on to its reviewer (open → in_review)."""
    payload = {"op": "exception.review", "id": exception_id, **body.model_dump(mode="json")}
    async with Idempotent(conn, who, key, payload) as write:
        if write.stored:
            return write.stored
        row = await exceptions.load(exception_id, sites=who.sites, lock=True, conn=conn)
        await exceptions.hand_for_review(row, body.note, actor=who.actor, conn=conn)
        return await write.answer(200, await _detail(exception_id, who, conn=conn))


async def _close(
    exception_id: int, state: str, body: Closing, who: Principal, key: str | None, conn: Conn
) -> Response:
    payload = {"op": f"exception.{state}", "id": exception_id, **body.model_dump(mode="json")}
    async with Idempotent(conn, who, key, payload) as write:
        if write.stored:
            return write.stored
        row = await exceptions.load(exception_id, sites=who.sites, lock=True, conn=conn)
        await exceptions.close(row, state, body.resolution, actor=who.actor,
                               roles=frozenset(who.roles), conn=conn)  # fmt: skip
        return await write.answer(200, await _detail(exception_id, who, conn=conn))


@router.post("/exceptions/{exception_id}/resolve", response_model=ExceptionDetail,
             responses=WRITE_ERRORS)  # fmt: skip
async def resolve_exception(
    exception_id: ReferencePath,
    body: Closing,
    conn: Conn,
    who: Annotated[Principal, Allow(Permission.EXCEPTIONS_RESOLVE)],
    key: IdempotencyKey = None,
) -> Response:
    """Resolve it with what was done: for its reviewer role or an admin (403 otherwise)."""
    return await _close(exception_id, "resolved", body, who, key, conn)


@router.post("/exceptions/{exception_id}/dismiss", response_model=ExceptionDetail,
             responses=WRITE_ERRORS)  # fmt: skip
async def dismiss_exception(
    exception_id: ReferencePath,
    body: Closing,
    conn: Conn,
    who: Annotated[Principal, Allow(Permission.EXCEPTIONS_RESOLVE)],
    key: IdempotencyKey = None,
) -> Response:
    """Dismiss it (nothing was wrong), with why: for its reviewer role or an admin."""
    return await _close(exception_id, "dismissed", body, who, key, conn)
