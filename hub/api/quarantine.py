"""REST routes: the ingest quarantine — list, read, release an event, dismiss an entry.

A quarantined entry belongs to its site: the list shows the caller's sites only, and an
entry of another site answers 404 as if it did not exist.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from warelink.hub.access import Permission, Principal
from warelink.hub.api.deps import Allow, Conn, Write
from warelink.hub.api.fields import (
    GatewayQuery,
    Limit,
    Reference,
    ReferencePath,
    SiteQuery,
    Text,
)
from warelink.hub.api.problems import READ_ERRORS, WRITE_ERRORS
from warelink.hub.ingest import quarantine

router = APIRouter(tags=["quarantine"])

State = Literal["open", "released", "dismissed"]


class QuarantineEntry(BaseModel):
    id: int
    kind: Literal["event", "message"]
    site: str
    gateway: str
    topic: str
    seq: int | None
    size: int = Field(description="bytes kept")
    truncated: bool = Field(description="a message longer than the 64 KiB kept")
    reason: str
    state: State
    received_at: dt.datetime
    decided_at: dt.datetime | None
    decided_by: str | None
    note: str


class QuarantinePayload(QuarantineEntry):
    payload_hex: str = Field(description="the bytes as received, in hex")


class Decision(BaseModel):
    note: Text = ""


@router.get("/quarantine", response_model=list[QuarantineEntry], responses=READ_ERRORS)
async def list_quarantine(
    conn: Conn,
    who: Annotated[Principal, Allow(Permission.GATEWAYS_READ)],
    site: SiteQuery = None,
    gateway: GatewayQuery = None,
    state: State | None = "open",
    limit: Limit = 100,
    before: Annotated[Reference | None, Query(description="entries older than this id")] = None,
) -> list[dict[str, Any]]:
    """What ingest set aside, newest first (open ones unless ``state`` says otherwise)."""
    if site is not None and not who.covers(site):
        raise HTTPException(403, f"no access to site {site!r}")
    return await quarantine.listing(
        sites=who.sites, site=site, gateway=gateway, state=state, limit=limit, before=before,
        conn=conn,
    )  # fmt: skip


@router.get("/quarantine/{entry}", response_model=QuarantinePayload, responses=READ_ERRORS)
async def get_quarantined(
    entry: ReferencePath, conn: Conn, who: Annotated[Principal, Allow(Permission.GATEWAYS_READ)]
) -> dict[str, Any]:
    """One entry with the bytes as received."""
    row = await quarantine.get(entry, conn=conn)
    if not who.covers(row["site"]):
        raise HTTPException(404, f"no quarantine entry {entry}")
    return row


async def _decide(
    action: str, entry: int, body: Decision, who: Principal, write: Write
) -> Response:
    decide = quarantine.release if action == "release" else quarantine.dismiss
    payload = {"op": f"quarantine.{action}", "id": entry, "note": body.note}
    return await write(who, payload, lambda: decide(
        entry, actor=who.actor, note=body.note, sites=who.sites, conn=write.conn
    ))  # fmt: skip


@router.post("/quarantine/{entry}/release", response_model=QuarantinePayload,
             responses=WRITE_ERRORS)  # fmt: skip
async def release_quarantined(
    entry: ReferencePath,
    body: Decision,
    write: Write,
    who: Annotated[Principal, Allow(Permission.QUARANTINE_DECIDE)],
) -> Response:
    """Apply a quarantined event now (after the fix that lets it through): decoded and
    checked again, stored and posted to the ledger as if it had just arrived; 409 says
    why not if it still fails."""
    return await _decide("release", entry, body, who, write)


@router.post("/quarantine/{entry}/dismiss", response_model=QuarantinePayload,
             responses=WRITE_ERRORS)  # fmt: skip
async def dismiss_quarantined(
    entry: ReferencePath,
    body: Decision,
    write: Write,
    who: Annotated[Principal, Allow(Permission.QUARANTINE_DECIDE)],
) -> Response:
    """Close an entry without applying it (forged, or nothing to recover)."""
    return await _decide("dismiss", entry, body, who, write)
