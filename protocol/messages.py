"""Message types of the edge ↔ hub session and the typed bodies of floor events.

Every business event has its identity before it leaves the edge: the gateway id, a
durable per-gateway sequence number and a UUIDv7 event id (DESIGN.md, decision 1).
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Annotated, Any

import msgspec

from warelink.protocol.limits import (
    ID_MAX,
    Antenna,
    Code,
    Codes,
    Counted,
    DeviceId,
    DeviceIds,
    Elements,
    EpcHex,
    Id,
    Item,
    Key,
    Measure,
    OptCode,
    Quantity,
    RawScan,
    Readings,
    Reference,
    Seq,
    SeqOrZero,
    Session,
    Sscc,
    Text,
    Timestamp,
    Unit,
    Units,
)


class TrafficClass(enum.IntEnum):
    """How the edge treats an event when links fail (DESIGN.md, decision 3)."""

    LEDGER = 1  # never dropped
    TELEMETRY = 2  # bounded budget, downsampled, drops counted


# ---------------------------------------------------------------- event bodies


class WeightReading(msgspec.Struct, frozen=True, tag="weight"):
    """A scale's weight. Only stable readings are business events."""

    weight: Measure
    unit: Unit
    stable: bool


class Scan(msgspec.Struct, frozen=True, tag="scan"):
    """A barcode scan with its GS1 element strings decoded (empty when not GS1)."""

    raw: RawScan
    symbology: Code
    elements: Elements = {}


class Receipt(msgspec.Struct, frozen=True, tag="receipt"):
    """Goods received into a location: a ledger movement supplier → location."""

    location: Code
    gtin: Item  # a GTIN-14, or a SKU code
    quantity: Quantity
    lot: Code | None = None
    expiry: dt.date | None = None
    sscc: Sscc | None = None
    serial: Code | None = None


class Shipment(msgspec.Struct, frozen=True, tag="shipment"):
    """Goods shipped out of a location: a ledger movement location → customer."""

    location: Code
    gtin: Item  # a GTIN-14, or a SKU code
    quantity: Quantity
    lot: Code | None = None
    sscc: Sscc | None = None
    serial: Code | None = None


class Movement(msgspec.Struct, frozen=True, tag="movement"):
    """Goods moved between two locations of the site (putaway, AGV transport, …)."""

    from_location: Code
    to_location: Code
    gtin: Item  # a GTIN-14, or a SKU code
    quantity: Quantity
    lot: Code | None = None
    lpn: Code | None = None  # the licence plate / SSCC of the load, when known
    task: Reference | None = None  # the hub's pick task a clerk picked against, when there is one


class Count(msgspec.Struct, frozen=True, tag="count"):
    """A counted quantity of a SKU/lot at a location (a cycle count line).

    A fact about the shelf, not a movement: the ledger turns it into a baseline and a
    delta adjustment (never a "set quantity").
    """

    location: Code
    gtin: Item  # a GTIN-14, or a SKU code
    counted: Counted
    lot: Code | None = None


class Verification(msgspec.Struct, frozen=True, tag="verification"):
    """A pick checked at the pack bench: what was scanned, and what the scale said."""

    gtin: Item  # a GTIN-14, or a SKU code
    quantity: Quantity
    lot: Code | None = None
    weight: Measure | None = None  # kg, the scale's latest stable reading when given
    scale: Id | None = None
    order: Code | None = None


class TagRead(msgspec.Struct, frozen=True, tag="tag_read"):
    """A raw RFID observation (telemetry): what the reader saw, not a movement."""

    epc: EpcHex
    antenna: Antenna
    rssi: Measure | None = None
    count: Quantity = 1
    zone: Code | None = None
    decoded: Elements = {}  # e.g. {"scheme": "sgtin-96", "gtin": …, "serial": …}


class ZoneChange(enum.StrEnum):
    ARRIVED = "arrived"
    MOVED = "moved"
    DEPARTED = "departed"


class ZoneTransition(msgspec.Struct, frozen=True, tag="zone_transition"):
    """A smoothed RFID event: a tag arrived in, moved to, or departed from a zone."""

    epc: EpcHex
    change: ZoneChange
    zone: Code
    previous_zone: Code | None = None
    decoded: Elements = {}


class AgvState(msgspec.Struct, frozen=True, tag="agv_state"):
    """An AGV's position and condition (telemetry; VDA 5050 state/visualization)."""

    x: Measure
    y: Measure
    theta: Measure = 0.0
    map_id: OptCode = ""
    driving: bool = False
    battery: Measure | None = None  # percent
    order_id: Code | None = None
    last_node: Code | None = None
    errors: Codes = []


class PrinterState(msgspec.Struct, frozen=True, tag="printer_state"):
    """A label printer's condition from its status answer (telemetry)."""

    ready: bool
    faults: Codes = []  # "paper_out", "ribbon_out", "head_open", "paused", "buffer_full", …
    labels_remaining: Counted | None = None


class Telemetry(msgspec.Struct, frozen=True, tag="telemetry"):
    """Named readings of a device without a richer type (e.g. Modbus registers)."""

    values: Readings
    unit: Units = {}


