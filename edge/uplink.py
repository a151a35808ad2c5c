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

Every one of those decisions is ``protocol.sending.SendWindow``'s, free of I/O; this
module does the I/O it asks for (the MQTT client, outbox reads in a thread, publishing)
and tells it what happened.
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
from warelink.protocol import limits, sending, wire
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
        self.window = self._new_window(acked=0, origin=0)  # the outbox's, once running
        self._session_no = 0
        self._wake = asyncio.Event()

    def _new_window(self, *, acked: int, origin: int) -> sending.SendWindow:
        gw = self.config
        return sending.SendWindow(
            acked=acked,
            origin=origin,
            window_events=gw.window_events,
            batch_max_events=gw.batch_max_events,
            ack_timeout_s=gw.ack_timeout_s,
            gather_s=gw.batch_max_wait_ms / 1000,
        )

    @property
    def acked(self) -> int:
        """The hub's ack watermark, as recorded in the outbox."""
        return self.window.acked

    def _topic(self, kind: Kind) -> str:
        return self.topics.gateway(self.config.site, self.config.id, kind)

    async def run(self) -> None:
        """Stay connected until cancelled, reconnecting with backoff."""
        acked = await asyncio.to_thread(self.outbox.acked_seq)
        origin = await asyncio.to_thread(self.outbox.origin)
        self.window = self._new_window(acked=acked, origin=origin)
        backoff = Backoff(initial=0.2, cap=5.0)
        while True:
            try:
                await self._session(backoff)
            except aiomqtt.MqttError as exc:
                if self.stats.connected or backoff.attempts == 0:  # log the change, not retries
                    self.log.warning("uplink.disconnected", error=str(exc))
            finally:
                self.stats.connected = False
                self.window.disconnected()  # retained presence comes again on subscribe
                self.stats.hub_online = self.window.hub_online
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
            await self._act(client, self.window.connected(time.monotonic()))
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
                tasks.create_task(self._send(client), name="uplink-send")
                if self.counters is not None:
                    tasks.create_task(self._report(client, session), name="uplink-stats")
        except* aiomqtt.MqttError as group:
            raise group.exceptions[0] from None

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
            if (
                isinstance(decoded, Ack)
                and decoded.gateway == self.config.id
                and decoded.outbox in ("", self.outbox.outbox_id)  # not another box's
            ):
                now = time.monotonic()
                actions = self.window.ack(decoded.seq, newest=self.outbox.last_seq, now=now)
                if not any(isinstance(action, sending.AckRefused) for action in actions):
                    self.stats.acks_received += 1
                await self._act(client, actions, topic=str(message.topic))
                self._wake.set()
            elif isinstance(decoded, ReplayRequest) and decoded.gateway == self.config.id:
                self.stats.replays_answered += 1
                self.log.info("uplink.replay", missing=f"{decoded.from_seq}-{decoded.to_seq}")
                self.window.replay(decoded.from_seq, time.monotonic())
                self._wake.set()
            elif isinstance(decoded, Command):
                if self.on_command is not None:
                    self.on_command(decoded)
            elif isinstance(decoded, HubPresence) and instance is not None:
                await self._presence(client, instance, online=decoded.online)
            else:
                self._bad_message(str(message.topic), f"unexpected {type(decoded).__name__}")

    async def _presence(self, client: aiomqtt.Client, instance: str, *, online: bool) -> None:
        """One hub instance came or went; the hub is present while any instance is."""
        await self._act(client, self.window.presence(instance, online=online, now=time.monotonic()))
        self._wake.set()

    async def _act(
        self, client: aiomqtt.Client, actions: list[sending.Action], *, topic: str = ""
    ) -> None:
        """Do what the send window says, in order; ``topic``: where the input came from."""
        self.stats.hub_online = self.window.hub_online  # as the input that said it left it
        for action in actions:
            match action:
                case sending.Send():
                    await self._publish(client, action)
                case sending.Idle(seconds=seconds):
                    await self._idle(seconds)
                case sending.Gather(seconds=seconds):
                    await asyncio.sleep(seconds)
                case sending.Announce():
                    await self._announce(client)
                case sending.RecordAck(seq=seq):
                    acked = await asyncio.to_thread(self.outbox.mark_acked, seq)
                    self.window.recorded(acked, time.monotonic())
                case sending.AckRefused(seq=seq, newest=newest):
                    self._bad_message(topic, f"ack of seq {seq}, past the newest stored {newest}")
                case sending.AckTimeout(acked=acked, sent=sent):
                    self.stats.ack_timeouts += 1
                    self.log.warning("uplink.ack_timeout", acked_seq=acked, sent_seq=sent)
                case sending.HubOnline(instance=instance):
                    self.log.info("uplink.hub_online", instance=instance)
                case sending.HubOffline():
                    self.log.warning("uplink.hub_offline")
                case sending.InstanceGone(instance=instance, remaining=remaining):
                    self.log.info("uplink.hub_instance_gone", instance=instance,
                                  remaining=remaining)  # fmt: skip
                case sending.HubBehind(hub_watermark=hub, acked=acked):
                    self.log.warning("uplink.hub_behind", hub_watermark=hub, acked_seq=acked)
                case sending.NewOutbox(hub_watermark=hub, origin=origin):
                    self.log.info("uplink.new_outbox", hub_watermark=hub, origin=origin)

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
        await client.publish(self._topic(Kind.BIRTH), wire.encode(birth), qos=1)

    async def _send(self, client: aiomqtt.Client) -> None:
        """Send what the window says, when it says; wait when it says so."""
        while True:
            actions = self.window.next(self.outbox.last_seq, time.monotonic())
            await self._act(client, actions)

    async def _publish(self, client: aiomqtt.Client, send: sending.Send) -> None:
        """Send the stored events ``send`` asks for as one batch covering their range."""
        read = self.outbox.read_batch
        rows, covered = await asyncio.to_thread(read, send.after, send.limit, send.upto)
        if covered <= send.after:
            return
        batch = EventBatch(
            gateway=self.config.id,
            session=self._session_no,
            first_seq=send.after + 1,
            last_seq=covered,
            sent_at=dt.datetime.now(dt.UTC),
            events=[msgspec.Raw(payload) for _, payload in rows],
            outbox=self.outbox.outbox_id,
        )
        await client.publish(self._topic(Kind.EVENTS), wire.encode(batch), qos=1)
        seqs = [seq for seq, _ in rows]
        now = time.monotonic()
        self.stats.events_resent += self.window.sent(send, covered=covered, seqs=seqs, now=now)
        self.stats.batches_sent += 1
        self.stats.events_sent += len(rows)

    async def _idle(self, seconds: float) -> None:
        """Wait for an ack, new events or a rewind, at most ``seconds``."""
        self._wake.clear()
        self.outbox.appended.clear()
        waits = [
            asyncio.ensure_future(self._wake.wait()),
            asyncio.ensure_future(self.outbox.appended.wait()),
        ]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

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
