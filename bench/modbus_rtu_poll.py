"""Modbus RTU polls/s through the warelink bus, beside a bare pymodbus loop, on one pty line.

One simulated RS-485 line (``warelink.sim.modbus_devices.ModbusRtuLine``) with 8 slaves
(3 scales, 3 conveyors, 2 AGVs) on a pty; it keeps wire timing (11 bits per character at
the chosen baud rate, 1 ms slave processing) and counts collisions. Cases, one after the
other on the same line in the same run (the port is opened exclusively):

* bare paced     -- THE BASELINE. One ``AsyncModbusSerialClient`` reading the slaves
                    round robin, sleeping the 3.5-character silent interval between
                    requests (the least a correct master must do).
* bare unpaced   -- the same loop with no gap: requests collide with the line's silent
                    interval and are lost (time-outs).
* bus × 8        -- ``ModbusBus`` (one lock, pacing = 3.5 chars + inter_request_delay_s)
                    with 8 concurrent pollers, one per slave, as 8 drivers would poll.
                    Once with no extra delay, once with the default 2 ms.
* drivers × 8    -- 8 real drivers (``ModbusScaleDriver``/``ModbusDeviceDriver``,
                    poll_interval_s=0) on one ``ModbusBuses`` registry; a poll of a
                    conveyor or AGV is 2 requests (input and holding registers).

The figure is requests the line answered per second (same unit for every case).

    .venv/bin/python bench/modbus_rtu_poll.py [--baud 19200] [--seconds 4.5]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ModbusException

from warelink.edge.drivers.modbus import (
    BusSettings,
    ModbusBus,
    ModbusBusError,
    ModbusBuses,
    ModbusDeviceConfig,
    ModbusDeviceDriver,
    ModbusRegister,
    ModbusScaleConfig,
    ModbusScaleDriver,
    ReadBlock,
    rtu_silent_interval,
)
from warelink.protocol.messages import EventBody, TrafficClass
from warelink.sim.modbus_devices import (
    AgvSlave,
    ConveyorSlave,
    ModbusRtuLine,
    ModbusSlave,
    ScaleSlave,
)

KINDS = ["scale", "conveyor", "agv", "scale", "conveyor", "agv", "scale", "conveyor"]
TIMEOUT_S = 0.2
# The primary block each slave is polled for (input registers): address 0, this many.
BLOCK = {"scale": 3, "conveyor": 4, "agv": 7}


@dataclass
class Row:
    case: str
    seconds: float
    answered: int
    overlaps: int
    failed: int

    @property
    def rate(self) -> float:
        return self.answered / self.seconds


def make_slaves(seed: int) -> list[ModbusSlave]:
    rng = random.Random(seed)
    slaves: list[ModbusSlave] = []
    for unit, kind in enumerate(KINDS, start=1):
        sub = random.Random(rng.random())
        maker = {"scale": ScaleSlave, "conveyor": ConveyorSlave, "agv": AgvSlave}[kind]
        slaves.append(maker(unit, sub))
    return slaves


async def measure(
    case: str, line: ModbusRtuLine, seconds: float, body: Callable[[float], Awaitable[int]]
) -> Row:
    """Run ``body(deadline)`` (returns failed requests) and count what the line answered."""
    # Each case is a new master: let the previous one's last answer clear the line first,
    # or its first request may land in that answer's silent interval.
    await asyncio.sleep(0.05)
    answered0, overlaps0 = sum(line.answered.values()), line.overlaps
    started = time.perf_counter()
    failed = await body(time.monotonic() + seconds)
    elapsed = time.perf_counter() - started
    return Row(
        case,
        elapsed,
        sum(line.answered.values()) - answered0,
        line.overlaps - overlaps0,
        failed,
    )


async def bare_loop(path: Path, baud: int, deadline: float, *, paced: bool) -> int:
    client = AsyncModbusSerialClient(
        str(path),
        baudrate=baud,
        parity="N",
        stopbits=2,
        timeout=TIMEOUT_S,
        retries=0,
        reconnect_delay=0,
    )
    assert await client.connect()
    gap = rtu_silent_interval(baud)
    failed = 0
    try:
        i = 0
        while time.monotonic() < deadline:
            unit = 1 + i % len(KINDS)
            i += 1
            try:
                r = await client.read_input_registers(
                    0, count=BLOCK[KINDS[unit - 1]], device_id=unit
                )
                failed += r.isError()
            except ModbusException:
                failed += 1
            if paced:
                await asyncio.sleep(gap)
    finally:
        client.close()
    return failed


async def bus_pollers(path: Path, baud: int, deadline: float, *, delay_s: float) -> int:
    settings = BusSettings(
        transport="rtu",
        target=str(path),
        port=None,
        baudrate=baud,
        parity="N",
        stopbits=2,
        timeout_s=TIMEOUT_S,
        inter_request_delay_s=delay_s,
    )
    bus = ModbusBus(settings)
    failed = 0

    async def poll(unit: int) -> None:
        nonlocal failed
        register = ModbusRegister(name="r", address=0, kind="input")
        block = ReadBlock("input", 0, BLOCK[KINDS[unit - 1]], (register,))
        while time.monotonic() < deadline:
            try:
                await bus.read(unit, block)
            except ModbusBusError:
                failed += 1

    async with bus.attached(), asyncio.TaskGroup() as tg:
        for unit in range(1, len(KINDS) + 1):
            tg.create_task(poll(unit), name=f"bench-poll-{unit}")
    return failed


async def drivers(path: Path, baud: int, deadline: float, slaves: list[ModbusSlave]) -> int:
    async def emit(
        device: str, cls: TrafficClass, body: EventBody, occurred_at: Any = None
    ) -> None:
        return None

    buses = ModbusBuses()
    where: dict[str, Any] = {
        "transport": "rtu",
        "serial_port": str(path),
        "baudrate": baud,
        "parity": "N",
        "stopbits": 2,
        "timeout_s": TIMEOUT_S,
        "poll_interval_s": 0,
    }
    running: list[ModbusScaleDriver | ModbusDeviceDriver] = []
    for slave, kind in zip(slaves, KINDS, strict=True):
        regs = {r["name"]: r for r in slave.register_map()}
        if kind == "scale":
            config: Any = ModbusScaleConfig.model_validate(
                {
                    "kind": "modbus_scale",
                    "id": f"s{slave.unit_id}",
                    "unit_id": slave.unit_id,
                    "weight": regs["weight"],
                    "stable": regs["stable"],
                    **where,
                }
            )
            running.append(ModbusScaleDriver(config, emit, buses=buses))
        else:
            config = ModbusDeviceConfig.model_validate(
                {
                    "kind": "modbus_device",
                    "id": f"d{slave.unit_id}",
                    "unit_id": slave.unit_id,
                    "role": kind,
                    "registers": slave.register_map(),
                    **where,
                }
            )
            running.append(ModbusDeviceDriver(config, emit, buses=buses))
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(d.run(), name=f"bench-{d.device_id}") for d in running]
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))
        for task in tasks:
            task.cancel()
    (bus,) = buses
    return bus.stats.no_answer + bus.stats.garbled + bus.stats.exceptions


async def main(baud: int, seconds: float, seed: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="wl-bench-modbus-"))
    path = tmp / "ttyRS485"
    slaves = make_slaves(seed)
    rows: list[Row] = []
    try:
        async with ModbusRtuLine(path, slaves, random.Random(seed), baudrate=baud) as line:
            rows.append(
                await measure(
                    "bare pymodbus, paced (baseline)",
                    line,
                    seconds,
                    lambda d: bare_loop(path, baud, d, paced=True),
                )
            )
            rows.append(
                await measure(
                    "bare pymodbus, unpaced",
                    line,
                    seconds,
                    lambda d: bare_loop(path, baud, d, paced=False),
                )
            )
            rows.append(
                await measure(
                    "warelink bus × 8 pollers, delay 0",
                    line,
                    seconds,
                    lambda d: bus_pollers(path, baud, d, delay_s=0.0),
                )
            )
            rows.append(
                await measure(
                    "warelink bus × 8 pollers, delay 2 ms",
                    line,
                    seconds,
                    lambda d: bus_pollers(path, baud, d, delay_s=0.002),
                )
            )
            rows.append(
                await measure(
                    "warelink drivers × 8 (delay 2 ms)",
                    line,
                    seconds,
                    lambda d: drivers(path, baud, d, slaves),
                )
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    base = rows[0].rate
    print(f"\nModbus RTU, 8 slaves on one pty line, {baud} baud 8N2, {seconds:g} s per case\n")
    print(
        f"| {'case':<38} | {'req/s':>7} | {'overlaps':>8} | {'failed':>6} | {'× bare paced':>12} |"
    )
    print(f"| {'-' * 38} | {'-' * 7}:| {'-' * 8}:| {'-' * 6}:| {'-' * 12}:|")
    for row in rows:
        print(
            f"| {row.case:<38} | {row.rate:>7.1f} | {row.overlaps:>8} | {row.failed:>6} |"
            f" {row.rate / base:>12.2f} |"
        )
    bus_row, drivers_row, unpaced = rows[2], rows[4], rows[1]
    print(
        f"\nSUMMARY modbus_rtu_poll: bus {bus_row.rate:.1f} req/s = {bus_row.rate / base:.2f}× "
        f"bare paced ({base:.1f} req/s); drivers {drivers_row.rate:.1f} req/s = "
        f"{drivers_row.rate / base:.2f}×; overlaps bus {bus_row.overlaps + rows[3].overlaps} "
        f"drivers {drivers_row.overlaps}, bare unpaced {unpaced.overlaps} "
        f"({unpaced.failed} failed requests)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baud", type=int, default=19200)
    parser.add_argument("--seconds", type=float, default=4.5, help="per case (5 cases)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    # Quiet: the unpaced case times out on purpose, and each driver logs coming online.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    asyncio.run(main(args.baud, args.seconds, args.seed))
