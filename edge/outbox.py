"""The durable SQLite (WAL) outbox every event enters before anything else happens to it.

One writer thread owns the write connection and commits appends in groups (group
commit): callers wait until their event is committed, and everything committed keeps
its sequence number across any crash. Readers (the uplink, ``edge status``) use their
own connections; WAL lets them read while the writer writes. An event that cannot be
encoded fails its own caller only, and never takes a sequence number.

With ``synchronous=NORMAL`` (the default) a commit survives the process being killed
(SIGKILL) but the last commits before a power loss may be lost; ``FULL`` closes that
window at about a third of the throughput (see docs/guarantees.md and bench/).

Acked events stay for ``retention_s`` (for replay and audit), then go. Unacked
telemetry is bounded by ``telemetry_budget`` rows: the oldest beyond it are dropped and
counted (their seqs become holes the uplink reports as dropped). Ledger events are
never dropped: when the file reaches its disk budget, ledger appends wait for acks to
make room, and telemetry appends are dropped and counted.

**The file itself can be lost.** ``outbox_file.inspect`` checks the file against the
state file beside it before it opens, and refuses one that is lost or corrupt instead
of silently starting a new, empty outbox; ``reset_outbox`` is the explicit way to accept
the loss.

**The disk can fill up.** SQLite's "database or disk is full" from any write is a state
(``Pressure.DISK_FULL``), not a crash: the file given back by a reserve kept beside the
outbox (``policy.reserve_bytes``) lets SQLite finish its bookkeeping; telemetry is
refused and counted; ledger events wait in the writer, which retries until they are
stored (or until the caller's deadline, when it gave one: then they are not stored at
all); acks, sessions and counters are kept in memory until they can be written. It ends
when the disk has room again for the reserve and some more.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import enum
import errno
import os
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import structlog

from warelink.edge.outbox_file import (
    SCHEMA,
    TABLES,
    Found,
    OutboxDiskFull,
    OutboxError,
    OutboxState,
    Unreadable,
    disk_free_bytes,
    inspect,
    is_disk_full,
    last_seq_if_readable,
    open_connection,
    read_state,
    reserve_path,
    table_names,
    used_bytes,
    write_state,
)
from warelink.protocol import wire
from warelink.protocol.ids import new_event_id
from warelink.protocol.messages import Event, EventBody, TrafficClass

log = structlog.get_logger(__name__)

ALARM_SHARE = 0.8  # of the disk budget: raise the alarm here, long before the end
TRIM_CHUNK = 10_000

MAX_GROUP = 1000  # events per commit at most

# A full disk is over when, with the reserve back in place, this much is free again.
MIN_FREE_BYTES = 1 << 20
RETRY_FIRST_S = 0.05  # the writer's retries on a full disk: capped exponential backoff
RETRY_MAX_S = 1.0


# ---------------------------------------------------------------------- errors


class NotStored(OutboxError):
    """An append that was refused: nothing of it was stored."""


class StoreTimeout(NotStored):
    """Not stored within the caller's time (the disk full, the budget used up)."""


class Unencodable(NotStored, ValueError):
    """An event that cannot be encoded (e.g. a string with a lone surrogate)."""


