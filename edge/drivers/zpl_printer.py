"""Driver for a Zebra label printer speaking ZPL over raw TCP (port 9100).

It keeps one connection open and polls ``~HS``; the printer's condition goes out as a
``PrinterState`` (telemetry) when it changes. Newer printers do not answer ``~HS`` at all
while media or ribbon is out or the head is open, so a time-out on a live socket is the
fault ``no_status``, not an outage; only a closed socket (or one that cannot be opened)
makes the printer OFFLINE.

Printing (``execute("print_sscc_label", args)``) is at most once per idempotency key,
across retries, reconnects and gateway restarts. ``args["key"]`` is required (the router
passes the command key there). The key is journalled in a small SQLite file *before* the
job is sent, and marked printed once a ``~HS`` sent right behind the job on the same
connection shows the format has left the printer's buffer. A key found printed returns
the earlier result; a key found sent-but-unconfirmed (the link dropped after the job
went out, the job sat in the buffer past the time-out, or the gateway died meanwhile)
is *not* sent again: the label may well exist, and a second label with the same SSCC
on another pallet is worse than a missing one, which the dock sees and reprints under a
new key. That call raises ``CommandFailed`` saying so, every time it is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any, Literal

import structlog
from pydantic import Field

from warelink.edge.device_config import TcpDevice
from warelink.edge.drivers.base import (
    Backoff,
    CommandFailed,
    CommandRejected,
    DriverContext,
    DriverSpec,
    Emit,
    Presence,
)
from warelink.protocol.messages import PrinterState, TrafficClass
from warelink.protocol.zpl import (
    HOST_STATUS_REQUEST,
    HostStatus,
    HostStatusDecoder,
    Malformed,
    sscc_pallet_label,
)

NO_STATUS = "no_status"
"""The fault reported when a live printer does not answer ``~HS`` in time."""

CONNECT_TIMEOUT_S = 5.0
CONFIRM_POLL_S = 0.1
"""Pause between ``~HS`` while waiting for a job to leave the buffer."""


class ZplPrinterConfig(TcpDevice):
    """A Zebra (or compatible) label printer taking ZPL on raw TCP."""

    kind: Literal["zpl_printer"]
    port: int = Field(9100, ge=1, le=65535)
    status_interval_s: float = Field(2.0, gt=0, description="Poll ~HS this often.")
    status_timeout_s: float = Field(
        2.0, gt=0, description="No ~HS answer in this time on a live socket: fault no_status."
    )
    print_timeout_s: float = Field(
        30.0, gt=0, description="A job not out of the buffer by then is reported unconfirmed."
    )
    state_dir: Path | None = Field(
        None, description="Where the journal of printed job keys lives (the gateway's data dir)."
    )


class _Closed:
    """Put in the status queue when the connection ends."""


_CLOSED = _Closed()


class _NotConnected(Exception):
    pass


class _ConnectionLost(Exception):
    pass


# ------------------------------------------------------------------ the journal


class PrintJournal:
    """Job keys and their outcome, durable in SQLite (WAL, synchronous=FULL).

    ``pending``: the job may have been sent; ``printed``: confirmed out of the buffer.
    A connection per call keeps it free of thread and lifetime concerns; a print is a
    few per minute at most.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(self._connect()) as db, db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS print_jobs ("
                " key TEXT PRIMARY KEY,"
                " state TEXT NOT NULL CHECK (state IN ('pending', 'printed')),"
                " digest TEXT NOT NULL,"
                " sscc TEXT NOT NULL,"
                " detail TEXT NOT NULL,"
                " updated_at TEXT NOT NULL)"
            )

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=5.0)
        db.execute("PRAGMA synchronous=FULL")
        return db

    def lookup(self, key: str) -> tuple[str, str, str] | None:
        """(state, digest, detail) of ``key``, or None if never sent."""
        with contextlib.closing(self._connect()) as db:
            row = db.execute(
                "SELECT state, digest, detail FROM print_jobs WHERE key = ?", (key,)
            ).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def begin(self, key: str, digest: str, sscc: str) -> None:
        with contextlib.closing(self._connect()) as db, db:
            db.execute(
                "INSERT INTO print_jobs (key, state, digest, sscc, detail, updated_at)"
                " VALUES (?, 'pending', ?, ?, ?, ?)",
                (key, digest, sscc, "sent, not confirmed (interrupted)", _now()),
            )

    def finish(self, key: str, state: Literal["pending", "printed"], detail: str) -> None:
        with contextlib.closing(self._connect()) as db, db:
            db.execute(
                "UPDATE print_jobs SET state = ?, detail = ?, updated_at = ? WHERE key = ?",
                (state, detail, _now(), key),
            )

    def forget(self, key: str) -> None:
        """The job certainly never left: a retry may send it."""
        with contextlib.closing(self._connect()) as db, db:
            db.execute("DELETE FROM print_jobs WHERE key = ?", (key,))


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


