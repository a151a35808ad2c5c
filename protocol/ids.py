"""Event identities: UUIDv7, time-ordered, so ids sort roughly by creation time."""

from __future__ import annotations

import uuid

from uuid_utils import compat


def new_event_id() -> uuid.UUID:
    return compat.uuid7()
