"""Modbus TCP/RTU devices: a scale, and generic polled devices (legacy AGVs, conveyors).

An RS-485 line is half-duplex: one request may be on it at a time, and after every
answer the line must stay silent for 3.5 character times before the master speaks
again. Several devices (unit ids) usually hang on one line, and gateways that poll them
at once on one port corrupt each other's frames. So every physical bus (one serial
port, or one Modbus TCP host:port) is a ``ModbusBus`` owning ONE pymodbus client, ONE
lock and the request pacing; the drivers of the devices on it share it through a
``ModbusBuses`` registry and take turns (asyncio's lock is FIFO, so slaves are polled
in turn). A slave that stops answering makes only its own device OFFLINE; a port that
cannot be opened makes all of them OFFLINE.

Register maps are declared in the config (``ModbusRegister``), decoded here with pure
functions (``decode_value``/``encode_value``), and read in as few requests as possible
(contiguous registers of one table are read together).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Self

import structlog
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from warelink.edge.device_config import DeviceBase
from warelink.edge.drivers.base import (
    Backoff,
    CommandFailed,
    CommandRejected,
    DeviceConflict,
    DriverSpec,
    Emit,
    Presence,
)
from warelink.protocol.messages import (
    AgvState,
    Telemetry,
    TrafficClass,
    WeightReading,
)

RegisterKind = Literal["holding", "input", "coil", "discrete"]
DataType = Literal["uint16", "int16", "uint32", "int32", "float32"]
WordOrder = Literal["big", "little"]

TELEMETRY_MIN_INTERVAL_S = 0.5
"""Unstable weights are sent at most this often (≈2/s), as for the MT-SICS scale."""

_MAX_REGISTERS = 125  # per read request (Modbus limit)
_MAX_BITS = 2000

_EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "slave device failure",
    5: "acknowledge",
    6: "slave device busy",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}


# ---------------------------------------------------------------------- config


class ModbusRegister(BaseModel):
    """One named value in a device's register map.

    ``bit`` takes one bit of a 16-bit holding/input register as a flag (0/1). 32-bit
    types span two registers; ``word_order`` "big" means the high word comes first.
    The value reported is ``raw * scale``; a write sends ``round(value / scale)``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    address: int = Field(ge=0, le=65535, description="0-based protocol address")
    kind: RegisterKind = "holding"
    data_type: DataType = "uint16"
    word_order: WordOrder = "big"
    bit: int | None = Field(default=None, ge=0, le=15)
    scale: float = Field(default=1.0, description="value = raw × scale")
    unit: str = ""
    writable: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.kind in ("coil", "discrete") and (
            self.data_type != "uint16" or self.bit is not None
        ):
            raise ValueError(f"register {self.name!r}: a {self.kind} is one bit; no data_type/bit")
        if self.bit is not None and self.data_type not in ("uint16", "int16"):
            raise ValueError(f"register {self.name!r}: bit needs a 16-bit data_type")
        if self.writable and (self.kind not in ("holding", "coil") or self.bit is not None):
            raise ValueError(
                f"register {self.name!r}: only whole holding registers and coils are writable"
            )
        if self.scale == 0:
            raise ValueError(f"register {self.name!r}: scale must not be 0")
        if self.address + self.width > 65536:
            raise ValueError(f"register {self.name!r}: runs past address 65535")
        return self

    @property
    def width(self) -> int:
        """Addresses the value occupies in its table."""
        return 2 if self.data_type in ("uint32", "int32", "float32") else 1

    @property
    def is_flag(self) -> bool:
        return self.kind in ("coil", "discrete") or self.bit is not None


