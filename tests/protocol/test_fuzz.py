"""Every public decoder of protocol/, fuzzed: bad input raises DecodeError, nothing else.

Issue 9 (no single message stops the pipeline): a decoder that meets bytes it cannot
read must say so with the project's ``DecodeError``, never with whatever its parser
tripped over (UnicodeDecodeError, RecursionError, struct.error, KeyError, …), which a
caller catching ``DecodeError`` would let kill its loop. Each decoder gets a seeded
mutation loop over valid golden encodings (bit flips, truncation, splices, invalid
UTF-8, deep nesting, huge numbers and lengths); stream decoders are fed in chunks and
their ``Malformed`` items count as refusals. Seeds are fixed, so a failure reproduces;
it names the decoder, the exception and the shortest input that raised it.

``WARELINK_FUZZ_MUTATIONS=200000`` runs the long offline pass.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import os
import random
import re
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgspec
import pytest

from tests.protocol.test_vda5050 import EXAMPLES as VDA5050_EXAMPLES
from tests.protocol.test_zpl import FAULTED as ZPL_FAULTED
from tests.protocol.test_zpl import GOLDEN as ZPL_GOLDEN
from tests.protocol.test_zpl import label as zpl_label
from warelink.protocol import ble_gatt, epc, gs1, llrp, mtsics, vda5050, wire, zpl
from warelink.protocol.errors import DecodeError
from warelink.protocol.messages import (
    Ack,
    AgvState,
    Birth,
    Command,
    Death,
    DeviceState,
    DeviceStatus,
    Event,
    EventBatch,
    GatewayStats,
    HubPresence,
    Receipt,
    ReplayRequest,
    Scan,
    TagRead,
    Telemetry,
    TrafficClass,
    WeightReading,
)
from warelink.protocol.topics import Kind, Topics

MUTATIONS = int(os.environ.get("WARELINK_FUZZ_MUTATIONS", "3000"))
SEED = 9  # the number; change it to explore, keep it to reproduce

Decode = Callable[[bytes], object]


@dataclass(frozen=True)
class Target:
    """A decoder under test, the valid inputs to mutate and one it must refuse.

    ``splice`` holds more valid inputs (of other kinds) to splice pieces of in;
    ``tokens`` are format-specific pieces to splice in (deep nesting, huge lengths);
    ``anchors`` a regex of what comes before a value, so a token lands there; ``fixup``
    repairs a mutant's outer frame (a length field) so mutations reach the body.
    """

    name: str
    decode: Decode
    seeds: Sequence[bytes]
    bad: bytes
    tokens: Sequence[bytes] = ()
    anchors: bytes = b""
    fixup: Callable[[random.Random, bytes], bytes] | None = None
    splice: Sequence[bytes] = ()


# ------------------------------------------------------------------ mutation

_INVALID_UTF8 = (
    b"\xff\xfe",
    b"\xc3",  # a lead byte with no continuation
    b"\xe2\x82",  # truncated three-byte sequence
    b"\xed\xa0\x80",  # an encoded surrogate
    b"\xc0\xaf",  # overlong
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\x80",
)
_INTERESTING = b"\x00\x01\x02\x03\x0a\x0d\x1d\x20\x22\x2c\x3e\x5c\x5e\x7e\x7f\x80\xfe\xff"
_TEXT_TOKENS = (
    b"9" * 5000,
    b"\x00",
    b"\r\n",
    "\u00b2\u0663\uff11".encode(),  # digits to str.isdigit(), not to int()
    "\ud800".encode("utf-8", "surrogatepass"),
    b"x" * 5000,  # past every line and string limit
)
_JSON_TOKENS = (
    b"[" * 5000,
    b'"zz":' + b"[" * 5000,
    b'"zz":' + b'{"a":' * 3000,
    b"1e400",
    b"-1e400",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"9" * 5000,
    b'"\\ud800"',
    b'"\\u00',
    b'"\xff\xfe"',
    b"\xff\xfe",
    b"NaN",
    b'"2026-02-30T25:61:61.9999999999Z"',
    b'"9999-12-31T23:59:59-23:59"',
    b"null",
    b"{}",
    b"[]",
)
_MSGPACK_TOKENS = (
    b"\x91" * 5000,  # arrays of one, nested
    b"\x81\xa1a" * 3000,  # maps of one, nested
    b"\xdb\xff\xff\xff\xff",  # str 32 with a huge length
    b"\xdd\xff\xff\xff\xff",  # array 32 with a huge length
    b"\xdf\xff\xff\xff\xff",  # map 32 with a huge length
    b"\xc6\xff\xff\xff\xff",  # bin 32 with a huge length
    b"\xa2\xff\xfe",  # a str of invalid UTF-8
    b"\xa3\xed\xa0\x80",  # a str holding a surrogate
    b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff",  # uint 64 max
    b"\xd3\x80\x00\x00\x00\x00\x00\x00\x00",  # int 64 min
    b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00",  # NaN
    b"\xcb\x7f\xf0\x00\x00\x00\x00\x00\x00",  # +inf
    b"\xd6\xff\xff\xff\xff\xff",  # timestamp 32
    b"\xd7\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # timestamp 64, nanoseconds out of range
    b"\xc7\x0c\xff" + b"\xff" * 12,  # timestamp 96
    b"\xc7\x0c\xff\x00\x00\x00\x00\x7f\xff\xff\xff\xff\xff\xff\xff",  # year far past 9999
    b"\xd4\x05\x00",  # an unknown ext type
    b"\xc1",  # never used
    b"\xc4\x10" + bytes(16),  # bin 8 of 16 bytes (a uuid)
    b"\xa4ack\x00",
)
# Where values start: a token spliced in right after one of these reaches the parser
# of a value instead of breaking the syntax around it.
_JSON_VALUE = rb'[{\[,:"]'
_ZPL_VALUE = rb"[\^~][A-Z0-9@]{2}|[,_]"  # after a command's name, a comma, a ^FH escape
_GS1_VALUE = rb"\][A-Za-z][0-9]|[()\x1d]"  # after a symbology id, an AI, a GS
_BINARY_TOKENS = (
    b"\xff\xff\xff\xff",
    b"\x00\x00\x00\x00",
    b"\x7f\xff\xff\xff",
    b"\x80\x00\x00\x00",
    b"\xff\xff",
    b"\x00\x04",
    b"\x00\x00",
)


def _mutate(rng: random.Random, target: Target, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 5))):
        pos = rng.randint(0, len(out))
        op = rng.randrange(12)
        if op == 0 and out:  # flip one bit
            out[min(pos, len(out) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and out:  # an interesting byte, or any byte
            byte = rng.choice(_INTERESTING) if rng.random() < 0.5 else rng.randrange(256)
            out[min(pos, len(out) - 1)] = byte
        elif op == 2:  # truncate at the end, or at the start
            out = out[:pos] if rng.random() < 0.8 else out[pos:]
        elif op == 3:  # delete a span
            del out[pos : pos + rng.randint(1, 16)]
        elif op == 4:  # insert random bytes
            out[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == 5:  # invalid UTF-8, after an anchor (inside a string) when there is one
            at = _anchored(rng, target, out, pos)
            out[at:at] = rng.choice(_INVALID_UTF8)
        elif op == 6:  # splice in part of another valid input
            other = rng.choice([*target.seeds, *target.splice])
            cut = rng.randint(0, len(other))
            if rng.random() < 0.5:
                out = out[:pos] + other[cut:]
            else:
                out[pos:pos] = other[cut : cut + rng.randint(1, 64)]
        elif op >= 10 or op == 7:  # a format token where a value starts (the likeliest op)
            at = _anchored(rng, target, out, pos)
            token = rng.choice(target.tokens or _BINARY_TOKENS)
            out[at : at + (rng.randint(0, 8) if rng.random() < 0.5 else 0)] = token
        elif op == 8 and out:  # repeat a span
            end = min(len(out), pos + rng.randint(1, 32))
            out[pos:pos] = out[pos:end] * rng.randint(1, 64)
        elif op == 9 and len(out) > 1:  # swap two bytes
            i, j = rng.randrange(len(out)), rng.randrange(len(out))
            out[i], out[j] = out[j], out[i]
    mutant = bytes(out)
    if target.fixup is not None and rng.random() < 0.7:
        mutant = target.fixup(rng, mutant)
    return mutant


def _anchored(rng: random.Random, target: Target, data: bytearray, pos: int) -> int:
    """Right after a random anchor (where a value or string starts), else ``pos``."""
    if not target.anchors or rng.random() < 0.25:
        return pos
    hits = [match.end() for match in re.finditer(target.anchors, data)]
    return rng.choice(hits) if hits else pos


@dataclass(frozen=True)
class Leak:
    exception: BaseException
    data: bytes
    where: str

    def report(self, target: Target) -> str:
        exc = self.exception
        return (
            f"{target.name} raised {type(exc).__name__}: {str(exc)[:200]} (at {self.where})\n"
            f"  reproduce: {target.name}({self.data[:400]!r}"
            f"{'…' if len(self.data) > 400 else ''})  [{len(self.data)} bytes]"
        )


def fuzz(target: Target, count: int, seed: int = SEED) -> list[Leak]:
    """Mutate ``target``'s seeds ``count`` times; the shortest input per kind of leak."""
    rng = random.Random(f"{target.name}/{seed}")
    leaks: dict[tuple[str, str], Leak] = {}
    for _ in range(count):
        data = _mutate(rng, target, rng.choice(target.seeds))
        try:
            target.decode(data)
        except DecodeError:
            pass
        except Exception as exc:  # the point: anything else is a leak
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            where = f"{os.path.basename(frame.filename)}:{frame.lineno}"
            key = (type(exc).__name__, where)
            if key not in leaks or len(data) < len(leaks[key].data):
                leaks[key] = Leak(exc, data, where)
    return list(leaks.values())


