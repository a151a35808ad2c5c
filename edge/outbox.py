"""The durable SQLite (WAL) outbox every event enters before anything else happens to it.

One writer thread owns the write connection and commits appends in groups (group
commit): callers wait until their event is committed, and everything committed keeps
its sequence number across any crash. Readers (the uplink, ``edge status``) use their
own connections; WAL lets them read while the writer writes.

With ``synchronous=NORMAL`` (the default) a commit survives the process being killed
(SIGKILL) but the last commits before a power loss may be lost; ``FULL`` closes that
window at about a third of the throughput (see docs/guarantees.md and bench/).

Acked events stay for ``retention_s`` (for replay and audit), then go. Unacked
telemetry is bounded by ``telemetry_budget`` rows: the oldest beyond it are dropped and
counted (their seqs become holes the uplink reports as dropped). Ledger events are
never dropped: when the file reaches its disk budget, ledger appends wait for acks to
make room, and telemetry appends are dropped and counted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
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
INSERT OR IGNORE INTO meta (key, value) VALUES
    ('session', 0), ('dropped_telemetry', 0), ('dropped_at_admission', 0);
CREATE TABLE IF NOT EXISTS counters (  -- the running gateway's counters, for `edge status`
    name TEXT PRIMARY KEY,
    value REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (  -- handheld requests by idempotency key
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS commands (
    key TEXT PRIMARY KEY,
    state TEXT NOT NULL,  -- 'running' until its report is stored, then 'reported'
    at REAL NOT NULL
);
"""

ALARM_SHARE = 0.8  # of the disk budget: raise the alarm here, long before the end
TRIM_CHUNK = 10_000

MAX_GROUP = 1000  # events per commit at most


@dataclass(frozen=True)
class Draft:
    """An event before it has its sequence number."""

    device: str
    cls: TrafficClass
    body: EventBody
    occurred_at: dt.datetime
    # A request's idempotency key and payload fingerprint, stored in the same commit as
    # the event, so a retried request finds its event and is never stored twice.
    request: tuple[str, str] | None = None


@dataclass(frozen=True)
class OutboxPolicy:
    retention_s: float = 600.0
    telemetry_budget: int = 200_000  # unacked telemetry rows at most
    disk_budget_bytes: int = 1 << 30
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    # Where a new outbox's sequence starts. None: the current time in microseconds, so a
    # gateway whose outbox was replaced continues past every seq the hub has seen.
    seq_origin: int | None = None


class Pressure(enum.StrEnum):
    OK = "ok"
    ALARM = "alarm"  # past ALARM_SHARE of the disk budget
    FULL = "full"  # at the budget: ledger appends wait, telemetry is dropped


@dataclass(frozen=True)
class OutboxStatus:
    last_seq: int
    acked_seq: int
    depth: int
    depth_ledger: int
    depth_telemetry: int
    retained: int  # acked, kept for replay
    oldest_unacked_at: float | None
    session: int
    dropped_telemetry: int
    used_bytes: int


def connect(
    path: Path, *, synchronous: str = "NORMAL", seq_origin: int | None = None
) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.executescript(SCHEMA)
    origin = time.time_ns() // 1000 if seq_origin is None else seq_origin
    conn.execute(
        "INSERT OR IGNORE INTO meta (key, value)"
        " VALUES ('last_seq', ?), ('acked_seq', ?), ('origin', ?)",
        (origin, origin, origin),
    )
    return conn


def used_bytes(conn: sqlite3.Connection) -> int:
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    return int((pages - free) * size)


def read_status(conn: sqlite3.Connection) -> OutboxStatus:
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    acked = meta["acked_seq"]
    by_class = dict(
        conn.execute(
            "SELECT cls, count(*) FROM outbox WHERE seq > ? GROUP BY cls", (acked,)
        ).fetchall()
    )
    (oldest,) = conn.execute(
        "SELECT created_at FROM outbox WHERE seq > ? ORDER BY seq LIMIT 1", (acked,)
    ).fetchone() or (None,)
    (retained,) = conn.execute("SELECT count(*) FROM outbox WHERE seq <= ?", (acked,)).fetchone()
    return OutboxStatus(
        last_seq=meta["last_seq"],
        acked_seq=acked,
        depth=sum(by_class.values()),
        depth_ledger=by_class.get(int(TrafficClass.LEDGER), 0),
        depth_telemetry=by_class.get(int(TrafficClass.TELEMETRY), 0),
        retained=retained,
        oldest_unacked_at=oldest,
        session=meta["session"],
        dropped_telemetry=meta["dropped_telemetry"] + meta["dropped_at_admission"],
        used_bytes=used_bytes(conn),
    )


