"""ZPL: host status golden vectors and properties, GS1 pallet labels read back."""

from __future__ import annotations

import contextlib
import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warelink.protocol.errors import DecodeError
from warelink.protocol.gs1 import GS, check_digit, encode_element_string, parse_scan
from warelink.protocol.zpl import (
    HOST_STATUS_REQUEST,
    HostStatus,
    HostStatusDecoder,
    Malformed,
    ZplControl,
    ZplDecodeError,
    ZplFormat,
    ZplStreamDecoder,
    decode_code128_data,
    encode_host_status,
    parse_host_status,
    read_label,
    sscc_pallet_label,
)

# The example answer of the ZPL II Programming Guide's ~HS, with the ETX CR LF framing.
GOLDEN = (
    b"\x02030,0,0,1245,000,0,0,0,000,0,0,0\x03\r\n"
    b"\x02001,0,0,0,1,2,4,0,00000000,1,000\x03\r\n"
    b"\x021234,0\x03\r\n"
)
FAULTED = (
    b"\x02030,1,1,1218,002,1,0,0,000,0,0,0\x03\r\n"
    b"\x02001,0,1,1,1,2,4,0,00000005,1,000\x03\r\n"
    b"\x020000,1\x03\r\n"
)

SSCC = "37612345000000001" + str(check_digit("37612345000000001"))  # …0016
GTIN = "09506000134352"


def test_golden_host_status() -> None:
    status = parse_host_status(GOLDEN)
    assert status == HostStatus(
        communication_settings=30,
        paper_out=False,
        paused=False,
        label_length_dots=1245,
        formats_in_buffer=0,
        buffer_full=False,
        function_settings=1,
        head_up=False,
        ribbon_out=False,
        thermal_transfer=True,
        print_mode="2",
        print_width_mode=4,
        labels_remaining=0,
        format_while_printing=True,
        graphic_images=0,
        password=1234,
        static_ram_installed=False,
    )
    assert status.ready and status.faults == []
    assert encode_host_status(status) == GOLDEN


def test_golden_faulted_status() -> None:
    status = parse_host_status(FAULTED)
    assert status.faults == ["paper_out", "ribbon_out", "head_open", "paused", "buffer_full"]
    assert not status.ready
    assert (status.formats_in_buffer, status.labels_remaining) == (2, 5)
    assert encode_host_status(status) == FAULTED


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "0 host status"),
        (GOLDEN[:-10], "incomplete"),
        (GOLDEN + GOLDEN, "2 host status"),
        (GOLDEN.replace(b"1245", b"12x5"), "not a number"),
        (GOLDEN.replace(b"030,0,0", b"030,2,0"), "not 0 or 1"),
        (GOLDEN.replace(b",2,4,", b",?,4,"), "mode character"),
        (GOLDEN[GOLDEN.index(b"\n") + 1 :], "out of order"),
        (b"junk" + GOLDEN, "outside"),
        (GOLDEN.replace(b"1234,0", b"1234,0,0"), "not a host status string"),
    ],
)
def test_bad_answers_raise_decode_error(data: bytes, reason: str) -> None:
    with pytest.raises(ZplDecodeError, match=reason):
        parse_host_status(data)


def test_decode_error_is_the_protocol_family() -> None:
    assert issubclass(ZplDecodeError, DecodeError)
    with pytest.raises(DecodeError):
        parse_host_status("text")  # type: ignore[arg-type]


def test_decoder_resynchronises_after_garbage() -> None:
    decoder = HostStatusDecoder()
    out = decoder.feed(GOLDEN[:40] + b"\x02\xff\xfe" + GOLDEN + b"noise" + FAULTED)
    kinds = [type(item).__name__ for item in out]
    # a cut-off answer, an unterminated string, noise: each one Malformed, then in sync
    assert kinds == ["Malformed", "Malformed", "HostStatus", "Malformed", "HostStatus"]
    assert out[2] == parse_host_status(GOLDEN)
    assert out[4] == parse_host_status(FAULTED)
    assert decoder.pending == 0


