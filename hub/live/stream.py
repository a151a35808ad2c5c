"""One client's stream of a site: a snapshot (or what it missed), then every change in order.

A client names the site and, when it reconnects, the epoch and version it last saw. It is
sent exactly the changes after that version when the feed still keeps them, or a fresh
snapshot; then each change as it commits, versions consecutive. A change that reaches
this process out of order (or after a gap) is completed from the table first, so the
client never sees a gap; if the gap is no longer kept, it gets a snapshot instead.

Balances in frames are absolute (the new quantity), device readings the latest of each
device in the change: applying a frame twice is harmless.
"""

from __future__ import annotations

import datetime as dt

import orjson
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from warelink.hub.live.feed import Change, ChangeFeed, changes_after
from warelink.hub.stock.balances import line_json, site_stock


async def current_version(site: str, *, conn: AsyncConnection) -> int:
    cur = await conn.execute("SELECT version FROM site_versions WHERE site = %s", (site,))
    row = await cur.fetchone()
    return 0 if row is None else int(row[0])


async def snapshot(site: str, epoch: str, *, conn: AsyncConnection) -> tuple[int, str]:
    """The site as of one version: its balances, device readings and gateways, read in
    one REPEATABLE READ transaction so they and the version agree."""
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        version = await current_version(site, conn=conn)
        lines = await site_stock(site, conn=conn)
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            "SELECT device, gateway, type, seq, occurred_at, body FROM device_readings"
            " WHERE site = %s ORDER BY device",
            (site,),
        )
        devices = await cur.fetchall()
        await cur.execute(
            "SELECT id, online, session, refused_outbox FROM gateways WHERE site = %s ORDER BY id",
            (site,),
        )
        gateways = await cur.fetchall()
    frame = {
        "kind": "snapshot",
        "site": site,
        "epoch": epoch,
        "version": version,
        "at": dt.datetime.now(dt.UTC).isoformat(),
        "balances": [line_json(line) for line in lines],
        "devices": devices,
        "gateways": gateways,
    }
    return version, orjson.dumps(frame).decode()


class SiteStream:
    """What one client is owed, frame by frame. ``next`` is the version it needs next."""

    def __init__(self, site: str, feed: ChangeFeed, pool: AsyncConnectionPool) -> None:
        self.site = site
        self.feed = feed
        self.pool = pool
        self.next = 0

    async def start_version(self) -> int:
        """Where the feed starts delivering for this client (subscribe before opening)."""
        async with self.pool.connection() as conn:
            return await current_version(self.site, conn=conn)

    async def opening(self, since: int | None, epoch: str | None) -> list[str]:
        """The changes after ``since`` when the client's epoch is this one and they are
        all kept; else a snapshot."""
        if since is not None and epoch == self.feed.epoch:
            async with self.pool.connection() as conn:
                missed = await changes_after(self.site, since, self.feed.epoch, conn=conn)
            if missed is not None and (not missed or missed[0].version == since + 1):
                self.next = missed[-1].version + 1 if missed else since + 1
                # More than one fetch holds? The rest comes as the feed delivers it, and
                # a gap is filled from the table (``frames_for``).
                return [change.frame for change in missed]
        return [await self._snapshot()]

    async def frames_for(self, change: Change) -> list[str]:
        """The frames to send for a change the feed delivered (none if already sent)."""
        if change.version < self.next:
            return []
        if change.version == self.next:
            self.next += 1
            return [change.frame]
        async with self.pool.connection() as conn:  # a gap: complete it from the table
            missed = await changes_after(
                self.site, self.next - 1, self.feed.epoch, upto=change.version - 1, conn=conn
            )
        if missed is None or len(missed) != change.version - self.next:
            return [await self._snapshot()]
        self.next = change.version + 1
        return [*(m.frame for m in missed), change.frame]

    async def _snapshot(self) -> str:
        async with self.pool.connection() as conn:
            version, frame = await snapshot(self.site, self.feed.epoch, conn=conn)
        self.next = version + 1
        return frame
