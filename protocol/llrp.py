"""LLRP 1.0.1 (EPCglobal Low Level Reader Protocol), the subset a warehouse portal needs.

Sans-I/O: :func:`encode` turns a message into bytes, :class:`LlrpDecoder` turns a byte
stream into messages, and :class:`LlrpClient` is the client's state machine (events in,
actions and bytes out). Nothing here touches a socket or a clock.

Wire form. A message is a 10-byte header — 3 reserved bits, a 3-bit version (1 for
1.0.1), a 10-bit message type, a 32-bit length counting the header, a 32-bit message id
— then its body. Bodies hold fields and parameters: a TLV parameter has 6 reserved bits,
a 10-bit type and a 16-bit length counting its 4-byte header; a TV parameter is one byte
(1, then a 7-bit type) followed by a value whose length its type fixes.

The subset: GET_READER_CAPABILITIES (+ response with GeneralDeviceCapabilities),
ADD/DELETE/START/STOP/ENABLE/DISABLE_ROSPEC (+ responses with LLRPStatus), RO_ACCESS_REPORT
with TagReportData, KEEPALIVE, KEEPALIVE_ACK, READER_EVENT_NOTIFICATION (ConnectionAttempt
event), CLOSE_CONNECTION (+ response) and ERROR_MESSAGE. Any other message type decodes as
:class:`UnsupportedMessage`; parameters outside the subset are skipped when decoding.

The ROSpec is the one shape a portal uses (:class:`RoSpec`): a start trigger (null or
immediate), a stop trigger (null or duration), one AISpec over some antennas with a null
or duration stop trigger, one EPCglobal Class 1 Gen 2 InventoryParameterSpec, and an
ROReportSpec whose TagReportContentSelector says which fields each tag report carries.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from typing import Final, TypeVar

import msgspec

from warelink.protocol.errors import DecodeError

VERSION: Final = 1
HEADER_SIZE: Final = 10
MAX_MESSAGE_SIZE: Final = 1 << 20
"""Longest message accepted (1 MiB); a longer declared length is taken as a lost frame."""

_HEADER: Final = struct.Struct(">HII")


class LlrpDecodeError(DecodeError):
    """Bytes that are not a valid LLRP message of the supported subset."""


class MessageType(enum.IntEnum):
    GET_READER_CAPABILITIES = 1
    CLOSE_CONNECTION_RESPONSE = 4
    GET_READER_CAPABILITIES_RESPONSE = 11
    CLOSE_CONNECTION = 14
    ADD_ROSPEC = 20
    DELETE_ROSPEC = 21
    START_ROSPEC = 22
    STOP_ROSPEC = 23
    ENABLE_ROSPEC = 24
    DISABLE_ROSPEC = 25
    ADD_ROSPEC_RESPONSE = 30
    DELETE_ROSPEC_RESPONSE = 31
    START_ROSPEC_RESPONSE = 32
    STOP_ROSPEC_RESPONSE = 33
    ENABLE_ROSPEC_RESPONSE = 34
    DISABLE_ROSPEC_RESPONSE = 35
    RO_ACCESS_REPORT = 61
    KEEPALIVE = 62
    READER_EVENT_NOTIFICATION = 63
    KEEPALIVE_ACK = 72
    ERROR_MESSAGE = 100


class ParamType(enum.IntEnum):
    """TLV parameter types of the subset."""

    UTC_TIMESTAMP = 128
    UPTIME = 129
    GENERAL_DEVICE_CAPABILITIES = 137
    RO_SPEC = 177
    RO_BOUNDARY_SPEC = 178
    RO_SPEC_START_TRIGGER = 179
    RO_SPEC_STOP_TRIGGER = 182
    AI_SPEC = 183
    AI_SPEC_STOP_TRIGGER = 184
    INVENTORY_PARAMETER_SPEC = 186
    RO_REPORT_SPEC = 237
    TAG_REPORT_CONTENT_SELECTOR = 238
    TAG_REPORT_DATA = 240
    EPC_DATA = 241
    READER_EVENT_NOTIFICATION_DATA = 246
    CONNECTION_ATTEMPT_EVENT = 256
    LLRP_STATUS = 287
    FIELD_ERROR = 288
    PARAMETER_ERROR = 289


class TvType(enum.IntEnum):
    """TV parameter types (LLRP 1.0.1 §16.2.7.3 ff.) and, in ``_TV_LENGTHS``, their sizes."""

    ANTENNA_ID = 1
    FIRST_SEEN_UTC = 2
    FIRST_SEEN_UPTIME = 3
    LAST_SEEN_UTC = 4
    LAST_SEEN_UPTIME = 5
    PEAK_RSSI = 6
    CHANNEL_INDEX = 7
    TAG_SEEN_COUNT = 8
    RO_SPEC_ID = 9
    INVENTORY_PARAMETER_SPEC_ID = 10
    C1G2_CRC = 11
    C1G2_PC = 12
    EPC_96 = 13
    SPEC_INDEX = 14
    CLIENT_REQUEST_OP_SPEC_RESULT = 15
    ACCESS_SPEC_ID = 16
    OP_SPEC_ID = 17
    C1G2_SINGULATION_DETAILS = 18
    C1G2_XPC_W1 = 19
    C1G2_XPC_W2 = 20


_TV_LENGTHS: Final[dict[int, int]] = {
    TvType.ANTENNA_ID: 2,
    TvType.FIRST_SEEN_UTC: 8,
    TvType.FIRST_SEEN_UPTIME: 8,
    TvType.LAST_SEEN_UTC: 8,
    TvType.LAST_SEEN_UPTIME: 8,
    TvType.PEAK_RSSI: 1,
    TvType.CHANNEL_INDEX: 2,
    TvType.TAG_SEEN_COUNT: 2,
    TvType.RO_SPEC_ID: 4,
    TvType.INVENTORY_PARAMETER_SPEC_ID: 2,
    TvType.C1G2_CRC: 2,
    TvType.C1G2_PC: 2,
    TvType.EPC_96: 12,
    TvType.SPEC_INDEX: 2,
    TvType.CLIENT_REQUEST_OP_SPEC_RESULT: 2,
    TvType.ACCESS_SPEC_ID: 4,
    TvType.OP_SPEC_ID: 2,
    TvType.C1G2_SINGULATION_DETAILS: 4,
    TvType.C1G2_XPC_W1: 2,
    TvType.C1G2_XPC_W2: 2,
}


class StatusCode(enum.IntEnum):
    """LLRPStatus codes (§16.2.8.1); the decoder keeps codes outside this list as ints."""

    M_SUCCESS = 0
    M_PARAMETER_ERROR = 100
    M_FIELD_ERROR = 101
    M_UNEXPECTED_PARAMETER = 102
    M_MISSING_PARAMETER = 103
    M_DUPLICATE_PARAMETER = 104
    M_OVERFLOW_PARAMETER = 105
    M_OVERFLOW_FIELD = 106
    M_UNKNOWN_PARAMETER = 107
    M_UNKNOWN_FIELD = 108
    M_UNSUPPORTED_MESSAGE = 109
    M_UNSUPPORTED_VERSION = 110
    M_UNSUPPORTED_PARAMETER = 111
    P_PARAMETER_ERROR = 200
    P_FIELD_ERROR = 201
    P_UNEXPECTED_PARAMETER = 202
    P_MISSING_PARAMETER = 203
    P_DUPLICATE_PARAMETER = 204
    P_OVERFLOW_PARAMETER = 205
    P_OVERFLOW_FIELD = 206
    P_UNKNOWN_PARAMETER = 207
    P_UNKNOWN_FIELD = 208
    P_UNSUPPORTED_PARAMETER = 209
    A_INVALID = 300
    A_OUT_OF_RANGE = 301
    R_DEVICE_ERROR = 401


class ConnectionAttemptStatus(enum.IntEnum):
    SUCCESS = 0
    FAILED_READER_INITIATED_EXISTS = 1
    FAILED_CLIENT_INITIATED_EXISTS = 2
    FAILED_OTHER = 3
    ANOTHER_CONNECTION_ATTEMPTED = 4


class RoSpecState(enum.IntEnum):
    DISABLED = 0
    INACTIVE = 1
    ACTIVE = 2


class StartTrigger(enum.IntEnum):
    NULL = 0  # started by START_ROSPEC
    IMMEDIATE = 1  # started as soon as enabled


class AirProtocol(enum.IntEnum):
    EPC_GLOBAL_C1G2 = 1


class ReportTrigger(enum.IntEnum):
    NONE = 0
    N_TAGS_OR_END_OF_AISPEC = 1
    N_TAGS_OR_END_OF_ROSPEC = 2


class TagReportContent(enum.IntFlag):
    """TagReportContentSelector's enable bits, in wire order from the most significant."""

    ROSPEC_ID = 1 << 15
    SPEC_INDEX = 1 << 14
    INVENTORY_PARAMETER_SPEC_ID = 1 << 13
    ANTENNA_ID = 1 << 12
    CHANNEL_INDEX = 1 << 11
    PEAK_RSSI = 1 << 10
    FIRST_SEEN_TIMESTAMP = 1 << 9
    LAST_SEEN_TIMESTAMP = 1 << 8
    TAG_SEEN_COUNT = 1 << 7
    ACCESS_SPEC_ID = 1 << 6