# ------------------------------------------------------------- stream decoders

_CHUNKS = (1, 5, 13, 64, 2, 300)
_MALFORMED = (llrp.Malformed, zpl.Malformed, gs1.Malformed, mtsics.Malformed, mtsics.LineTooLong)


def _stream(feed_of: Callable[[], Callable[[bytes], Sequence[object]]]) -> Decode:
    """Feed the bytes in uneven chunks to a fresh decoder; a ``Malformed`` is a refusal."""

    def decode(data: bytes) -> object:
        feed = feed_of()
        items: list[object] = []
        start = 0
        for size in itertools.cycle(_CHUNKS):
            if start >= len(data):
                break
            items += feed(data[start : start + size])
            start += size
        refused = [item for item in items if isinstance(item, _MALFORMED)]
        if refused:
            raise DecodeError(f"{len(refused)} malformed: {refused[0]!r}"[:200])
        return items

    return decode


def _refusing(parse: Decode, refusal: type) -> Decode:
    """A decoder that answers bad input with a value (``refusal``), as one that raises."""

    def decode(data: bytes) -> object:
        result = parse(data)
        if isinstance(result, refusal):
            raise DecodeError(f"refused: {result!r}"[:200])
        return result

    return decode


def _text(parse: Callable[[str], object]) -> Decode:
    """A decoder of text, given any bytes: invalid UTF-8 becomes lone surrogates."""
    return lambda data: parse(data.decode("utf-8", "surrogateescape"))


