"""The small typed interface every device driver implements, and what it emits into.

A driver owns its connection to one device: it reconnects with backoff, logs once when
the device fails and once when it recovers, and turns what the device says into typed
event bodies of the right traffic class, handed to ``emit``. ``emit`` returns once the
event is durable in the outbox.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable
from typing import Protocol

from warelink.protocol.backoff import Backoff
from warelink.protocol.messages import EventBody, TrafficClass

__all__ = ["Backoff", "Driver", "Emit"]


class Emit(Protocol):
    def __call__(
        self,
        device: str,
        cls: TrafficClass,
        body: EventBody,
        occurred_at: dt.datetime | None = None,
    ) -> Awaitable[None]: ...


class Driver(Protocol):
    device_id: str

    async def run(self) -> None:
        """Talk to the device until cancelled; never returns on device errors."""
        ...
