"""MT-SICS codec: golden bytes, round trips, and stream properties."""

from __future__ import annotations

import contextlib
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warelink.protocol.errors import DecodeError
from warelink.protocol.mtsics import (
    MAX_LINE,
    BadCommand,
    CommandCode,
    CommandListEntry,
    CommandRefused,
    ErrorCode,
    ErrorResponse,
    LineFramer,
    LineTooLong,
    Malformed,
    MtSicsDecodeError,
    Refusal,
    ResetDone,
    Response,
    ResponseDecoder,
    WeightResponse,
    ZeroDone,
    encode_command,
    encode_response,
    parse_command,
    parse_response,
)

# ------------------------------------------------------------------ golden vectors


@pytest.mark.parametrize(
    ("cmd", "wire"),
    [
        (CommandCode.S, b"S\r\n"),
        (CommandCode.SI, b"SI\r\n"),
        (CommandCode.SIR, b"SIR\r\n"),
        (CommandCode.Z, b"Z\r\n"),
        (CommandCode.ZI, b"ZI\r\n"),
        (CommandCode.T, b"T\r\n"),
        (CommandCode.TI, b"TI\r\n"),
        (CommandCode.RESET, b"@\r\n"),
        (CommandCode.I0, b"I0\r\n"),
    ],
)
def test_encode_command_golden(cmd: CommandCode, wire: bytes) -> None:
    assert encode_command(cmd) == wire
    assert parse_command(wire) is cmd


GOLDEN_RESPONSES: list[tuple[bytes, Response]] = [
    (b"S S     12.345 kg\r\n", WeightResponse(value=12.345, unit="kg")),
    (b"S D      0.240 kg\r\n", WeightResponse(value=0.24, unit="kg", stable=False)),
    (b"S S      -1.20 g\r\n", WeightResponse(value=-1.2, unit="g", decimals=2)),
    (b"S S        100 lb\r\n", WeightResponse(value=100.0, unit="lb", decimals=0)),
    (
        b"T S      2.500 kg\r\n",
        WeightResponse(value=2.5, unit="kg", command=CommandCode.T),
    ),
    (
        b"TI D      0.730 kg\r\n",
        WeightResponse(value=0.73, unit="kg", stable=False, command=CommandCode.TI),
    ),
    (b"S I\r\n", CommandRefused(command=CommandCode.S, reason=Refusal.BUSY)),
    (b"S +\r\n", CommandRefused(command=CommandCode.S, reason=Refusal.OVERLOAD)),
    (b"S -\r\n", CommandRefused(command=CommandCode.S, reason=Refusal.UNDERLOAD)),
    (b"Z A\r\n", ZeroDone()),
    (b"ZI S\r\n", ZeroDone(immediate=True)),
    (b"ZI D\r\n", ZeroDone(immediate=True, stable=False)),
    (b"Z I\r\n", CommandRefused(command=CommandCode.Z, reason=Refusal.BUSY)),
    (b"Z +\r\n", CommandRefused(command=CommandCode.Z, reason=Refusal.OVERLOAD)),
    (b"Z -\r\n", CommandRefused(command=CommandCode.Z, reason=Refusal.UNDERLOAD)),
    (b"T I\r\n", CommandRefused(command=CommandCode.T, reason=Refusal.BUSY)),
    (b'I4 A "B021002593"\r\n', ResetDone(serial="B021002593")),
    (b'I0 B 0 "S"\r\n', CommandListEntry(level=0, command="S")),
    (b'I0 A 1 "TI"\r\n', CommandListEntry(level=1, command="TI", last=True)),
    (b"ES\r\n", ErrorResponse(code=ErrorCode.ES)),
    (b"ET\r\n", ErrorResponse(code=ErrorCode.ET)),
    (b"EL\r\n", ErrorResponse(code=ErrorCode.EL)),
]


@pytest.mark.parametrize(("wire", "resp"), GOLDEN_RESPONSES)
def test_response_golden(wire: bytes, resp: Response) -> None:
    assert encode_response(resp) == wire
    parsed = parse_response(wire)
    assert parsed == resp
    assert parsed.raw == wire.removesuffix(b"\r\n")


@pytest.mark.parametrize(
    ("wire", "resp"),
    [
        # wider padding and an explicit sign are accepted; raw keeps them
        (b"S S      12.345 kg", WeightResponse(value=12.345, unit="kg")),
        (b"S D   +3.0 kg\r\n", WeightResponse(value=3.0, unit="kg", stable=False, decimals=1)),
    ],
)
def test_lenient_spacing(wire: bytes, resp: Response) -> None:
    parsed = parse_response(wire)
    assert parsed == resp
    assert parsed.raw == wire.removesuffix(b"\r\n")


@pytest.mark.parametrize(
    "wire",
    [
        b"",
        b"\r\n",
        b"S",
        b"S S",
        b"S S 12.3",
        b"S X 12.3 kg",
        b"S S 12.3 kg extra",
        b"S S 1.2.3 kg",
        b"SS 12.3 kg",
        b" S S 12.3 kg",
        b"S S\t12.3 kg",
        b"S S 12.3 k\xffg",
        b"Z D",
        b"ZI A",
        b"I4 A B123",
        b'I4 A "B1"2"',
        b'I0 B x "S"',
        b'I0 C 0 "S"',
        b"EX",
        b"S S 12.3 kg\r\n\r\n",
        b"S S 1.0 kg\rxx",
        b"A" * (MAX_LINE + 1),
    ],
)
def test_invalid_responses_raise_decode_error(wire: bytes) -> None:
    with pytest.raises(MtSicsDecodeError):
        parse_response(wire)
    assert issubclass(MtSicsDecodeError, DecodeError)