def _no_space(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


# ---------------------------------------------------------------------- values


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
    # A file of this size kept beside the outbox and deleted when the disk fills up, so
    # SQLite can still open, checkpoint and record acks (0: none).
    reserve_bytes: int = 8 << 20


class Pressure(enum.StrEnum):
    OK = "ok"
    ALARM = "alarm"  # past ALARM_SHARE of the disk budget
    FULL = "full"  # at the budget: ledger appends wait, telemetry is dropped
    DISK_FULL = "disk_full"  # the disk itself: ledger appends wait, telemetry is dropped


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


@dataclass(frozen=True)
class Reset:
    set_aside: list[Path]  # the refused files, renamed (kept for a post-mortem)
    outbox_id: str  # the new outbox
    origin: int  # its sequence starts after this


def reset_outbox(path: Path, gateway: str) -> Reset:
    """Accept the loss of a lost or corrupt outbox: set it aside, start a new one.

    The new outbox has a new id and starts its sequence past every seq the old one
    handed out, so the hub takes it as a new outbox. Blocking; the gateway must be
    stopped. Whether the old one was really refused is the caller's check (``inspect``).
    """
    floor = 0
    try:
        state = read_state(path)
    except Unreadable:
        state = None
    if state is not None:
        floor = state.last_seq
    floor = max(floor, last_seq_if_readable(path))
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.lost-{stamp}")
    moved = []
    # The database, its WAL and shared memory, and the state file move as one unit, so
    # SQLite opens the set-aside copy with its WAL.
    for suffix in ("", "-wal", "-shm", ".state.json"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            target = aside.with_name(aside.name + suffix)
            os.replace(source, target)
            moved.append(target)
    origin = max(time.time_ns() // 1000, floor)
    with Outbox(path, gateway, OutboxPolicy(seq_origin=origin)) as outbox:
        outbox_id = outbox.outbox_id
    log.warning(
        "outbox.reset", gateway=gateway, outbox=str(path), outbox_id=outbox_id,
        origin=origin, set_aside=[str(p) for p in moved],
    )  # fmt: skip
    return Reset(set_aside=moved, outbox_id=outbox_id, origin=origin)


# ------------------------------------------------------------------ the file


def read_status(conn: sqlite3.Connection, *, acked: int | None = None) -> OutboxStatus:
    """The outbox's figures; ``acked``: a watermark known beyond the file's (not yet saved)."""
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    acked = meta["acked_seq"] if acked is None else max(acked, meta["acked_seq"])
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
    __slots__ = ("deadline", "drafts", "future", "timeout")

    def __init__(self, drafts: Sequence[Draft], timeout: float | None, started: float) -> None:
        self.drafts = drafts
        self.timeout = timeout
        # time.monotonic(): not stored by then, not stored at all
        self.deadline = None if timeout is None else started + timeout
        self.future: asyncio.Future[int] = asyncio.get_running_loop().create_future()


_Outcome = tuple["asyncio.Future[int]", int | BaseException]
_Row = tuple[int, int, float, bytes]  # seq, class, created_at, payload
_Key = tuple[str, str, int, float]  # a request's key, fingerprint, seq, at


class Outbox:
    """Durable, sequenced store of one gateway's events. Use as a context manager.

    Opening refuses an outbox file its state file does not vouch for (``OutboxLost``,
    ``OutboxCorrupt``); a brand-new directory starts a new outbox, and an outbox made
    before state files existed is adopted.
    """

    def __init__(self, path: Path, gateway: str, policy: OutboxPolicy | None = None) -> None:
        self.path = path
        self.gateway = gateway
        self.policy = policy or OutboxPolicy()
        self.log = log.bind(gateway=gateway)
        self._synchronous = self.policy.synchronous
        self._budget = Pressure.OK  # of the disk budget, from housekeeping
        self._disk_full = False  # the disk itself: set by any write that hit it
        self._disk_full_since = 0.0
        self._room = asyncio.Event()  # clear while the disk budget is used up
        self._room.set()
        self._queue: queue.SimpleQueue[_Append | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()  # the reader is used from worker threads
        self._last_seq = 0
        self._outbox_id = ""
        self._origin = 0
        # Known here before they are in the file (a full disk): written when they can be.
        self._acked = 0
        self._ack_unsaved = False
        self._session = 0
        self._session_unsaved = False
        self._reported_unsaved: set[str] = set()
        self._drops_unsaved = 0
        self._drops_lock = threading.Lock()
        self._waiting = 0  # ledger events the writer holds for lack of space
        self._saved: tuple[int, int] | None = None  # (last_seq, acked_seq) in the state file
        self.appended = asyncio.Event()  # set whenever new events are committed

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Outbox:
        try:
            self._open()
        except OutboxDiskFull:
            if not self._release_reserve():
                raise
            self.log.warning("outbox.disk_full", during="opening", reserve_released=True)
            self._disk_full, self._disk_full_since = True, time.monotonic()
            self._open()
        return self

    def _open(self) -> None:
        found = inspect(self.path, readonly=False)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        writer = open_connection(self.path, self._synchronous)
        try:
            self._prepare(writer, found)
            self._reader = open_connection(self.path, self._synchronous)
        except BaseException:
            writer.close()
            raise
        self._thread = threading.Thread(
            target=self._write_loop,
            args=(writer,),
            name=f"outbox-writer-{self.gateway}",
            daemon=True,
        )
        self._thread.start()
        if not self._disk_full:
            self._ensure_reserve()
        self._save_state()

    def _prepare(self, conn: sqlite3.Connection, found: Found) -> None:
        """Create or adopt the outbox; move it past what its state file says it handed out."""
        origin = (
            time.time_ns() // 1000 if self.policy.seq_origin is None else self.policy.seq_origin
        )
        tables = table_names(conn)
        try:
            if TABLES - tables or not conn.execute("SELECT 1 FROM identity").fetchone():
                conn.executescript(SCHEMA)
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(
                    "INSERT OR IGNORE INTO meta (key, value)"
                    " VALUES ('last_seq', ?), ('acked_seq', ?), ('origin', ?)",
                    (origin, origin, origin),
                )
                conn.execute(
                    "INSERT OR IGNORE INTO identity (one, outbox_id, created_at) VALUES (1, ?, ?)",
                    (uuid.uuid4().hex, time.time()),
                )
                conn.execute("COMMIT")
                if found.last_seq is not None:
                    self.log.info("outbox.adopted", outbox=str(self.path))
            state = found.state
            if state is not None and (
                (found.last_seq or 0) < state.last_seq or (found.acked_seq or 0) < state.acked_seq
            ):
                # Behind its state file, but nothing unacked lost (inspect said so): never
                # hand out a seq twice, never move the ack watermark back.
                conn.execute("BEGIN IMMEDIATE")
                for key, value in (("last_seq", state.last_seq), ("acked_seq", state.acked_seq)):
                    conn.execute(
                        "UPDATE meta SET value = max(value, ?) WHERE key = ?", (value, key)
                    )
                conn.execute("COMMIT")
                self.log.warning(
                    "outbox.moved_forward", outbox=str(self.path), file_last_seq=found.last_seq,
                    last_seq=state.last_seq,
                )  # fmt: skip
        except sqlite3.Error as exc:
            _rollback(conn)
            if is_disk_full(exc):
                raise OutboxDiskFull(
                    f"{self.path}: the disk is full: cannot prepare the outbox"
                ) from exc
            raise
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        self._last_seq = int(meta["last_seq"])
        self._acked = int(meta["acked_seq"])
        self._session = int(meta["session"])
        self._origin = int(meta.get("origin", 0))
        (self._outbox_id,) = conn.execute("SELECT outbox_id FROM identity").fetchone()

    def __exit__(self, *exc: object) -> None:
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join()
        if self._reader is not None:
            try:
                with self._reader_lock:
                    try:
                        self._flush_unsaved()
                    except sqlite3.Error as exc:
                        self._survive("closing", exc)
                self._save_state()
            finally:
                self._reader.close()

    async def __aenter__(self) -> Outbox:
        return await asyncio.to_thread(self.__enter__)  # quick_check, the reserve: blocking

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.__exit__)

    # -------------------------------------------------------------------- writing

    async def append(self, drafts: Sequence[Draft], *, timeout: float | None = None) -> int:
        """Store events durably; returns the sequence number of the last one.

        At the disk budget or on a full disk, telemetry is dropped (counted) and ledger
        events wait for room. With ``timeout``, events not stored within it are not
        stored at all: ``StoreTimeout``. An event that cannot be encoded fails this call
        only: ``Unencodable``.
        """
        if self._budget is Pressure.FULL or self._disk_full:
            kept = [d for d in drafts if d.cls is not TrafficClass.TELEMETRY]
            if len(kept) < len(drafts):
                self._count_drops(len(drafts) - len(kept))
            if not kept:
                return self._last_seq
            drafts = kept
        started = time.monotonic()
        if not self._room.is_set():
            try:
                async with asyncio.timeout(timeout):
                    await self._room.wait()
            except TimeoutError:
                raise StoreTimeout(self._not_stored_in(timeout)) from None
        request = _Append(drafts, timeout, started)
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

    def _not_stored_in(self, timeout: float | None) -> str:
        if self._disk_full:
            why = "the disk is full"
        elif self._budget is Pressure.FULL:
            why = "the outbox is at its disk budget"
        else:
            why = "the outbox is busy"
        return f"not stored within {timeout or 0:g} s: {why}"

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        pending: list[_Append] = []  # taken from the queue, not stored yet (a full disk)
        backoff = RETRY_FIRST_S
        try:
            while True:
                stop = self._gather(pending, self._wait_for(pending, backoff))
                pending = self._store(conn, pending)
                self._waiting = sum(len(request.drafts) for request in pending)
                if stop:
                    closed = NotStored("not stored: the outbox closed while the disk was full")
                    self._settle([(request.future, closed) for request in pending])
                    return
                backoff = min(backoff * 2, RETRY_MAX_S) if pending else RETRY_FIRST_S
        finally:
            conn.close()

    @staticmethod
    def _wait_for(pending: list[_Append], backoff: float) -> float | None:
        if not pending:
            return None
        deadlines = [r.deadline for r in pending if r.deadline is not None]
        if not deadlines:
            return backoff
        return max(0.0, min(backoff, min(deadlines) - time.monotonic()))

    def _gather(self, pending: list[_Append], timeout: float | None) -> bool:
        """Take appends from the queue into ``pending``; True once the outbox closes."""
        try:
            first = self._queue.get(timeout=timeout)
        except queue.Empty:
            return False
        if first is None:
            return True
        pending.append(first)
        size = sum(len(request.drafts) for request in pending)
        # On a full disk all of the queue: telemetry goes at once, deadlines are kept.
        while self._disk_full or size < MAX_GROUP:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                return True
            pending.append(nxt)
            size += len(nxt.drafts)
        return False

    def _store(self, conn: sqlite3.Connection, pending: list[_Append]) -> list[_Append]:
        """Commit what is pending, in order; returns what must wait (the disk is full)."""
        now = time.monotonic()
        live: list[_Append] = []
        expired: list[_Outcome] = []
        for request in pending:
            if request.future.cancelled():
                continue  # its caller is gone: store nothing for it
            if request.deadline is not None and now >= request.deadline:
                expired.append((request.future, StoreTimeout(self._not_stored_in(request.timeout))))
                continue
            live.append(request)
        self._settle(expired)
        if self._disk_full:
            live = self._drop_telemetry(live)
        while live:
            size, cut = 0, 0
            while cut < len(live) and size < MAX_GROUP:
                size += len(live[cut].drafts)
                cut += 1
            left = self._commit(conn, live[:cut])
            if left:
                return self._drop_telemetry(left + live[cut:])
            live = live[cut:]
        return []

    def _drop_telemetry(self, requests: list[_Append]) -> list[_Append]:
        """On a full disk telemetry is refused (counted); ledger events keep waiting."""
        kept: list[_Append] = []
        dropped: list[_Outcome] = []
        count = 0
        for request in requests:
            ledger = [d for d in request.drafts if d.cls is not TrafficClass.TELEMETRY]
            count += len(request.drafts) - len(ledger)
            if ledger:
                request.drafts = ledger
                kept.append(request)
            else:
                dropped.append((request.future, self._last_seq))
        if count:
            self._count_drops(count)
        self._settle(dropped)
        return kept

    def _encode(self, request: _Append, seq: int, now: float) -> tuple[list[_Row], list[_Key]]:
        rows: list[_Row] = []
        keys: list[_Key] = []
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
                keys.append((*draft.request, seq, now))
        return rows, keys

    def _commit(self, conn: sqlite3.Connection, group: list[_Append]) -> list[_Append]:
        """One transaction for the group; returns the requests left to retry (a full disk).

        A request whose events cannot be encoded fails alone, before any seq is given to
        it; one that breaks the transaction otherwise is found by committing one by one.
        """
        seq = self._last_seq
        rows: list[_Row] = []
        keys: list[_Key] = []
        outcomes: list[_Outcome] = []
        stored: list[tuple[_Append, int]] = []
        now = time.time()
        for request in group:
            try:
                request_rows, request_keys = self._encode(request, seq, now)
            except Exception as exc:  # its own caller hears it; the group goes on
                outcomes.append((request.future, Unencodable(f"event not encodable: {exc}")))
                continue
            seq += len(request_rows)
            rows += request_rows
            keys += request_keys
            stored.append((request, seq))
        if not stored:
            self._settle(outcomes)
            return []
        try:
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO outbox (seq, cls, created_at, payload) VALUES (?, ?, ?, ?)", rows
            )
            if keys:
                conn.executemany(
                    "INSERT INTO requests (key, fingerprint, seq, at) VALUES (?, ?, ?, ?)", keys
                )
            conn.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (seq,))
            conn.execute("COMMIT")
        except Exception as exc:  # a full disk, a broken file, a duplicate key
            _rollback(conn)
            self._settle(outcomes)
            if is_disk_full(exc):
                self._note_disk_full("storing events", exc)
                return [request for request, _ in stored]
            if len(stored) > 1:
                left: list[_Append] = []
                for request, _ in stored:
                    left += self._commit(conn, [request])
                return left
            self._settle([(stored[0][0].future, exc)])
            return []
        self._last_seq = seq
        # One wake-up of the event loop per commit, not one per waiter.
        self._settle(outcomes + [(request.future, end) for request, end in stored], appended=True)
        return []

    def _settle(self, outcomes: list[_Outcome], *, appended: bool = False) -> None:
        if not outcomes:
            return
        loop = outcomes[0][0].get_loop()
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(_settle, outcomes, self.appended if appended else None)

    def _count_drops(self, count: int) -> None:
        with self._drops_lock:
            self._drops_unsaved += count

    # ------------------------------------------------------------ a full disk

    @property
    def pressure(self) -> Pressure:
        return Pressure.DISK_FULL if self._disk_full else self._budget

    @property
    def disk_full(self) -> bool:
        return self._disk_full

    @property
    def waiting(self) -> int:
        """Ledger events the writer holds because the disk is full."""
        return self._waiting

    def disk_free_bytes(self) -> int:
        return disk_free_bytes(self.path.parent)

    def _note_disk_full(self, during: str, exc: BaseException) -> None:
        """Any write that hit a full disk: the state begins (logged once), the reserve goes."""
        if self._disk_full:
            return
        self._disk_full, self._disk_full_since = True, time.monotonic()
        released = self._release_reserve()
        self.log.warning(
            "outbox.disk_full", during=during, error=str(exc), reserve_released=released,
            free_bytes=self.disk_free_bytes(),
        )  # fmt: skip

    def _release_reserve(self) -> bool:
        try:
            reserve_path(self.path).unlink()
        except FileNotFoundError:
            return False
        return True

    def _ensure_reserve(self) -> bool:
        """Keep the reserve file in place (blocking); False if there is no room for it.

        Never takes the last free bytes from SQLite: only with room left beside it.
        """
        size = self.policy.reserve_bytes
        target = reserve_path(self.path)
        if size <= 0:
            return True
        try:
            if target.stat().st_size >= size:
                return True
        except FileNotFoundError:
            pass
        if self.disk_free_bytes() < size + MIN_FREE_BYTES:
            return False
        temporary = target.with_name(target.name + ".tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.posix_fallocate(fd, 0, size)  # real blocks, not a sparse file
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, target)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            if not _no_space(exc):
                self.log.warning("outbox.reserve_failed", error=str(exc))
            return False
        return True

    def _try_recover(self) -> None:
        """The disk full state ends when the reserve is back and room is left beside it."""
        if self.disk_free_bytes() < MIN_FREE_BYTES or not self._ensure_reserve():
            return
        with self._reader_lock:
            try:
                self._read().execute("UPDATE meta SET value = value WHERE key = 'session'")
                self._flush_unsaved()
            except sqlite3.Error as exc:
                if not is_disk_full(exc):
                    raise
                return
        self._disk_full = False
        self.log.info(
            "outbox.disk_recovered", free_bytes=self.disk_free_bytes(),
            after_s=round(time.monotonic() - self._disk_full_since, 1),
        )  # fmt: skip

    def _survive(self, during: str, exc: sqlite3.Error) -> None:
        """A write that failed: a full disk is a state to carry on in, anything else raises."""
        if not is_disk_full(exc):
            raise exc
        self._note_disk_full(during, exc)

    def _flush_unsaved(self) -> None:
        """Write what was kept in memory while the disk was full (reader lock held)."""
        conn = self._read()
        if self._ack_unsaved:
            conn.execute(
                "UPDATE meta SET value = max(value, ?) WHERE key = 'acked_seq'", (self._acked,)
            )
            self._ack_unsaved = False
        if self._session_unsaved:
            conn.execute(
                "UPDATE meta SET value = max(value, ?) WHERE key = 'session'", (self._session,)
            )
            self._session_unsaved = False
        with self._drops_lock:
            drops = self._drops_unsaved
        if drops:
            conn.execute(
                "UPDATE meta SET value = value + ? WHERE key = 'dropped_at_admission'", (drops,)
            )
            with self._drops_lock:
                self._drops_unsaved -= drops
        for key in list(self._reported_unsaved):
            conn.execute("UPDATE commands SET state = 'reported' WHERE key = ?", (key,))
            self._reported_unsaved.discard(key)

    def _save_state(self) -> None:
        """Write the state file if what is on disk changed since (blocking, best effort).

        Only what a checkpoint has put on disk goes in: after a power cut the file is
        never behind its state file (with synchronous=NORMAL the WAL's last commits may
        not be on disk until a checkpoint syncs it).
        """
        if not self._outbox_id:
            return
        with self._reader_lock:
            conn = self._read()
            try:
                meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
                current = (int(meta["last_seq"]), int(meta["acked_seq"]))
                if current == self._saved:
                    return
                if self._synchronous != "FULL":
                    busy, frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if busy or done < frames:
                        return  # not all on disk yet: at the next tick
            except sqlite3.Error as exc:
                self._survive("checkpointing", exc)
                return
        state = OutboxState(
            outbox_id=self._outbox_id,
            gateway=self.gateway,
            origin=self._origin,
            last_seq=current[0],
            acked_seq=current[1],
            saved_at=time.time(),
        )
        try:
            write_state(self.path, state)
        except OSError as exc:
            if not _no_space(exc):
                raise
            self._note_disk_full("saving the state file", exc)
            return
        self._saved = current

    # -------------------------------------------------------------------- reading

    @property
    def last_seq(self) -> int:
        return self._last_seq

    @property
    def outbox_id(self) -> str:
        return self._outbox_id

    def _read(self) -> sqlite3.Connection:
        assert self._reader is not None, "outbox not open"
        return self._reader

    def origin(self) -> int:
        """The seq before this outbox's first: nothing at or below it was ever stored."""
        return self._origin

    def acked_seq(self) -> int:
        return self._acked

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

        Returns the watermark now known (an older ack never moves it back); on a full
        disk it is written later, at the latest when the disk has room again.
        """
        with self._reader_lock:
            target = min(seq, self._last_seq)
            if target > self._acked:
                self._acked, self._ack_unsaved = target, True
            if self._ack_unsaved:
                try:
                    self._read().execute(
                        "UPDATE meta SET value = max(value, ?) WHERE key='acked_seq'",
                        (self._acked,),
                    )
                    self._ack_unsaved = False
                except sqlite3.Error as exc:
                    self._survive("recording an ack", exc)
            return self._acked

    def housekeeping(self, now: float | None = None) -> Pressure:
        """Trim what the retention allows, enforce the telemetry and disk budgets (blocking).

        Also writes what a full disk kept in memory, checks whether the disk has room
        again, and checkpoints the state file. Returns the pressure; the gateway calls
        this every second or so.
        """
        now = time.time() if now is None else now
        policy = self.policy
        with self._reader_lock:
            conn = self._read()
            try:
                if not self._disk_full:
                    self._flush_unsaved()
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
            except sqlite3.Error as exc:
                self._survive("housekeeping", exc)
                used = used_bytes(conn)
        if used >= policy.disk_budget_bytes:
            self._budget = Pressure.FULL
        elif used >= ALARM_SHARE * policy.disk_budget_bytes:
            self._budget = Pressure.ALARM
        else:
            self._budget = Pressure.OK
        if self._disk_full:
            self._try_recover()
        else:
            self._ensure_reserve()
        self._save_state()
        return self.pressure

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
            _rollback(conn)
            raise

    def set_pressure(self, pressure: Pressure) -> None:
        """On the event loop: let ledger appends through again once there is room."""
        if pressure is Pressure.FULL or (
            pressure is Pressure.DISK_FULL and self._budget is Pressure.FULL
        ):
            self._room.clear()
        else:
            self._room.set()

    def save_counters(self, counters: dict[str, float]) -> None:
        """Keep the gateway's counters where ``edge status`` can read them (blocking)."""
        with self._reader_lock:
            try:
                self._read().executemany(
                    "INSERT INTO counters (name, value) VALUES (?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    list(counters.items()),
                )
            except sqlite3.Error as exc:
                self._survive("saving counters", exc)

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
        """Record that a command runs; False if its key was seen before (blocking).

        Also False on a full disk: a claim that is not durable could run a command twice,
        so it does not run now; the hub resends it until it hears an outcome.
        """
        with self._reader_lock:
            try:
                cur = self._read().execute(
                    "INSERT OR IGNORE INTO commands (key, state, at) VALUES (?, 'running', ?)",
                    (key, time.time()),
                )
            except sqlite3.Error as exc:
                self._survive("claiming a command", exc)
                self.log.warning("command.not_claimed", command=key, reason="disk full")
                return False
            return cur.rowcount == 1

    def command_reported(self, key: str) -> None:
        with self._reader_lock:
            try:
                self._read().execute("UPDATE commands SET state = 'reported' WHERE key = ?", (key,))
            except sqlite3.Error as exc:
                self._survive("recording a command's report", exc)
                self._reported_unsaved.add(key)

    def interrupted_commands(self) -> list[str]:
        """Keys of commands that were running when the gateway last stopped."""
        with self._reader_lock:
            rows = self._read().execute("SELECT key FROM commands WHERE state = 'running'")
            return [row[0] for row in rows.fetchall()]

    def next_session(self) -> int:
        """A new session number for this gateway's birth, durable across restarts.

        On a full disk it cannot be durable: the clock (microseconds) then makes it
        larger than any session before, and it is written when the disk has room.
        """
        with self._reader_lock:
            conn = self._read()
            try:
                conn.execute(
                    "UPDATE meta SET value = max(value + 1, ?) WHERE key='session'",
                    (self._session + 1,),
                )
                (session,) = conn.execute("SELECT value FROM meta WHERE key='session'").fetchone()
                self._session, self._session_unsaved = int(session), False
            except sqlite3.Error as exc:
                self._survive("starting a session", exc)
                self._session = max(self._session + 1, time.time_ns() // 1000)
                self._session_unsaved = True
            return self._session

    def status(self) -> OutboxStatus:
        with self._reader_lock:
            status = read_status(self._read(), acked=self._acked)
        with self._drops_lock:
            unsaved = self._drops_unsaved
        return dataclasses.replace(status, dropped_telemetry=status.dropped_telemetry + unsaved)


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already
            conn.execute("ROLLBACK")


def _settle(outcomes: list[_Outcome], appended: asyncio.Event | None) -> None:
    for future, outcome in outcomes:
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
    if appended is not None:
        appended.set()
