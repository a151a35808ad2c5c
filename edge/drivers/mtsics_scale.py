"""Driver for a scale speaking MT-SICS over a serial port (or a pty in tests).

It polls ``SI`` with one request outstanding at a time. Unstable weights are
telemetry, downsampled; a weight that settles is one ledger event, emitted once per
settled value (not again while it sits there). Zero and tare from the hub go through
the same request path, so they never interleave with a poll on the line.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import serial
import serial_asyncio
import structlog

from warelink.edge.device_config import MtSicsScaleConfig
from warelink.edge.drivers.base import (
    Backoff,
    CommandFailed,
    CommandRejected,
    DriverSpec,
    Emit,
    Presence,
)
from warelink.protocol.messages import TrafficClass, WeightReading
from warelink.protocol.mtsics import (
    CommandCode,
    CommandRefused,
    ErrorResponse,
    Malformed,
    Response,
    ResponseDecoder,
    WeightResponse,
    ZeroDone,
    encode_command,
)

TELEMETRY_MIN_INTERVAL_S = 0.5
"""Unstable weights are sent at most this often (≈2/s)."""

MAX_LOST_ANSWERS = 5
"""Consecutive polls answered only by garbage before the scale counts as failed."""

_GARBAGE_GRACE_S = 0.3
"""After a garbled line, the answer it may have swallowed is given up this much later."""


class ScaleCommandError(Exception):
    """A zero or tare the scale did not execute (refused, not connected, no answer)."""


class _ScaleSilent(Exception):
    """No line at all from the scale within the time-out: treat the link as down."""


class _AnswerLost(Exception):
    """The scale talked, but no valid answer to our request came (garbage on the line)."""


Accept = Callable[[Response], bool]

_IMMEDIATE = frozenset({CommandCode.SI, CommandCode.ZI, CommandCode.TI})

_LINK_FAILURES = (OSError, serial.SerialException, ConnectionError, _ScaleSilent)


def _weight_answer(resp: Response) -> bool:
    return (isinstance(resp, WeightResponse) and resp.command is CommandCode.S) or (
        isinstance(resp, CommandRefused) and resp.command is CommandCode.S
    )


def _zero_answer(resp: Response) -> bool:
    return isinstance(resp, ZeroDone) or (
        isinstance(resp, CommandRefused) and resp.command is CommandCode.Z
    )


def _tare_answer(resp: Response) -> bool:
    return (isinstance(resp, WeightResponse) and resp.command is CommandCode.T) or (
        isinstance(resp, CommandRefused) and resp.command is CommandCode.T
    )


def _any_error(resp: Response) -> bool:
    return isinstance(resp, ErrorResponse)


class MtSicsScaleDriver:
    """One MT-SICS scale: polls it, emits its weights, and zeroes/tares it on request."""

    def __init__(self, config: MtSicsScaleConfig, emit: Emit) -> None:
        self.config = config
        self.device_id = config.id
        self._emit = emit
        self._log = structlog.get_logger(__name__).bind(device=config.id)
        self._backoff = Backoff()
        self._lock = asyncio.Lock()  # one request outstanding on the line
        self._writer: asyncio.StreamWriter | None = None
        self._lines: asyncio.Queue[Response | Malformed] = asyncio.Queue()
        self._presence = Presence(config.id, emit, self._log, "mtsics")
        self._garbage_lines = 0
        self._garbage_reason = ""
        self._last_rx_at = -float("inf")  # loop time of the last bytes from the scale
        self._last_telemetry = -float("inf")
        self._settled: WeightResponse | None = None  # the last stable weight reported

    # ------------------------------------------------------------ public API

    async def run(self) -> None:
        """Talk to the scale until cancelled; reconnects with backoff, never raises."""
        while True:
            detail = await self._session()
            await self._presence.down(detail, port=self.config.port)
            await asyncio.sleep(self._backoff.next_delay())

    async def zero(self) -> None:
        """Zero the scale once its weight is stable (``Z``)."""
        resp = await self._command(CommandCode.Z, _zero_answer)
        if not isinstance(resp, ZeroDone):
            raise ScaleCommandError(f"zero not executed: {_describe(resp)}")
        self._settled = None

    async def tare(self) -> float:
        """Tare the scale once its weight is stable (``T``); returns the tare weight."""
        resp = await self._command(CommandCode.T, _tare_answer)
        if not isinstance(resp, WeightResponse):
            raise ScaleCommandError(f"tare not executed: {_describe(resp)}")
        self._settled = None
        return resp.value

    async def execute(self, action: str, args: dict[str, Any]) -> str:
        """Hub commands: ``zero`` and ``tare``."""
        try:
            if action == "zero":
                await self.zero()
                return "zeroed"
            if action == "tare":
                return f"tare {await self.tare():g}"
        except ScaleCommandError as exc:
            raise CommandFailed(str(exc)) from None
        raise CommandRejected(f"a scale takes 'zero' or 'tare', not {action!r}")

    # ------------------------------------------------------------ the session

    async def _session(self) -> str:
        """One connection, until it fails; returns why it ended."""
        try:
            reader, writer = await serial_asyncio.open_serial_connection(
                url=self.config.port, baudrate=self.config.baudrate
            )
        except (OSError, serial.SerialException) as exc:
            return f"cannot open {self.config.port}: {exc}"
        self._lines = asyncio.Queue()
        self._writer = writer
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._read_lines(reader), name=f"{self.device_id}-read")
                tg.create_task(self._poll(), name=f"{self.device_id}-poll")
        except ExceptionGroup as group:
            failure = _first_leaf(group)
            if isinstance(failure, _LINK_FAILURES):
                return str(failure) or type(failure).__name__
            # A bug of ours must not kill the gateway: log it, retry like a link failure.
            self._log.error("mtsics.driver_error", exc_info=failure)
            return f"driver error: {failure!r}"
        finally:
            self._writer = None
            self._flush_garbage()
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()
        return "session ended"  # pragma: no cover - the tasks only end by raising

    async def _read_lines(self, reader: asyncio.StreamReader) -> None:
        decoder = ResponseDecoder()
        while True:
            data = await reader.read(4096)
            if not data:
                raise ConnectionError(f"{self.config.port} closed")
            self._last_rx_at = asyncio.get_running_loop().time()
            for item in decoder.feed(data):
                if isinstance(item, Malformed):
                    if not self._garbage_lines:
                        self._garbage_reason = item.reason
                    self._garbage_lines += 1
                else:
                    self._flush_garbage()  # a good line ends a burst of garbage
                self._lines.put_nowait(item)

    def _flush_garbage(self) -> None:
        if self._garbage_lines:
            self._log.warning(
                "mtsics.garbage",
                lines=self._garbage_lines,
                first_reason=self._garbage_reason,
            )
            self._garbage_lines = 0

    async def _poll(self) -> None:
        lost = 0
        while True:
            try:
                resp = await self._request(CommandCode.SI, _weight_answer)
            except _AnswerLost:
                lost += 1
                if lost >= MAX_LOST_ANSWERS:
                    raise _ScaleSilent(f"{lost} requests in a row got no valid answer") from None
            else:
                lost = 0
                if await self._presence.up(port=self.config.port):
                    self._backoff.reset()
                await self._on_weight(resp)
            await asyncio.sleep(self.config.poll_interval_s)

    async def _command(self, cmd: CommandCode, accept: Accept) -> Response:
        try:
            return await self._request(cmd, accept)
        except (_AnswerLost, _ScaleSilent) as exc:
            raise ScaleCommandError(f"{cmd} not answered: {exc}") from None

    async def _request(self, cmd: CommandCode, accept: Accept) -> Response:
        """Send ``cmd``; the first line ``accept`` takes (or an error line) is the answer.

        Lines that answer something else (late answers to an earlier request) are
        skipped. Raises ``_ScaleSilent`` if not a byte came back in time, and
        ``_AnswerLost`` if the scale talked but no valid answer came: garbage may have
        swallowed it. ``SI`` answers at once, so after garbage it is given up quickly;
        ``Z`` and ``T`` wait for stability, so they get the full time-out.
        """
        async with self._lock:
            writer = self._writer
            if writer is None:
                raise ScaleCommandError(f"{self.device_id} is not connected")
            garbled = False
            while not self._lines.empty():  # stale lines: nobody asked for them now
                garbled |= isinstance(self._lines.get_nowait(), Malformed)
            impatient = cmd in _IMMEDIATE
            loop = asyncio.get_running_loop()
            sent_at = loop.time()
            writer.write(encode_command(cmd))
            await writer.drain()
            try:
                async with asyncio.timeout(self.config.timeout_s) as deadline:
                    while True:
                        if garbled and impatient:
                            limit = loop.time() + _GARBAGE_GRACE_S
                            when = deadline.when()
                            deadline.reschedule(limit if when is None else min(when, limit))
                        item = await self._lines.get()
                        if isinstance(item, Malformed):
                            garbled = True
                        elif accept(item) or _any_error(item):
                            return item
            except TimeoutError:
                if self._last_rx_at >= sent_at:
                    raise _AnswerLost(f"no valid answer to {cmd}") from None
                raise _ScaleSilent(
                    f"no answer to {cmd} within {self.config.timeout_s:g} s"
                ) from None

    # --------------------------------------------------------------- emitting

    async def _on_weight(self, resp: Response) -> None:
        if not isinstance(resp, WeightResponse):
            return  # S I / S + / S -: nothing to report as a weight
        if not resp.stable:
            now = time.monotonic()
            if now - self._last_telemetry >= TELEMETRY_MIN_INTERVAL_S:
                self._last_telemetry = now
                await self._emit(
                    self.device_id,
                    TrafficClass.TELEMETRY,
                    WeightReading(weight=resp.value, unit=resp.unit, stable=False),
                )
            return
        previous = self._settled
        epsilon = 2 * 10.0**-resp.decimals  # two counts of the display
        if (
            previous is not None
            and previous.unit == resp.unit
            and abs(previous.value - resp.value) <= epsilon
        ):
            return  # the same settled weight still sitting there
        self._settled = resp
        reading = WeightReading(weight=resp.value, unit=resp.unit, stable=True)
        if abs(resp.value) <= epsilon:
            # Back to zero: the pan is empty. Not a business event, but worth a live
            # update, and it lets the same load placed again count again.
            if previous is not None:
                await self._emit(self.device_id, TrafficClass.TELEMETRY, reading)
            return
        await self._emit(self.device_id, TrafficClass.LEDGER, reading)


def _describe(resp: Response) -> str:
    if isinstance(resp, CommandRefused):
        return {"I": "busy or not stable", "+": "above range", "-": "below range"}[
            resp.reason.value
        ]
    if isinstance(resp, ErrorResponse):
        return f"scale answered {resp.code.value}"
    return repr(resp)


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


# ------------------------------------------------------------- registry entry

SPEC = DriverSpec(
    kind="mtsics_scale",
    config=MtSicsScaleConfig,
    build=lambda config, context: MtSicsScaleDriver(config, context.emit),
    example='port = "/dev/ttyUSB0"',
)
