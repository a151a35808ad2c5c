"""The versioned msgpack wire form of session messages.

A message on the wire is a msgpack array ``[version, message]``; the message is a map
tagged by its kind (``"k"``). A receiver checks the version before it trusts the shape.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from warelink.protocol.errors import DecodeError
from warelink.protocol.limits import (
    BATCH_EVENTS_MAX,
    MESSAGE_BYTES_MAX,
    SEQ_MAX,
    Id,
    OptCode,
    Seq,
    Session,
    Timestamp,
    args_problem,
)
from warelink.protocol.messages import (
    Ack,
    Birth,
    Command,
    Death,
    Event,
    EventBatch,
    GatewayStats,
    HubPresence,
    ReplayRequest,
    SessionMessage,
)

WIRE_VERSION = 1


class WireDecodeError(DecodeError):
    """A payload that is not a valid warelink session message."""


class DecodedBatch(msgspec.Struct, frozen=True, kw_only=True, tag="batch", tag_field="k"):
    """``EventBatch`` as a receiver sees it: the same bytes, events decoded."""

    gateway: Id
    session: Session
    first_seq: Seq
    last_seq: Seq
    sent_at: Timestamp
    events: Annotated[list[Event], msgspec.Meta(max_length=BATCH_EVENTS_MAX)]
    outbox: OptCode = ""


class RawBatch(msgspec.Struct, frozen=True, kw_only=True, tag="batch", tag_field="k"):
    """``EventBatch`` with its events still raw: for taking a batch apart event by event."""

    gateway: Id
    session: Session
    first_seq: Seq
    last_seq: Seq
    sent_at: Timestamp
    events: Annotated[list[msgspec.Raw], msgspec.Meta(max_length=BATCH_EVENTS_MAX)]
    outbox: OptCode = ""


@dataclass(frozen=True)
class BadEvent:
    """One event of a batch set aside: its bytes, its seq if readable, and why (it does
    not decode, or the receiver refused it)."""

    raw: bytes
    seq: int | None
    reason: str


@dataclass(frozen=True)
class SplitBatch:
    """A batch whose envelope is sound, its events sorted into good and bad."""

    envelope: RawBatch
    events: list[Event]
    bad: list[BadEvent]


class _SeqOnly(msgspec.Struct):
    seq: int


_encoder = msgspec.msgpack.Encoder(uuid_format="bytes")  # 16 bytes, not 36 characters
_envelope = msgspec.msgpack.Decoder(tuple[int, msgspec.Raw])
_message = msgspec.msgpack.Decoder(SessionMessage)
_batch = msgspec.msgpack.Decoder(DecodedBatch)
_raw_batch = msgspec.msgpack.Decoder(RawBatch)
_event = msgspec.msgpack.Decoder(Event)
_seq_only = msgspec.msgpack.Decoder(_SeqOnly)
_TAGGED = (EventBatch, Ack, ReplayRequest, GatewayStats, Birth, Death, HubPresence, Command)


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """Every failure of a decoder is a ``WireDecodeError``: msgspec's own errors, and the
    ones it lets through (invalid UTF-8, nesting past the recursion limit, …)."""
    try:
        yield
    except WireDecodeError:
        raise
    except (msgspec.MsgspecError, ValueError, RecursionError, OverflowError, TypeError) as exc:
        raise WireDecodeError(f"{what}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "invalid UTF-8 in a string"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc) or type(exc).__name__


def encode(message: SessionMessage) -> bytes:
    return _encoder.encode((WIRE_VERSION, message))


def encode_event(event: Event) -> bytes:
    """An event's msgpack form, as stored in the edge outbox and carried in a batch."""
    return _encoder.encode(event)


def decode_event(data: bytes) -> Event:
    with _translated("bad event"):
        return _event.decode(data)


def _open(data: bytes) -> msgspec.Raw:
    if len(data) > MESSAGE_BYTES_MAX:
        raise WireDecodeError(f"message of {len(data)} bytes: at most {MESSAGE_BYTES_MAX}")
    with _translated("not a warelink envelope"):
        version, raw = _envelope.decode(data)
    if version != WIRE_VERSION:
        raise WireDecodeError(
            f"unsupported wire version {version} (this side speaks {WIRE_VERSION})"
        )
    return raw


def decode(data: bytes) -> SessionMessage | DecodedBatch:
    """Decode any session message; an event batch comes back with its events decoded."""
    raw = _open(data)
    with _translated("bad message"):
        message: Any = _message.decode(raw)
        if isinstance(message, EventBatch):
            return _batch.decode(raw)
    assert isinstance(message, _TAGGED)
    if isinstance(message, Command) and (problem := args_problem(message.args)):
        raise WireDecodeError(f"bad command: {problem}")
    return message


def decode_batch(data: bytes) -> DecodedBatch:
    """Decode a payload that must be an event batch (the hot path of hub ingest)."""
    raw = _open(data)
    with _translated("bad event batch"):
        return _batch.decode(raw)


def split_batch(data: bytes) -> SplitBatch:
    """Decode an event batch event by event, so one bad event does not sink the rest.

    The slow path, for a batch ``decode_batch`` refused: raises ``WireDecodeError`` only
    when the envelope itself (gateway, session, range) is unusable.
    """
    raw = _open(data)
    with _translated("bad event batch"):
        envelope = _raw_batch.decode(raw)
    events: list[Event] = []
    bad: list[BadEvent] = []
    for item in envelope.events:
        blob = bytes(item)
        try:
            events.append(decode_event(blob))
        except WireDecodeError as exc:
            bad.append(BadEvent(blob, _readable_seq(blob), str(exc)))
    return SplitBatch(envelope, events, bad)


def _readable_seq(blob: bytes) -> int | None:
    try:
        seq = _seq_only.decode(blob).seq
    except Exception:  # the event is bad anyway: its seq is only for the record
        return None
    return seq if 1 <= seq <= SEQ_MAX else None
