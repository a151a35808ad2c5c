"""RFID read smoothing: examples and properties over random read sequences."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warelink.protocol.messages import ZoneChange, ZoneTransition
from warelink.protocol.rfid_smoothing import ZoneSmoother

ANTENNAS = {1: "receive", 2: "receive", 3: "ship", 4: "storage"}
TAG = "3074257BF7194E4000001A85"


def _changes(out: list[ZoneTransition]) -> list[tuple[ZoneChange, str, str | None]]:
    return [(t.change, t.zone, t.previous_zone) for t in out]


def test_arrive_move_depart() -> None:
    s = ZoneSmoother(ANTENNAS)
    decoded = {"scheme": "sgtin-96", "gtin": "80614141123458", "serial": "6789"}
    first = s.read(TAG, 1, -60.0, 0.0, decoded)
    assert first == [ZoneTransition(TAG, ZoneChange.ARRIVED, "receive", decoded=decoded)]
    assert s.read(TAG, 2, -58.0, 0.2) == []  # the same zone through another antenna
    assert s.read(TAG, 3, -50.0, 0.4) == []  # one read in a new zone is not enough
    moved = s.read(TAG, 3, -49.0, 0.6)
    assert _changes(moved) == [(ZoneChange.MOVED, "ship", "receive")]
    assert moved[0].decoded == decoded
    assert s.where(TAG) == "ship"
    assert s.tick(5.5) == []
    departed = s.tick(5.6)
    assert _changes(departed) == [(ZoneChange.DEPARTED, "ship", None)]
    assert s.where(TAG) is None and s.present == 0
    assert _changes(s.read(TAG, 4, -70.0, 9.0)) == [(ZoneChange.ARRIVED, "storage", None)]


def test_a_weaker_neighbour_does_not_steal_the_tag() -> None:
    s = ZoneSmoother(ANTENNAS, min_reads=2, rssi_offset_db=3.0)
    s.read(TAG, 1, -50.0, 0.0)
    for i in range(10):
        assert s.read(TAG, 3, -52.0 + (i % 2), 0.1 * (i + 1)) == []  # not 3 dB better
        assert s.read(TAG, 1, -50.0, 0.1 * (i + 1)) == []
    assert s.where(TAG) == "receive"


def test_move_when_the_old_zone_went_quiet_without_rssi() -> None:
    s = ZoneSmoother(ANTENNAS, departed_after_s=2.0)
    s.read(TAG, 1, None, 0.0)
    assert s.read(TAG, 3, None, 1.0) == []
    assert s.read(TAG, 3, None, 1.5) == []  # both averages unknown: no move yet
    moved = s.read(TAG, 3, None, 2.1)  # the old zone's read aged out: the count decides
    assert _changes(moved) == [(ZoneChange.MOVED, "ship", "receive")]


def test_read_after_a_long_silence_departs_then_arrives_without_a_tick() -> None:
    s = ZoneSmoother(ANTENNAS)
    s.read(TAG, 1, -60.0, 0.0)
    out = s.read(TAG, 1, -60.0, 10.0)
    assert _changes(out) == [
        (ZoneChange.DEPARTED, "receive", None),
        (ZoneChange.ARRIVED, "receive", None),
    ]


def test_unknown_antenna_is_ignored_and_bad_settings_rejected() -> None:
    s = ZoneSmoother(ANTENNAS)
    assert s.read(TAG, 9, -40.0, 0.0) == []
    assert s.present == 0
    with pytest.raises(ValueError):
        ZoneSmoother(ANTENNAS, min_reads=0)
    with pytest.raises(ValueError):
        ZoneSmoother(ANTENNAS, departed_after_s=0)


# ------------------------------------------------------------------ properties

_steps = st.lists(
    st.tuples(
        st.sampled_from(["A", "B", "C"]),  # tag
        st.integers(1, 5),  # antenna (5 is in no zone)
        st.none() | st.floats(-90, -30),  # rssi
        st.floats(0, 3),  # time step
        st.booleans(),  # tick after?
    ),
    max_size=80,
)


def _play(steps: list[tuple[str, int, float | None, float, bool]]) -> list[ZoneTransition]:
    s = ZoneSmoother(ANTENNAS, departed_after_s=2.0)
    now = 0.0
    out: list[ZoneTransition] = []
    for tag, antenna, rssi, dt, tick in steps:
        now += dt
        out += s.read(tag, antenna, rssi, now)
        if tick:
            out += s.tick(now)
    out += s.tick(now + 10.0)
    assert s.present == 0
    return out


@given(_steps)
def test_arrived_and_departed_alternate_per_tag(
    steps: list[tuple[str, int, float | None, float, bool]],
) -> None:
    out = _play(steps)
    for tag in "ABC":
        present = False
        zone: str | None = None
        for t in out:
            if t.epc != tag:
                continue
            if t.change is ZoneChange.ARRIVED:
                assert not present  # never two Arrived without a Departed between
                present, zone = True, t.zone
            elif t.change is ZoneChange.MOVED:
                assert present and t.previous_zone == zone and t.zone != zone
                zone = t.zone
            else:
                assert present and t.zone == zone  # every Departed follows an Arrived
                present, zone = False, None
        assert not present


@given(_steps)
def test_reads_in_one_zone_never_move(
    steps: list[tuple[str, int, float | None, float, bool]],
) -> None:
    one_zone = [(tag, 1 + antenna % 2, rssi, dt, tick) for tag, antenna, rssi, dt, tick in steps]
    out = _play(one_zone)
    assert all(t.change is not ZoneChange.MOVED for t in out)
    assert all(t.zone == "receive" for t in out)


@given(_steps)
def test_every_read_in_a_zone_is_accounted_for(
    steps: list[tuple[str, int, float | None, float, bool]],
) -> None:
    out = _play(steps)
    seen = {tag for tag, antenna, *_ in steps if antenna in ANTENNAS}
    assert {t.epc for t in out if t.change is ZoneChange.ARRIVED} == seen
