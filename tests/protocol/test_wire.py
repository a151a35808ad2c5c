"""The session wire form: golden bytes, round trips, and nothing but typed errors."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from warelink.protocol import limits, wire
from warelink.protocol.messages import (
    Ack,
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
    TrafficClass,
    WeightReading,
)
from warelink.protocol.wire import DecodedBatch, WireDecodeError

WHEN = dt.datetime(2026, 11, 25, 8, 30, tzinfo=dt.UTC)
EVENT_ID = uuid.UUID("019ab6f0-0000-7000-8000-000000000001")


def event(seq: int, body: object) -> Event:
    return Event(
        gateway="gw-a", seq=seq, id=EVENT_ID, device="scale-1", cls=TrafficClass.LEDGER,
        occurred_at=WHEN, body=body,  # type: ignore[arg-type]
    )  # fmt: skip


def test_ack_golden_bytes() -> None:
    # [1, {"k": "ack", "gateway": "gw-a", "seq": 42, "outbox": "ob1"}]
    assert wire.encode(Ack(gateway="gw-a", seq=42, outbox="ob1")) == (
        b"\x92\x01\x84\xa1k\xa3ack\xa7gateway\xa4gw-a\xa3seq\x2a\xa6outbox\xa3ob1"
    )
    # An ack from a hub before outbox identities (no "outbox") still decodes: it names none.
    old = b"\x92\x01\x83\xa1k\xa3ack\xa7gateway\xa4gw-a\xa3seq\x2a"
    assert wire.decode(old) == Ack(gateway="gw-a", seq=42, outbox="")


def test_event_wire_map_is_the_documented_one() -> None:
    """An event is a map with these keys; the body is tagged by ``type``."""
    documented = msgspec.msgpack.encode(
        {
            "gateway": "gw-a", "seq": 7, "id": EVENT_ID.bytes, "device": "scale-1", "cls": 1,
            "occurred_at": WHEN,
            "body": {"type": "weight", "weight": 12.5, "unit": "kg", "stable": True},
        }
    )  # fmt: skip
    decoded = wire.decode_event(documented)
    assert decoded == event(7, WeightReading(12.5, "kg", True))
    assert decoded.type == "weight"
    assert msgspec.msgpack.decode(wire.encode_event(decoded)) == msgspec.msgpack.decode(documented)


@pytest.mark.parametrize(
    "message",
    [
        Ack(gateway="gw-a", seq=1),
        Birth(gateway="gw-a", site="site-1", session=3, last_seq=99, devices=["scale-1"]),
        Death(gateway="gw-a", session=3),
        HubPresence(online=True, instance="abc"),
        Command(key="k1", device="scale-1", action="zero", expires_at=WHEN),
        ReplayRequest(gateway="gw-a", from_seq=5, to_seq=9),
        GatewayStats(gateway="gw-a", session=2, sent_at=WHEN, counters={"depth": 3.0}),
    ],
)
def test_session_messages_round_trip(message: object) -> None:
    assert wire.decode(wire.encode(message)) == message  # type: ignore[arg-type]


def test_batch_round_trip_carries_events_unchanged() -> None:
    events = [
        event(1, WeightReading(1.25, "kg", False)),
        event(2, Scan(raw="]C1010950600013435217261231", symbology="gs1-128",
                      elements={"01": "09506000134352", "17": "261231"})),
        event(3, Receipt(location="DOCK-1", gtin="09506000134352", quantity=4, lot="L1",
                         expiry=dt.date(2026, 12, 31))),
        event(4, DeviceStatus(state=DeviceState.OFFLINE, detail="port gone")),
    ]  # fmt: skip
    batch = EventBatch(
        gateway="gw-a", session=1, first_seq=1, last_seq=6, sent_at=WHEN,
        events=[msgspec.Raw(wire.encode_event(e)) for e in events],
    )  # fmt: skip
    decoded = wire.decode(wire.encode(batch))
    assert decoded == DecodedBatch(
        gateway="gw-a", session=1, first_seq=1, last_seq=6, sent_at=WHEN, events=events
    )
    assert wire.decode_batch(wire.encode(batch)) == decoded


def test_wrong_version_is_refused_by_name() -> None:
    data = msgspec.msgpack.encode((2, {"k": "ack", "gateway": "g", "seq": 1}))
    with pytest.raises(WireDecodeError, match="unsupported wire version 2"):
        wire.decode(data)


def test_batch_decoder_refuses_other_messages() -> None:
    with pytest.raises(WireDecodeError):
        wire.decode_batch(wire.encode(Ack(gateway="g", seq=1)))


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_wire_decode_error(data: bytes) -> None:
    for decode in (wire.decode, wire.decode_batch, wire.decode_event):
        with contextlib.suppress(WireDecodeError):
            decode(data)


@given(
    st.lists(
        st.tuples(
            st.floats(min_value=-limits.MEASURE_MAX, max_value=limits.MEASURE_MAX),
            st.sampled_from(["kg", "g", "lb"]),
            st.booleans(),
        ),
        max_size=20,
    ),
    st.integers(min_value=1, max_value=2**62),
)
def test_any_batch_round_trips(readings: list[tuple[float, str, bool]], first: int) -> None:
    events = [event(first + i, WeightReading(*r)) for i, r in enumerate(readings)]
    batch = EventBatch(
        gateway="gw-a", session=9, first_seq=first, last_seq=first + len(events), sent_at=WHEN,
        events=[msgspec.Raw(wire.encode_event(e)) for e in events],
    )  # fmt: skip
    assert wire.decode_batch(wire.encode(batch)).events == events


@given(st.binary(max_size=200))
def test_mutated_valid_payloads_raise_only_wire_decode_error(noise: bytes) -> None:
    good = wire.encode(
        EventBatch(
            gateway="g",
            session=1,
            first_seq=1,
            last_seq=1,
            sent_at=WHEN,
            events=[msgspec.Raw(wire.encode_event(event(1, WeightReading(1.0, "kg", True))))],
        )
    )
    for cut in (len(good) // 3, len(good) // 2, len(good) - 1):
        with contextlib.suppress(WireDecodeError):
            wire.decode(good[:cut] + noise)


# ------------------------------------------------------------------------- bounds


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (Birth(gateway="gw-a", site="s", session=2**63, last_seq=0), "$.session"),
        (Birth(gateway="gw-a", site="s", session=1, last_seq=2**63), "$.last_seq"),
        (Birth(gateway="gw-a", site="s", session=1, last_seq=1, devices=["a\x00"]), "devices"),
        (Birth(gateway="gw a", site="s", session=1, last_seq=1), "$.gateway"),
        (GatewayStats(gateway="gw-a", session=1, sent_at=WHEN, counters={"x\x00": 1.0}),
         "counters"),
        (GatewayStats(gateway="gw-a", session=1, sent_at=WHEN, counters={"x": float("nan")}),
         "counters"),
        (Ack(gateway="gw-a", seq=-1), "$.seq"),
        (Command(key="k" * 129, device="d", action="a"), "$.key"),
        (Command(key="k", device="d", action="a", args={"a": [[[[[[[[[[1]]]]]]]]]]}), "nested"),
    ],
)  # fmt: skip
def test_values_out_of_bounds_are_refused_naming_the_field(message: object, field: str) -> None:
    with pytest.raises(WireDecodeError, match=field.replace("$", "\\$")):
        wire.decode(wire.encode(message))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (Receipt(location="L" * 65, gtin="09506000134352", quantity=1), "location"),
        (Receipt(location="DOCK\x00", gtin="09506000134352", quantity=1), "location"),
        (Receipt(location="DOCK", gtin="G\x00", quantity=1), "gtin"),
        (Receipt(location="DOCK", gtin="09506000134352", quantity=2**62), "quantity"),
        (Receipt(location="DOCK", gtin="09506000134352", quantity=0), "quantity"),
        (WeightReading(float("inf"), "kg", True), "weight"),
        (Scan(raw="x" * 4297, symbology="qr"), "raw"),
        (DeviceStatus(state=DeviceState.ONLINE, detail="d" * 2001), "detail"),
    ],
)  # fmt: skip
def test_event_bodies_out_of_bounds_are_refused(body: object, field: str) -> None:
    with pytest.raises(WireDecodeError, match=f"body.{field}"):
        wire.decode_event(wire.encode_event(event(1, body)))


def test_a_batch_is_split_into_good_and_bad_events() -> None:
    good = [event(1, WeightReading(1.0, "kg", True)), event(3, WeightReading(2.0, "kg", True))]
    bad = wire.encode_event(event(2, Receipt(location="L" * 100, gtin="09506000134352",
                                             quantity=1)))  # fmt: skip
    broken = wire.encode_event(event(4, DeviceStatus(state=DeviceState.ONLINE))).replace(
        b"scale-1", b"\xff" * 7
    )
    payload = wire.encode(
        EventBatch(gateway="gw-a", session=1, first_seq=1, last_seq=4, sent_at=WHEN,
                   events=[msgspec.Raw(wire.encode_event(good[0])), msgspec.Raw(bad),
                           msgspec.Raw(wire.encode_event(good[1])), msgspec.Raw(broken)])
    )  # fmt: skip
    with pytest.raises(WireDecodeError):
        wire.decode_batch(payload)
    split = wire.split_batch(payload)
    assert split.events == good
    assert [(b.seq, b.raw) for b in split.bad] == [(2, bad), (4, broken)]
    assert "location" in split.bad[0].reason and "UTF-8" in split.bad[1].reason
    assert (split.envelope.first_seq, split.envelope.last_seq) == (1, 4)


def test_a_batch_whose_envelope_is_bad_cannot_be_split() -> None:
    payload = wire.encode(
        EventBatch(gateway="gw-a", session=1, first_seq=0, last_seq=4, sent_at=WHEN, events=[])
    )
    with pytest.raises(WireDecodeError, match="first_seq"):
        wire.split_batch(payload)


def test_messages_beyond_the_size_limit_are_refused_before_decoding() -> None:
    with pytest.raises(WireDecodeError, match="at most"):
        wire.decode(b"\x00" * (limits.MESSAGE_BYTES_MAX + 1))


def test_event_times_are_bounded_by_the_receivers_clock() -> None:
    now = WHEN
    assert limits.event_problem(now - dt.timedelta(days=399), now) is None
    assert limits.event_problem(now + dt.timedelta(hours=23), now) is None
    assert "days old" in (limits.event_problem(dt.datetime(1, 1, 1, tzinfo=dt.UTC), now) or "")
    assert "ahead" in (limits.event_problem(dt.datetime(9999, 1, 1, tzinfo=dt.UTC), now) or "")
    assert "time zone" in (limits.event_problem(dt.datetime(2026, 1, 1), now) or "")
