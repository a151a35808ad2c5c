"""The simulated Modbus slaves, spoken to over real Modbus TCP and a real RTU pty with pymodbus."""

from __future__ import annotations

import asyncio
import random
import struct
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu.register_message import ReadInputRegistersRequest

from warelink.sim.modbus_devices import (
    AgvSlave,
    ConveyorSlave,
    Fault,
    ModbusRtuLine,
    ModbusTcpSlaves,
    ScaleSlave,
    silent_interval,
)

BAUD = 19200


async def eventually(check: Callable[[], bool], within: float = 6.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within} s")
        await asyncio.sleep(0.02)


def int32(words: list[int]) -> int:
    return int(struct.unpack(">i", struct.pack(">HH", *words))[0])


def float32(words: list[int]) -> float:
    return float(struct.unpack(">f", struct.pack(">HH", *words))[0])


@asynccontextmanager
async def tcp_client(port: int) -> AsyncIterator[AsyncModbusTcpClient]:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=0.5, retries=0, reconnect_delay=0)
    assert await client.connect()
    try:
        yield client
    finally:
        client.close()


@asynccontextmanager
async def rtu_client(path: Path) -> AsyncIterator[AsyncModbusSerialClient]:
    # A pty takes no parity: 8N2, the Modbus framing for "no parity".
    client = AsyncModbusSerialClient(
        str(path), baudrate=BAUD, parity="N", stopbits=2, timeout=0.3, retries=0, reconnect_delay=0
    )
    assert await client.connect()
    try:
        yield client
    finally:
        client.close()


async def test_tcp_scale_settles_then_flags_stable_and_zeroes() -> None:
    scale = ScaleSlave(1, random.Random(3), settle_s=(0.3, 0.5))
    async with ModbusTcpSlaves([scale]) as server, tcp_client(server.port) as client:
        assert server.port > 0
        scale.place(12.5)
        first = await client.read_input_registers(0, count=3, device_id=1)
        assert first.registers[2] & 1 == 0, "settling: not stable yet"

        async def stable() -> list[int]:
            while True:
                r = await client.read_input_registers(0, count=3, device_id=1)
                if r.registers[2] & 1:
                    return list(r.registers)
                await asyncio.sleep(0.05)

        words = await asyncio.wait_for(stable(), 3)
        assert int32(words[:2]) == 12500  # grams
        assert (await client.read_discrete_inputs(0, count=1, device_id=1)).bits[0]

        # Zero is refused with a load outside ±2 % of capacity; accepted near zero.
        await client.write_coil(0, True, device_id=1)
        assert scale.zero_refusals == 1
        scale.place(0.4)
        await asyncio.sleep(0.6)
        await client.write_coil(0, True, device_id=1)
        r = await client.read_input_registers(0, count=3, device_id=1)
        assert int32(list(r.registers[:2])) == 0 and r.registers[2] & 0b101 == 0b101


async def test_tcp_conveyor_starts_ramps_counts_and_stops() -> None:
    conveyor = ConveyorSlave(2, random.Random(5), speed_mm_s=2000, pitch_mm=100.0)
    async with ModbusTcpSlaves([conveyor]) as server, tcp_client(server.port) as client:
        r = await client.read_input_registers(0, count=4, device_id=2)
        assert list(r.registers) == [0, 0, 0, 0]
        await client.write_register(0, 1, device_id=2)
        await asyncio.sleep(0.5)
        r = await client.read_input_registers(0, count=4, device_id=2)
        speed, items, status = (
            r.registers[0],
            (r.registers[1] << 16) | r.registers[2],
            r.registers[3],
        )
        assert 0 < speed <= 2000 and status & 1
        assert items >= 1
        await client.write_register(0, 0, device_id=2)
        await asyncio.sleep(2.1)  # ramps down at 1000 mm/s²
        r = await client.read_input_registers(0, count=4, device_id=2)
        assert r.registers[0] == 0 and r.registers[3] == 0
        # Unmapped addresses and unknown functions are exceptions, as on a real PLC.
        bad = await client.read_input_registers(10, count=1, device_id=2)
        assert bad.isError() and bad.exception_code == 2
        bad = await client.write_register(5, 1, device_id=2)
        assert bad.isError() and bad.exception_code == 2


