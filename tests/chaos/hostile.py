"""``make hostile DURATION=10m``: honest traffic through a storm of bad input (issue 9, item 3).

.venv/bin/python -m tests.chaos.hostile --duration 10m [--seed 1]

A real hub process (its own database and MQTT prefix, the machine's Mosquitto) and a real
gateway process with its handheld API. Honest traffic: a canary posting receipts to the
handheld API ten times a second, and an "evil" gateway (this module, over MQTT) whose
batches are mostly good events with some poisoned ones. Meanwhile malformed and oversized
input hits every entrance: the hub's MQTT topics, the gateway's own topics, the handheld
API and the hub's REST API. Everything random comes from one ``random.Random(seed)``.

The truth at the end: every receipt the handheld API answered 201 is in the hub once and
in the stock ledger once; every good evil event is stored once, every bad one quarantined;
ingest never stood still for more than a second while the canary posted; the hub's and
the gateway's memory stayed flat; both processes still run and the hub is ready.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import itertools
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import msgspec
import psycopg
from psycopg import sql

from tests.chaos.soak import seconds
from tests.conftest import MQTT_HOST, MQTT_PORT, PG_ADMIN_URL
from tests.support import forge
from tests.support.cli import warelink
from tests.support.forge import batch
from tests.support.hub import HubProcess
from tests.support.services import free_port
from tests.support.sites import write_site_config
from warelink.hub.settings import HubSettings
from warelink.protocol import wire
from warelink.protocol.errors import DecodeError
from warelink.protocol.messages import (
    Ack,
    Birth,
    Command,
    EventBody,
    GatewayStats,
    HubPresence,
    Receipt,
    ReplayRequest,
    Shipment,
)
from warelink.protocol.topics import Kind, Topics

GTIN = forge.GTIN
CANARY_SITE, CANARY_GW, CANARY_LOT = "site-canary", "gw-canary", "CANARY"
EVIL_SITE, EVIL_GW, EVIL_LOT = "site-evil", "gw-evil", "EVIL"
FORGED_SITE = "site-forged"
FORGED = tuple(f"gw-forged-{n}" for n in range(4))  # quarantine keeps 1000 open each
GATEWAY_KINDS = (Kind.ACK, Kind.REPLAY, Kind.COMMAND)  # what a gateway subscribes to
DEEP = b"\x92\x01" + b"\x91" * 5000 + b"\x00"  # [1, [[[[…]]]]]: 5000 levels
MB = 1 << 20
CANARY_RECEIPT = {"location": "DOCK-1", "gtin": GTIN, "quantity": 1, "lot": CANARY_LOT}

CANARY_RATE = 10.0  # receipts per second
MAX_GAP_S = 1.0  # the longest ingest may stand still while the canary posts
MAX_GROWTH = 0.25  # RSS: end of the run against after the warm-up
RATES = {  # hostile inputs per second, per entrance (about 30 in all)
    "hub-mqtt": 12.0,
    "gateway-mqtt": 6.0,
    "handheld-http": 6.0,
    "hub-http": 6.0,
}
EVIL_BATCHES_PER_S = 3.0
EVIL_BAD_SHARE = 0.25

# What each hostile HTTP input may be answered; anything else is a failure. "reset": the
# server answered an oversized body and closed before the client finished sending it.
EXPECTED: dict[tuple[str, str], set[str]] = {
    ("handheld-http", "long-location"): {"422"},
    ("handheld-http", "nul-in-location"): {"422"},
    ("handheld-http", "lone-surrogate"): {"422"},
    ("handheld-http", "not-json"): {"422"},
    ("handheld-http", "deep-json"): {"422"},
    ("handheld-http", "huge-body"): {"413", "reset"},
    ("handheld-http", "no-idempotency-key"): {"400"},
    ("handheld-http", "long-idempotency-key"): {"400"},
    ("handheld-http", "quantity-2^62"): {"422"},
    ("handheld-http", "unknown-field"): {"422"},
    ("handheld-http", "key-reused-other-body"): {"422"},
    ("handheld-http", "double-tap"): {"200"},  # the stored answer again, not a second receipt
    ("handheld-http", "unknown-route"): {"404", "405"},
    ("hub-http", "oversized-body"): {"413", "reset"},
    ("hub-http", "wrong-password"): {"401", "429"},
    ("hub-http", "unknown-user"): {"401", "429"},
    ("hub-http", "garbage-api-key"): {"401", "429"},
    ("hub-http", "garbage-bearer"): {"401", "429"},
    ("hub-http", "lone-surrogate"): {"422"},
    ("hub-http", "long-location"): {"422"},
    ("hub-http", "not-json"): {"422"},
    ("hub-http", "deep-json"): {"422"},
    ("hub-http", "quantity-2^62"): {"422"},
}


# ------------------------------------------------------------------ the result


@dataclasses.dataclass
class Sample:
    at: float  # seconds since the start of the hostile phase
    hub_mb: float  # VmRSS
    edge_mb: float
    hub_anon_mb: float  # RssAnon: the heap, without mapped files (SQLite's -shm, libraries)
    edge_anon_mb: float


@dataclasses.dataclass
class HostileResult:
    seed: int
    duration_s: float
    # the canary: receipts through the handheld API
    canary_answered: int = 0  # Idempotency-Keys answered 201 (or 200: stored earlier)
    canary_seqs: int = 0  # distinct seqs among them
    canary_in_hub: int = 0  # receipts of the canary's gateway in the hub's events
    canary_lost: int = 0
    canary_doubled: int = 0  # stored but never answered, or two keys on one seq
    canary_stock: float = 0.0  # CANARY at DOCK-1 in the hub's ledger
    canary_refused: int = 0  # honest receipts not answered 201 at the first try
    # the evil gateway: good and bad events in one stream
    evil_good: int = 0
    evil_bad: int = 0
    evil_stored: int = 0
    evil_lost: int = 0
    evil_doubled: int = 0
    evil_quarantined: int = 0
    evil_bad_stored: int = 0  # bad events that got into the events table
    evil_bad_missing: int = 0  # bad events neither stored nor quarantined
    evil_stock: float = 0.0
    # ingest never stopped
    max_gap_s: float = 0.0
    max_gap_at_s: float = 0.0
    gaps_over_limit: int = 0
    latency_p50_s: float = 0.0
    latency_p99_s: float = 0.0
    latency_max_s: float = 0.0
    post_gap_max_s: float = 0.0  # longest between two 201s: the handheld side of a gap
    post_rtt_max_s: float = 0.0
    catch_up_s: float = 0.0
    # memory
    samples: list[Sample] = dataclasses.field(default_factory=list)
    hub_warm_mb: float = 0.0
    hub_end_mb: float = 0.0
    edge_warm_mb: float = 0.0
    edge_end_mb: float = 0.0
    # the entrances: entrance → input → answer → count
    tally: dict[str, dict[str, Counter[str]]] = dataclasses.field(default_factory=dict)
    examples: dict[str, str] = dataclasses.field(default_factory=dict)  # unexpected answers
    hub_counters: dict[str, float] = dataclasses.field(default_factory=dict)
    forged: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)  # kept, over
    gateway_counters: dict[str, float] = dataclasses.field(default_factory=dict)
    # what the gateway's topics carried, as a subscriber beside it decoded it
    gateway_topics: Counter[str] = dataclasses.field(default_factory=Counter)
    timeline: list[tuple[float, str]] = dataclasses.field(default_factory=list)  # big inputs
    hub_alive: bool = False
    edge_alive: bool = False
    readyz: int = 0
    log_alarms: list[str] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)
    root: str = ""

    @property
    def hub_growth(self) -> float:
        return self.hub_end_mb / self.hub_warm_mb - 1 if self.hub_warm_mb else 0.0

    @property
    def edge_growth(self) -> float:
        return self.edge_end_mb / self.edge_warm_mb - 1 if self.edge_warm_mb else 0.0

    def slope(self, which: str) -> float:
        """MB per minute after the warm-up (least squares): a trend the means may hide."""
        after = self.samples[len(self.samples) // 5 :]
        if len(after) < 3:
            return 0.0
        xs = [s.at / 60 for s in after]
        ys = [getattr(s, f"{which}_mb") for s in after]
        return statistics.linear_regression(xs, ys).slope

    @property
    def gateway_bad_expected(self) -> int:
        """Undecodable messages and acks of seqs never stored: what the gateway must count."""
        counted = ("undecodable", "beyond stored")
        return sum(n for kind, n in self.gateway_topics.items() if kind.endswith(counted))

    @property
    def ok(self) -> bool:
        return not self.problems

    def table(self) -> str:
        lines = [
            f"hostile seed {self.seed}: {self.duration_s:.0f} s of honest traffic through bad"
            f" input at every entrance, then catch-up in {self.catch_up_s:.1f} s",
            "",
            "honest traffic",
            f"  canary (handheld API → gateway → hub): {self.canary_answered} receipts answered"
            f" 201 ({self.canary_seqs} seqs), {self.canary_in_hub} in the hub; lost"
            f" {self.canary_lost}, doubled {self.canary_doubled}; CANARY at DOCK-1"
            f" {self.canary_stock:g}; refused at first try {self.canary_refused}",
            f"  evil gateway (MQTT): {self.evil_good + self.evil_bad} events, {self.evil_good}"
            f" good: stored {self.evil_stored}, lost {self.evil_lost}, doubled"
            f" {self.evil_doubled}, EVIL at DOCK-1 {self.evil_stock:g}; {self.evil_bad} bad:"
            f" quarantined {self.evil_quarantined}, stored {self.evil_bad_stored}, missing"
            f" {self.evil_bad_missing}",
            "",
            f"ingest never stopped: longest between canary receipts at the hub"
            f" {self.max_gap_s:.3f} s at +{self.max_gap_at_s:.1f} s (limit {MAX_GAP_S} s,"
            f" {self.gaps_over_limit} over); 201 → stored p50 {self.latency_p50_s:.3f} s, p99"
            f" {self.latency_p99_s:.3f} s, max {self.latency_max_s:.3f} s; longest between 201s"
            f" {self.post_gap_max_s:.3f} s, slowest POST {self.post_rtt_max_s:.3f} s",
            "",
            f"memory (RSS MB; mean of 20-40 % of the run → mean of the last 20 %, limit"
            f" +{MAX_GROWTH:.0%})",
            f"  hub   {self.hub_warm_mb:7.1f} → {self.hub_end_mb:7.1f} ({self.hub_growth:+.1%});"
            f" trend after the warm-up {self.slope('hub'):+.2f} MB/min",
            f"  edge  {self.edge_warm_mb:7.1f} → {self.edge_end_mb:7.1f} ({self.edge_growth:+.1%});"
            f" trend after the warm-up {self.slope('edge'):+.2f} MB/min",
            "  t(s)  " + " ".join(f"{s.at:6.0f}" for s in self.samples),
            "  hub   " + " ".join(f"{s.hub_mb:6.1f}" for s in self.samples),
            "  (anon)" + " ".join(f"{s.hub_anon_mb:6.1f}" for s in self.samples),
            "  edge  " + " ".join(f"{s.edge_mb:6.1f}" for s in self.samples),
            "  (anon)" + " ".join(f"{s.edge_anon_mb:6.1f}" for s in self.samples),
            "",
            f"{'entrance':<15}{'input':<26}{'sent':>7}  answers",
        ]
        for entrance, kinds in self.tally.items():
            for kind, answers in sorted(kinds.items()):
                sent = sum(answers.values())
                shown = ", ".join(f"{a} ×{n}" for a, n in sorted(answers.items()))
                lines.append(f"{entrance:<15}{kind:<26}{sent:>7}  {shown}")
        counters = self.hub_counters
        lines += [
            "",
            "hub: messages {m:.0f}, quarantined messages {q:.0f}, malformed dropped {d:.0f},"
            " quarantined events {e:.0f}, gap anomalies {a:.0f}, gateways held {h:.0f}".format(
                m=counters.get("messages", 0),
                q=counters.get("quarantined_messages", 0),
                d=counters.get("malformed_dropped", 0),
                e=counters.get("quarantined_events", 0),
                a=counters.get("gap_anomalies", 0),
                h=counters.get("gateways_held", 0),
            ),
            "forged gateways (quarantine kept / counted only): "
            + ", ".join(f"{gw} {kept}/{over}" for gw, (kept, over) in sorted(self.forged.items())),
            "gateway: bad messages {b:.0f}, replays answered {r:.0f}, commands received {c:.0f},"
            " acks received {a:.0f}".format(
                b=self.gateway_counters.get("bad_messages", 0),
                r=self.gateway_counters.get("replays_answered", 0),
                c=self.gateway_counters.get("commands_received", 0),
                a=self.gateway_counters.get("acks_received", 0),
            ),
            "  its topics carried (decoded beside it): "
            + ", ".join(f"{k} {n}" for k, n in sorted(self.gateway_topics.items())),
            f"  bad messages expected from that: {self.gateway_bad_expected}",
            f"at the end: hub {'alive' if self.hub_alive else 'DEAD'}, gateway"
            f" {'alive' if self.edge_alive else 'DEAD'}, /readyz {self.readyz}",
        ]
        if self.timeline:
            lines.append(
                "large inputs: "
                + ", ".join(f"+{at:.0f}s {what}" for at, what in self.timeline[:20])
                + (f" … ({len(self.timeline)} in all)" if len(self.timeline) > 20 else "")
            )
        for alarm in self.log_alarms:
            lines.append(f"log: {alarm}")
        for what, example in self.examples.items():
            lines.append(f"unexpected answer: {what}: {example}")
        if self.problems:
            lines.append("")
            lines += [f"FAILED: {problem}" for problem in self.problems]
        if self.root:
            lines.append(f"logs kept in {self.root}")
        return "\n".join(lines)


class Tally:
    """Answers per entrance and input; the first unexpected answer of each kind kept."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
        self.examples: dict[str, str] = {}

    def count(self, entrance: str, kind: str, answer: str, detail: str = "") -> None:
        self.counts[entrance][kind][answer] += 1
        expected = EXPECTED.get((entrance, kind))
        if expected is not None and answer not in expected:
            self.examples.setdefault(f"{entrance} {kind} → {answer}", detail[:300])