# ------------------------------------------------------------------- the driver


class ZplPrinterDriver:
    """One ZPL printer: watches its status, prints GS1 pallet labels at most once per key.

    The journal is ``state_path`` if given, else ``<config.state_dir>/zpl-<id>.sqlite3``.
    Actions:

    * ``print_sscc_label``: ``key`` (required), ``sscc``, ``gtin``, ``quantity``, ``lot``
      (optional), ``expiry`` (ISO date, optional), ``ship_to``, ``ship_from``
      (optional), ``date_ai`` ("15" or "17", optional). Returns ``printed SSCC …``.
    * ``status``: a one-line summary of the printer's condition.
    """

    def __init__(
        self,
        config: ZplPrinterConfig,
        emit: Emit,
        *,
        state_path: Path | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        if state_path is None:
            if config.state_dir is None:
                raise ValueError(
                    f"zpl printer {config.id!r}: state_dir (or state_path) is needed"
                    " for the journal of printed jobs"
                )
            state_path = config.state_dir / f"zpl-{config.id}.sqlite3"
        self.config = config
        self.device_id = config.id
        self.journal = PrintJournal(state_path)
        self._emit = emit
        self._backoff = backoff or Backoff(initial=0.1, cap=10.0)
        self._log = structlog.get_logger(__name__).bind(
            device=config.id, printer=f"{config.host}:{config.port}"
        )
        self._io_lock = asyncio.Lock()  # one ~HS outstanding: answers carry no id
        self._print_lock = asyncio.Lock()  # one job at a time, journal included
        self._writer: asyncio.StreamWriter | None = None
        self._statuses: asyncio.Queue[HostStatus | _Closed] = asyncio.Queue()
        self._presence = Presence(config.id, emit, self._log, "zpl")
        self._state: PrinterState | None = None
        self.status: HostStatus | None = None  # the last answer, None after a time-out

    # ------------------------------------------------------------ public API

    async def run(self) -> None:
        """Talk to the printer until cancelled; reconnects with backoff, never raises."""
        while True:
            detail = await self._session()
            await self._set_offline(detail)
            await asyncio.sleep(self._backoff.next_delay())

    async def execute(self, action: str, args: dict[str, Any]) -> str:
        if action == "print_sscc_label":
            return await self._print_sscc_label(args)
        if action == "status":
            return await self._status_summary()
        raise CommandRejected(
            f"a label printer takes 'print_sscc_label' or 'status', not {action!r}"
        )

    # ------------------------------------------------------------ the session

    async def _session(self) -> str:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                reader, writer = await asyncio.open_connection(self.config.host, self.config.port)
        except (OSError, TimeoutError) as exc:
            return f"cannot connect: {str(exc) or type(exc).__name__}"
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self._statuses = asyncio.Queue()
        self._writer = writer
        if await self._presence.up():
            self._backoff.reset()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._read(reader), name=f"{self.device_id}-read")
                tg.create_task(self._poll(), name=f"{self.device_id}-poll")
        except ExceptionGroup as group:
            failure = _first_leaf(group)
            if isinstance(failure, OSError | _ConnectionLost | _NotConnected):
                return str(failure) or type(failure).__name__
            self._log.error("zpl.driver_error", exc_info=failure)
            return f"driver error: {failure!r}"
        finally:
            self._writer = None
            self._statuses.put_nowait(_CLOSED)  # wakes a print waiting for an answer
            writer.transport.abort()
        return "session ended"  # pragma: no cover - the tasks only end by raising

    async def _read(self, reader: asyncio.StreamReader) -> None:
        decoder = HostStatusDecoder()
        garbage = 0
        while data := await reader.read(4096):
            for item in decoder.feed(data):
                if isinstance(item, Malformed):
                    if not garbage:
                        self._log.warning("zpl.garbage", reason=item.reason)
                    garbage += 1
                else:
                    garbage = 0
                    self._statuses.put_nowait(item)
        raise _ConnectionLost("printer closed the connection")

    async def _poll(self) -> None:
        while True:
            await self._request_status()
            await asyncio.sleep(self.config.status_interval_s)

    async def _request_status(self, job: bytes = b"") -> HostStatus | None:
        """Send ``job`` (if any) and ``~HS`` in one write; the answer, or None on time-out.

        Raises ``_NotConnected`` before anything was written, ``_ConnectionLost`` after.
        Answers that arrive late (to a request that timed out) are dropped before asking.
        """
        async with self._io_lock:
            writer = self._writer
            if writer is None or writer.is_closing():
                raise _NotConnected("printer not connected")
            while not self._statuses.empty():
                if isinstance(self._statuses.get_nowait(), _Closed):
                    raise _NotConnected("printer not connected")
            try:
                writer.write(job + HOST_STATUS_REQUEST)
                await writer.drain()
            except OSError as exc:
                raise _ConnectionLost(f"write failed: {exc}") from None
            try:
                async with asyncio.timeout(self.config.status_timeout_s):
                    answer = await self._statuses.get()
            except TimeoutError:
                await self._observe(None)
                return None
            if isinstance(answer, _Closed):
                raise _ConnectionLost("printer closed the connection")
            await self._observe(answer)
            return answer

    # ------------------------------------------------------------ the state

    async def _observe(self, status: HostStatus | None) -> None:
        self.status = status
        if status is None:
            state = PrinterState(ready=False, faults=[NO_STATUS])
        else:
            state = PrinterState(
                ready=status.ready,
                faults=status.faults,
                labels_remaining=status.labels_remaining,
            )
        previous = self._state
        if previous is not None and (previous.ready, previous.faults) == (
            state.ready,
            state.faults,
        ):
            return
        self._state = state
        if state.ready:
            self._log.info("zpl.ready", recovered_from=previous.faults if previous else [])
        else:
            self._log.warning("zpl.fault", faults=state.faults)
        await self._emit(self.device_id, TrafficClass.TELEMETRY, state)

    async def _set_offline(self, detail: str) -> None:
        self._state = None  # the printer's condition is reported afresh once back
        self.status = None
        await self._presence.down(detail)

    async def _status_summary(self) -> str:
        try:
            status = await self._request_status()
        except (_NotConnected, _ConnectionLost):
            return "offline"
        if status is None:
            return f"fault: {NO_STATUS} (no answer to ~HS)"
        queued = f"{status.formats_in_buffer} formats, {status.labels_remaining} labels queued"
        if status.ready:
            return f"ready; {queued}"
        return f"fault: {', '.join(status.faults)}; {queued}"

    # ------------------------------------------------------------ printing

    async def _print_sscc_label(self, args: dict[str, Any]) -> str:
        key, label, sscc = _label_from_args(args)
        digest = hashlib.sha256(label).hexdigest()
        bound = self._log.bind(job=key, sscc=sscc)
        async with self._print_lock:
            try:
                known = await asyncio.to_thread(self.journal.lookup, key)
            except sqlite3.Error as exc:
                raise CommandFailed(f"print journal unavailable, nothing sent: {exc}") from None
            if known is not None:
                state, known_digest, detail = known
                if known_digest != digest:
                    raise CommandRejected(f"job key {key!r} was used for a different label")
                if state == "printed":
                    bound.info("zpl.duplicate_job", detail=detail)
                    return detail
                raise CommandFailed(detail)
            await self._check_ready()
            try:
                await asyncio.to_thread(self.journal.begin, key, digest, sscc)
            except sqlite3.Error as exc:
                raise CommandFailed(f"print journal unavailable, nothing sent: {exc}") from None
            started = time.monotonic()
            try:
                status = await self._request_status(label)
            except _NotConnected:
                await asyncio.to_thread(self.journal.forget, key)
                raise CommandFailed("printer offline; nothing sent") from None
            except _ConnectionLost:
                return await self._unconfirmed(key, bound, "connection lost after the job was sent")
            while True:
                if (
                    status is not None
                    and status.ready
                    and status.formats_in_buffer == 0
                    and not status.partial_format
                ):
                    detail = f"printed SSCC {sscc}"
                    await asyncio.to_thread(self.journal.finish, key, "printed", detail)
                    bound.info("zpl.printed", seconds=round(time.monotonic() - started, 3))
                    return detail
                if time.monotonic() - started > self.config.print_timeout_s:
                    why = (
                        f"no answer to ~HS ({NO_STATUS})"
                        if status is None
                        else f"{status.formats_in_buffer} formats still in the buffer"
                        + (f", faults: {', '.join(status.faults)}" if status.faults else "")
                    )
                    return await self._unconfirmed(key, bound, why)
                await asyncio.sleep(CONFIRM_POLL_S)
                try:
                    status = await self._request_status()
                except (_NotConnected, _ConnectionLost):
                    return await self._unconfirmed(
                        key, bound, "connection lost after the job was sent"
                    )

    async def _check_ready(self) -> None:
        try:
            status = await self._request_status()
        except (_NotConnected, _ConnectionLost):
            raise CommandFailed("printer offline") from None
        if status is None:
            raise CommandFailed(
                f"printer not ready: {NO_STATUS}"
                " (no answer to ~HS: head open, media or ribbon out?)"
            )
        if not status.ready:
            raise CommandFailed(f"printer not ready: {', '.join(status.faults)}")

    async def _unconfirmed(self, key: str, bound: Any, why: str) -> str:
        detail = (
            f"job sent but not confirmed: {why}; it may have printed, so it is not sent"
            " again under this key (check the printer; reprint with a new key)"
        )
        await asyncio.to_thread(self.journal.finish, key, "pending", detail)
        bound.warning("zpl.unconfirmed", reason=why)
        raise CommandFailed(detail)


