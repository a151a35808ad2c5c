"""LLRP subset: golden bytes, round trips, stream properties and the client's table."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warelink.protocol.llrp import (
    HEADER_SIZE,
    MAX_MESSAGE_SIZE,
    TRANSITIONS,
    AddRoSpec,
    AddRoSpecResponse,
    Capabilities,
    ClientEvent,
    ClientState,
    CloseConnection,
    CloseConnectionResponse,
    CloseRequested,
    Connected,
    ConnectionAttemptStatus,
    DeleteRoSpec,
    DeleteRoSpecResponse,
    Deliver,
    DisableRoSpec,
    Disconnected,
    EnableRoSpec,
    EnableRoSpecResponse,
    ErrorMessage,
    Fail,
    GeneralDeviceCapabilities,
    GetReaderCapabilities,
    GetReaderCapabilitiesResponse,
    Keepalive,
    KeepaliveAck,
    LlrpClient,
    LlrpDecodeError,
    LlrpDecoder,
    LlrpStatus,
    Malformed,
    Message,
    ReaderEventNotification,
    Ready,
    RoAccessReport,
    RoSpec,
    RoSpecState,
    Send,
    StartRoSpec,
    StartRoSpecResponse,
    StartTrigger,
    StatusCode,
    StopRoSpec,
    TagReport,
    TagReportContent,
    UnsupportedMessage,
    decode_message,
    encode,
)

EPC = bytes.fromhex("3074257BF7194E4000001A85")

# ------------------------------------------------------------------ golden bytes


def test_keepalive_golden() -> None:
    # 3 reserved bits 0, version 1, type 62 → 0x043E; length 10; id 0x01020304.
    data = bytes.fromhex("043E 0000000A 01020304")
    assert encode(Keepalive(message_id=0x01020304)) == data
    assert decode_message(data) == Keepalive(message_id=0x01020304)


def test_keepalive_ack_golden() -> None:
    data = bytes.fromhex("0448 0000000A 00000007")  # type 72
    assert encode(KeepaliveAck(message_id=7)) == data
    assert decode_message(data) == KeepaliveAck(message_id=7)


def test_ro_access_report_golden() -> None:
    tag_params = (
        "8D" + EPC.hex()  # EPC-96 (TV 13)
        + "81 0002"  # AntennaID (TV 1) = 2
        + "86 C4"  # PeakRSSI (TV 6) = -60 dBm
        + "82 0005F5E100000000"  # FirstSeenTimestampUTC (TV 2)
        + "84 0005F5E100001234"  # LastSeenTimestampUTC (TV 4)
        + "88 0003"  # TagSeenCount (TV 8) = 3
    )  # fmt: skip
    tag_data = "00F0 002B" + tag_params  # TagReportData (TLV 240), 4 + 39 bytes
    data = bytes.fromhex("043D 00000035 00000009" + tag_data)  # type 61, 10 + 43 bytes
    report = RoAccessReport(
        tags=(
            TagReport(
                epc=EPC,
                antenna_id=2,
                peak_rssi=-60,
                first_seen_utc_us=0x0005F5E100000000,
                last_seen_utc_us=0x0005F5E100001234,
                seen_count=3,
            ),
        ),
        message_id=9,
    )
    assert encode(report) == data
    assert decode_message(data) == report
    assert report.tags[0].epc_hex == "3074257BF7194E4000001A85"


def test_epc_data_tlv_is_decoded_too() -> None:
    # EPCData (TLV 241): EPCLengthBits 96, then the EPC; AntennaID after it.
    tag = "00F1 0012 0060" + EPC.hex() + "81 0001"
    data = bytes.fromhex("043D 00000023 00000001 00F0 0019" + tag)
    assert decode_message(data) == RoAccessReport(
        tags=(TagReport(epc=EPC, antenna_id=1),), message_id=1
    )


def test_connection_attempt_event_golden() -> None:
    event = "0080 000C 0000000000000001" + "0100 0006 0000"  # UTCTimestamp, ConnAttempt
    data = bytes.fromhex("043F 00000020 00000000 00F6 0016" + event)
    message = ReaderEventNotification(
        timestamp_us=1, connection_attempt=ConnectionAttemptStatus.SUCCESS
    )
    assert encode(message) == data
    assert decode_message(data) == message


def test_add_rospec_response_with_status_golden() -> None:
    # LLRPStatus (TLV 287): StatusCode 0, ErrorDescription "" (u16 length 0).
    data = bytes.fromhex("041E 00000012 00000003 011F 0008 0000 0000")
    assert encode(AddRoSpecResponse(message_id=3)) == data
    assert decode_message(data) == AddRoSpecResponse(message_id=3)


def test_add_rospec_layout() -> None:
    spec = RoSpec(rospec_id=1, antenna_ids=(1, 2), start_trigger=StartTrigger.IMMEDIATE)
    data = encode(AddRoSpec(rospec=spec, message_id=2))
    assert data[:2] == bytes.fromhex("0414")  # ADD_ROSPEC = 20
    assert data[10:12] == bytes.fromhex("00B1")  # ROSpec (177)
    assert bytes.fromhex("00000001 00 00") in data  # id 1, priority 0, disabled
    assert bytes.fromhex("00B3 0005 01") in data  # ROSpecStartTrigger: immediate
    assert bytes.fromhex("00B7 001A 0002 0001 0002") in data  # AISpec: antennas 1, 2
    assert bytes.fromhex("00BA 0007 0001 01") in data  # InventoryParameterSpec: C1G2
    # ROReportSpec: trigger 1, N=1; selector: antenna, RSSI, first/last seen, count.
    assert data.endswith(bytes.fromhex("00ED 000D 01 0001 00EE 0006 1780"))


# ------------------------------------------------------------------ round trips

_u8 = st.integers(0, 0xFF)
_u16 = st.integers(0, 0xFFFF)
_u32 = st.integers(0, 0xFFFFFFFF)
_u64 = st.integers(0, 2**64 - 1)
_opt = st.none

_status = st.builds(
    LlrpStatus,
    st.sampled_from(list(StatusCode)),
    st.text(max_size=20),
)
_rospecs = st.builds(
    RoSpec,
    rospec_id=_u32,
    priority=st.integers(0, 7),
    state=st.sampled_from(list(RoSpecState)),
    start_trigger=st.sampled_from(list(StartTrigger)),
    rospec_duration_ms=_opt() | _u32,
    antenna_ids=st.lists(_u16, min_size=1, max_size=8).map(tuple),
    aispec_duration_ms=_opt() | _u32,
    inventory_parameter_spec_id=_u16,
    report_n=_u16,
    report_content=st.integers(0, 0x3FF).map(lambda b: TagReportContent(b << 6)),
)
_tags = st.builds(
    TagReport,
    epc=st.binary(min_size=2, max_size=62).filter(lambda b: len(b) % 2 == 0),
    antenna_id=_opt() | _u16,
    peak_rssi=_opt() | st.integers(-128, 127),
    first_seen_utc_us=_opt() | _u64,
    last_seen_utc_us=_opt() | _u64,
    seen_count=_opt() | _u16,
    rospec_id=_opt() | _u32,
)
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(GetReaderCapabilities, requested=st.integers(0, 4), message_id=_u32),
    st.builds(
        GetReaderCapabilitiesResponse,
        status=_status,
        general=_opt()
        | st.builds(
            GeneralDeviceCapabilities,
            max_antennas=_u16,
            can_set_antenna_properties=st.booleans(),
            has_utc_clock=st.booleans(),
            manufacturer=_u32,
            model=_u32,
            firmware=st.text(max_size=10),
        ),
        message_id=_u32,
    ),
    st.builds(AddRoSpec, rospec=_rospecs, message_id=_u32),
    *(
        st.builds(kind, rospec_id=_u32, message_id=_u32)
        for kind in (DeleteRoSpec, StartRoSpec, StopRoSpec, EnableRoSpec, DisableRoSpec)
    ),
    *(
        st.builds(kind, status=_status, message_id=_u32)
        for kind in (
            AddRoSpecResponse,
            DeleteRoSpecResponse,
            EnableRoSpecResponse,
            StartRoSpecResponse,
            CloseConnectionResponse,
            ErrorMessage,
        )
    ),
    st.builds(RoAccessReport, tags=st.lists(_tags, max_size=4).map(tuple), message_id=_u32),
    st.builds(Keepalive, message_id=_u32),
    st.builds(KeepaliveAck, message_id=_u32),
    st.builds(CloseConnection, message_id=_u32),
    st.builds(
        ReaderEventNotification,
        timestamp_us=_u64,
        connection_attempt=_opt() | st.sampled_from(list(ConnectionAttemptStatus)),
        message_id=_u32,
    ),
    st.builds(
        UnsupportedMessage,
        message_type=st.sampled_from([2, 3, 26, 40, 46, 60, 64, 1023]),
        body=st.binary(max_size=20),
        message_id=_u32,
    ),
)


@given(messages)
def test_round_trip(message: Message) -> None:
    data = encode(message)
    assert decode_message(data) == message
    assert LlrpDecoder().feed(data) == [message]


@given(st.lists(messages, max_size=6), st.data())
def test_any_chunking_gives_the_same_messages(batch: list[Message], data: st.DataObject) -> None:
    stream = b"".join(encode(m) for m in batch)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = LlrpDecoder()
    out: list[Message | Malformed] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += decoder.feed(stream[start:end])
    assert out == batch
    assert decoder.pending == 0


@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_the_decode_error(data: bytes) -> None:
    with contextlib.suppress(LlrpDecodeError):
        decode_message(data)


@given(st.binary(max_size=300), st.data())
def test_arbitrary_stream_never_raises_and_chunking_does_not_matter(
    stream: bytes, data: st.DataObject
) -> None:
    whole = LlrpDecoder().feed(stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = LlrpDecoder()
    parts: list[Message | Malformed] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        parts += decoder.feed(stream[start:end])
    assert parts == whole


@given(st.binary(min_size=0, max_size=60))
def test_arbitrary_bodies_under_a_good_header(body: bytes) -> None:
    for message_type in (11, 20, 30, 61, 63, 100, 4, 62):
        head = bytes([0x04 | message_type >> 8, message_type & 0xFF])
        frame = head + (HEADER_SIZE + len(body)).to_bytes(4, "big") + bytes(4) + body
        (item,) = LlrpDecoder().feed(frame)
        assert isinstance(item, Malformed | Message)


def test_bad_body_is_skipped_and_framing_goes_on() -> None:
    bad = bytes.fromhex("043E 0000000B 00000001 FF")  # a KEEPALIVE with a body
    good = encode(Keepalive(message_id=2))
    decoder = LlrpDecoder()
    out = decoder.feed(bad + good)
    assert isinstance(out[0], Malformed) and "body" in out[0].reason
    assert out[1:] == [Keepalive(message_id=2)]
    assert not decoder.broken


@pytest.mark.parametrize(
    "header",
    [
        bytes.fromhex("043E 00000009 00000001"),  # length below the header's
        bytes.fromhex("043E") + (MAX_MESSAGE_SIZE + 1).to_bytes(4, "big") + bytes(4),
        bytes.fromhex("083E 0000000A 00000001"),  # version 2
        bytes.fromhex("243E 0000000A 00000001"),  # a reserved bit set
    ],
)
def test_lost_framing_breaks_the_decoder_for_good(header: bytes) -> None:
    decoder = LlrpDecoder()
    out = decoder.feed(encode(Keepalive(message_id=1)) + header + encode(Keepalive()))
    assert out[0] == Keepalive(message_id=1)
    assert len(out) == 2 and isinstance(out[1], Malformed)
    assert decoder.broken
    assert decoder.feed(encode(Keepalive())) == []


def test_encode_rejects_values_that_do_not_fit() -> None:
    with pytest.raises(ValueError):
        encode(StartRoSpec(rospec_id=2**32))


# -------------------------------------------------------------- client machine

SPEC = RoSpec(rospec_id=7, antenna_ids=(1, 2))
ACCEPTED = ReaderEventNotification(connection_attempt=ConnectionAttemptStatus.SUCCESS)


def _sent(actions: Sequence[object]) -> list[Message]:
    return [a.message for a in actions if isinstance(a, Send)]


def _state(client: LlrpClient) -> ClientState:
    return client.state  # read through a call: mypy would narrow the attribute


def _run_to(client: LlrpClient, state: ClientState) -> None:
    """Drive ``client`` through the happy path until it reaches ``state``."""
    general = GeneralDeviceCapabilities(max_antennas=4, firmware="sim")
    replies: dict[type, Callable[[int], Message]] = {
        GetReaderCapabilities: lambda mid: GetReaderCapabilitiesResponse(
            general=general, message_id=mid
        ),
        DeleteRoSpec: lambda mid: DeleteRoSpecResponse(message_id=mid),
        AddRoSpec: lambda mid: AddRoSpecResponse(message_id=mid),
        EnableRoSpec: lambda mid: EnableRoSpecResponse(message_id=mid),
        StartRoSpec: lambda mid: StartRoSpecResponse(message_id=mid),
        CloseConnection: lambda mid: CloseConnectionResponse(message_id=mid),
    }
    pending: list[Message] = []
    if client.state is ClientState.DISCONNECTED and state is not ClientState.DISCONNECTED:
        client.handle(Connected())
    if client.state is ClientState.AWAITING_CONNECTION_EVENT and state is not client.state:
        pending = _sent(client.handle(ACCEPTED))
    while client.state is not state:
        (request,) = pending
        pending = _sent(client.handle(replies[type(request)](request.message_id)))


def test_happy_path_sends_the_setup_in_order() -> None:
    client = LlrpClient(SPEC)
    assert client.handle(Connected()) == []
    sent: list[Message] = []
    actions = client.handle(ACCEPTED)
    sent += _sent(actions)
    assert sent == [GetReaderCapabilities(requested=1, message_id=1)]
    general = GeneralDeviceCapabilities(max_antennas=4)
    actions = client.handle(GetReaderCapabilitiesResponse(general=general, message_id=1))
    assert actions[0] == Capabilities(general)
    assert _sent(actions) == [DeleteRoSpec(rospec_id=0, message_id=2)]
    assert _sent(client.handle(DeleteRoSpecResponse(message_id=2))) == [
        AddRoSpec(rospec=SPEC, message_id=3)
    ]
    assert _sent(client.handle(AddRoSpecResponse(message_id=3))) == [
        EnableRoSpec(rospec_id=7, message_id=4)
    ]
    assert _sent(client.handle(EnableRoSpecResponse(message_id=4))) == [
        StartRoSpec(rospec_id=7, message_id=5)
    ]
    assert client.handle(StartRoSpecResponse(message_id=5)) == [Ready()]
    assert client.state is ClientState.RUNNING
    report = RoAccessReport(tags=(TagReport(epc=EPC, antenna_id=1),))
    assert client.handle(report) == [Deliver(report)]
    ack = client.handle(Keepalive(message_id=99))
    assert ack == [Send(KeepaliveAck(message_id=99), encode(KeepaliveAck(message_id=99)))]
    assert _sent(client.handle(CloseRequested())) == [CloseConnection(message_id=6)]
    assert client.handle(CloseConnectionResponse(message_id=6)) == []
    assert _state(client) is ClientState.CLOSED
    assert client.handle(Disconnected()) == []
    assert _state(client) is ClientState.DISCONNECTED


def test_error_status_fails_the_session() -> None:
    client = LlrpClient(SPEC)
    _run_to(client, ClientState.ADDING_ROSPEC)
    bad = AddRoSpecResponse(status=LlrpStatus(StatusCode.P_FIELD_ERROR, "bad id"), message_id=3)
    (fail,) = client.handle(bad)
    assert isinstance(fail, Fail) and "201" in fail.reason and "bad id" in fail.reason
    assert client.state is ClientState.FAILED
    assert client.handle(Keepalive()) == []  # failed stays failed, quietly
    assert client.handle(Disconnected()) == []
    assert _state(client) is ClientState.DISCONNECTED
    _run_to(client, ClientState.RUNNING)  # and a new connection starts over


def test_refused_connection_and_error_message_fail() -> None:
    client = LlrpClient(SPEC)
    client.handle(Connected())
    refused = ReaderEventNotification(
        connection_attempt=ConnectionAttemptStatus.FAILED_CLIENT_INITIATED_EXISTS
    )
    (fail,) = client.handle(refused)
    assert isinstance(fail, Fail) and "FAILED_CLIENT_INITIATED_EXISTS" in fail.reason
    client = LlrpClient(SPEC)
    _run_to(client, ClientState.RUNNING)
    (fail,) = client.handle(ErrorMessage(status=LlrpStatus(StatusCode.M_UNSUPPORTED_MESSAGE)))
    assert isinstance(fail, Fail) and client.state is ClientState.FAILED


def test_response_to_no_request_fails() -> None:
    client = LlrpClient(SPEC)
    _run_to(client, ClientState.DELETING_ROSPECS)
    (fail,) = client.handle(DeleteRoSpecResponse(message_id=42))
    assert isinstance(fail, Fail) and "answers no request" in fail.reason


def test_table_covers_every_state_and_event() -> None:
    assert set(TRANSITIONS) == {(s, e) for s in ClientState for e in ClientEvent}
    for (state, event), (target, _) in TRANSITIONS.items():
        assert isinstance(target, ClientState), (state, event)


_inputs = st.one_of(
    st.sampled_from(
        [
            Connected(),
            Disconnected(),
            CloseRequested(),
            ACCEPTED,
            Keepalive(message_id=3),
            RoAccessReport(),
            ReaderEventNotification(),
            Malformed(b"", "x"),
            ErrorMessage(status=LlrpStatus(StatusCode.R_DEVICE_ERROR)),
        ]
    ),
    messages,
    st.builds(
        lambda kind, mid: kind(message_id=mid),
        st.sampled_from(
            [
                GetReaderCapabilitiesResponse,
                DeleteRoSpecResponse,
                AddRoSpecResponse,
                EnableRoSpecResponse,
                StartRoSpecResponse,
                CloseConnectionResponse,
            ]
        ),
        st.integers(0, 8),
    ),
)


@given(st.lists(_inputs, max_size=30))
def test_any_input_sequence_never_raises(inputs: list[object]) -> None:
    client = LlrpClient(SPEC)
    for item in inputs:
        actions = client.handle(item)  # type: ignore[arg-type]
        assert isinstance(client.state, ClientState)
        if client.state is ClientState.FAILED:
            assert client.failure is not None
        for action in actions:
            if isinstance(action, Send):
                assert decode_message(action.data) == action.message