# --------------------------------------------------------------------- seeds

WHEN = dt.datetime(2026, 11, 25, 8, 30, tzinfo=dt.UTC)


def _event(seq: int, body: object) -> Event:
    return Event(
        gateway="gw-a", seq=seq, id=uuid.UUID(int=seq), device="scale-1",
        cls=TrafficClass.LEDGER, occurred_at=WHEN, body=body,  # type: ignore[arg-type]
    )  # fmt: skip


EVENTS = [
    _event(1, WeightReading(1.25, "kg", False)),
    _event(2, Scan(raw="]C1010950600013435217261231", symbology="gs1-128",
                   elements={"01": "09506000134352", "17": "261231"})),
    _event(3, Receipt(location="DOCK-1", gtin="09506000134352", quantity=4, lot="L1",
                      expiry=dt.date(2026, 12, 31))),
    _event(4, DeviceStatus(state=DeviceState.OFFLINE, detail="port gone")),
    _event(5, TagRead(epc="3074257BF7194E4000001A85", antenna=2, rssi=-60.0,
                      decoded={"scheme": "sgtin-96"})),
    _event(6, AgvState(x=1.0, y=2.0, errors=["e1"])),
    _event(7, Telemetry(values={"t": 21.5}, unit={"t": "C"})),
]  # fmt: skip
EVENT_SEEDS = [wire.encode_event(e) for e in EVENTS]
BATCH = wire.encode(
    EventBatch(
        gateway="gw-a", session=1, first_seq=1, last_seq=7, sent_at=WHEN,
        events=[msgspec.Raw(raw) for raw in EVENT_SEEDS],
    )
)  # fmt: skip
WIRE_SEEDS = [
    BATCH,
    wire.encode(Ack(gateway="gw-a", seq=42)),
    wire.encode(Birth(gateway="gw-a", site="site-1", session=3, last_seq=99, devices=["s-1"])),
    wire.encode(Death(gateway="gw-a", session=3)),
    wire.encode(HubPresence(online=True, instance="abc")),
    wire.encode(
        Command(key="k1", device="scale-1", action="zero", args={"a": [1, {"b": "c"}]},
                expires_at=WHEN)
    ),
    wire.encode(ReplayRequest(gateway="gw-a", from_seq=5, to_seq=9)),
    wire.encode(GatewayStats(gateway="gw-a", session=2, sent_at=WHEN, counters={"depth": 3.0})),
]  # fmt: skip

