"""Mettler Toledo MT-SICS, the ASCII line protocol of scales: a sans-I/O codec for both ends.

Lines are printable ASCII terminated by CR LF. The host sends a command (``SI``) and the
scale answers with one line (``S S      12.345 kg``), or several for ``I0``. The host
side is :func:`encode_command` plus :class:`ResponseDecoder`, which frames a byte
stream into typed responses and resynchronises at the next CR LF after garbage. The
device side (the simulator) is :func:`parse_command` plus :func:`encode_response`.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, field

from warelink.protocol.errors import DecodeError

MAX_LINE = 256
"""Longest line (without CR LF) we accept; longer ones are discarded as one Malformed."""

CRLF = b"\r\n"


class MtSicsDecodeError(DecodeError):
    """A line that is not a valid MT-SICS response (or command)."""


class CommandCode(enum.StrEnum):
    """The commands warelink uses; the value is the wire text."""

    S = "S"  # stable weight (waits for stability, ``S I`` on time-out)
    SI = "SI"  # weight immediately, stable or dynamic
    SIR = "SIR"  # SI repeated until the next command
    Z = "Z"  # zero once stable
    ZI = "ZI"  # zero immediately
    T = "T"  # tare once stable
    TI = "TI"  # tare immediately
    RESET = "@"  # reset; answers with the serial number
    I0 = "I0"  # list the implemented commands


class ErrorCode(enum.StrEnum):
    """Whole-line error answers."""

    ES = "ES"  # syntax error: command not recognised
    ET = "ET"  # transmission error: faulty bytes
    EL = "EL"  # logical error: command cannot be executed (e.g. a parameter not allowed)


class Refusal(enum.StrEnum):
    """Why a weighing, zero or tare command was not executed (second token)."""

    BUSY = "I"  # busy, or no stable value within the time-out
    OVERLOAD = "+"  # above the range (weighing range, zero range, tare range)
    UNDERLOAD = "-"  # below the range


# ------------------------------------------------------------------ responses


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightResponse:
    """A weight value: ``S S|D`` (answer to S/SI/SIR) or the tare of ``T S``/``TI S|D``.

    ``decimals`` is how many digits the scale showed after the point, so the value
    encodes back to the same text. ``raw`` (on every response) is the line as received,
    without its CR LF; it takes no part in equality.
    """

    value: float
    unit: str
    stable: bool = True
    decimals: int = 3
    command: CommandCode = CommandCode.S
    raw: bytes = field(default=b"", compare=False, repr=False)

    def __post_init__(self) -> None:
        if not math.isfinite(self.value):
            raise ValueError(f"not a finite weight: {self.value}")
        if self.command not in _WEIGHT_HEADS:
            raise ValueError(f"a weight answer comes from S, T or TI, not {self.command}")
        if not _UNIT.fullmatch(self.unit):
            raise ValueError(f"not a unit: {self.unit!r}")
        if not 0 <= self.decimals <= 9:
            raise ValueError(f"decimals out of range: {self.decimals}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ZeroDone:
    """``Z A`` (zeroed once stable) or ``ZI S``/``ZI D`` (zeroed at once, stable or not)."""

    immediate: bool = False
    stable: bool = True
    raw: bytes = field(default=b"", compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.immediate and not self.stable:
            raise ValueError("Z only zeroes on a stable weight; use immediate=True (ZI)")


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandRefused:
    """``S I``, ``Z +``, ``T -`` …: the command was understood but not executed."""

    command: CommandCode
    reason: Refusal
    raw: bytes = field(default=b"", compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.command not in _REFUSABLE:
            raise ValueError(f"{self.command} has no refusal answer")


@dataclass(frozen=True, slots=True, kw_only=True)
class ResetDone:
    """``I4 A "<serial>"``: the answer to ``@``."""

    serial: str
    raw: bytes = field(default=b"", compare=False, repr=False)

    def __post_init__(self) -> None:
        if not _QUOTABLE.fullmatch(self.serial):
            raise ValueError(f"not a quotable serial number: {self.serial!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandListEntry:
    """One line of the ``I0`` answer: ``I0 B <level> "<cmd>"``, the last one ``I0 A …``."""

    level: int
    command: str
    last: bool = False
    raw: bytes = field(default=b"", compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.level < 0:
            raise ValueError(f"negative level: {self.level}")
        if not _QUOTABLE.fullmatch(self.command) or not self.command:
            raise ValueError(f"not a quotable command: {self.command!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorResponse:
    """``ES``, ``ET`` or ``EL``."""

    code: ErrorCode
    raw: bytes = field(default=b"", compare=False, repr=False)


Response = WeightResponse | ZeroDone | CommandRefused | ResetDone | CommandListEntry | ErrorResponse


@dataclass(frozen=True, slots=True)
class Malformed:
    """A line that did not decode (or was too long); the stream goes on after it."""

    line: bytes
    reason: str


# ------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class BadCommand:
    """A command line the device cannot execute; ``answer`` is the error it replies."""

    line: bytes
    answer: ErrorCode


Command = CommandCode | BadCommand


def encode_command(cmd: CommandCode) -> bytes:
    """``CommandCode.SI`` → ``b"SI\\r\\n"``."""
    return CommandCode(cmd).value.encode("ascii") + CRLF


def parse_command(line: bytes) -> Command:
    """Device side: the command on one line (CR LF optional); never raises."""
    body = _strip_crlf(line)
    if not _is_printable(body):
        return BadCommand(bytes(line), ErrorCode.ET)
    text = body.decode("ascii")
    name, _, params = text.partition(" ")
    try:
        code = CommandCode(name)
    except ValueError:
        return BadCommand(bytes(line), ErrorCode.ES)
    if params.strip():
        return BadCommand(bytes(line), ErrorCode.EL)  # none of ours takes parameters
    return code


# ---------------------------------------------------------------- the grammar

_WEIGHT_HEADS = frozenset({CommandCode.S, CommandCode.T, CommandCode.TI})
_REFUSABLE = frozenset(
    {CommandCode.S, CommandCode.Z, CommandCode.ZI, CommandCode.T, CommandCode.TI}
)
_UNIT = re.compile(r"[A-Za-z%][A-Za-z0-9/%]{0,4}")
_QUOTABLE = re.compile(r"[ !#-~]*")  # printable ASCII without the double quote

_WEIGHT_LINE = re.compile(
    rb"(S|T|TI) ([SD]) +([+-]?[0-9]+)(?:\.([0-9]+))? ([A-Za-z%][A-Za-z0-9/%]{0,4})"
)
_REFUSED_LINE = re.compile(rb"(S|Z|ZI|T|TI) ([I+-])")
_ZERO_LINE = re.compile(rb"Z A|ZI ([SD])")
_RESET_LINE = re.compile(rb'I4 A "([ !#-~]*)"')
_LIST_LINE = re.compile(rb'I0 ([AB]) ([0-9]{1,3}) "([ !#-~]+)"')
_ERROR_LINE = re.compile(rb"E[STL]")


def _strip_crlf(line: bytes) -> bytes:
    return line[:-2] if line.endswith(CRLF) else line


def _is_printable(body: bytes) -> bool:
    return all(0x20 <= b <= 0x7E for b in body)


def parse_response(line: bytes) -> Response:
    """Host side: the response on one line (CR LF optional).

    Raises :class:`MtSicsDecodeError`, and nothing else, for anything that is not a
    valid response.
    """
    body = _strip_crlf(bytes(line))
    raw = body
    if not body:
        raise MtSicsDecodeError("empty line")
    if len(body) > MAX_LINE:
        raise MtSicsDecodeError(f"line longer than {MAX_LINE} bytes")
    if not _is_printable(body):
        raise MtSicsDecodeError("not printable ASCII")
    if m := _WEIGHT_LINE.fullmatch(body):
        head, status, whole, frac, unit = m.groups()
        decimals = len(frac) if frac is not None else 0
        if decimals > 9:
            raise MtSicsDecodeError(f"too many decimals: {decimals}")
        text = whole + b"." + frac if frac is not None else whole
        return WeightResponse(
            value=float(text),
            unit=unit.decode("ascii"),
            stable=status == b"S",
            decimals=decimals,
            command=CommandCode(head.decode("ascii")),
            raw=raw,
        )
    if m := _REFUSED_LINE.fullmatch(body):
        head, reason = m.groups()
        return CommandRefused(
            command=CommandCode(head.decode("ascii")),
            reason=Refusal(reason.decode("ascii")),
            raw=raw,
        )
    if m := _ZERO_LINE.fullmatch(body):
        (zi_status,) = m.groups()
        if zi_status is None:
            return ZeroDone(immediate=False, stable=True, raw=raw)
        return ZeroDone(immediate=True, stable=zi_status == b"S", raw=raw)
    if m := _RESET_LINE.fullmatch(body):
        return ResetDone(serial=m.group(1).decode("ascii"), raw=raw)
    if m := _LIST_LINE.fullmatch(body):
        marker, level, command = m.groups()
        return CommandListEntry(
            level=int(level), command=command.decode("ascii"), last=marker == b"A", raw=raw
        )
    if _ERROR_LINE.fullmatch(body):
        return ErrorResponse(code=ErrorCode(body.decode("ascii")), raw=raw)
    raise MtSicsDecodeError(f"not an MT-SICS response: {body[:40]!r}")


def encode_response(resp: Response) -> bytes:
    """Device side: one response line with its CR LF."""
    match resp:
        case WeightResponse():
            status = "S" if resp.stable else "D"
            value = f"{resp.value:.{resp.decimals}f}"
            text = f"{resp.command.value} {status} {value:>10} {resp.unit}"
        case ZeroDone(immediate=False):
            text = "Z A"
        case ZeroDone():
            text = f"ZI {'S' if resp.stable else 'D'}"
        case CommandRefused():
            text = f"{resp.command.value} {resp.reason.value}"
        case ResetDone():
            text = f'I4 A "{resp.serial}"'
        case CommandListEntry():
            text = f'I0 {"A" if resp.last else "B"} {resp.level} "{resp.command}"'
        case ErrorResponse():
            text = resp.code.value
    return text.encode("ascii") + CRLF


# ------------------------------------------------------------------- framing


@dataclass(frozen=True, slots=True)
class LineTooLong:
    """The first ``MAX_LINE`` bytes of a line that went on without CR LF."""

    head: bytes


class LineFramer:
    """Splits a byte stream into CR LF terminated lines, whatever the chunking.

    A line longer than ``max_line`` bytes is reported once, as :class:`LineTooLong`
    with its first ``max_line`` bytes, and the rest of it up to the next CR LF dropped.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._max = max_line
        self._buf = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> list[bytes | LineTooLong]:
        out: list[bytes | LineTooLong] = []
        buf = self._buf
        buf += data
        start = 0
        while (end := buf.find(CRLF, start)) >= 0:
            line = bytes(buf[start:end])
            start = end + 2
            if self._discarding:
                self._discarding = False  # the tail of an overlong line
            elif len(line) > self._max:
                out.append(LineTooLong(line[: self._max]))
            else:
                out.append(line)
        del buf[:start]
        pending = len(buf) - (1 if buf.endswith(b"\r") else 0)  # a CR may start a CR LF
        if not self._discarding and pending > self._max:
            out.append(LineTooLong(bytes(buf[: self._max])))
            self._discarding = True
        if self._discarding:
            keep_cr = buf.endswith(b"\r")
            buf.clear()
            if keep_cr:
                buf += b"\r"
        return out


class ResponseDecoder:
    """Host side stream decoder: bytes in, responses (or Malformed lines) out.

    ``feed`` never raises; a bad line becomes one :class:`Malformed` and decoding goes
    on at the next CR LF.
    """

    def __init__(self) -> None:
        self._framer = LineFramer()

    def feed(self, data: bytes) -> list[Response | Malformed]:
        out: list[Response | Malformed] = []
        for item in self._framer.feed(data):
            if isinstance(item, LineTooLong):
                out.append(Malformed(item.head, f"line longer than {MAX_LINE} bytes"))
                continue
            try:
                out.append(parse_response(item))
            except MtSicsDecodeError as exc:
                out.append(Malformed(item, str(exc)))
        return out
