"""A simulated AGV speaking VDA 5050 v2 over MQTT, for tests and the demo floor.

It connects to a broker (MQTT 5) with ``connection`` = CONNECTIONBROKEN as its Will,
announces ONLINE (retained, QoS 1), takes ``order`` and ``instantActions``, drives the
released base of its order node to node over a ``FloorGraph`` at a fixed speed, runs
the node actions (pick/drop, …) honouring their blocking types, and reports ``state``
on every relevant change and at least every ``state_interval_s``, and ``visualization``
more often. Fault hooks: drop the MQTT link uncleanly (the broker then sends the Will),
stall, raise an error, skip a headerId.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import random
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import aiomqtt
import structlog

from warelink.protocol.backoff import Backoff
from warelink.protocol.gs1 import check_digit
from warelink.protocol.vda5050 import (
    TERMINAL_ACTION_STATES,
    Action,
    ActionState,
    ActionStatus,
    AgvAction,
    AgvPosition,
    BatteryState,
    BlockingType,
    Connection,
    ConnectionState,
    Edge,
    EdgeState,
    Error,
    ErrorLevel,
    ErrorReference,
    EStop,
    Factsheet,
    FloorGraph,
    InstantActions,
    Load,
    Message,
    Node,
    NodeState,
    OperatingMode,
    Order,
    OrderDecision,
    PhysicalParameters,
    ProtocolFeatures,
    SafetyState,
    State,
    Topic,
    TypeSpecification,
    Vda5050DecodeError,
    Vda5050Topics,
    Velocity,
    Visualization,
    classify_order,
    decode_instant_actions,
    decode_order,
    encode,
    header_fields,
    order_problems,
)

if TYPE_CHECKING:
    from warelink.edge.drivers.vda5050_agv import Vda5050AgvConfig

log = structlog.get_logger(__name__)

ORDER_ERRORS = frozenset({"orderError", "orderUpdateError", "validationError", "noRouteError"})
_QOS = {Topic.CONNECTION: 1}


@dataclass
class _Running:
    action: Action
    remaining_s: float  # of its duration; counts down while not paused


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def _until_cancelled() -> None:
    """The body of a TaskGroup whose tasks run forever waits here, not in ``__aexit__``:
    on Python 3.11 a task failing while the parent already waits in ``__aexit__`` leaves
    the parent with a cancel request nobody withdraws (fixed in 3.12), and that
    request then swallows the next real cancellation.
    """
    await asyncio.Event().wait()


def _reraise_swallowed_cancel() -> None:
    """Python 3.11's ``asyncio.wait_for`` (inside aiomqtt's publish) can swallow a
    cancellation that races its completion; the task then stays "cancelling" and no
    later cancel or timeout reaches it. Deliver it here instead of looping on forever.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class SimulatedAgv:
    """One vehicle. ``async with SimulatedAgv(graph, ...) as agv:`` or ``await agv.run()``."""

    def __init__(
        self,
        graph: FloorGraph,
        *,
        host: str = "127.0.0.1",
        port: int = 1883,
        manufacturer: str = "warelink",
        serial_number: str = "agv-1",
        interface_name: str = "uagv",
        start_node: str | None = None,
        speed_m_s: float = 1.5,
        state_interval_s: float = 30.0,
        visualization_interval_s: float = 0.5,
        action_duration_s: float = 1.0,
        battery_drain_per_m: float = 0.02,
        battery: float = 100.0,
        tick_s: float = 0.02,
        rng: random.Random | None = None,
        jitter: float = 0.0,
    ) -> None:
        self.graph = graph
        self.host = host
        self.port = port
        self.manufacturer = manufacturer
        self.serial_number = serial_number
        self.topics = Vda5050Topics(interface_name)
        self.speed_m_s = speed_m_s
        self.state_interval_s = state_interval_s
        self.visualization_interval_s = visualization_interval_s
        self.action_duration_s = action_duration_s
        self.battery_drain_per_m = battery_drain_per_m
        self.tick_s = tick_s
        self.rng = rng or random.Random(0)
        self.jitter = jitter  # action durations vary by ± this fraction (from ``rng``)
        self._log = log.bind(agv=f"{manufacturer}/{serial_number}")
        start = start_node or sorted(graph.nodes)[0]
        node = graph.nodes[start]
        # -- the vehicle model
        self.x, self.y, self.theta = node.x, node.y, 0.0
        self.last_node_id = start
        self.last_node_sequence_id = 0
        self.order_id = ""
        self.order_update_id = 0
        self.battery = battery
        self.paused = False
        self.stalled = False
        self.driving = False
        self.loads: list[Load] = []
        self.errors: list[Error] = []
        self._nodes: list[Node] = []  # still to reach, in order
        self._edges: list[Edge] = []  # still to traverse, in order
        self._actions: dict[str, ActionState] = {}  # every action of the order + instant ones
        self._pending: list[Action] = []  # actions of the node reached, not started yet
        self._running: list[_Running] = []
        # -- what tests look at
        self.orders_received = 0
        self.orders_ignored = 0  # duplicates (same orderUpdateId)
        self.online = asyncio.Event()
        # -- the link
        self._header_ids: dict[Topic, int] = {}
        self._skip: dict[Topic, int] = {}
        self._client: aiomqtt.Client | None = None
        self._offline_until = 0.0
        self._changed = asyncio.Event()
        self._stack: contextlib.AsyncExitStack | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def for_config(
        cls, config: Vda5050AgvConfig, rng: random.Random, **options: Any
    ) -> SimulatedAgv:
        """The vehicle a site config declares, on its broker and topics, from a seed.

        It starts at a random location node and reports state twice as often as the
        config's ``state_interval_s`` promises, so the driver never sees it stale.
        """
        graph = config.floor_graph()
        starts = sorted(graph.locations.values()) or sorted(graph.nodes)
        defaults: dict[str, Any] = {
            "host": config.broker_host,
            "port": config.broker_port,
            "manufacturer": config.manufacturer,
            "serial_number": config.serial_number,
            "interface_name": config.interface_name,
            "start_node": rng.choice(starts),
            "state_interval_s": config.state_interval_s / 2,
            "jitter": 0.2,
        }
        return cls(graph, rng=rng, **(defaults | options))

    # ------------------------------------------------------------------ faults

    def skip_header(self, topic: Topic = Topic.STATE, count: int = 1) -> None:
        """The next message of ``topic`` skips ``count`` headerIds (a lost message)."""
        self._skip[topic] = self._skip.get(topic, 0) + count

    def drop_connection(self, offline_s: float) -> None:
        """Cut the TCP link without DISCONNECT (the broker sends the Will); back after."""
        self._offline_until = asyncio.get_running_loop().time() + offline_s
        client = self._client
        if client is None:
            return
        sock = client._client.socket()  # the paho socket: no public way to cut it
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def stall(self, stalled: bool = True) -> None:
        """Something blocks the way: the vehicle stops (protective field violated)."""
        self.stalled = stalled
        self._touch()

    def raise_error(
        self, error_type: str, level: ErrorLevel = ErrorLevel.FATAL, description: str = ""
    ) -> None:
        """Report an error; a FATAL one stops the vehicle until ``clear_errors``."""
        self.errors.append(
            Error(error_type=error_type, error_level=level, error_description=description or None)
        )
        self._touch()

    def clear_errors(self) -> None:
        self.errors.clear()
        self._touch()

    # ---------------------------------------------------------------- headers

    def _next_header_id(self, topic: Topic) -> int:
        header_id = self._header_ids.get(topic, -1) + 1 + self._skip.pop(topic, 0)
        self._header_ids[topic] = header_id
        return header_id

    def _header(self, topic: Topic) -> dict[str, Any]:
        return header_fields(
            self._next_header_id(topic), _now(), self.manufacturer, self.serial_number
        )

    def _topic(self, topic: Topic) -> str:
        return self.topics.topic(self.manufacturer, self.serial_number, topic)

    async def _publish(
        self, client: aiomqtt.Client, topic: Topic, build: Callable[[], Message]
    ) -> None:
        # Built after the headerId is taken, right before sending: ids go out in order.
        await client.publish(
            self._topic(topic),
            encode(build()),
            qos=_QOS.get(topic, 0),
            retain=topic is Topic.CONNECTION,
        )
        _reraise_swallowed_cancel()

    # ---------------------------------------------------------------- messages

    @property
    def has_order(self) -> bool:
        """Still something to do for the current order (nodes to reach or actions)."""
        return bool(self._nodes or self._pending or self._running)

    @property
    def fatal(self) -> bool:
        return any(e.error_level is ErrorLevel.FATAL for e in self.errors)

    def _position(self) -> AgvPosition:
        return AgvPosition(
            x=round(self.x, 4),
            y=round(self.y, 4),
            theta=round(self.theta, 4),
            map_id=self.graph.map_id,
            position_initialized=True,
        )

    def _velocity(self) -> Velocity:
        speed = self.speed_m_s if self.driving else 0.0
        return Velocity(vx=round(speed * math.cos(self.theta), 4), vy=0.0, omega=0.0)

    def state(self) -> State:
        return State(
            **self._header(Topic.STATE),
            order_id=self.order_id,
            order_update_id=self.order_update_id,
            last_node_id=self.last_node_id,
            last_node_sequence_id=self.last_node_sequence_id,
            node_states=[
                NodeState(
                    node_id=n.node_id,
                    sequence_id=n.sequence_id,
                    released=n.released,
                    node_position=n.node_position,
                )
                for n in self._nodes
            ],
            edge_states=[
                EdgeState(edge_id=e.edge_id, sequence_id=e.sequence_id, released=e.released)
                for e in self._edges
            ],
            driving=self.driving,
            action_states=list(self._actions.values()),
            battery_state=BatteryState(battery_charge=round(self.battery, 2), charging=False),
            operating_mode=OperatingMode.AUTOMATIC,
            errors=list(self.errors),
            safety_state=SafetyState(e_stop=EStop.NONE, field_violation=self.stalled),
            agv_position=self._position(),
            velocity=self._velocity(),
            loads=list(self.loads),
            paused=self.paused,
        )

    def visualization(self) -> Visualization:
        return Visualization(
            **self._header(Topic.VISUALIZATION),
            agv_position=self._position(),
            velocity=self._velocity(),
        )

    def factsheet(self) -> Factsheet:
        def action(kind: str, *scopes: str) -> AgvAction:
            return AgvAction(action_type=kind, action_scopes=list(scopes))

        return Factsheet(
            **self._header(Topic.FACTSHEET),
            type_specification=TypeSpecification(
                series_name="warelink-sim",
                agv_kinematic="DIFF",
                agv_class="FORKLIFT",
                max_load_mass=1200.0,
                localization_types=["NATURAL"],
                navigation_types=["PHYSICAL_LINE_GUIDED"],
            ),
            physical_parameters=PhysicalParameters(
                speed_min=0.0,
                speed_max=self.speed_m_s,
                acceleration_max=1.0,
                deceleration_max=1.0,
                height_max=2.0,
                width=1.0,
                length=2.0,
            ),
            protocol_features=ProtocolFeatures(
                optional_parameters=[],
                agv_actions=[
                    action("pick", "NODE"),
                    action("drop", "NODE"),
                    action("cancelOrder", "INSTANT"),
                    action("startPause", "INSTANT"),
                    action("stopPause", "INSTANT"),
                    action("stateRequest", "INSTANT"),
                    action("factsheetRequest", "INSTANT"),
                    action("initPosition", "INSTANT"),
                ],
            ),
        )

    def _connection(self, state: ConnectionState, header_id: int) -> Connection:
        return Connection(
            **header_fields(header_id, _now(), self.manufacturer, self.serial_number),
            connection_state=state,
        )

    # ------------------------------------------------------------ orders

    def _touch(self) -> None:
        """Something relevant changed: a state message goes out now."""
        self._changed.set()

    def _order_error(self, error_type: str, order: Order, description: str) -> None:
        self._log.info("sim_agv.order_refused", error=error_type, detail=description)
        self.errors.append(
            Error(
                error_type=error_type,
                error_level=ErrorLevel.WARNING,
                error_references=[
                    ErrorReference(reference_key="orderId", reference_value=order.order_id),
                    ErrorReference(
                        reference_key="orderUpdateId",
                        reference_value=str(order.order_update_id),
                    ),
                ],
                error_description=description,
            )
        )
        self._touch()

    def on_order(self, order: Order) -> None:
        self.orders_received += 1
        decision = classify_order(self.order_id, self.order_update_id, order)
        if decision is OrderDecision.DUPLICATE:
            self.orders_ignored += 1
            return
        if decision is OrderDecision.STALE:
            self._order_error(
                "orderUpdateError",
                order,
                f"orderUpdateId {order.order_update_id} is lower than {self.order_update_id}",
            )
            return
        problems = order_problems(order)
        if problems:
            self._order_error("validationError", order, "; ".join(problems))
            return
        if decision is OrderDecision.NEW:
            self._accept_new(order)
        else:
            self._accept_update(order)

    def _accept_new(self, order: Order) -> None:
        if self.has_order:
            self._order_error("orderError", order, f"still executing order {self.order_id!r}")
            return
        first = order.nodes[0]
        if first.node_id != self.last_node_id:
            self._order_error(
                "noRouteError", order, f"order starts at {first.node_id}, vehicle is at "
                f"{self.last_node_id}"
            )  # fmt: skip
            return
        self.errors = [e for e in self.errors if e.error_type not in ORDER_ERRORS]
        self.order_id, self.order_update_id = order.order_id, order.order_update_id
        self._actions = {}
        self._add_actions(order)
        self._nodes, self._edges = list(order.nodes[1:]), list(order.edges)
        self._running = []
        self._reach(first)
        self._log.info("sim_agv.order_accepted", order=order.order_id, nodes=len(order.nodes))

    def _accept_update(self, order: Order) -> None:
        held = [self._held_last_node(), *self._nodes]
        base = [n for n in held if n.released]
        stitch = base[-1] if base else held[0]
        first = order.nodes[0]
        if (first.node_id, first.sequence_id) != (stitch.node_id, stitch.sequence_id):
            self._order_error(
                "orderUpdateError",
                order,
                f"update starts at {first.node_id}/{first.sequence_id}, base ends at "
                f"{stitch.node_id}/{stitch.sequence_id}",
            )
            return
        self.order_update_id = order.order_update_id
        self._nodes = [n for n in self._nodes if n.sequence_id <= stitch.sequence_id]
        self._nodes += order.nodes[1:]
        self._edges = [e for e in self._edges if e.sequence_id < stitch.sequence_id]
        self._edges += order.edges
        self._add_actions(order, skip_first_node=True)
        self._touch()

    def _held_last_node(self) -> Node:
        return Node(
            node_id=self.last_node_id,
            sequence_id=self.last_node_sequence_id,
            released=True,
            actions=[],
        )

    def _add_actions(self, order: Order, *, skip_first_node: bool = False) -> None:
        nodes = order.nodes[1:] if skip_first_node else order.nodes
        for action in [a for n in nodes for a in n.actions] + [
            a for e in order.edges for a in e.actions
        ]:
            self._actions[action.action_id] = ActionState(
                action_id=action.action_id,
                action_type=action.action_type,
                action_status=ActionStatus.WAITING,
            )

    def _set_action(self, action: Action, status: ActionStatus, result: str | None = None) -> None:
        self._actions[action.action_id] = ActionState(
            action_id=action.action_id,
            action_type=action.action_type,
            action_status=status,
            result_description=result,
        )
        self._touch()

    def _reach(self, node: Node) -> None:
        self.last_node_id = node.node_id
        self.last_node_sequence_id = node.sequence_id
        position = node.node_position or self.graph.node_position(node.node_id)
        self.x, self.y = position.x, position.y
        self._pending = list(node.actions)
        self._touch()

    # ------------------------------------------------------------ instant actions

    def on_instant_actions(self, message: InstantActions) -> bool:
        """Carry them out; True if a factsheet was asked for."""
        factsheet = False
        for action in message.actions:
            kind = action.action_type
            if kind == "cancelOrder":
                self._cancel(action)
            elif kind in ("startPause", "stopPause"):
                self.paused = kind == "startPause"
                if self.paused:
                    self._set_driving(False)
                for running in self._running:
                    status = ActionStatus.PAUSED if self.paused else ActionStatus.RUNNING
                    self._set_action(running.action, status)
                self._set_action(action, ActionStatus.FINISHED)
            elif kind == "stateRequest":
                self._set_action(action, ActionStatus.FINISHED)
            elif kind == "factsheetRequest":
                factsheet = True
                self._set_action(action, ActionStatus.FINISHED)
            elif kind == "initPosition":
                self._init_position(action)
            else:
                self._set_action(action, ActionStatus.FAILED, f"unsupported {kind!r}")
        return factsheet

    def _cancel(self, action: Action) -> None:
        if not self.has_order:
            self.errors.append(
                Error(
                    error_type="noOrderToCancel",
                    error_level=ErrorLevel.WARNING,
                    error_references=[
                        ErrorReference(reference_key="actionId", reference_value=action.action_id)
                    ],
                )
            )
            self._set_action(action, ActionStatus.FAILED, "no order to cancel")
            return
        for state in list(self._actions.values()):
            if state.action_status not in TERMINAL_ACTION_STATES:
                self._actions[state.action_id] = ActionState(
                    action_id=state.action_id,
                    action_type=state.action_type,
                    action_status=ActionStatus.FAILED,
                    result_description="order cancelled",
                )
        self._nodes, self._edges, self._pending, self._running = [], [], [], []
        self.driving = False
        self._set_action(action, ActionStatus.FINISHED)
        self._log.info("sim_agv.order_cancelled", order=self.order_id)

    def _init_position(self, action: Action) -> None:
        if self.has_order:
            self._set_action(action, ActionStatus.FAILED, "an order is active")
            return
        node_id = action.parameter("lastNodeId")
        if isinstance(node_id, str) and node_id in self.graph.nodes:
            node = self.graph.nodes[node_id]
            self.x, self.y = node.x, node.y
            self.last_node_id, self.last_node_sequence_id = node_id, 0
        for key in ("x", "y", "theta"):
            value = action.parameter(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                setattr(self, key, float(value))
        self._set_action(action, ActionStatus.FINISHED)

    # ------------------------------------------------------------------ motion

    def step(self, elapsed_s: float) -> None:
        """Advance the vehicle by ``elapsed_s`` of simulated time."""
        if self.paused:
            self._set_driving(False)
            return
        for running in list(self._running):
            running.remaining_s -= elapsed_s
            if running.remaining_s <= 0:
                self._running.remove(running)
                self._finish(running.action)
        while self._pending:
            action = self._pending[0]
            hard_running = any(r.action.blocking_type is BlockingType.HARD for r in self._running)
            if hard_running or (action.blocking_type is BlockingType.HARD and self._running):
                break
            self._pending.pop(0)
            duration = self.action_duration_s
            if self.jitter:
                duration *= self.rng.uniform(1 - self.jitter, 1 + self.jitter)
            self._running.append(_Running(action, duration))
            self._set_action(action, ActionStatus.RUNNING)
            if action.blocking_type is BlockingType.HARD:
                break
        blocked = (
            self._pending
            or any(r.action.blocking_type is not BlockingType.NONE for r in self._running)
            or self.stalled
            or self.fatal
            or self.battery <= 0
        )
        if blocked or not self._nodes or not self._edges or not self._nodes[0].released:
            self._set_driving(False)
            return
        self._set_driving(True)
        self._drive(elapsed_s)

    def _set_driving(self, driving: bool) -> None:
        if driving != self.driving:
            self.driving = driving
            self._touch()

    def _drive(self, elapsed_s: float) -> None:
        target = self._nodes[0]
        position = target.node_position or self.graph.node_position(target.node_id)
        dx, dy = position.x - self.x, position.y - self.y
        distance = math.hypot(dx, dy)
        step = self.speed_m_s * elapsed_s
        if distance > 0:
            self.theta = math.atan2(dy, dx)
        travelled = min(step, distance)
        self.battery = max(0.0, self.battery - travelled * self.battery_drain_per_m)
        if step < distance:
            self.x += dx / distance * step
            self.y += dy / distance * step
            return
        edge = self._edges.pop(0)
        for action in edge.actions:
            self._set_action(action, ActionStatus.FINISHED)
        self._nodes.pop(0)
        self._reach(target)
        if not self.has_order:
            self._set_driving(False)

    def _finish(self, action: Action) -> None:
        if action.action_type == "pick":
            lpn = action.parameter("lpn")
            self.loads = [Load(load_id=lpn if isinstance(lpn, str) else None, load_type="pallet")]
        elif action.action_type == "drop":
            self.loads = []
        self._set_action(action, ActionStatus.FINISHED)

    # ------------------------------------------------------------------ tasks

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(self.tick_s)
            now = loop.time()
            self.step(now - last)
            last = now

    async def _run_link(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = Backoff(initial=0.1, cap=2.0)
        while True:
            wait = self._offline_until - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                await self._session(backoff)
            except aiomqtt.MqttError as exc:
                if backoff.attempts == 0:
                    self._log.warning("sim_agv.disconnected", error=str(exc))
            finally:
                self._client = None
                self.online.clear()
            await asyncio.sleep(backoff.next_delay())

    async def _session(self, backoff: Backoff) -> None:
        online_id = self._next_header_id(Topic.CONNECTION)
        will_id = self._next_header_id(Topic.CONNECTION)
        will = encode(self._connection(ConnectionState.CONNECTIONBROKEN, will_id))
        client = aiomqtt.Client(
            self.host,
            self.port,
            identifier=f"sim-agv-{self.serial_number}-{uuid.uuid4().hex[:8]}",
            protocol=aiomqtt.ProtocolVersion.V5,
            will=aiomqtt.Will(self._topic(Topic.CONNECTION), will, qos=1, retain=True),
            keepalive=5,
            timeout=5,
        )
        async with client:
            self._client = client
            backoff.reset()
            await client.subscribe(self._topic(Topic.ORDER), qos=0)
            await client.subscribe(self._topic(Topic.INSTANT_ACTIONS), qos=0)
            await self._publish(
                client,
                Topic.CONNECTION,
                lambda: self._connection(ConnectionState.ONLINE, online_id),
            )
            self.online.set()
            self._log.info("sim_agv.online")
            try:
                await self._serve(client)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1):
                        await self._publish(
                            client,
                            Topic.CONNECTION,
                            lambda: self._connection(
                                ConnectionState.OFFLINE, self._next_header_id(Topic.CONNECTION)
                            ),
                        )
                raise

    async def _serve(self, client: aiomqtt.Client) -> None:
        name = f"sim-agv-{self.serial_number}"
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._receive(client), name=f"{name}-rx")
                tg.create_task(self._states(client), name=f"{name}-state")
                tg.create_task(self._visualizations(client), name=f"{name}-vis")
                await _until_cancelled()
        except* aiomqtt.MqttError as group:
            raise group.exceptions[0] from None

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                continue
            try:
                kind = self.topics.parse(str(message.topic)).topic
                if kind is Topic.ORDER:
                    self.on_order(decode_order(bytes(payload)))
                elif kind is Topic.INSTANT_ACTIONS and self.on_instant_actions(
                    decode_instant_actions(bytes(payload))
                ):
                    await self._publish(client, Topic.FACTSHEET, self.factsheet)
            except Vda5050DecodeError as exc:
                self.errors.append(
                    Error(
                        error_type="validationError",
                        error_level=ErrorLevel.WARNING,
                        error_description=str(exc)[:200],
                    )
                )
                self._touch()

    async def _states(self, client: aiomqtt.Client) -> None:
        while True:
            self._changed.clear()
            await self._publish(client, Topic.STATE, self.state)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.state_interval_s):
                    await self._changed.wait()

    async def _visualizations(self, client: aiomqtt.Client) -> None:
        while True:
            await self._publish(client, Topic.VISUALIZATION, self.visualization)
            await asyncio.sleep(self.visualization_interval_s)

    # ------------------------------------------------------------------ lifetime

    async def run(self) -> None:
        """Drive and talk until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._tick(), name=f"sim-agv-{self.serial_number}-tick")
            tg.create_task(self._run_link(), name=f"sim-agv-{self.serial_number}-link")
            await _until_cancelled()

    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as stack:
            tg = await stack.enter_async_context(asyncio.TaskGroup())
            self._tasks = [tg.create_task(self.run(), name=f"sim-agv-{self.serial_number}")]
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._stack is not None
        for task in self._tasks:
            task.cancel()
        stack, self._stack = self._stack, None
        await stack.__aexit__(exc_type, exc, tb)

    async def clear_retained(self) -> None:
        """Remove the retained ``connection`` message (tests share one broker)."""
        async with aiomqtt.Client(self.host, self.port) as client:
            await client.publish(self._topic(Topic.CONNECTION), b"", qos=1, retain=True)


def random_transport(
    graph: FloorGraph, rng: random.Random, gtins: list[str], *, order_id: str | None = None
) -> dict[str, Any]:
    """Arguments of a hub ``transport`` command between two random locations (demo)."""
    source, target = rng.sample(sorted(graph.locations), 2)
    args: dict[str, Any] = {
        "from": source,
        "to": target,
        "gtin": rng.choice(gtins),
        "quantity": rng.randint(1, 48),
        "lpn": _sscc(rng),
    }
    if order_id is not None:
        args["order_id"] = order_id
    return args


def _sscc(rng: random.Random) -> str:
    """A random SSCC (18 digits with its check digit), the pallet's licence plate."""
    body = f"3{rng.randrange(10**16):016d}"
    return body + str(check_digit(body))