# ------------------------------------------------------------------ wire helpers


def event(
    gateway: str,
    seq: int,
    body: EventBody | None = None,
    *,
    lot: str = EVIL_LOT,
    **fields: Any,
) -> bytes:
    return forge.event(
        gateway, seq, body or Receipt(location="DOCK-1", gtin=GTIN, quantity=1, lot=lot), **fields
    )


def bad_event(rng: random.Random, gateway: str, seq: int) -> tuple[str, bytes]:
    """One poisoned event of ``gateway`` at ``seq``: what is wrong with it, and its bytes."""
    kind = rng.choice(
        ["long-location", "year-1", "year-9999", "quantity-2^62", "bad-utf8", "other-gateway"]
    )
    if kind == "long-location":
        body = Receipt(location="L" * 4000, gtin=GTIN, quantity=1, lot=EVIL_LOT)
        return kind, event(gateway, seq, body)
    if kind == "year-1":
        return kind, event(gateway, seq, occurred_at=dt.datetime(1, 1, 1, tzinfo=dt.UTC))
    if kind == "year-9999":
        return kind, event(gateway, seq, occurred_at=dt.datetime(9999, 1, 1, tzinfo=dt.UTC))
    if kind == "quantity-2^62":
        shipment = Shipment(location="DOCK-1", gtin=GTIN, quantity=2**62, lot=EVIL_LOT)
        return kind, event(gateway, seq, shipment)
    if kind == "bad-utf8":
        return kind, event(gateway, seq).replace(b"scanner", b"\xff\xfe\xfd\xfc\xfb\xfa\xf9")
    return kind, event("gw-other", seq)


