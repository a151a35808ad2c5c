"""Driver for a serial line barcode scanner (GS1-128, GS1 DataMatrix/QR, plain codes).

A scanner on a receiving dock (``purpose = "receive"``) turns each GS1 label that names
a trade item into a ledger ``Receipt`` at its location; any other scanner, and any other
scan, becomes a ``Scan`` event. Line noise never stops the driver: a burst of bad lines
is logged once, with a count, when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib

import serial
import serial_asyncio
import structlog

from warelink.edge.device_config import LineScannerConfig
from warelink.edge.drivers.base import Backoff, DriverSpec, Emit, Presence
from warelink.edge.drivers.scan_events import scan_to_event
from warelink.protocol.gs1 import Gs1Scan, LineDecoder, Malformed
from warelink.protocol.messages import (
    Scan,
    TrafficClass,
)

READ_SIZE = 4096


class LineScannerDriver:
    """Reads scans from one serial scanner until cancelled, reconnecting with backoff.

    ``garbage_quiet_s``: a burst of bad lines ends at the next good scan, at a disconnect,
    or after this long without data; its one warning is logged then.
    """

    def __init__(
        self,
        config: LineScannerConfig,
        emit: Emit,
        *,
        backoff: Backoff | None = None,
        garbage_quiet_s: float = 1.0,
    ) -> None:
        if config.purpose == "receive" and not config.location:
            raise ValueError(f"line scanner {config.id!r}: purpose 'receive' needs a location")
        self.config = config
        self.device_id = config.id
        self._emit = emit
        self._backoff = backoff or Backoff()
        self._garbage_quiet_s = garbage_quiet_s
        self._log = structlog.get_logger(__name__).bind(device=config.id)
        self._presence = Presence(config.id, emit, self._log, "scanner")
        self._bad_lines = 0
        self._bad_sample: tuple[str, bytes] | None = None

    async def run(self) -> None:
        while True:
            try:
                reader, writer = await serial_asyncio.open_serial_connection(
                    url=self.config.port, baudrate=self.config.baudrate
                )
            except (serial.SerialException, OSError) as exc:
                await self._presence.down(f"cannot open port: {exc}", port=self.config.port)
                await asyncio.sleep(self._backoff.next_delay())
                continue
            detail = "port closed"
            try:
                self._backoff.reset()
                await self._presence.up(port=self.config.port)
                await self._read(reader)
            except (serial.SerialException, OSError) as exc:
                detail = f"port lost: {exc}"
            finally:
                self._flush_bad_lines()
                writer.close()
                with contextlib.suppress(serial.SerialException, OSError):
                    await writer.wait_closed()
            await self._presence.down(detail, port=self.config.port)
            await asyncio.sleep(self._backoff.next_delay())

    async def _read(self, reader: asyncio.StreamReader) -> None:
        decoder = LineDecoder()
        while True:
            if self._bad_lines:
                try:
                    async with asyncio.timeout(self._garbage_quiet_s):
                        data = await reader.read(READ_SIZE)
                except TimeoutError:
                    self._flush_bad_lines()
                    continue
            else:
                data = await reader.read(READ_SIZE)
            if not data:
                return
            for item in decoder.feed(data):
                await self._handle(item)

    async def _handle(self, item: Gs1Scan | Malformed) -> None:
        if isinstance(item, Malformed):
            self._bad_line(item.reason, item.data)
            return
        receiving = self.config.purpose == "receive"
        if receiving and not item.is_gs1:
            self._bad_line("not a GS1 scan", item.raw.encode())
        else:
            self._flush_bad_lines()
        event = scan_to_event(item, purpose=self.config.purpose, location=self.config.location)
        if receiving and isinstance(event, Scan) and (item.gtin or item.content_gtin):
            self._log.warning("receipt scan with count 0, sent as a plain scan", raw=item.raw)
        await self._emit(self.device_id, TrafficClass.LEDGER, event)

    def _bad_line(self, reason: str, data: bytes) -> None:
        if not self._bad_lines:
            self._bad_sample = (reason, data[:64])
        self._bad_lines += 1

    def _flush_bad_lines(self) -> None:
        if not self._bad_lines:
            return
        reason, sample = self._bad_sample or ("", b"")
        self._log.warning(
            "scanner sent lines that are not usable scans",
            count=self._bad_lines,
            first_reason=reason,
            first_line=sample,
        )
        self._bad_lines = 0
        self._bad_sample = None


# ------------------------------------------------------------- registry entry

SPEC = DriverSpec(
    kind="line_scanner",
    config=LineScannerConfig,
    build=lambda config, context: LineScannerDriver(config, context.emit),
    example='port = "/dev/ttyUSB1"',
)
