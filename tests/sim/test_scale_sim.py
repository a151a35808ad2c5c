"""The simulated MT-SICS scale, spoken to over its real pty with plain pyserial."""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

import serial

from warelink.protocol.mtsics import (
    CommandCode,
    CommandListEntry,
    CommandRefused,
    ErrorCode,
    ErrorResponse,
    Malformed,
    Refusal,
    ResetDone,
    Response,
    ResponseDecoder,
    WeightResponse,
    ZeroDone,
)
from warelink.sim.pty import PtyEndpoint
from warelink.sim.scale import SimulatedScale


class Client:
    """A blocking host on the pty (run its calls in a thread), as a real tool would be."""

    def __init__(self, path: Path) -> None:
        self.port = serial.Serial(str(path), 9600, timeout=0.05)
        self.decoder = ResponseDecoder()

    def ask(
        self, command: bytes, lines: int = 1, timeout: float = 4.0
    ) -> list[Response | Malformed]:
        self.port.write(command + b"\r\n")
        return self.read(lines, timeout)

    def read(self, lines: int, timeout: float = 4.0) -> list[Response | Malformed]:
        out: list[Response | Malformed] = []
        deadline = time.monotonic() + timeout
        while len(out) < lines and time.monotonic() < deadline:
            out += self.decoder.feed(self.port.read(256))
        return out

    def close(self) -> None:
        self.port.close()


async def test_pty_endpoint_symlink_lifecycle(tmp_path: Path) -> None:
    link = tmp_path / "dev" / "ttySIM0"
    link.parent.mkdir()
    link.symlink_to("/nonexistent/stale")  # left over from a crashed run
    async with PtyEndpoint(link) as pty:
        assert link.is_symlink()
        assert os.readlink(link) == pty.slave_name
        fd = os.open(link, os.O_RDWR | os.O_NOCTTY)
        try:
            os.write(fd, b"hello\r\n")
            assert await asyncio.wait_for(pty.read(), 5) == b"hello\r\n"  # raw: no echo
            await pty.write(b"back\r\n")
            assert await asyncio.to_thread(os.read, fd, 100) == b"back\r\n"
        finally:
            os.close(fd)
    assert not link.exists() and not link.is_symlink()


async def test_weights_while_settling_and_after(tmp_path: Path) -> None:
    path = tmp_path / "scale"
    async with SimulatedScale(path, random.Random(7), serial="B0123") as scale:
        client = await asyncio.to_thread(Client, path)
        try:
            assert await asyncio.to_thread(client.ask, b"SI") == [
                WeightResponse(value=0.0, unit="kg")
            ]
            scale.place(12.5)
            (settling,) = await asyncio.to_thread(client.ask, b"SI")
            assert isinstance(settling, WeightResponse)
            assert not settling.stable
            assert settling.raw.startswith(b"S D ")

            # S waits for stability (within its time-out), then answers S S.
            (stable,) = await asyncio.to_thread(client.ask, b"S")
            assert stable == WeightResponse(value=12.5, unit="kg")
            assert stable.raw == b"S S     12.500 kg"

            assert await asyncio.to_thread(client.ask, b"FOO") == [ErrorResponse(code=ErrorCode.ES)]
            assert await asyncio.to_thread(client.ask, b"@") == [ResetDone(serial="B0123")]
        finally:
            await asyncio.to_thread(client.close)


async def test_s_times_out_busy_when_never_stable(tmp_path: Path) -> None:
    path = tmp_path / "scale"
    rng = random.Random(3)
    async with SimulatedScale(path, rng, settle_s=(30.0, 30.0), stable_timeout_s=0.3) as scale:
        client = await asyncio.to_thread(Client, path)
        try:
            scale.place(5.0)
            assert await asyncio.to_thread(client.ask, b"S") == [
                CommandRefused(command=CommandCode.S, reason=Refusal.BUSY)
            ]
        finally:
            await asyncio.to_thread(client.close)


async def test_zero_tare_list_and_repeat(tmp_path: Path) -> None:
    path = tmp_path / "scale"
    async with SimulatedScale(path, random.Random(1), settle_s=(0.1, 0.2)) as scale:
        client = await asyncio.to_thread(Client, path)
        try:
            scale.place(0.4)  # within the zero range (2 % of 60 kg)
            assert await asyncio.to_thread(client.ask, b"Z") == [ZeroDone()]
            scale.place(2.4)  # a 2 kg box on top of the zeroed 0.4 kg
            (tare,) = await asyncio.to_thread(client.ask, b"T")
            assert tare == WeightResponse(value=2.0, unit="kg", command=CommandCode.T)
            assert await asyncio.to_thread(client.ask, b"SI") == [
                WeightResponse(value=0.0, unit="kg")
            ]
            assert await asyncio.to_thread(client.ask, b"Z") == [
                CommandRefused(command=CommandCode.Z, reason=Refusal.OVERLOAD)
            ]

            listing = await asyncio.to_thread(client.ask, b"I0", 9)
            assert all(isinstance(entry, CommandListEntry) for entry in listing)
            names = {entry.command for entry in listing if isinstance(entry, CommandListEntry)}
            assert {"S", "SI", "SIR", "Z", "ZI", "T", "TI", "@", "I0"} <= names
            assert isinstance(listing[-1], CommandListEntry) and listing[-1].last

            scale.remove()
            started = time.monotonic()
            repeated = await asyncio.to_thread(client.ask, b"SIR", 5)
            assert len(repeated) == 5
            assert all(isinstance(r, WeightResponse) for r in repeated)
            assert time.monotonic() - started > 0.3  # paced, about every 100 ms
            # Another command ends the repetition: after its answer, silence.
            answer = await asyncio.to_thread(client.ask, b"ZI")
            while answer and isinstance(answer[0], WeightResponse):  # repeats in flight
                answer = await asyncio.to_thread(client.read, 1)
            assert answer == [ZeroDone(immediate=True)]
            assert await asyncio.to_thread(client.read, 1, 0.4) == []
        finally:
            await asyncio.to_thread(client.close)


async def test_garbage_is_injected_and_line_resynchronises(tmp_path: Path) -> None:
    path = tmp_path / "scale"
    async with SimulatedScale(path, random.Random(5)) as scale:
        client = await asyncio.to_thread(Client, path)
        try:
            junk = await scale.inject_garbage(40)
            assert len(junk) == 40 and b"\r" in junk and b"\r\n" not in junk
            # The garbage runs into the next answer, which is lost; the one after is fine.
            (lost,) = await asyncio.to_thread(client.ask, b"SI")
            assert isinstance(lost, Malformed)
            assert await asyncio.to_thread(client.ask, b"SI") == [
                WeightResponse(value=0.0, unit="kg")
            ]
        finally:
            await asyncio.to_thread(client.close)


async def test_port_disappears_on_exit_and_returns_on_restart(tmp_path: Path) -> None:
    path = tmp_path / "scale"
    scale = SimulatedScale(path, random.Random(2), settle_s=(0.1, 0.1))
    async with scale:
        scale.place(3.0)
    assert not path.exists()
    async with scale:
        client = await asyncio.to_thread(Client, path)
        try:
            await asyncio.sleep(0.15)
            assert await asyncio.to_thread(client.ask, b"SI") == [
                WeightResponse(value=3.0, unit="kg")
            ]
        finally:
            await asyncio.to_thread(client.close)