class ModbusLinkConfig(DeviceBase):
    """Where a Modbus device is reached, and how its bus is paced.

    Devices naming the same ``serial_port`` (RTU) or ``host``:``port`` (TCP) share one
    bus; their bus settings (baud rate, parity, time-out, pacing) must then agree.
    """

    transport: Literal["tcp", "rtu"]
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535, description="TCP port (502 on site)")
    serial_port: str | None = Field(default=None, description="RTU: e.g. /dev/ttyUSB0 (or a pty)")
    baudrate: int = Field(default=19200, gt=0)
    parity: Literal["N", "E", "O"] = "E"
    stopbits: Literal[1, 2] = 1
    unit_id: int = Field(default=1, ge=0, le=247, description="slave id (unit identifier)")
    timeout_s: float = Field(
        default=0.5, gt=0, description="No answer in this time: a failed poll."
    )
    inter_request_delay_s: float = Field(
        default=0.002,
        ge=0,
        description="Extra pause between requests on the bus (beyond 3.5 chars).",
    )
    poll_interval_s: float = Field(
        default=0.5, ge=0, description="Pause between polls of this device."
    )
    offline_after: int = Field(default=3, ge=1, description="Failed polls in a row before OFFLINE.")

    @model_validator(mode="after")
    def _transport_fields(self) -> Self:
        if self.transport == "tcp":
            if not self.host or self.port is None:
                raise ValueError("transport 'tcp' needs host and port")
            if self.serial_port:
                raise ValueError("transport 'tcp' takes no serial_port")
        else:
            if not self.serial_port:
                raise ValueError("transport 'rtu' needs serial_port")
            if self.host or self.port is not None:
                raise ValueError("transport 'rtu' takes no host/port")
            if self.unit_id == 0:
                raise ValueError("unit_id 0 is the RTU broadcast address; use 1..247")
        return self

    @property
    def bus_key(self) -> str:
        if self.transport == "tcp":
            return f"tcp://{self.host}:{self.port}"
        return f"rtu://{self.serial_port}"


class ModbusScaleConfig(ModbusLinkConfig):
    """A weighing terminal read over Modbus: weight, a stable flag, optionally a zero coil."""

    kind: Literal["modbus_scale"]
    weight: ModbusRegister
    stable: ModbusRegister = Field(description="A coil/discrete input, or a bit of a register.")
    zero: ModbusRegister | None = Field(
        default=None, description="Writable coil/register: write 1 to zero."
    )
    unit: str = "kg"
    resolution: float = Field(default=0.001, gt=0, description="One display count, in ``unit``.")
    poll_interval_s: float = Field(default=0.2, ge=0)

    @model_validator(mode="after")
    def _roles(self) -> Self:
        if self.weight.is_flag:
            raise ValueError("weight must be a numeric register, not a flag")
        if not self.stable.is_flag:
            raise ValueError("stable must be a coil, a discrete input or a register bit")
        if self.zero is not None and not self.zero.writable:
            raise ValueError("zero must be a writable coil or holding register")
        return self


class ModbusDeviceConfig(ModbusLinkConfig):
    """A generic polled Modbus device: a legacy AGV, a conveyor, anything with registers.

    Every poll reads all ``registers``; a change is one TELEMETRY ``Telemetry``. With
    role "agv" and registers named ``x`` and ``y`` (optionally ``theta``, ``battery``,
    ``driving``) an ``AgvState`` goes out too.
    """

    kind: Literal["modbus_device"]
    role: Literal["agv", "conveyor", "other"] = "other"
    registers: list[ModbusRegister] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        names = [r.name for r in self.registers]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"register names declared twice: {', '.join(duplicated)}")
        return self


# ------------------------------------------------------------- pure decoding


_STRUCT = {"uint16": "H", "int16": "h", "uint32": "I", "int32": "i", "float32": "f"}


def decode_value(register: ModbusRegister, raw: Sequence[int] | Sequence[bool]) -> float:
    """The value of ``register`` from its raw words (or its one bit), scaled."""
    if register.kind in ("coil", "discrete"):
        return 1.0 if raw[0] else 0.0
    words = [int(w) & 0xFFFF for w in raw[: register.width]]
    if register.bit is not None:
        return float((words[0] >> register.bit) & 1)
    if register.word_order == "little":
        words.reverse()
    data = struct.pack(f">{len(words)}H", *words)
    (value,) = struct.unpack(f">{_STRUCT[register.data_type]}", data)
    return float(value) * register.scale


