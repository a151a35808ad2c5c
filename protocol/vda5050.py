"""VDA 5050 v2 (AGV ↔ master control over MQTT): messages, topics and master-side logic.

Sans-I/O: JSON bytes in, typed messages out, and back; no clock is read here (callers
pass ``now``). The message types follow the VDA 5050 2.0 JSON schemas with their
camelCase field names; optional fields the schemas allow to be absent are ``None`` and
left out of the JSON. Unknown fields of newer minor versions are ignored on decode.

Master control (the gateway's AGV driver) uses ``OrderTracker`` to number its headers
and build orders from a path on a ``FloorGraph``, and ``HeaderGapDetector`` to notice
lost ``state``/``visualization`` messages. The vehicle side (the simulator) uses
``classify_order`` for the orderUpdateId rules and ``order_problems`` to validate.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import heapq
import itertools
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Annotated, Any

import msgspec

from warelink.protocol.errors import DecodeError

VERSION = "2.0.0"
MAJOR_VERSION = "v2"
DEFAULT_INTERFACE = "uagv"

HeaderId = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
SequenceId = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]


class Vda5050DecodeError(DecodeError):
    """Bytes or a topic that are not a valid VDA 5050 v2 message of the expected kind."""


class Topic(enum.StrEnum):
    ORDER = "order"  # master → vehicle, QoS 0
    INSTANT_ACTIONS = "instantActions"  # master → vehicle, QoS 0
    STATE = "state"  # vehicle → master, QoS 0
    VISUALIZATION = "visualization"  # vehicle → master, QoS 0
    CONNECTION = "connection"  # vehicle → master, QoS 1, retained, also the Will
    FACTSHEET = "factsheet"  # vehicle → master, QoS 0


class BlockingType(enum.StrEnum):
    NONE = "NONE"  # driving and other actions may go on
    SOFT = "SOFT"  # other actions may go on, driving may not
    HARD = "HARD"  # nothing else at the same time


class ActionStatus(enum.StrEnum):
    WAITING = "WAITING"
    INITIALIZING = "INITIALIZING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    FINISHED = "FINISHED"
    FAILED = "FAILED"


class ConnectionState(enum.StrEnum):
    ONLINE = "ONLINE"
    OFFLINE = "OFFLINE"
    CONNECTIONBROKEN = "CONNECTIONBROKEN"


class OperatingMode(enum.StrEnum):
    AUTOMATIC = "AUTOMATIC"
    SEMIAUTOMATIC = "SEMIAUTOMATIC"
    MANUAL = "MANUAL"
    SERVICE = "SERVICE"
    TEACHIN = "TEACHIN"


class ErrorLevel(enum.StrEnum):
    WARNING = "WARNING"
    FATAL = "FATAL"


class EStop(enum.StrEnum):
    AUTOACK = "AUTOACK"
    MANUAL = "MANUAL"
    REMOTE = "REMOTE"
    NONE = "NONE"


TERMINAL_ACTION_STATES = frozenset({ActionStatus.FINISHED, ActionStatus.FAILED})

# ------------------------------------------------------------------- structs


class _Struct(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True):
    pass


class _Header(_Struct, frozen=True, kw_only=True):
    header_id: HeaderId
    timestamp: dt.datetime
    version: str
    manufacturer: str
    serial_number: str


class ActionParameter(_Struct, frozen=True, kw_only=True):
    key: str
    value: str | int | float | bool | list[Any] | dict[str, Any]


class Action(_Struct, frozen=True, kw_only=True):
    action_type: str
    action_id: str
    blocking_type: BlockingType
    action_description: str | None = None
    action_parameters: list[ActionParameter] | None = None

    def parameter(self, key: str) -> Any:
        for param in self.action_parameters or ():
            if param.key == key:
                return param.value
        return None


class NodePosition(_Struct, frozen=True, kw_only=True):
    x: float
    y: float
    map_id: str
    theta: float | None = None
    allowed_deviation_x_y: float | None = msgspec.field(default=None, name="allowedDeviationXY")
    allowed_deviation_theta: float | None = None
    map_description: str | None = None


class Node(_Struct, frozen=True, kw_only=True):
    node_id: str
    sequence_id: SequenceId
    released: bool
    actions: list[Action]
    node_description: str | None = None
    node_position: NodePosition | None = None


class Edge(_Struct, frozen=True, kw_only=True):
    edge_id: str
    sequence_id: SequenceId
    released: bool
    start_node_id: str
    end_node_id: str
    actions: list[Action]
    edge_description: str | None = None
    max_speed: float | None = None
    orientation: float | None = None
    length: float | None = None


class Order(_Header, frozen=True, kw_only=True):
    order_id: str
    order_update_id: SequenceId
    nodes: list[Node]
    edges: list[Edge]
    zone_set_id: str | None = None


class InstantActions(_Header, frozen=True, kw_only=True):
    actions: list[Action]


class AgvPosition(_Struct, frozen=True, kw_only=True):
    x: float
    y: float
    theta: float
    map_id: str
    position_initialized: bool
    localization_score: float | None = None
    deviation_range: float | None = None
    map_description: str | None = None


class Velocity(_Struct, frozen=True, kw_only=True):
    vx: float | None = None
    vy: float | None = None
    omega: float | None = None


class NodeState(_Struct, frozen=True, kw_only=True):
    node_id: str
    sequence_id: SequenceId
    released: bool
    node_description: str | None = None
    node_position: NodePosition | None = None


class EdgeState(_Struct, frozen=True, kw_only=True):
    edge_id: str
    sequence_id: SequenceId
    released: bool
    edge_description: str | None = None


class ActionState(_Struct, frozen=True, kw_only=True):
    action_id: str
    action_status: ActionStatus
    action_type: str | None = None
    action_description: str | None = None
    result_description: str | None = None


class BatteryState(_Struct, frozen=True, kw_only=True):
    battery_charge: float
    charging: bool
    battery_voltage: float | None = None
    battery_health: float | None = None
    reach: float | None = None


class ErrorReference(_Struct, frozen=True, kw_only=True):
    reference_key: str
    reference_value: str


class Error(_Struct, frozen=True, kw_only=True):
    error_type: str
    error_level: ErrorLevel
    error_references: list[ErrorReference] | None = None
    error_description: str | None = None

    def reference(self, key: str) -> str | None:
        for ref in self.error_references or ():
            if ref.reference_key == key:
                return ref.reference_value
        return None


class SafetyState(_Struct, frozen=True, kw_only=True):
    e_stop: EStop
    field_violation: bool


class Load(_Struct, frozen=True, kw_only=True):
    load_id: str | None = None
    load_type: str | None = None
    load_position: str | None = None
    weight: float | None = None


class State(_Header, frozen=True, kw_only=True):
    order_id: str
    order_update_id: SequenceId
    last_node_id: str
    last_node_sequence_id: SequenceId
    node_states: list[NodeState]
    edge_states: list[EdgeState]
    driving: bool
    action_states: list[ActionState]
    battery_state: BatteryState
    operating_mode: OperatingMode
    errors: list[Error]
    safety_state: SafetyState
    agv_position: AgvPosition | None = None
    velocity: Velocity | None = None
    loads: list[Load] | None = None
    paused: bool | None = None
    new_base_request: bool | None = None
    distance_since_last_node: float | None = None
    zone_set_id: str | None = None


class Visualization(_Header, frozen=True, kw_only=True):
    agv_position: AgvPosition | None = None
    velocity: Velocity | None = None


class Connection(_Header, frozen=True, kw_only=True):
    connection_state: ConnectionState


class TypeSpecification(_Struct, frozen=True, kw_only=True):
    series_name: str
    agv_kinematic: str  # DIFF, OMNI, THREEWHEEL
    agv_class: str  # FORKLIFT, CONVEYOR, TUGGER, CARRIER
    max_load_mass: float
    localization_types: list[str]
    navigation_types: list[str]
    series_description: str | None = None


class PhysicalParameters(_Struct, frozen=True, kw_only=True):
    speed_min: float
    speed_max: float
    acceleration_max: float
    deceleration_max: float
    height_max: float
    width: float
    length: float
    height_min: float | None = None


class AgvAction(_Struct, frozen=True, kw_only=True):
    action_type: str
    action_scopes: list[str]  # INSTANT, NODE, EDGE
    action_description: str | None = None


class ProtocolFeatures(_Struct, frozen=True, kw_only=True):
    optional_parameters: list[dict[str, Any]]
    agv_actions: list[AgvAction]


class Factsheet(_Header, frozen=True, kw_only=True):
    type_specification: TypeSpecification
    physical_parameters: PhysicalParameters
    protocol_features: ProtocolFeatures
    protocol_limits: dict[str, Any] | None = None
    agv_geometry: dict[str, Any] | None = None
    load_specification: dict[str, Any] | None = None


Message = Order | InstantActions | State | Visualization | Connection | Factsheet

MESSAGE_TYPES: dict[Topic, type[Message]] = {
    Topic.ORDER: Order,
    Topic.INSTANT_ACTIONS: InstantActions,
    Topic.STATE: State,
    Topic.VISUALIZATION: Visualization,
    Topic.CONNECTION: Connection,
    Topic.FACTSHEET: Factsheet,
}
_DECODERS: dict[Topic, msgspec.json.Decoder[Any]] = {
    topic: msgspec.json.Decoder(cls) for topic, cls in MESSAGE_TYPES.items()
}
_ENCODER = msgspec.json.Encoder()


def encode(message: Message) -> bytes:
    return _ENCODER.encode(message)


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """Every failure on bad input is a ``Vda5050DecodeError``: msgspec's own errors and
    the ones it lets through (invalid UTF-8 in a string, nesting past the recursion
    limit); ``ValueError`` covers the floor graph's own checks too."""
    try:
        yield
    except Vda5050DecodeError:
        raise
    except UnicodeDecodeError:
        raise Vda5050DecodeError(f"{what}: invalid UTF-8 in a string") from None
    except RecursionError:
        raise Vda5050DecodeError(f"{what}: nested too deeply") from None
    except (msgspec.MsgspecError, ValueError) as exc:  # ValidationError is a DecodeError
        raise Vda5050DecodeError(f"{what}: {exc}") from None


