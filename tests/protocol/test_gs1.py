"""GS1 element strings: golden vectors, properties, and biip as an oracle."""

from __future__ import annotations

import calendar
import contextlib
import datetime as dt
import random
from collections.abc import Callable
from decimal import Decimal

import pytest
from biip.gs1_messages import GS1Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from warelink.protocol.errors import DecodeError
from warelink.protocol.gs1 import (
    GS,
    MAX_LINE_BYTES,
    Gs1DecodeError,
    Gs1Scan,
    LineDecoder,
    Malformed,
    check_digit,
    encode_element_string,
    format_hri,
    is_valid_check_digit,
    parse_scan,
)

YEAR = 2026  # reference year for the two-digit-year window in golden vectors

# ---------------------------------------------------------------- check digits


@pytest.mark.parametrize(
    ("digits", "check"),
    [
        ("890400021003", 7),  # devices.md
        ("0950600013435", 2),  # GTIN-14 09506000134352
        ("10614141123456789", 7),  # SSCC 106141411234567897
        ("9638507", 4),  # GTIN-8 96385074
        ("03600029145", 2),  # UPC-A 036000291452
    ],
)
def test_check_digit(digits: str, check: int) -> None:
    assert check_digit(digits) == check
    assert is_valid_check_digit(digits + str(check))
    assert not is_valid_check_digit(digits + str((check + 1) % 10))


@pytest.mark.parametrize("bad", ["", "1", "12a4", "１２３４", "٣٤٥٦"])
def test_is_valid_check_digit_rejects_non_numbers(bad: str) -> None:
    assert not is_valid_check_digit(bad)


def test_check_digit_of_non_digits_raises_decode_error() -> None:
    with pytest.raises(Gs1DecodeError):
        check_digit("12x")


def test_gs1_decode_error_is_a_decode_error() -> None:
    assert issubclass(Gs1DecodeError, DecodeError)


# --------------------------------------------------------------- golden scans


def test_gs1_128_with_gs_separated_variable_fields() -> None:
    text = f"]C10109506000134352{GS}10L2611A{GS}17261200{GS}3712{GS}21SN-0042"
    # GS after the fixed 01 and 17 is allowed though not needed
    scan = parse_scan(text, reference_year=YEAR)
    assert scan.symbology == "gs1-128"
    assert scan.symbology_id == "]C1"
    assert scan.raw == text
    assert scan.elements == {
        "01": "09506000134352",
        "10": "L2611A",
        "17": "261200",
        "37": "12",
        "21": "SN-0042",
    }
    assert scan.gtin == "09506000134352"
    assert scan.lot == "L2611A"
    assert scan.expiry == dt.date(2026, 12, 31)
    assert scan.count == 12
    assert scan.serial == "SN-0042"
    assert scan.is_gs1


def test_fixed_fields_need_no_separator_and_last_variable_field_none() -> None:
    text = "]C1001061414112345678970209506000134352172512151126010137480" + GS + "10LOT/7"
    scan = parse_scan(text, reference_year=YEAR)
    assert scan.sscc == "106141411234567897"
    assert scan.content_gtin == "09506000134352"
    assert scan.gtin is None
    assert scan.expiry == dt.date(2025, 12, 15)
    assert scan.production_date == dt.date(2026, 1, 1)
    assert scan.count == 480
    assert scan.lot == "LOT/7"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("240200", dt.date(2024, 2, 29)),  # leap year
        ("250200", dt.date(2025, 2, 28)),
        ("000200", dt.date(2000, 2, 29)),  # 2000 is a leap year
        ("261100", dt.date(2026, 11, 30)),
        ("261200", dt.date(2026, 12, 31)),
        ("260131", dt.date(2026, 1, 31)),
    ],
)
def test_day_00_is_the_last_day_of_the_month(value: str, expected: dt.date) -> None:
    scan = parse_scan(f"(01)09506000134352(17){value}", reference_year=YEAR)
    assert scan.expiry == expected


@pytest.mark.parametrize(
    ("yy", "year"),
    [("26", 2026), ("76", 2076), ("77", 1977), ("99", 1999), ("00", 2000), ("25", 2025)],
)
def test_two_digit_year_window(yy: str, year: int) -> None:
    scan = parse_scan(f"]C115{yy}0101", reference_year=YEAR)
    assert scan.best_before == dt.date(year, 1, 1)