def mutate(rng: random.Random, data: bytes, donor: bytes) -> tuple[str, bytes]:
    """A random mutation of a valid message: flipped bits, cut, spliced, grown."""
    how = rng.choice(["flip", "truncate", "splice", "insert", "repeat"])
    out = bytearray(data)
    if how == "flip":
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
    elif how == "truncate":
        del out[rng.randrange(len(out)) :]
    elif how == "splice":
        out = out[: rng.randrange(len(out))] + donor[rng.randrange(len(donor)) :]
    elif how == "insert":
        i = rng.randrange(len(out) + 1)
        out[i:i] = rng.randbytes(rng.randint(1, 32))
    else:
        i = rng.randrange(len(out))
        j = rng.randint(i, len(out))
        out[j:j] = out[i:j] * rng.randint(1, 5)
    return how, bytes(out)


# ------------------------------------------------------------------ the deployment


def rss_mb(pid: int) -> tuple[float, float]:
    """VmRSS and RssAnon of a process, in MB."""
    found: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon"):
                found[name] = int(value.split()[0]) / 1024
    return found.get("VmRSS", 0.0), found.get("RssAnon", 0.0)


class Deployment:
    """A hub process (own database, own prefix) and a gateway process with its handheld API."""

    def __init__(self, seed: int) -> None:
        tag = uuid.uuid4().hex[:10]
        self.root = Path(tempfile.mkdtemp(prefix=f"warelink-hostile-{seed}-"))
        self.db_name = f"wl_hostile_{tag}"
        self.db_url = psycopg.conninfo.make_conninfo(PG_ADMIN_URL, dbname=self.db_name)
        self.prefix = f"wlhostile-{seed}-{tag}"
        self.topics = Topics(self.prefix)
        self.mqtt_url = f"mqtt://{MQTT_HOST}:{MQTT_PORT}"
        settings = HubSettings(
            db_url=self.db_url, mqtt_url=self.mqtt_url,  # type: ignore[arg-type]
            mqtt_prefix=self.prefix, http=f"127.0.0.1:{free_port()}",
        )  # fmt: skip
        self.hub = HubProcess(settings, log_path=str(self.root / "hub.log"))
        self.handheld_port = free_port()
        self.config = write_site_config(
            self.root, site=CANARY_SITE, gateway=CANARY_GW, ack_timeout_s=2.0,
            stats_interval_s=5.0, handheld_api=f"127.0.0.1:{self.handheld_port}",
        )  # fmt: skip
        self.edge_log = self.root / "edge.log"
        self.edge: asyncio.subprocess.Process | None = None
        self.handheld_url = f"http://127.0.0.1:{self.handheld_port}"

    def edge_env(self) -> dict[str, str]:
        return os.environ | {
            "WARELINK_MQTT_URL": self.mqtt_url,
            "WARELINK_MQTT_PREFIX": self.prefix,
        }

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Deployment]:
        await warelink("hub", "migrate", env=os.environ | {"WARELINK_DB_URL": self.db_url})
        try:
            await self.hub.start()
            try:
                await self._start_edge()
                try:
                    yield self
                finally:
                    await self._stop_edge()
            finally:
                await self.hub.stop()
        finally:
            await self._clean_up()

    async def _start_edge(self) -> None:
        with open(self.edge_log, "ab") as log:  # noqa: ASYNC230 - opened once, before start
            self.edge = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "warelink.edge.cli", "edge", "run",
                "--config", str(self.config), env=self.edge_env(), stdout=log, stderr=log,
            )  # fmt: skip
        async with asyncio.timeout(30), httpx.AsyncClient(base_url=self.handheld_url) as api:
            while True:  # the handheld API comes up with the gateway
                if self.edge.returncode is not None:
                    raise RuntimeError(f"gateway exited ({self.edge.returncode})")
                try:
                    if (await api.get("/api/v1/status", timeout=1)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)

    async def _stop_edge(self) -> None:
        if self.edge is None or self.edge.returncode is not None:
            return
        self.edge.terminate()
        try:
            async with asyncio.timeout(10):
                await self.edge.wait()
        except TimeoutError:
            self.edge.kill()
            await self.edge.wait()

    async def _clean_up(self) -> None:
        with contextlib.suppress(aiomqtt.MqttError):  # the hub's retained presence
            async with aiomqtt.Client(MQTT_HOST, MQTT_PORT) as client:
                await client.publish(self.topics.hub_presence("forged"), b"", qos=1, retain=True)

        def drop() -> None:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(self.db_name)
                    )
                )

        await asyncio.to_thread(drop)

    def rss(self) -> tuple[tuple[float, float], tuple[float, float]]:
        assert self.hub.process is not None and self.edge is not None
        return rss_mb(self.hub.process.pid), rss_mb(self.edge.pid)


# ------------------------------------------------------------------ honest traffic


@dataclasses.dataclass
class Answered:
    key: str
    seq: int
    at: float  # wall clock (time.time()) of the answer: comparable with received_at
    rtt: float


class CanaryFeed:
    """Receipts to the handheld API on a fixed 100 ms clock; the truth is what got 201."""

    def __init__(self, deployment: Deployment, tally: Tally) -> None:
        self.deployment = deployment
        self.tally = tally
        self.answered: list[Answered] = []
        self.refused = 0
        self.unanswered: list[str] = []
        self.started_at = self.stopped_at = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        async with httpx.AsyncClient(base_url=self.deployment.handheld_url, timeout=10) as api:
            began, n = loop.time(), 0
            self.started_at = time.time()
            while not stop.is_set():
                n += 1
                await self._post(api, f"c-{n}")
                await asyncio.sleep(max(0.0, began + n / CANARY_RATE - loop.time()))
            self.stopped_at = time.time()

    async def _post(self, api: httpx.AsyncClient, key: str) -> None:
        """Until answered: the same key again after a refusal or a lost answer."""
        for attempt in range(100):
            sent = time.monotonic()
            try:
                response = await api.post(
                    "/api/v1/receive", json=CANARY_RECEIPT, headers={"Idempotency-Key": key}
                )
                answer, text = str(response.status_code), response.text
            except httpx.TimeoutException:
                answer, text = "timeout", ""
            except httpx.TransportError as exc:
                answer, text = "reset", repr(exc)
            self.tally.count("canary", "receipt", answer)
            if answer in ("201", "200"):
                rtt = time.monotonic() - sent
                self.answered.append(Answered(key, response.json()["seq"], time.time(), rtt))
                return
            if attempt == 0:
                self.refused += 1
                self.tally.examples.setdefault(f"canary receipt → {answer}", text[:300])
            await asyncio.sleep(0.2)
        self.unanswered.append(key)