def decode(topic: Topic, data: bytes) -> Message:
    """Decode the JSON payload of ``topic``; raises ``Vda5050DecodeError`` on bad input."""
    with _translated(topic):
        message: Message = _DECODERS[topic].decode(data)
    return message


def decode_state(data: bytes) -> State:
    message = decode(Topic.STATE, data)
    assert isinstance(message, State)
    return message


def decode_order(data: bytes) -> Order:
    message = decode(Topic.ORDER, data)
    assert isinstance(message, Order)
    return message


def decode_instant_actions(data: bytes) -> InstantActions:
    message = decode(Topic.INSTANT_ACTIONS, data)
    assert isinstance(message, InstantActions)
    return message


def header_fields(
    header_id: int, now: dt.datetime, manufacturer: str, serial_number: str
) -> dict[str, Any]:
    """The five header fields, as keyword arguments of any message type."""
    return {
        "header_id": header_id,
        "timestamp": now,
        "version": VERSION,
        "manufacturer": manufacturer,
        "serial_number": serial_number,
    }


# -------------------------------------------------------------------- topics


class VehicleTopic(msgspec.Struct, frozen=True):
    manufacturer: str
    serial_number: str
    topic: Topic


class Vda5050Topics(msgspec.Struct, frozen=True):
    """``{interfaceName}/{majorVersion}/{manufacturer}/{serialNumber}/{topic}``.

    ``interface_name`` may have several levels (``wltest-1234/uagv``) so tests and
    deployments can share a broker.
    """

    interface_name: str = DEFAULT_INTERFACE
    major_version: str = MAJOR_VERSION

    def topic(self, manufacturer: str, serial_number: str, topic: Topic) -> str:
        return (
            f"{self.interface_name}/{self.major_version}/{manufacturer}/{serial_number}/"
            f"{topic.value}"
        )

    def vehicle_filter(self, manufacturer: str = "+", serial_number: str = "+") -> str:
        """A subscription filter for every topic of a vehicle (or of all, with ``+``)."""
        return f"{self.interface_name}/{self.major_version}/{manufacturer}/{serial_number}/+"

    def parse(self, topic: str) -> VehicleTopic:
        head = f"{self.interface_name}/{self.major_version}/"
        if not topic.startswith(head):
            raise Vda5050DecodeError(f"not a {head}… topic: {topic!r}")
        parts = topic[len(head) :].split("/")
        if len(parts) != 3 or not parts[0] or not parts[1]:
            raise Vda5050DecodeError(f"expected …/manufacturer/serialNumber/topic: {topic!r}")
        try:
            kind = Topic(parts[2])
        except ValueError:
            raise Vda5050DecodeError(f"unknown VDA 5050 topic {parts[2]!r}") from None
        return VehicleTopic(parts[0], parts[1], kind)


