"""REST routes: outbound — release orders, pick tasks, pick, cancel, verify, ship.

Thin: validate, call ``hub.operations.outbound`` or ``hub.operations.verification``
(writes through ``Write``), answer with the models below.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, Field

from warelink.hub.access import Permission, Principal
from warelink.hub.api.deps import Allow, Conn, Write
from warelink.hub.api.fields import (
    Code,
    CodePath,
    CodeQuery,
    EpcHex,
    Limit,
    Name,
    Offset,
    OptCode,
    Quantity,
    QuantityOut,
    ReferencePath,
    SitePath,
    Text,
    Weight,
)
from warelink.hub.api.problems import READ_ERRORS, WRITE_ERRORS
from warelink.hub.errors import Forbidden
from warelink.hub.operations import outbound
from warelink.hub.operations.verification import record_verification
from warelink.hub.stock import sites as queries

router = APIRouter(tags=["outbound"])

TaskState = Literal["open", "picked", "verified", "shipped", "cancelled"]
OrderState = Literal["released", "picked", "shipped", "cancelled"]


# ------------------------------------------------------------------ models


class OrderLineIn(BaseModel):
    sku: Code
    quantity: Quantity
    lot: OptCode = Field("", description="'' : any lot, chosen by the SKU's pick policy")


class ReleaseIn(BaseModel):
    reference: Code
    customer: Name = ""
    lines: list[OrderLineIn] = Field(min_length=1, max_length=200)
    staging: Code | None = Field(
        None, description="where picks go; default: the site's first staging-zone location"
    )
    partial: bool = Field(
        True,
        description="true: release what can be reserved, lines show what is short;"
        " false: refuse (409) unless every line can be reserved in full",
    )


class PickIn(BaseModel):
    location: Code = Field(description="where the stock was actually taken from")
    lot: OptCode | None = Field(None, description="the lot actually taken; default: the task's")
    quantity: Quantity = Field(description="up to the task's quantity; less is a short pick")
    serials: list[Code] | None = Field(
        None, max_length=1000, description="for serial-tracked SKUs: the serials picked"
    )


class CancelIn(BaseModel):
    reason: Text = ""


class ShipIn(BaseModel):
    override: bool = Field(
        False, description="ship despite a failed verification (needs 'adjust.approve')"
    )
    reason: Text | None = None


class VerificationIn(BaseModel):
    sku: Code = Field(description="SKU code or GTIN")
    lot: OptCode = ""
    quantity: Quantity
    weight_kg: Weight | None = None
    epcs: list[EpcHex] | None = Field(None, max_length=10_000)
    order_ref: Code | None = None


class TaskOut(BaseModel):
    id: int
    site: str
    order_ref: str
    line: int | None
    sku: str
    lot: str
    location: str = Field(description="suggested source location")
    to_location: str
    quantity: QuantityOut
    state: TaskState
    reserved: QuantityOut
    picked: QuantityOut
    shipped: QuantityOut
    created_at: dt.datetime
    picked_by: str | None
    picked_at: dt.datetime | None


class LineOut(BaseModel):
    line: int
    sku: str
    lot: str
    quantity: QuantityOut = Field(description="ordered")
    planned: QuantityOut = Field(description="in pick tasks not cancelled")
    reserved: QuantityOut
    picked: QuantityOut
    shipped: QuantityOut
    short: QuantityOut = Field(description="ordered − (open tasks + picked): what will not come")


class VerificationOut(BaseModel):
    id: int
    site: str
    order_ref: str | None
    pick_task: int | None
    sku: str
    lot: str
    quantity: QuantityOut
    method: Literal["scale", "rfid", "scan"]
    weight_kg: QuantityOut | None
    expected_kg: QuantityOut | None
    tolerance_kg: QuantityOut | None
    ok: bool
    detail: str
    actor: str
    at: dt.datetime
    source_gateway: str | None
    source_seq: int | None


class OrderSummary(BaseModel):
    site: str
    reference: str
    customer: str
    state: OrderState
    released_at: dt.datetime
    released_by: str
    shipped_at: dt.datetime | None


class OrderOut(OrderSummary):
    lines: list[LineOut]
    tasks: list[TaskOut]
    verifications: list[VerificationOut]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# ------------------------------------------------------------------ orders


@router.post(
    "/sites/{site}/orders", response_model=OrderOut, status_code=201, responses=WRITE_ERRORS
)
async def release_order(
    site: SitePath,
    body: ReleaseIn,
    who: Annotated[Principal, Allow(Permission.ORDERS_WRITE)],
    write: Write,
) -> Response:
    """Release an order: pick tasks with reservations by FIFO/FEFO; lines say what is short."""
    lines = [outbound.OrderLine(line.sku, line.quantity, line.lot) for line in body.lines]
    return await write(who, {"site": site, **body.model_dump(mode="json")}, lambda: (
        outbound.release_order(
            site, reference=body.reference, customer=body.customer, lines=lines,
            staging=body.staging, partial=body.partial, actor=who.actor, at=_now(),
            conn=write.conn,
        )
    ))  # fmt: skip


@router.get("/sites/{site}/orders", response_model=list[OrderSummary], responses=READ_ERRORS)
async def list_orders(
    site: SitePath,
    who: Annotated[Principal, Allow(Permission.STOCK_READ)],
    conn: Conn,
    state: OrderState | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[OrderSummary]:
    """The site's orders, oldest release first."""
    await queries.require_site(site, conn=conn)
    rows = await outbound.list_orders(site, state=state, limit=limit, offset=offset, conn=conn)
    return [OrderSummary.model_validate(row) for row in rows]


