"""`warelink demo` and `warelink hub serve` stop cleanly, and nothing of them outlives them.

Ctrl-C (SIGINT to the foreground process group) and SIGTERM (systemd, a container, CI)
stop the demo with live pages open, without a traceback; SIGKILL of the demo alone gives
it no chance to stop anything, and its hub, simulators and gateways still end. In every
case no process of the demo is left 5 s later, and none holds the demo's database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import MQTT_HOST, MQTT_PORT, PG_ADMIN_URL
from tests.support.services import free_port, wait_port

LIVE_CLIENTS = 10
GONE_WITHIN_S = 5.0
RECONNECT_CODES = {1001, 1012}  # going away, service restart: a clean close, reconnect later
NOT_CLEAN = ("Traceback", "Exception in ASGI", "graceful shutdown exceeded", "did not stop")


# ------------------------------------------------------------------ processes, from /proc


@dataclass(frozen=True)
class Proc:
    pid: int
    started: int  # clock ticks after boot: with the pid, a process (pids are reused)
    command: str


def _stat(pid: int) -> tuple[str, int, int] | None:
    """State, parent pid and start time of ``pid``, or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    return fields[0], int(fields[1]), int(fields[19])


def process_tree(root: int) -> list[Proc]:
    """``root`` and all its descendants now."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            children[stat[1]].append(int(entry.name))
    found: list[Proc] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        stat = _stat(pid)
        if stat is None:
            continue
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            command = "?"
        found.append(Proc(pid, stat[2], command.strip()))
        todo += children[pid]
    return found


def alive(proc: Proc) -> bool:
    stat = _stat(proc.pid)
    return stat is not None and stat[2] == proc.started and stat[0] not in ("Z", "X")


def kill_left(procs: list[Proc]) -> None:
    for proc in procs:
        if alive(proc):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)


async def db_sessions(db_url: str) -> int:
    name = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
    async with await psycopg.AsyncConnection.connect(PG_ADMIN_URL, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def until_gone(procs: list[Proc], db_url: str) -> tuple[float, list[Proc], int]:
    """Seconds until no process of ``procs`` runs and no session is open on the database
    (at most GONE_WITHIN_S); what is left then."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        left = [proc for proc in procs if alive(proc)]
        sessions = await db_sessions(db_url)
        took = loop.time() - start
        if (not left and sessions == 0) or took > GONE_WITHIN_S:
            return took, left, sessions
        await asyncio.sleep(0.1)


# ------------------------------------------------------------------ output and live pages


@dataclass
class Output:
    """Everything a process writes to its stdout (stderr joined to it), as it comes."""

    lines: list[str] = field(default_factory=list)

    async def read(self, stream: asyncio.StreamReader) -> None:
        async for line in stream:
            self.lines.append(line.decode(errors="replace"))

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def problems(self) -> list[str]:
        return [line for line in self.lines if any(word in line for word in NOT_CLEAN)]


class LivePage:
    """A dashboard: the live websocket of a site, read as fast as frames come."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames = 0
        self.reading = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for _ in self.ws:
                self.frames += 1

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code


async def open_pages(http: str, key: str, site: str = "north") -> list[LivePage]:
    pages = []
    for _ in range(LIVE_CLIENTS):
        ws = await connect(f"ws://{http}/api/v1/live?site={site}&access_token={key}")
        pages.append(LivePage(ws))
    async with asyncio.timeout(20):
        while not all(page.frames for page in pages):  # each has its snapshot
            await asyncio.sleep(0.05)
    return pages


async def pages_closed(pages: list[LivePage]) -> list[int | None]:
    """The close codes the pages got (they end with the hub, or time out here)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(2):
            await asyncio.gather(*(page.reading for page in pages))
    for page in pages:
        page.reading.cancel()
    return [page.close_code for page in pages]


# ------------------------------------------------------------------ the demo


@dataclass
class RunningDemo:
    process: asyncio.subprocess.Process
    output: Output
    http: str
    key: str


UP = "warelink demo is up"
STARTING = "hub.serving"  # the hub child is starting: the demo waits for it, then seeds


