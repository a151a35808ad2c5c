"""The simulated ZPL printer over a real TCP socket, as a host would talk to it."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress

import pytest

from warelink.protocol.gs1 import check_digit
from warelink.protocol.zpl import (
    HostStatus,
    HostStatusDecoder,
    sscc_pallet_label,
)
from warelink.sim.zpl_printer import SimulatedZplPrinter


def sscc(serial: int) -> str:
    body = f"3761234500{serial:07d}"
    return body + str(check_digit(body))


def job(serial: int, key: str) -> bytes:
    return sscc_pallet_label(
        sscc(serial), "09506000134352", 10, "LOT1", dt.date(2027, 1, 31), "DC", job_key=key
    )


class Host:
    """A raw TCP client: writes bytes, reads host status answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = HostStatusDecoder()
        self.answers: list[HostStatus] = []

    async def send(self, data: bytes, rng: random.Random | None = None) -> None:
        if rng is None:
            self.writer.write(data)
            await self.writer.drain()
            return
        pos = 0
        while pos < len(data):  # arbitrary chunks, each its own TCP segment
            size = rng.randint(1, 50)
            self.writer.write(data[pos : pos + size])
            await self.writer.drain()
            await asyncio.sleep(0)
            pos += size

    async def status(self, timeout: float = 2.0) -> HostStatus:
        async with asyncio.timeout(timeout):
            while not self.answers:
                data = await self.reader.read(4096)
                if not data:
                    raise ConnectionError("closed")
                for item in self.decoder.feed(data):
                    assert isinstance(item, HostStatus), item
                    self.answers.append(item)
        return self.answers.pop(0)


@asynccontextmanager
async def host(printer: SimulatedZplPrinter) -> AsyncIterator[Host]:
    reader, writer = await asyncio.open_connection("127.0.0.1", printer.port)
    try:
        yield Host(reader, writer)
    finally:
        writer.close()
        with suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def eventually(check: Callable[[], bool], within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within} s")
        await asyncio.sleep(0.01)


async def test_formats_and_status_in_one_stream_any_chunking() -> None:
    rng = random.Random(7)
    async with SimulatedZplPrinter(rng) as printer, host(printer) as client:
        stream = job(1, "k1") + b"~HS" + job(2, "k2") + job(2, "k2") + b"\r\n~HS"
        await client.send(stream, rng)
        first, second = await client.status(), await client.status()
        assert first.ready and second.ready
        await eventually(lambda: printer.print_count == 3)
        # It prints what it gets, duplicates included: deduplication is the host's job.
        assert [(p.sscc, p.job_key) for p in printer.printed] == [
            (sscc(1), "k1"),
            (sscc(2), "k2"),
            (sscc(2), "k2"),
        ]
        assert printer.printed[0].data == job(1, "k1").rstrip(b"\n")
        assert printer.malformed == []


async def test_paper_out_holds_the_buffer_and_older_firmware_reports_it() -> None:
    async with (
        SimulatedZplPrinter(random.Random(1), quiet_faults=frozenset()) as printer,
        host(printer) as client,
    ):
        printer.set_fault("paper_out")
        await client.send(job(3, "k3") + b"~HS")
        status = await client.status()
        assert status.paper_out and status.faults == ["paper_out"]
        assert (status.formats_in_buffer, status.labels_remaining) == (1, 1)
        assert printer.print_count == 0
        printer.set_fault("paper_out", False)
        await eventually(lambda: printer.print_count == 1)
        await client.send(b"~HS")
        assert (await client.status()).ready


async def test_newer_firmware_is_silent_while_the_head_is_open() -> None:
    async with SimulatedZplPrinter(random.Random(2)) as printer, host(printer) as client:
        printer.set_fault("head_open")
        await client.send(b"~HS")
        with pytest.raises(TimeoutError):
            await client.status(timeout=0.3)
        assert printer.status_requests == 1 and printer.status_answers == 0
        printer.clear_faults()
        await client.send(b"~HS")
        assert (await client.status()).ready


async def test_pause_by_command_and_buffer_full_loses_formats() -> None:
    async with SimulatedZplPrinter(random.Random(3)) as printer, host(printer) as client:
        await client.send(b"~PP" + job(4, "k4") + b"~HS")
        status = await client.status()
        assert status.paused and status.formats_in_buffer == 1
        await client.send(b"~PS~HS")
        assert not (await client.status()).paused
        await eventually(lambda: printer.print_count == 1)
        printer.set_fault("buffer_full")
        await client.send(job(5, "k5") + b"~HS")
        assert (await client.status()).faults == ["buffer_full"]
        assert printer.formats_lost == 1 and printer.print_count == 1


async def test_slow_answers_and_dropped_connections() -> None:
    async with SimulatedZplPrinter(random.Random(4)) as printer:
        async with host(printer) as client:
            printer.answer_delay_s = 0.2
            started = time.monotonic()
            await client.send(b"~HS")
            await client.status()
            assert time.monotonic() - started >= 0.15
            printer.answer_delay_s = 0.0

            printer.drop_after_next_format = True
            await client.send(job(6, "k6") + b"~HS")
            with pytest.raises(ConnectionError):
                await client.status()
            # The format arrived before the link died: it prints, unacknowledged.
            await eventually(lambda: printer.print_count == 1)

        async with host(printer) as client:
            await eventually(lambda: printer.connections == 2)
            printer.drop_connections()
            with pytest.raises(ConnectionError):
                await client.status()
