"""Message types of the edge ↔ hub session and the typed bodies of floor events.

Every business event has its identity before it leaves the edge: the gateway id, a
durable per-gateway sequence number and a UUIDv7 event id (DESIGN.md, decision 1).
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid

import msgspec


class TrafficClass(enum.IntEnum):
    """How the edge treats an event when links fail (DESIGN.md, decision 3)."""

    LEDGER = 1  # never dropped
    TELEMETRY = 2  # bounded budget, downsampled, drops counted


# ---------------------------------------------------------------- event bodies


class WeightReading(msgspec.Struct, frozen=True, tag="weight"):
    """A scale's weight. Only stable readings are business events."""

    weight: float
    unit: str
    stable: bool


class Scan(msgspec.Struct, frozen=True, tag="scan"):
    """A barcode scan with its GS1 element strings decoded (empty when not GS1)."""

    raw: str
    symbology: str
    elements: dict[str, str] = {}


class Receipt(msgspec.Struct, frozen=True, tag="receipt"):
    """Goods received into a location: a ledger movement supplier → location."""

    location: str
    gtin: str
    quantity: int
    lot: str | None = None
    expiry: dt.date | None = None
    sscc: str | None = None
    serial: str | None = None


class DeviceState(enum.StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class DeviceStatus(msgspec.Struct, frozen=True, tag="device_status"):
    """A device went online or offline, as seen by its driver."""

    state: DeviceState
    detail: str = ""


EventBody = WeightReading | Scan | Receipt | DeviceStatus


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

    gateway: str
    seq: int
    id: uuid.UUID
    device: str
    cls: TrafficClass
    occurred_at: dt.datetime
    body: EventBody

    @property
    def type(self) -> str:
        return body_type(self.body)


# ------------------------------------------------------------ session messages


class EventBatch(msgspec.Struct, frozen=True, kw_only=True, tag="batch", tag_field="k"):
    """Events of one gateway in sequence order, as one MQTT message.

    ``events`` holds each event's msgpack form; the edge stores events encoded and
    sends them without decoding (``msgspec.Raw``), the hub decodes them as ``Event``.
    """

    gateway: str
    session: int
    events: list[msgspec.Raw]


class Ack(msgspec.Struct, frozen=True, kw_only=True, tag="ack", tag_field="k"):
    """Cumulative: every event of ``gateway`` up to ``seq`` is committed at the hub."""

    gateway: str
    seq: int


class Birth(msgspec.Struct, frozen=True, kw_only=True, tag="birth", tag_field="k"):
    """A gateway's session started; ``last_seq`` is the newest event it has stored."""

    gateway: str
    site: str
    session: int
    last_seq: int
    devices: list[str] = []
    version: str = ""


class Death(msgspec.Struct, frozen=True, kw_only=True, tag="death", tag_field="k"):
    """A gateway's session ended (sent as its MQTT Will, or on a clean stop)."""

    gateway: str
    session: int


class HubPresence(msgspec.Struct, frozen=True, kw_only=True, tag="presence", tag_field="k"):
    """The hub's availability, published retained; ``online=False`` is its Will."""

    online: bool
    instance: str = ""


class Command(msgspec.Struct, frozen=True, kw_only=True, tag="command", tag_field="k"):
    """A hub → device command; ``key`` makes it idempotent, ``expires_at`` bounds it."""

    key: str
    device: str
    action: str
    args: dict[str, str] = {}
    expires_at: dt.datetime | None = None


class CommandOutcome(enum.StrEnum):
    DONE = "done"
    FAILED = "failed"
    EXPIRED = "expired"
    REJECTED = "rejected"


class CommandResult(msgspec.Struct, frozen=True, kw_only=True, tag="command_result", tag_field="k"):
    key: str
    device: str
    outcome: CommandOutcome
    detail: str = ""


SessionMessage = EventBatch | Ack | Birth | Death | HubPresence | Command | CommandResult