PORTAL_REPORT_CONTENT: Final = (
    TagReportContent.ANTENNA_ID
    | TagReportContent.PEAK_RSSI
    | TagReportContent.FIRST_SEEN_TIMESTAMP
    | TagReportContent.LAST_SEEN_TIMESTAMP
    | TagReportContent.TAG_SEEN_COUNT
)


# ------------------------------------------------------------------ parameters


class LlrpStatus(msgspec.Struct, frozen=True):
    """LLRPStatus: a code and a text. Field/parameter error details are not kept."""

    code: int = StatusCode.M_SUCCESS
    description: str = ""

    @property
    def ok(self) -> bool:
        return self.code == StatusCode.M_SUCCESS


SUCCESS: Final = LlrpStatus()


class GeneralDeviceCapabilities(msgspec.Struct, frozen=True, kw_only=True):
    """The fixed fields of GeneralDeviceCapabilities; its sub-parameters are not kept."""

    max_antennas: int
    can_set_antenna_properties: bool = False
    has_utc_clock: bool = True
    manufacturer: int = 0  # IANA private enterprise number
    model: int = 0
    firmware: str = ""


class RoSpec(msgspec.Struct, frozen=True, kw_only=True):
    """The ROSpec shape of the subset (see the module docstring).

    ``rospec_duration_ms``/``aispec_duration_ms``: ``None`` is a null stop trigger.
    ``antenna_ids`` ``(0,)`` means all antennas.
    """

    rospec_id: int
    priority: int = 0
    state: RoSpecState = RoSpecState.DISABLED
    start_trigger: StartTrigger = StartTrigger.NULL
    rospec_duration_ms: int | None = None
    antenna_ids: tuple[int, ...] = (0,)
    aispec_duration_ms: int | None = None
    inventory_parameter_spec_id: int = 1
    protocol: AirProtocol = AirProtocol.EPC_GLOBAL_C1G2
    report_trigger: ReportTrigger = ReportTrigger.N_TAGS_OR_END_OF_AISPEC
    report_n: int = 1
    report_content: TagReportContent = PORTAL_REPORT_CONTENT


class TagReport(msgspec.Struct, frozen=True, kw_only=True):
    """One TagReportData. ``epc`` is the EPC's bytes; 96-bit EPCs travel as the EPC-96 TV
    parameter, others as EPCData. Timestamps are microseconds since the Unix epoch."""

    epc: bytes
    antenna_id: int | None = None
    peak_rssi: int | None = None  # dBm
    first_seen_utc_us: int | None = None
    last_seen_utc_us: int | None = None
    seen_count: int | None = None
    rospec_id: int | None = None

    @property
    def epc_hex(self) -> str:
        return self.epc.hex().upper()


# -------------------------------------------------------------------- messages


class GetReaderCapabilities(msgspec.Struct, frozen=True, kw_only=True):
    requested: int = 0  # 0 all, 1 general device, 2 LLRP, 3 regulatory, 4 air protocol
    message_id: int = 0


class GetReaderCapabilitiesResponse(msgspec.Struct, frozen=True, kw_only=True):
    status: LlrpStatus = SUCCESS
    general: GeneralDeviceCapabilities | None = None
    message_id: int = 0