TOPIC_SEEDS = [
    *(Topics("warelink").gateway("site-1", "gw-a", kind).encode() for kind in Kind),
    Topics("warelink").gateway("S.1", "g_2-x", Kind.EVENTS).encode(),
]

VDA5050_SEEDS = {topic: text.encode() for topic, text, _ in VDA5050_EXAMPLES}
VDA5050_ALL = list(VDA5050_SEEDS.values())
VDA5050_TOPICS = vda5050.Vda5050Topics("wltest-1/uagv")
FLOOR_GRAPH = (
    b'{"nodes": [{"id": "A", "x": 0, "y": 0, "location": "L-1"}, {"id": "B", "x": 3.5, "y": 0},'
    b' {"id": "C", "x": 3.5, "y": 4}], "edges": [{"start": "A", "end": "B"},'
    b' {"start": "B", "end": "C", "bidirectional": false}], "map_id": "hall-1"}'
)

EPC = bytes.fromhex("3074257BF7194E4000001A85")
LLRP_SEEDS = [
    llrp.encode(m)
    for m in (
        llrp.Keepalive(message_id=0x01020304),
        llrp.KeepaliveAck(message_id=7),
        llrp.RoAccessReport(
            tags=(
                llrp.TagReport(epc=EPC, antenna_id=2, peak_rssi=-60, first_seen_utc_us=1,
                               last_seen_utc_us=2, seen_count=3, rospec_id=7),
                llrp.TagReport(epc=EPC[:8], antenna_id=1),
            ),
            message_id=9,
        ),
        llrp.ReaderEventNotification(
            timestamp_us=1, connection_attempt=llrp.ConnectionAttemptStatus.SUCCESS
        ),
        llrp.AddRoSpecResponse(message_id=3),
        llrp.ErrorMessage(status=llrp.LlrpStatus(101, "bad field"), message_id=4),
        llrp.GetReaderCapabilities(requested=1, message_id=5),
        llrp.GetReaderCapabilitiesResponse(
            general=llrp.GeneralDeviceCapabilities(max_antennas=4, firmware="1.2.3"), message_id=5
        ),
        llrp.AddRoSpec(rospec=llrp.RoSpec(rospec_id=7, antenna_ids=(1, 2), aispec_duration_ms=500)),
        llrp.DeleteRoSpec(rospec_id=0, message_id=6),
        llrp.CloseConnection(message_id=8),
        llrp.UnsupportedMessage(message_type=1023, body=b"\x00\x01", message_id=9),
    )
]  # fmt: skip


