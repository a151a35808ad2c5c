"""The MT-SICS driver against the simulated scale on a real pty."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.support.drivers import EmitCollector, running
from warelink.edge.device_config import MtSicsScaleConfig
from warelink.edge.drivers.mtsics_scale import MtSicsScaleDriver, ScaleCommandError
from warelink.protocol.messages import (
    DeviceState,
    TrafficClass,
    WeightReading,
)
from warelink.sim.scale import SimulatedScale

DEVICE = "scale-1"


async def eventually(check: Callable[[], bool], within: float = 6.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within} s")
        await asyncio.sleep(0.02)


def config(path: Path) -> MtSicsScaleConfig:
    return MtSicsScaleConfig(
        kind="mtsics_scale", id=DEVICE, port=str(path), poll_interval_s=0.05, timeout_s=1.0
    )


def near(reading: WeightReading, value: float) -> bool:
    return abs(reading.weight - value) < 0.002 and reading.unit == "kg"


async def test_one_ledger_reading_per_settled_weight(tmp_path: Path) -> None:
    path = tmp_path / "scale"
    out = EmitCollector()
    driver = MtSicsScaleDriver(config(path), out)
    async with SimulatedScale(path, random.Random(11)) as scale, running(driver):
        await eventually(lambda: out.states() == [DeviceState.ONLINE])
        scale.place(12.5)
        await eventually(lambda: len(out.ledger()) == 1)
        await asyncio.sleep(0.6)  # the weight sits there: no repeats

        (reading,) = out.ledger()
        assert reading.stable and near(reading, 12.5)
        unstable = [r for r in out.bodies(WeightReading, TrafficClass.TELEMETRY) if not r.stable]
        assert unstable, "settling weights are reported as telemetry"
        assert all(0.0 <= r.weight <= 14.0 for r in unstable)
        # ≤ 2/s: settling takes at most 1.5 s, so no more than 4 unstable readings.
        assert len(unstable) <= 4

        # Off the pan (back to zero) and the same load again: a new business event.
        scale.remove()
        await eventually(lambda: any(b == WeightReading(0.0, "kg", True) for _, _, b in out.events))
        scale.place(12.5)
        await eventually(lambda: len(out.ledger()) == 2)
        assert near(out.ledger()[1], 12.5)
        assert out.states() == [DeviceState.ONLINE]


async def test_garbage_logged_once_and_readings_continue(tmp_path: Path) -> None:
    path = tmp_path / "scale"
    out = EmitCollector()
    with capture_logs() as logs:
        driver = MtSicsScaleDriver(config(path), out)
        async with SimulatedScale(path, random.Random(4)) as scale, running(driver):
            await eventually(lambda: out.states() == [DeviceState.ONLINE])
            scale.place(3.25)
            for _ in range(3):  # one burst, in pieces
                await scale.inject_garbage(30)
            await eventually(lambda: len(out.ledger()) == 1)
            assert near(out.ledger()[0], 3.25)

            scale.place(8.0)
            await scale.inject_garbage(400)  # longer than a line may be
            await eventually(lambda: len(out.ledger()) == 2)
            assert near(out.ledger()[1], 8.0)

    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [e["event"] for e in warnings] == ["mtsics.garbage", "mtsics.garbage"]
    assert all(e["lines"] >= 1 for e in warnings)
    assert out.states() == [DeviceState.ONLINE]  # garbage is not an outage


async def test_offline_once_then_online_again(tmp_path: Path) -> None:
    path = tmp_path / "scale"
    out = EmitCollector()
    scale = SimulatedScale(path, random.Random(9), settle_s=(0.2, 0.4))
    with capture_logs() as logs:
        driver = MtSicsScaleDriver(config(path), out)
        async with running(driver):
            async with scale:
                await eventually(lambda: out.states() == [DeviceState.ONLINE])
                scale.place(5.0)
                await eventually(lambda: len(out.ledger()) == 1)

            # The port is gone: one OFFLINE, however many reconnects fail meanwhile.
            await eventually(lambda: out.states() == [DeviceState.ONLINE, DeviceState.OFFLINE])
            await asyncio.sleep(1.0)
            assert out.states() == [DeviceState.ONLINE, DeviceState.OFFLINE]
            with pytest.raises(ScaleCommandError):
                await driver.zero()

            async with scale:  # back at the same path
                await eventually(
                    lambda: (
                        out.states()
                        == [DeviceState.ONLINE, DeviceState.OFFLINE, DeviceState.ONLINE]
                    )
                )
                scale.place(7.5)
                await eventually(lambda: len(out.ledger()) == 2)
                assert near(out.ledger()[1], 7.5)

    offline_logs = [e for e in logs if e["event"] == "mtsics.offline"]
    online_logs = [e for e in logs if e["event"] == "mtsics.online"]
    assert len(offline_logs) == 1 and len(online_logs) == 2
    assert all(e["device"] == DEVICE for e in offline_logs + online_logs)


async def test_zero_and_tare_through_the_request_path(tmp_path: Path) -> None:
    path = tmp_path / "scale"
    out = EmitCollector()
    driver = MtSicsScaleDriver(config(path), out)
    async with (
        SimulatedScale(path, random.Random(2), settle_s=(0.2, 0.3)) as scale,
        running(driver),
    ):
        await eventually(lambda: out.states() == [DeviceState.ONLINE])
        scale.place(0.5)  # a pallet-sized crumb within the zero range
        await driver.zero()
        scale.place(2.5)
        assert await driver.tare() == pytest.approx(2.0)
        scale.place(80.0)  # over capacity: the zero range is exceeded
        await asyncio.sleep(0.5)
        with pytest.raises(ScaleCommandError, match="above range"):
            await driver.zero()