class AddRoSpec(msgspec.Struct, frozen=True, kw_only=True):
    rospec: RoSpec
    message_id: int = 0


class DeleteRoSpec(msgspec.Struct, frozen=True, kw_only=True):
    rospec_id: int = 0  # 0: all ROSpecs
    message_id: int = 0


class StartRoSpec(msgspec.Struct, frozen=True, kw_only=True):
    rospec_id: int
    message_id: int = 0


class StopRoSpec(msgspec.Struct, frozen=True, kw_only=True):
    rospec_id: int
    message_id: int = 0


class EnableRoSpec(msgspec.Struct, frozen=True, kw_only=True):
    rospec_id: int = 0  # 0: all ROSpecs
    message_id: int = 0


class DisableRoSpec(msgspec.Struct, frozen=True, kw_only=True):
    rospec_id: int = 0
    message_id: int = 0


class AddRoSpecResponse(msgspec.Struct, frozen=True, kw_only=True):
    status: LlrpStatus = SUCCESS
    message_id: int = 0


class DeleteRoSpecResponse(msgspec.Struct, frozen=True, kw_only=True):
    status: LlrpStatus = SUCCESS
    message_id: int = 0


class StartRoSpecResponse(msgspec.Struct, frozen=True, kw_only=True):
    status: LlrpStatus = SUCCESS
    message_id: int = 0


class StopRoSpecResponse(msgspec.Struct, frozen=True, kw_only=True):
    status: LlrpStatus = SUCCESS
    message_id: int = 0


class EnableRoSpecResponse(msgspec.Struct, frozen=True, kw_only=True):
    status: LlrpStatus = SUCCESS
    message_id: int = 0


class DisableRoSpecResponse(msgspec.Struct, frozen=True, kw_only=True):
    status: LlrpStatus = SUCCESS
    message_id: int = 0


class RoAccessReport(msgspec.Struct, frozen=True, kw_only=True):
    tags: tuple[TagReport, ...] = ()
    message_id: int = 0


class Keepalive(msgspec.Struct, frozen=True, kw_only=True):
    message_id: int = 0


class KeepaliveAck(msgspec.Struct, frozen=True, kw_only=True):
    """Carries the message id of the KEEPALIVE it answers."""

    message_id: int = 0


class ReaderEventNotification(msgspec.Struct, frozen=True, kw_only=True):
    """ReaderEventNotificationData: its UTC timestamp and, if present, the
    ConnectionAttemptEvent's status; other events are not kept."""

    timestamp_us: int = 0
    connection_attempt: ConnectionAttemptStatus | None = None
    message_id: int = 0


class CloseConnection(msgspec.Struct, frozen=True, kw_only=True):
    message_id: int = 0


class CloseConnectionResponse(msgspec.Struct, frozen=True, kw_only=True):
    status: LlrpStatus = SUCCESS
    message_id: int = 0


class ErrorMessage(msgspec.Struct, frozen=True, kw_only=True):
    status: LlrpStatus
    message_id: int = 0


class UnsupportedMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A well-framed message of a type outside the subset, kept as its body."""

    message_type: int
    body: bytes = b""
    message_id: int = 0


class Malformed(msgspec.Struct, frozen=True):
    """Bytes that did not decode: at most the first 64 of them, and why."""

    data: bytes
    reason: str


RoSpecResponse = (
    AddRoSpecResponse
    | DeleteRoSpecResponse
    | StartRoSpecResponse
    | StopRoSpecResponse
    | EnableRoSpecResponse
    | DisableRoSpecResponse
)

Message = (
    GetReaderCapabilities
    | GetReaderCapabilitiesResponse
    | AddRoSpec
    | DeleteRoSpec
    | StartRoSpec
    | StopRoSpec
    | EnableRoSpec
    | DisableRoSpec
    | RoSpecResponse
    | RoAccessReport
    | Keepalive
    | KeepaliveAck
    | ReaderEventNotification
    | CloseConnection
    | CloseConnectionResponse
    | ErrorMessage
    | UnsupportedMessage
)

_ROSPEC_ID_MESSAGES: Final[dict[type, MessageType]] = {
    DeleteRoSpec: MessageType.DELETE_ROSPEC,
    StartRoSpec: MessageType.START_ROSPEC,
    StopRoSpec: MessageType.STOP_ROSPEC,
    EnableRoSpec: MessageType.ENABLE_ROSPEC,
    DisableRoSpec: MessageType.DISABLE_ROSPEC,
}
_STATUS_MESSAGES: Final[dict[type, MessageType]] = {
    AddRoSpecResponse: MessageType.ADD_ROSPEC_RESPONSE,
    DeleteRoSpecResponse: MessageType.DELETE_ROSPEC_RESPONSE,
    StartRoSpecResponse: MessageType.START_ROSPEC_RESPONSE,
    StopRoSpecResponse: MessageType.STOP_ROSPEC_RESPONSE,
    EnableRoSpecResponse: MessageType.ENABLE_ROSPEC_RESPONSE,
    DisableRoSpecResponse: MessageType.DISABLE_ROSPEC_RESPONSE,
    CloseConnectionResponse: MessageType.CLOSE_CONNECTION_RESPONSE,
    ErrorMessage: MessageType.ERROR_MESSAGE,
}
_EMPTY_MESSAGES: Final[dict[type, MessageType]] = {
    Keepalive: MessageType.KEEPALIVE,
    KeepaliveAck: MessageType.KEEPALIVE_ACK,
    CloseConnection: MessageType.CLOSE_CONNECTION,
}


# -------------------------------------------------------------------- encoding


def _tlv(param_type: int, body: bytes) -> bytes:
    length = 4 + len(body)
    if length > 0xFFFF:
        raise ValueError(f"parameter {param_type} too long: {length} bytes")
    return struct.pack(">HH", param_type & 0x3FF, length) + body


def _tv(tv_type: TvType, value: bytes) -> bytes:
    assert len(value) == _TV_LENGTHS[tv_type]
    return bytes([0x80 | tv_type]) + value


def _utf8v(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">H", len(data)) + data


def _status(status: LlrpStatus) -> bytes:
    return _tlv(ParamType.LLRP_STATUS, struct.pack(">H", status.code) + _utf8v(status.description))


def _rospec(spec: RoSpec) -> bytes:
    start = _tlv(ParamType.RO_SPEC_START_TRIGGER, bytes([spec.start_trigger]))
    if spec.rospec_duration_ms is None:
        stop_body = struct.pack(">BI", 0, 0)
    else:
        stop_body = struct.pack(">BI", 1, spec.rospec_duration_ms)
    boundary = _tlv(
        ParamType.RO_BOUNDARY_SPEC, start + _tlv(ParamType.RO_SPEC_STOP_TRIGGER, stop_body)
    )
    if spec.aispec_duration_ms is None:
        ai_stop = _tlv(ParamType.AI_SPEC_STOP_TRIGGER, struct.pack(">BI", 0, 0))
    else:
        ai_stop = _tlv(
            ParamType.AI_SPEC_STOP_TRIGGER, struct.pack(">BI", 1, spec.aispec_duration_ms)
        )
    inventory = _tlv(
        ParamType.INVENTORY_PARAMETER_SPEC,
        struct.pack(">HB", spec.inventory_parameter_spec_id, spec.protocol),
    )
    antennas = struct.pack(f">H{len(spec.antenna_ids)}H", len(spec.antenna_ids), *spec.antenna_ids)
    aispec = _tlv(ParamType.AI_SPEC, antennas + ai_stop + inventory)
    selector = _tlv(ParamType.TAG_REPORT_CONTENT_SELECTOR, struct.pack(">H", spec.report_content))
    report = _tlv(
        ParamType.RO_REPORT_SPEC, struct.pack(">BH", spec.report_trigger, spec.report_n) + selector
    )
    head = struct.pack(">IBB", spec.rospec_id, spec.priority, spec.state)
    return _tlv(ParamType.RO_SPEC, head + boundary + aispec + report)


def _tag_report(tag: TagReport) -> bytes:
    if len(tag.epc) == 12:
        out = _tv(TvType.EPC_96, tag.epc)
    else:
        out = _tlv(ParamType.EPC_DATA, struct.pack(">H", 8 * len(tag.epc)) + tag.epc)
    if tag.rospec_id is not None:
        out += _tv(TvType.RO_SPEC_ID, struct.pack(">I", tag.rospec_id))
    if tag.antenna_id is not None:
        out += _tv(TvType.ANTENNA_ID, struct.pack(">H", tag.antenna_id))
    if tag.peak_rssi is not None:
        out += _tv(TvType.PEAK_RSSI, struct.pack(">b", tag.peak_rssi))
    if tag.first_seen_utc_us is not None:
        out += _tv(TvType.FIRST_SEEN_UTC, struct.pack(">Q", tag.first_seen_utc_us))
    if tag.last_seen_utc_us is not None:
        out += _tv(TvType.LAST_SEEN_UTC, struct.pack(">Q", tag.last_seen_utc_us))
    if tag.seen_count is not None:
        out += _tv(TvType.TAG_SEEN_COUNT, struct.pack(">H", tag.seen_count))
    return _tlv(ParamType.TAG_REPORT_DATA, out)


def _general(caps: GeneralDeviceCapabilities) -> bytes:
    flags = (0x8000 if caps.can_set_antenna_properties else 0) | (
        0x4000 if caps.has_utc_clock else 0
    )
    body = struct.pack(">HHII", caps.max_antennas, flags, caps.manufacturer, caps.model)
    return _tlv(ParamType.GENERAL_DEVICE_CAPABILITIES, body + _utf8v(caps.firmware))


def _body(message: Message) -> tuple[int, bytes]:
    kind = type(message)
    if kind in _EMPTY_MESSAGES:
        return _EMPTY_MESSAGES[kind], b""
    if isinstance(message, DeleteRoSpec | StartRoSpec | StopRoSpec | EnableRoSpec | DisableRoSpec):
        return _ROSPEC_ID_MESSAGES[kind], struct.pack(">I", message.rospec_id)
    if isinstance(
        message,
        AddRoSpecResponse
        | DeleteRoSpecResponse
        | StartRoSpecResponse
        | StopRoSpecResponse
        | EnableRoSpecResponse
        | DisableRoSpecResponse
        | CloseConnectionResponse
        | ErrorMessage,
    ):
        return _STATUS_MESSAGES[kind], _status(message.status)
    if isinstance(message, GetReaderCapabilities):
        return MessageType.GET_READER_CAPABILITIES, bytes([message.requested])
    if isinstance(message, GetReaderCapabilitiesResponse):
        body = _status(message.status)
        if message.general is not None:
            body += _general(message.general)
        return MessageType.GET_READER_CAPABILITIES_RESPONSE, body
    if isinstance(message, AddRoSpec):
        return MessageType.ADD_ROSPEC, _rospec(message.rospec)
    if isinstance(message, RoAccessReport):
        return MessageType.RO_ACCESS_REPORT, b"".join(_tag_report(t) for t in message.tags)
    if isinstance(message, ReaderEventNotification):
        data = _tlv(ParamType.UTC_TIMESTAMP, struct.pack(">Q", message.timestamp_us))
        if message.connection_attempt is not None:
            data += _tlv(
                ParamType.CONNECTION_ATTEMPT_EVENT, struct.pack(">H", message.connection_attempt)
            )
        return MessageType.READER_EVENT_NOTIFICATION, _tlv(
            ParamType.READER_EVENT_NOTIFICATION_DATA, data
        )
    if isinstance(message, UnsupportedMessage):
        return message.message_type, message.body
    raise TypeError(f"not an LLRP message: {message!r}")  # pragma: no cover


def encode(message: Message) -> bytes:
    """The wire bytes of ``message`` (version 1, its ``message_id``).

    Raises ``ValueError`` when a field does not fit its wire width.
    """
    try:
        message_type, body = _body(message)
        length = HEADER_SIZE + len(body)
        return _HEADER.pack(VERSION << 10 | message_type, length, message.message_id) + body
    except struct.error as exc:
        raise ValueError(f"{type(message).__name__}: {exc}") from None


# -------------------------------------------------------------------- decoding


class _Param(msgspec.Struct, frozen=True):
    type: int
    body: bytes
    tv: bool = False


def _params(data: bytes) -> Iterator[_Param]:
    """Split a run of parameters; raises ``LlrpDecodeError`` on a bad one."""
    pos = 0
    while pos < len(data):
        first = data[pos]
        if first & 0x80:
            tv_type = first & 0x7F
            size = _TV_LENGTHS.get(tv_type)
            if size is None:
                raise LlrpDecodeError(f"unknown TV parameter type {tv_type}")
            if pos + 1 + size > len(data):
                raise LlrpDecodeError(f"TV parameter {tv_type} truncated")
            yield _Param(tv_type, data[pos + 1 : pos + 1 + size], tv=True)
            pos += 1 + size
            continue
        if pos + 4 > len(data):
            raise LlrpDecodeError("truncated parameter header")
        raw_type, length = struct.unpack_from(">HH", data, pos)
        if length < 4 or pos + length > len(data):
            raise LlrpDecodeError(f"parameter {raw_type & 0x3FF}: bad length {length}")
        yield _Param(raw_type & 0x3FF, data[pos + 4 : pos + length])
        pos += length


def _fixed(body: bytes, fmt: str, what: str) -> tuple[tuple[int, ...], bytes]:
    size = struct.calcsize(fmt)
    if len(body) < size:
        raise LlrpDecodeError(f"{what}: {len(body)} bytes, at least {size} expected")
    return struct.unpack_from(fmt, body), body[size:]


def _utf8(body: bytes, what: str) -> tuple[str, bytes]:
    (length,), rest = _fixed(body, ">H", what)
    if len(rest) < length:
        raise LlrpDecodeError(f"{what}: string truncated")
    try:
        return rest[:length].decode(), rest[length:]
    except UnicodeDecodeError:
        raise LlrpDecodeError(f"{what}: not UTF-8") from None


def _tlvs(body: bytes, want: int) -> list[bytes]:
    return [p.body for p in _params(body) if p.type == want and not p.tv]


def _one(body: bytes, want: ParamType, what: str) -> bytes:
    found = _tlvs(body, want)
    if len(found) != 1:
        raise LlrpDecodeError(f"{what}: {len(found)} {want.name} parameters, 1 expected")
    return found[0]


def _decode_status(body: bytes) -> tuple[LlrpStatus, bytes]:
    params = list(_params(body))
    if not params or params[0].type != ParamType.LLRP_STATUS or params[0].tv:
        raise LlrpDecodeError("LLRPStatus expected first")
    (code,), rest = _fixed(params[0].body, ">H", "LLRPStatus")
    description, _ = _utf8(rest, "LLRPStatus")
    used = 4 + len(params[0].body)
    return LlrpStatus(code, description), body[used:]


_E_co = TypeVar("_E_co", bound=enum.IntEnum)


def _enum(kind: type[_E_co], value: int, what: str) -> _E_co:
    try:
        return kind(value)
    except ValueError:
        raise LlrpDecodeError(f"{what}: unsupported value {value}") from None


def _decode_stop(body: bytes, what: str) -> int | None:
    (kind, duration), _ = _fixed(body, ">BI", what)
    if kind == 0:
        return None
    if kind == 1:
        return duration
    raise LlrpDecodeError(f"{what}: unsupported trigger type {kind}")


def _decode_rospec(body: bytes) -> RoSpec:
    (rospec_id, priority, state), rest = _fixed(body, ">IBB", "ROSpec")
    boundary = _one(rest, ParamType.RO_BOUNDARY_SPEC, "ROSpec")
    start_body = _one(boundary, ParamType.RO_SPEC_START_TRIGGER, "ROBoundarySpec")
    (start,), _ = _fixed(start_body, ">B", "ROSpecStartTrigger")
    stop = _decode_stop(
        _one(boundary, ParamType.RO_SPEC_STOP_TRIGGER, "ROBoundarySpec"), "ROSpecStopTrigger"
    )
    aispec = _one(rest, ParamType.AI_SPEC, "ROSpec")
    (count,), ai_rest = _fixed(aispec, ">H", "AISpec")
    antennas, ai_rest = _fixed(ai_rest, f">{count}H", "AISpec antennas")
    ai_stop = _decode_stop(
        _one(ai_rest, ParamType.AI_SPEC_STOP_TRIGGER, "AISpec"), "AISpecStopTrigger"
    )
    inventory = _one(ai_rest, ParamType.INVENTORY_PARAMETER_SPEC, "AISpec")
    (inventory_id, protocol), _ = _fixed(inventory, ">HB", "InventoryParameterSpec")
    report_specs = _tlvs(rest, ParamType.RO_REPORT_SPEC)
    trigger, report_n, content = ReportTrigger.NONE, 0, TagReportContent(0)
    if report_specs:
        (trigger_value, report_n), report_rest = _fixed(report_specs[0], ">BH", "ROReportSpec")
        trigger = _enum(ReportTrigger, trigger_value, "ROReportTrigger")
        selector = _one(report_rest, ParamType.TAG_REPORT_CONTENT_SELECTOR, "ROReportSpec")
        (bits,), _ = _fixed(selector, ">H", "TagReportContentSelector")
        content = TagReportContent(bits & 0xFFC0)
    return RoSpec(
        rospec_id=rospec_id,
        priority=priority,
        state=_enum(RoSpecState, state, "ROSpec state"),
        start_trigger=_enum(StartTrigger, start, "ROSpecStartTrigger"),
        rospec_duration_ms=stop,
        antenna_ids=tuple(antennas),
        aispec_duration_ms=ai_stop,
        inventory_parameter_spec_id=inventory_id,
        protocol=_enum(AirProtocol, protocol, "InventoryParameterSpec protocol"),
        report_trigger=trigger,
        report_n=report_n,
        report_content=content,
    )


def _decode_tag(body: bytes) -> TagReport:
    epc: bytes | None = None
    fields: dict[str, int] = {}
    for param in _params(body):
        if not param.tv:
            if param.type == ParamType.EPC_DATA:
                (bits,), data = _fixed(param.body, ">H", "EPCData")
                if len(data) != (bits + 7) // 8:
                    raise LlrpDecodeError(f"EPCData: {bits} bits in {len(data)} bytes")
                epc = data
            continue
        value = param.body
        match param.type:
            case TvType.EPC_96:
                epc = value
            case TvType.ANTENNA_ID:
                fields["antenna_id"] = struct.unpack(">H", value)[0]
            case TvType.PEAK_RSSI:
                fields["peak_rssi"] = struct.unpack(">b", value)[0]
            case TvType.FIRST_SEEN_UTC:
                fields["first_seen_utc_us"] = struct.unpack(">Q", value)[0]
            case TvType.LAST_SEEN_UTC:
                fields["last_seen_utc_us"] = struct.unpack(">Q", value)[0]
            case TvType.TAG_SEEN_COUNT:
                fields["seen_count"] = struct.unpack(">H", value)[0]
            case TvType.RO_SPEC_ID:
                fields["rospec_id"] = struct.unpack(">I", value)[0]
    if epc is None:
        raise LlrpDecodeError("TagReportData without an EPC")
    return TagReport(epc=epc, **fields)


def _decode_event(body: bytes) -> ReaderEventNotification:
    data = _one(body, ParamType.READER_EVENT_NOTIFICATION_DATA, "READER_EVENT_NOTIFICATION")
    timestamp = 0
    attempt: ConnectionAttemptStatus | None = None
    for param in _params(data):
        if param.tv:
            continue
        if param.type in (ParamType.UTC_TIMESTAMP, ParamType.UPTIME):
            (timestamp,), _ = _fixed(param.body, ">Q", "timestamp")
        elif param.type == ParamType.CONNECTION_ATTEMPT_EVENT:
            (status,), _ = _fixed(param.body, ">H", "ConnectionAttemptEvent")
            attempt = _enum(ConnectionAttemptStatus, status, "ConnectionAttemptEvent")
    return ReaderEventNotification(timestamp_us=timestamp, connection_attempt=attempt)


def _decode_general(body: bytes) -> GeneralDeviceCapabilities:
    (antennas, flags, manufacturer, model), rest = _fixed(
        body, ">HHII", "GeneralDeviceCapabilities"
    )
    firmware, _ = _utf8(rest, "GeneralDeviceCapabilities")
    return GeneralDeviceCapabilities(
        max_antennas=antennas,
        can_set_antenna_properties=bool(flags & 0x8000),
        has_utc_clock=bool(flags & 0x4000),
        manufacturer=manufacturer,
        model=model,
        firmware=firmware,
    )


_BY_TYPE: Final[dict[int, type]] = {
    **{t: k for k, t in _ROSPEC_ID_MESSAGES.items()},
    **{t: k for k, t in _STATUS_MESSAGES.items()},
    **{t: k for k, t in _EMPTY_MESSAGES.items()},
}


def _decode_body(message_type: int, message_id: int, body: bytes) -> Message:
    kind = _BY_TYPE.get(message_type)
    if kind in _EMPTY_MESSAGES:
        if body:
            raise LlrpDecodeError(f"message type {message_type} has a body")
        message: Message = kind(message_id=message_id)
        return message
    if kind in _ROSPEC_ID_MESSAGES:
        (rospec_id,), rest = _fixed(body, ">I", "ROSpecID")
        if rest:
            raise LlrpDecodeError("bytes after the ROSpecID")
        message = kind(rospec_id=rospec_id, message_id=message_id)
        return message
    if kind in _STATUS_MESSAGES:
        status, _ = _decode_status(body)
        message = kind(status=status, message_id=message_id)
        return message
    match message_type:
        case MessageType.GET_READER_CAPABILITIES:
            (requested,), _ = _fixed(body, ">B", "RequestedData")
            return GetReaderCapabilities(requested=requested, message_id=message_id)
        case MessageType.GET_READER_CAPABILITIES_RESPONSE:
            status, rest = _decode_status(body)
            found = _tlvs(rest, ParamType.GENERAL_DEVICE_CAPABILITIES)
            general = _decode_general(found[0]) if found else None
            return GetReaderCapabilitiesResponse(
                status=status, general=general, message_id=message_id
            )
        case MessageType.ADD_ROSPEC:
            rospec = _decode_rospec(_one(body, ParamType.RO_SPEC, "ADD_ROSPEC"))
            return AddRoSpec(rospec=rospec, message_id=message_id)
        case MessageType.RO_ACCESS_REPORT:
            tags = tuple(_decode_tag(b) for b in _tlvs(body, ParamType.TAG_REPORT_DATA))
            return RoAccessReport(tags=tags, message_id=message_id)
        case MessageType.READER_EVENT_NOTIFICATION:
            event = _decode_event(body)
            return ReaderEventNotification(
                timestamp_us=event.timestamp_us,
                connection_attempt=event.connection_attempt,
                message_id=message_id,
            )
    return UnsupportedMessage(message_type=message_type, body=body, message_id=message_id)


def decode_message(data: bytes) -> Message:
    """Decode exactly one whole message. Raises ``LlrpDecodeError`` and nothing else."""
    if len(data) < HEADER_SIZE:
        raise LlrpDecodeError(f"{len(data)} bytes, a header is {HEADER_SIZE}")
    first, length, message_id = _HEADER.unpack_from(data)
    if length != len(data):
        raise LlrpDecodeError(f"length field {length}, {len(data)} bytes given")
    version = first >> 10 & 0x7
    if first >> 13 or version != VERSION:
        raise LlrpDecodeError(f"unsupported version {version} (reserved bits {first >> 13})")
    try:
        return _decode_body(first & 0x3FF, message_id, bytes(data[HEADER_SIZE:]))
    except (struct.error, ValueError) as exc:
        if isinstance(exc, LlrpDecodeError):
            raise
        raise LlrpDecodeError(str(exc)) from None


class LlrpDecoder:
    """Frames a TCP byte stream into messages. Never raises; any chunking of the same
    stream yields the same list.

    A message whose body does not decode becomes a ``Malformed`` and framing goes on at
    the next message, since its length was sound. A header whose length cannot be right
    (below 10 or above ``MAX_MESSAGE_SIZE``) or whose version is not 1 means the framing
    is lost: LLRP has no marker to resynchronise on, so the decoder yields one
    ``Malformed``, sets ``broken`` and discards everything after it. The connection must
    then be closed and opened again (that is how LLRP resynchronises).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.broken = False

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Message | Malformed]:
        out: list[Message | Malformed] = []
        if self.broken:
            return out
        buffer = self._buffer
        buffer += data
        start = 0
        while len(buffer) - start >= HEADER_SIZE:
            first, length, _ = _HEADER.unpack_from(buffer, start)
            if first >> 10 != VERSION or not HEADER_SIZE <= length <= MAX_MESSAGE_SIZE:
                out.append(
                    Malformed(
                        bytes(buffer[start : start + HEADER_SIZE]),
                        f"lost framing: version {first >> 10 & 7}, length {length}",
                    )
                )
                self.broken = True
                buffer.clear()
                return out
            if len(buffer) - start < length:
                break
            frame = bytes(buffer[start : start + length])
            start += length
            try:
                out.append(decode_message(frame))
            except LlrpDecodeError as exc:
                out.append(Malformed(frame[:64], str(exc)))
        del buffer[:start]
        return out


