"""Event identities: UUIDv7, time-ordered, so ids sort roughly by creation time."""

from __future__ import annotations

import uuid

import uuid_utils

_new = object.__new__
_set = object.__setattr__
_UUID = uuid.UUID
_UNKNOWN = uuid.SafeUUID.unknown
_uuid7 = uuid_utils.uuid7


def new_event_id() -> uuid.UUID:
    """A stdlib ``UUID`` holding a UUIDv7 from uuid-utils (Rust).

    Built the way ``uuid.UUID.__init__`` itself sets its slots, without re-parsing:
    ``uuid.UUID(int=...)`` alone costs more than making the id (about 0.5 µs of the
    outbox's per-event budget, see bench/edge_outbox.py).
    """
    value = _new(_UUID)
    _set(value, "int", _uuid7().int)
    _set(value, "is_safe", _UNKNOWN)
    return value
