"""Hub → device commands at the edge: each key runs at most once, never after its expiry.

A command's key is claimed in the outbox database before it runs, so a resent command
(the hub resends until it hears the outcome) or a restart never runs it twice; a command
interrupted by a crash is reported as failed, not run again. The outcome travels back as
a ledger-class event (``CommandReport``), so it reaches the hub exactly once, even
across outages.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog

from warelink.edge.drivers.base import CommandFailed, CommandRejected, Driver
from warelink.edge.outbox import Outbox
from warelink.protocol import limits
from warelink.protocol.messages import Command, CommandOutcome, CommandReport, TrafficClass

log = structlog.get_logger(__name__)

DEVICE_FOR_REPORTS = "$gateway"


@dataclass
class RouterStats:
    received: int = 0
    duplicates: int = 0
    expired: int = 0
    done: int = 0
    failed: int = 0
    rejected: int = 0


class CommandRouter:
    """Runs commands on the drivers; an async context manager owning their tasks."""

    def __init__(self, outbox: Outbox, drivers: dict[str, Driver]) -> None:
        self.outbox = outbox
        self.drivers = drivers
        self.stats = RouterStats()
        self._tasks: asyncio.TaskGroup | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[CommandRouter]:
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            for key in await asyncio.to_thread(self.outbox.interrupted_commands):
                await self._report(key, "?", CommandOutcome.FAILED, "interrupted by a restart")
            try:
                yield self
            finally:
                self._tasks = None

    def submit(self, command: Command) -> None:
        """Take a command from the uplink; it runs in the background."""
        if self._tasks is None:
            return  # not running: the hub resends it
        self.stats.received += 1
        self._tasks.create_task(self._run(command), name=f"command-{command.key}")

    async def _run(self, command: Command) -> None:
        if not await asyncio.to_thread(self.outbox.claim_command, command.key):
            self.stats.duplicates += 1
            return
        bound = log.bind(command=command.key, device=command.device, action=command.action)
        if command.expires_at is not None and command.expires_at <= dt.datetime.now(dt.UTC):
            self.stats.expired += 1
            bound.info("command.expired", expired_at=command.expires_at.isoformat())
            await self._report(command.key, command.action, CommandOutcome.EXPIRED, "")
            return
        driver = self.drivers.get(command.device)
        execute = getattr(driver, "execute", None)
        try:
            if execute is None:
                raise CommandRejected(f"device {command.device!r} takes no commands here")
            detail = await execute(command.action, {**command.args, "key": command.key})
        except CommandRejected as exc:
            self.stats.rejected += 1
            outcome, detail = CommandOutcome.REJECTED, str(exc)
        except CommandFailed as exc:
            self.stats.failed += 1
            outcome, detail = CommandOutcome.FAILED, str(exc)
        else:
            self.stats.done += 1
            outcome = CommandOutcome.DONE
        bound.info("command.finished", outcome=outcome.value, detail=detail)
        await self._report(command.key, command.action, outcome, detail, command.device)

    async def _report(
        self,
        key: str,
        action: str,
        outcome: CommandOutcome,
        detail: str,
        device: str = DEVICE_FOR_REPORTS,
    ) -> None:
        # A device's error text is free: bound it as the hub will (no NUL, TEXT_MAX).
        detail = detail.replace("\x00", "\\0")[: limits.TEXT_MAX]
        report = CommandReport(key=key, action=action, outcome=outcome, detail=detail)
        await self.outbox.add(device, TrafficClass.LEDGER, report)
        await asyncio.to_thread(self.outbox.command_reported, key)
