"""Hub ingest: event batches from the broker into PostgreSQL, exactly once, then acks.

One flush = one transaction: the events (deduplicated on (gateway, seq)), the ledger
effect of the new ones, and each gateway's ack watermark. Only after the commit does the
hub publish the cumulative ack (DESIGN.md, decision 2); a crash before it means the
edge resends and the duplicates are dropped.
"""

from __future__ import annotations

import asyncio
import bisect
import datetime as dt
import operator
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiomqtt
import msgspec
import psycopg
import structlog
from psycopg import AsyncConnection
from psycopg.types.json import set_json_dumps

from warelink.hub import store
from warelink.hub.settings import HubSettings
from warelink.protocol import wire
from warelink.protocol.backoff import Backoff
from warelink.protocol.errors import DecodeError
from warelink.protocol.messages import Ack, Birth, Death, Event, HubPresence, Receipt
from warelink.protocol.topics import Kind, Topics

log = structlog.get_logger(__name__)


@dataclass
class IngestStats:
    messages: int = 0
    events_committed: int = 0
    duplicates_dropped: int = 0
    malformed_dropped: int = 0
    flushes: int = 0


@dataclass
class FlushResult:
    """What one committed flush changed, for acks and live deltas."""

    acks: dict[str, tuple[str, int]] = field(default_factory=dict)  # gateway → (site, seq)
    events: list[tuple[str, list[Event]]] = field(default_factory=list)  # new, per gateway
    balances: list[store.BalanceChange] = field(default_factory=list)
    committed: int = 0
    duplicates: int = 0
    rejected: int = 0  # events under a site their gateway does not belong to


class Malformed(Exception):
    pass


@dataclass(frozen=True)
class SessionIncoming:
    """A birth or death, handled in its place between event flushes."""

    site: str
    gateway: str
    payload: bytes


Incoming = tuple[str, list[Event]] | SessionIncoming  # (site, events) of an events message


def decode_events(topic: str, payload: bytes, topics: Topics) -> tuple[str, list[Event]]:
    """(site, events) of one events message, or Malformed saying why not."""
    try:
        where = topics.parse(topic)
        batch = wire.decode_batch(payload)
    except DecodeError as exc:
        raise Malformed(str(exc)) from None
    if batch.gateway != where.gateway:
        raise Malformed(f"batch of gateway {batch.gateway!r} on the topic of {where.gateway!r}")
    for event in batch.events:
        if event.gateway != where.gateway:
            raise Malformed(f"event of gateway {event.gateway!r} in a batch of {where.gateway!r}")
        if event.seq < 1:
            raise Malformed(f"event seq {event.seq} is not positive")
    return where.site, batch.events


def _in_order(events: list[Event]) -> list[Event]:
    """The events by seq, each seq once (the first copy wins)."""
    seqs = [e.seq for e in events]
    if all(map(operator.lt, seqs, seqs[1:])):
        return events  # the usual case: one or more batches in send order
    unique: dict[int, Event] = {}
    for event in events:
        unique.setdefault(event.seq, event)
    return [unique[seq] for seq in sorted(unique)]


