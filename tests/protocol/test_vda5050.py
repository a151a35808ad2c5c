"""VDA 5050 v2 messages, topics, floor graph, order building and header-gap detection."""

from __future__ import annotations

import contextlib
import datetime as dt
import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warelink.protocol.errors import DecodeError
from warelink.protocol.vda5050 import (
    Action,
    ActionStatus,
    BlockingType,
    Connection,
    ConnectionState,
    FloorEdge,
    FloorGraph,
    FloorNode,
    HeaderGap,
    HeaderGapDetector,
    InstantActions,
    NoPath,
    Order,
    OrderConflict,
    OrderDecision,
    OrderTracker,
    State,
    Topic,
    Vda5050DecodeError,
    Vda5050Topics,
    VehicleTopic,
    Visualization,
    build_route,
    classify_order,
    decode,
    encode,
    order_problems,
)

NOW = dt.datetime(2026, 3, 14, 9, 26, 53, 589000, tzinfo=dt.UTC)

ORDER_JSON = """{
  "headerId": 7, "timestamp": "2026-03-14T09:26:53.589Z", "version": "2.0.0",
  "manufacturer": "ACME", "serialNumber": "0001",
  "orderId": "T-100", "orderUpdateId": 0,
  "nodes": [
    {"nodeId": "A", "sequenceId": 0, "released": true,
     "nodePosition": {"x": 0.0, "y": 0.0, "mapId": "hall-1", "allowedDeviationXY": 0.1},
     "actions": [{"actionType": "pick", "actionId": "T-100-pick", "blockingType": "HARD",
                  "actionParameters": [{"key": "lpn", "value": "00395060001343520019"},
                                       {"key": "quantity", "value": 12}]}]},
    {"nodeId": "B", "sequenceId": 2, "released": true, "actions": []},
    {"nodeId": "C", "sequenceId": 4, "released": false,
     "actions": [{"actionType": "drop", "actionId": "T-100-drop", "blockingType": "SOFT"}]}
  ],
  "edges": [
    {"edgeId": "A-B", "sequenceId": 1, "released": true, "startNodeId": "A", "endNodeId": "B",
     "maxSpeed": 1.5, "actions": []},
    {"edgeId": "B-C", "sequenceId": 3, "released": false, "startNodeId": "B", "endNodeId": "C",
     "actions": []}
  ]
}"""

INSTANT_JSON = """{
  "headerId": 3, "timestamp": "2026-03-14T09:26:53.589Z", "version": "2.0.0",
  "manufacturer": "ACME", "serialNumber": "0001",
  "actions": [
    {"actionType": "initPosition", "actionId": "ia-1", "blockingType": "HARD",
     "actionParameters": [{"key": "x", "value": 1.5}, {"key": "y", "value": 2.0},
                          {"key": "theta", "value": 0.0}, {"key": "mapId", "value": "hall-1"},
                          {"key": "lastNodeId", "value": "B"}]},
    {"actionType": "stateRequest", "actionId": "ia-2", "blockingType": "NONE"}
  ]
}"""

