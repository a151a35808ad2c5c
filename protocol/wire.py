"""The versioned msgpack wire form of session messages.

A message on the wire is a msgpack array ``[version, message]``; the message is a map
tagged by its kind (``"k"``). A receiver checks the version before it trusts the shape.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from warelink.protocol.errors import DecodeError
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

    gateway: str
    session: int
    first_seq: int
    last_seq: int
    sent_at: dt.datetime
    events: list[Event]


_encoder = msgspec.msgpack.Encoder(uuid_format="bytes")  # 16 bytes, not 36 characters
_envelope = msgspec.msgpack.Decoder(tuple[int, msgspec.Raw])
_message = msgspec.msgpack.Decoder(SessionMessage)
_batch = msgspec.msgpack.Decoder(DecodedBatch)
_event = msgspec.msgpack.Decoder(Event)
_TAGGED = (EventBatch, Ack, ReplayRequest, GatewayStats, Birth, Death, HubPresence, Command)


def encode(message: SessionMessage) -> bytes:
    return _encoder.encode((WIRE_VERSION, message))


def encode_event(event: Event) -> bytes:
    """An event's msgpack form, as stored in the edge outbox and carried in a batch."""
    return _encoder.encode(event)


def decode_event(data: bytes) -> Event:
    try:
        return _event.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise WireDecodeError(f"bad event: {exc}") from exc


def _open(data: bytes) -> msgspec.Raw:
    try:
        version, raw = _envelope.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise WireDecodeError(f"not a warelink envelope: {exc}") from exc
    if version != WIRE_VERSION:
        raise WireDecodeError(
            f"unsupported wire version {version} (this side speaks {WIRE_VERSION})"
        )
    return raw


def decode(data: bytes) -> SessionMessage | DecodedBatch:
    """Decode any session message; an event batch comes back with its events decoded."""
    raw = _open(data)
    try:
        message: Any = _message.decode(raw)
        if isinstance(message, EventBatch):
            return _batch.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise WireDecodeError(f"bad message: {exc}") from exc
    assert isinstance(message, _TAGGED)
    return message


def decode_batch(data: bytes) -> DecodedBatch:
    """Decode a payload that must be an event batch (the hot path of hub ingest)."""
    raw = _open(data)
    try:
        return _batch.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise WireDecodeError(f"bad event batch: {exc}") from exc