def _llrp_length(rng: random.Random, data: bytes) -> bytes:
    """Make the header's length field right again, so the body gets decoded."""
    if len(data) < llrp.HEADER_SIZE:
        return data
    return data[:2] + len(data).to_bytes(4, "big") + data[6:]


def _llrp_stream(rng: random.Random, data: bytes) -> bytes:
    return b"".join(_llrp_length(rng, frame) for frame in (data, rng.choice(LLRP_SEEDS)))


ZPL_LABEL = zpl_label()
ZPL_SHORT_LABEL = (
    b"^XA^FX warelink-job:k1^FS^BCN^FD>;>800376123450000000016^FS^FH^FD_C3_BC^FS^PQ2,0^XZ"
)
# The ^BC data of the label's barcodes, and one with every invocation code.
ZPL_CODE128 = [
    *(field.split(b"^FS")[0] for field in ZPL_LABEL.split(b"^BCN,140,N,N,N^FD")[1:]),
    b">;>81234>6A><>=B>9C>:D>5>81234>0",
]

MTSICS_SEEDS = [
    b"S S     12.345 kg\r\n",
    b"S D      0.240 kg\r\n",
    b"TI D      0.730 kg\r\n",
    b"S I\r\n",
    b"Z A\r\n",
    b"ZI D\r\n",
    b'I4 A "0123456789"\r\n',
    b'I0 B 0 "I0"\r\n',
    b'I0 A 1 "SIR"\r\n',
    b"EL\r\n",
]
MTSICS_COMMANDS = [mtsics.encode_command(code) for code in mtsics.CommandCode]

GS1_SEEDS = [
    b"]C1010950600013435217261231\x1d10ABC123\x1d3103001250",
    b"]d2010950600013435210L2026-07\x1d21SER1",
    b"(01)09506000134352(17)201225(10)ABC",
    b"]C100376123450000000016",
    b"]E09506000134352",
    b"09506000134352",
    b"hello world",
    b"]Q3401ABC\x1d37123",
]

BLE_WEIGHT_SEEDS = [
    ble_gatt.encode_weight_measurement(m)
    for m in (
        ble_gatt.WeightMeasurement.of(12.5),
        ble_gatt.WeightMeasurement.of(
            30.0, ble_gatt.WeightUnit.LB,
            timestamp=ble_gatt.BleDateTime(2026, 2, 28, 23, 59, 59), user_id=3, bmi=22.1,
            height=70.0,
        ),
        ble_gatt.WeightMeasurement(weight_counts=None, timestamp=ble_gatt.BleDateTime(0, 0, 0)),
    )
] + [b"\xf0\x10\x27extra"]  # fmt: skip
BLE_FEATURE_SEEDS = [
    ble_gatt.encode_weight_scale_feature(
        ble_gatt.WeightScaleFeature(timestamp=True, bmi=True, weight_resolution=7)
    ),
    bytes(4),
]

