"""Driver for a fixed RFID reader speaking LLRP 1.0.1 over TCP (5084), e.g. a dock portal.

The driver sets the reader up (``warelink.protocol.llrp.LlrpClient``: capabilities,
delete all ROSpecs, add ours, enable, start), answers its keepalives, decodes each tag's
EPC (SGTIN-96, SSCC-96) and smooths the raw reads into zone transitions
(``warelink.protocol.rfid_smoothing``). It emits:

- raw reads as TELEMETRY ``TagRead``, at most one per tag per ``tag_read_interval_s``
  (its ``count`` sums the reads held back meanwhile);
- zone transitions (Arrived / Moved / Departed) as TELEMETRY ``ZoneTransition``;
- for a portal, business facts as LEDGER events: an SGTIN tag that *arrives* in the
  receive zone is a ``Receipt`` of one unit at the portal's location, one that *departs*
  from the ship zone is a ``Shipment`` of one unit; both carry the serial.

SSCC (pallet) tags make no ledger event: the tag names the logistic unit, not what it
holds, so a receipt would have no GTIN; they travel as ``TagRead``/``ZoneTransition``
with ``decoded = {"scheme": "sscc-96", "sscc": …}`` for the hub to match against an
advance shipping notice or the pallet label scan. Tags of other schemes are the same,
with only ``scheme`` decoded.

Departures are timed on a clock that stops while the reader is offline, so an outage
never turns every tag in the field into a shipment. The reader's ONLINE/OFFLINE status is
emitted on changes only: ONLINE once inventory runs, OFFLINE (one warning, with the
reason: refused, lost, malformed data, error status) when a session ends or cannot start.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket
from collections.abc import Sequence
from typing import Literal, Self

import structlog
from pydantic import Field, model_validator

from warelink.edge.device_config import StrictModel, TcpDevice
from warelink.edge.drivers.base import Backoff, DriverSpec, Emit, Presence
from warelink.protocol.epc import EpcDecodeError, decode_epc
from warelink.protocol.llrp import (
    Action,
    Capabilities,
    Connected,
    Deliver,
    Disconnected,
    Fail,
    LlrpClient,
    LlrpDecoder,
    Ready,
    RoAccessReport,
    RoSpec,
    Send,
    TagReport,
)
from warelink.protocol.messages import (
    Receipt,
    Shipment,
    TagRead,
    TrafficClass,
    ZoneChange,
    ZoneTransition,
)
from warelink.protocol.rfid_smoothing import ZoneSmoother

READ_SIZE = 65536


class PortalConfig(StrictModel):
    """A dock portal: arrivals in ``receive_zone`` are receipts into ``location``,
    departures from ``ship_zone`` are shipments out of it."""

    receive_zone: str
    ship_zone: str
    location: str


class LlrpReaderConfig(TcpDevice):
    """A fixed RFID reader speaking LLRP; each antenna watches a zone."""

    kind: Literal["llrp_reader"]
    port: int = Field(5084, ge=1, le=65535)
    antennas: dict[int, str] = Field(min_length=1, description="Antenna id → zone name.")
    rospec_id: int = Field(1, ge=1, le=0xFFFFFFFF)
    min_reads: int = Field(2, ge=1, le=50, description="Reads in a new zone before a move.")
    rssi_offset_db: float = Field(3.0, ge=0, description="A move needs this much more RSSI.")
    departed_after_s: float = Field(5.0, gt=0, description="No read this long: departed.")
    tag_read_interval_s: float = Field(1.0, ge=0, description="At most one TagRead per tag.")
    connect_timeout_s: float = Field(5.0, gt=0)
    setup_timeout_s: float = Field(10.0, gt=0, description="Connect to inventory running.")
    idle_timeout_s: float | None = Field(
        None,
        gt=0,
        description="Nothing from the reader this long: reconnect. Set it only when the "
        "reader sends KEEPALIVE (configured on the reader); None relies on TCP keepalive.",
    )
    portal: PortalConfig | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        bad = [a for a in self.antennas if not 1 <= a <= 0xFFFF]
        if bad:
            raise ValueError(f"antenna ids are 1–65535, not {bad[0]}")
        if self.portal is not None:
            zones = set(self.antennas.values())
            for name in (self.portal.receive_zone, self.portal.ship_zone):
                if name not in zones:
                    raise ValueError(f"portal zone {name!r} is not the zone of any antenna")
        return self


class _SessionEnded(Exception):
    """A session ended; the message says why (for the OFFLINE detail)."""


class LlrpReaderDriver:
    """Talks to one LLRP reader until cancelled, reconnecting with backoff."""

    def __init__(
        self,
        config: LlrpReaderConfig,
        emit: Emit,
        *,
        backoff: Backoff | None = None,
        tick_interval_s: float | None = None,
    ) -> None:
        self.config = config
        self.device_id = config.id
        self._emit = emit
        self._backoff = backoff or Backoff()
        self._tick_interval_s = tick_interval_s or min(1.0, config.departed_after_s / 4)
        self._log = structlog.get_logger(__name__).bind(
            device=config.id, reader=f"{config.host}:{config.port}"
        )
        self._presence = Presence(config.id, emit, self._log, "reader")
        self._smoother = ZoneSmoother(
            config.antennas,
            min_reads=config.min_reads,
            rssi_offset_db=config.rssi_offset_db,
            departed_after_s=config.departed_after_s,
            window=max(5, config.min_reads),
        )
        self._rospec = RoSpec(
            rospec_id=config.rospec_id, antenna_ids=tuple(sorted(config.antennas))
        )
        self._last_tag_read: dict[str, float] = {}  # EPC → smoothing time of its last TagRead
        self._held_back: dict[str, int] = {}  # EPC → reads not sent since
        self._paused_total = 0.0
        self._paused_since: float | None = None
        self._running = False

    # ------------------------------------------------------------------ clock

    def _now(self) -> float:
        """Smoothing time: the loop's clock minus every offline stretch."""
        loop_now = asyncio.get_running_loop().time()
        if self._paused_since is not None:
            return self._paused_since - self._paused_total
        return loop_now - self._paused_total

    def _resume_clock(self) -> None:
        if self._paused_since is not None:
            self._paused_total += asyncio.get_running_loop().time() - self._paused_since
            self._paused_since = None

    def _pause_clock(self) -> None:
        if self._paused_since is None:
            self._paused_since = asyncio.get_running_loop().time()

    # -------------------------------------------------------------- sessions

    async def run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.config.connect_timeout_s):
                    reader, writer = await asyncio.open_connection(
                        self.config.host, self.config.port
                    )
            except (OSError, TimeoutError) as exc:
                await self._presence.down(f"cannot connect: {exc!r}")
                await asyncio.sleep(self._backoff.next_delay())
                continue
            detail = "connection closed by the reader"
            try:
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                await self._session(reader, writer)
            except _SessionEnded as exc:
                detail = str(exc)
            except (OSError, ConnectionError) as exc:
                detail = f"connection lost: {exc!r}"
            except TimeoutError:
                detail = "reader silent" if self._running else "setup timed out"
            finally:
                self._running = False
                self._pause_clock()
                writer.close()
                with contextlib.suppress(OSError, ConnectionError):
                    await writer.wait_closed()
            await self._presence.down(detail)
            await asyncio.sleep(self._backoff.next_delay())

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = LlrpClient(self._rospec)
        decoder = LlrpDecoder()
        try:
            async with asyncio.TaskGroup() as tg:
                ticker = tg.create_task(self._ticks(), name=f"llrp-ticks-{self.device_id}")
                try:
                    await self._act(client, client.handle(Connected()), writer)
                    await self._read(client, decoder, reader, writer)
                finally:
                    ticker.cancel()
        except* _SessionEnded as group:
            raise group.exceptions[0] from None
        except* (OSError, ConnectionError) as group:
            raise group.exceptions[0] from None
        except* TimeoutError as group:
            raise group.exceptions[0] from None

    async def _read(
        self,
        client: LlrpClient,
        decoder: LlrpDecoder,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        loop = asyncio.get_running_loop()
        setup_deadline = loop.time() + self.config.setup_timeout_s
        while True:
            if self._running:
                timeout = self.config.idle_timeout_s
                deadline = None if timeout is None else loop.time() + timeout
            else:
                deadline = setup_deadline
            async with asyncio.timeout_at(deadline):
                data = await reader.read(READ_SIZE)
            if not data:
                client.handle(Disconnected())
                raise _SessionEnded("connection closed by the reader")
            for item in decoder.feed(data):
                await self._act(client, client.handle(item), writer)
            await writer.drain()

    async def _act(
        self, client: LlrpClient, actions: Sequence[Action], writer: asyncio.StreamWriter
    ) -> None:
        for action in actions:
            match action:
                case Send(data=data):
                    writer.write(data)
                case Ready():
                    self._running = True
                    self._resume_clock()
                    self._backoff.reset()
                    await self._presence.up()
                case Deliver(report=report):
                    await self._on_report(report)
                case Capabilities(general=general) if general is not None:
                    self._log.debug(
                        "reader capabilities",
                        antennas=general.max_antennas,
                        firmware=general.firmware,
                    )
                case Fail(reason=reason):
                    raise _SessionEnded(reason)

    async def _ticks(self) -> None:
        while True:
            await asyncio.sleep(self._tick_interval_s)
            if self._running:
                for transition in self._smoother.tick(self._now()):
                    await self._on_transition(transition)

    # ------------------------------------------------------------------ reads

    async def _on_report(self, report: RoAccessReport) -> None:
        for tag in report.tags:
            await self._on_tag(tag)

    async def _on_tag(self, tag: TagReport) -> None:
        epc = tag.epc_hex
        try:
            decoded = decode_epc(tag.epc).fields()
        except EpcDecodeError:
            decoded = {}
        antenna = tag.antenna_id if tag.antenna_id is not None else 0
        rssi = None if tag.peak_rssi is None else float(tag.peak_rssi)
        now = self._now()
        seen = tag.seen_count or 1
        last = self._last_tag_read.get(epc)
        if last is not None and now - last < self.config.tag_read_interval_s:
            self._held_back[epc] = self._held_back.get(epc, 0) + seen
        else:
            self._last_tag_read[epc] = now
            count = self._held_back.pop(epc, 0) + seen
            occurred_at = None
            if tag.last_seen_utc_us is not None:
                occurred_at = dt.datetime.fromtimestamp(tag.last_seen_utc_us / 1e6, dt.UTC)
            body = TagRead(
                epc=epc,
                antenna=antenna,
                rssi=rssi,
                count=count,
                zone=self._smoother.zone_of(antenna),
                decoded=decoded,
            )
            await self._emit(self.device_id, TrafficClass.TELEMETRY, body, occurred_at)
        for transition in self._smoother.read(epc, antenna, rssi, now, decoded):
            await self._on_transition(transition)

    async def _on_transition(self, transition: ZoneTransition) -> None:
        await self._emit(self.device_id, TrafficClass.TELEMETRY, transition)
        if transition.change is ZoneChange.DEPARTED:
            self._last_tag_read.pop(transition.epc, None)
            self._held_back.pop(transition.epc, None)
        portal = self.config.portal
        if portal is None or transition.decoded.get("scheme") != "sgtin-96":
            return
        gtin, serial = transition.decoded["gtin"], transition.decoded["serial"]
        if transition.change is ZoneChange.ARRIVED and transition.zone == portal.receive_zone:
            receipt = Receipt(location=portal.location, gtin=gtin, quantity=1, serial=serial)
            await self._emit(self.device_id, TrafficClass.LEDGER, receipt)
        elif transition.change is ZoneChange.DEPARTED and transition.zone == portal.ship_zone:
            shipment = Shipment(location=portal.location, gtin=gtin, quantity=1, serial=serial)
            await self._emit(self.device_id, TrafficClass.LEDGER, shipment)


# ------------------------------------------------------------- registry entry

SPEC = DriverSpec(
    kind="llrp_reader",
    config=LlrpReaderConfig,
    build=lambda config, context: LlrpReaderDriver(config, context.emit),
    example='host = "10.0.3.30"\nantennas = { 1 = "DOCK-1-IN" }',
)

__all__ = ["SPEC", "LlrpReaderConfig", "LlrpReaderDriver", "PortalConfig"]
