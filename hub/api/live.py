"""The live websocket: a snapshot of a site, then its changes as they commit."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, WebSocket
from starlette.websockets import WebSocketDisconnect

from warelink.hub.access import Permission
from warelink.hub.api.deps import authenticate, client_address
from warelink.hub.api.fields import SiteId
from warelink.hub.api.state import Hub
from warelink.hub.live.stream import Subscriber
from warelink.hub.stock import balances

router = APIRouter()


@router.websocket("/live")
async def live(
    websocket: WebSocket, site: Annotated[SiteId, Query()], access_token: str | None = None
) -> None:
    """A snapshot of the site, then deltas, each with the site's version number.

    Credentials as for REST, or as ``access_token`` in the query (browsers cannot set
    headers on a websocket); ``stock.read`` on the site is needed, at the start and
    again every ``live_recheck_s`` while the socket is open.
    """
    hub: Hub = websocket.app.state.hub
    presented = access_token or websocket.headers.get("x-api-key") or ""
    bearer = websocket.headers.get("authorization", "")
    if bearer.lower().startswith("bearer "):
        presented = bearer[7:]
    address = client_address(websocket)

    async def refusal() -> tuple[int, str] | None:
        """Why the socket may not (or no longer) stream: a close code and reason."""
        try:
            who = await authenticate(hub, presented, address)
        except HTTPException as exc:
            return 4000 + exc.status_code, str(exc.detail)[:120]
        if not who.allows(Permission.STOCK_READ) or not who.covers(site):
            return 4403, f"no access to site {site!r}"
        return None

    async def until_gone() -> None:
        """The client sends nothing the hub uses; its leaving ends the stream at once
        (not at the next frame, which may be long in coming)."""
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass
        raise WebSocketDisconnect

    async def send_frames(subscriber: Subscriber) -> None:
        """Deltas as they come; the credential checked again every live_recheck_s."""
        loop = asyncio.get_running_loop()
        recheck_at = loop.time() + hub.settings.live_recheck_s
        while True:
            try:
                async with asyncio.timeout_at(recheck_at):
                    frame = await subscriber.queue.get()
            except TimeoutError:
                frame = ""  # nothing new: only the check is due
            if loop.time() >= recheck_at:
                if (closing := await refusal()) is not None:
                    await websocket.close(*closing)
                    raise WebSocketDisconnect(closing[0])
                recheck_at = loop.time() + hub.settings.live_recheck_s
            if frame is None:
                await websocket.close(code=1013, reason="too slow: reconnect")
                raise WebSocketDisconnect(1013)
            if frame:
                await websocket.send_text(frame)

    if (closing := await refusal()) is not None:
        await websocket.close(*closing)
        return
    await websocket.accept()
    with hub.live.subscribe(site) as subscriber:
        try:
            version = hub.live.versions[site]
            async with hub.pool.connection() as conn:
                lines = await balances.site_stock(site, conn=conn)
            await websocket.send_text(hub.live.snapshot(site, version, lines))
            async with asyncio.TaskGroup() as group:
                group.create_task(until_gone(), name=f"live-{site}-receive")
                group.create_task(send_frames(subscriber), name=f"live-{site}-send")
        except* WebSocketDisconnect:
            pass  # either side ended it
