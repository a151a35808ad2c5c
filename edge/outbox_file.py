"""The outbox's file on disk: its schema, its identity, the state file kept beside it, and
the checks that refuse a lost or corrupt file instead of silently starting a new outbox.

A state file (``<outbox>.state.json``, written atomically) names the outbox (an id made
with it) and what it held at its last checkpoint, as far as it was on disk. ``inspect``
compares the two before the outbox opens: a file that is missing, empty, not a SQLite
database, failing ``PRAGMA quick_check``, another outbox, or rolled back past unacked
events is refused (``OutboxLost``, ``OutboxCorrupt``). Blocking functions, no threads.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec

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
CREATE TABLE IF NOT EXISTS identity (  -- which outbox this is; the state file names it too
    one INTEGER PRIMARY KEY CHECK (one = 1),
    outbox_id TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""
TABLES = frozenset({"outbox", "meta", "counters", "requests", "commands", "identity"})
SQLITE_HEADER = b"SQLite format 3\x00"

STATE_FORMAT = 1


# ---------------------------------------------------------------------- errors


class OutboxError(Exception):
    """The outbox cannot do what was asked; the message says why and what to do."""

    remedy = ""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem

    def advice(self, config: str | Path | None = None) -> str:
        """One line for the operator: what is wrong, then what to do about it."""
        remedy = self.remedy.format(config=config or "<site config>")
        return f"{self.problem}. {remedy}" if remedy else self.problem

    def __str__(self) -> str:
        return self.advice()


_ACCEPT_LOSS = (
    "Restore the file (with its -wal file, if there is one), or accept the loss and start"
    " a new outbox: warelink edge reset-outbox --config {config}"
)


class OutboxLost(OutboxError):
    """Events the state file says were stored are not in the outbox file any more."""

    remedy = _ACCEPT_LOSS


class OutboxCorrupt(OutboxError):
    """The outbox file is not a sound SQLite database."""

    remedy = _ACCEPT_LOSS


class OutboxDiskFull(OutboxError):
    """The outbox cannot even be opened: the disk is full, and no reserve is left."""

    remedy = "Free some space on that disk, then start again"


def is_disk_full(exc: BaseException) -> bool:
    """SQLite's "database or disk is full", or its shared memory file unable to grow."""
    code = getattr(exc, "sqlite_errorcode", None)
    if not isinstance(exc, sqlite3.Error) or not isinstance(code, int):
        return False
    return code & 0xFF == sqlite3.SQLITE_FULL or code == sqlite3.SQLITE_IOERR_SHMSIZE


def is_corrupt(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None) or 0
    return code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


# ---------------------------------------------------------------------- values


class OutboxState(msgspec.Struct, frozen=True, kw_only=True):
    """The state file: what the outbox held at its last checkpoint, kept outside it."""

    format: int = STATE_FORMAT
    outbox_id: str
    gateway: str
    origin: int
    last_seq: int  # as far as it was on disk when saved (never ahead of the file)
    acked_seq: int
    saved_at: float


@dataclass(frozen=True)
class Found:
    """What ``inspect`` found: the state file's view and the outbox file's own."""

    state: OutboxState | None
    outbox_id: str | None = None  # None: no file yet, or one made before identities
    last_seq: int | None = None  # None: no outbox in the file yet
    acked_seq: int | None = None


# ------------------------------------------------------------------ state file


def state_path(path: Path) -> Path:
    return path.with_name(path.name + ".state.json")


def reserve_path(path: Path) -> Path:
    return path.with_name(path.name + ".reserve")


class Unreadable(ValueError):
    pass


def read_state(path: Path) -> OutboxState | None:
    """The state file of the outbox at ``path``; None if there is none."""
    try:
        data = state_path(path).read_bytes()
    except FileNotFoundError:
        return None
    try:
        state = msgspec.json.decode(data, type=OutboxState)
    except msgspec.DecodeError as exc:
        raise Unreadable(f"state file {state_path(path)} is unreadable: {exc}") from None
    if state.format != STATE_FORMAT:
        raise Unreadable(f"state file {state_path(path)} has format {state.format}")
    return state


def write_state(path: Path, state: OutboxState) -> None:
    """Replace the state file atomically: a temporary file, fsync, rename, fsync the dir."""
    target = state_path(path)
    temporary = target.with_name(target.name + ".tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, msgspec.json.format(msgspec.json.encode(state)) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, target)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _when(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds")


def _held(state: OutboxState) -> str:
    unacked = state.last_seq - state.acked_seq
    return (
        f"the outbox {state.outbox_id} held seqs up to {state.last_seq}, {unacked} unacked"
        f" (as of {_when(state.saved_at)})"
    )


