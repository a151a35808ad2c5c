"""REST routes: commands to devices — send one, read its outcome."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response
from pydantic import BaseModel, Field, field_validator

from warelink.hub.access import Permission, Principal
from warelink.hub.api.deps import Allow, HubDep, json_response
from warelink.hub.api.fields import Code, DevicePath, Key, KeyPath, SitePath
from warelink.hub.api.problems import errors
from warelink.hub.ingest import commands
from warelink.protocol.limits import ARGS_BYTES_MAX, ARGS_DEPTH_MAX, args_problem

router = APIRouter(tags=["commands"])
AUTH_ERRORS = errors(401, 403)


class CommandRequest(BaseModel):
    action: Code = Field(examples=["zero"])
    args: dict[Code, Any] = Field(
        {},
        description=f"Nested at most {ARGS_DEPTH_MAX} deep, at most {ARGS_BYTES_MAX} bytes"
        " (msgpack); no NUL, NaN or infinity.",
    )
    key: Key | None = Field(None, description="Idempotency key; one is made if absent.")
    expires_in_s: float | None = Field(
        None, gt=0, le=commands.OPEN_FOR.total_seconds(), allow_inf_nan=False,
        description="Not run after this (default 24 h).",
    )  # fmt: skip

    @field_validator("args")
    @classmethod
    def _bounded(cls, args: dict[str, Any]) -> dict[str, Any]:
        """As the edge's decoder bounds them (and as jsonb holds them)."""
        if problem := args_problem(args):
            raise ValueError(problem)
        return args


class CommandInfo(BaseModel):
    key: str
    site: str
    gateway: str
    device: str
    action: str
    args: dict[str, Any]
    expires_at: dt.datetime | None
    created_at: dt.datetime
    sent_count: int
    outcome: str | None
    detail: str
    finished_at: dt.datetime | None


@router.post(
    "/sites/{site}/devices/{device}/commands",
    response_model=CommandInfo,
    status_code=202,
    responses={
        **AUTH_ERRORS,
        404: {"description": "no such device"},
        409: {"description": "key taken"},
    },
)
async def post_command(
    site: SitePath,
    device: DevicePath,
    request: CommandRequest,
    hub: HubDep,
    who: Annotated[Principal, Allow(Permission.COMMANDS_WRITE)],
) -> Response:
    """Send a command to a device through its gateway; the outcome comes back later.

    Idempotent by ``key``: the same key again returns the stored command.
    """
    async with hub.pool.connection() as conn:
        gateway = await commands.device_gateway(site, device, conn=conn)
        if gateway is None:
            raise HTTPException(404, f"no device {device!r} at site {site!r}")
        try:
            row = await commands.create(
                site, gateway, device, action=request.action, args=request.args,
                key=request.key, expires_in_s=request.expires_in_s, conn=conn,
            )  # fmt: skip
        except commands.CommandConflict as exc:
            raise HTTPException(409, str(exc)) from None
        if row["outcome"] is None and await hub.ingest.send_command(
            site, gateway, commands.as_message(row)
        ):
            await conn.execute(
                "UPDATE commands SET sent_count = sent_count + 1 WHERE key = %s", (row["key"],)
            )
            row["sent_count"] += 1
    return json_response(row, status_code=202)


@router.get(
    "/commands/{key}",
    response_model=CommandInfo,
    responses={**AUTH_ERRORS, 404: {"description": "no such command"}},
)
async def get_command(
    key: KeyPath, hub: HubDep, who: Annotated[Principal, Allow(Permission.COMMANDS_READ)]
) -> Response:
    """A command and, once the edge reported it, its outcome."""
    async with hub.pool.connection() as conn:
        row = await commands.get(key, conn=conn)
    if row is None or not who.covers(row["site"]):
        raise HTTPException(404, f"no command {key!r}")
    return json_response(row)