async def commit_events(
    batches: Sequence[tuple[str, list[Event]]], *, conn: AsyncConnection
) -> FlushResult:
    """Store the batches' events exactly once with their ledger effects; one transaction.

    Works per gateway on whole lists: the common case (a gateway's new events in order,
    past everything stored) costs a few list operations and one COPY, no per-event dict.
    """
    result = FlushResult()
    offered: dict[str, list[Event]] = {}
    sites: dict[str, str] = {}
    for site, events in batches:
        if events:
            gateway = events[0].gateway
            offered.setdefault(gateway, []).extend(events)
            sites.setdefault(gateway, site)
    if not offered:
        return result
    now = dt.datetime.now(dt.UTC)
    async with conn.transaction():
        await store.ensure_gateways(((s, g) for g, s in sites.items()), conn=conn)
        marks = await store.lock_gateways(list(sites), conn=conn)
        fresh_rows: list[store.Row] = []
        maybe_rows: list[store.Row] = []
        new: dict[str, list[Event]] = {}
        maybe: dict[str, list[Event]] = {}
        for gateway, mark in marks.items():
            site = sites[gateway]
            if mark.site != site:  # a gateway id reused under another site
                result.rejected += len(offered.pop(gateway))
                continue
            events = _in_order(offered[gateway])
            seqs = [e.seq for e in events]
            # seq <= acked: stored; (acked, max_seq]: maybe stored; > max_seq: new.
            low = bisect.bisect_right(seqs, mark.acked_seq)
            high = bisect.bisect_right(seqs, mark.max_seq, lo=low)
            new[gateway] = events[high:]
            fresh_rows += store.event_rows(site, events[high:], now)
            if high > low:
                maybe[gateway] = events[low:high]
                maybe_rows += store.event_rows(site, events[low:high], now)
        if fresh_rows:
            await store.copy_events(fresh_rows, conn=conn)
        if maybe_rows:
            inserted = await store.insert_events_dedup(maybe_rows, conn=conn)
            for gateway, events in maybe.items():
                stored = [e for e in events if (gateway, e.seq) in inserted]
                new[gateway] = stored + new[gateway]
        for gateway, events in new.items():
            mark = marks[gateway]
            stored_past_gap = mark.max_seq > mark.acked_seq
            if events:
                mark.max_seq = max(mark.max_seq, events[-1].seq)
                if not stored_past_gap:
                    mark.acked_seq = contiguous_end(mark.acked_seq, events)
                elif events[0].seq == mark.acked_seq + 1:  # this flush fills the gap
                    mark.acked_seq = await store.contiguous_end(gateway, mark.acked_seq, conn=conn)
            duplicates = len(offered[gateway]) - len(events)
            result.duplicates += duplicates
            result.committed += len(events)
            await store.update_gateway(mark, received=len(events), duplicates=duplicates, conn=conn)
            result.acks[gateway] = (mark.site, mark.acked_seq)
            result.events.append((mark.site, events))
        receipts = [
            (site, event, event.body)
            for site, events in result.events
            for event in events
            if type(event.body) is Receipt
        ]
        result.balances = await store.post_receipts(receipts, conn=conn)
    return result


def contiguous_end(acked: int, events: list[Event]) -> int:
    """The new watermark: the last of ``events`` (in seq order) with no gap after ``acked``."""
    if events[0].seq == acked + 1 and events[-1].seq - acked == len(events):
        return events[-1].seq  # no gap at all: the usual case, in O(1)
    for event in events:
        if event.seq != acked + 1:
            break
        acked = event.seq
    return acked