@pytest.mark.parametrize(
    ("wire", "answer"),
    [
        (b"XYZ\r\n", ErrorCode.ES),
        (b"s\r\n", ErrorCode.ES),
        (b"\r\n", ErrorCode.ES),
        (b"S\xff\r\n", ErrorCode.ET),
        (b"SI 5\r\n", ErrorCode.EL),
    ],
)
def test_bad_commands(wire: bytes, answer: ErrorCode) -> None:
    assert parse_command(wire) == BadCommand(wire, answer)


def test_decoder_resynchronises_after_garbage() -> None:
    decoder = ResponseDecoder()
    items = decoder.feed(b"\x00\xfe\rjunk" + b"S S     12.345 kg\r\n" + b"S D      1.000 kg\r\n")
    assert len(items) == 2
    assert isinstance(items[0], Malformed)
    assert items[1] == WeightResponse(value=1.0, unit="kg", stable=False)


def test_crlf_split_across_chunks() -> None:
    decoder = ResponseDecoder()
    assert decoder.feed(b"S S      1.000 kg\r") == []
    assert decoder.feed(b"\n") == [WeightResponse(value=1.0, unit="kg")]


def test_overlong_line_is_one_malformed() -> None:
    decoder = ResponseDecoder()
    items = decoder.feed(b"x" * 200)
    items += decoder.feed(b"y" * 200)
    items += decoder.feed(b"z" * 1000 + b"\r\nES\r\n")
    assert len(items) == 2
    assert isinstance(items[0], Malformed)
    assert items[0].line == (b"x" * 200 + b"y" * 200)[:MAX_LINE]
    assert items[1] == ErrorResponse(code=ErrorCode.ES)


def test_line_of_max_length_is_not_too_long() -> None:
    framer = LineFramer()
    line = b"a" * MAX_LINE
    assert framer.feed(line + b"\r") == []
    assert framer.feed(b"\n") == [line]
    assert framer.feed(line + b"a\r\n") == [LineTooLong(line)]


# ------------------------------------------------------------------- properties

units = st.sampled_from(["kg", "g", "lb", "oz", "t", "mg"])


@st.composite
def weight_responses(draw: st.DrawFn) -> WeightResponse:
    decimals = draw(st.integers(0, 6))
    counts = draw(st.integers(-(10**9), 10**9))
    return WeightResponse(
        value=counts / 10**decimals,
        unit=draw(units),
        stable=draw(st.booleans()),
        decimals=decimals,
        command=draw(st.sampled_from([CommandCode.S, CommandCode.T, CommandCode.TI])),
    )


quotable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"'))

responses: st.SearchStrategy[Response] = st.one_of(
    weight_responses(),
    st.builds(ZeroDone, immediate=st.just(True), stable=st.booleans()),
    st.just(ZeroDone()),
    st.builds(
        CommandRefused,
        command=st.sampled_from(
            [CommandCode.S, CommandCode.Z, CommandCode.ZI, CommandCode.T, CommandCode.TI]
        ),
        reason=st.sampled_from(Refusal),
    ),
    st.builds(ResetDone, serial=quotable.filter(lambda s: len(s) < 200)),
    st.builds(
        CommandListEntry,
        level=st.integers(0, 999),
        command=quotable.filter(lambda s: 0 < len(s) < 200),
        last=st.booleans(),
    ),
    st.builds(ErrorResponse, code=st.sampled_from(ErrorCode)),
)


@given(responses)
def test_round_trip(resp: Response) -> None:
    wire = encode_response(resp)
    assert wire.endswith(b"\r\n")
    assert parse_response(wire) == resp
    assert ResponseDecoder().feed(wire) == [resp]


@given(st.binary(max_size=2000))
def test_feed_never_raises(data: bytes) -> None:
    items = ResponseDecoder().feed(data)
    assert all(isinstance(item, (Malformed, *_RESPONSE_TYPES)) for item in items)


_RESPONSE_TYPES = (
    WeightResponse,
    ZeroDone,
    CommandRefused,
    ResetDone,
    CommandListEntry,
    ErrorResponse,
)


@given(st.binary(max_size=400))
def test_parse_response_only_raises_decode_error(data: bytes) -> None:
    with contextlib.suppress(MtSicsDecodeError):
        parse_response(data)


@given(st.binary(max_size=300))
def test_parse_command_never_raises(data: bytes) -> None:
    assert isinstance(parse_command(data), (CommandCode, BadCommand))


garbage_lines = st.binary(max_size=400).map(lambda b: b.replace(b"\r\n", b"\n"))


@given(
    st.lists(st.one_of(responses.map(encode_response), garbage_lines.map(lambda b: b + b"\r\n"))),
    st.binary(max_size=300),
    st.lists(st.integers(0, 10_000), max_size=30),
)
def test_any_chunking_gives_the_same_items(
    lines: list[bytes], tail: bytes, cuts: list[int]
) -> None:
    stream = b"".join(lines) + tail
    whole = ResponseDecoder().feed(stream)

    decoder = ResponseDecoder()
    chunked: list[Response | Malformed] = []
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    for start, end in itertools.pairwise(points):
        chunked += decoder.feed(stream[start:end])
    assert chunked == whole


@given(st.binary(max_size=600))
def test_byte_at_a_time_equals_whole(stream: bytes) -> None:
    whole = ResponseDecoder().feed(stream)
    decoder = ResponseDecoder()
    single: list[Response | Malformed] = []
    for i in range(len(stream)):
        single += decoder.feed(stream[i : i + 1])
    assert single == whole