def encode_value(register: ModbusRegister, value: float) -> list[int]:
    """The words to write for ``value`` (raises ValueError when it does not fit)."""
    if not math.isfinite(value):
        raise ValueError(f"{value} is not a finite number")
    if register.kind == "coil":
        if value not in (0, 1):
            raise ValueError("a coil takes 0 or 1")
        return [int(value)]
    raw: float = value / register.scale
    if register.data_type != "float32":
        raw = round(raw)
    try:
        data = struct.pack(f">{_STRUCT[register.data_type]}", raw)
    except struct.error:
        raise ValueError(f"{value} does not fit {register.data_type}") from None
    words = list(struct.unpack(f">{register.width}H", data))
    if register.word_order == "little":
        words.reverse()
    return words


@dataclass(frozen=True)
class ReadBlock:
    """One read request: ``count`` addresses of ``kind`` from ``address``."""

    kind: RegisterKind
    address: int
    count: int
    registers: tuple[ModbusRegister, ...]


def plan_reads(registers: Sequence[ModbusRegister]) -> list[ReadBlock]:
    """Group registers into as few reads as possible: contiguous or overlapping spans only.

    Gaps are not bridged: many devices answer "illegal address" for unmapped ones.
    """
    blocks: list[ReadBlock] = []
    by_kind: dict[RegisterKind, list[ModbusRegister]] = {}
    for register in registers:
        by_kind.setdefault(register.kind, []).append(register)
    for kind, members in by_kind.items():
        limit = _MAX_BITS if kind in ("coil", "discrete") else _MAX_REGISTERS
        members.sort(key=lambda r: r.address)
        start, end, group = members[0].address, members[0].address + members[0].width, [members[0]]
        for register in members[1:]:
            new_end = max(end, register.address + register.width)
            if register.address <= end and new_end - start <= limit:
                end = new_end
                group.append(register)
                continue
            blocks.append(ReadBlock(kind, start, end - start, tuple(group)))
            start, end, group = register.address, register.address + register.width, [register]
        blocks.append(ReadBlock(kind, start, end - start, tuple(group)))
    return blocks


# ------------------------------------------------------------------ the bus


class ModbusBusError(Exception):
    """A request on the bus did not get a valid answer."""


class BusUnavailable(ModbusBusError):
    """The port cannot be opened / the TCP connection is down: every device on it is cut off."""


class NoAnswer(ModbusBusError):
    """The addressed slave did not answer in time (and nothing else came back)."""


class AnswerGarbled(ModbusBusError):
    """Bytes came back, but no valid answer: noise, a collision, a CRC error."""


class SlaveException(ModbusBusError):
    """The slave answered with a Modbus exception (illegal address, busy, …)."""

    def __init__(self, unit_id: int, function_code: int, code: int) -> None:
        self.code = code
        name = _EXCEPTION_NAMES.get(code, "unknown")
        super().__init__(
            f"unit {unit_id} function {function_code & 0x7F}: exception {code} ({name})"
        )


@dataclass(frozen=True)
class BusSettings:
    """What must agree between the devices sharing one bus."""

    transport: Literal["tcp", "rtu"]
    target: str  # host or serial port
    port: int | None
    baudrate: int
    parity: str
    stopbits: int
    timeout_s: float
    inter_request_delay_s: float

    @classmethod
    def of(cls, config: ModbusLinkConfig) -> BusSettings:
        target = config.host if config.transport == "tcp" else config.serial_port
        assert target is not None  # the config validator guarantees it
        return cls(
            transport=config.transport,
            target=target,
            port=config.port,
            baudrate=config.baudrate,
            parity=config.parity,
            stopbits=config.stopbits,
            timeout_s=config.timeout_s,
            inter_request_delay_s=config.inter_request_delay_s,
        )

    @property
    def key(self) -> str:
        return (
            f"tcp://{self.target}:{self.port}"
            if self.transport == "tcp"
            else f"rtu://{self.target}"
        )

    @property
    def gap_s(self) -> float:
        """Minimum silence between the end of one exchange and the next request."""
        if self.transport == "tcp":
            return self.inter_request_delay_s
        return rtu_silent_interval(self.baudrate) + self.inter_request_delay_s


