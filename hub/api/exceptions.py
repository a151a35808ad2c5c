"""REST routes: the exceptions queue — list, read with history, raise, work, close.

Site-less routes scope themselves: the list shows the caller's sites only, and an
exception of another site answers 404 as if it did not exist.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response
from psycopg import AsyncConnection
from pydantic import BaseModel, Field

from warelink.hub.access import Permission, Principal
from warelink.hub.api.deps import Allow, Conn, Write
from warelink.hub.api.fields import (
    Code,
    CodeQuery,
    Limit,
    Offset,
    Reason,
    ReferencePath,
    RequiredName,
    SitePath,
    SiteQuery,
    Text,
)
from warelink.hub.api.problems import READ_ERRORS, WRITE_ERRORS
from warelink.hub.stock import exceptions
from warelink.hub.stock.sites import require_location, require_site

router = APIRouter(tags=["exceptions"])

Kind = Literal[
    "negative_balance", "verify_mismatch", "unknown_sku", "unknown_epc", "held_location",
    "count_variance", "serial_conflict", "floor_report", "outbox_conflict",
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


async def _detail(exception_id: int, who: Principal, *, conn: AsyncConnection) -> dict[str, Any]:
    """An exception with its history, if it is of the caller's sites (else 404)."""
    row = await exceptions.load(exception_id, sites=who.sites, lock=False, conn=conn)
    row["history"] = await exceptions.history(row, conn=conn)
    return row


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
    write: Write,
    who: Annotated[Principal, Allow(Permission.EXCEPTIONS_RAISE)],
) -> Response:
    """Raise a floor report; one open report per subject (409 names the open one)."""
    detail: dict[str, Any] = {"note": body.note}
    if body.location is not None:
        detail["location"] = body.location

    async def raised() -> dict[str, Any]:
        await require_site(site, conn=write.conn)
        if body.location is not None:
            await require_location(site, body.location, conn=write.conn)
        exception_id = await exceptions.raise_floor_report(
            site, body.subject, detail, actor=who.actor, conn=write.conn
        )
        return await _detail(exception_id, who, conn=write.conn)

    payload = {"op": "exception.raise", "site": site, **body.model_dump(mode="json")}
    return await write(who, payload, raised)


@router.post("/exceptions/{exception_id}/assign", response_model=ExceptionDetail,
             responses=WRITE_ERRORS)  # fmt: skip
async def assign_exception(
    exception_id: ReferencePath,
    body: Assignment,
    write: Write,
    who: Annotated[Principal, Allow(Permission.EXCEPTIONS_WORK)],
) -> Response:
    """Take it (no assignee) or assign it to someone of its site who may work exceptions."""
    assignee = body.assignee or who.actor
    return await _step(exception_id, "assign", body, who, write, lambda row, conn: (
        exceptions.assign(row, assignee, actor=who.actor, conn=conn)
    ))  # fmt: skip


@router.post("/exceptions/{exception_id}/review", response_model=ExceptionDetail,
             responses=WRITE_ERRORS)  # fmt: skip
async def hand_for_review(
    exception_id: ReferencePath,
    body: Handover,
    write: Write,
    who: Annotated[Principal, Allow(Permission.EXCEPTIONS_WORK)],
) -> Response:
    """Hand it on to its reviewer (open → in_review)."""
    return await _step(exception_id, "review", body, who, write, lambda row, conn: (
        exceptions.hand_for_review(row, body.note, actor=who.actor, conn=conn)
    ))  # fmt: skip


async def _close(
    exception_id: int, state: str, body: Closing, who: Principal, write: Write
) -> Response:
    roles = frozenset(who.roles)
    return await _step(exception_id, state, body, who, write, lambda row, conn: exceptions.close(
        row, state, body.resolution, actor=who.actor, roles=roles, conn=conn
    ))  # fmt: skip


async def _step(
    exception_id: int, step: str, body: BaseModel, who: Principal, write: Write,
    change: Callable[[dict[str, Any], AsyncConnection], Awaitable[object]],
) -> Response:  # fmt: skip
    """A change to an exception of the caller's sites, made with it locked; answers it."""

    async def changed() -> dict[str, Any]:
        row = await exceptions.load(exception_id, sites=who.sites, lock=True, conn=write.conn)
        await change(row, write.conn)
        return await _detail(exception_id, who, conn=write.conn)

    payload = {"op": f"exception.{step}", "id": exception_id, **body.model_dump(mode="json")}
    return await write(who, payload, changed)


@router.post("/exceptions/{exception_id}/resolve", response_model=ExceptionDetail,
             responses=WRITE_ERRORS)  # fmt: skip
async def resolve_exception(
    exception_id: ReferencePath,
    body: Closing,
    write: Write,
    who: Annotated[Principal, Allow(Permission.EXCEPTIONS_RESOLVE)],
) -> Response:
    """Resolve it with what was done: for its reviewer role or an admin (403 otherwise)."""
    return await _close(exception_id, "resolved", body, who, write)


@router.post("/exceptions/{exception_id}/dismiss", response_model=ExceptionDetail,
             responses=WRITE_ERRORS)  # fmt: skip
async def dismiss_exception(
    exception_id: ReferencePath,
    body: Closing,
    write: Write,
    who: Annotated[Principal, Allow(Permission.EXCEPTIONS_RESOLVE)],
) -> Response:
    """Dismiss it (nothing was wrong), with why: for its reviewer role or an admin."""
    return await _close(exception_id, "dismissed", body, who, write)