TARGETS = [
    # wire and topics (decoders owned elsewhere, fuzzed all the same)
    Target("wire.decode", wire.decode, WIRE_SEEDS, b"\x92\x01\xc1", _MSGPACK_TOKENS),
    Target(
        "wire.decode_batch", wire.decode_batch, [BATCH], b"\x92\x01\x80", _MSGPACK_TOKENS,
        splice=WIRE_SEEDS,
    ),
    Target("wire.decode_event", wire.decode_event, EVENT_SEEDS, b"\x80", _MSGPACK_TOKENS),
    Target(
        "wire.split_batch", wire.split_batch, [BATCH], b"\x92\x02\x80", _MSGPACK_TOKENS,
        splice=WIRE_SEEDS,
    ),
    Target(
        "topics.Topics.parse", _text(Topics("warelink").parse), TOPIC_SEEDS,
        b"warelink/v1/+/gw/events", _TEXT_TOKENS, rb"/",
    ),
    # VDA 5050
    *(
        Target(
            f"vda5050.decode[{topic}]", functools.partial(vda5050.decode, topic),
            [VDA5050_SEEDS[topic]], b'{"headerId": -1}', _JSON_TOKENS, _JSON_VALUE,
            splice=VDA5050_ALL,
        )
        for topic in (vda5050.Topic.VISUALIZATION, vda5050.Topic.CONNECTION,
                      vda5050.Topic.FACTSHEET)
    ),
    Target(
        "vda5050.decode_order", vda5050.decode_order,
        [VDA5050_SEEDS[vda5050.Topic.ORDER]], b"[]", _JSON_TOKENS, _JSON_VALUE, splice=VDA5050_ALL,
    ),
    Target(
        "vda5050.decode_state", vda5050.decode_state,
        [VDA5050_SEEDS[vda5050.Topic.STATE]], b"{", _JSON_TOKENS, _JSON_VALUE, splice=VDA5050_ALL,
    ),
    Target(
        "vda5050.decode_instant_actions", vda5050.decode_instant_actions,
        [VDA5050_SEEDS[vda5050.Topic.INSTANT_ACTIONS]], b'"\xff"', _JSON_TOKENS,
        _JSON_VALUE, splice=VDA5050_ALL,
    ),
    Target(
        "vda5050.FloorGraph.from_json", vda5050.FloorGraph.from_json, [FLOOR_GRAPH],
        b'{"nodes": 3}', _JSON_TOKENS, _JSON_VALUE,
    ),
    Target(
        "vda5050.Vda5050Topics.parse", _text(VDA5050_TOPICS.parse),
        [VDA5050_TOPICS.topic("ACME", "0001", kind).encode() for kind in vda5050.Topic],
        b"wltest-1/uagv/v2/ACME/0001/nope", _TEXT_TOKENS, rb"/",
    ),
    # LLRP
    Target(
        "llrp.decode_message", llrp.decode_message, LLRP_SEEDS, b"\x04\x3e\x00\x00\x00\x0b" +
        bytes(5), _BINARY_TOKENS, fixup=_llrp_length,
    ),
    Target(
        "llrp.LlrpDecoder.feed", _stream(lambda: llrp.LlrpDecoder().feed), LLRP_SEEDS,
        bytes(10), _BINARY_TOKENS, fixup=_llrp_stream,
    ),
    # ZPL
    Target(
        "zpl.parse_host_status", zpl.parse_host_status, [ZPL_GOLDEN, ZPL_FAULTED],
        ZPL_GOLDEN[:-5], _TEXT_TOKENS, rb"[\x02,]",
    ),
    Target(
        "zpl.HostStatusDecoder.feed", _stream(lambda: zpl.HostStatusDecoder().feed),
        [ZPL_GOLDEN + ZPL_FAULTED, ZPL_FAULTED], b"junk\x02", _TEXT_TOKENS, rb"[\x02,]",
    ),
    Target(
        "zpl.ZplStreamDecoder.feed", _stream(lambda: zpl.ZplStreamDecoder().feed),
        [ZPL_LABEL, b"~HS^XA^FDx^FS^XZ~PS"], b"^XA^XA", _TEXT_TOKENS, _ZPL_VALUE,
    ),
    Target(
        "zpl.read_label", zpl.read_label, [ZPL_LABEL, ZPL_SHORT_LABEL], b"^FH^FD_ZZ^FS",
        _TEXT_TOKENS, _ZPL_VALUE,
    ),
    Target(
        "zpl.decode_code128_data", _text(zpl.decode_code128_data), ZPL_CODE128, b">;1",
        _TEXT_TOKENS, rb">",
    ),
    # MT-SICS
    Target(
        "mtsics.parse_response", mtsics.parse_response, MTSICS_SEEDS, b"S S", _TEXT_TOKENS, rb" ",
    ),
    Target(
        "mtsics.ResponseDecoder.feed", _stream(lambda: mtsics.ResponseDecoder().feed),
        [b"".join(MTSICS_SEEDS)], b"S X\r\n", _TEXT_TOKENS, rb"[ \n]",
    ),
    Target(
        "mtsics.LineFramer.feed", _stream(lambda: mtsics.LineFramer().feed),
        [b"".join(MTSICS_SEEDS)], b"S" * 300, _TEXT_TOKENS, rb"\n",
    ),
    Target(
        "mtsics.parse_command", _refusing(mtsics.parse_command, mtsics.BadCommand),
        MTSICS_COMMANDS, b"\xff", _TEXT_TOKENS,
    ),
    # GS1
    Target(
        "gs1.parse_scan",
        _text(lambda text: gs1.parse_scan(text, reference_year=2026)), GS1_SEEDS, b"]C1019",
        _TEXT_TOKENS, _GS1_VALUE,
    ),
    Target(
        "gs1.LineDecoder.feed", _stream(lambda: gs1.LineDecoder(reference_year=2026).feed),
        [b"\r\n".join(GS1_SEEDS) + b"\n"], b"]C1019\n", _TEXT_TOKENS, _GS1_VALUE + rb"|\n",
    ),
    Target("gs1.check_digit", _text(gs1.check_digit), [b"0950600013435"], b"12a", _TEXT_TOKENS),
    # EPC
    Target(
        "epc.decode_epc[bytes]", epc.decode_epc, [EPC, bytes.fromhex("31140AA8C8000069E2000000")],
        bytes.fromhex("307C257BF7194E4000001A85"),
    ),
    Target(
        "epc.decode_epc[hex]", _text(epc.decode_epc),
        [EPC.hex().encode(), b"0x31140AA8C8000069E2000000"], b"0x3074", _TEXT_TOKENS,
    ),
    Target(
        "epc.Sgtin96.from_gtin",
        _text(lambda gtin: epc.Sgtin96.from_gtin(gtin, 6789, company_prefix_length=7)),
        [b"80614141123458", b"09506000134352"], b"80614141123459", _TEXT_TOKENS,
    ),
    Target(
        "epc.Sscc96.from_sscc",
        _text(lambda sscc: epc.Sscc96.from_sscc(sscc, company_prefix_length=7)),
        [b"106141411234567897", b"376123450000000016"], b"10614141123456789", _TEXT_TOKENS,
    ),
    # BLE GATT
    Target(
        "ble_gatt.decode_weight_measurement", ble_gatt.decode_weight_measurement,
        BLE_WEIGHT_SEEDS, b"\x02\x10\x27", _BINARY_TOKENS,
    ),
    Target(
        "ble_gatt.decode_weight_scale_feature", ble_gatt.decode_weight_scale_feature,
        BLE_FEATURE_SEEDS, b"\x00", _BINARY_TOKENS,
    ),
    Target(
        "ble_gatt.ScanFramer.feed", _stream(lambda: ble_gatt.ScanFramer().feed),
        [b"\r\n".join(GS1_SEEDS) + b"\r"], b"\xff\n", _TEXT_TOKENS, rb"\n",
    ),
]  # fmt: skip
IDS = [target.name for target in TARGETS]


