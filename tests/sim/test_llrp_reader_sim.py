"""The simulated LLRP reader, spoken to over a real TCP socket with the sans-I/O codec."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from warelink.protocol.epc import Sgtin96, Sscc96, decode_epc
from warelink.protocol.llrp import (
    AddRoSpec,
    AddRoSpecResponse,
    ConnectionAttemptStatus,
    DeleteRoSpec,
    EnableRoSpec,
    EnableRoSpecResponse,
    GetReaderCapabilities,
    GetReaderCapabilitiesResponse,
    Keepalive,
    KeepaliveAck,
    LlrpDecoder,
    Malformed,
    Message,
    ReaderEventNotification,
    RoAccessReport,
    RoSpec,
    StartRoSpec,
    StartRoSpecResponse,
    StartTrigger,
    StatusCode,
    UnsupportedMessage,
    encode,
)
from warelink.sim.llrp_reader import SimulatedLlrpReader, make_sgtin_epc, make_sscc_epc
from warelink.sim.scanner import CATALOG

WAIT_S = 5.0


class RawClient:
    """A bare LLRP client: send messages, read what comes back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = LlrpDecoder()
        self.inbox: list[Message | Malformed] = []

    async def send(self, message: Message) -> None:
        self.writer.write(encode(message))
        await self.writer.drain()

    async def next(self, kind: type) -> Message:
        """The next message of ``kind``; keepalives met on the way are acked."""
        async with asyncio.timeout(WAIT_S):
            while True:
                while self.inbox:
                    item = self.inbox.pop(0)
                    if isinstance(item, Keepalive) and kind is not Keepalive:
                        await self.send(KeepaliveAck(message_id=item.message_id))
                    if isinstance(item, kind):
                        assert not isinstance(item, Malformed)
                        return item
                data = await self.reader.read(65536)
                assert data, "connection closed"
                self.inbox += self.decoder.feed(data)

    async def closed(self) -> bytes:
        """Read until the reader closes the connection; what came meanwhile."""
        seen = b""
        async with asyncio.timeout(WAIT_S):
            while data := await self.reader.read(65536):
                seen += data
        return seen


@asynccontextmanager
async def connect(sim: SimulatedLlrpReader) -> AsyncIterator[RawClient]:
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    try:
        yield RawClient(reader, writer)
    finally:
        writer.close()
        await writer.wait_closed()


async def _setup(client: RawClient, spec: RoSpec) -> None:
    event = await client.next(ReaderEventNotification)
    assert isinstance(event, ReaderEventNotification)
    assert event.connection_attempt is ConnectionAttemptStatus.SUCCESS
    await client.send(GetReaderCapabilities(message_id=1))
    caps = await client.next(GetReaderCapabilitiesResponse)
    assert isinstance(caps, GetReaderCapabilitiesResponse) and caps.status.ok
    assert caps.general is not None and caps.general.max_antennas == 4
    requests: list[Message] = [
        DeleteRoSpec(rospec_id=0, message_id=2),
        AddRoSpec(rospec=spec, message_id=3),
        EnableRoSpec(rospec_id=spec.rospec_id, message_id=4),
        StartRoSpec(rospec_id=spec.rospec_id, message_id=5),
    ]
    for mid, request in enumerate(requests, start=2):
        await client.send(request)
        reply = await client.next(object)
        assert getattr(reply, "message_id", None) == mid
        assert reply.status.ok, reply  # type: ignore[union-attr]


async def test_setup_and_reports_for_tags_in_the_field() -> None:
    rng = random.Random(5)
    item = make_sgtin_epc(rng)
    pallet = make_sscc_epc(rng)
    spec = RoSpec(rospec_id=3, antenna_ids=(1, 2))
    async with SimulatedLlrpReader(seed=1, report_interval_s=0.02) as sim, connect(sim) as client:
        await _setup(client, spec)
        assert sim.inventory_running
        sim.place(item, 1, rssi=-50.0)
        sim.place(pallet, 2, rssi=-65.0)
        sim.place(make_sgtin_epc(rng), 3)  # antenna 3 is not in the ROSpec
        seen: dict[str, list[int]] = {}
        while len(seen.get(item, [])) < 20 or not seen.get(pallet):
            report = await client.next(RoAccessReport)
            assert isinstance(report, RoAccessReport)
            (tag,) = report.tags  # N = 1
            assert tag.antenna_id in (1, 2)
            assert tag.peak_rssi is not None and tag.seen_count is not None
            assert tag.first_seen_utc_us is not None and tag.last_seen_utc_us is not None
            assert tag.first_seen_utc_us <= tag.last_seen_utc_us
            seen.setdefault(tag.epc_hex, []).append(tag.peak_rssi)
        assert set(seen) == {item, pallet}
        assert len(set(seen[item])) > 1  # noisy
        assert all(-60 <= rssi <= -40 for rssi in seen[item])
        assert sim.received[0] == GetReaderCapabilities(message_id=1)
        assert isinstance(sim.received[2], AddRoSpec) and sim.received[2].rospec == spec
    decoded = decode_epc(item)
    assert isinstance(decoded, Sgtin96) and decoded.gtin in CATALOG
    assert isinstance(decode_epc(pallet), Sscc96)


