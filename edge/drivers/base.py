"""The small typed interface every device driver implements, and what it emits into.

A driver owns its connection to one device: it reconnects with backoff, logs once when
the device fails and once when it recovers, and turns what the device says into typed
event bodies of the right traffic class, handed to ``emit``. ``emit`` returns once the
event is durable in the outbox.

A driver module declares what it drives as a ``DriverSpec`` (its kind, its config model,
its factory); ``warelink.edge.drivers.registry`` lists them, and the site config and the
gateway know device kinds only from there.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, get_args

from warelink.edge.device_config import DeviceBase
from warelink.protocol.backoff import Backoff
from warelink.protocol.messages import DeviceState, DeviceStatus, EventBody, TrafficClass

if TYPE_CHECKING:
    from warelink.edge.drivers.ble import BleBackend
    from warelink.edge.drivers.modbus import ModbusBuses

__all__ = [
    "Backoff", "CommandFailed", "CommandRejected", "Commandable", "DeviceConflict", "Driver",
    "DriverContext", "DriverSpec", "Emit", "Presence",
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


@dataclass(frozen=True)
class DriverContext:
    """What a gateway hands every driver it builds: the outbox's ``emit``, the directory
    for what a driver keeps on disk, and the resources devices share (one Modbus client
    and lock per physical bus; one BLE adapter, None for the system's)."""

    emit: Emit
    data_dir: Path
    modbus_buses: ModbusBuses | None = None
    ble: BleBackend | None = None


ConfigT = TypeVar("ConfigT", bound=DeviceBase)


@dataclass(frozen=True)
class DriverSpec(Generic[ConfigT]):
    """One device kind, declared by its driver module as ``SPEC`` and listed once in the
    registry.

    ``config`` is the pydantic model of a ``[[devices]]`` table of this kind (its ``kind``
    field is ``Literal[kind]``); ``build`` makes the driver of one declared device (it
    raises ``DeviceConflict`` for a device that cannot run beside the ones built before
    it); ``example`` is the least a site config declares for this kind, as TOML keys after
    ``id`` and ``kind``: it documents the kind and lets a test parse and build every kind.
    """

    kind: str
    config: type[ConfigT]
    build: Callable[[ConfigT, DriverContext], Driver]
    example: str

    def __post_init__(self) -> None:
        field = self.config.model_fields.get("kind")
        declared = get_args(field.annotation) if field is not None else ()
        if declared != (self.kind,):
            raise TypeError(
                f"{self.config.__name__}.kind must be Literal[{self.kind!r}] to match its"
                f" DriverSpec, not {field and field.annotation}"
            )


class DeviceConflict(ValueError):
    """Devices valid one by one that cannot run together (e.g. two Modbus devices that
    disagree about their shared bus's settings): a site config error."""


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