def test_century_rolls_forward_near_the_end_of_a_century() -> None:
    scan = parse_scan("]C111010101", reference_year=2098)
    assert scan.production_date == dt.date(2101, 1, 1)


def test_parentheses_form() -> None:
    scan = parse_scan("(01)09506000134352(17)201225(10)ABC", reference_year=YEAR)
    assert scan.symbology == "unknown"
    assert scan.elements == {"01": "09506000134352", "17": "201225", "10": "ABC"}
    assert scan.expiry == dt.date(2020, 12, 25)
    assert scan.lot == "ABC"


def test_parentheses_form_with_symbology_id() -> None:
    scan = parse_scan("]d2(01)09506000134352(21)X1", reference_year=YEAR)
    assert scan.symbology == "gs1-datamatrix"
    assert scan.serial == "X1"


@pytest.mark.parametrize(
    ("prefix", "symbology"),
    [
        ("]C1", "gs1-128"),
        ("]d2", "gs1-datamatrix"),
        ("]Q3", "gs1-qr"),
        ("]e0", "gs1-databar"),
        ("]C0", "code128"),  # not GS1 by its id, yet GS1 data is recognised
        ("]Z9", "unknown"),
        ("", "unknown"),
    ],
)
def test_symbology_ids(prefix: str, symbology: str) -> None:
    scan = parse_scan(prefix + "010950600013435210ABC", reference_year=YEAR)
    assert scan.symbology == symbology
    assert scan.symbology_id == prefix
    assert scan.elements == {"01": "09506000134352", "10": "ABC"}


def test_net_weight_and_decimals() -> None:
    scan = parse_scan("]C101095060001343523103001250", reference_year=YEAR)
    assert scan.net_weight_kg == Decimal("1.250")
    scan = parse_scan("]C13100000042", reference_year=YEAR)
    assert scan.net_weight_kg == Decimal(42)


def test_fixed_length_ai_outside_the_predefined_table_needs_a_separator() -> None:
    scan = parse_scan(f"]C140212345678901234567{GS}0109506000134352", reference_year=YEAR)
    assert scan.elements == {"402": "12345678901234567", "01": "09506000134352"}


@pytest.mark.parametrize(
    "text",
    [
        "hello world",
        "ABC-123",
        "5901234123457",  # EAN-13 with a valid check digit, no id: a plain GTIN code
        "]E02112345678900",  # EAN-13 starting like AI 21: never GS1
        "]C0just code 128",
        "(hello)",
        "0109506000134353",  # wrong check digit: not GS1 without a GS1 id
    ],
)
def test_plain_scans(text: str) -> None:
    scan = parse_scan(text, reference_year=YEAR)
    assert scan.elements == {}
    assert not scan.is_gs1
    assert scan.raw == text
    assert scan.gtin is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "]C1",
        "]C10109506000134353",  # wrong GTIN check digit
        "]C100106141411234567890",  # wrong SSCC check digit
        "]C1010950600013435",  # truncated fixed field
        "]C10109506000134352310012",  # 3100 needs 6 digits
        "]C10409506000134352",  # AI 04 is not a known AI
        "]C10109506000134352" + GS + "23ABC",  # unknown AI after a valid one
        "]C11726130",  # month 13
        "]C11726023" + "0",  # 30 February
        "]C110" + "A" * 21,  # lot longer than 20
        "]C110AB C",  # space is not in the GS1 character set
        "]C137" + "123456789",  # count longer than 8
        "]C137",  # empty count
        "]C110ABC" + GS + "10DEF",  # the same AI twice
        "]C13102000100" + "3103001000",  # two net weights
        "]Q3(01)09506000134352(99)",  # empty value in parentheses form
        "]Q3(01)09506000134352junk(10",
        "]d2(04)123",
        "bell\x07",
    ],
)
def test_invalid_scans_raise_decode_error(text: str) -> None:
    with pytest.raises(Gs1DecodeError):
        parse_scan(text, reference_year=YEAR)


# -------------------------------------------------------------------- encoding


def test_encode_inserts_gs_only_where_needed() -> None:
    text = encode_element_string(
        [("00", "106141411234567897"), ("10", "L1"), ("17", "261200"), ("37", "5"), ("21", "S")]
    )
    assert text == f"]C10010614141123456789710L1{GS}17261200375{GS}21S"


def test_encode_symbology_and_mapping() -> None:
    assert encode_element_string({"01": "09506000134352"}, symbology="]Q3") == (
        "]Q30109506000134352"
    )
    assert format_hri({"01": "09506000134352", "10": "A"}) == "(01)09506000134352(10)A"


