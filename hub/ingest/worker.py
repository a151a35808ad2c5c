"""Hub ingest worker: event batches from the broker into PostgreSQL, then acks.

Messages come from an MQTT 5 shared subscription (several hubs can share the load) and
are gathered into flushes; each flush commits in one transaction (``hub.commit``). Only
after the commit does the hub publish each gateway's cumulative ack (DESIGN.md,
decision 2); a crash before it means the edge resends and the duplicates are dropped.
A gap in a gateway's stream is answered with a replay request.

No single message stops ingest: a message or event the hub cannot use is quarantined
with its reason (``hub.quarantine``) and everything else goes on; a data error from
PostgreSQL is a fault of one event, found by committing the flush in halves, not an
outage. Only a lost connection (broker or database) makes the worker reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, replace

import aiomqtt
import msgspec
import psycopg
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from psycopg import AsyncConnection
from psycopg.types.json import set_json_dumps

from warelink.hub.ingest import commands, outboxes, quarantine, store
from warelink.hub.ingest.commit import (
    FlushResult,
    IncomingBatch,
    Malformed,
    commit_events,
    decode_events,
)
from warelink.hub.settings import HubSettings
from warelink.protocol import limits, wire
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
from warelink.protocol.replay import ReplayTimer
from warelink.protocol.topics import Kind, Topics

log = structlog.get_logger(__name__)


@dataclass
class IngestStats:
    messages: int = 0
    events_committed: int = 0
    duplicates_dropped: int = 0
    malformed_dropped: int = 0  # no gateway to name: counted and logged only
    quarantined_events: int = 0
    quarantined_messages: int = 0
    gap_anomalies: int = 0
    flushes: int = 0
    gaps_detected: int = 0
    gaps_filled: int = 0
    replays_requested: int = 0
    gateways_held: int = 0  # gateways whose events the hub cannot commit now (not acked)
    outboxes_refused: int = 0  # outboxes refused under a gateway id (hub.ingest.outboxes)
    refused_messages: int = 0  # births and batches of refused outboxes, not acked


@dataclass(frozen=True)
class SessionIncoming:
    """A birth, death or stats message, handled in its place between event flushes."""

    site: str
    gateway: str
    topic: str
    payload: bytes


@dataclass(frozen=True)
class RejectedMessage:
    """A message of a known gateway the hub cannot use: quarantined in its place."""

    site: str
    gateway: str
    topic: str
    payload: bytes
    reason: str


Incoming = IncomingBatch | SessionIncoming | RejectedMessage

IDLE_CHECK_S = 1.0

# Faults of the data, not of the database: the event (or message) that causes one is
# quarantined. ProgramLimitExceeded (a value too large for an index) is an
# OperationalError by class, but no reconnect will ever make the value fit.
POISON = (psycopg.DataError, psycopg.IntegrityError, psycopg.errors.ProgramLimitExceeded)


def is_poison(exc: BaseException) -> bool:
    """True for an error one event (or message) brings with it: quarantine, go on."""
    if isinstance(exc, psycopg.Error):
        return isinstance(exc, POISON)
    # Our own code choking on a value (a bug, or a bound we missed) is the event's too.
    return isinstance(exc, ValueError | ArithmeticError | LookupError | TypeError)


def is_outage(exc: BaseException, conn: AsyncConnection) -> bool:
    """True when the connection, not the data, failed: reconnect and let edges resend."""
    if conn.closed or conn.broken:
        return True
    return isinstance(exc, psycopg.OperationalError) and not isinstance(exc, POISON)


class Ingest:
    """The ingest worker: MQTT 5 shared subscription → flushes → acks."""

    def __init__(self, settings: HubSettings) -> None:
        self.settings = settings
        self.topics = Topics(settings.mqtt_prefix)
        self.instance = uuid.uuid4().hex[:12]
        self.stats = IngestStats()
        self.mqtt_connected = False
        self._malformed_logged = False
        self._replays = ReplayTimer()  # open gaps, and when to ask for each
        self._anomalies: dict[str, tuple[int, int]] = {}  # reported once per gateway and range
        self._refusals: dict[str, str] = {}  # gateway → the outbox last refused (logged)
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
            except* Exception as bug:
                # Never stop ingest silently: say what broke, then start a new session.
                log.error("ingest.failed", error=repr(bug.exceptions[0]),
                          exc_info=bug.exceptions[0])  # fmt: skip
            finally:
                self.mqtt_connected = False
            await asyncio.sleep(backoff.next_delay())

    async def _session(self, backoff: Backoff) -> None:
        # This instance's own presence: its Will clears it (an empty retained message),
        # so a stopped or killed instance never speaks for the others.
        presence = self.topics.hub_presence(self.instance)
        gone = b""
        conn = await psycopg.AsyncConnection.connect(self.settings.db_url, autocommit=True)
        set_json_dumps(msgspec.json.encode, context=conn)
        connect = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        connect.MaximumPacketSize = limits.MESSAGE_BYTES_MAX + 64 * 1024  # payload + headers
        client = aiomqtt.Client(
            self.settings.mqtt_host,
            self.settings.mqtt_port,
            properties=connect,
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
                # Stopping, or the database went away: this instance is gone; gateways
                # keep sending to the others, if any.
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
                try:
                    incoming = self._decode(message)
                except Exception as exc:  # a decoder bug must not stop every gateway
                    self._malformed(str(message.topic)[:200], f"undecodable: {exc!r}")
                    continue
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
            return SessionIncoming(where.site, where.gateway, topic, payload)
        try:
            return decode_events(topic, payload, self.topics)
        except Malformed as exc:
            return RejectedMessage(where.site, where.gateway, topic, payload, str(exc))

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
                elif isinstance(item, RejectedMessage):
                    await self._quarantine_message(item, conn)
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
        except Exception as exc:  # a fault in one gateway's events must not stop all of them
            if is_outage(exc, conn):
                raise  # the session reconnects and the edges resend
            result = await self._commit_apart(batches, conn)
        stats = self.stats
        stats.flushes += 1
        stats.events_committed += result.committed
        stats.duplicates_dropped += result.duplicates
        if result.quarantined:
            before = stats.quarantined_events
            stats.quarantined_events += result.quarantined
            if before == 0 or before // 1000 != stats.quarantined_events // 1000:
                log.warning("ingest.events_quarantined", count=result.quarantined,
                            total=stats.quarantined_events)  # fmt: skip
        stats.gaps_detected += result.gaps_detected
        stats.gaps_filled += result.gaps_filled
        if result.rejected:
            self._malformed("events", f"{result.rejected} events under the wrong site")
        async with asyncio.TaskGroup() as sends:
            for gateway, (site, seq) in result.acks.items():
                outbox = result.outboxes.get(gateway, "")
                ack = wire.encode(Ack(gateway=gateway, seq=seq, outbox=outbox))
                topic = self.topics.gateway(site, gateway, Kind.ACK)
                sends.create_task(client.publish(topic, ack, qos=1))
        self._report_refusals(result)
        await self._report_anomalies(result, conn)
        self._track_gaps(result)
        await self._ask_for_gaps(client, conn)

    async def _commit_apart(
        self, batches: list[IncomingBatch], conn: AsyncConnection
    ) -> FlushResult:
        """Commit each gateway's batches on their own, finding and quarantining poison.

        A gateway whose events fail with a data error is committed in halves until the
        one event that fails is alone: it is quarantined, the rest go on. A gateway that
        fails otherwise (the database refuses it for a reason that may pass) is held: not
        acked, so its edge keeps the events and resends them; logged once, and again when
        its events commit.
        """
        result = FlushResult()
        per_gateway: dict[str, list[IncomingBatch]] = {}
        for batch in batches:
            per_gateway.setdefault(batch.gateway, []).append(batch)
        for gateway, mine in per_gateway.items():
            pieces = [piece for batch in mine for piece in _pieces(batch)]
            try:
                await self._commit_halves(pieces, result, conn)
                self._release({gateway})
            except Exception as exc:  # held back: see the docstring
                if is_outage(exc, conn):
                    raise
                if gateway not in self._held:
                    self._held.add(gateway)
                    log.error("ingest.gateway_held", gateway=gateway, site=mine[0].site,
                              first_seq=mine[0].first_seq, exc_info=exc)  # fmt: skip
        self.stats.gateways_held = len(self._held)
        return result

    async def _commit_halves(
        self, pieces: list[IncomingBatch], result: FlushResult, conn: AsyncConnection
    ) -> None:
        """Commit contiguous pieces of one gateway's stream; a poison event found alone is
        quarantined in its place (its seq covered, so the stream goes on)."""
        try:
            result.absorb(await commit_events(pieces, conn=conn))
            return
        except Exception as exc:
            if is_outage(exc, conn) or not is_poison(exc):
                raise
            failure = exc
        if len(pieces) == 1 and len(pieces[0].events) > 1:
            pieces = _pieces(pieces[0])
        if len(pieces) > 1:
            half = len(pieces) // 2
            await self._commit_halves(pieces[:half], result, conn)
            await self._commit_halves(pieces[half:], result, conn)
            return
        piece = pieces[0]
        event = piece.events[0] if piece.events else None
        reason = f"the hub could not apply it: {type(failure).__name__}: {failure}"
        set_aside = [] if event is None else [
            wire.BadEvent(wire.encode_event(event), event.seq, reason)
        ]  # fmt: skip
        log.warning("ingest.event_quarantined", gateway=piece.gateway, site=piece.site,
                    seq=event.seq if event else None, reason=reason[:300])  # fmt: skip
        result.absorb(
            await commit_events([replace(piece, events=[], quarantined=set_aside)], conn=conn)
        )

    def _release(self, gateways: set[str]) -> None:
        for gateway in gateways & self._held:
            self._held.discard(gateway)
            log.info("ingest.gateway_released", gateway=gateway)
        self.stats.gateways_held = len(self._held)

    async def _quarantine_message(self, rejected: RejectedMessage, conn: AsyncConnection) -> None:
        """Keep a message the hub cannot use, with why; a database fault here is logged."""
        self.stats.quarantined_messages += 1
        if self.stats.quarantined_messages == 1 or self.stats.quarantined_messages % 1000 == 0:
            log.warning("ingest.message_quarantined", site=rejected.site,
                        gateway=rejected.gateway, reason=rejected.reason[:300],
                        total=self.stats.quarantined_messages)  # fmt: skip
        try:
            await quarantine.keep_message(
                rejected.site, rejected.gateway, rejected.topic, rejected.payload,
                rejected.reason, conn=conn,
            )  # fmt: skip
        except Exception as exc:
            if is_outage(exc, conn):
                raise
            self._malformed(f"{rejected.site}/{rejected.gateway}", f"not kept: {exc}")

    async def _session_message(
        self, incoming: SessionIncoming, client: aiomqtt.Client, conn: AsyncConnection
    ) -> None:
        """A birth, death or stats message; one that cannot be used is quarantined."""
        try:
            await self._use_session_message(incoming, client, conn)
        except Exception as exc:
            if is_outage(exc, conn) or isinstance(exc, aiomqtt.MqttError):
                raise
            await self._quarantine_message(
                RejectedMessage(incoming.site, incoming.gateway, incoming.topic, incoming.payload,
                                f"{type(exc).__name__}: {exc}"), conn,
            )  # fmt: skip

    async def _use_session_message(
        self, incoming: SessionIncoming, client: aiomqtt.Client, conn: AsyncConnection
    ) -> None:
        site, gateway = incoming.site, incoming.gateway
        try:
            message = wire.decode(incoming.payload)
        except DecodeError as exc:
            raise _Unusable(str(exc)) from None
        if isinstance(message, Birth) and message.gateway == gateway:
            async with conn.transaction():
                judgement, first, outbox = await outboxes.admit_birth(
                    site, gateway, message.outbox, message.last_seq, message.session, conn=conn
                )
                refused = judgement.verdict is outboxes.Verdict.REFUSE
                if not refused:
                    acked = await store.record_birth(site, gateway, message.session,
                                                     message.last_seq, message.devices,
                                                     conn=conn)  # fmt: skip
            if refused:  # not answered: the box sends nothing, and keeps everything
                self._refused(site, gateway, message.outbox, judgement.reason, first)
                return
            log.info("gateway.birth", gateway=gateway, site=site, session=message.session,
                     last_seq=message.last_seq, acked_seq=acked, outbox=outbox)  # fmt: skip
            ack = wire.encode(Ack(gateway=gateway, seq=acked, outbox=outbox))
            await client.publish(self.topics.gateway(site, gateway, Kind.ACK), ack, qos=1)
            for command in await commands.open_for(gateway, conn=conn):
                await self.send_command(site, gateway, command)
        elif isinstance(message, Death) and message.gateway == gateway:
            if await store.record_death(gateway, message.session, conn=conn):
                log.info("gateway.death", gateway=gateway, site=site, session=message.session)
        elif isinstance(message, GatewayStats) and message.gateway == gateway:
            await store.record_edge_counters(gateway, message.counters, conn=conn)
        else:
            raise _Unusable(f"unexpected {type(message).__name__} of gateway "
                            f"{getattr(message, 'gateway', '?')!r}")  # fmt: skip

    def _track_gaps(self, result: FlushResult) -> None:
        """Remember open gaps and when their gateway's watermark last moved."""
        now = asyncio.get_running_loop().time()
        for gateway, (site, watermark) in result.acks.items():
            gap = result.gaps.get(gateway)
            missing = None if gap is None else (gap[1], gap[2])
            closed = self._replays.observe(gateway, site, watermark=watermark, gap=missing, now=now)
            if closed is not None:
                log.info("ingest.gap_closed", gateway=gateway, site=site, asked=closed.asks)

    async def _report_anomalies(self, result: FlushResult, conn: AsyncConnection) -> None:
        """A gap wider than any outbox could hold is reported once, never asked for."""
        for gateway, (site, first, last) in result.anomalies.items():
            if self._anomalies.get(gateway) == (first, last):
                continue
            self._anomalies[gateway] = (first, last)
            self.stats.gap_anomalies += 1
            log.warning("ingest.gap_anomaly", gateway=gateway, site=site,
                        missing=f"{first}-{last}", width=last - first + 1)  # fmt: skip
            await conn.execute(
                "UPDATE gateways SET gap_anomalies = gap_anomalies + 1 WHERE id = %s", (gateway,)
            )

    async def _ask_for_gaps(self, client: aiomqtt.Client, conn: AsyncConnection) -> None:
        """Ask for each missing range the replay timer says is due (``protocol.replay``:
        once it stopped filling by itself for a while, then at doubling intervals);
        logged when a gap is first asked for and when it closes, not per request.
        """
        for due in self._replays.due(asyncio.get_running_loop().time()):
            if due.ask == 1:
                log.info("ingest.gap", gateway=due.gateway, site=due.site,
                         missing=f"{due.first}-{due.last}")  # fmt: skip
            self.stats.replays_requested += 1
            await store.count_replay_request(due.gateway, conn=conn)
            request = ReplayRequest(gateway=due.gateway, from_seq=due.first, to_seq=due.last)
            topic = self.topics.gateway(due.site, due.gateway, Kind.REPLAY)
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

    def _report_refusals(self, result: FlushResult) -> None:
        for gateway, (site, outbox, why) in result.refused.items():
            self._refused(site, gateway, outbox, why, first=False)
        self.stats.outboxes_refused += result.newly_refused

    def _refused(self, site: str, gateway: str, outbox: str, why: str, first: bool) -> None:
        """Loud, once per gateway and outbox: its events are neither stored nor acked."""
        self.stats.refused_messages += 1
        if self._refusals.get(gateway) != outbox:
            self._refusals[gateway] = outbox
            log.warning("ingest.outbox_refused", gateway=gateway, site=site, outbox=outbox,
                      reason=why)  # fmt: skip
        if first:
            self.stats.outboxes_refused += 1

    def _malformed(self, where: str, why: str) -> None:
        self.stats.malformed_dropped += 1
        if not self._malformed_logged or self.stats.malformed_dropped % 1000 == 0:
            log.warning("ingest.malformed_dropped", where=where, error=why,
                        total=self.stats.malformed_dropped)  # fmt: skip
            self._malformed_logged = True


class _Unusable(Exception):
    """A session message that decodes to nothing the hub can use."""


def _pieces(batch: IncomingBatch) -> list[IncomingBatch]:
    """A batch as contiguous one-event pieces covering its whole range, in order."""
    if len(batch.events) <= 1:
        return [batch]
    pieces: list[IncomingBatch] = []
    start = batch.first_seq
    for i, event in enumerate(batch.events):
        last = event.seq if i < len(batch.events) - 1 else batch.last_seq
        pieces.append(replace(batch, first_seq=start, last_seq=last, events=[event],
                              quarantined=batch.quarantined if i == 0 else []))  # fmt: skip
        start = last + 1
    return pieces