def _label_from_args(args: dict[str, Any]) -> tuple[str, bytes, str]:
    """(key, label bytes, SSCC) from a command's arguments; CommandRejected if invalid."""
    key = args.get("key")
    if not isinstance(key, str) or not key:
        raise CommandRejected("print_sscc_label needs args['key'], the idempotency key")
    known = {"key", "sscc", "gtin", "quantity", "lot", "expiry", "ship_to", "ship_from", "date_ai"}
    unknown = sorted(set(args) - known)
    if unknown:
        raise CommandRejected(f"print_sscc_label: unknown arguments {unknown}")
    missing = [name for name in ("sscc", "gtin", "quantity", "ship_to") if name not in args]
    if missing:
        raise CommandRejected(f"print_sscc_label: missing arguments {missing}")
    expiry = args.get("expiry")
    try:
        if isinstance(expiry, str):
            expiry = dt.date.fromisoformat(expiry)
        label = sscc_pallet_label(
            args["sscc"],
            args["gtin"],
            args["quantity"],
            args.get("lot"),
            expiry,
            args["ship_to"],
            job_key=key,
            ship_from=args.get("ship_from", ""),
            date_ai=args.get("date_ai", "17"),
        )
    except (ValueError, TypeError) as exc:
        raise CommandRejected(f"print_sscc_label: {exc}") from None
    return key, label, str(args["sscc"])


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


# ------------------------------------------------------------- registry entry


def _build(config: ZplPrinterConfig, context: DriverContext) -> ZplPrinterDriver:
    journal = (config.state_dir or context.data_dir) / f"zpl-{config.id}.sqlite3"
    return ZplPrinterDriver(config, context.emit, state_path=journal)


SPEC = DriverSpec(
    kind="zpl_printer",
    config=ZplPrinterConfig,
    build=_build,
    example='host = "10.0.3.21"',
)