async def test_tcp_agv_moves_and_silent_unit_does_not_answer() -> None:
    agv = AgvSlave(3, random.Random(8), speed_m_s=4.0)
    async with ModbusTcpSlaves([agv]) as server, tcp_client(server.port) as client:
        first = (await client.read_input_registers(0, count=7, device_id=3)).registers
        await asyncio.sleep(0.3)
        later = (await client.read_input_registers(0, count=7, device_id=3)).registers
        x0, x1 = float32(list(first[0:2])), float32(list(later[0:2]))
        assert x1 > x0 and later[6] & 1, "driving along the first leg"
        assert 800 < later[5] <= 875  # battery in 0.1 %
        await client.write_register(0, 1, device_id=3)  # pause
        paused = (await client.read_input_registers(0, count=7, device_id=3)).registers
        assert paused[6] & 0b1001 == 0b1000

        with pytest.raises(ModbusIOException):  # no such unit: no answer at all
            await client.read_input_registers(0, count=1, device_id=9)
        agv.fault = Fault.SILENT
        with pytest.raises(ModbusIOException):
            await client.read_input_registers(0, count=1, device_id=3)


async def test_rtu_slaves_answer_only_their_own_unit(tmp_path: Path) -> None:
    rng = random.Random(11)
    slaves = [ScaleSlave(1, rng), ConveyorSlave(2, rng), AgvSlave(7, rng)]
    path = tmp_path / "ttyRS485"
    async with ModbusRtuLine(path, slaves, rng, baudrate=BAUD) as line, rtu_client(path) as client:
        gap = silent_interval(BAUD) + 0.002
        for unit, count in ((1, 3), (2, 4), (7, 7), (1, 3)):
            r = await client.read_input_registers(0, count=count, device_id=unit)
            assert not r.isError() and len(r.registers) == count and r.dev_id == unit
            await asyncio.sleep(gap)
        with pytest.raises(ModbusIOException):
            await client.read_input_registers(0, count=1, device_id=5)  # nobody at 5
        assert line.answered == {1: 2, 2: 1, 7: 1}
        assert line.unanswered == 1 and line.overlaps == 0


async def test_rtu_line_counts_requests_that_step_on_an_answer(tmp_path: Path) -> None:
    rng = random.Random(12)
    path = tmp_path / "ttyRS485"
    async with (
        ModbusRtuLine(path, [ScaleSlave(1, rng), ScaleSlave(2, rng)], rng, baudrate=BAUD) as line,
        rtu_client(path) as client,
    ):
        # Paced: the silent interval respected after every answer.
        for i in range(6):
            await client.read_input_registers(0, count=3, device_id=1 + i % 2)
            await asyncio.sleep(silent_interval(BAUD) + 0.001)
        assert line.overlaps == 0 and sum(line.answered.values()) == 6

        # Unpaced: the next request starts within 3.5 characters of the answer: collision.
        await client.read_input_registers(0, count=3, device_id=1)
        with pytest.raises(ModbusIOException):
            await client.read_input_registers(0, count=3, device_id=2)
        assert line.overlaps == 1

        # Two masters on one line (what a gateway without a bus lock amounts to).
        client.ctx.send(client.ctx.framer.buildFrame(_read_request(1)))
        client.ctx.send(client.ctx.framer.buildFrame(_read_request(2)))
        await eventually(lambda: line.overlaps == 2)


def _read_request(unit: int) -> ReadInputRegistersRequest:
    return ReadInputRegistersRequest(address=0, count=3, dev_id=unit)


async def test_rtu_faults_slow_silent_garbage(tmp_path: Path) -> None:
    rng = random.Random(13)
    slow, silent, noisy = ScaleSlave(1, rng), ScaleSlave(2, rng), ScaleSlave(3, rng)
    slow.fault, slow.slow_s = Fault.SLOW, 0.15
    silent.fault = Fault.SILENT
    noisy.fault = Fault.GARBAGE
    path = tmp_path / "ttyRS485"
    async with (
        ModbusRtuLine(path, [slow, silent, noisy], rng, baudrate=BAUD) as line,
        rtu_client(path) as client,
    ):
        started = time.monotonic()
        r = await client.read_input_registers(0, count=3, device_id=1)
        assert not r.isError() and time.monotonic() - started >= 0.15
        await asyncio.sleep(0.01)
        with pytest.raises(ModbusIOException):
            await client.read_input_registers(0, count=3, device_id=2)
        with pytest.raises(ModbusIOException):
            await client.read_input_registers(0, count=3, device_id=3)
        await asyncio.sleep(0.01)

        # Noise on an idle line, then a normal exchange works.
        junk = await line.inject_garbage(20)
        assert len(junk) == 20
        await asyncio.sleep(0.05)
        noisy.fault = Fault.NONE
        r = await client.read_input_registers(0, count=3, device_id=3)
        assert not r.isError() and r.dev_id == 3
        assert line.overlaps == 0
