"""EPC (SGTIN-96, SSCC-96): golden vectors, round trips, properties, and epcpy as an oracle."""

from __future__ import annotations

import contextlib
import random
import warnings
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warelink.protocol.epc import (
    EpcDecodeError,
    Sgtin96,
    Sscc96,
    UnknownEpc,
    decode_epc,
    encode_epc,
    encode_epc_hex,
)
from warelink.protocol.errors import DecodeError
from warelink.protocol.gs1 import check_digit, is_valid_check_digit

with warnings.catch_warnings():  # epcpy's regexes are not raw strings (DeprecationWarning)
    warnings.simplefilter("ignore", DeprecationWarning)
    from epcpy.utils.parsers import hex_to_tag_encodable as _hex_to_tag_encodable


def hex_to_tag_encodable(hex_epc: str) -> Any:
    return _hex_to_tag_encodable(hex_epc)


# ---------------------------------------------------------------- golden vectors


def test_tds_example_sgtin() -> None:
    # GS1 EPC Tag Data Standard, the SGTIN-96 example: 3074257BF7194E4000001A85.
    epc = decode_epc("3074257BF7194E4000001A85")
    assert epc == Sgtin96(
        filter=3, partition=5, company_prefix="0614141", item_reference="812345", serial=6789
    )
    assert isinstance(epc, Sgtin96)
    assert epc.uri == "urn:epc:id:sgtin:0614141.812345.6789"
    assert epc.tag_uri == "urn:epc:tag:sgtin-96:3.0614141.812345.6789"
    assert epc.gtin == "80614141123458"
    assert epc.fields() == {"scheme": "sgtin-96", "gtin": "80614141123458", "serial": "6789"}
    assert encode_epc_hex(epc) == "3074257BF7194E4000001A85"


def test_tds_example_sscc() -> None:
    # TDS: urn:epc:tag:sscc-96:3.0614141.1234567890 = 3174257BF4499602D2000000.
    epc = decode_epc("3174257bf4499602d2000000")
    assert epc == Sscc96(
        filter=3, partition=5, company_prefix="0614141", serial_reference="1234567890"
    )
    assert isinstance(epc, Sscc96)
    assert epc.uri == "urn:epc:id:sscc:0614141.1234567890"
    assert epc.sscc == "106141412345678908"
    assert is_valid_check_digit(epc.sscc)
    assert epc.fields() == {"scheme": "sscc-96", "sscc": "106141412345678908"}


def test_gtin_with_12_digit_company_prefix() -> None:
    epc = Sgtin96.from_gtin("09506000134352", 1, company_prefix_length=12, filter=1)
    assert epc.partition == 0
    assert epc.company_prefix == "950600013435" and epc.item_reference == "0"
    assert decode_epc(encode_epc(epc)) == epc
    assert epc.gtin == "09506000134352"


def test_another_scheme_is_unknown_not_an_error() -> None:
    sgln = "3214257BF46DB6900000D431"  # an SGLN-96
    assert decode_epc(sgln) == UnknownEpc(header=0x32, hex=sgln)
    assert decode_epc(bytes(12)) == UnknownEpc(header=0, hex="0" * 24)
    assert decode_epc("0x" + sgln).scheme == "unknown-32"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "30",
        "3074257BF7194E4000001A8",  # 23 digits
        "3074257BF7194E4000001A8500",  # 104 bits
        "3074257BF7194E4000001A8G",
        "3074257BF7194E4000001A8 ",
        "٣074257BF7194E4000001A85",
        b"\x30" * 11,
        "307C257BF7194E4000001A85",  # SGTIN partition 7
        "317C257BF4499602D2000000",  # SSCC partition 7
        "30" + "1" + "F" * 21,  # partition 0, company prefix 2^40-1 > 12 digits
    ],
)
def test_bad_input_raises_epc_decode_error(bad: str | bytes) -> None:
    with pytest.raises(EpcDecodeError):
        decode_epc(bad)


def test_out_of_range_item_reference() -> None:
    # Partition 6: item reference 24 bits, 7 digits; 0xFFFFFF = 16777215 has 8.
    value = 0x30 << 88 | 1 << 85 | 6 << 82 | 123456 << 62 | 0xFFFFFF << 38 | 1
    with pytest.raises(EpcDecodeError, match="item reference"):
        decode_epc(value.to_bytes(12, "big"))