# ---------------------------------------------------------------- floor graph


class FloorNode(msgspec.Struct, frozen=True):
    id: str
    x: float
    y: float
    location: str | None = None  # the ledger location code served at this node


class FloorEdge(msgspec.Struct, frozen=True):
    start: str
    end: str
    bidirectional: bool = True


class FloorGraphSpec(msgspec.Struct, frozen=True):
    """The floor graph as written in JSON: ``{"nodes": [...], "edges": [...]}``."""

    nodes: list[FloorNode]
    edges: list[FloorEdge]
    map_id: str = "floor"


class NoPath(ValueError):
    """No route between two nodes, or an unknown node or location."""


class FloorGraph:
    """Nodes with coordinates and location codes, edges between them, shortest paths."""

    def __init__(
        self, nodes: Iterable[FloorNode], edges: Iterable[FloorEdge], map_id: str = "floor"
    ) -> None:
        self.map_id = map_id
        self.nodes: dict[str, FloorNode] = {}
        self._by_location: dict[str, str] = {}
        for node in nodes:
            if node.id in self.nodes:
                raise ValueError(f"node {node.id!r} declared twice")
            self.nodes[node.id] = node
            if node.location is not None:
                if node.location in self._by_location:
                    raise ValueError(f"location {node.location!r} is at two nodes")
                self._by_location[node.location] = node.id
        self._next: dict[str, dict[str, float]] = {node_id: {} for node_id in self.nodes}
        for edge in edges:
            for end in (edge.start, edge.end):
                if end not in self.nodes:
                    raise ValueError(f"edge {edge.start}→{edge.end}: unknown node {end!r}")
            length = self.distance(edge.start, edge.end)
            self._next[edge.start][edge.end] = length
            if edge.bidirectional:
                self._next[edge.end][edge.start] = length

    @classmethod
    def from_spec(cls, spec: FloorGraphSpec) -> FloorGraph:
        return cls(spec.nodes, spec.edges, spec.map_id)

    @classmethod
    def from_json(cls, data: bytes) -> FloorGraph:
        with _translated("floor graph"):
            return cls.from_spec(msgspec.json.decode(data, type=FloorGraphSpec))

    def distance(self, a: str, b: str) -> float:
        na, nb = self.nodes[a], self.nodes[b]
        return math.hypot(nb.x - na.x, nb.y - na.y)

    def has_edge(self, a: str, b: str) -> bool:
        return b in self._next.get(a, {})

    @staticmethod
    def edge_id(a: str, b: str) -> str:
        return f"{a}-{b}"

    def node_at(self, location: str) -> str:
        try:
            return self._by_location[location]
        except KeyError:
            raise NoPath(f"no node serves location {location!r}") from None

    @property
    def locations(self) -> dict[str, str]:
        return dict(self._by_location)

    def shortest_path(self, start: str, goal: str) -> list[str]:
        """Dijkstra over edge lengths; ``[start]`` when start is the goal."""
        for node_id in (start, goal):
            if node_id not in self.nodes:
                raise NoPath(f"unknown node {node_id!r}")
        best: dict[str, float] = {start: 0.0}
        previous: dict[str, str] = {}
        queue: list[tuple[float, str]] = [(0.0, start)]
        while queue:
            cost, here = heapq.heappop(queue)
            if here == goal:
                break
            if cost > best[here]:
                continue
            for there, length in sorted(self._next[here].items()):
                candidate = cost + length
                if candidate < best.get(there, math.inf):
                    best[there] = candidate
                    previous[there] = here
                    heapq.heappush(queue, (candidate, there))
        if goal not in best:
            raise NoPath(f"no route from {start!r} to {goal!r}")
        path = [goal]
        while path[-1] != start:
            path.append(previous[path[-1]])
        return path[::-1]

    def node_position(self, node_id: str) -> NodePosition:
        node = self.nodes[node_id]
        return NodePosition(x=node.x, y=node.y, map_id=self.map_id)


