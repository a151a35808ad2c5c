"""Live state per site, pushed to websocket clients: a snapshot, then numbered deltas.

Each site has a version that grows by one per delta message; a client that sees a gap
knows it missed one and reconnects for a fresh snapshot. Balances in deltas are absolute
(the new quantity), so applying a delta twice is harmless. Device readings are conflated:
a delta carries the latest reading of each device in the flush, not every one.

Frames are encoded once and the same bytes go to every client of the site. A client
whose queue is full is cut off (it would only fall further behind) and must resync.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import orjson

from warelink.hub.ingest.commit import FlushResult
from warelink.hub.stock.balances import BalanceChange
from warelink.protocol.messages import Event

CLIENT_QUEUE = 1000  # frames waiting for one client at most


def reading(event: Event) -> dict[str, Any]:
    return {
        "device": event.device,
        "gateway": event.gateway,
        "type": event.type,
        "seq": event.seq,
        "occurred_at": event.occurred_at.isoformat(),
        "body": msgspec.to_builtins(event.body),
    }


def balance(change: BalanceChange) -> dict[str, Any]:
    return {
        "location": change.location,
        "sku": change.sku,
        "lot": change.lot,
        "serial": change.serial,
        "lpn": change.lpn,
        "status": change.status,
        "quantity": float(change.quantity),
    }


class Subscriber:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(CLIENT_QUEUE)
        self.dropped = False

    def offer(self, frame: str) -> None:
        if self.dropped:
            return
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.dropped = True
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(None)  # tells the sender to close: too slow


class LiveHub:
    def __init__(self, epoch: str) -> None:
        self.epoch = epoch  # changes when the hub restarts: versions start again
        self.versions: dict[str, int] = defaultdict(int)
        self.devices: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.subscribers: dict[str, set[Subscriber]] = defaultdict(set)

    @contextmanager
    def subscribe(self, site: str) -> Iterator[Subscriber]:
        subscriber = Subscriber()
        self.subscribers[site].add(subscriber)
        try:
            yield subscriber
        finally:
            self.subscribers[site].discard(subscriber)

    def snapshot(self, site: str, version: int, balances: list[BalanceChange]) -> str:
        """``version`` is the site's version read *before* the balances were queried:
        every delta after it reaches the subscriber, so none is lost in between."""
        return orjson.dumps(
            {
                "kind": "snapshot",
                "site": site,
                "epoch": self.epoch,
                "version": version,
                "at": dt.datetime.now(dt.UTC).isoformat(),
                "balances": [balance(b) for b in balances],
                "devices": list(self.devices[site].values()),
            }
        ).decode()

    def on_commit(self, result: FlushResult) -> None:
        """Turn one committed flush into one delta per site that changed."""
        readings: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        for site, events in result.events:
            latest = {event.device: event for event in events}  # conflated: the latest wins
            readings[site].update((device, reading(e)) for device, e in latest.items())
        balances: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for change in result.balances:
            balances[change.site].append(balance(change))
        for site in readings.keys() | balances.keys():
            self.devices[site].update(readings[site])
            self.versions[site] += 1
            frame = orjson.dumps(
                {
                    "kind": "delta",
                    "site": site,
                    "epoch": self.epoch,
                    "version": self.versions[site],
                    "devices": list(readings[site].values()),
                    "balances": balances[site],
                }
            ).decode()
            for subscriber in self.subscribers[site]:
                subscriber.offer(frame)
