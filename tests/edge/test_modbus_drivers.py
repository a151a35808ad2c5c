"""The Modbus drivers against the simulated slaves over real Modbus TCP and a real RTU pty."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from structlog.testing import capture_logs

from tests.support.drivers import EmitCollector, running
from warelink.edge.drivers.base import CommandFailed, CommandRejected
from warelink.edge.drivers.modbus import (
    ModbusBusConflict,
    ModbusBuses,
    ModbusDeviceConfig,
    ModbusDeviceDriver,
    ModbusRegister,
    ModbusScaleConfig,
    ModbusScaleDriver,
    decode_value,
    encode_value,
    plan_reads,
)
from warelink.protocol.messages import (
    AgvState,
    DeviceState,
    DeviceStatus,
    Telemetry,
    WeightReading,
)
from warelink.sim.modbus_devices import (
    AgvSlave,
    ConveyorSlave,
    Fault,
    ModbusRtuLine,
    ModbusSlave,
    ModbusTcpSlaves,
    ScaleSlave,
)

BAUD = 19200


async def eventually(check: Callable[[], bool], within: float = 8.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within} s")
        await asyncio.sleep(0.02)


def registers(slave: ModbusSlave) -> list[ModbusRegister]:
    return [ModbusRegister.model_validate(r) for r in slave.register_map()]


def link(port: int | None = None, path: Path | None = None, **extra: Any) -> dict[str, Any]:
    if port is not None:
        return {"transport": "tcp", "host": "127.0.0.1", "port": port, **extra}
    # A pty takes no parity: 8N2, the Modbus framing for "no parity".
    return {
        "transport": "rtu",
        "serial_port": str(path),
        "baudrate": BAUD,
        "parity": "N",
        "stopbits": 2,
        **extra,
    }


def scale_config(device: str, unit: int, where: dict[str, Any], **extra: Any) -> ModbusScaleConfig:
    regs = {r.name: r for r in registers(ScaleSlave(1, random.Random(0)))}
    return ModbusScaleConfig(
        kind="modbus_scale",
        id=device,
        unit_id=unit,
        weight=regs["weight"],
        stable=regs["stable"],
        zero=regs["zero"],
        **where,
        **extra,
    )


def device_config(
    device: str, unit: int, slave: ModbusSlave, role: str, where: dict[str, Any], **extra: Any
) -> ModbusDeviceConfig:
    return ModbusDeviceConfig.model_validate(
        {
            "kind": "modbus_device",
            "id": device,
            "unit_id": unit,
            "role": role,
            "registers": slave.register_map(),
            **where,
            **extra,
        }
    )


# ------------------------------------------------------------------ Modbus TCP


async def test_tcp_scale_stable_weight_is_one_ledger_reading() -> None:
    scale = ScaleSlave(4, random.Random(21), settle_s=(0.4, 0.8))
    out = EmitCollector()
    async with ModbusTcpSlaves([scale]) as server:
        driver = ModbusScaleDriver(
            scale_config("scale-1", 4, link(server.port), poll_interval_s=0.05), out
        )
        async with running(driver):
            await eventually(lambda: out.states("scale-1") == [DeviceState.ONLINE])
            scale.place(12.5)
            await eventually(lambda: len(out.ledger("scale-1")) == 1)
            await asyncio.sleep(0.5)  # it sits there: no repeats
            (reading,) = out.ledger("scale-1")
            assert reading == WeightReading(weight=12.5, unit="kg", stable=True)
            unstable = [r for r in out.bodies(WeightReading, device="scale-1") if not r.stable]
            assert 1 <= len(unstable) <= 3  # settling, downsampled to ≤ 2/s

            # Zero through the coil: refused by the scale with a load on it (no error on
            # the bus, the terminal just ignores it), accepted once emptied.
            scale.remove()
            await eventually(
                lambda: (
                    WeightReading(0.0, "kg", True) in out.bodies(WeightReading, device="scale-1")
                )
            )
            assert await driver.execute("zero", {}) == "zero requested"
            with pytest.raises(CommandRejected):
                await driver.execute("tare", {})
            scale.place(7.25)
            await eventually(lambda: len(out.ledger("scale-1")) == 2)
            assert out.ledger("scale-1")[1].weight == 7.25
        assert out.states("scale-1") == [DeviceState.ONLINE]


async def test_tcp_conveyor_started_and_stopped_by_execute() -> None:
    conveyor = ConveyorSlave(2, random.Random(22), speed_mm_s=800, pitch_mm=150.0)
    out = EmitCollector()
    async with ModbusTcpSlaves([conveyor]) as server:
        config = device_config(
            "conv-1", 2, conveyor, "conveyor", link(server.port), poll_interval_s=0.05
        )
        driver = ModbusDeviceDriver(config, out)
        async with running(driver):
            await eventually(lambda: driver.values is not None)
            assert driver.values is not None and driver.values["running"] == 0.0

            assert (
                await driver.execute("write_register", {"name": "command", "value": 1})
                == "command=1"
            )
            await eventually(lambda: driver.values is not None and driver.values["speed"] == 800)
            await eventually(lambda: driver.values is not None and driver.values["items"] >= 2)
            assert conveyor.running
            telemetry = out.bodies(Telemetry, device="conv-1")
            assert telemetry[-1].unit == {"speed_setpoint": "mm/s", "speed": "mm/s"}

            await driver.execute("write_register", {"name": "command", "value": 0})
            await eventually(lambda: driver.values is not None and driver.values["speed"] == 0)
            assert not conveyor.running and driver.values is not None
            assert driver.values["running"] == 0.0

            for args in (
                {"name": "speed", "value": 3},  # an input register
                {"name": "nope", "value": 1},
                {"name": "command", "value": "fast"},
                {"name": "command", "value": 70000},  # does not fit uint16
            ):
                with pytest.raises(CommandRejected):
                    await driver.execute("write_register", args)
            with pytest.raises(CommandRejected):
                await driver.execute("start", {})
        # Telemetry only on change: a stopped conveyor reads the same values every poll.
        values = [t.values for t in out.bodies(Telemetry, device="conv-1")]
        assert all(a != b for a, b in itertools.pairwise(values))


# ------------------------------------------------------------------ Modbus RTU


KINDS = ["scale", "conveyor", "agv", "scale", "conveyor", "agv", "scale", "conveyor"]


@asynccontextmanager
async def rtu_floor(
    tmp_path: Path, seed: int, **extra: Any
) -> AsyncIterator[tuple[ModbusRtuLine, list[ModbusSlave], list[Any], EmitCollector, ModbusBuses]]:
    """8 slaves on one RTU line, 8 drivers on one shared bus."""
    rng = random.Random(seed)
    path = tmp_path / "ttyRS485"
    slaves: list[ModbusSlave] = []
    for unit, kind in enumerate(KINDS, start=1):
        sub = random.Random(rng.random())
        if kind == "scale":
            slaves.append(ScaleSlave(unit, sub, settle_s=(0.2, 0.4)))
        elif kind == "conveyor":
            slaves.append(ConveyorSlave(unit, sub))
        else:
            slaves.append(AgvSlave(unit, sub))
    out = EmitCollector()
    buses = ModbusBuses()
    where = link(path=path, timeout_s=0.2, **extra)
    drivers: list[Any] = []
    for slave, kind in zip(slaves, KINDS, strict=True):
        device = f"{kind}-{slave.unit_id}"
        if kind == "scale":
            drivers.append(
                ModbusScaleDriver(
                    scale_config(device, slave.unit_id, where, poll_interval_s=0.05),
                    out,
                    buses=buses,
                )
            )
        else:
            config = device_config(device, slave.unit_id, slave, kind, where, poll_interval_s=0.05)
            drivers.append(ModbusDeviceDriver(config, out, buses=buses))
    async with ModbusRtuLine(path, slaves, rng, baudrate=BAUD) as line:
        yield line, slaves, drivers, out, buses


async def test_rtu_eight_slaves_one_bus_never_overlaps(tmp_path: Path) -> None:
    async with rtu_floor(tmp_path, 31) as (line, slaves, drivers, out, buses), running(*drivers):
        assert len(list(buses)) == 1  # eight configs, one physical bus
        (bus,) = buses
        await eventually(lambda: all(d.polls >= 5 for d in drivers))
        scale = slaves[0]
        assert isinstance(scale, ScaleSlave)
        scale.place(3.5)
        await eventually(lambda: len(out.ledger("scale-1")) == 1)
        assert out.ledger("scale-1")[0].weight == 3.5

        assert line.overlaps == 0
        assert set(line.answered) == set(range(1, 9))
        assert bus.stats.no_answer == 0 and bus.stats.garbled == 0
        # Polled in turn: nobody starves (the bus lock is FIFO).
        polls = [d.polls for d in drivers]
        assert min(polls) * 2 >= max(polls), polls
        agv_states = out.bodies(AgvState, device="agv-3")
        assert agv_states and agv_states[-1].battery is not None
        assert any(s.driving for s in agv_states)
        for driver in drivers:
            assert out.states(driver.device_id) == [DeviceState.ONLINE]


async def test_rtu_silent_slave_offline_once_others_keep_working(tmp_path: Path) -> None:
    with capture_logs() as logs:
        async with rtu_floor(tmp_path, 32) as (line, slaves, drivers, out, _), running(*drivers):
            await eventually(lambda: all(d.polls >= 2 for d in drivers))
            silent = slaves[4]  # conveyor-5
            silent.fault = Fault.SILENT
            await eventually(
                lambda: out.states("conveyor-5") == [DeviceState.ONLINE, DeviceState.OFFLINE]
            )
            before = {d.device_id: d.polls for d in drivers}
            await asyncio.sleep(1.5)
            assert out.states("conveyor-5") == [DeviceState.ONLINE, DeviceState.OFFLINE]
            for driver in drivers:
                if driver.device_id != "conveyor-5":
                    assert driver.polls >= before[driver.device_id] + 3, driver.device_id
                    assert out.states(driver.device_id) == [DeviceState.ONLINE]
            (status,) = [
                s
                for s in out.bodies(DeviceStatus, device="conveyor-5")
                if s.state is DeviceState.OFFLINE
            ]
            assert "no answer" in status.detail
            with pytest.raises(CommandFailed):
                await drivers[4].execute("write_register", {"name": "command", "value": 1})

            silent.fault = Fault.NONE
            await eventually(
                lambda: (
                    out.states("conveyor-5")
                    == [DeviceState.ONLINE, DeviceState.OFFLINE, DeviceState.ONLINE]
                )
            )
            assert line.overlaps == 0
    offline = [e for e in logs if e["event"] == "modbus.offline"]
    assert [e["device"] for e in offline] == ["conveyor-5"]


async def test_rtu_garbage_on_the_line_then_recovery(tmp_path: Path) -> None:
    async with rtu_floor(tmp_path, 33) as (line, slaves, drivers, out, buses), running(*drivers):
        (bus,) = buses
        await eventually(lambda: all(d.polls >= 2 for d in drivers))
        noisy = slaves[6]  # scale-7 answers with noise from now on
        noisy.fault = Fault.GARBAGE
        for _ in range(10):  # and bursts of noise on the line at random moments
            await line.inject_garbage(16)
            await asyncio.sleep(0.07)
        await eventually(lambda: out.states("scale-7") == [DeviceState.ONLINE, DeviceState.OFFLINE])
        assert bus.stats.garbled >= 1
        (status,) = [
            s for s in out.bodies(DeviceStatus, device="scale-7") if s.state is DeviceState.OFFLINE
        ]
        assert "noise" in status.detail

        noisy.fault = Fault.NONE
        await eventually(lambda: out.states("scale-7")[-1] is DeviceState.ONLINE)
        assert isinstance(noisy, ScaleSlave)
        noisy.place(9.75)
        await eventually(lambda: len(out.ledger("scale-7")) == 1)
        polls = {d.device_id: d.polls for d in drivers}
        await eventually(lambda: all(d.polls > polls[d.device_id] + 2 for d in drivers))
        assert line.overlaps == 0


async def test_rtu_port_missing_then_present(tmp_path: Path) -> None:
    path = tmp_path / "ttyLATE"
    out = EmitCollector()
    buses = ModbusBuses()
    where = link(path=path, timeout_s=0.2)
    rng = random.Random(34)
    slaves: list[ModbusSlave] = [ScaleSlave(1, rng), AgvSlave(2, rng)]
    drivers: list[Any] = [
        ModbusScaleDriver(scale_config("s", 1, where, poll_interval_s=0.05), out, buses=buses),
        ModbusDeviceDriver(
            device_config("a", 2, slaves[1], "agv", where, poll_interval_s=0.05), out, buses=buses
        ),
    ]
    with capture_logs() as logs:
        async with running(*drivers):
            await eventually(
                lambda: (
                    out.states("s") == [DeviceState.OFFLINE]
                    and out.states("a") == [DeviceState.OFFLINE]
                )
            )
            async with ModbusRtuLine(path, slaves, rng, baudrate=BAUD):
                await eventually(
                    lambda: (
                        out.states("s")[-1] is DeviceState.ONLINE
                        and out.states("a")[-1] is DeviceState.ONLINE
                    ),
                    within=12,
                )
    down = [e for e in logs if e["event"] == "modbus.bus_down"]
    assert len(down) == 1  # the bus logs its outage once, however many retries failed


# ------------------------------------------------------------------ config and codecs


def test_config_validation_and_bus_sharing(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="needs host and port"):
        ModbusDeviceConfig.model_validate(
            {
                "kind": "modbus_device",
                "id": "d",
                "transport": "tcp",
                "registers": [{"name": "a", "address": 0}],
            }
        )
    with pytest.raises(ValidationError, match="needs serial_port"):
        ModbusDeviceConfig.model_validate(
            {
                "kind": "modbus_device",
                "id": "d",
                "transport": "rtu",
                "registers": [{"name": "a", "address": 0}],
            }
        )
    with pytest.raises(ValidationError, match="declared twice"):
        ModbusDeviceConfig.model_validate(
            {
                "kind": "modbus_device",
                "id": "d",
                **link(502),
                "registers": [{"name": "a", "address": 0}, {"name": "a", "address": 1}],
            }
        )
    with pytest.raises(ValidationError, match="only whole holding registers and coils"):
        ModbusRegister(name="r", address=0, kind="input", writable=True)
    with pytest.raises(ValidationError, match="a coil is one bit"):
        ModbusRegister(name="r", address=0, kind="coil", data_type="float32")
    with pytest.raises(ValidationError, match="stable must be"):
        ModbusScaleConfig(
            kind="modbus_scale",
            id="s",
            **link(502),
            weight=ModbusRegister(name="w", address=0),
            stable=ModbusRegister(name="st", address=2),
        )

    buses = ModbusBuses()
    path = tmp_path / "tty"
    a = scale_config("a", 1, link(path=path))
    b = scale_config("b", 2, link(path=path))
    c = scale_config("c", 3, link(path=path, baudrate=9600))
    d = scale_config("d", 1, link(502))
    assert buses.bus_for(a) is buses.bus_for(b)
    assert buses.bus_for(d) is not buses.bus_for(a)
    with pytest.raises(ModbusBusConflict, match="settings differ"):
        buses.bus_for(c)


def test_plan_reads_merges_contiguous_spans_only() -> None:
    regs = registers(AgvSlave(1, random.Random(0)))
    blocks = plan_reads(regs)
    assert [(b.kind, b.address, b.count) for b in blocks] == [("input", 0, 7), ("holding", 0, 1)]
    gap = [
        ModbusRegister(name="a", address=0),
        ModbusRegister(name="b", address=5, data_type="uint32"),
    ]
    assert [(b.address, b.count) for b in plan_reads(gap)] == [(0, 1), (5, 2)]


def test_decode_known_words() -> None:
    f32 = ModbusRegister(name="x", address=0, data_type="float32")
    assert decode_value(f32, [0x4148, 0x0000]) == 12.5
    f32_le = ModbusRegister(name="x", address=0, data_type="float32", word_order="little")
    assert decode_value(f32_le, [0x0000, 0x4148]) == 12.5
    i32 = ModbusRegister(name="w", address=0, data_type="int32", scale=0.001)
    assert decode_value(i32, [0xFFFF, 0xFFFE]) == pytest.approx(-0.002)
    i16 = ModbusRegister(name="t", address=0, data_type="int16")
    assert decode_value(i16, [0x8000]) == -32768
    flag = ModbusRegister(name="f", address=0, bit=3)
    assert decode_value(flag, [0b1000]) == 1.0 and decode_value(flag, [0b0111]) == 0.0


@given(
    st.sampled_from(["uint16", "int16", "uint32", "int32"]),
    st.sampled_from(["big", "little"]),
    st.integers(min_value=-(2**31), max_value=2**32 - 1),
)
def test_integer_encode_decode_round_trip(data_type: Any, order: Any, raw: int) -> None:
    register = ModbusRegister(name="r", address=0, data_type=data_type, word_order=order, scale=0.5)
    try:
        words = encode_value(register, raw * 0.5)
    except ValueError:
        return  # out of the type's range: rejected, never wrapped
    assert all(0 <= w <= 0xFFFF for w in words) and len(words) == register.width
    assert decode_value(register, words) == raw * 0.5


@given(
    st.floats(width=32, allow_nan=False, allow_infinity=False), st.sampled_from(["big", "little"])
)
def test_float_encode_decode_round_trip(value: float, order: Any) -> None:
    register = ModbusRegister(name="r", address=0, data_type="float32", word_order=order)
    assert decode_value(register, encode_value(register, value)) == value
