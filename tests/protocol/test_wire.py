"""The session wire form: golden bytes, round trips, and nothing but typed errors."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from warelink.protocol import wire
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
    # [1, {"k": "ack", "gateway": "gw-a", "seq": 42}]
    assert wire.encode(Ack(gateway="gw-a", seq=42)) == (
        b"\x92\x01\x83\xa1k\xa3ack\xa7gateway\xa4gw-a\xa3seq\x2a"
    )


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
            st.floats(allow_nan=False, allow_infinity=False),
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
