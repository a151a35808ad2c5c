"""The live websocket: a snapshot of a site (or what the client missed), then its changes
as they commit on any hub, each with the site's version (``hub.live``)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from warelink.hub.access import Permission
from warelink.hub.api.deps import HubDep, authenticate, client_address, presented_credential
from warelink.hub.api.fields import SiteId
from warelink.hub.live.feed import Change, Subscriber
from warelink.hub.live.stream import SiteStream

router = APIRouter()

GOING_AWAY = 1001  # the hub is stopping: reconnect (to another replica) with your version
TOO_SLOW = 1013


@router.websocket("/live")
async def live(
    websocket: WebSocket,
    hub: HubDep,
    presented: Annotated[str, Depends(presented_credential)],
    site: Annotated[SiteId, Query()],
    access_token: Annotated[str | None, Query(description="the credential, for browsers")] = None,
    since: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    epoch: Annotated[str | None, Query(max_length=64)] = None,
) -> None:
    """A snapshot of the site, then deltas, each with the site's version number.

    Credentials as for REST, or as ``access_token`` in the query (browsers cannot set
    headers on a websocket); ``stock.read`` on the site is needed, at the start and
    again every ``live_recheck_s`` while the socket is open. A client that reconnects
    sends ``since`` (its last version) and ``epoch``: it gets the deltas it missed, or a
    snapshot when they are no longer kept.
    """
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

    async def send_frames(stream: SiteStream, subscriber: Subscriber) -> None:
        """The opening frames, then changes as they come; the credential checked again
        every live_recheck_s. (Sent beside ``until_gone``, so a client that leaves while
        a large snapshot is on its way ends this at once.)"""
        for frame in await stream.opening(since, epoch):
            await websocket.send_text(frame)
        loop = asyncio.get_running_loop()
        recheck_at = loop.time() + hub.settings.live_recheck_s
        while True:
            arrived = True
            change: Change | None = None
            try:
                async with asyncio.timeout_at(recheck_at):
                    change = await subscriber.queue.get()
            except TimeoutError:
                arrived = False  # nothing new: only the check is due
            if loop.time() >= recheck_at:
                if (closing := await refusal()) is not None:
                    await websocket.close(*closing)
                    raise WebSocketDisconnect(closing[0])
                recheck_at = loop.time() + hub.settings.live_recheck_s
            if arrived and change is None:
                code = GOING_AWAY if hub.live.closing else TOO_SLOW
                reason = "hub stopping: reconnect" if hub.live.closing else "too slow: reconnect"
                await websocket.close(code, reason)
                raise WebSocketDisconnect(code)
            if change is not None:
                for frame in await stream.frames_for(change):
                    await websocket.send_text(frame)

    if (closing := await refusal()) is not None:
        await websocket.close(*closing)
        return
    await websocket.accept()
    stream = SiteStream(site, hub.live, hub.pool)
    with hub.live.subscribe(site, await stream.start_version()) as subscriber:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(until_gone(), name=f"live-{site}-receive")
                group.create_task(send_frames(stream, subscriber), name=f"live-{site}-send")
        except* WebSocketDisconnect:
            pass  # either side ended it
        finally:
            if websocket.client_state is WebSocketState.CONNECTED and hub.live.closing:
                await websocket.close(GOING_AWAY, "hub stopping: reconnect")
