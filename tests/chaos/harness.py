"""The chaos harness: a whole deployment under load, faults at random moments, then the truth.

Private PostgreSQL and Mosquitto (so they can be crashed), two hub processes sharing the
ingest subscription (so batches can be committed out of order), gateways as processes
reaching the broker through fault-injecting proxies, and a simulated dock scanner per
gateway on a real pty. The scanners' labels are the scenario's truth: at the end every
label must be in the ledger exactly once, and every balance must equal the labels' sum.

Edge SIGKILL: the harness stops scanning at that gateway and waits until its outbox has
stored every scan before killing it (a read that is not yet stored when the process dies
is lost at the serial link, as on real hardware, where the scanner gets no answer); the
kill lands while the uplink drains and acks fly.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import aiomqtt
import psycopg

from tests.support.hub import HubProcess
from tests.support.proxy import FaultProxy
from tests.support.services import PrivateMosquitto, PrivatePostgres, free_port
from tests.support.sites import write_site_config
from warelink.edge.gateway import OUTBOX_FILE
from warelink.hub.migrate import migrate
from warelink.hub.settings import HubSettings
from warelink.protocol import wire
from warelink.protocol.messages import Receipt, ReplayRequest
from warelink.protocol.topics import Kind, Topics
from warelink.sim.scanner import ReceiptLabel, SimulatedLineScanner

FAULTS = (
    "hub_kill", "hubs_all_kill", "broker_restart", "edge_kill", "net_cut", "net_delay",
    "cut_mid_packet", "duplicate_delivery", "database_restart", "hub_gone", "outbox_returns",
)  # fmt: skip

SAMPLE_S = 0.2  # how often the sampler reads every gateway's oldest unacked age


@dataclasses.dataclass
class FaultRecord:
    injected: int = 0
    seconds: float = 0.0
    # The worst oldest-unacked age of any gateway from the first injection to the end.
    worst_unacked_s: float = 0.0
    first_at: float | None = dataclasses.field(default=None, repr=False, compare=False)


@dataclasses.dataclass
class ChaosResult:
    seed: int
    duration_s: float
    generated: int
    stored: int
    lost: int
    doubled: int
    balances_wrong: int
    catch_up_s: float
    faults: dict[str, FaultRecord]
    caught_up: bool = True  # every gateway's outbox acked up to its newest seq in time
    worst_unacked_s: float = 0.0  # the worst oldest-unacked age of the whole run
    # outbox_returns: labels scanned into the restored (older) outbox
    restored_kept: int = 0  # still in it, unacked, when it was set aside again
    restored_missing: int = 0  # gone from it, or acked in it
    refused_stored: int = 0  # in the hub's events although the hub refused that box
    restored_acked_unstored: int = 0  # of the missing: not in the hub's events either
    notes: list[str] = dataclasses.field(default_factory=list)

    def table(self) -> str:
        lines = [
            f"chaos seed {self.seed}: {self.duration_s:.0f} s of faults, then catch-up in"
            f" {self.catch_up_s:.1f} s" + ("" if self.caught_up else " (NOT caught up)"),
            f"{'fault':<20}{'injected':>10}{'seconds':>10}{'worst unacked s':>18}",
        ]
        for name, record in self.faults.items():
            worst = f"{record.worst_unacked_s:.1f}" if record.injected else "-"
            lines.append(f"{name:<20}{record.injected:>10}{record.seconds:>10.1f}{worst:>18}")
        lines.append(
            f"events generated {self.generated}, stored {self.stored}, lost {self.lost},"
            f" doubled {self.doubled}, wrong balances {self.balances_wrong}"
        )
        lines.append(f"oldest unacked age: worst {self.worst_unacked_s:.1f} s over the run")
        if self.faults.get("outbox_returns", FaultRecord()).injected:
            lines.append(
                f"restored outbox: {self.restored_kept} labels kept unacked,"
                f" {self.restored_missing} missing (acked or gone; of them"
                f" {self.restored_acked_unstored} not stored at the hub),"
                f" {self.refused_stored} stored at the hub"
            )
        lines += self.notes
        return "\n".join(lines)

    @property
    def ok(self) -> bool:
        return (
            self.caught_up
            and self.lost == self.doubled == self.balances_wrong == 0
            and self.restored_missing == self.refused_stored == 0
        )


class Edge:
    """One gateway process, its proxy to the broker and the scanner the harness drives."""

    def __init__(self, n: int, root: Path, prefix: str, broker_port: int, rng: random.Random):
        self.site = f"chaos-site-{n}"
        self.gateway = f"chaos-gw-{n}"
        self.root = root
        self.prefix = prefix
        self.rng = random.Random(rng.random())
        self.port = root / self.gateway / "scanner"
        self.config = write_site_config(
            root, site=self.site, gateway=self.gateway, ack_timeout_s=2.0, retention_s=3600.0,
            stats_interval_s=2.0,
            devices=[{"id": "dock-scanner", "kind": "line_scanner", "port": str(self.port),
                      "purpose": "receive", "location": "DOCK-1"}],
        )  # fmt: skip
        self.outbox_path = root / self.gateway / OUTBOX_FILE
        self.proxy = FaultProxy(broker_port, rng=self.rng)
        self.scanner = SimulatedLineScanner(self.port, seed=self.rng.randrange(2**32))
        self.process: asyncio.subprocess.Process | None = None
        self.labels: list[ReceiptLabel] = []
        self.refused_labels: list[ReceiptLabel] = []  # scanned into a restored, older outbox
        self.sink = self.labels  # where scan_forever keeps its labels
        self.scanning = asyncio.Event()
        self.swapping = False  # its outbox files are being moved: the sampler keeps off
        self.log = root / f"{self.gateway}.log"

    async def start(self) -> None:
        before = self.last_seq()
        env = os.environ | {
            "WARELINK_MQTT_URL": f"mqtt://127.0.0.1:{self.proxy.port}",
            "WARELINK_MQTT_PREFIX": self.prefix,
        }
        with open(self.log, "ab") as log:  # noqa: ASYNC230 - opened once per start
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "warelink.edge.cli", "edge", "run",
                "--config", str(self.config), env=env, stdout=log, stderr=log,
            )  # fmt: skip
        # The scanner driver stores ONLINE when it has the port open: scans are read then.
        async with asyncio.timeout(30):
            while self.last_seq() <= before:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)

    def last_seq(self) -> int:
        if not self.outbox_path.exists():
            return 0
        conn = sqlite3.connect(f"file:{self.outbox_path}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
            return int(row[0]) if row else 0
        except sqlite3.OperationalError:
            return 0
        finally:
            conn.close()

    def origin(self) -> int:
        """The seq before the outbox's first: its smallest stored seq, less one."""
        conn = sqlite3.connect(f"file:{self.outbox_path}?mode=ro", uri=True)
        try:
            (first,) = conn.execute("SELECT min(seq) FROM outbox").fetchone()
            return int(first) - 1 if first is not None else self.last_seq()
        finally:
            conn.close()

    async def settle(self) -> None:
        """Wait until every scan written so far is stored."""
        stable_since, last = time.monotonic(), self.last_seq()
        while time.monotonic() - stable_since < 0.4:
            await asyncio.sleep(0.05)
            now = self.last_seq()
            if now != last:
                stable_since, last = time.monotonic(), now

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                async with asyncio.timeout(10):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()

    def oldest_unacked_at(self, acked: int) -> float | None:
        """When the outbox stored its oldest event past ``acked`` (None: nothing past it)."""
        conn = sqlite3.connect(f"file:{self.outbox_path}?mode=ro", uri=True)
        try:
            row = conn.execute(
                "SELECT created_at FROM outbox WHERE seq > ? ORDER BY seq LIMIT 1", (acked,)
            ).fetchone()
            return float(row[0]) if row else None
        finally:
            conn.close()

    def unacked_ssccs(self) -> set[str]:
        """The SSCCs of the receipts the outbox holds past its own acked seq."""
        conn = sqlite3.connect(f"file:{self.outbox_path}?mode=ro", uri=True)
        try:
            (acked,) = conn.execute("SELECT value FROM meta WHERE key = 'acked_seq'").fetchone()
            rows = conn.execute("SELECT payload FROM outbox WHERE seq > ?", (acked,)).fetchall()
        finally:
            conn.close()
        events = (wire.decode_event(payload) for (payload,) in rows)
        return {e.body.sscc for e in events if isinstance(e.body, Receipt) and e.body.sscc}

    def outbox_files(self) -> list[Path]:
        """The outbox, its -wal and -shm, its state file and reserve: one unit on disk."""
        name = self.outbox_path.name
        return sorted(p for p in self.outbox_path.parent.iterdir() if p.name.startswith(name))

    def copy_outbox(self, to: Path) -> None:
        to.mkdir()
        for path in self.outbox_files():
            shutil.copy2(path, to / path.name)

    def move_outbox(self, to: Path) -> None:
        to.mkdir(exist_ok=True)
        for path in self.outbox_files():
            os.replace(path, to / path.name)

    def put_outbox(self, source: Path) -> None:
        """Move the outbox files kept in ``source`` back in place (none may be there)."""
        assert not self.outbox_files()
        for path in source.iterdir():
            os.replace(path, self.outbox_path.parent / path.name)
        source.rmdir()

    async def scan_for(self, seconds: float) -> None:
        self.scanning.set()
        await asyncio.sleep(seconds)
        self.scanning.clear()

    async def scan_forever(self, rate: float) -> None:
        while True:
            await self.scanning.wait()
            sink = self.sink  # the outbox the scan goes into is the one open now
            label = await self.scanner.scan_receipt()
            sink.append(label)
            await asyncio.sleep(self.rng.expovariate(rate))


