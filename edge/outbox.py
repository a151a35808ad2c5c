"""The durable SQLite (WAL) outbox every event enters before anything else happens to it.

One writer thread owns the write connection and commits appends in groups (group
commit): callers wait until their event is committed, and everything committed keeps
its sequence number across any crash. Readers (the uplink, ``edge status``) use their
own connections; WAL lets them read while the writer writes.

With ``synchronous=NORMAL`` (the default) a commit survives the process being killed
(SIGKILL) but the last commits before a power loss may be lost; ``FULL`` closes that
window at about a third of the throughput (see docs and bench/).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import queue
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from warelink.protocol import wire
from warelink.protocol.ids import new_event_id
from warelink.protocol.messages import Event, EventBody, TrafficClass

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    cls INTEGER NOT NULL,
    created_at REAL NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('last_seq', 0), ('acked_seq', 0), ('session', 0);
"""

MAX_GROUP = 1000  # events per commit at most


@dataclass(frozen=True)
class Draft:
    """An event before it has its sequence number."""

    device: str
    cls: TrafficClass
    body: EventBody
    occurred_at: dt.datetime


@dataclass(frozen=True)
class OutboxStatus:
    last_seq: int
    acked_seq: int
    depth: int
    oldest_unacked_at: float | None
    session: int


def connect(path: Path, *, synchronous: str = "NORMAL") -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.executescript(SCHEMA)
    return conn


def read_status(conn: sqlite3.Connection) -> OutboxStatus:
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    depth, oldest = conn.execute(
        "SELECT count(*), min(created_at) FROM outbox WHERE seq > ?", (meta["acked_seq"],)
    ).fetchone()
    return OutboxStatus(meta["last_seq"], meta["acked_seq"], depth, oldest, meta["session"])


class _Append:
    __slots__ = ("drafts", "future", "loop")

    def __init__(self, drafts: Sequence[Draft], loop: asyncio.AbstractEventLoop) -> None:
        self.drafts = drafts
        self.loop = loop
        self.future: asyncio.Future[int] = loop.create_future()


class Outbox:
    """Durable, sequenced store of one gateway's events. Use as a context manager."""

    def __init__(
        self, path: Path, gateway: str, *, synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    ) -> None:
        self.path = path
        self.gateway = gateway
        self._synchronous = synchronous
        self._queue: queue.SimpleQueue[_Append | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()  # the reader is used from worker threads
        self._last_seq = 0
        self.appended = asyncio.Event()  # set whenever new events are committed

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Outbox:
        writer = connect(self.path, synchronous=self._synchronous)
        self._last_seq = writer.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()[0]
        self._reader = connect(self.path, synchronous=self._synchronous)
        self._thread = threading.Thread(
            target=self._write_loop,
            args=(writer,),
            name=f"outbox-writer-{self.gateway}",
            daemon=True,
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join()
        if self._reader is not None:
            self._reader.close()

    async def __aenter__(self) -> Outbox:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.__exit__)

    # -------------------------------------------------------------------- writing

    async def append(self, drafts: Sequence[Draft]) -> int:
        """Store events durably; returns the sequence number of the last one."""
        request = _Append(drafts, asyncio.get_running_loop())
        self._queue.put(request)
        return await request.future

    async def add(
        self,
        device: str,
        cls: TrafficClass,
        body: EventBody,
        occurred_at: dt.datetime | None = None,
    ) -> None:
        """The drivers' ``Emit``: one event, returns once it is durable."""
        when = occurred_at or dt.datetime.now(dt.UTC)
        await self.append([Draft(device, cls, body, when)])

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                group = [first]
                size = len(first.drafts)
                stop = False
                while size < MAX_GROUP:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    group.append(nxt)
                    size += len(nxt.drafts)
                self._commit(conn, group)
                if stop:
                    return
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, group: list[_Append]) -> None:
        seq = self._last_seq
        rows = []
        ends = []
        now = time.time()
        try:
            for request in group:
                for draft in request.drafts:
                    seq += 1
                    event = Event(
                        gateway=self.gateway,
                        seq=seq,
                        id=new_event_id(),
                        device=draft.device,
                        cls=draft.cls,
                        occurred_at=draft.occurred_at,
                        body=draft.body,
                    )
                    rows.append((seq, int(draft.cls), now, wire.encode_event(event)))
                ends.append(seq)
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO outbox (seq, cls, created_at, payload) VALUES (?, ?, ?, ?)", rows
            )
            conn.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (seq,))
            conn.execute("COMMIT")
        except Exception as exc:  # a full disk, a broken file: every waiter hears it
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            group[0].loop.call_soon_threadsafe(_fail, [r.future for r in group], exc)
            return
        self._last_seq = seq
        # One wake-up of the event loop per commit, not one per waiter.
        settled = [(r.future, end) for r, end in zip(group, ends, strict=True)]
        group[0].loop.call_soon_threadsafe(_resolve, settled, self.appended)

    # -------------------------------------------------------------------- reading

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def _read(self) -> sqlite3.Connection:
        assert self._reader is not None, "outbox not open"
        return self._reader

    def read_after(self, seq: int, limit: int) -> list[tuple[int, bytes]]:
        """Stored events after ``seq``, in order (blocking: call via to_thread)."""
        with self._reader_lock:
            return (
                self._read()
                .execute(
                    "SELECT seq, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                    (seq, limit),
                )
                .fetchall()
            )

    def acked_seq(self) -> int:
        with self._reader_lock:
            row = self._read().execute("SELECT value FROM meta WHERE key='acked_seq'").fetchone()
        return int(row[0])

    def mark_acked(self, seq: int) -> int:
        """Record the hub's cumulative ack and trim what it covers (blocking).

        Returns the watermark now stored (an older ack never moves it back).
        """
        with self._reader_lock:
            conn = self._read()
            conn.execute("BEGIN IMMEDIATE")
            try:
                current = conn.execute("SELECT value FROM meta WHERE key='acked_seq'").fetchone()[0]
                new = min(max(current, seq), self._last_seq)
                if new > current:
                    conn.execute("UPDATE meta SET value = ? WHERE key='acked_seq'", (new,))
                    conn.execute("DELETE FROM outbox WHERE seq <= ?", (new,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return int(new)

    def next_session(self) -> int:
        """A new session number for this gateway's birth, durable across restarts."""
        with self._reader_lock:
            conn = self._read()
            conn.execute("UPDATE meta SET value = value + 1 WHERE key='session'")
            return int(conn.execute("SELECT value FROM meta WHERE key='session'").fetchone()[0])

    def status(self) -> OutboxStatus:
        with self._reader_lock:
            return read_status(self._read())


def _resolve(settled: list[tuple[asyncio.Future[int], int]], appended: asyncio.Event) -> None:
    for future, seq in settled:
        if not future.done():
            future.set_result(seq)
    appended.set()


def _fail(futures: list[asyncio.Future[int]], exc: BaseException) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(exc)