# --------------------------------------------------------------------- tests


@pytest.mark.parametrize("target", TARGETS, ids=IDS)
def test_golden_inputs_decode_and_a_bad_one_is_refused(target: Target) -> None:
    """The seeds are valid (so mutants start from real messages) and the property can
    fail: the known-bad input is refused with a DecodeError."""
    for seed in target.seeds:
        target.decode(seed)
    with pytest.raises(DecodeError):
        target.decode(target.bad)


@pytest.mark.parametrize("target", TARGETS, ids=IDS)
def test_mutants_raise_only_decode_error(target: Target) -> None:
    leaks = fuzz(target, MUTATIONS)
    assert not leaks, "\n".join(leak.report(target) for leak in leaks)


def test_the_fuzzer_catches_a_leak() -> None:
    """A decoder that lets a foreign exception out on some mutant is reported."""

    def leaky(data: bytes) -> object:
        if b"\xff" in data:
            raise KeyError("leaked")
        return vda5050.decode(vda5050.Topic.CONNECTION, data)

    target = Target("leaky", leaky, [VDA5050_SEEDS[vda5050.Topic.CONNECTION]], b"")
    leaks = fuzz(target, 300)
    assert leaks
    assert isinstance(leaks[0].exception, KeyError)
    assert b"\xff" in leaks[0].data
    assert "leaky raised KeyError" in leaks[0].report(target)