# -------------------------------------------------------------- order building


def build_route(
    graph: FloorGraph,
    path: Sequence[str],
    *,
    first_sequence_id: int = 0,
    released: int | None = None,
    node_actions: Mapping[int, Sequence[Action]] | None = None,
) -> tuple[list[Node], list[Edge]]:
    """Nodes and edges along ``path`` (consecutive nodes must be joined by an edge).

    Sequence ids run ``first_sequence_id, +1, +2…`` alternating node, edge, node, so
    nodes get even ids and edges odd ones when starting at an even id. The first
    ``released`` nodes (all when None) and the edges between them form the base; the
    rest is the horizon. ``node_actions`` maps a path index to the actions at that node.
    """
    if not path:
        raise ValueError("a route needs at least one node")
    count = len(path) if released is None else released
    if not 1 <= count <= len(path):
        raise ValueError(f"released must be in 1..{len(path)}, not {count}")
    actions = node_actions or {}
    nodes: list[Node] = []
    edges: list[Edge] = []
    for index, node_id in enumerate(path):
        if index:
            start = path[index - 1]
            if not graph.has_edge(start, node_id):
                raise NoPath(f"no edge {start!r}→{node_id!r}")
            edges.append(
                Edge(
                    edge_id=graph.edge_id(start, node_id),
                    sequence_id=first_sequence_id + 2 * index - 1,
                    released=index < count,
                    start_node_id=start,
                    end_node_id=node_id,
                    actions=[],
                    length=graph.distance(start, node_id),
                )
            )
        nodes.append(
            Node(
                node_id=node_id,
                sequence_id=first_sequence_id + 2 * index,
                released=index < count,
                actions=list(actions.get(index, ())),
                node_position=graph.node_position(node_id),
            )
        )
    return nodes, edges


