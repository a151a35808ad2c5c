"""Driver for an AGV speaking VDA 5050 v2 over MQTT: the gateway as master control.

The gateway subscribes to the vehicle's ``state``, ``visualization`` and ``connection``
on the fleet broker (which may be the site broker). Positions go out as telemetry,
conflated to a few per second. Health comes from the ``state`` stream alone: VDA 5050
promises a state at least every ``state_interval_s``, so none within twice that means
the vehicle is offline, whatever its retained ``connection`` message says. Lost
``state``/``visualization`` messages show as headerId gaps: logged once per gap, counted.

A hub ``transport`` command becomes one order (current node → pick at ``from`` → drop at
``to``); when its actions finish, one ledger ``Movement`` goes out. The order id is the
idempotency key: a transport re-sent with the same ``order_id`` neither sends a second
order nor emits a second movement; it waits for (or returns) the first one's outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import aiomqtt
import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from warelink.edge.device_config import DeviceBase
from warelink.edge.drivers.base import (
    Backoff,
    CommandFailed,
    CommandRejected,
    DriverSpec,
    Emit,
    Presence,
)
from warelink.protocol.messages import (
    AgvState,
    Movement,
    TrafficClass,
)
from warelink.protocol.vda5050 import (
    TERMINAL_ACTION_STATES,
    Action,
    ActionParameter,
    ActionStatus,
    BlockingType,
    Connection,
    ConnectionState,
    FloorEdge,
    FloorGraph,
    FloorNode,
    HeaderGapDetector,
    InstantActions,
    NoPath,
    Order,
    OrderConflict,
    OrderTracker,
    State,
    Topic,
    Vda5050DecodeError,
    Vda5050Topics,
    Visualization,
    decode,
    encode,
)

ORDER_ERRORS = frozenset({"orderError", "orderUpdateError", "validationError", "noRouteError"})
ORDER_RESENDS = 3
"""Times an order is sent again when no state shows it (same orderUpdateId: harmless)."""


# --------------------------------------------------------------------- config


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FloorNodeConfig(_Strict):
    id: str
    x: float
    y: float
    location: str | None = None


class FloorEdgeConfig(_Strict):
    start: str
    end: str
    bidirectional: bool = True


class FloorGraphConfig(_Strict):
    nodes: list[FloorNodeConfig]
    edges: list[FloorEdgeConfig]
    map_id: str = "floor"

    def build(self) -> FloorGraph:
        return FloorGraph(
            [FloorNode(n.id, n.x, n.y, n.location) for n in self.nodes],
            [FloorEdge(e.start, e.end, e.bidirectional) for e in self.edges],
            self.map_id,
        )


def _topic_level(value: str) -> str:
    if not value or any(c in value for c in "/+#") or value != value.strip():
        raise ValueError(f"{value!r} cannot be an MQTT topic level")
    return value


class Vda5050AgvConfig(DeviceBase):
    """An AGV (or AMR) driven over VDA 5050 v2 through an MQTT broker."""

    kind: Literal["vda5050_agv"]
    manufacturer: str
    serial_number: str
    interface_name: str = Field("uagv", description="First topic level(s), e.g. 'uagv'.")
    broker_url: str = Field(
        "mqtt://127.0.0.1:1883", description="mqtt://host:port of the fleet broker."
    )
    graph: FloorGraphConfig | None = Field(None, description="The floor graph, inline.")
    graph_file: Path | None = Field(None, description="…or a JSON file holding it.")
    state_interval_s: float = Field(
        30.0, gt=0, description="The vehicle's longest state interval; 2× without = offline."
    )
    telemetry_interval_s: float = Field(0.25, gt=0, description="Positions at most this often.")
    order_ack_timeout_s: float = Field(
        5.0, gt=0, description="No state shows a sent order in this time: send it again."
    )
    order_timeout_s: float = Field(900.0, gt=0, description="A transport fails after this.")

    @field_validator("manufacturer", "serial_number")
    @classmethod
    def _level(cls, value: str) -> str:
        return _topic_level(value)

    @field_validator("interface_name")
    @classmethod
    def _levels(cls, value: str) -> str:
        for level in value.split("/"):
            _topic_level(level)
        return value

    @field_validator("broker_url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "mqtt" or not parts.hostname:
            raise ValueError(f"expected mqtt://host[:port], not {value!r}")
        return value

    @model_validator(mode="after")
    def _one_graph(self) -> Vda5050AgvConfig:
        if (self.graph is None) == (self.graph_file is None):
            raise ValueError("give exactly one of 'graph' and 'graph_file'")
        if self.graph is not None:
            self.graph.build()  # duplicate ids, edges to unknown nodes: fail at load
        return self

    @property
    def broker_host(self) -> str:
        host = urlsplit(self.broker_url).hostname
        assert host is not None
        return host

    @property
    def broker_port(self) -> int:
        return urlsplit(self.broker_url).port or 1883

    def floor_graph(self) -> FloorGraph:
        if self.graph is not None:
            return self.graph.build()
        assert self.graph_file is not None
        return FloorGraph.from_json(self.graph_file.read_bytes())


# --------------------------------------------------------------------- driver


class _TransportArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    order_id: str | None = None
    key: str | None = None  # the hub command's key: the order id when none is given
    from_location: str = Field(alias="from")
    to_location: str = Field(alias="to")
    gtin: str
    quantity: int = Field(gt=0)
    lot: str | None = None
    lpn: str | None = None


@dataclass
class _Transport:
    """One transport order, remembered by order id so a re-send does nothing twice."""

    args: _TransportArgs
    done: asyncio.Event = field(default_factory=asyncio.Event)
    detail: str = ""
    failure: str | None = None


class Vda5050AgvDriver:
    """Master control for one vehicle: watches it, and sends it transports and actions."""

    def __init__(
        self, config: Vda5050AgvConfig, emit: Emit, *, backoff: Backoff | None = None
    ) -> None:
        self.config = config
        self.device_id = config.id
        self._emit = emit
        self._backoff = backoff or Backoff(initial=0.2, cap=10.0)
        self._log = structlog.get_logger(__name__).bind(
            device=config.id, agv=f"{config.manufacturer}/{config.serial_number}"
        )
        self.graph = config.floor_graph()
        self.topics = Vda5050Topics(config.interface_name)
        self.tracker = OrderTracker(config.manufacturer, config.serial_number, self.graph)
        self.gaps = HeaderGapDetector()
        self.vehicle_connection: ConnectionState | None = None
        self.state: State | None = None
        self.bad_messages = 0
        self._client: aiomqtt.Client | None = None
        self._presence = Presence(config.id, emit, self._log, "vda5050")
        self._last_state_at = -math.inf
        self._session_started_at = -math.inf
        self._changed = asyncio.Condition()
        self._telemetry: AgvState | None = None
        self._telemetry_sent: AgvState | None = None
        self._telemetry_ready = asyncio.Event()
        self._transports: dict[str, _Transport] = {}
        self._order_lock = asyncio.Lock()  # the vehicle holds one order at a time

    @property
    def header_gaps(self) -> int:
        return self.gaps.gaps

    def _topic(self, topic: Topic) -> str:
        return self.topics.topic(self.config.manufacturer, self.config.serial_number, topic)

    # ------------------------------------------------------------ session

    async def run(self) -> None:
        """Follow the vehicle until cancelled; reconnects to the broker with backoff."""
        while True:
            detail = await self._session()
            await self._presence.down(detail)
            await asyncio.sleep(self._backoff.next_delay())

    async def _session(self) -> str:
        client = aiomqtt.Client(
            self.config.broker_host,
            self.config.broker_port,
            identifier=f"warelink-agv-{self.device_id}-{uuid.uuid4().hex[:8]}",
            protocol=aiomqtt.ProtocolVersion.V5,
            keepalive=10,
            timeout=10,
        )
        try:
            async with client:
                self._client = client
                self._backoff.reset()
                self._session_started_at = asyncio.get_running_loop().time()
                for topic in (Topic.STATE, Topic.VISUALIZATION, Topic.FACTSHEET):
                    await client.subscribe(self._topic(topic), qos=0)
                await client.subscribe(self._topic(Topic.CONNECTION), qos=1)
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._receive(client), name=f"{self.device_id}-receive")
                    tg.create_task(self._watch(), name=f"{self.device_id}-watch")
                    tg.create_task(self._flush_telemetry(), name=f"{self.device_id}-telemetry")
                    # Wait in the body, not in __aexit__: on 3.11 a task failing while the
                    # parent waits in __aexit__ leaves it a cancel request never withdrawn.
                    await asyncio.Event().wait()
        except aiomqtt.MqttError as exc:
            return f"fleet broker {self.config.broker_url}: {exc}"
        except ExceptionGroup as group:
            failure = _first_leaf(group)
            if isinstance(failure, aiomqtt.MqttError):
                return f"fleet broker {self.config.broker_url}: {failure}"
            self._log.error("vda5050.driver_error", exc_info=failure)
            return f"driver error: {failure!r}"
        finally:
            self._client = None
        return "session ended"  # pragma: no cover - the tasks only end by raising

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray) or not payload:
                continue  # an empty retained message clears a topic
            try:
                kind = self.topics.parse(str(message.topic)).topic
                decoded = decode(kind, bytes(payload))
            except Vda5050DecodeError as exc:
                if not self.bad_messages:
                    self._log.warning(
                        "vda5050.bad_message", topic=str(message.topic), error=str(exc)
                    )
                self.bad_messages += 1
                continue
            if isinstance(decoded, State):
                await self._on_state(decoded)
            elif isinstance(decoded, Visualization):
                self._check_gap(Topic.VISUALIZATION, decoded.header_id)
                if decoded.agv_position is not None:
                    self._update_telemetry(
                        decoded.agv_position.x,
                        decoded.agv_position.y,
                        decoded.agv_position.theta,
                        decoded.agv_position.map_id,
                    )
            elif isinstance(decoded, Connection):
                self._on_connection(decoded.connection_state)

    def _check_gap(self, topic: Topic, header_id: int) -> None:
        gap = self.gaps.observe(topic, header_id)
        if gap is not None:
            self._log.warning(
                "vda5050.header_gap",
                topic=topic.value,
                expected=gap.expected,
                received=gap.received,
                missing=gap.missing,
                gaps=self.gaps.gaps,
            )

    def _on_connection(self, state: ConnectionState) -> None:
        # Recorded and logged, never taken as health: only fresh state says "online".
        if state is not self.vehicle_connection:
            self.vehicle_connection = state
            self._log.info("vda5050.vehicle_connection", state=state.value)

    async def _on_state(self, state: State) -> None:
        self._check_gap(Topic.STATE, state.header_id)
        self.bad_messages = 0
        self.state = state
        self._last_state_at = asyncio.get_running_loop().time()
        await self._presence.up()
        position = state.agv_position
        if position is not None:
            self._update_telemetry(position.x, position.y, position.theta, position.map_id)
        async with self._changed:
            self._changed.notify_all()

    async def _watch(self) -> None:
        """No state within twice the vehicle's state interval: it is offline."""
        limit = 2 * self.config.state_interval_s
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(limit / 5, 1.0))
            age = loop.time() - max(self._last_state_at, self._session_started_at)
            if age > limit:
                await self._presence.down(f"no state for {age:.1f} s")

    # ------------------------------------------------------------ telemetry

    def _update_telemetry(self, x: float, y: float, theta: float, map_id: str) -> None:
        state = self.state
        self._telemetry = AgvState(
            x=x,
            y=y,
            theta=theta,
            map_id=map_id,
            driving=state.driving if state else False,
            battery=state.battery_state.battery_charge if state else None,
            order_id=(state.order_id or None) if state else None,
            last_node=(state.last_node_id or None) if state else None,
            errors=[e.error_type for e in state.errors] if state else [],
        )
        if self._telemetry != self._telemetry_sent:
            self._telemetry_ready.set()

    async def _flush_telemetry(self) -> None:
        """Conflates positions: the newest one, at most every ``telemetry_interval_s``."""
        while True:
            await self._telemetry_ready.wait()
            self._telemetry_ready.clear()
            body = self._telemetry
            if body is not None and body != self._telemetry_sent:
                self._telemetry_sent = body
                await self._emit(self.device_id, TrafficClass.TELEMETRY, body)
            await asyncio.sleep(self.config.telemetry_interval_s)

    # ------------------------------------------------------------ health

    # ------------------------------------------------------------ commands

    async def execute(self, action: str, args: dict[str, Any]) -> str:
        """Hub commands: ``transport``, ``cancel``, ``pause``, ``resume``."""
        if action == "transport":
            return await self.transport(args)
        instant = {"cancel": "cancelOrder", "pause": "startPause", "resume": "stopPause"}
        if action in instant:
            return await self.instant_action(instant[action])
        raise CommandRejected(
            f"an AGV takes 'transport', 'cancel', 'pause' or 'resume', not {action!r}"
        )

    async def transport(self, raw: dict[str, Any]) -> str:
        try:
            args = _TransportArgs.model_validate(raw)
        except ValueError as exc:
            raise CommandRejected(f"bad transport arguments: {exc}") from None
        for location in (args.from_location, args.to_location):
            try:
                self.graph.node_at(location)
            except NoPath as exc:
                raise CommandRejected(str(exc)) from None
        if args.from_location == args.to_location:
            raise CommandRejected("a transport needs two different locations")
        order_id = args.order_id or args.key or f"{self.device_id}-{uuid.uuid4().hex[:12]}"
        known = self._transports.get(order_id)
        if known is not None:
            if known.args.model_dump(exclude={"order_id"}) != args.model_dump(exclude={"order_id"}):
                raise CommandRejected(f"order id {order_id!r} was used for another transport")
            self._log.info("vda5050.transport_resent", order=order_id)
        else:
            known = self._transports[order_id] = _Transport(args)
            try:
                known.detail = await self._carry_out(order_id, args)
            except CommandFailed as exc:
                known.failure = str(exc)
            except BaseException:
                del self._transports[order_id]  # interrupted: a retry may adopt the order
                raise
            finally:
                known.done.set()
        await known.done.wait()
        if known.failure is not None:
            raise CommandFailed(known.failure)
        return known.detail

    async def _carry_out(self, order_id: str, args: _TransportArgs) -> str:
        pick_node = self.graph.node_at(args.from_location)
        drop_node = self.graph.node_at(args.to_location)
        pick_id, drop_id = f"{order_id}-pick", f"{order_id}-drop"
        async with self._order_lock:
            state = self._fresh_state()
            if state.order_id != order_id:
                start = state.last_node_id if state.last_node_id in self.graph.nodes else pick_node
                try:
                    to_pick = self.graph.shortest_path(start, pick_node)
                    path = to_pick + self.graph.shortest_path(pick_node, drop_node)[1:]
                except NoPath as exc:
                    raise CommandFailed(str(exc)) from None
                params = [
                    ActionParameter(key=k, value=v)
                    for k, v in (("lpn", args.lpn), ("gtin", args.gtin), ("lot", args.lot))
                    if v is not None
                ] + [ActionParameter(key="quantity", value=args.quantity)]
                pick, drop = (
                    Action(
                        action_type=kind,
                        action_id=action_id,
                        blocking_type=BlockingType.HARD,
                        action_parameters=params,
                    )
                    for kind, action_id in (("pick", pick_id), ("drop", drop_id))
                )
                try:
                    order = self.tracker.new_order(
                        order_id,
                        path,
                        now=_now(),
                        node_actions={len(to_pick) - 1: [pick], len(path) - 1: [drop]},
                    )
                except OrderConflict as exc:
                    raise CommandFailed(str(exc)) from None
                self._log.info("vda5050.order_sent", order=order_id, path="→".join(path))
                await self._send_order(order)
            else:
                self._log.info("vda5050.order_adopted", order=order_id)
            outcome = await self._wait_for_outcome(order_id, (pick_id, drop_id))
        if outcome is not None:
            raise CommandFailed(outcome)
        await self._emit(
            self.device_id,
            TrafficClass.LEDGER,
            Movement(
                from_location=args.from_location,
                to_location=args.to_location,
                gtin=args.gtin,
                quantity=args.quantity,
                lot=args.lot,
                lpn=args.lpn,
            ),
        )
        self._log.info("vda5050.transport_done", order=order_id)
        return f"order {order_id} finished: {args.from_location} → {args.to_location}"

    def _fresh_state(self) -> State:
        if not self._presence.online or self.state is None:
            raise CommandFailed(f"{self.device_id} is offline")
        return self.state

    async def _publish(self, topic: Topic, message: Order | InstantActions) -> None:
        client = self._client
        if client is None:
            raise CommandFailed(f"not connected to the fleet broker {self.config.broker_url}")
        try:
            await client.publish(self._topic(topic), encode(message), qos=0)
        except aiomqtt.MqttError as exc:
            raise CommandFailed(f"cannot send {topic.value}: {exc}") from None
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            # 3.11's wait_for inside aiomqtt's publish can swallow a racing cancel.
            raise asyncio.CancelledError

    async def _send_order(self, order: Order) -> None:
        """Send until a state shows the order (or refuses it); resends are idempotent."""
        for attempt in range(ORDER_RESENDS + 1):
            if attempt:
                order = self.tracker.resend(now=_now())
                self._log.info("vda5050.order_resent", order=order.order_id, attempt=attempt)
            await self._publish(Topic.ORDER, order)
            with contextlib.suppress(TimeoutError):
                await self._wait(
                    partial(_took, order_id=order.order_id), self.config.order_ack_timeout_s
                )
                return
        raise CommandFailed(f"the vehicle never took order {order.order_id}")

    async def _wait(self, predicate: Callable[[State], bool], timeout: float) -> State:
        def ready() -> bool:
            return self.state is not None and predicate(self.state)

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(ready)
        assert self.state is not None
        return self.state

    async def _wait_for_outcome(self, order_id: str, action_ids: tuple[str, ...]) -> str | None:
        """None when the order finished; otherwise why it failed."""

        def outcome(state: State) -> str | Literal[False] | None:
            refusal = _refusal(state, order_id)
            if refusal is not None:
                return refusal
            if state.order_id != order_id:
                return f"the vehicle dropped order {order_id} for {state.order_id!r}"
            statuses = {a.action_id: a for a in state.action_states if a.action_id in action_ids}
            for action in statuses.values():
                if action.action_status is ActionStatus.FAILED:
                    why = action.result_description or "failed"
                    return f"order {order_id}: {action.action_type} {why}"
            finished = len(statuses) == len(action_ids) and all(
                a.action_status is ActionStatus.FINISHED for a in statuses.values()
            )
            return None if finished and not state.node_states else False

        try:
            state = await self._wait(lambda s: outcome(s) is not False, self.config.order_timeout_s)
        except TimeoutError:
            return f"order {order_id} not done within {self.config.order_timeout_s:g} s"
        result = outcome(state)
        assert result is not False
        return result

    async def instant_action(self, action_type: str) -> str:
        self._fresh_state()
        action = Action(
            action_type=action_type,
            action_id=f"{action_type}-{uuid.uuid4().hex[:12]}",
            blocking_type=BlockingType.HARD,
        )
        await self._publish(
            Topic.INSTANT_ACTIONS, self.tracker.instant_actions([action], now=_now())
        )

        def settled(state: State) -> bool:
            return any(
                a.action_id == action.action_id and a.action_status in TERMINAL_ACTION_STATES
                for a in state.action_states
            )

        try:
            state = await self._wait(settled, self.config.order_ack_timeout_s)
        except TimeoutError:
            raise CommandFailed(f"{action_type} not confirmed by the vehicle") from None
        result = next(a for a in state.action_states if a.action_id == action.action_id)
        if result.action_status is ActionStatus.FAILED:
            raise CommandFailed(f"{action_type} failed: {result.result_description or ''}")
        return f"{action_type} done"


def _took(state: State, *, order_id: str) -> bool:
    """The vehicle's state shows it has the order, or that it refused it."""
    return state.order_id == order_id or _refusal(state, order_id) is not None


def _refusal(state: State, order_id: str) -> str | None:
    for error in state.errors:
        if error.error_type in ORDER_ERRORS and error.reference("orderId") == order_id:
            return f"{error.error_type}: {error.error_description or ''}".rstrip(": ")
    return None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


# ------------------------------------------------------------- registry entry

SPEC = DriverSpec(
    kind="vda5050_agv",
    config=Vda5050AgvConfig,
    build=lambda config, context: Vda5050AgvDriver(config, context.emit),
    example=(
        'manufacturer = "ACME"\nserial_number = "0001"\n'
        'graph = { nodes = [{ id = "N1", x = 0.0, y = 0.0 }], edges = [] }'
    ),
)