@router.get("/sites/{site}/orders/{reference}", response_model=OrderOut, responses=READ_ERRORS)
async def get_order(
    site: SitePath,
    reference: CodePath,
    who: Annotated[Principal, Allow(Permission.STOCK_READ)],
    conn: Conn,
) -> OrderOut:
    """An order with its lines, pick tasks and verifications."""
    return OrderOut.model_validate(await outbound.get_order(site, reference, conn=conn))


@router.post(
    "/sites/{site}/orders/{reference}/cancel", response_model=OrderOut, responses=WRITE_ERRORS
)
async def cancel_order(
    site: SitePath,
    reference: CodePath,
    body: CancelIn,
    who: Annotated[Principal, Allow(Permission.ORDERS_WRITE)],
    write: Write,
) -> Response:
    """Cancel an order not yet shipped: reservations released, picks reversed to the shelf."""
    payload = {"site": site, "order": reference, **body.model_dump(mode="json")}
    return await write(who, payload, lambda: outbound.cancel_order(
        site, reference, reason=body.reason, actor=who.actor, at=_now(), conn=write.conn
    ))  # fmt: skip


@router.post(
    "/sites/{site}/orders/{reference}/ship", response_model=OrderOut, responses=WRITE_ERRORS
)
async def ship_order(
    site: SitePath,
    reference: CodePath,
    body: ShipIn,
    who: Annotated[Principal, Allow(Permission.SHIP)],
    write: Write,
) -> Response:
    """Ship what was picked: staging → CUSTOMER. A failed verification blocks it unless a
    caller with 'adjust.approve' (a supervisor) overrides with a reason."""
    if body.override and not who.allows(Permission.ADJUST_APPROVE):
        raise Forbidden("overriding a failed verification needs 'adjust.approve' (a supervisor)")
    payload = {"site": site, "order": reference, **body.model_dump(mode="json")}
    return await write(who, payload, lambda: outbound.ship_order(
        site, reference, override=body.override, reason=body.reason, actor=who.actor,
        at=_now(), conn=write.conn,
    ))  # fmt: skip


# ------------------------------------------------------------------ pick tasks


@router.get("/sites/{site}/pick-tasks", response_model=list[TaskOut], responses=READ_ERRORS)
async def list_tasks(
    site: SitePath,
    who: Annotated[Principal, Allow(Permission.STOCK_READ)],
    conn: Conn,
    state: TaskState | None = None,
    order: CodeQuery = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[TaskOut]:
    """The site's pick tasks (of one order, in one state), oldest first."""
    await queries.require_site(site, conn=conn)
    rows = await outbound.list_tasks(
        site, order_ref=order, state=state, limit=limit, offset=offset, conn=conn
    )
    return [TaskOut.model_validate(row) for row in rows]


@router.get("/sites/{site}/pick-tasks/{task}", response_model=TaskOut, responses=READ_ERRORS)
async def get_task(
    site: SitePath,
    task: ReferencePath,
    who: Annotated[Principal, Allow(Permission.STOCK_READ)],
    conn: Conn,
) -> TaskOut:
    """A pick task with its reserved, picked and shipped quantities."""
    return TaskOut.model_validate(await outbound.get_task(site, task, conn=conn))


@router.post("/sites/{site}/pick-tasks/{task}/pick", response_model=TaskOut, responses=WRITE_ERRORS)
async def pick(
    site: SitePath,
    task: ReferencePath,
    body: PickIn,
    who: Annotated[Principal, Allow(Permission.PICK)],
    write: Write,
) -> Response:
    """Confirm a pick as it happened; a short pick releases the rest of the reservation."""
    payload = {"site": site, "task": task, **body.model_dump(mode="json")}
    return await write(who, payload, lambda: outbound.pick(
        site, task, location=body.location, lot=body.lot, quantity=body.quantity,
        serials=body.serials, actor=who.actor, at=_now(), conn=write.conn,
    ))  # fmt: skip


@router.post(
    "/sites/{site}/pick-tasks/{task}/cancel", response_model=TaskOut, responses=WRITE_ERRORS
)
async def cancel_task(
    site: SitePath,
    task: ReferencePath,
    body: CancelIn,
    who: Annotated[Principal, Allow(Permission.ORDERS_WRITE)],
    write: Write,
) -> Response:
    """Cancel a task not yet shipped: reservation released, a pick reversed to the shelf."""
    payload = {"site": site, "task": task, **body.model_dump(mode="json")}
    return await write(who, payload, lambda: outbound.cancel_task(
        site, task, reason=body.reason, actor=who.actor, at=_now(), conn=write.conn
    ))  # fmt: skip


# ------------------------------------------------------------------ verification


@router.post(
    "/sites/{site}/verifications",
    response_model=VerificationOut,
    status_code=201,
    responses=WRITE_ERRORS,
)
async def verify(
    site: SitePath,
    body: VerificationIn,
    who: Annotated[Principal, Allow(Permission.VERIFY)],
    write: Write,
) -> Response:
    """Record a verification (scan, scale weight, RFID); a mismatch opens an exception."""
    return await write(who, {"site": site, **body.model_dump(mode="json")}, lambda: (
        record_verification(
            site, sku=body.sku, lot=body.lot, quantity=body.quantity, weight_kg=body.weight_kg,
            epcs=body.epcs, order_ref=body.order_ref, actor=who.actor, at=_now(),
            conn=write.conn,
        )
    ))  # fmt: skip