# ---------------------------------------------------------------- client machine


class ClientState(enum.Enum):
    DISCONNECTED = "disconnected"
    AWAITING_CONNECTION_EVENT = "awaiting_connection_event"
    GETTING_CAPABILITIES = "getting_capabilities"
    DELETING_ROSPECS = "deleting_rospecs"
    ADDING_ROSPEC = "adding_rospec"
    ENABLING_ROSPEC = "enabling_rospec"
    STARTING_ROSPEC = "starting_rospec"
    RUNNING = "running"
    CLOSING = "closing"
    CLOSED = "closed"
    FAILED = "failed"


class ClientEvent(enum.Enum):
    CONNECTED = "connected"
    CONNECTION_ACCEPTED = "connection_accepted"
    CONNECTION_REFUSED = "connection_refused"
    CAPABILITIES_OK = "capabilities_ok"
    DELETE_OK = "delete_ok"
    ADD_OK = "add_ok"
    ENABLE_OK = "enable_ok"
    START_OK = "start_ok"
    CLOSE_OK = "close_ok"
    ERROR_RESPONSE = "error_response"
    KEEPALIVE = "keepalive"
    REPORT = "report"
    READER_EVENT = "reader_event"
    OTHER_MESSAGE = "other_message"
    MALFORMED = "malformed"
    CLOSE_REQUESTED = "close_requested"
    DISCONNECTED = "disconnected"


