"""Wire messages built by hand, as a test (or a hostile sender) publishes them itself."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from warelink.protocol import wire
from warelink.protocol.ids import new_event_id
from warelink.protocol.messages import Event, EventBatch, EventBody, Receipt, TrafficClass

GTIN = "09506000134352"


def event(gateway: str, seq: int, body: EventBody | None = None, **fields: Any) -> bytes:
    """An event's bytes: a one-unit receipt at DOCK-1 unless ``body`` says otherwise;
    ``fields`` override any other field (a date, a device), checked or not."""
    body = body or Receipt(location="DOCK-1", gtin=GTIN, quantity=1)
    values: dict[str, Any] = {
        "gateway": gateway, "seq": seq, "id": new_event_id(), "device": "scanner",
        "cls": TrafficClass.LEDGER, "occurred_at": dt.datetime.now(dt.UTC), "body": body,
    } | fields  # fmt: skip
    return wire.encode_event(Event(**values))


def batch(gateway: str, first: int, last: int, events: list[bytes]) -> bytes:
    """A batch covering ``[first, last]`` carrying ``events`` as they are."""
    return wire.encode(
        EventBatch(gateway=gateway, session=1, first_seq=first, last_seq=last,
                   sent_at=dt.datetime.now(dt.UTC), events=[msgspec.Raw(e) for e in events])
    )  # fmt: skip