@contextlib.asynccontextmanager
async def running_demo(
    db_url: str, mqtt_prefix: str, tmp_path: Path, *, until: str = UP
) -> AsyncIterator[RunningDemo]:
    """``warelink demo`` on this test's database, broker prefix and port, once its output
    shows ``until``; whatever of it is left at the end is killed (a failing test leaves
    nothing running either)."""
    http = f"127.0.0.1:{free_port()}"
    env = os.environ | {
        "WARELINK_DB_URL": db_url,
        "WARELINK_MQTT_URL": f"mqtt://{MQTT_HOST}:{MQTT_PORT}",
        "WARELINK_MQTT_PREFIX": mqtt_prefix,
        "WARELINK_HTTP": http,
        "WARELINK_BOOTSTRAP_API_KEY": "",  # the demo makes its own and keeps it
    }
    directory = tmp_path / "demo"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "warelink.edge.cli", "demo", "--dir", str(directory), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # a process group of its own, as a shell gives a foreground job
    )  # fmt: skip
    assert process.stdout is not None
    output = Output()
    reading = asyncio.create_task(output.read(process.stdout))
    seen: list[Proc] = []
    try:
        async with asyncio.timeout(90):
            while until not in output.text:
                assert process.returncode is None, f"the demo did not start:\n{output.text}"
                await asyncio.sleep(0.05)
        seen = process_tree(process.pid)
        key = (directory / "admin.key").read_text().strip()
        yield RunningDemo(process, output, http, key)
    finally:
        kill_left(seen + process_tree(process.pid))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await process.wait()
                await reading


async def gateways_online(demo: RunningDemo, gateways: list[str]) -> None:
    """Until every part is up and working: the gateways reach the hub through the broker."""
    headers = {"X-API-Key": demo.key}
    async with (
        asyncio.timeout(60),
        httpx.AsyncClient(base_url=f"http://{demo.http}", headers=headers) as client,
    ):
        while True:
            response = await client.get("/api/v1/gateways")
            response.raise_for_status()
            if sorted(g["id"] for g in response.json() if g["online"]) == gateways:
                return
            await asyncio.sleep(0.2)


def assert_all_gone(how: str, took: float, left: list[Proc], sessions: int) -> None:
    assert left == [], f"still running {took:.1f} s after {how}: " + "; ".join(
        f"{p.pid} {p.command}" for p in left
    )
    assert sessions == 0, f"{sessions} sessions still open on the demo's database"


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "ctrl-c twice", "sigkill"])
async def test_the_demo_with_live_pages_stops_and_leaves_no_process(
    how: str, db_url: str, mqtt_prefix: str, tmp_path: Path
) -> None:
    async with running_demo(db_url, mqtt_prefix, tmp_path) as demo:
        await gateways_online(demo, ["gw-north", "gw-south"])
        pages = await open_pages(demo.http, demo.key)
        procs = process_tree(demo.process.pid)
        # the demo, its hub, and per site (two) a simulator and a gateway
        assert len(procs) >= 6, "\n".join(p.command for p in procs)
        if how.startswith("ctrl-c"):  # the terminal signals the foreground process group
            os.killpg(demo.process.pid, signal.SIGINT)
            if how == "ctrl-c twice":  # someone in a hurry
                await asyncio.sleep(0.3)
                os.killpg(demo.process.pid, signal.SIGINT)
        elif how == "sigterm":
            demo.process.send_signal(signal.SIGTERM)
        else:  # the demo alone, and it cannot do a thing about it
            demo.process.kill()
        took, left, sessions = await until_gone(procs, db_url)
        codes = await pages_closed(pages)
        await demo.process.wait()

        assert_all_gone(how, took, left, sessions)
        if how in ("ctrl-c", "sigterm"):  # a clean stop, in order
            assert set(codes) <= RECONNECT_CODES, f"the pages were not told to reconnect: {codes}"
            assert demo.process.returncode == 0, demo.output.text[-3000:]
            assert demo.output.problems() == [], "".join(demo.output.problems()[:20])
            assert "hub         |" in demo.output.text  # the hub's output was relayed
        elif how == "ctrl-c twice":  # the second one kills what is left at once
            assert demo.process.returncode == 0, demo.output.text[-3000:]
            assert "Traceback" not in demo.output.text, demo.output.text[-3000:]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_the_demo_stopped_while_it_starts_leaves_no_process(
    sig: signal.Signals, db_url: str, mqtt_prefix: str, tmp_path: Path
) -> None:
    """A CI job that gives up, or Ctrl-C, while the demo waits for its hub to be ready."""
    async with running_demo(db_url, mqtt_prefix, tmp_path, until=STARTING) as demo:
        procs = process_tree(demo.process.pid)
        assert any("hub serve" in p.command for p in procs), [p.command for p in procs]
        os.killpg(demo.process.pid, sig)
        took, left, sessions = await until_gone(procs, db_url)
        await demo.process.wait()

        assert_all_gone(signal.Signals(sig).name, took, left, sessions)
        assert demo.process.returncode == 0, demo.output.text[-3000:]
        assert "Traceback" not in demo.output.text, demo.output.text[-3000:]