STATE_JSON = """{
  "headerId": 4711, "timestamp": "2026-03-14T09:26:53.589Z", "version": "2.0.0",
  "manufacturer": "ACME", "serialNumber": "0001",
  "orderId": "T-100", "orderUpdateId": 0, "lastNodeId": "A", "lastNodeSequenceId": 0,
  "driving": true, "paused": false, "newBaseRequest": false, "distanceSinceLastNode": 0.4,
  "operatingMode": "AUTOMATIC",
  "nodeStates": [{"nodeId": "B", "sequenceId": 2, "released": true,
                  "nodePosition": {"x": 1.0, "y": 0.0, "mapId": "hall-1"}}],
  "edgeStates": [{"edgeId": "A-B", "sequenceId": 1, "released": true}],
  "agvPosition": {"x": 0.4, "y": 0.0, "theta": 0.0, "mapId": "hall-1",
                  "positionInitialized": true, "localizationScore": 0.9},
  "velocity": {"vx": 1.0, "vy": 0.0, "omega": 0.0},
  "loads": [{"loadId": "00395060001343520019", "loadType": "EPAL"}],
  "actionStates": [
    {"actionId": "T-100-pick", "actionType": "pick", "actionStatus": "FINISHED"},
    {"actionId": "T-100-drop", "actionType": "drop", "actionStatus": "WAITING"}
  ],
  "batteryState": {"batteryCharge": 81.5, "batteryVoltage": 48.1, "charging": false},
  "errors": [{"errorType": "orderUpdateError", "errorLevel": "WARNING",
              "errorReferences": [{"referenceKey": "orderId", "referenceValue": "T-99"}],
              "errorDescription": "orderUpdateId 1 lower than 2"}],
  "safetyState": {"eStop": "NONE", "fieldViolation": false}
}"""

VISUALIZATION_JSON = """{
  "headerId": 90, "timestamp": "2026-03-14T09:26:53.589Z", "version": "2.0.0",
  "manufacturer": "ACME", "serialNumber": "0001",
  "agvPosition": {"x": 0.5, "y": 0.0, "theta": 1.57, "mapId": "hall-1",
                  "positionInitialized": true},
  "velocity": {"vx": 1.0}
}"""

CONNECTION_JSON = """{
  "headerId": 1, "timestamp": "2026-03-14T09:26:53.589Z", "version": "2.0.0",
  "manufacturer": "ACME", "serialNumber": "0001", "connectionState": "CONNECTIONBROKEN"
}"""

FACTSHEET_JSON = """{
  "headerId": 0, "timestamp": "2026-03-14T09:26:53.589Z", "version": "2.0.0",
  "manufacturer": "ACME", "serialNumber": "0001",
  "typeSpecification": {"seriesName": "F-1", "agvKinematic": "DIFF", "agvClass": "FORKLIFT",
                        "maxLoadMass": 1000.0, "localizationTypes": ["NATURAL"],
                        "navigationTypes": ["AUTONOMOUS"]},
  "physicalParameters": {"speedMin": 0.0, "speedMax": 2.0, "accelerationMax": 1.0,
                         "decelerationMax": 1.0, "heightMax": 2.1, "width": 1.0,
                         "length": 2.0},
  "protocolFeatures": {"optionalParameters": [],
                       "agvActions": [{"actionType": "pick", "actionScopes": ["NODE"]}]},
  "protocolLimits": {"maxStringLens": {"msgLen": 10000}}
}"""

EXAMPLES = [
    (Topic.ORDER, ORDER_JSON, Order),
    (Topic.INSTANT_ACTIONS, INSTANT_JSON, InstantActions),
    (Topic.STATE, STATE_JSON, State),
    (Topic.VISUALIZATION, VISUALIZATION_JSON, Visualization),
    (Topic.CONNECTION, CONNECTION_JSON, Connection),
    (Topic.FACTSHEET, FACTSHEET_JSON, None),
]


