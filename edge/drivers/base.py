"""The small typed interface every device driver implements, and what it emits into.

A driver owns its connection to one device: it reconnects with backoff, logs once when
the device fails and once when it recovers, and turns what the device says into typed
event bodies of the right traffic class, handed to ``emit``. ``emit`` returns once the
event is durable in the outbox.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable
from typing import Any, Protocol

from warelink.protocol.backoff import Backoff
from warelink.protocol.messages import EventBody, TrafficClass

__all__ = ["Backoff", "CommandFailed", "CommandRejected", "Commandable", "Driver", "Emit"]


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


class CommandRejected(Exception):
    """The command is not valid for this device (unknown action, bad arguments)."""


class CommandFailed(Exception):
    """The device could not carry the command out (offline, fault, refused)."""


class Commandable(Protocol):
    """A driver that takes commands from the hub (zero a scale, print, send an order).

    ``execute`` returns a short detail for the command result; it raises
    CommandRejected or CommandFailed. The router calls it at most once per command key,
    and passes that key in ``args["key"]`` (a printer keeps it to never print twice).
    """

    async def execute(self, action: str, args: dict[str, Any]) -> str: ...