@pytest.mark.parametrize(
    "elements",
    [[], [("04", "1")], [("01", "09506000134353")], [("10", "")], [("10", "a"), ("10", "b")]],
)
def test_encode_rejects_invalid_elements(elements: list[tuple[str, str]]) -> None:
    with pytest.raises(ValueError):
        encode_element_string(elements)


# --------------------------------------------------------------- line framing


def test_line_decoder_terminators() -> None:
    decoder = LineDecoder(reference_year=YEAR)
    items = decoder.feed(b"]C110A\r]C110B\n]C110C\r\n\r\n\n]C110D\n\r]C110")
    assert [i.lot for i in items if isinstance(i, Gs1Scan)] == ["A", "B", "C", "D"]
    assert len(items) == 4
    assert decoder.pending == 5
    assert [i.lot for i in decoder.feed(b"E\r\n") if isinstance(i, Gs1Scan)] == ["E"]


def test_line_decoder_over_long_line_is_one_malformed() -> None:
    decoder = LineDecoder()
    items = decoder.feed(b"x" * (MAX_LINE_BYTES + 1))
    assert items == [Malformed(b"x" * MAX_LINE_BYTES, "line longer than 512 bytes")]
    assert decoder.pending == 0
    assert decoder.feed(b"y" * 10_000) == []  # still the same line: discarded
    assert decoder.feed(b"\r\nok\r\n") == [Gs1Scan(raw="ok", symbology="unknown")]


def test_line_decoder_exactly_max_is_accepted() -> None:
    assert LineDecoder().feed(b"z" * MAX_LINE_BYTES + b"\n") == [
        Gs1Scan(raw="z" * MAX_LINE_BYTES, symbology="unknown")
    ]


def test_line_decoder_malformed_lines() -> None:
    items = LineDecoder().feed(b"\xff\xfe\r\n]C10109506000134353\r\n")
    assert items == [
        Malformed(b"\xff\xfe", "not UTF-8 text"),
        Malformed(b"]C10109506000134353", "AI 01: '09506000134353' has a wrong check digit"),
    ]


# ------------------------------------------------------------- generated GS1


def _check(rng: random.Random, width: int) -> str:
    data = "".join(rng.choice("0123456789") for _ in range(width - 1))
    return data + str(check_digit(data))


_CSET82 = "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"


def _text(rng: random.Random, max_len: int, alphabet: str = _CSET82) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, max_len)))


def _date(rng: random.Random) -> str:
    yy, mm = rng.randrange(100), rng.randint(1, 12)
    # the window maps yy into 1977..2076 around now, where yy % 4 == 0 is a leap year
    year = 2000 + yy if yy % 4 else 2000
    day = rng.choice([0, rng.randint(1, calendar.monthrange(year, mm)[1])])
    return f"{yy:02d}{mm:02d}{day:02d}"


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


_GENERATORS: dict[str, Callable[[random.Random], str]] = {
    "00": lambda r: _check(r, 18),
    "01": lambda r: _check(r, 14),
    "02": lambda r: _check(r, 14),
    "10": lambda r: _text(r, 20),
    "11": _date,
    "13": _date,
    "15": _date,
    "17": _date,
    "20": lambda r: _digits(r, 2),
    "21": lambda r: _text(r, 20),
    "240": lambda r: _text(r, 30),
    "30": lambda r: _digits(r, r.randint(1, 8)),
    "37": lambda r: _digits(r, r.randint(1, 8)),
    "3100": lambda r: _digits(r, 6),
    "3103": lambda r: _digits(r, 6),
    "3300": lambda r: _digits(r, 6),
    "400": lambda r: _text(r, 30),
    "402": lambda r: _digits(r, 17),
    "410": lambda r: _check(r, 13),
    "422": lambda r: _digits(r, 3),
    "90": lambda r: _text(r, 30),
    "91": lambda r: _text(r, 90),
}


def _random_elements(rng: random.Random) -> list[tuple[str, str]]:
    ais = rng.sample(sorted(_GENERATORS), rng.randint(1, 6))
    if "3100" in ais and "3103" in ais:
        ais.remove("3103")
    return [(ai, _GENERATORS[ai](rng)) for ai in ais]


element_sets = st.randoms(use_true_random=False).map(_random_elements)


