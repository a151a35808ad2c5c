"""Simulated Modbus slaves: a scale, a conveyor and a legacy AGV, on TCP or on an RS-485 pty.

Each slave is a small register model whose values follow time (a settling load cell, a
conveyor ramping and counting items, an AGV driving a loop and draining its battery). The
same models are served two ways:

* ``ModbusTcpSlaves``: pymodbus's own ``ModbusTcpServer`` on port 0, one unit id per slave
  (a Modbus TCP device, or a TCP→RTU gateway in front of several).
* ``ModbusRtuLine``: an RS-485 multi-drop line on a pty. Several slaves share it, each
  answers only its own unit id, and the line keeps real timing: a request takes its wire
  time, the slave thinks, its answer takes its wire time, and the line must then stay
  quiet for 3.5 character times. A request that starts while a slave is still answering or
  within that silent interval is a collision: it is counted in ``overlaps`` and lost, as
  on a real half-duplex bus.

Fault modes per slave (``slave.fault``): ``SLOW`` answers after ``slow_s``, ``SILENT`` does
not answer at all, ``GARBAGE`` answers with noise on the line instead of its frame; and
``ModbusRtuLine.inject_garbage`` puts noise on the line at any time. Everything random
comes from the ``random.Random`` passed in, so a seed replays a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import math
import os
import random
import struct
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, cast

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU, ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simcore import SimCore

from warelink.sim.pty import PtyEndpoint

Table = Literal["holding", "input", "coil", "discrete"]

_TABLE_OF_FUNCTION: dict[int, Table] = {
    1: "coil",
    5: "coil",
    15: "coil",
    2: "discrete",
    3: "holding",
    6: "holding",
    16: "holding",
    22: "holding",
    23: "holding",
    4: "input",
}


class Fault(enum.Enum):
    NONE = "none"
    SLOW = "slow"  # answers, but after ``slow_s``
    SILENT = "silent"  # never answers (powered off, wrong address switch, broken wire)
    GARBAGE = "garbage"  # answers with noise instead of a frame (EMI, bad termination)


def char_time(baudrate: int) -> float:
    """Seconds one RTU character takes on the wire: 11 bits (start, 8 data, parity, stop)."""
    return 11.0 / baudrate


def silent_interval(baudrate: int) -> float:
    """The 3.5-character gap that ends a frame; fixed at 1.75 ms above 19200 baud."""
    return 0.00175 if baudrate > 19200 else 3.5 * char_time(baudrate)


def _words_u32(value: int) -> list[int]:
    value &= 0xFFFFFFFF
    return [value >> 16, value & 0xFFFF]


def _words_f32(value: float) -> list[int]:
    high, low = struct.unpack(">HH", struct.pack(">f", value))
    return [high, low]


def _u16(value: int) -> int:
    return value & 0xFFFF


class ModbusSlave:
    """A Modbus slave's four tables, refreshed from its model before every access.

    Subclasses fill the tables in ``refresh`` and react to writes in ``written``. An
    address not in a table is illegal (exception 2), as on most real devices.
    """

    def __init__(self, unit_id: int) -> None:
        if not 1 <= unit_id <= 247:
            raise ValueError(f"unit id {unit_id} is outside 1..247")
        self.unit_id = unit_id
        self.fault = Fault.NONE
        self.slow_s = 0.2
        self.processing_s = 0.001  # how long the slave's firmware takes to answer
        self.requests = 0  # requests addressed to this slave that it answered
        self.holding: dict[int, int] = {}
        self.input: dict[int, int] = {}
        self.coils: dict[int, bool] = {}
        self.discrete: dict[int, bool] = {}

    def refresh(self, now: float) -> None:
        """Bring the tables up to ``now`` (monotonic seconds)."""

    def written(self, table: Table, address: int, now: float) -> None:
        """React to the master writing ``address`` of ``table`` (holding or coil)."""

    def register_map(self) -> list[dict[str, Any]]:
        """The register declarations a gateway config needs for this slave."""
        return []

    def _table(self, table: Table) -> dict[int, int] | dict[int, bool]:
        if table == "holding":
            return self.holding
        if table == "input":
            return self.input
        return self.coils if table == "coil" else self.discrete

    def read(self, table: Table, address: int, count: int) -> list[int] | list[bool] | ExcCodes:
        self.refresh(time.monotonic())
        cells = self._table(table)
        if not 1 <= count <= (2000 if table in ("coil", "discrete") else 125):
            return ExcCodes.ILLEGAL_VALUE
        if any(a not in cells for a in range(address, address + count)):
            return ExcCodes.ILLEGAL_ADDRESS
        if table in ("coil", "discrete"):
            return [bool(cells[a]) for a in range(address, address + count)]
        return [int(cells[a]) for a in range(address, address + count)]

    def write(
        self, table: Table, address: int, values: Sequence[int] | Sequence[bool]
    ) -> ExcCodes | None:
        if table not in ("holding", "coil"):
            return ExcCodes.ILLEGAL_FUNCTION
        now = time.monotonic()
        self.refresh(now)
        cells = self._table(table)
        if any(a not in cells for a in range(address, address + len(values))):
            return ExcCodes.ILLEGAL_ADDRESS
        for offset, value in enumerate(values):
            if table == "coil":
                self.coils[address + offset] = bool(value)
            else:
                self.holding[address + offset] = _u16(int(value))
            self.written(table, address + offset, now)
        return None


class _Settling:
    """A value that swings toward its target with damped noise, then holds it exactly."""

    def __init__(self, rng: random.Random, settle_s: tuple[float, float]) -> None:
        self._rng = rng
        self.settle_s = settle_s
        self.target = 0.0
        self._from = 0.0
        self._changed_at = -math.inf
        self._settle_for = 0.0

    def set(self, target: float, now: float) -> None:
        self._from = self.value(now)
        self.target = target
        self._changed_at = now
        self._settle_for = self._rng.uniform(*self.settle_s)

    def stable(self, now: float) -> bool:
        return now - self._changed_at >= self._settle_for

    def value(self, now: float) -> float:
        elapsed = now - self._changed_at
        if elapsed >= self._settle_for:
            return self.target
        progress = elapsed / self._settle_for
        delta = self.target - self._from
        approach = self._from + delta * (1.0 - math.exp(-5.0 * progress))
        amplitude = (0.03 * abs(delta) + 0.002) * (1.0 - progress) ** 2
        return approach + amplitude * self._rng.uniform(-1.0, 1.0)


class ScaleSlave(ModbusSlave):
    """A platform scale with a Modbus interface (weighing terminal).

    Input 0–1: net weight, int32 in grams (big-endian word order).
    Input 2: status word: bit 0 stable, bit 1 over capacity, bit 2 at centre of zero.
    Discrete 0: stable. Coil 0: write 1 to zero (only when stable and within ±2 % of
    capacity; reads back 0).
    """

    def __init__(
        self,
        unit_id: int,
        rng: random.Random,
        *,
        capacity_kg: float = 60.0,
        settle_s: tuple[float, float] = (0.5, 1.5),
    ) -> None:
        super().__init__(unit_id)
        self.capacity_kg = capacity_kg
        self._load = _Settling(rng, settle_s)
        self._zero_kg = 0.0
        self.zero_refusals = 0
        self.input.update({0: 0, 1: 0, 2: 0})
        self.discrete[0] = True
        self.coils[0] = False
        self.refresh(time.monotonic())

    def place(self, load_kg: float) -> None:
        """Put ``load_kg`` (gross) on the platform; the reading settles toward it."""
        self._load.set(load_kg, time.monotonic())

    def remove(self) -> None:
        self.place(0.0)

    def net_kg(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        return round(self._load.value(now) - self._zero_kg, 3)

    def refresh(self, now: float) -> None:
        grams = round(self.net_kg(now) * 1000)
        stable = self._load.stable(now)
        gross = self._load.value(now) - self._zero_kg
        status = (
            (1 if stable else 0)
            | (2 if gross > self.capacity_kg else 0)
            | (4 if stable and abs(grams) < 1 else 0)
        )
        self.input[0], self.input[1] = _words_u32(grams)
        self.input[2] = status
        self.discrete[0] = stable

    def written(self, table: Table, address: int, now: float) -> None:
        if table == "coil" and address == 0 and self.coils[0]:
            self.coils[0] = False
            gross = self._load.value(now)
            if self._load.stable(now) and abs(gross) <= 0.02 * self.capacity_kg:
                self._zero_kg = gross
            else:
                self.zero_refusals += 1

    def register_map(self) -> list[dict[str, Any]]:
        return [
            {"name": "weight", "address": 0, "kind": "input", "data_type": "int32",
             "scale": 0.001, "unit": "kg"},
            {"name": "stable", "address": 2, "kind": "input", "bit": 0},
            {"name": "zero", "address": 0, "kind": "coil", "writable": True},
        ]  # fmt: skip


class ConveyorSlave(ModbusSlave):
    """A conveyor section's PLC.

    Holding 0: command (write 1 start, 0 stop). Holding 1: speed set point, mm/s.
    Input 0: actual speed, mm/s (ramps at ``accel`` mm/s²). Input 1–2: items passed,
    uint32. Input 3: status word: bit 0 running, bit 1 fault. Discrete 0: running.
    An item passes the photo-eye every ``pitch_mm`` of belt travel, with jitter.
    """

    def __init__(
        self,
        unit_id: int,
        rng: random.Random,
        *,
        speed_mm_s: int = 500,
        accel: float = 1000.0,
        pitch_mm: float = 400.0,
    ) -> None:
        super().__init__(unit_id)
        self._rng = rng
        self.accel = accel
        self.pitch_mm = pitch_mm
        self._speed = 0.0
        self._travel = 0.0
        self._next_item = self._gap()
        self._items = 0
        self._at = time.monotonic()
        self.holding.update({0: 0, 1: speed_mm_s})
        self.input.update({0: 0, 1: 0, 2: 0, 3: 0})
        self.discrete[0] = False

    def _gap(self) -> float:
        return self.pitch_mm * self._rng.uniform(0.7, 1.3)

    @property
    def running(self) -> bool:
        return self.holding[0] == 1

    @property
    def items(self) -> int:
        return self._items

    def refresh(self, now: float) -> None:
        dt = max(0.0, now - self._at)
        self._at = now
        target = float(self.holding[1]) if self.running else 0.0
        step = self.accel * dt
        new_speed = (
            min(target, self._speed + step)
            if target > self._speed
            else max(target, self._speed - step)
        )
        self._travel += (self._speed + new_speed) / 2 * dt
        self._speed = new_speed
        while self._travel >= self._next_item:
            self._travel -= self._next_item
            self._next_item = self._gap()
            self._items += 1
        self.input[0] = _u16(round(self._speed))
        self.input[1], self.input[2] = _words_u32(self._items)
        self.input[3] = 1 if self.running else 0
        self.discrete[0] = self.running

    def written(self, table: Table, address: int, now: float) -> None:
        if table == "holding" and address == 0 and self.holding[0] not in (0, 1):
            self.holding[0] = 0  # unknown command: the PLC stops, as a safe default

    def register_map(self) -> list[dict[str, Any]]:
        return [
            {"name": "command", "address": 0, "kind": "holding", "writable": True},
            {"name": "speed_setpoint", "address": 1, "kind": "holding", "writable": True,
             "unit": "mm/s"},
            {"name": "speed", "address": 0, "kind": "input", "unit": "mm/s"},
            {"name": "items", "address": 1, "kind": "input", "data_type": "uint32"},
            {"name": "running", "address": 3, "kind": "input", "bit": 0},
        ]  # fmt: skip


class AgvSlave(ModbusSlave):
    """A legacy AGV's controller, driving a rectangular loop between stations.

    Input 0–1: x, float32 m. Input 2–3: y, float32 m. Input 4: heading, int16 mrad.
    Input 5: battery, uint16 in 0.1 %. Input 6: status word: bit 0 moving, bit 1
    charging, bit 2 error, bit 3 paused. Holding 0: pause (write 1 to hold, 0 to go).
    It dwells 0.3–1.0 s at each corner; the battery drains while it moves.
    """

    def __init__(
        self,
        unit_id: int,
        rng: random.Random,
        *,
        loop: Sequence[tuple[float, float]] = ((0.0, 0.0), (20.0, 0.0), (20.0, 8.0), (0.0, 8.0)),
        speed_m_s: float = 1.2,
        battery: float = 87.5,
    ) -> None:
        super().__init__(unit_id)
        self._rng = rng
        self.loop = list(loop)
        self.speed_m_s = speed_m_s
        self.battery = battery
        self._leg = 0
        self._progress = 0.0  # metres along the current leg
        self._dwell = 0.0  # seconds left standing at the current corner
        self.x, self.y = self.loop[0]
        self.theta = 0.0
        self.moving = False
        self._at = time.monotonic()
        self.holding[0] = 0
        self.input.update({a: 0 for a in range(7)})
        self.refresh(self._at)

    def refresh(self, now: float) -> None:
        dt = max(0.0, now - self._at)
        self._at = now
        paused = self.holding[0] == 1
        self.moving = False
        while dt > 1e-9 and not paused:
            if self._dwell > 0:
                used = min(dt, self._dwell)
                self._dwell -= used
                dt -= used
                continue
            (x0, y0) = self.loop[self._leg]
            (x1, y1) = self.loop[(self._leg + 1) % len(self.loop)]
            length = math.hypot(x1 - x0, y1 - y0)
            left = length - self._progress
            travel = min(left, self.speed_m_s * dt)
            self._progress += travel
            dt -= travel / self.speed_m_s
            self.battery = max(0.0, self.battery - 0.002 * travel)
            self.theta = math.atan2(y1 - y0, x1 - x0)
            self.moving = True
            if self._progress >= length - 1e-9:
                self._leg = (self._leg + 1) % len(self.loop)
                self._progress = 0.0
                self._dwell = self._rng.uniform(0.3, 1.0)
                self.moving = False
            fraction = self._progress / length if length else 0.0
            (x0, y0) = self.loop[self._leg]
            (x1, y1) = self.loop[(self._leg + 1) % len(self.loop)]
            self.x, self.y = x0 + (x1 - x0) * fraction, y0 + (y1 - y0) * fraction
        self.input[0], self.input[1] = _words_f32(self.x)
        self.input[2], self.input[3] = _words_f32(self.y)
        self.input[4] = _u16(round(self.theta * 1000))
        self.input[5] = round(self.battery * 10)
        self.input[6] = (1 if self.moving else 0) | (8 if paused else 0)

    def register_map(self) -> list[dict[str, Any]]:
        return [
            {"name": "x", "address": 0, "kind": "input", "data_type": "float32", "unit": "m"},
            {"name": "y", "address": 2, "kind": "input", "data_type": "float32", "unit": "m"},
            {"name": "theta", "address": 4, "kind": "input", "data_type": "int16",
             "scale": 0.001, "unit": "rad"},
            {"name": "battery", "address": 5, "kind": "input", "scale": 0.1, "unit": "%"},
            {"name": "status", "address": 6, "kind": "input"},
            {"name": "driving", "address": 6, "kind": "input", "bit": 0},
            {"name": "pause", "address": 0, "kind": "holding", "writable": True},
        ]  # fmt: skip


# ------------------------------------------------------------------ the datastore


class SlaveCore(SimCore):
    """pymodbus's server datastore interface over our slave models (any unit id of ours).

    A ``SILENT`` slave raises ``NoSuchIdException`` so the server (with
    ``ignore_missing_devices``) does not answer; a ``SLOW`` one sleeps first. TCP frames
    cannot carry line noise, so ``GARBAGE`` behaves as ``SILENT`` here.
    """

    def __init__(self, slaves: Sequence[ModbusSlave]) -> None:  # no super(): no SimDevices
        self.slaves = {slave.unit_id: slave for slave in slaves}
        if len(self.slaves) != len(slaves):
            raise ValueError("two slaves with the same unit id")

    def device_ids(self) -> list[int]:
        return list(self.slaves)

    async def _slave(self, device_id: int) -> ModbusSlave:
        slave = self.slaves.get(device_id)
        if slave is None or slave.fault in (Fault.SILENT, Fault.GARBAGE):
            raise NoSuchIdException(f"no answer from unit {device_id}")
        if slave.fault is Fault.SLOW:
            await asyncio.sleep(slave.slow_s)
        slave.requests += 1
        return slave

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        table = _TABLE_OF_FUNCTION.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        return (await self._slave(device_id)).read(table, address, count)

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: list[int] | list[bool]
    ) -> ExcCodes | None:
        table = _TABLE_OF_FUNCTION.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        # A write is followed by a read-back in the same request: count the request once.
        slave = await self._slave(device_id)
        slave.requests -= 1
        return slave.write(table, address, values)


# ------------------------------------------------------------------ Modbus TCP


class ModbusTcpSlaves:
    """The slaves behind one Modbus TCP endpoint (pymodbus's server), on 127.0.0.1:0.

    ``async with ModbusTcpSlaves([...]) as server: server.port``.
    """

    def __init__(
        self, slaves: Sequence[ModbusSlave], host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.slaves = list(slaves)
        self.host = host
        self.port = port
        self._server: ModbusTcpServer | None = None

    async def __aenter__(self) -> Self:
        # The server takes only SimDevices; one placeholder per unit id, then our store.
        placeholders = [
            SimDevice(slave.unit_id, simdata=SimData(0, values=0, datatype=DataType.REGISTERS))
            for slave in self.slaves
        ]
        server = ModbusTcpServer(
            placeholders, address=(self.host, self.port), ignore_missing_devices=True
        )
        server.context = SlaveCore(self.slaves)
        await server.serve_forever(background=True)
        listener = server.transport
        assert isinstance(listener, asyncio.Server)
        self.port = listener.sockets[0].getsockname()[1]
        self._server = server
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]


# ------------------------------------------------------------------ Modbus RTU


class ModbusRtuLine:
    """An RS-485 line on a pty (slave side symlinked at ``path``) with several slaves.

    The master opens ``path`` as a serial port. Counters for tests: ``overlaps``
    (requests that collided with a slave's answer or its silent interval), ``answered``
    per unit id, ``unanswered`` (requests no slave took), ``garbled_requests``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        slaves: Sequence[ModbusSlave],
        rng: random.Random,
        *,
        baudrate: int = 19200,
    ) -> None:
        self.path = Path(path)
        self.slaves = {slave.unit_id: slave for slave in slaves}
        if len(self.slaves) != len(slaves):
            raise ValueError("two slaves with the same unit id on one line")
        self.baudrate = baudrate
        self._rng = rng
        self.overlaps = 0
        self.answered: Counter[int] = Counter()
        self.unanswered = 0
        self.garbled_requests = 0
        self._framer = FramerRTU(DecodePDU(True))
        self._buffer = b""
        self._answering = False  # a slave holds the line (thinking or sending)
        self._quiet_until = 0.0  # loop time the line is free again after an answer
        self._collided = False  # this busy period already counted an overlap
        self._requests: asyncio.Queue[ModbusPDU] = asyncio.Queue()
        self._link: PtyEndpoint | None = None
        self._stack: contextlib.AsyncExitStack | None = None

    # ------------------------------------------------------------- lifetime

    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as stack:
            self._link = await stack.enter_async_context(PtyEndpoint(self.path))
            stack.callback(self._forget_link)
            tg = await stack.enter_async_context(asyncio.TaskGroup())
            listening = tg.create_task(self._listen(), name=f"sim-rtu-listen {self.path}")
            answering = tg.create_task(self._answer(), name=f"sim-rtu-answer {self.path}")
            stack.callback(answering.cancel)
            stack.callback(listening.cancel)
            self._stack = stack.pop_all()
        return self

    def _forget_link(self) -> None:
        self._link = None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.__aexit__(exc_type, exc, tb)

    def _require_link(self) -> PtyEndpoint:
        if self._link is None:
            raise RuntimeError("the RTU line is not running")
        return self._link

    # --------------------------------------------------------------- timing

    def wire_time(self, n_bytes: int) -> float:
        return n_bytes * char_time(self.baudrate)

    @property
    def busy(self) -> bool:
        loop = asyncio.get_running_loop()
        return self._answering or loop.time() < self._quiet_until

    # -------------------------------------------------------------- the line

    async def _listen(self) -> None:
        link = self._require_link()
        loop = asyncio.get_running_loop()
        last_rx = -math.inf
        while True:
            data = await link.read()
            now = loop.time()
            if now - last_rx > silent_interval(self.baudrate):
                self._buffer = b""  # 3.5 characters of silence end any partial frame
            last_rx = now
            if self.busy:
                # A half-duplex transceiver that is driving the line hears nothing: the
                # request is lost (and on copper, the answer garbled with it).
                if not self._collided:
                    self._collided = True
                    self.overlaps += 1
                self._buffer = b""
                continue
            self._buffer += data
            while True:
                used, pdu = self._split_frame(self._buffer)
                if not used:
                    break  # the rest of a frame is still on its way
                if pdu is not None and self._answering:
                    # A second frame right behind the first: two masters, or no pacing.
                    self._collided = True
                    self.overlaps += 1
                    self._buffer = b""
                    break
                self._buffer = self._buffer[used:]
                if pdu is not None:
                    self._take(pdu)

    def _split_frame(self, data: bytes) -> tuple[int, ModbusPDU | None]:
        """The first request frame in ``data``: (bytes used, request or None).

        (0, None): need more bytes. (n, None): n bytes of noise skipped while hunting
        for a frame start. pymodbus's framer would swallow a second frame that arrives
        in the same read, so the line splits frames itself.
        """
        if len(data) < 4:
            return 0, None
        decoder = self._framer.decoder
        pdu_class = decoder.lookupPduClass(data)
        if pdu_class is None:
            self.garbled_requests += 1
            return 1, None
        try:
            size = pdu_class.calculateRtuFrameSize(data)
        except Exception:
            self.garbled_requests += 1
            return 1, None
        if size == 0 or size > len(data):
            return 0, None  # the byte count is not in yet, or the frame is incomplete
        frame = data[:size]
        if size < 4 or not FramerRTU.check_CRC(frame[:-2], int.from_bytes(frame[-2:], "big")):
            self.garbled_requests += 1
            return 1, None
        pdu = decoder.decode(frame[1:-2])
        if pdu is None:
            self.garbled_requests += 1
            return size, None
        pdu.dev_id = frame[0]
        return size, pdu

    def _take(self, pdu: ModbusPDU) -> None:
        slave = self.slaves.get(pdu.dev_id)
        if slave is None or slave.fault is Fault.SILENT:
            self.unanswered += 1
            return
        self._answering = True
        self._collided = False
        self._requests.put_nowait(pdu)

    async def _answer(self) -> None:
        link = self._require_link()
        loop = asyncio.get_running_loop()
        while True:
            request = await self._requests.get()
            slave = self.slaves[request.dev_id]
            request_bytes = len(self._framer.buildFrame(request))
            delay = self.wire_time(request_bytes) + slave.processing_s
            if slave.fault is Fault.SLOW:
                delay += slave.slow_s
            await asyncio.sleep(delay)
            if slave.fault is Fault.GARBAGE:
                frame = self.garbage(self._rng.randint(3, 12))
            else:
                response = await request.datastore_update(
                    cast(Any, _OneSlave(slave)), slave.unit_id
                )
                response.dev_id = request.dev_id
                response.transaction_id = request.transaction_id
                frame = self._framer.buildFrame(response)
                slave.requests += 1
                self.answered[slave.unit_id] += 1
            await asyncio.sleep(self.wire_time(len(frame)))  # the answer on the wire
            await link.write(frame)
            self._quiet_until = loop.time() + silent_interval(self.baudrate)
            self._answering = False

    # ------------------------------------------------------------ noise

    def garbage(self, n_bytes: int) -> bytes:
        return bytes(self._rng.randrange(256) for _ in range(n_bytes))

    async def inject_garbage(self, n_bytes: int) -> bytes:
        """Put ``n_bytes`` of noise on the line now; returns what was written."""
        junk = self.garbage(n_bytes)
        await self._require_link().write(junk)
        return junk


class _OneSlave:
    """The datastore interface ``datastore_update`` expects, for one slave."""

    def __init__(self, slave: ModbusSlave) -> None:
        self._slave = slave

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        table = _TABLE_OF_FUNCTION.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        return self._slave.read(table, address, count)

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: list[int] | list[bool]
    ) -> ExcCodes | None:
        table = _TABLE_OF_FUNCTION.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        return self._slave.write(table, address, values)


# ------------------------------------------------------------------ scenario hook


def make_slaves(rng: random.Random, kinds: Sequence[str], first_unit: int = 1) -> list[ModbusSlave]:
    """Slaves of the given kinds ("scale", "conveyor", "agv"), unit ids counting up."""
    makers = {"scale": ScaleSlave, "conveyor": ConveyorSlave, "agv": AgvSlave}
    slaves: list[ModbusSlave] = []
    for offset, kind in enumerate(kinds):
        maker = makers[kind]
        slaves.append(maker(first_unit + offset, random.Random(rng.random())))
    return slaves