class EvilGateway:
    """A gateway that is this module: batches in seq order, some events poisoned."""

    def __init__(self, deployment: Deployment, rng: random.Random, tally: Tally) -> None:
        self.topics = deployment.topics
        self.rng = rng
        self.tally = tally
        self.events: dict[int, bytes] = {}
        self.good: set[int] = set()
        self.bad: set[int] = set()
        self.last = 0  # the newest seq sent
        self.acked = 0
        self.replays = 0

    async def run(self, stop: asyncio.Event, drain_timeout: float) -> None:
        async with aiomqtt.Client(
            MQTT_HOST, MQTT_PORT, identifier=f"evil-{uuid.uuid4().hex}"
        ) as mq:
            for kind in (Kind.ACK, Kind.REPLAY):
                await mq.subscribe(self.topics.gateway(EVIL_SITE, EVIL_GW, kind), qos=1)
            async with asyncio.TaskGroup() as tasks:
                listener = tasks.create_task(self._listen(mq), name="evil-listen")
                await self._send(mq, stop)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(drain_timeout):
                        while self.acked < self.last:
                            await asyncio.sleep(0.1)
                listener.cancel()

    async def _send(self, mq: aiomqtt.Client, stop: asyncio.Event) -> None:
        rng, seq = self.rng, self.last
        topic = self.topics.gateway(EVIL_SITE, EVIL_GW, Kind.EVENTS)
        while not stop.is_set():
            first = seq + 1
            for _ in range(rng.randint(1, 6)):
                seq += 1
                if rng.random() < EVIL_BAD_SHARE:
                    kind, self.events[seq] = bad_event(rng, EVIL_GW, seq)
                    self.bad.add(seq)
                else:
                    kind, self.events[seq] = "good", event(EVIL_GW, seq)
                    self.good.add(seq)
                self.tally.count("evil-gateway", kind, "sent")
            self.last = seq
            await mq.publish(topic, self._batch(first, seq), qos=1)
            await asyncio.sleep(rng.expovariate(EVIL_BATCHES_PER_S))

    def _batch(self, first: int, last: int) -> bytes:
        return batch(EVIL_GW, first, last, [self.events[s] for s in range(first, last + 1)])

    async def _listen(self, mq: aiomqtt.Client) -> None:
        async for message in mq.messages:
            decoded = wire.decode(bytes(message.payload))
            if isinstance(decoded, Ack):
                self.acked = max(self.acked, decoded.seq)
            elif isinstance(decoded, ReplayRequest):  # as a real gateway would: send again
                self.replays += 1
                first, last = max(decoded.from_seq, 1), min(decoded.to_seq, self.last)
                if first <= last:
                    topic = self.topics.gateway(EVIL_SITE, EVIL_GW, Kind.EVENTS)
                    await mq.publish(topic, self._batch(first, last), qos=1)


# ------------------------------------------------------------------ hostile traffic


class Storm:
    """Bad input at one entrance at a steady random rate, until stopped."""

    entrance = ""

    def __init__(self, deployment: Deployment, rng: random.Random, tally: Tally) -> None:
        self.d = deployment
        self.rng = rng
        self.tally = tally
        self.started = time.monotonic()  # of the hostile phase: set when it starts
        self.timeline: list[tuple[float, str]] = []

    def note(self, what: str) -> None:
        self.timeline.append((time.monotonic() - self.started, what))

    async def run(self, stop: asyncio.Event) -> None:
        raise NotImplementedError

    async def pace(self) -> None:
        await asyncio.sleep(self.rng.expovariate(RATES[self.entrance]))


class MqttStorm(Storm):
    def choose(self) -> tuple[str, str, bytes]:
        raise NotImplementedError

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with aiomqtt.Client(
                    MQTT_HOST, MQTT_PORT, identifier=f"storm-{uuid.uuid4().hex}", timeout=30
                ) as mq:
                    while not stop.is_set():
                        kind, topic, payload = self.choose()
                        if len(payload) >= MB:
                            self.note(f"{self.entrance} {kind} {len(payload) / MB:.1f} MB")
                        await mq.publish(topic, payload, qos=1)
                        self.tally.count(self.entrance, kind, "published")
                        await self.pace()
            except aiomqtt.MqttError as exc:
                self.tally.count(self.entrance, "(publisher)", "disconnected", repr(exc))
                await asyncio.sleep(0.5)


class HubMqttStorm(MqttStorm):
    """The hub's topics: mutated batches, deep nesting, impossible births and stats, …"""

    entrance = "hub-mqtt"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.seqs = dict.fromkeys(FORGED, 0)
        self.kinds: list[tuple[str, float, Callable[[str], tuple[str, bytes]]]] = [
            ("mutated-batch", 30, self.mutated_batch),
            ("deep-nesting", 8, self.deep),
            ("impossible-birth", 10, self.birth),
            ("impossible-stats", 8, self.stats),
            ("first-seq-10^18", 2, self.far_seq),
            ("other-gateways-batch", 5, self.other_gateway),
            ("not-a-batch", 5, self.not_a_batch),
            ("garbage", 10, self.garbage),
            ("invalid-topic", 8, self.invalid_topic),
            ("empty", 2, lambda gw: (self.t(gw, Kind.EVENTS), b"")),
            ("oversized-1-5MB", 0.8, self.oversized),
            ("oversized-event-4MB", 0.3, self.oversized_event),
            ("oversized-17MB", 0.08, self.beyond_packet_limit),
        ]

    def t(self, gateway: str, kind: Kind) -> str:
        return self.d.topics.gateway(FORGED_SITE, gateway, kind)

    def choose(self) -> tuple[str, str, bytes]:
        kinds = self.kinds
        kind, _, make = self.rng.choices(kinds, weights=[w for _, w, _ in kinds])[0]
        topic, payload = make(self.rng.choice(FORGED))
        return kind, topic, payload

    def valid_batch(self, gateway: str) -> bytes:
        first = self.seqs[gateway] + 1
        last = self.seqs[gateway] = first + self.rng.randint(0, 4)
        events = [event(gateway, s, lot="FORGED") for s in range(first, last + 1)]
        return batch(gateway, first, last, events)

    def mutated_batch(self, gateway: str) -> tuple[str, bytes]:
        _, payload = mutate(self.rng, self.valid_batch(gateway), self.valid_batch(gateway))
        return self.t(gateway, Kind.EVENTS), payload

    def deep(self, gateway: str) -> tuple[str, bytes]:
        return self.t(gateway, self.rng.choice([Kind.EVENTS, Kind.BIRTH, Kind.STATS])), DEEP

    def birth(self, gateway: str) -> tuple[str, bytes]:
        rng = self.rng
        fields: dict[str, Any] = {"gateway": gateway, "site": FORGED_SITE, "session": 1,
                                  "last_seq": 0}  # fmt: skip
        what = rng.choice(["session", "last_seq", "devices", "gateway", "utf8"])
        if what in ("session", "last_seq"):
            fields[what] = rng.choice([2**63, 2**64 - 1])
        elif what == "devices":
            fields["devices"] = ["scale\x00", "x" * 200]
        elif what == "gateway":
            fields["gateway"] = "gw-someone-else"
        payload = wire.encode(Birth(**fields))
        if what == "utf8":
            payload = payload.replace(gateway.encode(), b"\xff" * len(gateway))
        return self.t(gateway, Kind.BIRTH), payload

    def stats(self, gateway: str) -> tuple[str, bytes]:
        counters = self.rng.choice([
            {"depth\x00": 1.0}, {"depth": float("nan")}, {"depth": 1e300},
            {f"c{i}": 1.0 for i in range(300)}, {"L" * 4000: 1.0},
        ])  # fmt: skip
        stats = GatewayStats(gateway=gateway, session=1, sent_at=dt.datetime.now(dt.UTC),
                             counters=counters)  # fmt: skip
        return self.t(gateway, Kind.STATS), wire.encode(stats)

    def far_seq(self, gateway: str) -> tuple[str, bytes]:
        seq = 10**18 + self.rng.randrange(3)
        return self.t(gateway, Kind.EVENTS), batch(gateway, seq, seq, [event(gateway, seq)])

    def other_gateway(self, gateway: str) -> tuple[str, bytes]:
        other = self.rng.choice([g for g in FORGED if g != gateway])
        return self.t(gateway, Kind.EVENTS), self.valid_batch(other)

    def not_a_batch(self, gateway: str) -> tuple[str, bytes]:
        choices: list[Ack | HubPresence] = [
            Ack(gateway=gateway, seq=1),
            HubPresence(online=True, instance="x"),
        ]
        return self.t(gateway, Kind.EVENTS), wire.encode(self.rng.choice(choices))

    def garbage(self, gateway: str) -> tuple[str, bytes]:
        kind = self.rng.choice([Kind.EVENTS, Kind.BIRTH, Kind.STATS, Kind.DEATH])
        return self.t(gateway, kind), self.rng.randbytes(self.rng.randint(1, 300))

    def invalid_topic(self, gateway: str) -> tuple[str, bytes]:
        head = f"{self.d.prefix}/v1"
        topic = self.rng.choice([
            f"{head}/bad site/{gateway}/events", f"{head}/{'s' * 80}/{gateway}/birth",
            f"{head}/{FORGED_SITE}/-dash/stats", f"{head}/é/ü/events",
            f"{head}/{FORGED_SITE}/{gateway}/nonsense", f"{head}/a/b/c/events",
            f"{self.d.prefix}/v2/{FORGED_SITE}/{gateway}/events",
        ])  # fmt: skip
        return topic, self.valid_batch(gateway)

    def oversized(self, gateway: str) -> tuple[str, bytes]:
        return self.t(gateway, Kind.EVENTS), self.rng.randbytes(self.rng.randint(1, 5) * MB)

    def oversized_event(self, gateway: str) -> tuple[str, bytes]:
        blob = msgspec.msgpack.encode("x" * (4 * MB))  # an event that is not an event
        first = self.seqs[gateway] + 1
        self.seqs[gateway] = first
        return self.t(gateway, Kind.EVENTS), batch(gateway, first, first, [blob])

    def beyond_packet_limit(self, gateway: str) -> tuple[str, bytes]:
        # Above the 16 MiB the hub tells the broker it takes: the broker never delivers it.
        return self.t(gateway, Kind.EVENTS), b"\x00" * (17 * MB)