class Chaos:
    def __init__(
        self,
        seed: int,
        *,
        duration_s: float,
        rate: float = 40.0,
        gateways: int = 2,
        max_faults: int | None = None,
    ):
        self.seed = seed
        self.rng = random.Random(seed)
        self.duration_s = duration_s
        self.max_faults = max_faults  # stop injecting after this many, if given
        self.rate = rate
        self.n_gateways = gateways
        self.root = Path(tempfile.mkdtemp(prefix=f"warelink-chaos-{seed}-"))
        self.prefix = f"wlchaos-{seed}-{self.rng.randrange(16**8):08x}"
        self.records = {name: FaultRecord() for name in FAULTS}
        self.pg = PrivatePostgres()
        self.broker = PrivateMosquitto()
        self.hubs: list[HubProcess] = []
        self.edges: list[Edge] = []
        self.began = time.monotonic()
        self.worst_unacked_s = 0.0
        self.worst_unacked_where = ""
        self.restored_kept = 0
        self.restored_missing: list[tuple[Edge, ReceiptLabel]] = []  # acked, or gone
        self.notes: list[str] = []
        self._gone_kill: bool | None = None  # hub_gone's signal: SIGKILL, else SIGTERM

    def note(self, text: str) -> None:
        self.notes.append(f"  {time.monotonic() - self.began:6.1f} s  {text}")

    async def run(self, faults: tuple[str, ...] = FAULTS) -> ChaosResult:
        await self.pg.start()
        await self.broker.start()
        db_url = self.pg.url("warelink_chaos")
        await asyncio.to_thread(migrate, db_url)
        try:
            async with contextlib.AsyncExitStack() as stack:
                for n in range(2):
                    settings = HubSettings(
                        db_url=db_url, mqtt_url=self.broker.url,  # type: ignore[arg-type]
                        mqtt_prefix=self.prefix, http=f"127.0.0.1:{free_port()}",
                    )  # fmt: skip
                    hub = HubProcess(settings, log_path=str(self.root / f"hub-{n}.log"))
                    await hub.start()
                    stack.push_async_callback(hub.stop)
                    self.hubs.append(hub)
                for n in range(self.n_gateways):
                    edge = Edge(n, self.root, self.prefix, self.broker.port, self.rng)
                    await stack.enter_async_context(edge.proxy)
                    await stack.enter_async_context(edge.scanner)
                    await edge.start()
                    stack.push_async_callback(edge.stop)
                    self.edges.append(edge)
                result = await self._under_load(faults, db_url)
        finally:
            await self.broker.close()
            await self.pg.close()
        if result.ok:  # the logs and configs are kept only when there is something to read
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            result.notes.append(f"logs kept in {self.root}")
        return result

    async def _under_load(self, faults: tuple[str, ...], db_url: str) -> ChaosResult:
        self.began = time.monotonic()
        sampler = asyncio.create_task(self._sample_unacked(db_url), name="chaos-sampler")
        try:
            async with asyncio.TaskGroup() as tasks:
                scanners = [
                    tasks.create_task(edge.scan_forever(self.rate / len(self.edges)))
                    for edge in self.edges
                ]
                for edge in self.edges:
                    edge.scanning.set()
                deadline = time.monotonic() + self.duration_s
                injected = 0
                while time.monotonic() < deadline and injected != self.max_faults:
                    await asyncio.sleep(self.rng.uniform(0.5, 2.5))
                    await self._inject(self.rng.choice(faults))
                    injected += 1
                for edge in self.edges:
                    edge.scanning.clear()
                await asyncio.sleep(0.5)
                for scanner in scanners:
                    scanner.cancel()
            # Every scan written is stored before "caught up" can be judged: on a loaded
            # machine a gateway may still be reading its port (acked == last_seq, too early).
            for edge in self.edges:
                await edge.settle()
            started = time.monotonic()
            caught_up = await self._caught_up(db_url)
            catch_up_s = time.monotonic() - started
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        return await self._verify(db_url, catch_up_s, caught_up)

    async def _inject(self, fault: str) -> None:
        record = self.records[fault]
        record.injected += 1
        began = time.monotonic()
        if record.first_at is None:
            record.first_at = began
        if fault not in ("hub_gone", "outbox_returns"):  # those two note what they did
            self.note(fault)
        rng = self.rng
        if fault == "hub_kill":
            hub = rng.choice(self._running_hubs() or self.hubs)
            await self._kill_hub(hub)
            await asyncio.sleep(rng.uniform(0.5, 3))
            await hub.start()
        elif fault == "hubs_all_kill":
            await asyncio.gather(*(self._kill_hub(hub) for hub in self.hubs))
            await asyncio.sleep(rng.uniform(1, 4))
            await asyncio.gather(*(hub.start() for hub in self.hubs))
        elif fault == "broker_restart":
            await self.broker.stop()
            await asyncio.sleep(rng.uniform(0.5, 3))
            await self.broker.start()
        elif fault == "edge_kill":
            edge = rng.choice(self.edges)
            edge.scanning.clear()
            await edge.settle()
            await asyncio.sleep(rng.uniform(0, 0.5))  # while the uplink drains and acks fly
            await edge.kill()
            await asyncio.sleep(rng.uniform(0.5, 2))
            await edge.start()
            edge.scanning.set()
        elif fault == "net_cut":
            edge = rng.choice(self.edges)
            edge.proxy.cut = True
            edge.proxy.drop_all()
            await asyncio.sleep(rng.uniform(0.5, 4))
            edge.proxy.cut = False
        elif fault == "net_delay":
            edge = rng.choice(self.edges)
            edge.proxy.delay_s = rng.uniform(0.02, 0.3)
            await asyncio.sleep(rng.uniform(1, 4))
            edge.proxy.delay_s = 0.0
        elif fault == "cut_mid_packet":
            rng.choice(self.edges).proxy.cut_mid_packet = True
            await asyncio.sleep(1)
        elif fault == "duplicate_delivery":
            await self._replay_acked(rng.choice(self.edges))
        elif fault == "database_restart":
            await self.pg.stop(rng.choice(["fast", "immediate"]))
            await asyncio.sleep(rng.uniform(0.5, 3))
            await self.pg.start()
        elif fault == "hub_gone":
            await self._hub_gone()
        elif fault == "outbox_returns":
            await self._outbox_returns(rng.choice(self.edges), record.injected)
        record.seconds += time.monotonic() - began

    def _running_hubs(self) -> list[HubProcess]:
        return [h for h in self.hubs if h.process is not None and h.process.returncode is None]

    async def _kill_hub(self, hub: HubProcess) -> None:
        if hub in self._running_hubs():  # one gone for good (hub_gone) is gone already
            await hub.kill()

    async def _hub_gone(self) -> None:
        """One of the two hubs stops for good; if one is gone already, it comes back first."""
        gone = [hub for hub in self.hubs if hub not in self._running_hubs()]
        if gone:
            await asyncio.gather(*(hub.start() for hub in gone))
            self.note(f"hub_gone: hub-{self.hubs.index(gone[0])} back, to let another go")
        hub = self.rng.choice(self.hubs)
        if self._gone_kill is None:
            self._gone_kill = self.rng.random() < 0.5
        else:
            self._gone_kill = not self._gone_kill
        how = "SIGKILL" if self._gone_kill else "SIGTERM"
        self.note(f"hub_gone: hub-{self.hubs.index(hub)} stopped for good ({how})")
        await (hub.kill() if self._gone_kill else hub.stop())

    async def _outbox_returns(self, edge: Edge, n: int) -> None:
        """An older copy of ``edge``'s outbox comes back in place of the real one, scans,
        and must be refused by the hub while keeping every event; then the real one
        comes back. Its files are moved only while the gateway is down."""
        rng = self.rng
        image = self.root / f"{edge.gateway}-image-{n}"
        real = self.root / f"{edge.gateway}-real-{n}"
        restored = self.root / f"{edge.gateway}-restored-{n}"
        self.note(f"outbox_returns: {edge.gateway}")
        edge.scanning.clear()
        await edge.settle()
        await edge.kill()
        edge.copy_outbox(image)
        imaged = edge.last_seq()
        # The real outbox moves on past the image, and the hub stores what it sent.
        await edge.start()
        await edge.scan_for(rng.uniform(1, 2))
        await edge.settle()
        moved_on = edge.last_seq()
        hub_has = await self._hub_acked(edge, upto=moved_on)
        await edge.kill()
        edge.swapping = True
        try:
            edge.move_outbox(real)
            edge.put_outbox(image)
            # The image, same outbox id, holding less than the hub stored: scans go in.
            edge.sink = []
            await edge.start()
            await edge.scan_for(rng.uniform(1, 2))
            await asyncio.sleep(3)  # its births go unanswered (refused), re-sent meanwhile
            await edge.settle()
            await edge.kill()
            scanned, edge.sink = edge.sink, edge.labels
            edge.refused_labels += scanned
            kept = edge.unacked_ssccs()
            n_kept = sum(1 for label in scanned if label.sscc in kept)
            self.restored_kept += n_kept
            self.restored_missing += [(edge, label) for label in scanned if label.sscc not in kept]
            ended = edge.last_seq()
            self.note(
                f"  {edge.gateway}'s outbox imaged at seq {imaged}, moved on to"
                f" {moved_on} (hub acked {hub_has}); the image scanned {len(scanned)} labels,"
                f" up to seq {ended} ({'past' if ended > moved_on else 'short of'} the real"
                f" one): {n_kept} kept unacked"
            )
            edge.move_outbox(restored)  # kept for a post-mortem
            edge.put_outbox(real)
        finally:
            edge.swapping = False
        await edge.start()
        edge.scanning.set()

    async def _hub_acked(self, edge: Edge, *, upto: int, timeout: float = 30) -> int:
        """Wait until the hub acked ``edge`` up to ``upto`` (at most ``timeout``); its ack."""
        seen = -1
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while seen < upto:
                    with contextlib.suppress(psycopg.Error):
                        async with await psycopg.AsyncConnection.connect(self.db_url) as conn:
                            cur = await conn.execute(
                                "SELECT acked_seq FROM gateways WHERE id = %s", (edge.gateway,)
                            )
                            row = await cur.fetchone()
                            seen = int(row[0]) if row else -1
                    await asyncio.sleep(0.2)
        return seen

    @property
    def db_url(self) -> str:
        return self.pg.url("warelink_chaos")

    async def _sample_unacked(self, db_url: str) -> None:
        """Every SAMPLE_S: each gateway's oldest unacked age, from its outbox and the hub's
        acked seq; a sample the database (restarting) or an outbox cannot give is skipped."""
        conn: psycopg.AsyncConnection[Any] | None = None
        try:
            while True:
                await asyncio.sleep(SAMPLE_S)
                try:
                    async with asyncio.timeout(2):
                        if conn is None:
                            conn = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
                        cur = await conn.execute("SELECT id, acked_seq FROM gateways")
                        acked = {gw: int(seq) for gw, seq in await cur.fetchall()}
                except (psycopg.Error, OSError, TimeoutError):
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            await conn.close()
                    conn = None
                    continue
                now, when = time.time(), time.monotonic()
                for edge in self.edges:
                    if edge.swapping or edge.gateway not in acked:
                        continue
                    try:
                        stored_at = edge.oldest_unacked_at(acked[edge.gateway])
                    except sqlite3.Error:
                        continue
                    age = 0.0 if stored_at is None else max(0.0, now - stored_at)
                    self._unacked_age(edge, age, when)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()

    def _unacked_age(self, edge: Edge, age: float, when: float) -> None:
        if age > self.worst_unacked_s:
            self.worst_unacked_s = age
            self.worst_unacked_where = f"{edge.gateway}, at {when - self.began:.1f} s"
        for record in self.records.values():
            if record.first_at is not None and record.first_at <= when:
                record.worst_unacked_s = max(record.worst_unacked_s, age)

    async def _replay_acked(self, edge: Edge) -> None:
        """Ask a gateway to send already-acked events again: duplicates for the hub."""
        last, origin = edge.last_seq(), edge.origin()
        if last - origin < 2:
            return
        first = self.rng.randint(origin + 1, last - 1)
        request = ReplayRequest(gateway=edge.gateway, from_seq=first, to_seq=last)
        with contextlib.suppress(aiomqtt.MqttError):
            async with aiomqtt.Client("127.0.0.1", self.broker.port) as client:
                topic = Topics(self.prefix).gateway(edge.site, edge.gateway, Kind.REPLAY)
                await client.publish(topic, wire.encode(request), qos=1)

    async def _caught_up(self, db_url: str, timeout: float = 180) -> bool:
        """Whether every gateway's outbox is acked up to its newest seq within ``timeout``.

        Each gateway's real outbox is in place by now (outbox_returns puts it back): the
        restored, refused one is set aside and never waited for."""

        async def acked(conn: psycopg.AsyncConnection[Any]) -> dict[str, int]:
            cur = await conn.execute("SELECT id, acked_seq FROM gateways")
            return {gw: seq for gw, seq in await cur.fetchall()}

        try:
            async with asyncio.timeout(timeout):
                while True:
                    try:
                        async with await psycopg.AsyncConnection.connect(db_url) as conn:
                            seen = await acked(conn)
                    except psycopg.OperationalError:
                        seen = {}
                    if all(seen.get(e.gateway, -1) == e.last_seq() for e in self.edges):
                        return True
                    await asyncio.sleep(0.3)
        except TimeoutError:
            return False

    async def _verify(self, db_url: str, catch_up_s: float, caught_up: bool) -> ChaosResult:
        async with await psycopg.AsyncConnection.connect(db_url) as conn:
            cur = await conn.execute(
                "SELECT gateway, body->>'sscc', count(*), count(DISTINCT event_id) FROM events"
                " WHERE type = 'receipt' GROUP BY 1, 2"
            )
            stored = {(gw, sscc): (n, ids) for gw, sscc, n, ids in await cur.fetchall()}
            cur = await conn.execute(
                "SELECT site, sku, lot, sum(quantity) FROM balances WHERE location = 'DOCK-1'"
                " GROUP BY 1, 2, 3"  # over licence plates: each pallet has its own row
            )
            balances = {(s, sku, lot): int(q) for s, sku, lot, q in await cur.fetchall()}
            cur = await conn.execute(
                "SELECT count(*) FROM (SELECT site, sku, lot FROM balances GROUP BY 1, 2, 3"
                " HAVING sum(quantity) <> 0) unbalanced"
            )
            row = await cur.fetchone()
            unbalanced = int(row[0]) if row else 0
        generated = lost = doubled = 0
        expected: dict[tuple[str, str, str], int] = defaultdict(int)
        for edge in self.edges:
            counts = Counter(label.sscc for label in edge.labels)
            for label in edge.labels:
                expected[(edge.site, label.gtin, label.lot)] += label.count
            for sscc, times in counts.items():
                generated += times
                n, _ = stored.get((edge.gateway, sscc), (0, 0))
                lost += max(0, times - n)
                doubled += max(0, n - times)
        wrong = sum(1 for key, qty in expected.items() if balances.get(key, 0) != qty)
        wrong += sum(1 for key in balances if key not in expected) + unbalanced
        refused_stored = sum(
            1 for edge in self.edges for label in edge.refused_labels
            if (edge.gateway, label.sscc) in stored
        )  # fmt: skip
        acked_unstored = sum(
            1 for edge, label in self.restored_missing if (edge.gateway, label.sscc) not in stored
        )
        if self.worst_unacked_where:
            self.notes.append(f"  worst oldest unacked age: {self.worst_unacked_where}")
        return ChaosResult(
            seed=self.seed,
            duration_s=self.duration_s,
            generated=generated,
            stored=sum(n for n, _ in stored.values()),
            lost=lost,
            doubled=doubled,
            balances_wrong=wrong,
            catch_up_s=catch_up_s,
            faults=self.records,
            caught_up=caught_up,
            worst_unacked_s=self.worst_unacked_s,
            restored_kept=self.restored_kept,
            restored_missing=len(self.restored_missing),
            refused_stored=refused_stored,
            restored_acked_unstored=acked_unstored,
            notes=self.notes,
        )


async def run_chaos(
    seed: int,
    duration_s: float,
    faults: tuple[str, ...] = FAULTS,
    rate: float = 40.0,
    max_faults: int | None = None,
) -> ChaosResult:
    chaos = Chaos(seed, duration_s=duration_s, rate=rate, max_faults=max_faults)
    return await chaos.run(faults)
