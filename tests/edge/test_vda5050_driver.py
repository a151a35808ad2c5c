"""The VDA 5050 AGV driver against the simulated vehicle, through the real Mosquitto."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pydantic
import pytest
from structlog.testing import capture_logs

from tests.conftest import MQTT_HOST, MQTT_PORT
from tests.support.drivers import EmitCollector
from warelink.edge.drivers.base import Backoff, CommandFailed, CommandRejected
from warelink.edge.drivers.vda5050_agv import Vda5050AgvConfig, Vda5050AgvDriver
from warelink.protocol.messages import (
    AgvState,
    DeviceState,
    DeviceStatus,
    Movement,
    TrafficClass,
)
from warelink.protocol.vda5050 import ConnectionState, Topic
from warelink.sim.agv import SimulatedAgv

WAIT_S = 8.0
STATE_INTERVAL_S = 0.4

GRAPH: dict[str, Any] = {
    "nodes": [
        {"id": "A", "x": 0.0, "y": 0.0, "location": "DOCK-1"},
        {"id": "B", "x": 1.0, "y": 0.0},
        {"id": "C", "x": 2.0, "y": 0.0, "location": "RACK-1"},
        {"id": "D", "x": 1.0, "y": 1.0, "location": "RACK-2"},
    ],
    "edges": [{"start": "A", "end": "B"}, {"start": "B", "end": "C"}, {"start": "B", "end": "D"}],
}

TRANSPORT = {
    "from": "DOCK-1",
    "to": "RACK-2",
    "gtin": "09506000134352",
    "quantity": 12,
    "lot": "L2611A",
    "lpn": "00395060001343520019",
}


def make_config(interface: str, **overrides: Any) -> Vda5050AgvConfig:
    fields: dict[str, Any] = {
        "kind": "vda5050_agv",
        "id": "agv-7",
        "manufacturer": "warelink",
        "serial_number": "sim-0007",
        "interface_name": interface,
        "broker_url": f"mqtt://{MQTT_HOST}:{MQTT_PORT}",
        "graph": GRAPH,
        "state_interval_s": STATE_INTERVAL_S,
        "telemetry_interval_s": 0.1,
        "order_ack_timeout_s": 2.0,
        "order_timeout_s": 10.0,
    } | overrides
    return Vda5050AgvConfig.model_validate(fields)


class Floor:
    def __init__(self, agv: SimulatedAgv, driver: Vda5050AgvDriver, events: EmitCollector) -> None:
        self.agv = agv
        self.driver = driver
        self.events = events


@asynccontextmanager
async def floor(**sim_options: float) -> AsyncIterator[Floor]:
    """A simulated AGV and its driver on a topic prefix of their own."""
    interface = f"wltest-{uuid.uuid4().hex[:12]}/uagv"
    config = make_config(interface)
    options: dict[str, float] = {
        "speed_m_s": 8.0,
        "state_interval_s": STATE_INTERVAL_S,
        "visualization_interval_s": 0.05,
        "action_duration_s": 0.1,
    } | sim_options
    agv = SimulatedAgv(
        config.floor_graph(),
        host=MQTT_HOST,
        port=MQTT_PORT,
        manufacturer=config.manufacturer,
        serial_number=config.serial_number,
        interface_name=interface,
        start_node="A",
        **options,  # type: ignore[arg-type]
    )
    events = EmitCollector(wait_s=WAIT_S)
    driver = Vda5050AgvDriver(config, events, backoff=Backoff(initial=0.05, cap=0.2))
    try:
        async with agv, asyncio.TaskGroup() as tg:
            task = tg.create_task(driver.run(), name="driver-agv-7")
            try:
                await events.wait_for(lambda: events.states() == [DeviceState.ONLINE])
                yield Floor(agv, driver, events)
            finally:
                task.cancel()
    finally:
        await agv.clear_retained()


async def test_transport_gives_exactly_one_movement() -> None:
    async with floor() as f:
        detail = await f.driver.execute("transport", TRANSPORT | {"order_id": "T-1"})
        assert "T-1 finished" in detail
        assert f.agv.last_node_id == "D" and f.agv.orders_received == 1
        await asyncio.sleep(3 * 0.1)  # the last positions drain through the conflation
    ledger = [(d, b) for d, c, b in f.events.events if c is TrafficClass.LEDGER]
    assert ledger == [
        (
            "agv-7",
            Movement(
                from_location="DOCK-1",
                to_location="RACK-2",
                gtin="09506000134352",
                quantity=12,
                lot="L2611A",
                lpn="00395060001343520019",
            ),
        )
    ]
    positions: list[AgvState] = f.events.bodies(AgvState)
    assert any(p.driving for p in positions)
    assert positions[-1].last_node == "D" and positions[-1].order_id == "T-1"
    assert (positions[-1].x, positions[-1].y) == (1.0, 1.0)
    assert all(
        c is TrafficClass.TELEMETRY for _, c, b in f.events.events if isinstance(b, AgvState)
    )
    assert f.events.states() == [DeviceState.ONLINE]
    assert f.driver.header_gaps == 0


async def test_positions_are_conflated() -> None:
    async with floor(speed_m_s=1.0, visualization_interval_s=0.02) as f:
        started = asyncio.get_running_loop().time()
        await f.driver.execute("transport", TRANSPORT | {"to": "RACK-1"})
        elapsed = asyncio.get_running_loop().time() - started
    positions = f.events.bodies(AgvState)
    # ~2 s of driving at 50 visualizations/s; the driver sends at most 10/s.
    assert 5 <= len(positions) <= elapsed / 0.1 + 3


async def test_a_resent_transport_is_idempotent() -> None:
    async with floor(speed_m_s=3.0) as f:
        args = TRANSPORT | {"order_id": "T-2"}
        first, second = await asyncio.gather(
            f.driver.execute("transport", args), f.driver.execute("transport", dict(args))
        )
        third = await f.driver.execute("transport", dict(args))
        assert first == second == third
        assert f.agv.orders_received == 1  # one order on the wire, never a second
        with pytest.raises(CommandRejected, match="another transport"):
            await f.driver.execute("transport", args | {"quantity": 3})
    assert len(f.events.bodies(Movement)) == 1


async def test_second_transport_starts_where_the_vehicle_stands() -> None:
    async with floor() as f:
        await f.driver.execute("transport", TRANSPORT | {"order_id": "T-3"})
        back = {"from": "RACK-2", "to": "RACK-1", "gtin": "09506000134352", "quantity": 1}
        await f.driver.execute("transport", back | {"order_id": "T-4"})
        assert f.agv.last_node_id == "C"
    moves = f.events.bodies(Movement)
    assert [(m.from_location, m.to_location) for m in moves] == [
        ("DOCK-1", "RACK-2"),
        ("RACK-2", "RACK-1"),
    ]


async def test_header_gap_is_detected_once() -> None:
    async with floor() as f:
        with capture_logs() as logs:
            f.agv.skip_header(Topic.STATE)
            f.agv.skip_header(Topic.VISUALIZATION, count=2)
            await asyncio.sleep(3 * STATE_INTERVAL_S)
        gaps = [e for e in logs if e["event"] == "vda5050.header_gap"]
        assert f.driver.header_gaps == 2
    assert sorted((g["topic"], g["missing"]) for g in gaps) == [("state", 1), ("visualization", 2)]


async def test_dropped_vehicle_goes_offline_once_by_state_staleness() -> None:
    async with floor() as f:
        f.agv.drop_connection(offline_s=4 * STATE_INTERVAL_S)
        await f.events.wait_for(
            lambda: (
                f.events.states() == [DeviceState.ONLINE, DeviceState.OFFLINE, DeviceState.ONLINE]
            )
        )
        await asyncio.sleep(2 * STATE_INTERVAL_S)
        assert f.events.states() == [DeviceState.ONLINE, DeviceState.OFFLINE, DeviceState.ONLINE]
    offline = f.events.bodies(DeviceStatus)[1]
    assert offline.detail.startswith("no state for")


async def test_connection_online_alone_is_not_health() -> None:
    """A vehicle whose retained connection says ONLINE but which sends no state is offline."""
    async with floor() as f:
        f.agv.state_interval_s = 60.0  # from now on it only reports on changes
        await f.events.wait_for(lambda: DeviceState.OFFLINE in f.events.states())
        assert f.driver.vehicle_connection is ConnectionState.ONLINE
        with pytest.raises(CommandFailed, match="offline"):
            await f.driver.execute("transport", TRANSPORT)


async def test_cancel_fails_the_transport_and_pause_resume() -> None:
    async with floor(speed_m_s=1.0) as f:
        running = asyncio.create_task(
            f.driver.execute("transport", TRANSPORT | {"order_id": "T-5"})
        )
        try:
            await f.events.wait_for(lambda: any(p.driving for p in f.events.bodies(AgvState)))
            assert await f.driver.execute("pause", {}) == "startPause done"
            assert f.agv.paused and not f.agv.driving
            assert await f.driver.execute("resume", {}) == "stopPause done"
            assert await f.driver.execute("cancel", {}) == "cancelOrder done"
            with pytest.raises(CommandFailed, match="cancelled"):
                await running
        finally:
            running.cancel()
        with pytest.raises(CommandFailed, match="no order to cancel"):
            await f.driver.execute("cancel", {})
    assert f.events.bodies(Movement) == []


async def test_a_refused_order_fails_the_transport() -> None:
    async with floor() as f:
        f.agv.last_node_id = "Z"  # lost off the graph: it refuses an order starting at A
        with pytest.raises(CommandFailed, match="noRouteError"):
            await f.driver.execute("transport", TRANSPORT)
    assert f.events.bodies(Movement) == []


@pytest.mark.parametrize(
    ("action", "args", "match"),
    [
        ("fly", {}, "not 'fly'"),
        ("transport", {"from": "DOCK-1"}, "bad transport arguments"),
        ("transport", TRANSPORT | {"quantity": 0}, "bad transport arguments"),
        ("transport", TRANSPORT | {"to": "NOWHERE"}, "NOWHERE"),
        ("transport", TRANSPORT | {"to": "DOCK-1"}, "two different"),
    ],
)
async def test_bad_commands_are_rejected(action: str, args: dict[str, Any], match: str) -> None:
    driver = Vda5050AgvDriver(make_config("wltest-unused/uagv"), EmitCollector(wait_s=WAIT_S))
    with pytest.raises(CommandRejected, match=match):
        await driver.execute(action, args)


def test_config_takes_a_graph_file(tmp_path: Path) -> None:
    path = tmp_path / "floor.json"
    path.write_text(json.dumps(GRAPH))
    config = make_config("uagv", graph=None, graph_file=path)
    assert config.floor_graph().shortest_path("A", "D") == ["A", "B", "D"]
    assert (config.broker_host, config.broker_port) == (MQTT_HOST, MQTT_PORT)
    with pytest.raises(pydantic.ValidationError, match="exactly one"):
        make_config("uagv", graph_file=path)
    with pytest.raises(pydantic.ValidationError, match="topic level"):
        make_config("uagv", serial_number="a/b")
    with pytest.raises(pydantic.ValidationError, match="mqtt://"):
        make_config("uagv", broker_url="http://x")
    with pytest.raises(pydantic.ValidationError, match="unknown node"):
        make_config("uagv", graph=GRAPH | {"edges": [{"start": "A", "end": "Q"}]})