# -------------------------------------------------------------------- checking


def inspect(path: Path, *, readonly: bool = True) -> Found:
    """Check the outbox file against its state file, changing neither (blocking).

    Raises ``OutboxLost`` or ``OutboxCorrupt`` where the file cannot be the outbox the
    state file describes, ``OutboxDiskFull`` where SQLite cannot even read it for lack
    of space; otherwise returns what was found (``Found(None)``: nothing, a new outbox).
    """
    unreadable = None
    try:
        state = read_state(path)
    except Unreadable as exc:
        state, unreadable = None, str(exc)
    if state is not None:
        held = _held(state)
    elif unreadable is not None:
        held = f"an outbox was here ({unreadable})"
    else:
        held = "it held an outbox"
    size = path.stat().st_size if path.exists() else None
    if size is None or size == 0:
        if state is None and unreadable is None:
            return Found(None)  # a new outbox (SQLite takes an empty file as empty)
        now = "missing" if size is None else "empty (0 bytes)"
        raise OutboxLost(f"{path}: {held}; the file is now {now}")
    with path.open("rb") as file:
        header = file.read(len(SQLITE_HEADER))
    if header != SQLITE_HEADER:
        raise OutboxCorrupt(f"{path}: {held}; the file is now corrupt: not a SQLite database")
    try:
        found = _read_file(path, state, readonly=readonly)
    except sqlite3.Error as exc:
        if is_disk_full(exc):
            raise OutboxDiskFull(f"{path}: the disk is full: cannot open the outbox") from exc
        if is_corrupt(exc):
            raise OutboxCorrupt(f"{path}: {held}; the file is now corrupt: {exc}") from None
        raise OutboxError(f"{path}: cannot read the outbox: {exc}") from exc
    if found.problems:
        lines = [line for text in found.problems for line in text.splitlines()]
        problems = "; ".join([line for line in lines if not line.startswith("***")][:3])
        raise OutboxCorrupt(f"{path}: {held}; the file is now corrupt: {problems}")
    if state is None:
        return found.found
    if found.found.last_seq is None:
        raise OutboxLost(f"{path}: {held}; the file now holds no outbox")
    if found.found.outbox_id != state.outbox_id:
        other = found.found.outbox_id or "made before outboxes had ids"
        raise OutboxLost(
            f"{path}: {held}; the file now holds another outbox ({other},"
            f" seqs up to {found.found.last_seq})"
        )
    lost = state.last_seq - max(found.found.last_seq, state.acked_seq)
    if lost > 0:
        raise OutboxLost(
            f"{path}: {held}; the file now ends at seq {found.found.last_seq}:"
            f" {lost} unacked seqs are gone (an older copy restored?)"
        )
    return found.found


@dataclass(frozen=True)
class _FileRead:
    found: Found
    problems: list[str]


def _read_file(path: Path, state: OutboxState | None, *, readonly: bool) -> _FileRead:
    mode = "ro" if readonly else "rw"
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode={mode}", uri=True)
    try:
        checked = [str(row[0]) for row in conn.execute("PRAGMA quick_check(5)")]
        if checked != ["ok"]:
            return _FileRead(Found(state), checked)
        tables = table_names(conn)
        if "meta" not in tables:
            return _FileRead(Found(state), [])
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        row = None
        if "identity" in tables:
            row = conn.execute("SELECT outbox_id FROM identity").fetchone()
    finally:
        conn.close()
    return _FileRead(
        Found(
            state,
            outbox_id=None if row is None else str(row[0]),
            last_seq=meta.get("last_seq"),
            acked_seq=meta.get("acked_seq"),
        ),
        [],
    )


def table_names(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {str(row[0]) for row in rows}


def last_seq_if_readable(path: Path) -> int:
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return 0
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
        return int(row[0]) if row else 0
    except (sqlite3.Error, TypeError, ValueError):
        return 0
    finally:
        conn.close()


# ------------------------------------------------------------------ connections


def open_connection(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
    except sqlite3.Error as exc:
        conn.close()
        if is_disk_full(exc):
            raise OutboxDiskFull(f"{path}: the disk is full: cannot open the outbox") from exc
        raise
    return conn


def connect(
    path: Path, *, synchronous: str = "NORMAL", seq_origin: int | None = None
) -> sqlite3.Connection:
    """A connection to an outbox file with its schema, as the outbox sets it up (bench/)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = open_connection(path, synchronous)
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


def disk_free_bytes(directory: Path) -> int:
    stat = os.statvfs(directory)
    return stat.f_bavail * stat.f_frsize