class CommandOutcome(enum.StrEnum):
    DONE = "done"
    FAILED = "failed"
    EXPIRED = "expired"
    REJECTED = "rejected"


class CommandReport(msgspec.Struct, frozen=True, tag="command_report"):
    """How a hub command ended at the edge; travels as a ledger-class event, exactly once."""

    key: Key
    action: Code
    outcome: CommandOutcome
    detail: Text = ""


class DeviceState(enum.StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class DeviceStatus(msgspec.Struct, frozen=True, tag="device_status"):
    """A device went online or offline, as seen by its driver."""

    state: DeviceState
    detail: Text = ""


EventBody = (
    WeightReading
    | Scan
    | Receipt
    | Shipment
    | Movement
    | Count
    | Verification
    | TagRead
    | ZoneTransition
    | AgvState
    | PrinterState
    | Telemetry
    | CommandReport
    | DeviceStatus
)


def _tag(cls: type[msgspec.Struct]) -> str:
    tag = cls.__struct_config__.tag
    assert isinstance(tag, str)
    return tag


# Reading __struct_config__ builds a new object each time: look the tags up once.
BODY_TYPES: dict[type, str] = {cls: _tag(cls) for cls in EventBody.__args__}


def body_type(body: EventBody) -> str:
    """The event type name of a body: its wire tag."""
    return BODY_TYPES[type(body)]


# ---------------------------------------------------------------------- events


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One floor event, durable and identified at the edge."""

    # No pattern on the hot path: the hub requires it to equal the gateway of the topic,
    # whose name it checked already (a pattern costs ~0.5 µs per event).
    gateway: Annotated[str, msgspec.Meta(max_length=ID_MAX)]
    seq: Seq
    id: uuid.UUID
    device: DeviceId
    cls: TrafficClass
    occurred_at: Timestamp
    body: EventBody

    @property
    def type(self) -> str:
        return body_type(self.body)


# ------------------------------------------------------------ session messages


class EventBatch(msgspec.Struct, frozen=True, kw_only=True, tag="batch", tag_field="k"):
    """Events of one gateway in sequence order, as one MQTT message.

    The batch covers every seq from ``first_seq`` to ``last_seq``: a seq in the range
    without an event was dropped at the edge on purpose (telemetry over its budget), so
    the hub's watermark may pass it. ``events`` holds each event's msgpack form; the
    edge stores events encoded and sends them as they are (``msgspec.Raw``), the hub
    decodes them as ``Event``. ``sent_at`` is the edge's clock, for skew.
    """

    gateway: Id
    session: Session
    first_seq: Seq
    last_seq: Seq
    sent_at: Timestamp
    events: list[msgspec.Raw]
    outbox: OptCode = ""  # the identity of the outbox the events come from (Birth.outbox)


class Ack(msgspec.Struct, frozen=True, kw_only=True, tag="ack", tag_field="k"):
    """Cumulative: every event of ``gateway`` up to ``seq`` is committed at the hub.

    ``outbox`` names the outbox the hub acks for (Birth.outbox): a box holding another
    outbox under the same gateway id ignores the ack, so it never trims what the hub
    stored from someone else.
    """

    gateway: Id
    seq: SeqOrZero
    outbox: OptCode = ""


class ReplayRequest(msgspec.Struct, frozen=True, kw_only=True, tag="replay", tag_field="k"):
    """The hub misses ``[from_seq, to_seq]`` of ``gateway``: send it again."""

    gateway: Id
    from_seq: Seq
    to_seq: Seq


class GatewayStats(msgspec.Struct, frozen=True, kw_only=True, tag="stats", tag_field="k"):
    """A gateway's own counters, sent periodically so the hub can show them."""

    gateway: Id
    session: Session
    sent_at: Timestamp
    counters: Readings


class Birth(msgspec.Struct, frozen=True, kw_only=True, tag="birth", tag_field="k"):
    """A gateway's session started; ``last_seq`` is the newest event it has stored."""

    gateway: Id
    site: Id
    session: Session
    last_seq: SeqOrZero
    devices: DeviceIds = []
    version: OptCode = ""
    # The outbox's identity, made with it and kept in it: seqs are unique within one
    # outbox only, so the hub acks a seq only for the outbox that sent it.
    outbox: OptCode = ""


class Death(msgspec.Struct, frozen=True, kw_only=True, tag="death", tag_field="k"):
    """A gateway's session ended (sent as its MQTT Will, or on a clean stop)."""

    gateway: Id
    session: Session


class HubPresence(msgspec.Struct, frozen=True, kw_only=True, tag="presence", tag_field="k"):
    """A hub instance is up, published retained on its own presence topic.

    The instance's Will (and its clean stop) clears that topic with an empty retained
    message; ``online=False`` says the same in words.
    """

    online: bool
    instance: OptCode = ""


class Command(msgspec.Struct, frozen=True, kw_only=True, tag="command", tag_field="k"):
    """A hub → device command; ``key`` makes it idempotent, ``expires_at`` bounds it."""

    key: Key
    device: Id
    action: Code
    args: dict[Code, Any] = {}
    expires_at: Timestamp | None = None


SessionMessage = (
    EventBatch | Ack | ReplayRequest | GatewayStats | Birth | Death | HubPresence | Command
)