class Step(enum.Enum):
    """What a transition does, beyond changing state."""

    NOTHING = "nothing"
    SEND_GET_CAPABILITIES = "send_get_capabilities"
    SEND_DELETE = "send_delete"
    SEND_ADD = "send_add"
    SEND_ENABLE = "send_enable"
    SEND_START = "send_start"
    READY = "ready"
    ACK_KEEPALIVE = "ack_keepalive"
    DELIVER_REPORT = "deliver_report"
    SEND_CLOSE = "send_close"
    FAIL = "fail"


_S = ClientState
_E = ClientEvent
_LIVE: Final = (
    _S.AWAITING_CONNECTION_EVENT,
    _S.GETTING_CAPABILITIES,
    _S.DELETING_ROSPECS,
    _S.ADDING_ROSPEC,
    _S.ENABLING_ROSPEC,
    _S.STARTING_ROSPEC,
    _S.RUNNING,
    _S.CLOSING,
)
_SETUP: Final = _LIVE[:-2]


def _transitions() -> dict[tuple[ClientState, ClientEvent], tuple[ClientState, Step]]:
    """The one table. Pairs not listed explicitly are unexpected: they go to FAILED
    (and do nothing more once FAILED or CLOSED, until DISCONNECTED)."""
    table: dict[tuple[ClientState, ClientEvent], tuple[ClientState, Step]] = {
        (_S.DISCONNECTED, _E.CONNECTED): (_S.AWAITING_CONNECTION_EVENT, Step.NOTHING),
        (_S.AWAITING_CONNECTION_EVENT, _E.CONNECTION_ACCEPTED): (
            _S.GETTING_CAPABILITIES,
            Step.SEND_GET_CAPABILITIES,
        ),
        (_S.GETTING_CAPABILITIES, _E.CAPABILITIES_OK): (_S.DELETING_ROSPECS, Step.SEND_DELETE),
        (_S.DELETING_ROSPECS, _E.DELETE_OK): (_S.ADDING_ROSPEC, Step.SEND_ADD),
        (_S.ADDING_ROSPEC, _E.ADD_OK): (_S.ENABLING_ROSPEC, Step.SEND_ENABLE),
        (_S.ENABLING_ROSPEC, _E.ENABLE_OK): (_S.STARTING_ROSPEC, Step.SEND_START),
        (_S.STARTING_ROSPEC, _E.START_OK): (_S.RUNNING, Step.READY),
        (_S.CLOSING, _E.CLOSE_OK): (_S.CLOSED, Step.NOTHING),
    }
    for state in _LIVE:
        table[state, _E.KEEPALIVE] = (state, Step.ACK_KEEPALIVE)
        table[state, _E.REPORT] = (state, Step.DELIVER_REPORT)  # reads are facts, always
        table[state, _E.READER_EVENT] = (state, Step.NOTHING)
        table[state, _E.OTHER_MESSAGE] = (state, Step.NOTHING)
        table[state, _E.DISCONNECTED] = (_S.DISCONNECTED, Step.FAIL)
    for state in _LIVE[:-1]:
        table[state, _E.CLOSE_REQUESTED] = (_S.CLOSING, Step.SEND_CLOSE)
    table[_S.CLOSING, _E.CLOSE_REQUESTED] = (_S.CLOSING, Step.NOTHING)
    for state in (_S.DISCONNECTED, _S.CLOSED, _S.FAILED):
        table[state, _E.DISCONNECTED] = (_S.DISCONNECTED, Step.NOTHING)
    for state in (_S.CLOSED, _S.FAILED):
        for event in ClientEvent:
            table.setdefault((state, event), (state, Step.NOTHING))
    for state in ClientState:
        for event in ClientEvent:
            table.setdefault((state, event), (_S.FAILED, Step.FAIL))
    return table


