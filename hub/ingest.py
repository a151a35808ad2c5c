"""Hub ingest worker: event batches from the broker into PostgreSQL, then acks.

Messages come from an MQTT 5 shared subscription (several hubs can share the load) and
are gathered into flushes; each flush commits in one transaction (``hub.commit``). Only
after the commit does the hub publish each gateway's cumulative ack (DESIGN.md,
decision 2); a crash before it means the edge resends and the duplicates are dropped.
A gap in a gateway's stream is answered with a replay request.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import aiomqtt
import msgspec
import psycopg
import structlog
from psycopg import AsyncConnection
from psycopg.types.json import set_json_dumps

from warelink.hub import commands, store
from warelink.hub.commit import FlushResult, IncomingBatch, Malformed, commit_events, decode_events
from warelink.hub.settings import HubSettings
from warelink.protocol import wire
from warelink.protocol.backoff import Backoff
from warelink.protocol.errors import DecodeError
from warelink.protocol.messages import (
    Ack,
    Birth,
    Command,
    Death,
    GatewayStats,
    HubPresence,
    ReplayRequest,
)
from warelink.protocol.topics import Kind, Topics

log = structlog.get_logger(__name__)


@dataclass
class IngestStats:
    messages: int = 0
    events_committed: int = 0
    duplicates_dropped: int = 0
    malformed_dropped: int = 0
    flushes: int = 0
    gaps_detected: int = 0
    gaps_filled: int = 0
    replays_requested: int = 0
    gateways_held: int = 0  # gateways whose events the hub cannot commit now (not acked)


@dataclass(frozen=True)
class SessionIncoming:
    """A birth, death or stats message, handled in its place between event flushes."""

    site: str
    gateway: str
    payload: bytes


Incoming = IncomingBatch | SessionIncoming

IDLE_CHECK_S = 1.0
REPLAY_AFTER_S = 2.0  # a gap that has not moved for this long is asked for (and again)


@dataclass
class OpenGap:
    site: str
    first: int
    last: int
    watermark: int
    since: float  # loop time when the watermark last moved
    asked_at: float = -1e9


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
        self._gaps: dict[str, OpenGap] = {}
        self._held: set[str] = set()  # gateways whose events failed to commit, not acked
        self._client: aiomqtt.Client | None = None

    async def run(self) -> None:
        """Stay connected to the broker and the database until cancelled."""
        backoff = Backoff(initial=0.2, cap=5.0)
        while True:
            try:
                await self._session(backoff)
            except* (aiomqtt.MqttError, psycopg.OperationalError) as lost:
                # The broker or the database went away (the TaskGroups wrap it): reconnect.
                # Nothing is lost: what was not committed is not acked, so edges resend.
                if backoff.attempts == 0:
                    log.warning("ingest.disconnected", error=str(lost.exceptions[0]))
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
            self._client = client
            backoff.reset()
            share = self.settings.share_group
            for kind in (Kind.EVENTS, Kind.BIRTH, Kind.DEATH, Kind.STATS):
                await client.subscribe(
                    self.topics.shared(share, self.topics.all_gateways(kind)), qos=1
                )
            here = wire.encode(HubPresence(online=True, instance=self.instance))
            await client.publish(presence, here, qos=1, retain=True)
            log.info("ingest.connected", instance=self.instance)
            try:
                await self._consume(client, conn)
            except BaseException:
                # Stopping, or the database went away: tell the gateways to hold on.
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1):
                        await asyncio.shield(client.publish(presence, gone, qos=1, retain=True))
                raise
            finally:
                self._client = None

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
            pending: list[IncomingBatch] = []
            size = 0
            item = await self._next(queue, IDLE_CHECK_S)
            if item is None:  # quiet: a gap nobody is filling is asked for now
                await self._ask_for_gaps(client, conn)
                continue
            deadline = loop.time() + max_wait
            while item is not None:
                if isinstance(item, SessionIncoming):  # births and deaths keep their place
                    await self._commit(pending, client, conn)
                    pending, size = [], 0
                    await self._session_message(item, client, conn)
                else:
                    pending.append(item)
                    size += len(item.events)
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
        batches: list[IncomingBatch],
        client: aiomqtt.Client,
        conn: AsyncConnection,
    ) -> None:
        if not batches:
            return
        try:
            result = await commit_events(batches, conn=conn)
            self._release({b.gateway for b in batches})
        except psycopg.OperationalError:
            raise  # the database is away: the session reconnects and the edges resend
        except Exception:  # a fault in one gateway's events must not stop all of them
            result = await self._commit_apart(batches, conn)
        stats = self.stats
        stats.flushes += 1
        stats.events_committed += result.committed
        stats.duplicates_dropped += result.duplicates
        stats.gaps_detected += result.gaps_detected
        stats.gaps_filled += result.gaps_filled
        if result.rejected:
            self._malformed("events", f"{result.rejected} events under the wrong site")
        async with asyncio.TaskGroup() as sends:
            for gateway, (site, seq) in result.acks.items():
                ack = wire.encode(Ack(gateway=gateway, seq=seq))
                topic = self.topics.gateway(site, gateway, Kind.ACK)
                sends.create_task(client.publish(topic, ack, qos=1))
        self._track_gaps(result)
        await self._ask_for_gaps(client, conn)
        if self.on_commit is not None:
            self.on_commit(result)

    async def _commit_apart(
        self, batches: list[IncomingBatch], conn: AsyncConnection
    ) -> FlushResult:
        """Commit each gateway's batches on their own; hold back the ones that still fail.

        A held gateway is not acked, so its edge keeps the events and resends them: nothing
        is lost, and the other gateways go on. It is logged once as an error (with the
        traceback) and again when its events commit.
        """
        result = FlushResult()
        per_gateway: dict[str, list[IncomingBatch]] = {}
        for batch in batches:
            per_gateway.setdefault(batch.gateway, []).append(batch)
        for gateway, mine in per_gateway.items():
            try:
                result.absorb(await commit_events(mine, conn=conn))
                self._release({gateway})
            except psycopg.OperationalError:
                raise
            except Exception:  # held back: see the docstring
                if gateway not in self._held:
                    self._held.add(gateway)
                    log.exception("ingest.gateway_held", gateway=gateway, site=mine[0].site,
                                  first_seq=mine[0].first_seq)  # fmt: skip
        self.stats.gateways_held = len(self._held)
        return result

    def _release(self, gateways: set[str]) -> None:
        for gateway in gateways & self._held:
            self._held.discard(gateway)
            log.info("ingest.gateway_released", gateway=gateway)
        self.stats.gateways_held = len(self._held)

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
                site, gateway, message.session, message.last_seq, message.devices, conn=conn
            )
            log.info("gateway.birth", gateway=gateway, site=site, session=message.session,
                     last_seq=message.last_seq, acked_seq=acked)  # fmt: skip
            ack = wire.encode(Ack(gateway=gateway, seq=acked))
            await client.publish(self.topics.gateway(site, gateway, Kind.ACK), ack, qos=1)
            for command in await commands.open_for(gateway, conn=conn):
                await self.send_command(site, gateway, command)
        elif isinstance(message, Death) and message.gateway == gateway:
            if await store.record_death(gateway, message.session, conn=conn):
                log.info("gateway.death", gateway=gateway, site=site, session=message.session)
        elif isinstance(message, GatewayStats) and message.gateway == gateway:
            await store.record_edge_counters(gateway, message.counters, conn=conn)
        else:
            self._malformed(f"{site}/{gateway}", f"unexpected {type(message).__name__}")

    def _track_gaps(self, result: FlushResult) -> None:
        """Remember open gaps and when their gateway's watermark last moved."""
        now = asyncio.get_running_loop().time()
        for gateway, (site, watermark) in result.acks.items():
            gap = result.gaps.get(gateway)
            if gap is None:
                self._gaps.pop(gateway, None)
                continue
            known = self._gaps.get(gateway)
            if known is None or known.watermark != watermark:
                self._gaps[gateway] = OpenGap(site, gap[1], gap[2], watermark, since=now)
            else:
                known.first, known.last = gap[1], gap[2]

    async def _ask_for_gaps(self, client: aiomqtt.Client, conn: AsyncConnection) -> None:
        """Ask for a missing range once it stopped filling by itself for a while.

        A gap that two hubs' commits opened, or that a gateway is draining anyway, closes
        on its own; a request then would only make the gateway send things twice.
        """
        now = asyncio.get_running_loop().time()
        for gateway, gap in self._gaps.items():
            if now - gap.since < REPLAY_AFTER_S or now - gap.asked_at < REPLAY_AFTER_S:
                continue
            gap.asked_at = now
            self.stats.replays_requested += 1
            log.info("ingest.gap", gateway=gateway, site=gap.site,
                     missing=f"{gap.first}-{gap.last}")  # fmt: skip
            await store.count_replay_request(gateway, conn=conn)
            request = ReplayRequest(gateway=gateway, from_seq=gap.first, to_seq=gap.last)
            topic = self.topics.gateway(gap.site, gateway, Kind.REPLAY)
            await client.publish(topic, wire.encode(request), qos=1)

    async def send_command(self, site: str, gateway: str, command: Command) -> bool:
        """Publish a command to its gateway; False if the broker is not reachable now
        (the command stays stored and goes out at the gateway's next birth)."""
        client = self._client
        if client is None:
            return False
        topic = self.topics.gateway(site, gateway, Kind.COMMAND)
        try:
            await client.publish(topic, wire.encode(command), qos=1)
        except aiomqtt.MqttError:
            return False
        return True

    def _malformed(self, where: str, why: str) -> None:
        self.stats.malformed_dropped += 1
        if not self._malformed_logged or self.stats.malformed_dropped % 1000 == 0:
            log.warning("ingest.malformed_dropped", where=where, error=why,
                        total=self.stats.malformed_dropped)  # fmt: skip
            self._malformed_logged = True