def order_problems(order: Order) -> list[str]:
    """Why a vehicle must refuse ``order`` as malformed (empty when it is well formed)."""
    problems: list[str] = []
    nodes, edges = order.nodes, order.edges
    if not nodes:
        return ["an order needs at least one node"]
    if len(edges) != len(nodes) - 1:
        problems.append(f"{len(nodes)} nodes need {len(nodes) - 1} edges, not {len(edges)}")
        return problems
    for i, edge in enumerate(edges):
        before, after = nodes[i], nodes[i + 1]
        if edge.start_node_id != before.node_id or edge.end_node_id != after.node_id:
            problems.append(f"edge {edge.edge_id!r} does not join {before.node_id}→{after.node_id}")
        if not before.sequence_id < edge.sequence_id < after.sequence_id:
            problems.append(f"edge {edge.edge_id!r}: sequenceIds out of order")
        if edge.released and not after.released:
            problems.append(f"edge {edge.edge_id!r} released but its end node is not")
    if not nodes[0].released:
        problems.append("the first node must be released")
    released = [node.released for node in nodes]
    if any(later and not earlier for earlier, later in itertools.pairwise(released)):
        problems.append("released nodes must form a prefix (base before horizon)")
    ids = [a.action_id for n in nodes for a in n.actions] + [
        a.action_id for e in edges for a in e.actions
    ]
    if len(ids) != len(set(ids)):
        problems.append("actionIds are not unique")
    return problems


class OrderDecision(enum.StrEnum):
    """What a vehicle does with an incoming order, given the order it holds."""

    NEW = "new"  # another orderId: a new order
    UPDATE = "update"  # same orderId, higher orderUpdateId: extend the order
    DUPLICATE = "duplicate"  # same orderId and orderUpdateId: ignore (a resend)
    STALE = "stale"  # same orderId, lower orderUpdateId: reject (orderUpdateError)


def classify_order(current_order_id: str, current_update_id: int, incoming: Order) -> OrderDecision:
    if incoming.order_id != current_order_id:
        return OrderDecision.NEW
    if incoming.order_update_id < current_update_id:
        return OrderDecision.STALE
    if incoming.order_update_id == current_update_id:
        return OrderDecision.DUPLICATE
    return OrderDecision.UPDATE


class OrderConflict(ValueError):
    """An order operation that does not fit the orders already sent."""