TRANSITIONS: Final = _transitions()


class Send(msgspec.Struct, frozen=True):
    """Write ``data`` (the encoding of ``message``) to the reader."""

    message: Message
    data: bytes


class Ready(msgspec.Struct, frozen=True):
    """The ROSpec runs: inventory reports will flow."""


class Deliver(msgspec.Struct, frozen=True):
    """Tag reads to act on."""

    report: RoAccessReport


class Capabilities(msgspec.Struct, frozen=True):
    general: GeneralDeviceCapabilities | None


class Fail(msgspec.Struct, frozen=True):
    """The session cannot go on: close the connection (then reconnect)."""

    reason: str


Action = Send | Ready | Deliver | Capabilities | Fail


class Connected(msgspec.Struct, frozen=True):
    """The TCP connection to the reader is open."""


class Disconnected(msgspec.Struct, frozen=True):
    """The TCP connection is gone."""


class CloseRequested(msgspec.Struct, frozen=True):
    """The client wants to end the session politely (CLOSE_CONNECTION)."""


Input = Connected | Disconnected | CloseRequested | Message | Malformed

_SetupResponse = (
    GetReaderCapabilitiesResponse
    | DeleteRoSpecResponse
    | AddRoSpecResponse
    | EnableRoSpecResponse
    | StartRoSpecResponse
    | CloseConnectionResponse
)
_SETUP_RESPONSES: Final[dict[type, tuple[ClientEvent, type]]] = {
    GetReaderCapabilitiesResponse: (_E.CAPABILITIES_OK, GetReaderCapabilities),
    DeleteRoSpecResponse: (_E.DELETE_OK, DeleteRoSpec),
    AddRoSpecResponse: (_E.ADD_OK, AddRoSpec),
    EnableRoSpecResponse: (_E.ENABLE_OK, EnableRoSpec),
    StartRoSpecResponse: (_E.START_OK, StartRoSpec),
    CloseConnectionResponse: (_E.CLOSE_OK, CloseConnection),
}