class GatewayMqttStorm(MqttStorm):
    """The gateway's own topics: garbage acks, replay requests and commands; hub presence."""

    entrance = "gateway-mqtt"

    def t(self, kind: Kind) -> str:
        return self.d.topics.gateway(CANARY_SITE, CANARY_GW, kind)

    def choose(self) -> tuple[str, str, bytes]:
        rng = self.rng
        ack = self.t(Kind.ACK)
        replay = self.t(Kind.REPLAY)
        command = self.t(Kind.COMMAND)
        key = f"junk-{rng.getrandbits(48):x}"
        choices: list[tuple[str, str, Callable[[], bytes]]] = [
            ("ack-bad-utf8", ack, lambda: wire.encode(Ack(gateway=CANARY_GW, seq=1)).replace(
                CANARY_GW.encode(), b"\xff" * len(CANARY_GW))),
            ("ack-beyond-stored", ack, lambda: wire.encode(Ack(gateway=CANARY_GW, seq=2**62))),
            ("ack-nested", ack, lambda: DEEP),
            ("ack-other-gateway", ack, lambda: wire.encode(Ack(gateway="gw-other", seq=10**9))),
            ("ack-garbage", ack, lambda: rng.randbytes(rng.randint(1, 100))),
            ("replay-garbage", replay, lambda: b"\xc1\xc1\xc1" + rng.randbytes(8)),
            ("replay-nested", replay, lambda: DEEP),
            ("replay-other-gateway", replay, lambda: wire.encode(
                ReplayRequest(gateway="gw-other", from_seq=1, to_seq=5))),
            ("replay-beyond-stored", replay, lambda: wire.encode(
                ReplayRequest(gateway=CANARY_GW, from_seq=2**62, to_seq=2**62))),
            ("command-deep-args", command, lambda: wire.encode(Command(
                key=key, device="nope", action="print", args={"a": [[[[[[[[[[1]]]]]]]]]]}))),
            ("command-nul-key", command, lambda: wire.encode(
                Command(key="k\x00", device="nope", action="print"))),
            ("command-bad-utf8", command, lambda: wire.encode(Command(
                key=key, device="nope", action="print")).replace(b"nope", b"\xff\xfe\xfd\xfc")),
            ("command-huge-args", command, lambda: wire.encode(Command(
                key=key, device="nope", action="print", args={"blob": "x" * 70_000}))),
            ("command-garbage", command, lambda: rng.randbytes(rng.randint(1, 300))),
            ("presence-garbage", self.d.topics.hub_presence("forged"), lambda: wire.encode(
                HubPresence(online=True, instance="x")).replace(b"\xa1x", b"\xa1\xff")),
            ("presence-nested", self.d.topics.hub_presence("forged"), lambda: DEEP),
        ]  # fmt: skip
        if rng.random() < 0.01:
            return "command-oversized-1-3MB", command, rng.randbytes(rng.randint(1, 3) * MB)
        kind, topic, make = rng.choice(choices)
        return kind, topic, make()


class HttpStorm(Storm):
    base_url = ""

    async def one(self, client: httpx.AsyncClient) -> None:
        raise NotImplementedError

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as client:
            while not stop.is_set():
                await self.one(client)
                await self.pace()

    async def send(
        self, client: httpx.AsyncClient, kind: str, method: str, url: str, **options: Any
    ) -> None:
        try:
            response = await client.request(method, url, **options)
            answer, detail = str(response.status_code), response.text
        except httpx.TimeoutException as exc:
            answer, detail = "timeout", repr(exc)
        except httpx.TransportError as exc:
            answer, detail = "reset", repr(exc)
        self.tally.count(self.entrance, kind, answer, detail)