@given(element_sets, st.sampled_from(["]C1", "]d2", "]Q3", "]e0"]))
def test_encode_parse_round_trip(elements: list[tuple[str, str]], symbology: str) -> None:
    text = encode_element_string(elements, symbology=symbology)
    scan = parse_scan(text)
    assert scan.elements == dict(elements)
    assert list(scan.elements) == [ai for ai, _ in elements]
    if not any("(" in value or ")" in value for _, value in elements):
        assert parse_scan(format_hri(elements)).elements == dict(elements)


_scan_like = st.builds(
    lambda prefix, body: prefix + body,
    st.sampled_from(["", "]C1", "]d2", "]Q3", "]C0", "]E0", "]e0", "]X1", "("]),
    st.text(alphabet="0123456789()" + GS + "ABCxyz \r\n\x00é", max_size=60),
)


@given(st.one_of(st.text(), _scan_like))
def test_parse_scan_raises_only_decode_error(text: str) -> None:
    try:
        scan = parse_scan(text)
    except Gs1DecodeError:
        return
    assert scan.raw == text


@given(st.binary())
def test_parse_scan_of_any_bytes_raises_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(Gs1DecodeError):
        parse_scan(data.decode("latin-1"))


def _stream_piece(rng: random.Random) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:
        return encode_element_string(_random_elements(rng)).encode()
    if kind == 1:
        return rng.choice([b"\r", b"\n", b"\r\n", b"\n\r"])
    if kind == 2:
        return rng.randbytes(rng.randint(1, 40))
    if kind == 3:
        return b"w" * rng.randint(500, 1200)  # around the over-long limit
    if kind == 4:
        return b"plain-" + str(rng.randrange(10**6)).encode()
    return b"]C1" + rng.randbytes(rng.randint(0, 8))


streams = st.randoms(use_true_random=False).map(
    lambda r: b"".join(_stream_piece(r) for _ in range(r.randint(0, 25)))
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(streams, st.lists(st.integers(min_value=0, max_value=1500), max_size=20))
def test_any_chunking_yields_the_same_items(stream: bytes, cuts: list[int]) -> None:
    whole = LineDecoder().feed(stream)
    points = sorted({min(c, len(stream)) for c in cuts})
    chunked_decoder = LineDecoder()
    chunked: list[Gs1Scan | Malformed] = []
    for start, end in zip([0, *points], [*points, len(stream)], strict=True):
        chunked += chunked_decoder.feed(stream[start:end])
    assert chunked == whole


@settings(max_examples=30)
@given(streams)
def test_byte_at_a_time_yields_the_same_items(stream: bytes) -> None:
    decoder = LineDecoder()
    one_by_one = [item for i in range(len(stream)) for item in decoder.feed(stream[i : i + 1])]
    assert one_by_one == LineDecoder().feed(stream)


@given(st.binary(max_size=3000))
def test_line_decoder_never_raises(data: bytes) -> None:
    for item in LineDecoder().feed(data):
        assert isinstance(item, Gs1Scan | Malformed)
        if isinstance(item, Malformed):
            assert len(item.data) <= MAX_LINE_BYTES


# ------------------------------------------------------------------ biip oracle


def test_agrees_with_biip_on_generated_gs1_strings() -> None:
    rng = random.Random(20_260_101)
    for _ in range(3000):
        elements = _random_elements(rng)
        text = encode_element_string(elements, symbology="")
        ours = parse_scan("]C1" + text)
        theirs = {es.ai.ai: es for es in GS1Message.parse(text).element_strings}
        assert {ai: es.value for ai, es in theirs.items()} == ours.elements, text
        if "01" in theirs:
            assert theirs["01"].gtin is not None
            assert ours.gtin == theirs["01"].value
        if "00" in theirs:
            assert ours.sscc == theirs["00"].value
        assert ours.lot == (theirs["10"].value if "10" in theirs else None)
        assert ours.serial == (theirs["21"].value if "21" in theirs else None)
        assert ours.expiry == (theirs["17"].date if "17" in theirs else None)
        assert ours.best_before == (theirs["15"].date if "15" in theirs else None)
        assert ours.production_date == (theirs["11"].date if "11" in theirs else None)
        assert ours.count == (int(theirs["37"].value) if "37" in theirs else None)
        if "3100" in theirs or "3103" in theirs:
            weight = theirs.get("3100") or theirs["3103"]
            assert ours.net_weight_kg == weight.decimal