class OrderTracker:
    """Master control's bookkeeping for one vehicle: header ids, orders, their updates.

    Every message to the vehicle takes the next headerId of its topic (+1 each). An
    order is built from a path; an update releases more of its horizon and carries the
    next orderUpdateId, starting at the last released node, as VDA 5050 requires.
    ``resend`` repeats the current order with a new headerId and the same
    orderUpdateId, which a vehicle ignores if it already has it: resends are safe.
    """

    def __init__(self, manufacturer: str, serial_number: str, graph: FloorGraph) -> None:
        self.manufacturer = manufacturer
        self.serial_number = serial_number
        self.graph = graph
        self._header_ids: dict[Topic, int] = {}
        self.current: Order | None = None
        self._path: list[str] = []
        self._actions: dict[int, list[Action]] = {}
        self._released = 0

    def next_header_id(self, topic: Topic) -> int:
        header_id = self._header_ids.get(topic, -1) + 1
        self._header_ids[topic] = header_id
        return header_id

    def _header(self, topic: Topic, now: dt.datetime) -> dict[str, Any]:
        return header_fields(self.next_header_id(topic), now, self.manufacturer, self.serial_number)

    def new_order(
        self,
        order_id: str,
        path: Sequence[str],
        *,
        now: dt.datetime,
        node_actions: Mapping[int, Sequence[Action]] | None = None,
        released: int | None = None,
    ) -> Order:
        if self.current is not None and self.current.order_id == order_id:
            raise OrderConflict(f"order {order_id!r} was already sent; resend or update it")
        nodes, edges = build_route(self.graph, path, released=released, node_actions=node_actions)
        self._path = list(path)
        self._actions = {i: list(a) for i, a in (node_actions or {}).items()}
        self._released = len(path) if released is None else released
        self.current = Order(
            **self._header(Topic.ORDER, now),
            order_id=order_id,
            order_update_id=0,
            nodes=nodes,
            edges=edges,
        )
        return self.current

    def release(self, *, now: dt.datetime, released: int | None = None) -> Order:
        """An order update releasing the horizon up to ``released`` nodes (all if None)."""
        order = self.current
        if order is None:
            raise OrderConflict("no order to update")
        count = len(self._path) if released is None else released
        if not self._released < count <= len(self._path):
            raise OrderConflict(f"cannot release {count} of {len(self._path)} nodes")
        start = self._released - 1  # the update starts at the base's last node
        nodes, edges = build_route(
            self.graph,
            self._path[start:],
            first_sequence_id=2 * start,
            released=count - start,
            node_actions={i - start: acts for i, acts in self._actions.items() if i > start},
        )
        self._released = count
        self.current = Order(
            **self._header(Topic.ORDER, now),
            order_id=order.order_id,
            order_update_id=order.order_update_id + 1,
            nodes=nodes,
            edges=edges,
        )
        return self.current

    def resend(self, *, now: dt.datetime) -> Order:
        if self.current is None:
            raise OrderConflict("no order to resend")
        self.current = msgspec.structs.replace(
            self.current, header_id=self.next_header_id(Topic.ORDER), timestamp=now
        )
        return self.current

    def instant_actions(self, actions: Sequence[Action], *, now: dt.datetime) -> InstantActions:
        return InstantActions(**self._header(Topic.INSTANT_ACTIONS, now), actions=list(actions))


# ------------------------------------------------------------ header gaps


class HeaderGap(msgspec.Struct, frozen=True):
    """Messages ``expected`` … ``received - 1`` of ``topic`` never arrived."""

    topic: Topic
    expected: int
    received: int

    @property
    def missing(self) -> int:
        return self.received - self.expected


class HeaderGapDetector:
    """Watches the headerIds of one vehicle's incoming topics (each counted on its own).

    A headerId above the next expected one is a gap, reported once. One at or below the
    last seen is a duplicate or a vehicle restart (its counters start over): not a gap,
    and the stream is followed from there.
    """

    def __init__(self) -> None:
        self._last: dict[Topic, int] = {}
        self.gaps = 0
        self.missing = 0
        self.restarts = 0

    def observe(self, topic: Topic, header_id: int) -> HeaderGap | None:
        last = self._last.get(topic)
        self._last[topic] = header_id
        if last is None or header_id == last + 1:
            return None
        if header_id <= last:
            self.restarts += 1
            return None
        gap = HeaderGap(topic, last + 1, header_id)
        self.gaps += 1
        self.missing += gap.missing
        return gap