class HandheldStorm(HttpStorm):
    """The gateway's handheld API: out-of-bounds, broken and oversized requests."""

    entrance = "handheld-http"

    def __init__(self, *args: Any, canary: CanaryFeed) -> None:
        super().__init__(*args)
        self.base_url = self.d.handheld_url
        self.canary = canary

    async def one(self, client: httpx.AsyncClient) -> None:
        rng = self.rng
        key = {"Idempotency-Key": f"h-{rng.getrandbits(64):x}"}
        json_key = key | {"Content-Type": "application/json"}
        good = {"location": "DOCK-1", "gtin": GTIN, "quantity": 1, "lot": "HOSTILE"}
        url = "/api/v1/receive"
        kind = rng.choices(
            ["long-location", "nul-in-location", "lone-surrogate", "not-json", "deep-json",
             "huge-body", "no-idempotency-key", "long-idempotency-key", "quantity-2^62",
             "unknown-field", "key-reused-other-body", "double-tap", "unknown-route"],
            weights=[10, 10, 10, 10, 5, 2, 8, 4, 6, 6, 6, 6, 3],
        )[0]  # fmt: skip
        if kind == "long-location":
            await self.send(client, kind, "POST", url, json=good | {"location": "L" * 4000},
                            headers=key)  # fmt: skip
        elif kind == "nul-in-location":
            await self.send(client, kind, "POST", url, json=good | {"location": "DOCK\x00"},
                            headers=key)  # fmt: skip
        elif kind == "lone-surrogate":
            raw = b'{"location": "\\udcff", "gtin": "' + GTIN.encode() + b'", "quantity": 1}'
            await self.send(client, kind, "POST", url, content=raw, headers=json_key)
        elif kind == "not-json":
            junk = rng.choice([b"not json", rng.randbytes(64), b'{"location": ', b"\xff\xfe"])
            await self.send(client, kind, "POST", url, content=junk, headers=json_key)
        elif kind == "deep-json":
            depth = rng.choice([1000, 100_000])
            await self.send(client, kind, "POST", url, content=b"[" * depth + b"]" * depth,
                            headers=json_key)  # fmt: skip
        elif kind == "huge-body":
            size = rng.randint(1, 5) * MB + rng.randrange(1024)
            self.note(f"handheld huge body {size / MB:.1f} MB")
            huge = b'{"location": "' + b"L" * size + b'"}'
            await self.send(client, kind, "POST", url, content=huge, headers=json_key)
        elif kind == "no-idempotency-key":
            await self.send(client, kind, "POST", url, json=good)
        elif kind == "long-idempotency-key":
            await self.send(client, kind, "POST", url, json=good,
                            headers={"Idempotency-Key": "k" * 4000})  # fmt: skip
        elif kind == "quantity-2^62":
            await self.send(client, kind, "POST", url, json=good | {"quantity": 2**62},
                            headers=key)  # fmt: skip
        elif kind == "unknown-field":
            await self.send(client, kind, "POST", url, json=good | {"price": 1}, headers=key)
        elif kind in ("key-reused-other-body", "double-tap"):
            if len(self.canary.answered) < 5:
                return
            # An older key, so that the canary is not sending it right now.
            taken = self.canary.answered[rng.randrange(len(self.canary.answered) - 3)].key
            body = CANARY_RECEIPT | ({"quantity": 2} if kind != "double-tap" else {})
            await self.send(client, kind, "POST", url, json=body,
                            headers={"Idempotency-Key": taken})  # fmt: skip
        else:
            await self.send(client, kind, "POST", "/api/v1/../../etc/passwd", json=good,
                            headers=key)  # fmt: skip