class LlrpClient:
    """The client side of a session, as one transition table (``TRANSITIONS``).

    Feed it ``Connected()`` when the socket opens, every decoded message or ``Malformed``,
    ``CloseRequested()`` to end politely and ``Disconnected()`` when the socket closes; it
    returns the actions to take. Flow: ConnectionAttemptEvent success → capabilities →
    DELETE_ROSPEC (all) → ADD_ROSPEC → ENABLE_ROSPEC → START_ROSPEC → running. The ROSpec's
    start trigger is null by default: the spec starts it with START_ROSPEC, which a reader
    refuses for a ROSpec an immediate trigger already started. Never raises on input.
    """

    def __init__(self, rospec: RoSpec) -> None:
        self.rospec = rospec
        self.state = ClientState.DISCONNECTED
        self.failure: str | None = None
        self.capabilities: GeneralDeviceCapabilities | None = None
        self._next_id = 1
        self._pending: tuple[type, int] | None = None  # request type and message id

    def handle(self, item: Input) -> list[Action]:
        event, reason = self._classify(item)
        state, step = TRANSITIONS[self.state, event]
        previous = self.state
        self.state = state
        actions: list[Action] = []
        if isinstance(item, GetReaderCapabilitiesResponse) and event is _E.CAPABILITIES_OK:
            self.capabilities = item.general
            actions.append(Capabilities(item.general))
        match step:
            case Step.NOTHING:
                pass
            case Step.SEND_GET_CAPABILITIES:
                actions.append(self._send(GetReaderCapabilities(requested=1)))
            case Step.SEND_DELETE:
                actions.append(self._send(DeleteRoSpec(rospec_id=0)))
            case Step.SEND_ADD:
                actions.append(self._send(AddRoSpec(rospec=self.rospec)))
            case Step.SEND_ENABLE:
                actions.append(self._send(EnableRoSpec(rospec_id=self.rospec.rospec_id)))
            case Step.SEND_START:
                actions.append(self._send(StartRoSpec(rospec_id=self.rospec.rospec_id)))
            case Step.READY:
                actions.append(Ready())
            case Step.ACK_KEEPALIVE:
                assert isinstance(item, Keepalive)
                ack = KeepaliveAck(message_id=item.message_id)
                actions.append(Send(ack, encode(ack)))
            case Step.DELIVER_REPORT:
                assert isinstance(item, RoAccessReport)
                actions.append(Deliver(item))
            case Step.SEND_CLOSE:
                actions.append(self._send(CloseConnection()))
            case Step.FAIL:
                text = reason or f"unexpected {event.value} in state {previous.value}"
                self.failure = text
                actions.append(Fail(text))
        if state is ClientState.DISCONNECTED:
            self._pending = None
            self.failure = None
        return actions

    def _send(self, message: Message) -> Send:
        message = msgspec.structs.replace(message, message_id=self._next_id)
        self._pending = (type(message), self._next_id)
        self._next_id = self._next_id % 0xFFFFFFFF + 1
        return Send(message, encode(message))

    def _classify(self, item: Input) -> tuple[ClientEvent, str | None]:
        match item:
            case Connected():
                return _E.CONNECTED, None
            case Disconnected():
                return _E.DISCONNECTED, "connection lost"
            case CloseRequested():
                return _E.CLOSE_REQUESTED, None
            case Malformed(reason=why):
                return _E.MALFORMED, f"malformed message: {why}"
            case Keepalive():
                return _E.KEEPALIVE, None
            case RoAccessReport():
                return _E.REPORT, None
            case ReaderEventNotification(connection_attempt=None):
                return _E.READER_EVENT, None
            case ReaderEventNotification(connection_attempt=ConnectionAttemptStatus.SUCCESS):
                return _E.CONNECTION_ACCEPTED, None
            case ReaderEventNotification(connection_attempt=status):
                assert status is not None
                return _E.CONNECTION_REFUSED, f"connection refused: {status.name}"
            case ErrorMessage(status=status):
                return _E.ERROR_RESPONSE, f"reader error {status.code}: {status.description}"
        answered = _SETUP_RESPONSES.get(type(item))
        if answered is None or not isinstance(item, _SetupResponse):
            return _E.OTHER_MESSAGE, None
        event, request = answered
        status = item.status
        if self._pending != (request, item.message_id):
            return _E.ERROR_RESPONSE, (
                f"{type(item).__name__} (id {item.message_id}) answers no request of ours"
            )
        self._pending = None
        if not status.ok:
            return _E.ERROR_RESPONSE, (
                f"{type(item).__name__}: status {status.code} {status.description}".rstrip()
            )
        return event, None
