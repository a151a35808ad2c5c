"""The simulated VDA 5050 AGV, driven by a test master over the real Mosquitto."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import aiomqtt
import pytest

from tests.conftest import MQTT_HOST, MQTT_PORT
from warelink.protocol.vda5050 import (
    Action,
    ActionParameter,
    ActionStatus,
    BlockingType,
    Connection,
    ConnectionState,
    Factsheet,
    FloorEdge,
    FloorGraph,
    FloorNode,
    HeaderGapDetector,
    Message,
    Order,
    OrderTracker,
    State,
    Topic,
    Vda5050Topics,
    Visualization,
    decode,
    encode,
)
from warelink.sim.agv import SimulatedAgv

WAIT_S = 8.0
MANUFACTURER = "warelink"
SERIAL = "agv-7"

# DOCK-1 (A) ── B ── C (RACK-1)
#               │
#               D (RACK-2)
GRAPH = FloorGraph(
    [
        FloorNode("A", 0.0, 0.0, "DOCK-1"),
        FloorNode("B", 1.0, 0.0),
        FloorNode("C", 2.0, 0.0, "RACK-1"),
        FloorNode("D", 1.0, 1.0, "RACK-2"),
    ],
    [FloorEdge("A", "B"), FloorEdge("B", "C"), FloorEdge("B", "D")],
)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Master:
    """A test master control: sends orders, collects what the vehicle publishes."""

    def __init__(self, client: aiomqtt.Client, topics: Vda5050Topics) -> None:
        self.client = client
        self.topics = topics
        self.tracker = OrderTracker(MANUFACTURER, SERIAL, GRAPH)
        self.received: list[Message] = []
        self._changed = asyncio.Condition()

    def of(self, kind: type[Message]) -> list[Message]:
        return [m for m in self.received if isinstance(m, kind)]

    def states(self) -> list[State]:
        return [m for m in self.received if isinstance(m, State)]

    @property
    def state(self) -> State:
        return self.states()[-1]

    async def listen(self) -> None:
        async for message in self.client.messages:
            if not isinstance(message.payload, bytes) or not message.payload:
                continue
            kind = self.topics.parse(str(message.topic)).topic
            self.received.append(decode(kind, message.payload))
            async with self._changed:
                self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = WAIT_S) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    async def wait_state(self, predicate: Callable[[State], bool]) -> State:
        await self.wait_for(lambda: bool(self.states()) and predicate(self.state))
        return self.state

    async def send(self, order: Order) -> None:
        topic = self.topics.topic(MANUFACTURER, SERIAL, Topic.ORDER)
        await self.client.publish(topic, encode(order))

    async def instant(self, action_type: str, **params: str | float) -> str:
        action_id = f"{action_type}-{uuid.uuid4().hex[:6]}"
        action = Action(
            action_type=action_type,
            action_id=action_id,
            blocking_type=BlockingType.HARD,
            action_parameters=[ActionParameter(key=k, value=v) for k, v in params.items()] or None,
        )
        message = self.tracker.instant_actions([action], now=now())
        topic = self.topics.topic(MANUFACTURER, SERIAL, Topic.INSTANT_ACTIONS)
        await self.client.publish(topic, encode(message))
        return action_id


def action_status(state: State, action_id: str) -> ActionStatus | None:
    for action in state.action_states:
        if action.action_id == action_id:
            return action.action_status
    return None


def pick_and_drop(order_id: str) -> tuple[Action, Action]:
    pick = Action(
        action_type="pick",
        action_id=f"{order_id}-pick",
        blocking_type=BlockingType.HARD,
        action_parameters=[ActionParameter(key="lpn", value="00395060001343520019")],
    )
    drop = Action(action_type="drop", action_id=f"{order_id}-drop", blocking_type=BlockingType.SOFT)
    return pick, drop


@asynccontextmanager
async def vehicle_and_master(**sim_options: float) -> AsyncIterator[tuple[SimulatedAgv, Master]]:
    interface = f"wltest-{uuid.uuid4().hex[:12]}/uagv"
    topics = Vda5050Topics(interface)
    options: dict[str, float] = {
        "speed_m_s": 8.0,
        "state_interval_s": 0.5,
        "visualization_interval_s": 0.05,
        "action_duration_s": 0.1,
    } | sim_options
    agv = SimulatedAgv(
        GRAPH,
        host=MQTT_HOST,
        port=MQTT_PORT,
        manufacturer=MANUFACTURER,
        serial_number=SERIAL,
        interface_name=interface,
        start_node="A",
        **options,  # type: ignore[arg-type]
    )
    try:
        async with aiomqtt.Client(MQTT_HOST, MQTT_PORT) as client:
            await client.subscribe(topics.vehicle_filter(MANUFACTURER, SERIAL), qos=1)
            master = Master(client, topics)
            async with asyncio.TaskGroup() as tg:
                listening = tg.create_task(master.listen(), name="test-master-listen")
                try:
                    async with agv:
                        await master.wait_state(lambda s: True)
                        yield agv, master
                finally:
                    listening.cancel()
    finally:
        await agv.clear_retained()


async def test_vehicle_drives_an_order_node_to_node() -> None:
    async with vehicle_and_master() as (_, master):
        pick, drop = pick_and_drop("o-1")
        path = GRAPH.shortest_path("A", "D")
        order = master.tracker.new_order(
            "o-1", path, now=now(), node_actions={0: [pick], len(path) - 1: [drop]}
        )
        assert path == ["A", "B", "D"]
        await master.send(order)
        final = await master.wait_state(
            lambda s: s.order_id == "o-1" and action_status(s, "o-1-drop") is ActionStatus.FINISHED
        )
        states = [s for s in master.states() if s.order_id == "o-1"]
    progress = [s.last_node_id for s in states]
    assert [n for i, n in enumerate(progress) if i == 0 or progress[i - 1] != n] == ["A", "B", "D"]
    assert [s.last_node_sequence_id for s in states][-1] == 4
    assert final.node_states == [] and final.edge_states == [] and not final.driving
    assert final.agv_position is not None
    assert (final.agv_position.x, final.agv_position.y) == (1.0, 1.0)
    assert final.battery_state.battery_charge < 100.0
    assert final.loads == []
    pick_seen = [action_status(s, "o-1-pick") for s in states]
    assert pick_seen[0] is ActionStatus.WAITING
    assert ActionStatus.RUNNING in pick_seen
    assert pick_seen[-1] is ActionStatus.FINISHED
    # HARD pick: no driving until it finished; the load is on board while driving.
    for state in states:
        if state.driving:
            assert action_status(state, "o-1-pick") is ActionStatus.FINISHED
            assert state.loads and state.loads[0].load_id == "00395060001343520019"
    assert any(s.driving for s in states)
    # Visualization carries positions between the nodes, at a higher rate than state.
    positions = {
        (v.agv_position.x, v.agv_position.y)
        for v in master.of(Visualization)
        if isinstance(v, Visualization) and v.agv_position is not None
    }
    assert len(positions) > 3
    assert len(master.of(Visualization)) > len(states)
    # Every published stream counts its headerIds up by one: no gaps.
    detector = HeaderGapDetector()
    for message in master.received:
        if isinstance(message, State | Visualization):
            detector.observe(Topic.STATE if isinstance(message, State) else Topic.VISUALIZATION,
                             message.header_id)  # fmt: skip
    assert detector.gaps == 0


async def test_order_updates_lower_is_refused_and_equal_ignored() -> None:
    async with vehicle_and_master() as (agv, master):
        path = GRAPH.shortest_path("A", "C")
        base = master.tracker.new_order("o-2", path, now=now(), released=2)
        await master.send(base)
        waiting = await master.wait_state(
            lambda s: s.order_id == "o-2" and s.last_node_id == "B" and not s.driving
        )
        assert [(n.node_id, n.released) for n in waiting.node_states] == [("C", False)]
        update = master.tracker.release(now=now())
        await master.send(update)
        await master.wait_state(lambda s: s.last_node_id == "C" and s.order_update_id == 1)
        await master.send(master.tracker.resend(now=now()))  # the same update again
        await master.send(base)  # orderUpdateId 0 < 1: refused
        refused = await master.wait_state(lambda s: bool(s.errors))
        assert agv.orders_ignored == 1
    (error,) = refused.errors
    assert error.error_type == "orderUpdateError"
    assert error.reference("orderId") == "o-2"
    assert error.reference("orderUpdateId") == "0"
    assert (refused.order_id, refused.order_update_id, refused.last_node_id) == ("o-2", 1, "C")


async def test_an_order_not_starting_at_the_vehicle_is_refused() -> None:
    async with vehicle_and_master() as (_, master):
        order = master.tracker.new_order("o-3", ["C", "B"], now=now())
        await master.send(order)
        state = await master.wait_state(lambda s: bool(s.errors))
    assert state.errors[0].error_type == "noRouteError"
    assert state.order_id == "" and state.last_node_id == "A"


async def test_instant_actions_pause_resume_cancel_and_factsheet() -> None:
    async with vehicle_and_master(speed_m_s=2.0) as (_, master):
        _, drop = pick_and_drop("o-4")
        order = master.tracker.new_order(
            "o-4", ["A", "B", "C"], now=now(), node_actions={2: [drop]}
        )
        await master.send(order)
        await master.wait_state(lambda s: s.driving)
        pause = await master.instant("startPause")
        paused = await master.wait_state(
            lambda s: action_status(s, pause) is ActionStatus.FINISHED and not s.driving
        )
        assert paused.paused
        resume = await master.instant("stopPause")
        await master.wait_state(lambda s: action_status(s, resume) is ActionStatus.FINISHED)
        await master.wait_state(lambda s: s.driving)
        cancel = await master.instant("cancelOrder")
        cancelled = await master.wait_state(
            lambda s: action_status(s, cancel) is ActionStatus.FINISHED
        )
        assert action_status(cancelled, "o-4-drop") is ActionStatus.FAILED
        assert cancelled.node_states == [] and not cancelled.driving
        again = await master.instant("cancelOrder")  # nothing left to cancel
        refused = await master.wait_state(lambda s: action_status(s, again) is ActionStatus.FAILED)
        assert refused.errors[-1].error_type == "noOrderToCancel"
        await master.instant("factsheetRequest")
        await master.wait_for(lambda: bool(master.of(Factsheet)))
        request = await master.instant("stateRequest")
        await master.wait_state(lambda s: action_status(s, request) is ActionStatus.FINISHED)
        init = await master.instant("initPosition", x=2.0, y=0.0, theta=0.0, lastNodeId="C")
        moved = await master.wait_state(lambda s: action_status(s, init) is ActionStatus.FINISHED)
    (factsheet,) = master.of(Factsheet)
    assert isinstance(factsheet, Factsheet)
    assert "pick" in {a.action_type for a in factsheet.protocol_features.agv_actions}
    assert moved.last_node_id == "C"


async def test_header_gap_injected_once() -> None:
    async with vehicle_and_master() as (agv, master):
        await master.wait_for(lambda: len(master.states()) >= 2)
        agv.skip_header(Topic.STATE)
        first = master.state.header_id
        await master.wait_state(lambda s: s.header_id >= first + 4)
    detector = HeaderGapDetector()
    gaps = [detector.observe(Topic.STATE, s.header_id) for s in master.states()]
    found = [g for g in gaps if g is not None]
    assert len(found) == 1 and found[0].missing == 1


async def test_dropped_connection_sends_the_will_and_comes_back() -> None:
    async with vehicle_and_master() as (agv, master):

        def connection_states() -> list[ConnectionState]:
            return [m.connection_state for m in master.of(Connection) if isinstance(m, Connection)]

        await master.wait_for(lambda: connection_states() == [ConnectionState.ONLINE])
        agv.drop_connection(offline_s=0.5)
        await master.wait_for(
            lambda: (
                connection_states()
                == [
                    ConnectionState.ONLINE,
                    ConnectionState.CONNECTIONBROKEN,
                    ConnectionState.ONLINE,
                ]
            )
        )
        states_before = len(master.states())
        await master.wait_for(lambda: len(master.states()) > states_before)


@pytest.mark.parametrize("kind", ["fatal_error", "stall"])
async def test_faults_stop_the_vehicle(kind: str) -> None:
    async with vehicle_and_master(speed_m_s=1.0) as (agv, master):
        order = master.tracker.new_order("o-5", ["A", "B", "C"], now=now())
        await master.send(order)
        await master.wait_state(lambda s: s.driving)
        if kind == "stall":
            agv.stall()
        else:
            agv.raise_error("motorFault", description="drive motor overcurrent")
        stopped = await master.wait_state(lambda s: not s.driving)
        assert stopped.node_states  # not arrived
        if kind == "stall":
            assert stopped.safety_state.field_violation
            agv.stall(False)
        else:
            assert stopped.errors[0].error_type == "motorFault"
            agv.clear_errors()
        done = await master.wait_state(lambda s: s.last_node_id == "C" and not s.node_states)
        assert not done.errors and not done.safety_state.field_violation


def test_scenario_hooks_are_seeded() -> None:
    from warelink.edge.drivers.vda5050_agv import Vda5050AgvConfig
    from warelink.protocol.gs1 import is_valid_check_digit
    from warelink.sim.agv import random_transport

    config = Vda5050AgvConfig.model_validate(
        {
            "kind": "vda5050_agv",
            "id": "agv-1",
            "manufacturer": MANUFACTURER,
            "serial_number": SERIAL,
            "broker_url": "mqtt://127.0.0.1:1883",
            "state_interval_s": 10,
            "graph": {
                "nodes": [{"id": n.id, "x": n.x, "y": n.y, "location": n.location}
                          for n in GRAPH.nodes.values()],
                "edges": [{"start": "A", "end": "B"}, {"start": "B", "end": "C"}],
            },
        }
    )  # fmt: skip
    agvs = [SimulatedAgv.for_config(config, random.Random(5)) for _ in range(2)]
    assert agvs[0].last_node_id == agvs[1].last_node_id
    assert agvs[0].state_interval_s == 5.0 and agvs[0].topics.interface_name == "uagv"
    first = random_transport(GRAPH, random.Random(9), ["09506000134352"], order_id="T-1")
    assert first == random_transport(GRAPH, random.Random(9), ["09506000134352"], order_id="T-1")
    assert first["from"] != first["to"] and is_valid_check_digit(first["lpn"])