statuses = st.builds(
    HostStatus,
    communication_settings=st.integers(0, 999),
    paper_out=st.booleans(),
    paused=st.booleans(),
    label_length_dots=st.integers(0, 9999),
    formats_in_buffer=st.integers(0, 999),
    buffer_full=st.booleans(),
    partial_format=st.booleans(),
    corrupt_ram=st.booleans(),
    over_temperature=st.booleans(),
    head_up=st.booleans(),
    ribbon_out=st.booleans(),
    thermal_transfer=st.booleans(),
    print_mode=st.sampled_from("0123456789K"),
    print_width_mode=st.integers(0, 9),
    labels_remaining=st.integers(0, 99_999_999),
    graphic_images=st.integers(0, 999),
    password=st.integers(0, 9999),
    static_ram_installed=st.booleans(),
)


@given(statuses)
def test_round_trip(status: HostStatus) -> None:
    assert parse_host_status(encode_host_status(status)) == status


@given(st.binary(max_size=400))
def test_arbitrary_bytes_only_raise_decode_error(data: bytes) -> None:
    with contextlib.suppress(ZplDecodeError):
        parse_host_status(data)


@given(
    st.lists(
        st.one_of(
            statuses.map(lambda s: (True, encode_host_status(s))),
            st.binary(max_size=40).map(lambda b: (False, b)),
        ),
        max_size=6,
    ),
    st.data(),
)
def test_any_chunking_gives_the_same_items(
    parts: list[tuple[bool, bytes]], data: st.DataObject
) -> None:
    stream = b"".join(chunk for _, chunk in parts)
    whole = HostStatusDecoder().feed(stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    decoder = HostStatusDecoder()
    pieces: list[HostStatus | Malformed] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        pieces += decoder.feed(stream[start:end])
    assert pieces == whole
    if all(is_status for is_status, _ in parts):  # nothing but statuses: each comes out
        assert whole == [parse_host_status(chunk) for _, chunk in parts]


# ------------------------------------------------------------ the host's stream


def test_stream_decoder_splits_formats_and_controls() -> None:
    stream = b"~HS\r\n^XA^FO1,1^FDa^FS^XZ\n^xa^FDb~HS^FS^XZ~PP junk ^XA^FDc^XA^FDd^FS^XZ"
    whole = ZplStreamDecoder().feed(stream)
    assert whole == [
        ZplControl("HS"),
        ZplFormat(b"^XA^FO1,1^FDa^FS^XZ"),
        ZplControl("HS"),  # acts on arrival, even inside a format
        ZplFormat(b"^XA^FDb^FS^XZ"),
        ZplControl("PP"),
        Malformed(b"^XA^FDc", "format not ended before ^XA"),
        ZplFormat(b"^XA^FDd^FS^XZ"),
    ]
    decoder = ZplStreamDecoder()
    one_by_one = [item for byte in stream for item in decoder.feed(bytes([byte]))]
    assert one_by_one == whole


@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=8))
def test_stream_decoder_never_raises_and_ignores_chunking(data: bytes, cuts: list[int]) -> None:
    whole = ZplStreamDecoder().feed(data)
    decoder = ZplStreamDecoder()
    pieces: list[ZplFormat | ZplControl | Malformed] = []
    bounds = sorted(min(c, len(data)) for c in cuts)
    for start, end in zip([0, *bounds], [*bounds, len(data)], strict=True):
        pieces += decoder.feed(data[start:end])
    assert pieces == whole


# ---------------------------------------------------------------------- labels


def label(**overrides: object) -> bytes:
    args: dict[str, object] = {
        "sscc": SSCC,
        "gtin": GTIN,
        "quantity": 48,
        "lot": "L2026-07",
        "expiry": dt.date(2027, 5, 31),
        "ship_to": "ACME Retail DC\nDock 4\nD-20095 Hamburg",
        "job_key": "cmd-0001",
        "ship_from": "Warelink Süd_Lager",
    }
    args.update(overrides)
    return sscc_pallet_label(**args)  # type: ignore[arg-type]


