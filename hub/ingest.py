"""Hub ingest: event batches from the broker into PostgreSQL, exactly once, then acks.

One flush = one transaction: the events (deduplicated on (gateway, seq)), the ledger
effect of the new ones, and each gateway's ack watermark. Only after the commit does the
hub publish the cumulative ack (DESIGN.md, decision 2); a crash before it means the
edge resends and the duplicates are dropped.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections import Counter
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
    events: list[tuple[str, Event]] = field(default_factory=list)  # new (site, event)
    balances: list[store.BalanceChange] = field(default_factory=list)
    committed: int = 0
    duplicates: int = 0
    rejected: int = 0  # events under a site their gateway does not belong to


class Malformed(Exception):
    pass


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


async def commit_events(
    batches: Sequence[tuple[str, list[Event]]], *, conn: AsyncConnection
) -> FlushResult:
    """Store the batches' events exactly once with their ledger effects; one transaction."""
    result = FlushResult()
    unique: dict[tuple[str, int], tuple[str, Event]] = {}
    sites: dict[str, str] = {}
    offered: Counter[str] = Counter()  # events per gateway, duplicates included
    for site, events in batches:
        for event in events:
            offered[event.gateway] += 1
            unique.setdefault((event.gateway, event.seq), (site, event))
            sites.setdefault(event.gateway, site)
    if not unique:
        return result
    now = dt.datetime.now(dt.UTC)
    async with conn.transaction():
        await store.ensure_gateways(((s, g) for g, s in sites.items()), conn=conn)
        marks = await store.lock_gateways(list(sites), conn=conn)
        fresh: list[store.Row] = []
        maybe: list[store.Row] = []
        new_keys: set[tuple[str, int]] = set()
        for (gateway, seq), (site, event) in unique.items():
            mark = marks[gateway]
            if mark.site != site:
                result.rejected += 1  # a gateway id reused under another site
                offered[gateway] -= 1
                continue
            if seq > mark.max_seq:
                fresh.append(store.event_row(site, event, now))
                new_keys.add((gateway, seq))
            elif seq > mark.acked_seq:
                maybe.append(store.event_row(site, event, now))
        if fresh:
            await store.copy_events(fresh, conn=conn)
        if maybe:
            new_keys |= await store.insert_events_dedup(maybe, conn=conn)
        per_gateway: dict[str, list[int]] = {g: [] for g in marks}
        for gateway, seq in new_keys:
            per_gateway[gateway].append(seq)
        for gateway, mark in marks.items():
            seqs = sorted(per_gateway[gateway])
            stored_past_gap = mark.max_seq > mark.acked_seq
            if seqs:
                mark.max_seq = max(mark.max_seq, seqs[-1])
            if stored_past_gap:
                seqs = await store.seqs_after(gateway, mark.acked_seq, conn=conn)
            for seq in seqs:
                if seq != mark.acked_seq + 1:
                    break
                mark.acked_seq = seq
            received = len(per_gateway[gateway])
            duplicates = offered[gateway] - received
            result.duplicates += duplicates
            await store.update_gateway(mark, received=received, duplicates=duplicates, conn=conn)
            result.acks[gateway] = (mark.site, mark.acked_seq)
        new_events = sorted(
            (unique[key] for key in new_keys), key=lambda item: (item[1].gateway, item[1].seq)
        )
        receipts = [
            (site, event, event.body)
            for site, event in new_events
            if isinstance(event.body, Receipt)
        ]
        result.balances = await store.post_receipts(receipts, conn=conn)
    result.events = new_events
    result.committed = len(new_keys)
    return result


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
        queue: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()

        async def receive() -> None:
            async for message in client.messages:
                queue.put_nowait(message)

        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(receive(), name="ingest-receive")
            tasks.create_task(self._flush_loop(queue, client, conn), name="ingest-flush")

    async def _flush_loop(
        self,
        queue: asyncio.Queue[aiomqtt.Message],
        client: aiomqtt.Client,
        conn: AsyncConnection,
    ) -> None:
        max_events = self.settings.ingest_max_events
        max_wait = self.settings.ingest_max_wait_ms / 1000
        while True:
            messages = [await queue.get()]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + max_wait
            size = 0
            while size < max_events:
                try:
                    messages.append(queue.get_nowait())
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        async with asyncio.timeout(remaining):
                            messages.append(await queue.get())
                    except TimeoutError:
                        break
                size += 1
            await self._flush(messages, client, conn)

    async def _flush(
        self, messages: list[aiomqtt.Message], client: aiomqtt.Client, conn: AsyncConnection
    ) -> None:
        batches: list[tuple[str, list[Event]]] = []
        for message in messages:
            self.stats.messages += 1
            topic = str(message.topic)
            payload = message.payload if isinstance(message.payload, bytes) else b""
            try:
                where = self.topics.parse(topic)
            except DecodeError as exc:
                self._malformed(topic, str(exc))
                continue
            if where.kind is Kind.EVENTS:
                try:
                    batches.append(decode_events(topic, payload, self.topics))
                except Malformed as exc:
                    self._malformed(topic, str(exc))
            else:
                await self._session_message(where.site, where.gateway, payload, client, conn)
        if not batches:
            return
        result = await commit_events(batches, conn=conn)
        self.stats.flushes += 1
        self.stats.events_committed += result.committed
        self.stats.duplicates_dropped += result.duplicates
        if result.rejected:
            self._malformed("events", f"{result.rejected} events under the wrong site")
        for gateway, (site, seq) in result.acks.items():
            ack = wire.encode(Ack(gateway=gateway, seq=seq))
            await client.publish(self.topics.gateway(site, gateway, Kind.ACK), ack, qos=1)
        if self.on_commit is not None:
            self.on_commit(result)

    async def _session_message(
        self,
        site: str,
        gateway: str,
        payload: bytes,
        client: aiomqtt.Client,
        conn: AsyncConnection,
    ) -> None:
        try:
            message = wire.decode(payload)
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