def _normalized(value: object) -> object:
    """JSON with ``.589Z`` and ``.589000Z`` the same instant, ints and floats alike."""
    if isinstance(value, dict):
        return {k: _normalized(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalized(v) for v in value]
    if isinstance(value, str) and value.startswith("2026-03-14T"):
        return dt.datetime.fromisoformat(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


@pytest.mark.parametrize(("topic", "text", "cls"), EXAMPLES, ids=[t for t, _, _ in EXAMPLES])
def test_hand_written_examples_round_trip(topic: Topic, text: str, cls: type | None) -> None:
    message = decode(topic, text.encode())
    if cls is not None:
        assert isinstance(message, cls)
    assert message.timestamp == NOW
    assert _normalized(json.loads(encode(message))) == _normalized(json.loads(text))
    assert decode(topic, encode(message)) == message


def test_decoded_fields_are_typed() -> None:
    order = decode(Topic.ORDER, ORDER_JSON.encode())
    assert isinstance(order, Order)
    pick = order.nodes[0].actions[0]
    assert pick.blocking_type is BlockingType.HARD
    assert pick.parameter("quantity") == 12
    assert order.nodes[0].node_position is not None
    assert order.nodes[0].node_position.allowed_deviation_x_y == 0.1
    state = decode(Topic.STATE, STATE_JSON.encode())
    assert isinstance(state, State)
    assert state.action_states[0].action_status is ActionStatus.FINISHED
    assert state.errors[0].reference("orderId") == "T-99"
    connection = decode(Topic.CONNECTION, CONNECTION_JSON.encode())
    assert isinstance(connection, Connection)
    assert connection.connection_state is ConnectionState.CONNECTIONBROKEN


def test_missing_required_field_is_a_decode_error() -> None:
    state = json.loads(STATE_JSON)
    del state["batteryState"]
    with pytest.raises(Vda5050DecodeError, match="batteryState"):
        decode(Topic.STATE, json.dumps(state).encode())
    with pytest.raises(Vda5050DecodeError):
        decode(Topic.CONNECTION, CONNECTION_JSON.replace("CONNECTIONBROKEN", "GONE").encode())
    assert issubclass(Vda5050DecodeError, DecodeError)


@settings(max_examples=300)
@given(st.binary(max_size=300), st.sampled_from(list(Topic)))
def test_arbitrary_bytes_only_raise_decode_error(data: bytes, topic: Topic) -> None:
    with contextlib.suppress(Vda5050DecodeError):
        decode(topic, data)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=20,
)


@settings(max_examples=200)
@given(JSON_VALUES, st.sampled_from(list(Topic)))
def test_arbitrary_json_only_raises_decode_error(value: object, topic: Topic) -> None:
    with contextlib.suppress(Vda5050DecodeError):
        decode(topic, json.dumps(value).encode())


# ------------------------------------------------------------------ topics


def test_topics_build_and_parse() -> None:
    topics = Vda5050Topics("wltest-1/uagv")
    topic = topics.topic("ACME", "0001", Topic.INSTANT_ACTIONS)
    assert topic == "wltest-1/uagv/v2/ACME/0001/instantActions"
    assert topics.parse(topic) == VehicleTopic("ACME", "0001", Topic.INSTANT_ACTIONS)
    assert Vda5050Topics().topic("ACME", "0001", Topic.STATE) == "uagv/v2/ACME/0001/state"
    assert topics.vehicle_filter("ACME", "0001") == "wltest-1/uagv/v2/ACME/0001/+"


@pytest.mark.parametrize(
    "topic",
    [
        "uagv/v2/ACME/0001/state",  # another interface
        "wltest-1/uagv/v1/ACME/0001/state",  # another major version
        "wltest-1/uagv/v2/ACME/state",
        "wltest-1/uagv/v2/ACME/0001/state/x",
        "wltest-1/uagv/v2/ACME/0001/orders",
    ],
)
def test_foreign_topics_are_refused(topic: str) -> None:
    with pytest.raises(Vda5050DecodeError):
        Vda5050Topics("wltest-1/uagv").parse(topic)


# --------------------------------------------------------------- header gaps


def test_header_gap_detected_once_per_gap_and_per_topic() -> None:
    detector = HeaderGapDetector()
    reports = [detector.observe(Topic.STATE, i) for i in (0, 1, 2, 4, 5)]
    assert reports == [None, None, None, HeaderGap(Topic.STATE, 3, 4), None]
    # Visualization is counted on its own: its ids do not interfere with state's.
    assert [detector.observe(Topic.VISUALIZATION, i) for i in (10, 11, 12)] == [None] * 3
    gap = detector.observe(Topic.STATE, 9)
    assert gap == HeaderGap(Topic.STATE, 6, 9)
    assert gap.missing == 3
    assert (detector.gaps, detector.missing) == (2, 4)


def test_duplicates_and_restarts_are_not_gaps() -> None:
    detector = HeaderGapDetector()
    for header_id in (5, 6, 6, 0, 1, 2):
        assert detector.observe(Topic.STATE, header_id) is None
    assert detector.gaps == 0
    assert detector.restarts == 2


@given(st.lists(st.integers(0, 3), min_size=1, max_size=60))
def test_gap_count_matches_skips(skips: list[int]) -> None:
    detector = HeaderGapDetector()
    header_id = 0
    for skip in skips:
        header_id += skip
        detector.observe(Topic.VISUALIZATION, header_id)
        header_id += 1
    assert detector.gaps == sum(1 for s in skips[1:] if s)
    assert detector.missing == sum(skips[1:])


# ----------------------------------------------------------------- the graph


def grid(size: int) -> FloorGraph:
    """``size`` × ``size`` nodes 1 m apart, 4-connected; corners are locations."""
    nodes = [
        FloorNode(f"n{r}{c}", float(c), float(r), f"L{r}{c}" if r in (0, size - 1) else None)
        for r in range(size)
        for c in range(size)
    ]
    edges = [FloorEdge(f"n{r}{c}", f"n{r}{c + 1}") for r in range(size) for c in range(size - 1)]
    edges += [FloorEdge(f"n{r}{c}", f"n{r + 1}{c}") for r in range(size - 1) for c in range(size)]
    return FloorGraph(nodes, edges)


def test_shortest_path_and_locations() -> None:
    graph = FloorGraph(
        [FloorNode("A", 0, 0, "DOCK-1"), FloorNode("B", 5, 0), FloorNode("C", 1, 1),
         FloorNode("D", 2, 0, "RACK-1"), FloorNode("E", 9, 9)],
        [FloorEdge("A", "B"), FloorEdge("B", "D"), FloorEdge("A", "C"), FloorEdge("C", "D"),
         FloorEdge("D", "E", bidirectional=False)],
    )  # fmt: skip
    assert graph.shortest_path("A", "D") == ["A", "C", "D"]
    assert graph.shortest_path("A", "A") == ["A"]
    assert graph.node_at("RACK-1") == "D"
    assert graph.shortest_path("A", "E") == ["A", "C", "D", "E"]
    with pytest.raises(NoPath):
        graph.shortest_path("E", "A")  # one-way edge
    with pytest.raises(NoPath):
        graph.node_at("NOWHERE")
    with pytest.raises(ValueError, match="unknown node"):
        FloorGraph([FloorNode("A", 0, 0)], [FloorEdge("A", "Z")])


def test_floor_graph_from_json() -> None:
    data = b"""{"nodes": [{"id": "A", "x": 0, "y": 0, "location": "DOCK-1"},
                          {"id": "B", "x": 3, "y": 4}],
                "edges": [{"start": "A", "end": "B"}], "map_id": "hall-2"}"""
    graph = FloorGraph.from_json(data)
    assert graph.distance("A", "B") == 5.0
    assert graph.map_id == "hall-2"
    with pytest.raises(Vda5050DecodeError):
        FloorGraph.from_json(b'{"nodes": 3}')


# ----------------------------------------------------------- order building


@settings(max_examples=150)
@given(
    st.integers(0, 15),
    st.integers(0, 15),
    st.integers(1, 10),
)
def test_order_building_invariants(start: int, goal: int, released: int) -> None:
    graph = grid(4)
    a, b = f"n{start // 4}{start % 4}", f"n{goal // 4}{goal % 4}"
    path = graph.shortest_path(a, b)
    count = min(released, len(path))
    tracker = OrderTracker("ACME", "0001", graph)
    drop = Action(action_type="drop", action_id="d", blocking_type=BlockingType.HARD)
    order = tracker.new_order(
        "o-1", path, now=NOW, released=count, node_actions={len(path) - 1: [drop]}
    )
    assert len(order.edges) == len(order.nodes) - 1
    assert [n.node_id for n in order.nodes] == path
    assert all(n.sequence_id % 2 == 0 for n in order.nodes)
    assert all(e.sequence_id % 2 == 1 for e in order.edges)
    seqs = sorted([n.sequence_id for n in order.nodes] + [e.sequence_id for e in order.edges])
    assert seqs == list(range(2 * len(path) - 1))
    assert [n.released for n in order.nodes] == [True] * count + [False] * (len(path) - count)
    assert [e.released for e in order.edges] == [i + 1 < count for i in range(len(path) - 1)]
    for edge, before, after in zip(order.edges, order.nodes, order.nodes[1:], strict=False):
        assert (edge.start_node_id, edge.end_node_id) == (before.node_id, after.node_id)
    assert order_problems(order) == []
    assert order.nodes[-1].actions == [drop]
    if count < len(path):
        update = tracker.release(now=NOW)
        assert update.order_update_id == 1
        assert update.nodes[0].node_id == path[count - 1]
        assert update.nodes[0].sequence_id == order.nodes[count - 1].sequence_id
        assert all(n.released for n in update.nodes) and all(e.released for e in update.edges)
        assert len(update.edges) == len(update.nodes) - 1
        assert order_problems(update) == []
        assert update.nodes[-1].actions == ([drop] if len(update.nodes) > 1 else [])


def test_route_refuses_a_jump() -> None:
    with pytest.raises(NoPath):
        build_route(grid(3), ["n00", "n22"])


def test_order_problems_catch_malformed_orders() -> None:
    order = decode(Topic.ORDER, ORDER_JSON.encode())
    assert isinstance(order, Order)
    assert order_problems(order) == []
    no_edges = msgspec.structs.replace(order, edges=order.edges[:1])
    assert "3 nodes need 2 edges" in order_problems(no_edges)[0]
    gap = msgspec.structs.replace(
        order,
        nodes=[order.nodes[0], msgspec.structs.replace(order.nodes[1], released=False),
               msgspec.structs.replace(order.nodes[2], released=True)],
        edges=[msgspec.structs.replace(order.edges[0], released=False), order.edges[1]],
    )  # fmt: skip
    assert any("prefix" in p for p in order_problems(gap))


def test_tracker_numbers_headers_per_topic() -> None:
    graph = grid(3)
    tracker = OrderTracker("ACME", "0001", graph)
    first = tracker.new_order("o-1", ["n00", "n01"], now=NOW)
    stop = Action(action_type="startPause", action_id="p", blocking_type=BlockingType.HARD)
    instant = tracker.instant_actions([stop], now=NOW)
    again = tracker.resend(now=NOW)
    second = tracker.new_order("o-2", ["n01", "n02"], now=NOW)
    instant2 = tracker.instant_actions([stop], now=NOW)
    assert [first.header_id, again.header_id, second.header_id] == [0, 1, 2]
    assert [instant.header_id, instant2.header_id] == [0, 1]
    assert (again.order_id, again.order_update_id, again.nodes) == ("o-1", 0, first.nodes)
    assert (first.manufacturer, first.serial_number, first.version) == ("ACME", "0001", "2.0.0")
    with pytest.raises(OrderConflict):
        tracker.new_order("o-2", ["n01", "n02"], now=NOW)
    with pytest.raises(OrderConflict):
        tracker.release(now=NOW)  # all of o-2 is released already


def test_order_update_rules() -> None:
    order = decode(Topic.ORDER, ORDER_JSON.encode())
    assert isinstance(order, Order)
    later = msgspec.structs.replace(order, order_update_id=3)
    assert classify_order("", 0, order) is OrderDecision.NEW
    assert classify_order("T-99", 5, order) is OrderDecision.NEW
    assert classify_order("T-100", 0, order) is OrderDecision.DUPLICATE
    assert classify_order("T-100", 0, later) is OrderDecision.UPDATE
    assert classify_order("T-100", 4, later) is OrderDecision.STALE
