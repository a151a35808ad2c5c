"""The change feed, read by every hub process: what committed, on any hub, to every screen.

PostgreSQL writes the feed (migration 013): each transaction that changes a site adds one
row to ``changes`` with the site's next version, and notifies ``warelink_changes`` with
"site version" at commit. Each hub process keeps one connection that LISTENs; for a site
someone watches here, a notification makes it fetch the new rows in version order and
hand the same encoded frame to every subscriber of the site. Notifications only wake the
reader: the rows are the record, so a notification lost in a reconnect costs nothing (the
reader also looks every ``poll_s``).

Rows are kept for ``retain_s``: a client that reconnects, to this process or another,
with its last version gets exactly what it missed, or a snapshot when that is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
import psycopg
import structlog
from psycopg import AsyncConnection

from warelink.protocol.backoff import Backoff

log = structlog.get_logger(__name__)

CHANNEL = "warelink_changes"
KINDS = ("balances", "devices", "exceptions", "gateways", "commands")
CLIENT_QUEUE = 1000  # changes waiting for one client at most
FETCH_MAX = 1000  # changes fetched per query


@dataclass(frozen=True)
class Change:
    """One version of a site, as the frame every client of the site is sent."""

    site: str
    version: int
    frame: str


class Subscriber:
    """One client's queue. A client that falls too far behind is cut off: it gets
    ``None`` and must reconnect (with its version, so it loses nothing)."""

    def __init__(self, site: str) -> None:
        self.site = site
        self.queue: asyncio.Queue[Change | None] = asyncio.Queue(CLIENT_QUEUE)
        self.dropped = False

    def offer(self, change: Change | None) -> None:
        if self.dropped:
            return
        if change is None:
            self.dropped = True
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait(None)
            return
        try:
            self.queue.put_nowait(change)
        except asyncio.QueueFull:
            self.dropped = True
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(None)


def delta_frame(site: str, epoch: str, version: int, at: str, body: dict[str, object]) -> str:
    frame: dict[str, object] = {
        "kind": "delta", "site": site, "epoch": epoch, "version": version, "at": at,
    }  # fmt: skip
    for kind in KINDS:
        frame[kind] = body.get(kind, [])
    return orjson.dumps(frame).decode()


async def read_epoch(*, conn: AsyncConnection) -> str:
    cur = await conn.execute("SELECT epoch FROM feed_epoch")
    row = await cur.fetchone()
    assert row is not None, "migration 013 makes the epoch"
    return str(row[0])


async def changes_after(
    site: str, after: int, epoch: str, *, upto: int | None = None, conn: AsyncConnection
) -> list[Change] | None:
    """The site's changes after version ``after`` (up to ``upto``), in order; None when
    some of them are no longer kept (the caller sends a snapshot instead)."""
    # The version first: every change up to it is committed, so the query below sees it.
    cur = await conn.execute("SELECT version FROM site_versions WHERE site = %s", (site,))
    row = await cur.fetchone()
    current = 0 if row is None else int(row[0])
    cur = await conn.execute(
        "SELECT version, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.USZ'),"
        " body::text FROM changes WHERE site = %s AND version > %s AND version <= %s"
        " ORDER BY version LIMIT %s",
        (site, after, upto if upto is not None else 2**62, FETCH_MAX),
    )
    rows = await cur.fetchall()
    if rows and rows[0][0] != after + 1:
        return None  # pruned
    if not rows and min(current, upto if upto is not None else current) > after:
        return None  # there were changes, and they are gone
    return [
        Change(site, version, delta_frame(site, epoch, version, at, orjson.loads(body)))
        for version, at, body in rows
    ]


async def prune(retain_s: float, *, conn: AsyncConnection) -> int:
    """Forget changes older than the retained window (any hub may do it)."""
    cur = await conn.execute(
        "DELETE FROM changes WHERE at < now() - make_interval(secs => %s)", (retain_s,)
    )
    return cur.rowcount


class ChangeFeed:
    """This process's reader of the change feed, and its subscribers."""

    def __init__(
        self, db_url: str, *, retain_s: float = 900.0, poll_s: float = 1.0, prune_s: float = 60.0
    ) -> None:
        self.db_url = db_url
        self.retain_s = retain_s
        self.poll_s = poll_s
        self.prune_s = prune_s
        self.epoch = ""
        self.subscribers: dict[str, set[Subscriber]] = defaultdict(set)
        self.seen: dict[str, int] = {}  # highest version handed out, per watched site
        self.connected = False
        self.closing = False

    @contextlib.contextmanager
    def subscribe(self, site: str, after: int) -> Iterator[Subscriber]:
        """Deliver the site's changes after ``after`` (at least) until the block ends."""
        subscriber = Subscriber(site)
        if site not in self.seen:
            self.seen[site] = after
        self.subscribers[site].add(subscriber)
        try:
            yield subscriber
        finally:
            watchers = self.subscribers[site]
            watchers.discard(subscriber)
            if not watchers:
                del self.subscribers[site]
                self.seen.pop(site, None)

    def close(self) -> None:
        """The hub is stopping: every subscriber ends (clients reconnect elsewhere)."""
        self.closing = True
        for watchers in self.subscribers.values():
            for subscriber in watchers:
                subscriber.offer(None)

    async def run(self) -> None:
        """LISTEN and fan out until cancelled, reconnecting with backoff."""
        backoff = Backoff(initial=0.2, cap=5.0)
        while True:
            try:
                await self._session(backoff)
            except psycopg.OperationalError as exc:
                if self.connected or backoff.attempts == 0:
                    log.warning("feed.disconnected", error=str(exc))
            finally:
                self.connected = False
            await asyncio.sleep(backoff.next_delay())

    async def _session(self, backoff: Backoff) -> None:
        async with await psycopg.AsyncConnection.connect(self.db_url, autocommit=True) as conn:
            self.epoch = await read_epoch(conn=conn)
            await conn.execute(f"LISTEN {CHANNEL}")
            self.connected = True
            backoff.reset()
            loop = asyncio.get_running_loop()
            pruned_at = 0.0
            while True:
                await self._catch_up(list(self.subscribers), conn=conn)  # missed nothing
                if loop.time() - pruned_at > self.prune_s:
                    pruned_at = loop.time()
                    await prune(self.retain_s, conn=conn)
                woken: set[str] = set()
                async for notice in conn.notifies(timeout=self.poll_s, stop_after=1):
                    woken.add(notice.payload.rsplit(" ", 1)[0])
                # More may be queued: take them without waiting, then fetch once per site.
                async for notice in conn.notifies(timeout=0.001):
                    woken.add(notice.payload.rsplit(" ", 1)[0])
                await self._catch_up([site for site in woken if site in self.subscribers],
                                     conn=conn)  # fmt: skip

    async def _catch_up(self, sites: list[str], *, conn: AsyncConnection) -> None:
        for site in sites:
            while site in self.seen:
                after = self.seen[site]
                changes = await changes_after(site, after, self.epoch, conn=conn)
                if changes is None:  # fell out of the window: every client resyncs
                    log.warning("feed.behind_window", site=site, after=after)
                    for subscriber in list(self.subscribers.get(site, ())):
                        subscriber.offer(None)
                    self.seen.pop(site, None)
                    break
                if not changes:
                    break
                for change in changes:
                    for subscriber in self.subscribers.get(site, ()):
                        subscriber.offer(change)
                if site in self.seen:
                    self.seen[site] = changes[-1].version