def test_label_is_a_gs1_logistic_label() -> None:
    data = label()
    assert data.startswith(b"^XA\n^FX warelink-job:cmd-0001^FS\n")
    assert data.rstrip().endswith(b"^XZ")
    # Both GS1-128 symbols start in subset C with FNC1: ZPL's >; and >8.
    assert b"^BCN,140,N,N,N^FD>;>80209506000134352172705313748>810>6L>52026>6-07^FS" in data
    assert b"^BCN,140,N,N,N^FD>;>800" + SSCC.encode() + b"^FS" in data
    content = read_label(data)
    assert content.job_key == "cmd-0001"
    assert content.sscc == SSCC
    assert content.copies == 1
    expected_content = encode_element_string(
        [("02", GTIN), ("17", "270531"), ("37", "48"), ("10", "L2026-07")], symbology=""
    )
    assert content.barcodes == [expected_content, "00" + SSCC]
    assert GS in content.barcodes[0]  # after the variable (37), before (10)
    scan = parse_scan("]C1" + content.barcodes[0], reference_year=2026)
    assert (scan.content_gtin, scan.count, scan.lot) == (GTIN, 48, "L2026-07")
    assert scan.expiry == dt.date(2027, 5, 31)
    # Human-readable AIs under each symbol, and the text fields with ^FH escapes.
    assert "(02)09506000134352(17)270531(37)48(10)L2026-07" in content.texts
    assert f"(00){SSCC}" in content.texts
    assert "Warelink Süd_Lager" in content.texts
    assert b"Warelink S_C3_BCd_5FLager" in data


def test_long_content_is_split_over_two_symbols_and_best_before() -> None:
    content = read_label(
        label(lot="ABCDEFGHIJ0123456789", quantity=12345678, date_ai="15", gtin="96385074")
    )
    assert content.barcodes == [
        "02000000963850741527053137" + "12345678",
        "10ABCDEFGHIJ0123456789",
        "00" + SSCC,
    ]
    assert "BEST BEFORE" in content.texts


def test_label_without_lot_and_expiry() -> None:
    content = read_label(label(lot=None, expiry=None))
    assert content.barcodes == ["02" + GTIN + "3748", "00" + SSCC]


def test_text_cannot_inject_zpl() -> None:
    data = label(ship_to="^XZ^XA~JA evil")
    items = ZplStreamDecoder().feed(data)
    assert items == [ZplFormat(data.rstrip(b"\n"))]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sscc": SSCC[:-1] + str((int(SSCC[-1]) + 1) % 10)}, "check digit should be 6"),
        ({"sscc": "12345"}, "18 digits"),
        ({"gtin": "09506000134353"}, "GTIN 09506000134353: check digit should be 2"),
        ({"gtin": "95060001343"}, "8, 12, 13 or 14 digits"),
        ({"quantity": 0}, "quantity 0"),
        ({"quantity": 100_000_000}, "quantity 100000000"),
        ({"quantity": True}, "integer"),
        ({"lot": "ÄÖÜ"}, "label content"),
        ({"lot": "A" * 21}, "label content"),
        ({"lot": ""}, "non-empty"),
        ({"ship_to": "  "}, "ship_to"),
        ({"job_key": "has space"}, "job key"),
        ({"job_key": "x^XZ"}, "job key"),
        ({"date_ai": "11"}, "date AI"),
    ],
)
def test_invalid_inputs_are_refused_clearly(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        label(**overrides)


@given(st.text(max_size=30), st.sampled_from(["L1", "A>B<C", "12345", "1234a", "x9"]))
def test_code128_data_round_trips(ship: str, lot: str) -> None:
    data = label(lot=lot, ship_to=ship + "x")
    content = read_label(data)
    assert content.barcodes[0].endswith("10" + lot)
    assert (ship + "x").splitlines()[0][:24] in content.texts


def test_decode_code128_rejects_odd_subset_c() -> None:
    with pytest.raises(ZplDecodeError):
        decode_code128_data(">;123")
    with pytest.raises(ZplDecodeError):
        decode_code128_data(">;>Q")


def test_host_status_request_bytes() -> None:
    assert HOST_STATUS_REQUEST == b"~HS"
