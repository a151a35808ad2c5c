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
from warelink.protocol.messages import DeviceState, DeviceStatus, EventBody, TrafficClass

__all__ = [
    "Backoff", "CommandFailed", "CommandRejected", "Commandable", "Driver", "Emit", "Presence",
]  # fmt: skip


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


class Presence:
    """A device's online/offline state as its driver sees it.

    Every driver reports the same way: a change is logged once (``<kind>.online`` at
    info, ``<kind>.offline`` at warning, with the reason) and emitted once as a telemetry
    ``DeviceStatus``; repeating the state is silent, so a device that stays away makes no
    log storm however often its driver retries.
    """

    def __init__(self, device_id: str, emit: Emit, log: Any, kind: str) -> None:
        self.device_id = device_id
        self.emit = emit
        self.log = log
        self.kind = kind
        self.state: DeviceState | None = None  # None until the first attempt tells

    @property
    def online(self) -> bool:
        return self.state is DeviceState.ONLINE

    async def up(self, **context: Any) -> bool:
        """Mark the device online; True if that is a change."""
        if self.state is DeviceState.ONLINE:
            return False
        self.state = DeviceState.ONLINE
        self.log.info(f"{self.kind}.online", **context)
        await self.emit(self.device_id, TrafficClass.TELEMETRY, DeviceStatus(DeviceState.ONLINE))
        return True

    async def down(self, reason: str, **context: Any) -> bool:
        """Mark the device offline; True if that is a change."""
        if self.state is DeviceState.OFFLINE:
            return False
        self.state = DeviceState.OFFLINE
        self.log.warning(f"{self.kind}.offline", reason=reason, **context)
        status = DeviceStatus(DeviceState.OFFLINE, detail=reason)
        await self.emit(self.device_id, TrafficClass.TELEMETRY, status)
        return True
