"""A simulated fixed RFID reader speaking LLRP 1.0.1 (reader side) on a TCP port.

On each connection it sends a READER_EVENT_NOTIFICATION with a ConnectionAttemptEvent,
answers capability and ROSpec messages as a reader does (ROSpecs outlive connections,
states Disabled → Inactive → Active), sends KEEPALIVE periodically and closes the
connection when the client leaves too many unanswered, and while a ROSpec is active
sends one RO_ACCESS_REPORT per tag and antenna every ``report_interval_s`` for the tags
"in the field" (N = 1), with RSSI noise drawn from a seeded generator.

The scenario places, moves and removes tags (EPC hex, antenna); the fault modes are
garbage bytes, dropped (and refused) connections and slow answers. What the client did
is recorded (``received``, ``keepalive_acks``, ``violations``) for tests to assert on.
Only one client at a time, as on real readers: a second connection is refused with a
ConnectionAttemptEvent "client-initiated connection already exists".
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import structlog

from warelink.protocol.epc import Sgtin96, Sscc96, encode_epc_hex
from warelink.protocol.llrp import (
    AddRoSpec,
    AddRoSpecResponse,
    CloseConnection,
    CloseConnectionResponse,
    ConnectionAttemptStatus,
    DeleteRoSpec,
    DeleteRoSpecResponse,
    DisableRoSpec,
    DisableRoSpecResponse,
    EnableRoSpec,
    EnableRoSpecResponse,
    ErrorMessage,
    GeneralDeviceCapabilities,
    GetReaderCapabilities,
    GetReaderCapabilitiesResponse,
    Keepalive,
    KeepaliveAck,
    LlrpDecoder,
    LlrpStatus,
    Malformed,
    Message,
    ReaderEventNotification,
    RoAccessReport,
    RoSpec,
    RoSpecState,
    StartRoSpec,
    StartRoSpecResponse,
    StartTrigger,
    StatusCode,
    StopRoSpec,
    StopRoSpecResponse,
    TagReport,
    TagReportContent,
    encode,
)
from warelink.sim.scanner import CATALOG, make_sscc

log = structlog.get_logger(__name__)

COMPANY_PREFIX_LENGTH = 7  # the catalog's GS1 example prefix 9506000


def make_sgtin_epc(rng: random.Random, gtin: str | None = None) -> str:
    """A seed-driven SGTIN-96 tag (hex) of a catalog GTIN, filter 1 (POS item)."""
    epc = Sgtin96.from_gtin(
        gtin or rng.choice(CATALOG),
        rng.randrange(1, 1 << 38),
        company_prefix_length=COMPANY_PREFIX_LENGTH,
        filter=1,
    )
    return encode_epc_hex(epc)


def make_sscc_epc(rng: random.Random) -> str:
    """A seed-driven SSCC-96 pallet tag (hex), filter 6 (unit load)."""
    sscc = make_sscc(rng)
    return encode_epc_hex(Sscc96.from_sscc(sscc, company_prefix_length=7, filter=6))


@dataclass
class _Rospec:
    spec: RoSpec
    state: RoSpecState


@dataclass
class _Session:
    writer: asyncio.StreamWriter
    outstanding: set[int] = field(default_factory=set)
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class SimulatedLlrpReader:
    """``async with SimulatedLlrpReader(seed=1) as reader:`` listens on ``reader.port``
    (an ephemeral port on ``host`` unless ``port`` is given) until exit."""

    def __init__(
        self,
        *,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        antennas: Sequence[int] = (1, 2, 3, 4),
        keepalive_interval_s: float = 1.0,
        keepalive_misses: int = 3,
        report_interval_s: float = 0.1,
        rssi_noise_db: float = 1.5,
        answer_delay_s: float = 0.0,
    ) -> None:
        self.host = host
        self.port = port
        self.antennas = tuple(antennas)
        self.keepalive_interval_s = keepalive_interval_s
        self.keepalive_misses = keepalive_misses
        self.report_interval_s = report_interval_s
        self.rssi_noise_db = rssi_noise_db
        self.answer_delay_s = answer_delay_s
        self.rng = random.Random(seed)
        # the field: EPC hex → antenna → mean RSSI (dBm)
        self.field: dict[str, dict[int, float]] = {}
        self.rospecs: dict[int, _Rospec] = {}
        # what happened, for tests
        self.received: list[Message | Malformed] = []
        self.connections = 0
        self.refused = 0
        self.keepalives_sent = 0
        self.keepalive_acks = 0
        self.reports_sent = 0
        self.violations: list[str] = []
        self._session: _Session | None = None
        self._refuse_until = 0.0
        self._next_id = 1
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Condition()
        self._log = log.bind(device="llrp-sim")

    # ----------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        if self._session is not None:
            self._session.writer.close()
            self._session.closed.set()
        if self._handlers:  # let them end on their own: a cancelled one logs an error
            await asyncio.wait(self._handlers, timeout=2.0)
        await self._server.wait_closed()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` holds (checked whenever the reader's record changes)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -------------------------------------------------------------- scenario

    def place(self, epc: str, antenna: int, rssi: float = -55.0) -> None:
        """Put a tag in the field of ``antenna`` (alone: it leaves other antennas)."""
        self.field[epc.upper()] = {antenna: rssi}

    def also_seen(self, epc: str, antenna: int, rssi: float) -> None:
        """The tag is also in reach of ``antenna`` (portals overlap)."""
        self.field.setdefault(epc.upper(), {})[antenna] = rssi

    def move(self, epc: str, antenna: int, rssi: float = -55.0) -> None:
        self.place(epc, antenna, rssi)

    def remove(self, epc: str) -> None:
        self.field.pop(epc.upper(), None)

    @property
    def inventory_running(self) -> bool:
        return self._session is not None and any(
            r.state is RoSpecState.ACTIVE for r in self.rospecs.values()
        )

    async def walk_through(
        self, epc: str, antennas: Sequence[int], *, dwell_s: float, rssi: float = -50.0
    ) -> None:
        """Carry a tag past ``antennas`` in turn, ``dwell_s`` at each, then out of range."""
        for antenna in antennas:
            self.place(epc, antenna, rssi + self.rng.uniform(-3.0, 3.0))
            await asyncio.sleep(dwell_s)
        self.remove(epc)

    # ----------------------------------------------------------------- faults

    async def inject_garbage(self, n: int = 64) -> bytes:
        """Write ``n`` random bytes to the client; the first is 0xFF, never a valid
        LLRP header start, so the client's framing breaks for sure."""
        data = b"\xff" + bytes(self.rng.randrange(256) for _ in range(max(0, n - 1)))
        session = self._session
        if session is not None:
            session.writer.write(data)
            with contextlib.suppress(ConnectionError):
                await session.writer.drain()
        return data

    def drop_connections(self, *, refuse_for_s: float = 0.0) -> None:
        """Close the client's connection; refuse (accept then close at once) new ones for
        ``refuse_for_s``, as a reader rebooting or behind a flapping link."""
        self._refuse_until = time.monotonic() + refuse_for_s
        if self._session is not None:
            self._session.writer.close()
            self._session.closed.set()

    # -------------------------------------------------------------- sessions

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def _send(self, session: _Session, message: Message) -> None:
        session.writer.write(encode(message))
        await session.writer.drain()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        try:
            try:
                await self._session_loop(reader, writer)
            except* (ConnectionError, OSError):
                pass  # the client went away, maybe mid-session: a reader shrugs
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
        await self._notify()

    async def _session_loop(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if time.monotonic() < self._refuse_until:
            self.refused += 1
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._session is not None:  # the old client may be closing: give it a moment
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await self._session.closed.wait()
        session = _Session(writer)
        now_us = int(time.time() * 1e6)
        if self._session is not None:
            self.refused += 1
            refusal = ReaderEventNotification(
                timestamp_us=now_us,
                connection_attempt=ConnectionAttemptStatus.FAILED_CLIENT_INITIATED_EXISTS,
                message_id=self._id(),
            )
            await self._send(session, refusal)
            return
        self._session = session
        self.connections += 1
        await self._notify()
        try:
            accepted = ReaderEventNotification(
                timestamp_us=now_us,
                connection_attempt=ConnectionAttemptStatus.SUCCESS,
                message_id=self._id(),
            )
            await self._send(session, accepted)
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(self._keepalives(session), name="llrp-sim-keepalive"),
                    tg.create_task(self._reports(session), name="llrp-sim-reports"),
                ]
                try:
                    await self._requests(session, reader)
                finally:
                    for task in tasks:
                        task.cancel()
        finally:
            session.closed.set()
            self._session = None
            for rospec in self.rospecs.values():  # what a reader does on disconnect
                if rospec.state is RoSpecState.ACTIVE:
                    rospec.state = RoSpecState.INACTIVE

    async def _requests(self, session: _Session, reader: asyncio.StreamReader) -> None:
        decoder = LlrpDecoder()
        while not session.closed.is_set():
            read = asyncio.ensure_future(reader.read(65536))
            closed = asyncio.ensure_future(session.closed.wait())
            done, _ = await asyncio.wait({read, closed}, return_when=asyncio.FIRST_COMPLETED)
            closed.cancel()
            if read not in done:
                read.cancel()
                return
            data = read.result()
            if not data:
                return
            for item in decoder.feed(data):
                self.received.append(item)
                await self._notify()
                if isinstance(item, Malformed):
                    self.violations.append(f"malformed from client: {item.reason}")
                    if decoder.broken:
                        return
                    continue
                if not await self._answer(session, item):
                    return

    async def _answer(self, session: _Session, message: Message) -> bool:
        """Handle one client message; False ends the session."""
        if isinstance(message, KeepaliveAck):
            if message.message_id in session.outstanding:
                session.outstanding.discard(message.message_id)
                self.keepalive_acks += 1
            else:
                self.violations.append(f"KEEPALIVE_ACK for unknown id {message.message_id}")
            await self._notify()
            return True
        if self.answer_delay_s:
            await asyncio.sleep(self.answer_delay_s)
        mid = message.message_id
        reply: Message
        match message:
            case GetReaderCapabilities():
                general = GeneralDeviceCapabilities(
                    max_antennas=max(self.antennas),
                    has_utc_clock=True,
                    manufacturer=0,
                    model=1,
                    firmware="warelink-sim 1",
                )
                reply = GetReaderCapabilitiesResponse(general=general, message_id=mid)
            case AddRoSpec(rospec=spec):
                reply = AddRoSpecResponse(status=self._add(spec), message_id=mid)
            case DeleteRoSpec(rospec_id=rid):
                reply = DeleteRoSpecResponse(status=self._delete(rid), message_id=mid)
            case EnableRoSpec(rospec_id=rid):
                reply = EnableRoSpecResponse(status=self._enable(rid), message_id=mid)
            case StartRoSpec(rospec_id=rid):
                reply = StartRoSpecResponse(status=self._start(rid), message_id=mid)
            case StopRoSpec(rospec_id=rid):
                status = self._set(rid, RoSpecState.ACTIVE, RoSpecState.INACTIVE)
                reply = StopRoSpecResponse(status=status, message_id=mid)
            case DisableRoSpec(rospec_id=rid):
                status = self._set(rid, None, RoSpecState.DISABLED)
                reply = DisableRoSpecResponse(status=status, message_id=mid)
            case CloseConnection():
                await self._send(session, CloseConnectionResponse(message_id=mid))
                return False
            case _:
                status = LlrpStatus(StatusCode.M_UNSUPPORTED_MESSAGE, "not supported")
                reply = ErrorMessage(status=status, message_id=mid)
        await self._send(session, reply)
        await self._notify()
        return True

    # ----------------------------------------------------------- ROSpec model

    def _add(self, spec: RoSpec) -> LlrpStatus:
        if spec.rospec_id == 0 or spec.rospec_id in self.rospecs:
            return LlrpStatus(StatusCode.A_INVALID, f"ROSpec id {spec.rospec_id} not usable")
        if spec.state is not RoSpecState.DISABLED:
            return LlrpStatus(StatusCode.P_FIELD_ERROR, "a new ROSpec must be disabled")
        bad = [a for a in spec.antenna_ids if a != 0 and a not in self.antennas]
        if bad:
            return LlrpStatus(StatusCode.P_FIELD_ERROR, f"no antenna {bad[0]}")
        self.rospecs[spec.rospec_id] = _Rospec(spec, RoSpecState.DISABLED)
        return LlrpStatus()

    def _targets(self, rospec_id: int) -> list[_Rospec] | None:
        if rospec_id == 0:
            return list(self.rospecs.values())
        found = self.rospecs.get(rospec_id)
        return None if found is None else [found]

    def _delete(self, rospec_id: int) -> LlrpStatus:
        if self._targets(rospec_id) is None:
            return LlrpStatus(StatusCode.A_INVALID, f"no ROSpec {rospec_id}")
        if rospec_id == 0:
            self.rospecs.clear()
        else:
            del self.rospecs[rospec_id]
        return LlrpStatus()

    def _enable(self, rospec_id: int) -> LlrpStatus:
        targets = self._targets(rospec_id)
        if targets is None:
            return LlrpStatus(StatusCode.A_INVALID, f"no ROSpec {rospec_id}")
        for rospec in targets:
            if rospec.state is RoSpecState.DISABLED:
                immediate = rospec.spec.start_trigger is StartTrigger.IMMEDIATE
                rospec.state = RoSpecState.ACTIVE if immediate else RoSpecState.INACTIVE
        return LlrpStatus()

    def _start(self, rospec_id: int) -> LlrpStatus:
        rospec = self.rospecs.get(rospec_id)
        if rospec is None or rospec.state is not RoSpecState.INACTIVE:
            state = "missing" if rospec is None else rospec.state.name.lower()
            return LlrpStatus(StatusCode.A_INVALID, f"ROSpec {rospec_id} is {state}")
        rospec.state = RoSpecState.ACTIVE
        return LlrpStatus()

    def _set(self, rospec_id: int, need: RoSpecState | None, to: RoSpecState) -> LlrpStatus:
        targets = self._targets(rospec_id)
        if targets is None:
            return LlrpStatus(StatusCode.A_INVALID, f"no ROSpec {rospec_id}")
        for rospec in targets:
            if need is None or rospec.state is need:
                rospec.state = to
        return LlrpStatus()

    # ------------------------------------------------------------ background

    async def _keepalives(self, session: _Session) -> None:
        while True:
            await asyncio.sleep(self.keepalive_interval_s)
            if len(session.outstanding) >= self.keepalive_misses:
                self.violations.append(
                    f"client left {len(session.outstanding)} keepalives unanswered"
                )
                self._log.warning("client stopped answering keepalives: closing")
                session.writer.close()
                session.closed.set()
                await self._notify()
                return
            message_id = self._id()
            session.outstanding.add(message_id)
            self.keepalives_sent += 1
            await self._send(session, Keepalive(message_id=message_id))

    async def _reports(self, session: _Session) -> None:
        while True:
            await asyncio.sleep(self.report_interval_s)
            active = [r.spec for r in self.rospecs.values() if r.state is RoSpecState.ACTIVE]
            if not active:
                continue
            spec = active[0]
            now_us = int(time.time() * 1e6)
            for epc, seen in list(self.field.items()):
                for antenna, mean in seen.items():
                    if 0 not in spec.antenna_ids and antenna not in spec.antenna_ids:
                        continue
                    tag = self._tag_report(spec, epc, antenna, mean, now_us)
                    await self._send(session, RoAccessReport(tags=(tag,), message_id=self._id()))
                    self.reports_sent += 1
            await self._notify()

    def _tag_report(
        self, spec: RoSpec, epc: str, antenna: int, mean: float, now_us: int
    ) -> TagReport:
        content = spec.report_content
        rssi = mean + self.rng.gauss(0.0, self.rssi_noise_db)
        interval_us = int(self.report_interval_s * 1e6)
        return TagReport(
            epc=bytes.fromhex(epc),
            antenna_id=antenna if TagReportContent.ANTENNA_ID in content else None,
            peak_rssi=(
                max(-128, min(127, math.floor(rssi)))
                if TagReportContent.PEAK_RSSI in content
                else None
            ),
            first_seen_utc_us=(
                now_us - interval_us if TagReportContent.FIRST_SEEN_TIMESTAMP in content else None
            ),
            last_seen_utc_us=now_us if TagReportContent.LAST_SEEN_TIMESTAMP in content else None,
            seen_count=(
                self.rng.randint(1, 6) if TagReportContent.TAG_SEEN_COUNT in content else None
            ),
            rospec_id=spec.rospec_id if TagReportContent.ROSPEC_ID in content else None,
        )


__all__ = [
    "COMPANY_PREFIX_LENGTH",
    "SimulatedLlrpReader",
    "make_sgtin_epc",
    "make_sscc_epc",
]