async def test_a_part_that_dies_stops_the_demo_and_the_other_parts(
    db_url: str, mqtt_prefix: str, tmp_path: Path
) -> None:
    """The hub killed under the demo: the demo says so, stops the rest, and exits 1."""
    async with running_demo(db_url, mqtt_prefix, tmp_path) as demo:
        await gateways_online(demo, ["gw-north", "gw-south"])
        procs = process_tree(demo.process.pid)
        hub = next(p for p in procs if p.command.endswith("hub serve"))
        os.kill(hub.pid, signal.SIGKILL)
        took, left, sessions = await until_gone(procs, db_url)
        await demo.process.wait()

        assert_all_gone("the hub died", took, left, sessions)
        assert demo.process.returncode == 1, demo.output.text[-3000:]
        assert "warelink demo: hub exited with -9" in demo.output.text, demo.output.text[-3000:]
        assert "Traceback" not in demo.output.text, demo.output.text[-3000:]


# ------------------------------------------------------------------ the hub alone


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_hub_serve_with_live_clients_stops_on_a_signal_without_a_traceback(
    sig: signal.Signals, db_url: str, mqtt_prefix: str
) -> None:
    http = f"127.0.0.1:{free_port()}"
    key = "wlk_stoptest_" + "k" * 32
    env = os.environ | {
        "WARELINK_DB_URL": db_url,
        "WARELINK_MQTT_URL": f"mqtt://{MQTT_HOST}:{MQTT_PORT}",
        "WARELINK_MQTT_PREFIX": mqtt_prefix,
        "WARELINK_HTTP": http,
        "WARELINK_BOOTSTRAP_API_KEY": key,
    }
    hub = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "warelink.edge.cli", "hub", "serve", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert hub.stdout is not None
    output = Output()
    reading = asyncio.create_task(output.read(hub.stdout))
    try:
        async with asyncio.timeout(30), httpx.AsyncClient() as client:
            while True:
                assert hub.returncode is None, output.text
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(f"http://{http}/readyz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
        pages = await open_pages(http, key)
        hub.send_signal(sig)
        async with asyncio.timeout(GONE_WITHIN_S):
            code = await hub.wait()
        codes = await pages_closed(pages)
        await reading
    finally:
        if hub.returncode is None:
            hub.kill()
            await hub.wait()
    assert code == 0, output.text[-3000:]
    assert output.problems() == [], "".join(output.problems()[:20])
    assert set(codes) <= RECONNECT_CODES, codes
    async with asyncio.timeout(2):  # a server process ends as soon as its client has gone
        while await db_sessions(db_url):
            await asyncio.sleep(0.1)


STUCK_HUB = """
import asyncio, sys
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from warelink.hub.cli import run_server

async def stuck(websocket):
    await websocket.accept()
    await websocket.send_text("hello")
    await asyncio.Event().wait()  # never reads: misses the disconnect, never ends by itself

app = Starlette(routes=[WebSocketRoute("/live", stuck)])
sys.exit(run_server(app, "127.0.0.1", int(sys.argv[1])))
"""


async def test_a_socket_handler_that_does_not_end_is_cancelled_in_one_line() -> None:
    """What Ctrl-C printed as two tracebacks: handlers still running at the end of the
    grace period (here, two that never end) are cancelled, each told in one line."""
    from warelink.hub.cli import GRACE_S

    port = free_port()
    hub = await asyncio.create_subprocess_exec(
        sys.executable, "-c", STUCK_HUB, str(port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert hub.stdout is not None
    output = Output()
    reading = asyncio.create_task(output.read(hub.stdout))
    try:
        await wait_port(port)
        sockets = [await connect(f"ws://127.0.0.1:{port}/live") for _ in range(2)]
        for ws in sockets:
            assert await ws.recv() == "hello"
        hub.send_signal(signal.SIGTERM)
        async with asyncio.timeout(GRACE_S + 2):
            code = await hub.wait()
        await reading
    finally:
        if hub.returncode is None:
            hub.kill()
            await hub.wait()
    assert code == 0, output.text
    assert "Traceback" not in output.text, output.text
    assert output.text.count("was cancelled") == 2, output.text
    assert "timeout graceful shutdown exceeded" in output.text  # a handler to fix: said so