def test_constructors_validate() -> None:
    with pytest.raises(EpcDecodeError):
        Sgtin96.from_gtin("09506000134353", 1, company_prefix_length=7)  # check digit
    with pytest.raises(EpcDecodeError):
        Sgtin96.from_gtin("09506000134352", 1 << 38, company_prefix_length=7)
    with pytest.raises(EpcDecodeError):
        Sscc96.from_sscc("106141412345678908", company_prefix_length=13)
    with pytest.raises(EpcDecodeError):
        Sgtin96(filter=8, partition=5, company_prefix="0614141", item_reference="812345", serial=1)
    assert issubclass(EpcDecodeError, DecodeError)


# ------------------------------------------------------------------ strategies


@st.composite
def sgtins(draw: st.DrawFn) -> Sgtin96:
    cp_len = draw(st.integers(6, 12))
    payload = draw(st.text("0123456789", min_size=13, max_size=13))
    gtin = payload + str(check_digit(payload))
    return Sgtin96.from_gtin(
        gtin,
        draw(st.integers(0, (1 << 38) - 1)),
        company_prefix_length=cp_len,
        filter=draw(st.integers(0, 7)),
    )


@st.composite
def ssccs(draw: st.DrawFn) -> Sscc96:
    cp_len = draw(st.integers(6, 12))
    payload = draw(st.text("0123456789", min_size=17, max_size=17))
    return Sscc96.from_sscc(
        payload + str(check_digit(payload)),
        company_prefix_length=cp_len,
        filter=draw(st.integers(0, 7)),
    )


@given(sgtins() | ssccs())
def test_round_trip(epc: Sgtin96 | Sscc96) -> None:
    raw = encode_epc(epc)
    assert len(raw) == 12
    assert decode_epc(raw) == epc
    assert decode_epc(raw.hex()) == epc
    assert decode_epc(encode_epc_hex(epc).lower()) == epc


@given(st.binary(min_size=0, max_size=16))
def test_arbitrary_bytes_only_raise_epc_decode_error(data: bytes) -> None:
    for form in (data, data.hex()):
        try:
            decoded = decode_epc(form)
        except EpcDecodeError:
            continue
        assert len(data) == 12
        if isinstance(decoded, Sgtin96):
            assert encode_epc(decoded) == data
        elif isinstance(decoded, Sscc96):  # 72 bits of fields, then 24 reserved ones
            assert encode_epc(decoded)[:9] == data[:9]


@given(st.text(max_size=30))
def test_arbitrary_text_only_raises_epc_decode_error(text: str) -> None:
    with contextlib.suppress(EpcDecodeError):
        decode_epc(text)


@given(st.binary(min_size=12, max_size=12))
def test_any_96_bit_sgtin_decodes_or_is_rejected_for_a_reason(data: bytes) -> None:
    raw = bytes([0x30]) + data[1:]
    try:
        epc = decode_epc(raw)
    except EpcDecodeError as exc:
        assert "partition" in str(exc) or "digits" in str(exc)
    else:
        assert isinstance(epc, Sgtin96)
        assert encode_epc(epc) == raw  # SGTIN-96 has no reserved bits: exact


# ------------------------------------------------------------------ the oracle


def test_agrees_with_epcpy_on_generated_values() -> None:
    rng = random.Random(96)
    for _ in range(3000):
        cp_len = rng.randint(6, 12)
        filter_value = rng.randrange(8)
        if rng.random() < 0.5:
            payload = "".join(rng.choice("0123456789") for _ in range(13))
            gtin = payload + str(check_digit(payload))
            serial = rng.randrange(1 << 38)
            ours = Sgtin96.from_gtin(
                gtin, serial, company_prefix_length=cp_len, filter=filter_value
            )
            theirs = hex_to_tag_encodable(encode_epc_hex(ours))
            assert theirs.epc_uri == ours.uri
            assert theirs.gtin() == ours.gtin == gtin
        else:
            payload = "".join(rng.choice("0123456789") for _ in range(17))
            sscc = payload + str(check_digit(payload))
            epc = Sscc96.from_sscc(sscc, company_prefix_length=cp_len, filter=filter_value)
            theirs = hex_to_tag_encodable(encode_epc_hex(epc))
            assert theirs.epc_uri == epc.uri
            assert theirs.gs1_key() == epc.sscc == sscc