def rtu_silent_interval(baudrate: int) -> float:
    """3.5 character times of 11 bits; fixed at 1.75 ms above 19200 baud (Modbus spec)."""
    return 0.00175 if baudrate > 19200 else 3.5 * 11.0 / baudrate


@dataclass
class BusStats:
    requests: int = 0
    answered: int = 0
    no_answer: int = 0
    garbled: int = 0
    exceptions: int = 0
    connects: int = 0
    paced_s: float = 0.0  # time spent waiting for the silent interval
    per_unit: dict[int, int] = field(default_factory=dict)  # answered requests per unit id


class ModbusBus:
    """One physical bus: one pymodbus client, one lock, paced requests, reconnects.

    The client is opened on the first request while at least one driver is attached
    (``async with bus.attached():``) and closed when the last one leaves. A failed open
    is retried only after a backoff delay; requests meanwhile fail at once with
    ``BusUnavailable`` instead of hammering the port.
    """

    def __init__(self, settings: BusSettings) -> None:
        self.settings = settings
        self.key = settings.key
        self.stats = BusStats()
        self._lock = asyncio.Lock()
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._users = 0
        self._backoff = Backoff(initial=0.2, cap=5.0)
        self._retry_at = 0.0  # loop time before which no reconnect is tried
        self._last_end = -math.inf  # loop time the last exchange ended
        self._rx_seen = False  # bytes arrived since the current request was sent
        self._down: str | None = None  # why the bus is down, once logged
        self._log = structlog.get_logger(__name__).bind(bus=self.key)

    # ------------------------------------------------------------ lifetime

    @contextlib.asynccontextmanager
    async def attached(self) -> AsyncIterator[Self]:
        """Hold the bus open while a driver runs; the last driver out closes it."""
        self._users += 1
        try:
            yield self
        finally:
            self._users -= 1
            if self._users == 0:
                async with self._lock:
                    if self._users == 0:
                        self._close()

    def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if not sending and data:
            self._rx_seen = True
        return data

    def _make_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        s = self.settings
        if s.transport == "tcp":
            assert s.port is not None
            return AsyncModbusTcpClient(
                s.target,
                port=s.port,
                timeout=s.timeout_s,
                retries=0,
                reconnect_delay=0,  # we reconnect ourselves, with Backoff
                name=self.key,
                trace_packet=self._trace_packet,
            )
        return AsyncModbusSerialClient(
            s.target,
            baudrate=s.baudrate,
            parity=s.parity,
            stopbits=s.stopbits,
            bytesize=8,
            timeout=s.timeout_s,
            retries=0,
            reconnect_delay=0,
            name=self.key,
            trace_packet=self._trace_packet,
        )

    async def _connected(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        loop = asyncio.get_running_loop()
        client = self._client
        if client is not None and client.connected:
            return client
        if client is not None:  # the link dropped under us
            self._close()
            self._bus_down("connection lost")
        if loop.time() < self._retry_at:
            raise BusUnavailable(self._down or "reconnecting")
        client = self._make_client()
        self.stats.connects += 1
        try:
            ok = await client.connect()
        except Exception as exc:  # pyserial and termios raise many kinds
            ok = False
            reason = f"cannot open: {exc}"
        else:
            reason = "cannot connect"
        if not ok or not client.connected:
            client.close()
            self._retry_at = loop.time() + self._backoff.next_delay()
            self._bus_down(reason)
            raise BusUnavailable(reason)
        self._client = client
        self._backoff.reset()
        if self._down is not None:
            self._log.info("modbus.bus_up")
            self._down = None
        return client

    def _bus_down(self, reason: str) -> None:
        if self._down is None:
            self._log.warning("modbus.bus_down", reason=reason)
        self._down = reason

    # ------------------------------------------------------------- requests

    async def exchange(
        self, unit_id: int, call: Callable[[Any], Awaitable[ModbusPDU]]
    ) -> ModbusPDU:
        """Run one request under the bus lock, paced; ``call(client)`` sends it.

        Raises BusUnavailable, NoAnswer, AnswerGarbled or SlaveException.
        """
        async with self._lock:
            client = await self._connected()
            loop = asyncio.get_running_loop()
            wait = self._last_end + self.settings.gap_s - loop.time()
            if wait > 0:
                self.stats.paced_s += wait
                await asyncio.sleep(wait)
            self._rx_seen = False
            self.stats.requests += 1
            try:
                async with asyncio.timeout(self.settings.timeout_s + 1.0):  # a backstop only
                    response = await call(client)
            except (ModbusIOException, TimeoutError):
                if self._rx_seen:
                    self.stats.garbled += 1
                    raise AnswerGarbled(
                        f"unit {unit_id}: no valid answer (noise on the line)"
                    ) from None
                self.stats.no_answer += 1
                raise NoAnswer(
                    f"unit {unit_id}: no answer within {self.settings.timeout_s:g} s"
                ) from None
            except ConnectionException as exc:
                self._close()
                self._bus_down(str(exc))
                raise BusUnavailable(f"connection lost: {exc}") from None
            except ModbusException as exc:
                self.stats.garbled += 1
                raise AnswerGarbled(f"unit {unit_id}: {exc}") from None
            finally:
                self._last_end = loop.time()
            if response.isError():
                self.stats.exceptions += 1
                raise SlaveException(unit_id, response.function_code, response.exception_code)
            self.stats.answered += 1
            self.stats.per_unit[unit_id] = self.stats.per_unit.get(unit_id, 0) + 1
            return response

    async def read(self, unit_id: int, block: ReadBlock) -> list[int] | list[bool]:
        """Read one block; bits come back trimmed to ``block.count``."""
        address, count = block.address, block.count

        def call(client: Any) -> Awaitable[ModbusPDU]:
            method = {
                "holding": client.read_holding_registers,
                "input": client.read_input_registers,
                "coil": client.read_coils,
                "discrete": client.read_discrete_inputs,
            }[block.kind]
            result: Awaitable[ModbusPDU] = method(address, count=count, device_id=unit_id)
            return result

        response = await self.exchange(unit_id, call)
        if block.kind in ("coil", "discrete"):
            bits = list(response.bits[:count])
            if len(bits) < count:
                raise AnswerGarbled(f"unit {unit_id}: {len(bits)} bits for {count}")
            return bits
        registers = list(response.registers)
        if len(registers) != count:
            raise AnswerGarbled(f"unit {unit_id}: {len(registers)} registers for {count}")
        return registers

    async def write(self, unit_id: int, register: ModbusRegister, words: Sequence[int]) -> None:
        """Write a coil (FC 5), one register (FC 6) or several (FC 16)."""

        def call(client: Any) -> Awaitable[ModbusPDU]:
            result: Awaitable[ModbusPDU]
            if register.kind == "coil":
                result = client.write_coil(register.address, bool(words[0]), device_id=unit_id)
            elif len(words) == 1:
                result = client.write_register(register.address, words[0], device_id=unit_id)
            else:
                result = client.write_registers(register.address, list(words), device_id=unit_id)
            return result

        await self.exchange(unit_id, call)


class ModbusBusConflict(DeviceConflict):
    """Two devices on one bus disagree about its settings."""


class ModbusBuses:
    """The gateway's buses by physical port: devices naming the same port share one.

    Create one per gateway and hand it to every Modbus driver.
    """

    def __init__(self) -> None:
        self._buses: dict[str, ModbusBus] = {}

    def bus_for(self, config: ModbusLinkConfig) -> ModbusBus:
        settings = BusSettings.of(config)
        bus = self._buses.get(settings.key)
        if bus is None:
            bus = self._buses[settings.key] = ModbusBus(settings)
        elif bus.settings != settings:
            raise ModbusBusConflict(
                f"device {config.id!r} on {settings.key}: settings differ from another "
                f"device on that bus ({bus.settings} vs {settings})"
            )
        return bus

    def __iter__(self) -> Iterator[ModbusBus]:
        return iter(self._buses.values())


# ---------------------------------------------------------------- drivers


class _ModbusDriverBase:
    """Polls one unit on a shared bus; ONLINE/OFFLINE on state changes only."""

    config: ModbusLinkConfig

    def __init__(self, config: ModbusLinkConfig, emit: Emit, buses: ModbusBuses | None) -> None:
        self.config = config
        self.device_id = config.id
        self.bus = (buses if buses is not None else ModbusBuses()).bus_for(config)
        self.polls = 0  # successful polls, for benchmarks and tests
        self._emit = emit
        self._log = structlog.get_logger(__name__).bind(device=config.id, bus=self.bus.key)
        self._backoff = Backoff(initial=max(config.poll_interval_s, 0.1), cap=5.0)
        self._presence = Presence(config.id, emit, self._log, "modbus")
        self._failures = 0

    async def run(self) -> None:
        """Poll until cancelled; never raises on device or bus errors."""
        async with self.bus.attached():
            while True:
                try:
                    await self._poll()
                except BusUnavailable as exc:
                    await self._failed(str(exc), at_once=True)
                except ModbusBusError as exc:
                    await self._failed(str(exc), at_once=False)
                else:
                    self.polls += 1
                    self._failures = 0
                    if await self._presence.up(unit=self.config.unit_id):
                        self._backoff.reset()
                    await asyncio.sleep(self.config.poll_interval_s)

    async def _poll(self) -> None:
        raise NotImplementedError

    async def _failed(self, detail: str, *, at_once: bool) -> None:
        self._failures += 1
        if at_once or self._failures >= self.config.offline_after:
            await self._presence.down(detail, unit=self.config.unit_id)
            await asyncio.sleep(self._backoff.next_delay())
        else:
            await asyncio.sleep(self.config.poll_interval_s)

    async def _read(self, blocks: Sequence[ReadBlock]) -> dict[str, float]:
        values: dict[str, float] = {}
        for block in blocks:
            raw = await self.bus.read(self.config.unit_id, block)
            for register in block.registers:
                offset = register.address - block.address
                values[register.name] = decode_value(
                    register, raw[offset : offset + register.width]
                )
        return values

    async def _write(self, register: ModbusRegister, value: float) -> None:
        try:
            words = encode_value(register, value)
        except ValueError as exc:
            raise CommandRejected(f"{register.name}: {exc}") from None
        try:
            await self.bus.write(self.config.unit_id, register, words)
        except ModbusBusError as exc:
            raise CommandFailed(str(exc)) from None


class ModbusScaleDriver(_ModbusDriverBase):
    """A Modbus weighing terminal: stable weights are LEDGER readings, unstable TELEMETRY.

    A settled weight is reported once (not again while it sits there); back to zero is
    a TELEMETRY update, so the same load placed again counts again.
    """

    config: ModbusScaleConfig

    def __init__(
        self, config: ModbusScaleConfig, emit: Emit, *, buses: ModbusBuses | None = None
    ) -> None:
        super().__init__(config, emit, buses)
        self._blocks = plan_reads([config.weight, config.stable])
        self._settled: float | None = None  # the last stable weight reported
        self._last_telemetry = -math.inf

    async def _poll(self) -> None:
        values = await self._read(self._blocks)
        weight = round(values[self.config.weight.name], 9)
        stable = values[self.config.stable.name] >= 0.5
        await self._on_weight(weight, stable)

    async def _on_weight(self, weight: float, stable: bool) -> None:
        unit = self.config.unit
        if not stable:
            now = time.monotonic()
            if now - self._last_telemetry >= TELEMETRY_MIN_INTERVAL_S:
                self._last_telemetry = now
                await self._emit(
                    self.device_id,
                    TrafficClass.TELEMETRY,
                    WeightReading(weight=weight, unit=unit, stable=False),
                )
            return
        epsilon = 2 * self.config.resolution  # two display counts
        previous = self._settled
        if previous is not None and abs(previous - weight) <= epsilon:
            return
        self._settled = weight
        reading = WeightReading(weight=weight, unit=unit, stable=True)
        if abs(weight) <= epsilon:
            if previous is not None:  # back to zero: a live update, not a business event
                await self._emit(self.device_id, TrafficClass.TELEMETRY, reading)
            return
        await self._emit(self.device_id, TrafficClass.LEDGER, reading)

    async def zero(self) -> None:
        """Zero the scale through its zero coil/register; raises CommandRejected/Failed."""
        if self.config.zero is None:
            raise CommandRejected(f"{self.device_id} declares no zero register")
        await self._write(self.config.zero, 1)
        self._settled = None

    async def execute(self, action: str, args: dict[str, Any]) -> str:
        """Hub commands: ``zero``."""
        if action == "zero":
            await self.zero()
            return "zero requested"
        raise CommandRejected(f"a Modbus scale takes 'zero', not {action!r}")


class ModbusDeviceDriver(_ModbusDriverBase):
    """A generic polled device: TELEMETRY on change; AgvState for role "agv" with x/y."""

    config: ModbusDeviceConfig

    def __init__(
        self, config: ModbusDeviceConfig, emit: Emit, *, buses: ModbusBuses | None = None
    ) -> None:
        super().__init__(config, emit, buses)
        self._blocks = plan_reads(config.registers)
        self._by_name = {r.name: r for r in config.registers}
        self._units = {r.name: r.unit for r in config.registers if r.unit}
        self._last_values: dict[str, float] | None = None
        self._last_agv: AgvState | None = None
        names = set(self._by_name)
        self._agv = config.role == "agv" and {"x", "y"} <= names

    @property
    def values(self) -> dict[str, float] | None:
        """The last values read (None before the first good poll)."""
        return self._last_values

    async def _poll(self) -> None:
        values = await self._read(self._blocks)
        if values == self._last_values:
            return
        self._last_values = values
        await self._emit(
            self.device_id, TrafficClass.TELEMETRY, Telemetry(values=values, unit=self._units)
        )
        if self._agv:
            state = AgvState(
                x=values["x"],
                y=values["y"],
                theta=values.get("theta", 0.0),
                driving=values.get("driving", 0.0) >= 0.5,
                battery=values.get("battery"),
            )
            if state != self._last_agv:
                self._last_agv = state
                await self._emit(self.device_id, TrafficClass.TELEMETRY, state)

    async def execute(self, action: str, args: dict[str, Any]) -> str:
        """Hub commands: ``write_register`` with ``{"name": …, "value": …}``."""
        if action != "write_register":
            raise CommandRejected(f"a Modbus device takes 'write_register', not {action!r}")
        name, value = args.get("name"), args.get("value")
        register = self._by_name.get(name) if isinstance(name, str) else None
        if register is None:
            raise CommandRejected(f"{self.device_id} has no register named {name!r}")
        if not register.writable:
            raise CommandRejected(f"register {name!r} is not writable")
        if not isinstance(value, int | float):  # a bool is an int: fine for a coil
            raise CommandRejected(f"value must be a number, not {value!r}")
        await self._write(register, float(value))
        return f"{name}={value:g}"


# ------------------------------------------------------------- registry entry

SCALE_SPEC = DriverSpec(
    kind="modbus_scale",
    config=ModbusScaleConfig,
    build=lambda config, context: ModbusScaleDriver(
        config, context.emit, buses=context.modbus_buses
    ),
    example=(
        'transport = "tcp"\nhost = "10.0.3.40"\nport = 502\n'
        'weight = { name = "weight", address = 0, kind = "input", data_type = "int32" }\n'
        'stable = { name = "stable", address = 2, kind = "input", bit = 0 }'
    ),
)

DEVICE_SPEC = DriverSpec(
    kind="modbus_device",
    config=ModbusDeviceConfig,
    build=lambda config, context: ModbusDeviceDriver(
        config, context.emit, buses=context.modbus_buses
    ),
    example=(
        'transport = "tcp"\nhost = "10.0.3.40"\nport = 502\n'
        'registers = [{ name = "speed", address = 0, kind = "input" }]'
    ),
)
