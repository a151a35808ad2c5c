"""A simulated Zebra label printer on raw TCP (port 9100 on a real one; port 0 here).

It does what a printer does with a host's byte stream: tilde commands act on receipt
(``~HS`` answers the three host status strings, ``~PP``/``~PS`` pause and resume,
``~JA`` cancels the formats waiting), formats (``^XA`` … ``^XZ``) go into the receive
buffer and print one after another while nothing stops the printer. It prints what it
gets: it never deduplicates (that is the driver's job), so tests can see a doubled job.

Faults are plain attributes, switched by the test or the scenario: ``paper_out``,
``ribbon_out``, ``head_open``, ``paused``, ``buffer_full`` (formats received meanwhile are
lost), ``answer_delay_s`` (slow answers), ``drop_connections()`` and
``drop_after_next_format`` (the link dies right after a format arrived, before the host
hears anything). Like newer (Link-OS) firmware, the printer does not answer ``~HS``
while a fault of ``quiet_faults`` is on (media out, ribbon out, head open by default);
pass ``quiet_faults=frozenset()`` for an older printer that answers with the flags set.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from types import TracebackType
from typing import Literal, Self

import structlog

from warelink.protocol.zpl import (
    HostStatus,
    LabelContent,
    Malformed,
    ZplControl,
    ZplDecodeError,
    ZplFormat,
    ZplStreamDecoder,
    encode_host_status,
    read_label,
)

Fault = Literal["paper_out", "ribbon_out", "head_open", "paused", "buffer_full"]
NEWER_FIRMWARE_QUIET: frozenset[Fault] = frozenset({"paper_out", "ribbon_out", "head_open"})

log = structlog.get_logger(__name__)


class PrintedLabel:
    """One format the printer printed (all its copies), read back for inspection."""

    def __init__(self, data: bytes, content: LabelContent | None, at: float) -> None:
        self.data = data
        self.content = content
        self.at = at

    @property
    def job_key(self) -> str | None:
        return None if self.content is None else self.content.job_key

    @property
    def sscc(self) -> str | None:
        return None if self.content is None else self.content.sscc

    def __repr__(self) -> str:
        return f"PrintedLabel(job_key={self.job_key!r}, sscc={self.sscc!r})"


class SimulatedZplPrinter:
    """A ZPL printer serving raw TCP on ``host``:``port`` (0: a free port, see ``.port``).

    ``async with SimulatedZplPrinter(rng) as printer:`` listens once entered; leaving
    closes the server and every connection. ``print_time_s`` is how long one label
    takes; ``keep_last`` bounds ``printed``.
    """

    def __init__(
        self,
        rng: random.Random,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        print_time_s: float = 0.0,
        keep_last: int = 100,
        buffer_capacity: int = 50,
        quiet_faults: frozenset[Fault] = NEWER_FIRMWARE_QUIET,
    ) -> None:
        self.rng = rng
        self.host = host
        self.port = port
        self.print_time_s = print_time_s
        self.buffer_capacity = buffer_capacity
        self.quiet_faults = quiet_faults
        # faults and misbehaviour, switched from outside
        self.paper_out = False
        self.ribbon_out = False
        self.head_open = False
        self.paused = False
        self.buffer_full = False
        self.answer_delay_s = 0.0
        self.drop_after_next_format = False
        # what happened
        self.printed: deque[PrintedLabel] = deque(maxlen=keep_last)
        self.print_count = 0  # labels, copies included
        self.formats_received = 0
        self.formats_lost = 0
        self.status_requests = 0
        self.status_answers = 0
        self.malformed: list[Malformed] = []
        self.connections = 0
        self._queue: deque[ZplFormat] = deque()
        self._wake = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._stack: contextlib.AsyncExitStack | None = None

    # ---------------------------------------------------------------- state

    def faults(self) -> set[Fault]:
        flags: dict[Fault, bool] = {
            "paper_out": self.paper_out,
            "ribbon_out": self.ribbon_out,
            "head_open": self.head_open,
            "paused": self.paused,
            "buffer_full": self.buffer_full,
        }
        return {name for name, on in flags.items() if on}

    def set_fault(self, fault: Fault, on: bool = True) -> None:
        setattr(self, fault, on)
        self._wake.set()  # a cleared fault lets the buffer print

    def clear_faults(self) -> None:
        for fault in list(self.faults()):
            self.set_fault(fault, False)

    @property
    def formats_in_buffer(self) -> int:
        return len(self._queue)

    def host_status(self) -> HostStatus:
        remaining = 0
        for fmt in self._queue:
            remaining += _copies(fmt.data)
        return HostStatus(
            communication_settings=30,
            paper_out=self.paper_out,
            paused=self.paused,
            label_length_dots=1218,
            formats_in_buffer=len(self._queue),
            buffer_full=self.buffer_full,
            head_up=self.head_open,
            ribbon_out=self.ribbon_out,
            thermal_transfer=True,
            print_mode="2",
            labels_remaining=remaining,
            password=1234,
            static_ram_installed=False,
        )

    def drop_connections(self) -> None:
        """Abort every client connection now (a power blip, a cable pulled)."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    # ------------------------------------------------------------- printing

    def _can_print(self) -> bool:
        return not (self.paper_out or self.ribbon_out or self.head_open or self.paused)

    async def _print_engine(self) -> None:
        while True:
            while self._queue and self._can_print():
                fmt = self._queue[0]
                if self.print_time_s:
                    await asyncio.sleep(self.print_time_s * _copies(fmt.data))
                    if not self._can_print():
                        continue  # stopped mid-label: it stays in the buffer
                self._queue.popleft()
                self._record(fmt)
            self._wake.clear()
            await self._wake.wait()

    def _record(self, fmt: ZplFormat) -> None:
        try:
            content: LabelContent | None = read_label(fmt.data)
        except ZplDecodeError:
            content = None
        self.printed.append(PrintedLabel(fmt.data, content, time.time()))
        self.print_count += content.copies if content is not None else 1

    # --------------------------------------------------------------- the link

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        self._writers.add(writer)
        decoder = ZplStreamDecoder()
        try:
            while data := await reader.read(4096):
                for item in decoder.feed(data):
                    if isinstance(item, ZplFormat):
                        self._receive(item)
                        if self.drop_after_next_format:
                            self.drop_after_next_format = False
                            writer.transport.abort()
                            return
                    elif isinstance(item, ZplControl):
                        await self._control(item, writer)
                    else:
                        self.malformed.append(item)
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    def _receive(self, fmt: ZplFormat) -> None:
        self.formats_received += 1
        if self.buffer_full or len(self._queue) >= self.buffer_capacity:
            self.formats_lost += 1
            return
        self._queue.append(fmt)
        self._wake.set()

    async def _control(self, control: ZplControl, writer: asyncio.StreamWriter) -> None:
        match control.command:
            case "HS":
                self.status_requests += 1
                if self.faults() & self.quiet_faults:
                    return  # newer firmware: no answer at all while the fault lasts
                if self.answer_delay_s:
                    delay = self.answer_delay_s * self.rng.uniform(0.8, 1.2)
                    await asyncio.sleep(delay)
                writer.write(encode_host_status(self.host_status()))
                await writer.drain()
                self.status_answers += 1
            case "PP":
                self.set_fault("paused", True)
            case "PS":
                self.set_fault("paused", False)
            case "JA":
                self._queue.clear()
            case _:
                pass  # other tilde commands: not simulated

    # ------------------------------------------------------------- lifetime

    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as stack:
            self._server = await asyncio.start_server(self._serve_client, self.host, self.port)
            stack.push_async_callback(self._close_server)
            self.port = self._server.sockets[0].getsockname()[1]
            tg = await stack.enter_async_context(asyncio.TaskGroup())
            engine = tg.create_task(self._print_engine(), name=f"sim-zpl-engine :{self.port}")
            stack.callback(engine.cancel)
            self._stack = stack.pop_all()
        log.debug("sim.zpl.listening", port=self.port)
        return self

    async def _close_server(self) -> None:
        assert self._server is not None
        self._server.close()
        self.drop_connections()
        await self._server.wait_closed()
        self._server = None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._stack is not None
        stack, self._stack = self._stack, None
        await stack.__aexit__(exc_type, exc, tb)

    async def run(self) -> None:
        """Serve until cancelled (the scenario's way)."""
        async with self:
            await asyncio.Event().wait()

    async def fault_loop(
        self, *, mean_interval_s: float = 60.0, mean_duration_s: float = 5.0
    ) -> None:
        """Demo hook: now and then (from ``rng``) a fault comes on for a while, then clears."""
        faults: list[Fault] = ["paper_out", "ribbon_out", "head_open", "paused"]
        while True:
            await asyncio.sleep(self.rng.expovariate(1.0 / mean_interval_s))
            fault = self.rng.choice(faults)
            self.set_fault(fault, True)
            await asyncio.sleep(self.rng.expovariate(1.0 / mean_duration_s))
            self.set_fault(fault, False)


def _copies(data: bytes) -> int:
    at = data.upper().rfind(b"^PQ")
    if at < 0:
        return 1
    digits = bytearray()
    for byte in data[at + 3 :]:
        if not 0x30 <= byte <= 0x39:
            break
        digits.append(byte)
    return max(1, int(digits)) if digits else 1