async def test_start_on_an_immediate_rospec_is_refused_like_a_reader_does() -> None:
    spec = RoSpec(rospec_id=9, start_trigger=StartTrigger.IMMEDIATE)
    async with SimulatedLlrpReader(seed=1) as sim, connect(sim) as client:
        await client.next(ReaderEventNotification)
        await client.send(AddRoSpec(rospec=spec, message_id=1))
        assert isinstance(await client.next(AddRoSpecResponse), AddRoSpecResponse)
        await client.send(EnableRoSpec(rospec_id=9, message_id=2))
        await client.next(EnableRoSpecResponse)
        assert sim.inventory_running  # started on enable
        await client.send(StartRoSpec(rospec_id=9, message_id=3))
        reply = await client.next(StartRoSpecResponse)
        assert isinstance(reply, StartRoSpecResponse)
        assert reply.status.code == StatusCode.A_INVALID
        await client.send(AddRoSpec(rospec=spec, message_id=4))  # duplicate id
        dup = await client.next(AddRoSpecResponse)
        assert isinstance(dup, AddRoSpecResponse) and not dup.status.ok
        await client.send(UnsupportedMessage(message_type=46, message_id=5))
        error = await client.next(object)
        assert getattr(error, "status").code == StatusCode.M_UNSUPPORTED_MESSAGE  # noqa: B009


async def test_keepalives_acked_keep_the_link_and_unacked_ones_close_it() -> None:
    async with SimulatedLlrpReader(keepalive_interval_s=0.05, keepalive_misses=3) as sim:
        async with connect(sim) as client:
            for _ in range(5):
                keepalive = await client.next(Keepalive)
                await client.send(KeepaliveAck(message_id=keepalive.message_id))
            await sim.wait_for(lambda: sim.keepalive_acks >= 5)
            assert sim.violations == []
        async with connect(sim) as client:
            await client.next(ReaderEventNotification)
            await client.closed()  # never acks: the reader hangs up
        assert any("unanswered" in v for v in sim.violations)


async def test_second_client_is_refused_while_the_first_is_connected() -> None:
    async with SimulatedLlrpReader() as sim, connect(sim) as first:
        await first.next(ReaderEventNotification)
        async with connect(sim) as second:
            data = await second.closed()
        (event,) = LlrpDecoder().feed(data)
        assert isinstance(event, ReaderEventNotification)
        assert event.connection_attempt is ConnectionAttemptStatus.FAILED_CLIENT_INITIATED_EXISTS
        assert sim.refused == 1


async def test_fault_modes_garbage_drop_and_slow_answers() -> None:
    loop = asyncio.get_running_loop()
    async with SimulatedLlrpReader(seed=3, answer_delay_s=0.2) as sim:
        async with connect(sim) as client:
            await client.next(ReaderEventNotification)
            started = loop.time()
            await client.send(GetReaderCapabilities(message_id=1))  # answered 0.2 s later
            garbage = await sim.inject_garbage(40)
            data = b""
            async with asyncio.timeout(WAIT_S):
                while True:
                    data += await client.reader.read(65536)
                    if garbage not in data:
                        continue
                    after = data[data.index(garbage) + len(garbage) :]
                    if any(
                        isinstance(m, GetReaderCapabilitiesResponse)
                        for m in LlrpDecoder().feed(after)
                    ):
                        break
            assert loop.time() - started >= 0.2
            broken = LlrpDecoder()
            items = broken.feed(data)
            assert isinstance(items[-1], Malformed) and broken.broken
            sim.drop_connections(refuse_for_s=0.3)
            await client.closed()
        async with connect(sim) as client:  # refused: accepted, then closed at once
            assert await client.closed() == b""
        await asyncio.sleep(0.35)  # the reader "reboots"
        async with connect(sim) as client:
            event = await client.next(ReaderEventNotification)
            assert isinstance(event, ReaderEventNotification)
        assert sim.connections == 2 and sim.refused >= 1
