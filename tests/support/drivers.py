"""What a driver test needs around the driver: an ``Emit`` that keeps what it is handed,
and the driver running in a task group for the length of a block."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

from warelink.edge.drivers.base import Driver
from warelink.protocol.messages import (
    DeviceState,
    DeviceStatus,
    EventBody,
    TrafficClass,
    WeightReading,
)

WAIT_S = 5.0


class Emitted(NamedTuple):
    device: str
    cls: TrafficClass
    body: EventBody
    occurred_at: dt.datetime | None


class EmitCollector:
    """An in-memory ``Emit``: what the driver hands to the outbox, in order.

    ``events`` are ``(device, cls, body)``; ``emitted`` the same with ``occurred_at``.
    """

    def __init__(self, *, wait_s: float = WAIT_S) -> None:
        self.emitted: list[Emitted] = []
        self.wait_s = wait_s
        self._changed = asyncio.Condition()

    async def __call__(
        self,
        device: str,
        cls: TrafficClass,
        body: EventBody,
        occurred_at: dt.datetime | None = None,
    ) -> None:
        self.emitted.append(Emitted(device, cls, body, occurred_at))
        async with self._changed:
            self._changed.notify_all()

    @property
    def events(self) -> list[tuple[str, TrafficClass, EventBody]]:
        return [(e.device, e.cls, e.body) for e in self.emitted]

    def bodies(
        self, kind: type[Any], cls: TrafficClass | None = None, *, device: str | None = None
    ) -> list[Any]:
        """The bodies of this type (of this traffic class, from this device), in order."""
        return [
            e.body
            for e in self.emitted
            if isinstance(e.body, kind)
            and (cls is None or e.cls is cls)
            and (device is None or e.device == device)
        ]

    def states(self, device: str | None = None) -> list[DeviceState]:
        return [status.state for status in self.bodies(DeviceStatus, device=device)]

    def ledger(self, device: str | None = None) -> list[WeightReading]:
        """The weights a scale posted to the ledger (its settled readings)."""
        return self.bodies(WeightReading, TrafficClass.LEDGER, device=device)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float | None = None) -> None:
        """Until ``predicate`` holds, checked at every emit (at most ``wait_s`` by default)."""
        async with asyncio.timeout(self.wait_s if timeout is None else timeout), self._changed:
            await self._changed.wait_for(predicate)


@asynccontextmanager
async def running(*drivers: Driver) -> AsyncIterator[None]:
    """The drivers' ``run()`` as named tasks for the block, cancelled at its end."""
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(d.run(), name=f"driver-{d.device_id}") for d in drivers]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