class _Append:
    __slots__ = ("drafts", "future", "loop")

    def __init__(self, drafts: Sequence[Draft], loop: asyncio.AbstractEventLoop) -> None:
        self.drafts = drafts
        self.loop = loop
        self.future: asyncio.Future[int] = loop.create_future()


class Outbox:
    """Durable, sequenced store of one gateway's events. Use as a context manager."""

    def __init__(self, path: Path, gateway: str, policy: OutboxPolicy | None = None) -> None:
        self.path = path
        self.gateway = gateway
        self.policy = policy or OutboxPolicy()
        self._synchronous = self.policy.synchronous
        self.pressure = Pressure.OK
        self._room = asyncio.Event()  # clear while the disk budget is used up
        self._room.set()
        self._queue: queue.SimpleQueue[_Append | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()  # the reader is used from worker threads
        self._last_seq = 0
        self.appended = asyncio.Event()  # set whenever new events are committed

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Outbox:
        writer = connect(
            self.path, synchronous=self._synchronous, seq_origin=self.policy.seq_origin
        )
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
        """Store events durably; returns the sequence number of the last one.

        At the disk budget, telemetry is dropped (counted) and ledger events wait for room.
        """
        if self.pressure is Pressure.FULL:
            kept = [d for d in drafts if d.cls is not TrafficClass.TELEMETRY]
            if len(kept) < len(drafts):
                await asyncio.to_thread(self._count_admission_drops, len(drafts) - len(kept))
            if not kept:
                return self._last_seq
            await self._room.wait()
            drafts = kept
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
        requests: list[tuple[str, str, int, float]] = []
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
                    if draft.request is not None:
                        requests.append((*draft.request, seq, now))
                ends.append(seq)
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO outbox (seq, cls, created_at, payload) VALUES (?, ?, ?, ?)", rows
            )
            if requests:
                conn.executemany(
                    "INSERT INTO requests (key, fingerprint, seq, at) VALUES (?, ?, ?, ?)",
                    requests,
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

    def origin(self) -> int:
        """The seq before this outbox's first: nothing at or below it was ever stored."""
        with self._reader_lock:
            row = self._read().execute("SELECT value FROM meta WHERE key='origin'").fetchone()
        return int(row[0]) if row else 0

    def acked_seq(self) -> int:
        with self._reader_lock:
            row = self._read().execute("SELECT value FROM meta WHERE key='acked_seq'").fetchone()
        return int(row[0])

    def read_batch(
        self, after: int, limit: int, upto: int | None = None
    ) -> tuple[list[tuple[int, bytes]], int]:
        """Stored events after ``after`` (up to ``upto``) and the last seq the batch covers.

        A seq in the covered range without a row was dropped on purpose (telemetry over
        budget): everything up to ``last_seq`` was committed before this read. Blocking.
        """
        with self._reader_lock:
            conn = self._read()
            conn.execute("BEGIN")
            try:
                (last,) = conn.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()
                if upto is not None:
                    last = min(last, upto)
                rows = conn.execute(
                    "SELECT seq, payload FROM outbox WHERE seq > ? AND seq <= ?"
                    " ORDER BY seq LIMIT ?",
                    (after, last, limit),
                ).fetchall()
            finally:
                conn.execute("COMMIT")
        covered = rows[-1][0] if len(rows) == limit else int(last)
        return rows, covered

    def mark_acked(self, seq: int) -> int:
        """Record the hub's cumulative ack (blocking); acked rows stay for the retention.

        Returns the watermark now stored (an older ack never moves it back).
        """
        with self._reader_lock:
            conn = self._read()
            conn.execute(
                "UPDATE meta SET value = max(value, min(?, ?)) WHERE key='acked_seq'",
                (seq, self._last_seq),
            )
            (new,) = conn.execute("SELECT value FROM meta WHERE key='acked_seq'").fetchone()
        return int(new)

    def housekeeping(self, now: float | None = None) -> Pressure:
        """Trim what the retention allows, enforce the telemetry and disk budgets (blocking).

        Returns the disk pressure; the gateway calls this every second or so.
        """
        now = time.time() if now is None else now
        policy = self.policy
        with self._reader_lock:
            conn = self._read()
            acked = conn.execute("SELECT value FROM meta WHERE key='acked_seq'").fetchone()[0]
            self._trim(conn, acked, now - policy.retention_s)
            (unacked_telemetry,) = conn.execute(
                "SELECT count(*) FROM outbox WHERE seq > ? AND cls = ?",
                (acked, int(TrafficClass.TELEMETRY)),
            ).fetchone()
            excess = unacked_telemetry - policy.telemetry_budget
            if excess > 0:
                self._drop_oldest_telemetry(conn, acked, excess)
            used = used_bytes(conn)
            if used >= policy.disk_budget_bytes:
                self._trim(conn, acked, now)  # room first from what the hub already has
                used = used_bytes(conn)
        if used >= policy.disk_budget_bytes:
            pressure = Pressure.FULL
        elif used >= ALARM_SHARE * policy.disk_budget_bytes:
            pressure = Pressure.ALARM
        else:
            pressure = Pressure.OK
        self.pressure = pressure
        return pressure

    def _trim(self, conn: sqlite3.Connection, acked: int, older_than: float) -> int:
        trimmed = 0
        while True:
            cur = conn.execute(
                "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE seq <= ?"
                " ORDER BY seq LIMIT ?) AND created_at < ?",
                (acked, TRIM_CHUNK, older_than),
            )
            trimmed += cur.rowcount
            if cur.rowcount < TRIM_CHUNK:
                return trimmed

    def _drop_oldest_telemetry(self, conn: sqlite3.Connection, acked: int, count: int) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            cur = conn.execute(
                "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE seq > ?"
                " AND cls = ? ORDER BY seq LIMIT ?)",
                (acked, int(TrafficClass.TELEMETRY), count),
            )
            conn.execute(
                "UPDATE meta SET value = value + ? WHERE key = 'dropped_telemetry'",
                (cur.rowcount,),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _count_admission_drops(self, count: int) -> None:
        with self._reader_lock:
            self._read().execute(
                "UPDATE meta SET value = value + ? WHERE key = 'dropped_at_admission'", (count,)
            )

    def set_pressure(self, pressure: Pressure) -> None:
        """On the event loop: let ledger appends through again once there is room."""
        if pressure is Pressure.FULL:
            self._room.clear()
        else:
            self._room.set()

    def save_counters(self, counters: dict[str, float]) -> None:
        """Keep the gateway's counters where ``edge status`` can read them (blocking)."""
        with self._reader_lock:
            self._read().executemany(
                "INSERT INTO counters (name, value) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                list(counters.items()),
            )

    def find_request(self, key: str) -> tuple[str, int] | None:
        """The (fingerprint, seq) a request key was stored with, if it was (blocking)."""
        with self._reader_lock:
            row = (
                self._read()
                .execute("SELECT fingerprint, seq FROM requests WHERE key = ?", (key,))
                .fetchone()
            )
        return None if row is None else (str(row[0]), int(row[1]))

    # ------------------------------------------------------------------- commands

    def claim_command(self, key: str) -> bool:
        """Record that a command runs; False if its key was seen before (blocking)."""
        with self._reader_lock:
            cur = self._read().execute(
                "INSERT OR IGNORE INTO commands (key, state, at) VALUES (?, 'running', ?)",
                (key, time.time()),
            )
            return cur.rowcount == 1

    def command_reported(self, key: str) -> None:
        with self._reader_lock:
            self._read().execute("UPDATE commands SET state = 'reported' WHERE key = ?", (key,))

    def interrupted_commands(self) -> list[str]:
        """Keys of commands that were running when the gateway last stopped."""
        with self._reader_lock:
            rows = self._read().execute("SELECT key FROM commands WHERE state = 'running'")
            return [row[0] for row in rows.fetchall()]

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
