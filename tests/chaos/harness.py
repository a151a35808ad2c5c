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
from warelink.protocol.messages import ReplayRequest
from warelink.protocol.topics import Kind, Topics
from warelink.sim.scanner import ReceiptLabel, SimulatedLineScanner

FAULTS = (
    "hub_kill", "hubs_all_kill", "broker_restart", "edge_kill", "net_cut", "net_delay",
    "cut_mid_packet", "duplicate_delivery", "database_restart",
)  # fmt: skip


@dataclasses.dataclass
class FaultRecord:
    injected: int = 0
    seconds: float = 0.0


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

    def table(self) -> str:
        lines = [
            f"chaos seed {self.seed}: {self.duration_s:.0f} s of faults, then catch-up in"
            f" {self.catch_up_s:.1f} s",
            f"{'fault':<20}{'injected':>10}{'seconds':>10}",
        ]
        for name, record in self.faults.items():
            lines.append(f"{name:<20}{record.injected:>10}{record.seconds:>10.1f}")
        lines.append(
            f"events generated {self.generated}, stored {self.stored}, lost {self.lost},"
            f" doubled {self.doubled}, wrong balances {self.balances_wrong}"
        )
        return "\n".join(lines)

    @property
    def ok(self) -> bool:
        return self.lost == self.doubled == self.balances_wrong == 0


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
        self.scanning = asyncio.Event()
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

    async def scan_forever(self, rate: float) -> None:
        while True:
            await self.scanning.wait()
            label = await self.scanner.scan_receipt()
            self.labels.append(label)
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
        return result

    async def _under_load(self, faults: tuple[str, ...], db_url: str) -> ChaosResult:
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
        started = time.monotonic()
        await self._caught_up(db_url)
        return await self._verify(db_url, time.monotonic() - started)

    async def _inject(self, fault: str) -> None:
        record = self.records[fault]
        record.injected += 1
        began = time.monotonic()
        rng = self.rng
        if fault == "hub_kill":
            hub = rng.choice(self.hubs)
            await hub.kill()
            await asyncio.sleep(rng.uniform(0.5, 3))
            await hub.start()
        elif fault == "hubs_all_kill":
            await asyncio.gather(*(hub.kill() for hub in self.hubs))
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
        record.seconds += time.monotonic() - began

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

    async def _caught_up(self, db_url: str, timeout: float = 180) -> None:
        async def acked(conn: psycopg.AsyncConnection[Any]) -> dict[str, int]:
            cur = await conn.execute("SELECT id, acked_seq FROM gateways")
            return {gw: seq for gw, seq in await cur.fetchall()}

        async with asyncio.timeout(timeout):
            while True:
                try:
                    async with await psycopg.AsyncConnection.connect(db_url) as conn:
                        seen = await acked(conn)
                except psycopg.OperationalError:
                    seen = {}
                if all(seen.get(e.gateway, -1) == e.last_seq() for e in self.edges):
                    return
                await asyncio.sleep(0.3)

    async def _verify(self, db_url: str, catch_up_s: float) -> ChaosResult:
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
