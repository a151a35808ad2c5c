"""The uplink: drains the outbox to the broker; only the hub's ack moves the watermark.

Sends batches of stored events (QoS 1) while the hub is present (any hub instance's
retained presence says so, or its acks keep coming) and fewer than ``window_events`` are
unacked: flow control by the hub's acks,
not by the broker's PUBACK. Each batch covers a contiguous seq range, holes included
(telemetry dropped over budget). Resends from the watermark after a reconnect, when the
hub comes back, or when acks stop coming (``ack_timeout_s``); answers the hub's replay
requests from the outbox. The hub applies each (gateway, seq) at most once, so a resend
never doubles anything. An instance that leaves while others stay may have taken
batches with it: everything unacked is sent again at once, to the instances that stay.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiomqtt
import msgspec
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from warelink.edge.config import GatewayConfig
from warelink.edge.outbox import Outbox
from warelink.edge.settings import EdgeSettings
from warelink.protocol import limits, wire
from warelink.protocol.backoff import Backoff
from warelink.protocol.errors import DecodeError
from warelink.protocol.messages import (
    Ack,
    Birth,
    Command,
    Death,
    EventBatch,
    GatewayStats,
    HubPresence,
    ReplayRequest,
)
from warelink.protocol.topics import Kind, Topics

log = structlog.get_logger(__name__)

LIVE_AHEAD_BATCHES = 20  # a backlog of more batches than this lets live events go first


@dataclass
class UplinkStats:
    connected: bool = False
    hub_online: bool = False
    batches_sent: int = 0
    events_sent: int = 0
    events_resent: int = 0
    acks_received: int = 0
    replays_answered: int = 0
    ack_timeouts: int = 0
    bad_messages: int = 0  # messages on our topics that are not what they claim to be


class Uplink:
    def __init__(
        self,
        config: GatewayConfig,
        settings: EdgeSettings,
        outbox: Outbox,
        *,
        devices: list[str] | None = None,
        on_command: Callable[[Command], None] | None = None,
        counters: Callable[[], Awaitable[dict[str, float]]] | None = None,
    ) -> None:
        self.config = config
        self.settings = settings
        self.outbox = outbox
        self.devices = devices or []
        self.on_command = on_command
        self.counters = counters
        self.topics = Topics(settings.mqtt_prefix)
        self.stats = UplinkStats()
        self.log = log.bind(gateway=config.id, site=config.site)
        self.acked = 0
        self._cursor = 0  # last seq handed to the broker in this session, in order
        self._highest_sent = 0  # for counting resends
        # While a large backlog drains, live events go ahead of it: ``_tail`` is the last
        # live seq sent, ``_backlog_end`` where the backlog stops (see _send).
        self._tail: int | None = None
        self._backlog_end = 0
        self._birth_answered = True
        self._announced_at = 0.0
        self._origin = 0
        self._session_no = 0
        self._rewinds = 0
        self._last_progress = time.monotonic()
        self._wake = asyncio.Event()
        self._hubs: set[str] = set()  # hub instances whose presence is up
        self._acked_at = -1e9  # monotonic time of the last ack: a hub that acks is alive

    def _topic(self, kind: Kind) -> str:
        return self.topics.gateway(self.config.site, self.config.id, kind)

    async def run(self) -> None:
        """Stay connected until cancelled, reconnecting with backoff."""
        self.acked = await asyncio.to_thread(self.outbox.acked_seq)
        self._origin = await asyncio.to_thread(self.outbox.origin)
        self._cursor = self._highest_sent = self.acked
        backoff = Backoff(initial=0.2, cap=5.0)
        while True:
            try:
                await self._session(backoff)
            except aiomqtt.MqttError as exc:
                if self.stats.connected or backoff.attempts == 0:  # log the change, not retries
                    self.log.warning("uplink.disconnected", error=str(exc))
            finally:
                self.stats.connected = False
                self.stats.hub_online = False
                self._hubs.clear()  # retained presence comes again on the next subscribe
                self._acked_at = -1e9
            await asyncio.sleep(backoff.next_delay())

    async def _session(self, backoff: Backoff) -> None:
        session = await asyncio.to_thread(self.outbox.next_session)
        death = wire.encode(Death(gateway=self.config.id, session=session))
        gw = self.config
        connect = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        connect.MaximumPacketSize = limits.MESSAGE_BYTES_MAX + 64 * 1024  # payload + headers
        client = aiomqtt.Client(
            self.settings.mqtt_host,
            self.settings.mqtt_port,
            properties=connect,
            # The prefix too: deployments (demo, tests) sharing a broker must not take
            # over each other's session (the broker drops the older of two equal ids).
            identifier=f"warelink-edge-{self.settings.mqtt_prefix}-{gw.site}-{gw.id}",
            protocol=aiomqtt.ProtocolVersion.V5,
            will=aiomqtt.Will(self._topic(Kind.DEATH), death, qos=1),
            keepalive=10,
            timeout=10,
        )
        async with client:
            self.stats.connected = True
            backoff.reset()
            self.log.info("uplink.connected", session=session, acked_seq=self.acked)
            for kind in (Kind.ACK, Kind.REPLAY, Kind.COMMAND):
                await client.subscribe(self._topic(kind), qos=1)
            await client.subscribe(self.topics.all_hub_presence(), qos=1)
            self._session_no = session
            await self._announce(client)
            self._rewind(self.acked)
            try:
                await self._serve(client, session)
            except asyncio.CancelledError:
                # A clean stop disconnects normally, so the broker keeps the Will: say it.
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1):
                        await client.publish(self._topic(Kind.DEATH), death, qos=1)
                raise

    async def _serve(self, client: aiomqtt.Client, session: int) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._receive(client), name="uplink-receive")
                tasks.create_task(self._send(client, session), name="uplink-send")
                if self.counters is not None:
                    tasks.create_task(self._report(client, session), name="uplink-stats")
        except* aiomqtt.MqttError as group:
            raise group.exceptions[0] from None

    def _rewind(self, to: int) -> None:
        """Send again everything after ``to``."""
        self._cursor = min(self._cursor, to)
        self._tail = None  # start over in order; live-ahead resumes if the backlog is large
        self._rewinds += 1  # a send in progress must not move the cursor past this
        self._last_progress = time.monotonic()
        self._wake.set()

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            instance = self.topics.presence_instance(str(message.topic))
            if instance is not None and not payload:  # an instance's presence cleared
                await self._presence(client, instance, online=False)
                continue
            if not isinstance(payload, bytes | bytearray):
                self._bad_message(str(message.topic), "not a binary payload")
                continue
            try:
                decoded = wire.decode(bytes(payload))
            except DecodeError as exc:
                self._bad_message(str(message.topic), str(exc))
                continue
            if isinstance(decoded, Ack) and decoded.gateway == self.config.id:
                if decoded.seq > self.outbox.last_seq:
                    # No hub can have committed what this outbox never stored: acking it
                    # would trim events that were never sent.
                    self._bad_message(str(message.topic), f"ack of seq {decoded.seq}, past "
                                      f"the newest stored {self.outbox.last_seq}")  # fmt: skip
                    continue
                await self._on_ack(decoded.seq)
            elif isinstance(decoded, ReplayRequest) and decoded.gateway == self.config.id:
                self.stats.replays_answered += 1
                self.log.info("uplink.replay", missing=f"{decoded.from_seq}-{decoded.to_seq}")
                self._rewind(decoded.from_seq - 1)
            elif isinstance(decoded, Command):
                if self.on_command is not None:
                    self.on_command(decoded)
            elif isinstance(decoded, HubPresence) and instance is not None:
                await self._presence(client, instance, online=decoded.online)
            else:
                self._bad_message(str(message.topic), f"unexpected {type(decoded).__name__}")

    async def _presence(self, client: aiomqtt.Client, instance: str, *, online: bool) -> None:
        """One hub instance came or went; the hub is present while any instance is."""
        was = self.stats.hub_online
        if online:
            self._hubs.add(instance)
        elif instance in self._hubs:
            self._hubs.discard(instance)
            if self._hubs:  # it may have held batches that will never be acked: resend
                self.log.info("uplink.hub_instance_gone", instance=instance,
                              remaining=len(self._hubs))  # fmt: skip
                self._rewind(self.acked)
        self.stats.hub_online = bool(self._hubs) or self._acks_recent()
        if self.stats.hub_online and not was:
            self.log.info("uplink.hub_online", instance=instance)
            await self._announce(client)  # a hub that was away hears the birth again
            self._rewind(self.acked)
        elif was and not self.stats.hub_online:
            self.log.warning("uplink.hub_offline")

    def _acks_recent(self) -> bool:
        """Acks are liveness too: a hub whose presence we missed still answers."""
        return time.monotonic() - self._acked_at < self.config.ack_timeout_s

    def _bad_message(self, topic: str, error: str) -> None:
        """Ignore it and count it; logged the first time and every thousandth."""
        self.stats.bad_messages += 1
        if self.stats.bad_messages == 1 or self.stats.bad_messages % 1000 == 0:
            self.log.warning("uplink.bad_message", topic=topic[:200], error=error[:300],
                             total=self.stats.bad_messages)  # fmt: skip

    async def _announce(self, client: aiomqtt.Client) -> None:
        """Publish the birth; nothing is sent until the hub answers it with its watermark."""
        birth = Birth(
            gateway=self.config.id,
            site=self.config.site,
            session=self._session_no,
            last_seq=self.outbox.last_seq,
            devices=self.devices,
            outbox=self.outbox.outbox_id,
        )
        self._birth_answered = False
        self._announced_at = time.monotonic()
        await client.publish(self._topic(Kind.BIRTH), wire.encode(birth), qos=1)

    async def _on_ack(self, seq: int) -> None:
        self.stats.acks_received += 1
        self._acked_at = time.monotonic()
        self.stats.hub_online = True
        if not self._birth_answered:
            # The hub answers a birth with its watermark. Below ours, it lacks what we
            # hold as acked (its database was restored), or our outbox is new and starts
            # past its watermark: either way, send from there (what the retention no
            # longer has is covered as gone, so the hub does not wait for it).
            self._birth_answered = True
            self._wake.set()
            if seq < self.acked:
                if self.acked > self._origin:  # the hub lost what it had acked
                    self.log.warning("uplink.hub_behind", hub_watermark=seq, acked_seq=self.acked)
                else:
                    self.log.info("uplink.new_outbox", hub_watermark=seq, origin=self._origin)
                self._rewind(seq)
        if seq <= self.acked:
            return
        self.acked = await asyncio.to_thread(self.outbox.mark_acked, seq)
        self._cursor = max(self._cursor, self.acked)
        self._last_progress = time.monotonic()
        self._wake.set()

    async def _send(self, client: aiomqtt.Client, session: int) -> None:
        """Send in seq order; while a large backlog drains, live events skip ahead.

        The hub keeps the early live range, shows it at once and applies it to the
        ledger when the backlog before it is in (the ledger takes events in seq order).
        """
        max_events = self.config.batch_max_events
        live_ahead_after = LIVE_AHEAD_BATCHES * max_events
        max_wait = self.config.batch_max_wait_ms / 1000
        while True:
            last = self.outbox.last_seq
            if self.stats.hub_online and not self._hubs and not self._acks_recent():
                self.stats.hub_online = False  # no instance's presence, no acks lately
                self.log.warning("uplink.hub_offline")
            ready = (
                self.stats.hub_online
                and self._birth_answered
                and self._cursor < last
                and self._cursor - self.acked < self.config.window_events
            )
            if not ready:
                self._check_ack_timeout()
                unanswered = time.monotonic() - self._announced_at > self.config.ack_timeout_s
                if self.stats.hub_online and not self._birth_answered and unanswered:
                    await self._announce(client)  # the birth or its answer got lost: again
                await self._idle()
                continue
            if self._tail is None and last - self._cursor > live_ahead_after:
                self._tail = self._backlog_end = last  # from here on, new events are live
            rewinds = self._rewinds
            if self._tail is not None:
                if self.outbox.last_seq > self._tail:
                    tail = await self._publish(client, session, self._tail, None)
                    if rewinds != self._rewinds:
                        continue
                    self._tail = tail
                sent = await self._publish(client, session, self._cursor, self._backlog_end)
                if rewinds != self._rewinds or self._tail is None:
                    continue  # rewound meanwhile: the cursor stays where the rewind put it
                self._cursor = sent
                if sent >= self._backlog_end:  # the backlog is in: back in order
                    self._cursor, self._tail = max(sent, self._tail), None
                    self._highest_sent = max(self._highest_sent, self._cursor)
                continue
            if last - self._cursor < max_events and max_wait > 0:
                await asyncio.sleep(max_wait)  # let a fuller batch gather
            sent = await self._publish(client, session, self._cursor, None)
            if rewinds == self._rewinds:
                self._cursor = sent
                self._highest_sent = max(self._highest_sent, sent)

    async def _publish(
        self, client: aiomqtt.Client, session: int, after: int, upto: int | None
    ) -> int:
        """Send the next batch after ``after``; returns the last seq it covered."""
        read = self.outbox.read_batch
        rows, covered = await asyncio.to_thread(read, after, self.config.batch_max_events, upto)
        if covered <= after:
            return after
        batch = EventBatch(
            gateway=self.config.id,
            session=session,
            first_seq=after + 1,
            last_seq=covered,
            sent_at=dt.datetime.now(dt.UTC),
            events=[msgspec.Raw(payload) for _, payload in rows],
            outbox=self.outbox.outbox_id,
        )
        await client.publish(self._topic(Kind.EVENTS), wire.encode(batch), qos=1)
        if after <= self.acked:
            # Nothing was in flight: the ack timeout counts from this send, not from the
            # last ack before a quiet spell.
            self._last_progress = time.monotonic()
        if upto is not None or self._tail is None:  # in-order sends: count what went twice
            self.stats.events_resent += sum(1 for seq, _ in rows if seq <= self._highest_sent)
        self.stats.batches_sent += 1
        self.stats.events_sent += len(rows)
        return covered

    async def _idle(self) -> None:
        """Wait for an ack, new events or a rewind, at most half the ack timeout."""
        self._wake.clear()
        self.outbox.appended.clear()
        waits = [
            asyncio.ensure_future(self._wake.wait()),
            asyncio.ensure_future(self.outbox.appended.wait()),
        ]
        try:
            await asyncio.wait(
                waits, timeout=self.config.ack_timeout_s / 2, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for wait in waits:
                wait.cancel()

    def _check_ack_timeout(self) -> None:
        if self._cursor > self.acked and (
            time.monotonic() - self._last_progress > self.config.ack_timeout_s
        ):
            self.stats.ack_timeouts += 1
            self.log.warning("uplink.ack_timeout", acked_seq=self.acked, sent_seq=self._cursor)
            self._rewind(self.acked)

    async def _report(self, client: aiomqtt.Client, session: int) -> None:
        assert self.counters is not None
        while True:
            counters = await self.counters()
            stats = GatewayStats(
                gateway=self.config.id,
                session=session,
                sent_at=dt.datetime.now(dt.UTC),
                counters=counters,
            )
            await client.publish(self._topic(Kind.STATS), wire.encode(stats), qos=0)
            await asyncio.sleep(self.config.stats_interval_s)