class Ingest:
    """The ingest worker: MQTT 5 shared subscription → flushes → acks → live deltas."""

    def __init__(
        self,
        settings: HubSettings,
        *,
        on_commit: Callable[[FlushResult], None] | None = None,
    ) -> None:
        self.settings = settings
        self.topics = Topics(settings.mqtt_prefix)
        self.instance = uuid.uuid4().hex[:12]
        self.stats = IngestStats()
        self.on_commit = on_commit
        self.mqtt_connected = False
        self._malformed_logged = False

    async def run(self) -> None:
        """Stay connected to the broker and the database until cancelled."""
        backoff = Backoff(initial=0.2, cap=5.0)
        while True:
            try:
                await self._session(backoff)
            except (aiomqtt.MqttError, psycopg.OperationalError) as exc:
                if backoff.attempts == 0:
                    log.warning("ingest.disconnected", error=str(exc))
            finally:
                self.mqtt_connected = False
            await asyncio.sleep(backoff.next_delay())

    async def _session(self, backoff: Backoff) -> None:
        presence = self.topics.hub_presence()
        gone = wire.encode(HubPresence(online=False, instance=self.instance))
        conn = await psycopg.AsyncConnection.connect(self.settings.db_url, autocommit=True)
        set_json_dumps(msgspec.json.encode, context=conn)
        client = aiomqtt.Client(
            self.settings.mqtt_host,
            self.settings.mqtt_port,
            identifier=f"warelink-hub-{self.instance}",
            protocol=aiomqtt.ProtocolVersion.V5,
            will=aiomqtt.Will(presence, gone, qos=1, retain=True),
            keepalive=10,
            timeout=10,
            max_queued_incoming_messages=10_000,
        )
        async with conn, client:
            self.mqtt_connected = True
            backoff.reset()
            share = self.settings.share_group
            for kind in (Kind.EVENTS, Kind.BIRTH, Kind.DEATH):
                await client.subscribe(
                    self.topics.shared(share, self.topics.all_gateways(kind)), qos=1
                )
            here = wire.encode(HubPresence(online=True, instance=self.instance))
            await client.publish(presence, here, qos=1, retain=True)
            log.info("ingest.connected", instance=self.instance)
            try:
                await self._consume(client, conn)
            except asyncio.CancelledError:
                await asyncio.shield(client.publish(presence, gone, qos=1, retain=True))
                raise

    async def _consume(self, client: aiomqtt.Client, conn: AsyncConnection) -> None:
        queue: asyncio.Queue[Incoming] = asyncio.Queue()

        async def receive() -> None:
            async for message in client.messages:
                incoming = self._decode(message)
                if incoming is not None:
                    queue.put_nowait(incoming)

        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(receive(), name="ingest-receive")
            tasks.create_task(self._flush_loop(queue, client, conn), name="ingest-flush")

    def _decode(self, message: aiomqtt.Message) -> Incoming | None:
        """Decode as messages arrive, so a flush is sized in events, not messages."""
        self.stats.messages += 1
        topic = str(message.topic)
        payload = message.payload if isinstance(message.payload, bytes) else b""
        try:
            where = self.topics.parse(topic)
        except DecodeError as exc:
            self._malformed(topic, str(exc))
            return None
        if where.kind is not Kind.EVENTS:
            return SessionIncoming(where.site, where.gateway, payload)
        try:
            return decode_events(topic, payload, self.topics)
        except Malformed as exc:
            self._malformed(topic, str(exc))
            return None

    async def _flush_loop(
        self,
        queue: asyncio.Queue[Incoming],
        client: aiomqtt.Client,
        conn: AsyncConnection,
    ) -> None:
        """Gather batches up to ``ingest_max_events`` events or ``ingest_max_wait_ms``."""
        max_events = self.settings.ingest_max_events
        max_wait = self.settings.ingest_max_wait_ms / 1000
        loop = asyncio.get_running_loop()
        while True:
            pending: list[tuple[str, list[Event]]] = []
            size = 0
            item: Incoming | None = await queue.get()
            deadline = loop.time() + max_wait
            while item is not None:
                if isinstance(item, SessionIncoming):  # births and deaths keep their place
                    await self._commit(pending, client, conn)
                    pending, size = [], 0
                    await self._session_message(item, client, conn)
                else:
                    pending.append(item)
                    size += len(item[1])
                if size >= max_events:
                    break
                item = await self._next(queue, deadline - loop.time())
            await self._commit(pending, client, conn)

    @staticmethod
    async def _next(queue: asyncio.Queue[Incoming], remaining: float) -> Incoming | None:
        try:
            return queue.get_nowait()
        except asyncio.QueueEmpty:
            if remaining <= 0:
                return None
        try:
            async with asyncio.timeout(remaining):
                return await queue.get()
        except TimeoutError:
            return None

    async def _commit(
        self,
        batches: list[tuple[str, list[Event]]],
        client: aiomqtt.Client,
        conn: AsyncConnection,
    ) -> None:
        if not batches:
            return
        result = await commit_events(batches, conn=conn)
        self.stats.flushes += 1
        self.stats.events_committed += result.committed
        self.stats.duplicates_dropped += result.duplicates
        if result.rejected:
            self._malformed("events", f"{result.rejected} events under the wrong site")
        async with asyncio.TaskGroup() as acks:
            for gateway, (site, seq) in result.acks.items():
                ack = wire.encode(Ack(gateway=gateway, seq=seq))
                topic = self.topics.gateway(site, gateway, Kind.ACK)
                acks.create_task(client.publish(topic, ack, qos=1))
        if self.on_commit is not None:
            self.on_commit(result)

    async def _session_message(
        self, incoming: SessionIncoming, client: aiomqtt.Client, conn: AsyncConnection
    ) -> None:
        site, gateway = incoming.site, incoming.gateway
        try:
            message = wire.decode(incoming.payload)
        except DecodeError as exc:
            self._malformed(f"{site}/{gateway}", str(exc))
            return
        if isinstance(message, Birth) and message.gateway == gateway:
            acked = await store.record_birth(
                site, gateway, message.session, message.last_seq, conn=conn
            )
            log.info("gateway.birth", gateway=gateway, site=site, session=message.session,
                     last_seq=message.last_seq, acked_seq=acked)  # fmt: skip
            ack = wire.encode(Ack(gateway=gateway, seq=acked))
            await client.publish(self.topics.gateway(site, gateway, Kind.ACK), ack, qos=1)
        elif isinstance(message, Death) and message.gateway == gateway:
            if await store.record_death(gateway, message.session, conn=conn):
                log.info("gateway.death", gateway=gateway, site=site, session=message.session)
        else:
            self._malformed(f"{site}/{gateway}", f"unexpected {type(message).__name__}")

    def _malformed(self, where: str, why: str) -> None:
        self.stats.malformed_dropped += 1
        if not self._malformed_logged or self.stats.malformed_dropped % 1000 == 0:
            log.warning("ingest.malformed_dropped", where=where, error=why,
                        total=self.stats.malformed_dropped)  # fmt: skip
            self._malformed_logged = True
