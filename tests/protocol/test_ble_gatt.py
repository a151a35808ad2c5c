"""BLE GATT payloads: Weight Measurement golden bytes, round trips, the scan framer.

The golden vectors are worked by hand from the field layout of the GATT Specification
Supplement (Weight Measurement, Date Time, Weight Scale Feature); the SIG publishes no
byte examples for this characteristic.
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warelink.protocol.ble_gatt import (
    MAX_SCAN_BYTES,
    BleDateTime,
    BleDecodeError,
    Malformed,
    ScanFramer,
    WeightMeasurement,
    WeightScaleFeature,
    WeightUnit,
    decode_weight_measurement,
    decode_weight_scale_feature,
    encode_weight_measurement,
    encode_weight_scale_feature,
    split_notifications,
)
from warelink.protocol.errors import DecodeError

# ------------------------------------------------------------ weight measurement

GOLDEN = [
    # 70.000 kg = 14000 × 0.005 kg = 0x36B0
    (bytes.fromhex("00 b0 36"), WeightMeasurement.of(70.0), 70.0, "kg"),
    # 154.32 lb = 15432 × 0.01 lb = 0x3C48
    (bytes.fromhex("01 48 3c"), WeightMeasurement.of(154.32, WeightUnit.LB), 154.32, "lb"),
    # 0.005 kg, the smallest step
    (bytes.fromhex("00 01 00"), WeightMeasurement(weight_counts=1), 0.005, "kg"),
    # 327.675 kg, the largest value (0xFFFE)
    (bytes.fromhex("00 fe ff"), WeightMeasurement(weight_counts=0xFFFE), 327.67, "kg"),
    # 72.4 kg at 2024-03-15 08:30:05: year 2024 = 0x07E8
    (
        bytes.fromhex("02 90 38 e8 07 03 0f 08 1e 05"),
        WeightMeasurement.of(72.4, timestamp=BleDateTime(2024, 3, 15, 8, 30, 5)),
        72.4,
        "kg",
    ),
    # user 3, BMI 22.9 (229 = 0x00E5), height 1.750 m (1750 = 0x06D6), 70.2 kg
    (
        bytes.fromhex("0c d8 36 03 e5 00 d6 06"),
        WeightMeasurement.of(70.2, user_id=3, bmi=22.9, height=1.75),
        70.2,
        "kg",
    ),
    # everything, imperial: 200.00 lb, 2025-12-31 23:59:59, user 255 (unknown),
    # BMI 27.1, height 72.0 in (720 = 0x02D0)
    (
        bytes.fromhex("0f 20 4e e9 07 0c 1f 17 3b 3b ff 0f 01 d0 02"),
        WeightMeasurement.of(
            200.0,
            WeightUnit.LB,
            timestamp=BleDateTime(2025, 12, 31, 23, 59, 59),
            user_id=255,
            bmi=27.1,
            height=72.0,
        ),
        200.0,
        "lb",
    ),
]


@pytest.mark.parametrize(("data", "value", "weight", "unit"), GOLDEN)
def test_golden_weight_measurements(
    data: bytes, value: WeightMeasurement, weight: float, unit: str
) -> None:
    decoded = decode_weight_measurement(data)
    assert decoded == value
    assert decoded.weight == pytest.approx(weight, abs=0.005)
    assert decoded.unit == unit
    assert encode_weight_measurement(value) == data


def test_optional_fields_decode_to_values() -> None:
    full = decode_weight_measurement(GOLDEN[-1][0])
    assert full.timestamp is not None
    assert full.timestamp.to_datetime() == dt.datetime(2025, 12, 31, 23, 59, 59)
    assert (full.user_id, full.bmi, full.height) == (255, 27.1, 72.0)
    si = decode_weight_measurement(GOLDEN[5][0])
    assert (si.user_id, si.bmi, si.height) == (3, 22.9, 1.75)


def test_unsuccessful_measurement_is_0xffff() -> None:
    value = decode_weight_measurement(bytes.fromhex("00 ff ff"))
    assert value.weight is None
    assert not value.successful
    assert encode_weight_measurement(value) == bytes.fromhex("00 ff ff")
    with pytest.raises(ValueError):
        encode_weight_measurement(WeightMeasurement(weight_counts=0xFFFF))


def test_partial_timestamp_has_no_datetime() -> None:
    value = decode_weight_measurement(bytes.fromhex("02 10 27 00 00 00 00 00 00 00"))
    assert value.timestamp == BleDateTime(0, 0, 0)
    assert value.timestamp.to_datetime() is None


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty"),
        (bytes.fromhex("00 10"), "weight cut"),
        (bytes.fromhex("02 10 27 e8 07 03"), "time stamp cut"),
        (bytes.fromhex("04 10 27"), "user id missing"),
        (bytes.fromhex("08 10 27 e5 00"), "height missing"),
        (bytes.fromhex("00 10 27 00"), "extra byte without a reserved flag"),
        (bytes.fromhex("02 10 27 e8 07 0d 01 00 00 00"), "month 13"),
        (bytes.fromhex("02 10 27 e8 07 02 1e 00 00 00"), "30 February"),
        (bytes.fromhex("02 10 27 e8 07 02 01 18 00 00"), "hour 24"),
        (bytes.fromhex("02 10 27 10 00 02 01 00 00 00"), "year 16"),
    ],
)
def test_invalid_weight_measurements(data: bytes, why: str) -> None:
    with pytest.raises(BleDecodeError):
        decode_weight_measurement(data)


def test_decode_error_is_the_shared_base() -> None:
    assert issubclass(BleDecodeError, DecodeError)


def test_reserved_flag_bits_are_ignored_with_their_data() -> None:
    value = decode_weight_measurement(bytes.fromhex("10 b0 36 aa bb"))
    assert value == WeightMeasurement.of(70.0)


@pytest.mark.parametrize(
    "value",
    [
        WeightMeasurement(weight_counts=0x10000),
        WeightMeasurement(weight_counts=1, user_id=256),
        WeightMeasurement(weight_counts=1, bmi_counts=10),
        WeightMeasurement(weight_counts=1, timestamp=BleDateTime(2024, 2, 30)),
    ],
)
def test_encode_refuses_what_does_not_fit(value: WeightMeasurement) -> None:
    with pytest.raises(ValueError):
        encode_weight_measurement(value)


_timestamps = st.one_of(
    st.none(),
    st.datetimes(min_value=dt.datetime(1582, 1, 1), max_value=dt.datetime(9999, 12, 31)).map(
        BleDateTime.from_datetime
    ),
    st.just(BleDateTime(0, 0, 0, 12, 0, 0)),
)
_measurements = st.builds(
    WeightMeasurement,
    unit=st.sampled_from(WeightUnit),
    weight_counts=st.one_of(st.none(), st.integers(0, 0xFFFE)),
    timestamp=_timestamps,
    user_id=st.one_of(st.none(), st.integers(0, 255)),
).flatmap(
    lambda m: st.one_of(
        st.just(m),
        st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)).map(
            lambda bh: WeightMeasurement(
                unit=m.unit,
                weight_counts=m.weight_counts,
                timestamp=m.timestamp,
                user_id=m.user_id,
                bmi_counts=bh[0],
                height_counts=bh[1],
            )
        ),
    )
)


@given(_measurements)
def test_round_trip(value: WeightMeasurement) -> None:
    assert decode_weight_measurement(encode_weight_measurement(value)) == value


@given(st.binary(max_size=24))
def test_decoder_raises_only_decode_errors(data: bytes) -> None:
    try:
        value = decode_weight_measurement(data)
    except BleDecodeError:
        return
    assert value.weight is None or value.weight >= 0


@given(st.integers(0, 0xFFFE), st.sampled_from(WeightUnit))
def test_weight_of_its_own_value_is_the_same_counts(counts: int, unit: WeightUnit) -> None:
    value = WeightMeasurement(unit=unit, weight_counts=counts)
    assert value.weight is not None
    assert WeightMeasurement.of(value.weight, unit).weight_counts == counts


def test_weight_scale_feature() -> None:
    # time stamp supported, 0.005 kg resolution (7 << 3 = 0x38), height 0.001 m (3 << 7)
    data = bytes.fromhex("b9 01 00 00")
    feature = WeightScaleFeature(timestamp=True, weight_resolution=7, height_resolution=3)
    assert decode_weight_scale_feature(data) == feature
    assert encode_weight_scale_feature(feature) == data
    assert feature.weight_step_kg == 0.005
    with pytest.raises(BleDecodeError):
        decode_weight_scale_feature(b"\x00")


# ------------------------------------------------------------------ scan framer

SCAN = "]C1010950600013435210ABC123"


def test_framer_joins_notifications() -> None:
    framer = ScanFramer()
    data = (SCAN + "\r").encode()
    chunks = split_notifications(data, 20)
    assert [len(c) for c in chunks] == [20, 8]
    assert framer.feed(chunks[0]) == []
    assert framer.pending == 20
    assert framer.feed(chunks[1]) == [SCAN]
    assert framer.pending == 0


def test_framer_terminators_and_blank_lines() -> None:
    framer = ScanFramer()
    assert framer.feed(b"A1\rB2\nC3\r\n\r\nD4\n\r") == ["A1", "B2", "C3", "D4"]


def test_framer_bad_utf8_and_overlong() -> None:
    framer = ScanFramer()
    out = framer.feed(b"\xff\xfe\r" + b"x" * (MAX_SCAN_BYTES + 5))
    assert isinstance(out[0], Malformed) and out[0].reason == "not UTF-8 text"
    assert isinstance(out[1], Malformed) and "longer" in out[1].reason
    assert framer.feed(b"rest of it\rOK\r") == ["OK"]


def test_framer_reset_drops_a_partial_scan() -> None:
    framer = ScanFramer()
    framer.feed(b"]C1010950")
    framer.reset()
    assert framer.feed(b"NEXT\r") == ["NEXT"]


_lines = st.lists(
    st.one_of(
        st.text(st.characters(blacklist_characters="\r\n"), max_size=40).map(str.encode),
        st.binary(max_size=40),
        st.just(b"y" * (MAX_SCAN_BYTES + 3)),
    ),
    max_size=8,
)


@given(_lines, st.sampled_from([b"\r", b"\n", b"\r\n"]), st.data())
def test_framer_chunking_invariant(
    lines: list[bytes], terminator: bytes, data: st.DataObject
) -> None:
    stream = b"".join(line + terminator for line in lines)
    whole = ScanFramer().feed(stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    framer = ScanFramer()
    pieces: list[str | Malformed] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        pieces += framer.feed(stream[start:cut])
        start = cut
    assert pieces == whole
    assert framer.pending == 0


@given(st.binary(max_size=200), st.integers(1, 64))
def test_split_notifications_rejoins(data: bytes, size: int) -> None:
    chunks = split_notifications(data, size)
    assert b"".join(chunks) == data
    assert all(1 <= len(c) <= size for c in chunks)
