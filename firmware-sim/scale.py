"""A simulated MT-SICS scale on a pty, for tests and the demo floor.

The weight model is deliberately simple but shaped like a real load cell: after a load
is placed or removed the display swings toward the new value with damped noise for a
random 0.5–1.5 s (answers are ``S D`` meanwhile), then holds it exactly (``S S``).
Everything random comes from the ``random.Random`` passed in, so a seed replays a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from warelink.protocol.mtsics import (
    BadCommand,
    Command,
    CommandCode,
    CommandListEntry,
    CommandRefused,
    ErrorCode,
    ErrorResponse,
    LineFramer,
    LineTooLong,
    Refusal,
    ResetDone,
    Response,
    WeightResponse,
    ZeroDone,
    encode_response,
    parse_command,
)
from warelink.sim.pty import PtyEndpoint

# What I0 lists: (level, command), in MT-SICS level order; the last line is "I0 A".
_COMMAND_LIST: tuple[tuple[int, str], ...] = (
    (0, "I0"),
    (0, "S"),
    (0, "SI"),
    (0, "SIR"),
    (0, "Z"),
    (0, "@"),
    (1, "T"),
    (1, "TI"),
    (1, "ZI"),
)


class SimulatedScale:
    """A scale speaking MT-SICS (device side) on a pty symlinked at ``path``.

    Either ``async with SimulatedScale(...) as scale:`` (the pty exists once entered,
    served by a task the scale owns; leaving removes the port) or ``await scale.run()``
    (serves until cancelled). The model state survives a stop and restart.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        rng: random.Random,
        *,
        serial: str = "0123456789",
        unit: str = "kg",
        decimals: int = 3,
        capacity: float = 60.0,
        settle_s: tuple[float, float] = (0.5, 1.5),
        stable_timeout_s: float = 2.0,
        sir_interval_s: float = 0.1,
        garbage_rate: float = 0.0,
    ) -> None:
        self.path = Path(path)
        self.serial = serial
        self.unit = unit
        self.decimals = decimals
        self.capacity = capacity
        self.settle_s = settle_s
        self.stable_timeout_s = stable_timeout_s
        self.sir_interval_s = sir_interval_s
        self.garbage_rate = garbage_rate
        self._rng = rng
        # Weight model, in ``unit``: gross load on the pan, the zero point, the tare.
        self._load = 0.0
        self._from = 0.0
        self._changed_at = -math.inf
        self._settle_for = 0.0
        self._zero = 0.0
        self._tare = 0.0
        self._link: PtyEndpoint | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._serving: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ weight model

    def place(self, load: float) -> None:
        """Put ``load`` (gross, in ``unit``) on the pan; the display settles toward it."""
        self._from = self._gross()
        self._load = load
        self._changed_at = time.monotonic()
        self._settle_for = self._rng.uniform(*self.settle_s)

    def remove(self) -> None:
        """Take everything off the pan."""
        self.place(0.0)

    @property
    def stable(self) -> bool:
        return time.monotonic() - self._changed_at >= self._settle_for

    def _gross(self) -> float:
        """What the load cell reads now (before zero and tare)."""
        elapsed = time.monotonic() - self._changed_at
        if elapsed >= self._settle_for:
            return self._load
        progress = elapsed / self._settle_for
        delta = self._load - self._from
        approach = self._from + delta * (1.0 - math.exp(-5.0 * progress))
        amplitude = (0.03 * abs(delta) + 0.002) * (1.0 - progress) ** 2
        return approach + amplitude * self._rng.uniform(-1.0, 1.0)

    def net(self) -> float:
        """The displayed weight, rounded to the display's resolution."""
        return round(self._gross() - self._zero - self._tare, self.decimals)

    def _weight_answer(self) -> Response:
        gross = self._gross() - self._zero
        if gross > self.capacity:
            return CommandRefused(command=CommandCode.S, reason=Refusal.OVERLOAD)
        if gross < -0.05 * self.capacity:
            return CommandRefused(command=CommandCode.S, reason=Refusal.UNDERLOAD)
        stable = self.stable  # first: once stable, the weight read next is the settled one
        return WeightResponse(
            value=self.net(), unit=self.unit, stable=stable, decimals=self.decimals
        )

    async def _wait_stable(self) -> bool:
        deadline = time.monotonic() + self.stable_timeout_s
        while not self.stable:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    # ------------------------------------------------------------- commands

    async def _answer(self, cmd: Command) -> list[Response]:
        match cmd:
            case BadCommand():
                return [ErrorResponse(code=cmd.answer)]
            case CommandCode.S:
                if not await self._wait_stable():
                    return [CommandRefused(command=CommandCode.S, reason=Refusal.BUSY)]
                return [self._weight_answer()]
            case CommandCode.SI | CommandCode.SIR:
                return [self._weight_answer()]
            case CommandCode.Z | CommandCode.ZI:
                immediate = cmd is CommandCode.ZI
                if not immediate and not await self._wait_stable():
                    return [CommandRefused(command=cmd, reason=Refusal.BUSY)]
                gross = self._gross()
                if abs(gross) > 0.02 * self.capacity:  # outside the zero setting range
                    reason = Refusal.OVERLOAD if gross > 0 else Refusal.UNDERLOAD
                    return [CommandRefused(command=cmd, reason=reason)]
                stable = self.stable
                self._zero, self._tare = gross, 0.0
                return [ZeroDone(immediate=immediate, stable=stable)]
            case CommandCode.T | CommandCode.TI:
                if cmd is CommandCode.T and not await self._wait_stable():
                    return [CommandRefused(command=cmd, reason=Refusal.BUSY)]
                tare = round(self._gross() - self._zero, self.decimals)
                if tare > self.capacity:
                    return [CommandRefused(command=cmd, reason=Refusal.OVERLOAD)]
                if tare < 0:
                    return [CommandRefused(command=cmd, reason=Refusal.UNDERLOAD)]
                stable = self.stable
                self._tare = tare
                return [
                    WeightResponse(
                        value=tare,
                        unit=self.unit,
                        stable=stable,
                        decimals=self.decimals,
                        command=cmd,
                    )
                ]
            case CommandCode.RESET:
                self._tare = 0.0  # a reset clears the tare, keeps the zero point
                return [ResetDone(serial=self.serial)]
            case CommandCode.I0:
                last = len(_COMMAND_LIST) - 1
                return [
                    CommandListEntry(level=level, command=name, last=i == last)
                    for i, (level, name) in enumerate(_COMMAND_LIST)
                ]
        raise AssertionError(f"unhandled command {cmd!r}")  # pragma: no cover

    # ------------------------------------------------------------ the line

    def garbage(self, n_bytes: int) -> bytes:
        """``n_bytes`` random non-protocol bytes: never a CR LF, always a lone CR.

        Without CR LF they run into the next line, which the host must then drop; the
        CR and the high bytes make sure that merged line can never decode.
        """
        if n_bytes <= 0:
            return b""
        allowed = [b for b in range(256) if b != 0x0A]  # no LF: never forms a CR LF
        out = bytearray(self._rng.choice(allowed) for _ in range(n_bytes))
        out[self._rng.randrange(n_bytes)] = 0x0D
        return bytes(out)

    async def inject_garbage(self, n_bytes: int) -> bytes:
        """Write ``n_bytes`` of garbage onto the line now; returns what was written."""
        junk = self.garbage(n_bytes)
        await self._require_link().write(junk)
        return junk

    async def _send(self, responses: list[Response]) -> None:
        link = self._require_link()
        for response in responses:
            if self.garbage_rate and self._rng.random() < self.garbage_rate:
                await link.write(self.garbage(self._rng.randint(1, 32)))
            await link.write(encode_response(response))

    def _require_link(self) -> PtyEndpoint:
        if self._link is None:
            raise RuntimeError("the simulated scale is not running")
        return self._link

    async def _repeat_si(self) -> None:
        while True:
            await self._send([self._weight_answer()])
            await asyncio.sleep(self.sir_interval_s)

    async def _serve(self) -> None:
        link = self._require_link()
        framer = LineFramer()
        async with asyncio.TaskGroup() as tg:
            repeating: asyncio.Task[None] | None = None
            while True:
                data = await link.read()
                for line in framer.feed(data):
                    if repeating is not None:  # any command ends SIR
                        repeating.cancel()
                        repeating = None
                    if isinstance(line, LineTooLong):
                        await self._send([ErrorResponse(code=ErrorCode.ET)])
                        continue
                    cmd = parse_command(line)
                    if cmd is CommandCode.SIR:
                        repeating = tg.create_task(
                            self._repeat_si(), name=f"sim-scale-sir {self.path}"
                        )
                    else:
                        await self._send(await self._answer(cmd))

    # ------------------------------------------------------------- lifetime

    async def run(self) -> None:
        """Serve on the pty until cancelled."""
        async with PtyEndpoint(self.path) as link:
            self._link = link
            try:
                await self._serve()
            finally:
                self._link = None

    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as stack:
            self._link = await stack.enter_async_context(PtyEndpoint(self.path))
            stack.callback(self._forget_link)
            tg = await stack.enter_async_context(asyncio.TaskGroup())
            self._serving = tg.create_task(self._serve(), name=f"sim-scale {self.path}")
            self._stack = stack.pop_all()
        return self

    def _forget_link(self) -> None:
        self._link = None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._stack is not None and self._serving is not None
        self._serving.cancel()
        stack, self._stack, self._serving = self._stack, None, None
        await stack.__aexit__(exc_type, exc, tb)