class HubRestStorm(HttpStorm):
    """The hub's REST API: oversized bodies, wrong passwords, garbage keys, bad text."""

    entrance = "hub-http"

    def __init__(self, *args: Any, user: str) -> None:
        super().__init__(*args)
        self.base_url = self.d.hub.url
        self.user = user

    async def one(self, client: httpx.AsyncClient) -> None:
        rng = self.rng
        admin = self.d.hub.headers
        url = f"/api/v1/sites/{CANARY_SITE}/receipts"
        receipt = {"location": "DOCK-1", "sku": GTIN, "quantity": 1}
        json_admin = admin | {"Content-Type": "application/json"}
        kind = rng.choices(
            ["oversized-body", "wrong-password", "unknown-user", "garbage-api-key",
             "garbage-bearer", "lone-surrogate", "long-location", "not-json", "deep-json",
             "quantity-2^62"],
            weights=[2, 10, 5, 10, 5, 10, 10, 6, 4, 6],
        )[0]  # fmt: skip
        if kind == "oversized-body":
            size = 9 * MB + rng.randrange(MB)
            self.note(f"hub-http oversized body {size / MB:.1f} MB")
            body = b'{"location": "' + b"L" * size + b'"}'
            await self.send(client, kind, "POST", url, content=body,
                            headers={"Content-Type": "application/json"})  # fmt: skip
        elif kind in ("wrong-password", "unknown-user"):
            user = self.user if kind == "wrong-password" else f"nobody-{rng.randrange(10**6)}"
            form = {"username": user, "password": f"wrong-{rng.getrandbits(32):x}"}
            await self.send(client, kind, "POST", "/api/v1/auth/token", data=form)
        elif kind == "garbage-api-key":
            garbage = rng.choice([
                f"wlk_{rng.getrandbits(24):06x}_{rng.getrandbits(96):x}", "wlk_", "x" * 5000,
                "wlk_boot_", f"wlk_{'a' * 300}_b",
            ])  # fmt: skip
            await self.send(client, kind, "GET", "/api/v1/gateways",
                            headers={"X-API-Key": garbage})  # fmt: skip
        elif kind == "garbage-bearer":
            token = rng.choice([f"wlt_{rng.getrandbits(24):06x}_{rng.getrandbits(96):x}", "."])
            await self.send(client, kind, "GET", "/api/v1/sites",
                            headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        elif kind == "lone-surrogate":
            raw = b'{"location": "DOCK-\\udcff", "sku": "' + GTIN.encode() + b'", "quantity": 1}'
            await self.send(client, kind, "POST", url, content=raw, headers=json_admin)
        elif kind == "long-location":
            await self.send(client, kind, "POST", url, json=receipt | {"location": "L" * 4000},
                            headers=admin)  # fmt: skip
        elif kind == "not-json":
            junk = rng.choice([b"\xff\xfe\xfd", b"{", rng.randbytes(64), b"null"])
            await self.send(client, kind, "POST", url, content=junk, headers=json_admin)
        elif kind == "deep-json":
            depth = rng.choice([1000, 100_000])
            await self.send(client, kind, "POST", url, content=b"[" * depth + b"]" * depth,
                            headers=json_admin)  # fmt: skip
        else:
            await self.send(client, kind, "POST", url, json=receipt | {"quantity": 2**62},
                            headers=admin)  # fmt: skip


# ------------------------------------------------------------------ the run


class Hostile:
    def __init__(self, seed: int, duration_s: float) -> None:
        self.seed = seed
        self.duration_s = duration_s
        self.rng = random.Random(seed)
        self.tally = Tally()
        self.result = HostileResult(seed=seed, duration_s=duration_s)
        self.d = Deployment(seed)
        self.user = "hostile-clerk"
        self.canary = CanaryFeed(self.d, self.tally)
        self.evil = EvilGateway(self.d, self.child_rng(), self.tally)

    def child_rng(self) -> random.Random:
        return random.Random(self.rng.getrandbits(64))

    async def run(self) -> HostileResult:
        result = self.result
        try:
            async with self.d.running():
                await self._setup()
                await self._storm()
                await self._verify()
                await self._final_state()
        except Exception as exc:  # the harness itself failed: say so, keep the logs
            result.problems.append(f"the harness stopped: {exc!r}")
        result.tally = {e: dict(kinds) for e, kinds in self.tally.counts.items()}
        result.examples = dict(self.tally.examples)
        if result.examples:
            result.problems.append(
                f"{len(result.examples)} kinds of hostile input got an unexpected answer"
            )
        if result.ok:
            shutil.rmtree(self.d.root, ignore_errors=True)
        else:
            result.root = str(self.d.root)
        return result

    async def _setup(self) -> None:
        """A user whose password the storm gets wrong; the admin key matched once (a key
        that matched before still works from an address the storm got throttled)."""
        async with self.d.hub.client() as hub:
            response = await hub.post(
                "/api/v1/identities/users",
                json={"id": self.user, "roles": ["clerk"], "sites": [CANARY_SITE],
                      "password": "correct horse battery staple"},
            )  # fmt: skip
            response.raise_for_status()

    async def _storm(self) -> None:
        result, stop, d = self.result, asyncio.Event(), self.d
        canary, evil = self.canary, self.evil
        storms: list[Storm] = [
            HubMqttStorm(d, self.child_rng(), self.tally),
            GatewayMqttStorm(d, self.child_rng(), self.tally),
            HandheldStorm(d, self.child_rng(), self.tally, canary=canary),
            HubRestStorm(d, self.child_rng(), self.tally, user=self.user),
        ]
        interval = 5.0 if self.duration_s <= 300 else 10.0

        async def sample() -> None:
            while not stop.is_set():
                (hub, hub_anon), (edge, edge_anon) = d.rss()
                at = time.monotonic() - started
                result.samples.append(Sample(at, hub, edge, hub_anon, edge_anon))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await stop.wait()

        async def spy(listening: asyncio.Event) -> None:
            """What the gateway's own topics carried, decoded as the gateway decodes them."""
            topics = [d.topics.gateway(CANARY_SITE, CANARY_GW, k) for k in GATEWAY_KINDS]
            async with aiomqtt.Client(MQTT_HOST, MQTT_PORT) as mq:
                for topic in [*topics, d.topics.all_hub_presence()]:
                    await mq.subscribe(topic, qos=1)
                listening.set()
                spying = asyncio.create_task(self._spy(mq), name="hostile-spy")
                await stop.wait()
                await asyncio.sleep(2)  # what is on its way still
                spying.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await spying

        async def stop_after() -> None:
            await asyncio.sleep(self.duration_s)
            stop.set()

        async with asyncio.TaskGroup() as tasks:
            listening = asyncio.Event()
            tasks.create_task(spy(listening), name="hostile-spy-client")
            await listening.wait()
            started = time.monotonic()
            for storm in storms:
                storm.started = started
            tasks.create_task(stop_after(), name="hostile-clock")
            tasks.create_task(sample(), name="hostile-rss")
            tasks.create_task(canary.run(stop), name="hostile-canary")
            tasks.create_task(evil.run(stop, drain_timeout=90), name="hostile-evil")
            for storm in storms:
                tasks.create_task(storm.run(stop), name=f"hostile-{storm.entrance}")
        result.timeline = sorted(t for storm in storms for t in storm.timeline)
        # Drain: the gateway's acked seq reaches its last stored seq.
        drained = time.monotonic()
        status: dict[str, Any] = {"acked_seq": -1, "last_seq": 0}
        async with httpx.AsyncClient(base_url=d.handheld_url, timeout=10) as api:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(90):
                    while status["acked_seq"] < status["last_seq"]:
                        with contextlib.suppress(httpx.TransportError):
                            status = (await api.get("/api/v1/status")).json()
                        await asyncio.sleep(0.2)
        result.catch_up_s = time.monotonic() - drained
        if status["acked_seq"] < status["last_seq"]:
            result.problems.append(
                f"the gateway did not catch up in 90 s: acked {status['acked_seq']} of"
                f" {status['last_seq']}"
            )
        if evil.acked < evil.last:
            result.problems.append(f"the evil gateway got acks to {evil.acked} of {evil.last}")

    async def _spy(self, mq: aiomqtt.Client) -> None:
        carried = self.result.gateway_topics
        async for message in mq.messages:
            kind = str(message.topic).rpartition("/")[2]
            try:
                decoded = wire.decode(bytes(message.payload))
            except DecodeError:
                carried[f"{kind} undecodable"] += 1
                continue
            name = type(decoded).__name__
            gateway = getattr(decoded, "gateway", CANARY_GW)
            if gateway != CANARY_GW:
                carried[f"{kind} {name} of another gateway"] += 1
            elif isinstance(decoded, Ack) and decoded.seq >= 2**62:  # no outbox reaches it
                carried[f"{kind} {name} beyond stored"] += 1
            else:
                carried[f"{kind} {name}"] += 1

    async def _verify(self) -> None:
        result, canary, evil = self.result, self.canary, self.evil
        async with await psycopg.AsyncConnection.connect(self.d.db_url) as conn:
            cur = await conn.execute(
                "SELECT seq, extract(epoch FROM received_at)::float8, body->>'lot',"
                " body->>'location' FROM events WHERE gateway = %s AND type = 'receipt'",
                (CANARY_GW,),
            )
            canary_rows = await cur.fetchall()
            cur = await conn.execute("SELECT seq FROM events WHERE gateway = %s", (EVIL_GW,))
            evil_stored = [seq for (seq,) in await cur.fetchall()]
            cur = await conn.execute(
                "SELECT g.id, count(q.id), g.quarantine_overflow FROM gateways g LEFT JOIN"
                " quarantine q ON q.gateway = g.id AND q.kind = 'message' WHERE g.id = ANY(%s)"
                " GROUP BY g.id",
                (list(FORGED),),
            )
            result.forged = {gw: (int(kept), int(over)) for gw, kept, over in await cur.fetchall()}
        evil_quarantined = [
            e["seq"] for e in await self._quarantine(EVIL_GW) if e["kind"] == "event"
        ]
        await self._watermarks()
        # The canary: answered 201 ⇔ stored once, and in the ledger once.
        answered = {a.seq: a for a in canary.answered}
        keys = {a.key for a in canary.answered}
        result.canary_answered, result.canary_seqs = len(keys), len(answered)
        stored = {seq: at for seq, at, _, _ in canary_rows}
        result.canary_in_hub = len(canary_rows)
        result.canary_lost = len(set(answered) - set(stored))
        result.canary_doubled = len(set(stored) - set(answered)) + (len(keys) - len(answered))
        strange = [row for row in canary_rows if row[2:] != (CANARY_LOT, "DOCK-1")]
        result.canary_refused = canary.refused
        result.canary_stock = await self._stock(CANARY_SITE, CANARY_LOT)
        if result.canary_lost or result.canary_doubled:
            result.problems.append(
                f"canary: {result.canary_lost} lost, {result.canary_doubled} doubled"
            )
        if strange:
            result.problems.append(f"canary gateway stored receipts it never got: {strange[:5]}")
        if canary.unanswered:
            result.problems.append(f"canary: no answer for keys {canary.unanswered[:5]}")
        if result.canary_stock != len(keys):
            result.problems.append(
                f"canary: CANARY at DOCK-1 is {result.canary_stock:g}, receipts {len(keys)}"
            )
        if len(keys) < CANARY_RATE * self.duration_s * 0.8:
            result.problems.append(
                f"canary: only {len(keys)} receipts in {self.duration_s:.0f} s (expected"
                f" ~{CANARY_RATE * self.duration_s:.0f}): the handheld API was slow"
            )
        # The evil gateway: good ones stored once, bad ones quarantined.
        stored_set, quarantined_set = set(evil_stored), {s for s in evil_quarantined if s}
        result.evil_good, result.evil_bad = len(evil.good), len(evil.bad)
        result.evil_stored = len(stored_set & evil.good)
        result.evil_lost = len(evil.good - stored_set)
        result.evil_doubled = len(evil_stored) - len(stored_set)
        result.evil_quarantined = len(quarantined_set & evil.bad)
        result.evil_bad_stored = len(stored_set & evil.bad)
        result.evil_bad_missing = len(evil.bad - stored_set - quarantined_set)
        result.evil_stock = await self._stock(EVIL_SITE, EVIL_LOT)
        misplaced = (stored_set - evil.good - evil.bad) | (quarantined_set & evil.good)
        if result.evil_lost or result.evil_doubled or result.evil_bad_stored or misplaced:
            result.problems.append(
                f"evil gateway: {result.evil_lost} good lost, {result.evil_doubled} doubled,"
                f" {result.evil_bad_stored} bad stored, misplaced {sorted(misplaced)[:10]}"
            )
        if result.evil_bad_missing:
            result.problems.append(
                f"evil gateway: {result.evil_bad_missing} bad events neither stored nor"
                f" quarantined: {sorted(evil.bad - stored_set - quarantined_set)[:10]}"
            )
        if result.evil_stock != len(evil.good):
            result.problems.append(
                f"evil gateway: EVIL at DOCK-1 is {result.evil_stock:g}, good events"
                f" {len(evil.good)}"
            )
        self._timing(answered, stored)
        self._memory()

    def _timing(self, answered: dict[int, Answered], stored: dict[int, float]) -> None:
        """Ingest never stopped: gaps between the canary's receipts as the hub stored them."""
        result, canary = self.result, self.canary
        times = sorted(at for seq, at in stored.items() if seq in answered)
        gaps = [(b - a, a) for a, b in itertools.pairwise(times)]
        if gaps:
            result.max_gap_s, at = max(gaps)
            result.max_gap_at_s = at - canary.started_at
            result.gaps_over_limit = sum(1 for gap, _ in gaps if gap >= MAX_GAP_S)
        latencies = sorted(stored[seq] - a.at for seq, a in answered.items() if seq in stored)
        if latencies:
            result.latency_p50_s = latencies[len(latencies) // 2]
            result.latency_p99_s = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
            result.latency_max_s = latencies[-1]
        posts = [a.at for a in canary.answered]
        result.post_gap_max_s = max((b - a for a, b in itertools.pairwise(posts)), default=0.0)
        result.post_rtt_max_s = max((a.rtt for a in canary.answered), default=0.0)
        if result.max_gap_s >= MAX_GAP_S:
            near = [f"+{t:.0f}s {w}" for t, w in result.timeline
                    if -5 <= result.max_gap_at_s - t <= 2]  # fmt: skip
            result.problems.append(
                f"ingest stood still {result.max_gap_s:.2f} s at +{result.max_gap_at_s:.1f} s"
                f" ({result.gaps_over_limit} gaps of {MAX_GAP_S} s or more); large inputs"
                f" just before: {near or 'none'}"
            )

    def _memory(self) -> None:
        result, samples = self.result, self.result.samples
        n = len(samples)
        if n < 5:
            result.problems.append(f"only {n} memory samples")
            return
        warm = samples[int(n * 0.2) : max(int(n * 0.4), int(n * 0.2) + 1)]
        end = samples[int(n * 0.8) :]
        result.hub_warm_mb = statistics.mean(s.hub_mb for s in warm)
        result.hub_end_mb = statistics.mean(s.hub_mb for s in end)
        result.edge_warm_mb = statistics.mean(s.edge_mb for s in warm)
        result.edge_end_mb = statistics.mean(s.edge_mb for s in end)
        for name, growth in (("hub", result.hub_growth), ("gateway", result.edge_growth)):
            if growth >= MAX_GROWTH:
                result.problems.append(f"{name} memory grew {growth:.0%} (limit {MAX_GROWTH:.0%})")

    async def _quarantine(self, gateway: str) -> list[dict[str, Any]]:
        """Every open quarantine entry of a gateway, through the API, 500 a page."""
        entries: list[dict[str, Any]] = []
        async with self.d.hub.client() as hub:
            while True:
                before = f"&before={entries[-1]['id']}" if entries else ""
                response = await hub.get(f"/api/v1/quarantine?gateway={gateway}&limit=500{before}")
                response.raise_for_status()
                page = response.json()
                entries += page
                if len(page) < 500:
                    return entries

    async def _watermarks(self) -> None:
        """The hub's watermark of each honest gateway is where the gateway stands."""
        status = json.loads(await warelink("edge", "status", "--config", str(self.d.config),
                                           "--json", env=self.d.edge_env()))  # fmt: skip
        self.result.gateway_counters = status.get("counters_of_last_run", {})
        async with self.d.hub.client() as hub:
            response = await hub.get("/api/v1/gateways")
            response.raise_for_status()
            rows = {row["id"]: row for row in response.json()}
        for gateway, last in ((CANARY_GW, status["last_seq"]), (EVIL_GW, self.evil.last)):
            acked = rows.get(gateway, {}).get("acked_seq")
            if acked != last:
                self.result.problems.append(
                    f"{gateway}: the hub's acked_seq is {acked}, the gateway's last seq {last}"
                )

    async def _stock(self, site: str, lot: str) -> float:
        async with self.d.hub.client() as hub:
            response = await hub.get(f"/api/v1/sites/{site}/stock")
            if response.status_code == 404:
                return 0.0
            response.raise_for_status()
            lines = response.json()["lines"]
        at_dock = [line for line in lines if line["location"] == "DOCK-1" and line["lot"] == lot]
        return float(sum(Decimal(line["quantity"]) for line in at_dock))

    async def _final_state(self) -> None:
        result, d = self.result, self.d
        assert d.hub.process is not None and d.edge is not None
        result.hub_alive = d.hub.process.returncode is None
        result.edge_alive = d.edge.returncode is None
        async with d.hub.client() as hub:
            result.readyz = (await hub.get("/readyz")).status_code
            metrics = (await hub.get("/metrics")).text
        for line in metrics.splitlines():
            if line.startswith("warelink_hub_") and not line.startswith("#"):
                name, _, value = line.partition(" ")
                name = name.removeprefix("warelink_hub_").removesuffix("_total")
                with contextlib.suppress(ValueError):
                    result.hub_counters[name] = float(value)
        if not (result.hub_alive and result.edge_alive and result.readyz == 200):
            result.problems.append(
                f"at the end: hub alive {result.hub_alive}, gateway alive {result.edge_alive},"
                f" /readyz {result.readyz}"
            )
        self._front_doors()
        if result.hub_counters.get("gateways_held", 0):
            result.problems.append("the hub holds back a gateway's events (ingest.gateway_held)")
        for name, path, alarms in (
            ("hub", d.hub.log_path, ("[error", "[critical", "Traceback", "ingest.failed",
                                     "ingest.disconnected", "ingest.gateway_held")),
            ("gateway", str(d.edge_log), ("[error", "[critical", "Traceback",
                                          "uplink.disconnected", "uplink.hub_offline")),
        ):  # fmt: skip
            text = await asyncio.to_thread(Path(path).read_text, errors="replace")
            for alarm in alarms:
                found = [line for line in text.splitlines() if alarm in line]
                if found:
                    result.log_alarms.append(f"{name} {alarm} ×{len(found)}: {found[0][:300]}")
                    result.problems.append(f"{name} log: {alarm} ×{len(found)}")

    def _front_doors(self) -> None:
        """Throttling and body limits seen working, not only never contradicted."""
        counts = self.tally.counts
        for entrance, kind, answer, after in (
            ("hub-http", "wrong-password", "429", 5),  # per account: 5 failures, then 429
            ("hub-http", "garbage-api-key", "429", 20),  # per address: 20, then 429
            ("hub-http", "oversized-body", "413", 0),
            ("handheld-http", "huge-body", "413", 0),
        ):
            answers = counts[entrance][kind]
            if sum(answers.values()) > after and not answers[answer]:
                self.result.problems.append(
                    f"{entrance} {kind}: never {answer} in {sum(answers.values())} tries"
                    f" ({dict(answers)})"
                )


async def run_hostile(seed: int, duration: float) -> HostileResult:
    """Honest traffic through ``duration`` seconds of bad input at every entrance."""
    return await Hostile(seed, duration).run()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=seconds, default=seconds("10m"))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    result = asyncio.run(run_hostile(args.seed, args.duration))
    print(result.table())
    print("PASS" if result.ok else "FAIL")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
