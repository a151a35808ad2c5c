"""``warelink demo``: the hub, and per simulated site its devices and its gateway.

Each part runs as its own process, exactly as it would be deployed (``hub serve``,
``sim run``, ``edge run``), with its output prefixed by its name. Ctrl-C stops the
gateways first, then the simulators, then the hub. State lives in ``--dir`` (the
gateways' outboxes and the site configs) and in the hub's database, so a restart picks
up where the last run stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
from pathlib import Path

import httpx

from warelink.edge.config import load_site_config
from warelink.hub.settings import HubSettings
from warelink.protocol.gs1 import check_digit

SITE_TEMPLATE = """\
# A simulated site for `warelink demo`; `warelink sim run` makes these devices on ptys.
[gateway]
id = "gw-{site}"
site = "{site}"
data_dir = "{site}/gateway"

[[devices]]
id = "dock-scale-1"
kind = "mtsics_scale"
port = "{dev}/dock-scale-1"
location = "DOCK-1"

[[devices]]
id = "dock-scanner-1"
kind = "line_scanner"
port = "{dev}/dock-scanner-1"
purpose = "receive"
location = "DOCK-1"

[[devices]]
id = "dock-printer-1"
kind = "zpl_printer"
host = "127.0.0.1"
port = {printer_port}
location = "DOCK-1"

[[devices]]
id = "dock-scale-2"
kind = "mtsics_scale"
port = "{dev}/dock-scale-2"
location = "DOCK-2"

[[devices]]
id = "dock-scanner-2"
kind = "line_scanner"
port = "{dev}/dock-scanner-2"
purpose = "receive"
location = "DOCK-2"
"""

SITE_NAMES = ["north", "south", "east", "west", "central", "harbour", "airport", "rail"]


def site_configs(directory: Path, count: int) -> list[Path]:
    """The demo's site configs, written on first use and kept (so state persists)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in SITE_NAMES[:count]:
        path = directory / f"{name}.toml"
        if not path.exists():
            dev = (directory / name / "dev").resolve()
            text = SITE_TEMPLATE.format(site=name, dev=dev, printer_port=free_port())
            path.write_text(text)
        load_site_config(path)  # fail early, with the file and key, if someone edited it badly
        paths.append(path)
    return paths


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) == 0


class Child:
    def __init__(self, name: str, args: list[str]) -> None:
        self.name = name
        self.args = args
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "warelink.edge.cli", *self.args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the demo, which stops children in order
        )  # fmt: skip

    async def relay(self) -> int:
        """Copy the child's output, prefixed; returns its exit code when it ends."""
        assert self.process is not None and self.process.stdout is not None
        prefix = f"{self.name:<12}| ".encode()
        async for line in self.process.stdout:
            sys.stdout.buffer.write(prefix + line)
            sys.stdout.flush()
        return await self.process.wait()

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(10):
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


async def wait_ready(url: str, hub: Child) -> None:
    async with asyncio.timeout(60), httpx.AsyncClient() as client:
        while True:
            assert hub.process is not None
            if hub.process.returncode is not None:
                raise SystemExit("warelink demo: the hub did not start (see its output above)")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(f"{url}/readyz", timeout=1)).status_code == 200:
                    return
            await asyncio.sleep(0.2)


async def clerk(url: str, sites: list[str], interval_s: float = 15.0) -> None:
    """A clerk at each dock printing a pallet label for the latest receipt, now and then:
    the hub sends the print command through the site's gateway to its label printer."""
    n = 0
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        while True:
            await asyncio.sleep(interval_s)
            site = sites[n % len(sites)]
            n += 1
            with contextlib.suppress(httpx.HTTPError):
                lines = (await http.get(f"/api/v1/sites/{site}/stock")).json()["lines"]
                dock = [line for line in lines if line["location"] == "DOCK-1"]
                if not dock:
                    continue
                line = dock[-1]
                sscc = sscc_for(site, n)
                await http.post(
                    f"/api/v1/sites/{site}/devices/dock-printer-1/commands",
                    json={"action": "print_sscc_label", "expires_in_s": 120,
                          "args": {"sscc": sscc, "gtin": line["sku"], "lot": line["lot"],
                                   "quantity": int(line["quantity"]) or 1,
                                   "ship_to": f"Customer {n % 7 + 1}"}},
                )  # fmt: skip


def sscc_for(site: str, n: int) -> str:
    body = f"0{95060000:08d}{(abs(hash(site)) + n) % 10**8:08d}"[:17]
    return body + str(check_digit(body))


async def run_demo(directory: Path, sites: int, duration: float) -> int:
    settings = HubSettings()
    if port_in_use(settings.http_host, settings.http_port):
        raise SystemExit(
            f"warelink demo: {settings.http} is already in use; "
            "set WARELINK_HTTP=host:port to serve the hub elsewhere"
        )
    url = f"http://{settings.http}"
    configs = site_configs(directory, sites)
    hub = Child("hub", ["hub", "serve"])
    sims = [Child(f"sim {p.stem}", ["sim", "run", "--config", str(p), "--seed", str(i + 1)])
            for i, p in enumerate(configs)]  # fmt: skip
    edges = [Child(f"edge {p.stem}", ["edge", "run", "--config", str(p)]) for p in configs]
    stopping = False
    failed = False
    try:
        async with asyncio.TaskGroup() as tasks:

            async def watch(child: Child) -> None:
                code = await child.relay()
                if not stopping:
                    raise RuntimeError(f"{child.name} exited with {code}")

            await hub.start()
            tasks.create_task(watch(hub), name="relay-hub")
            await wait_ready(url, hub)
            for child in [*sims, *edges]:
                await child.start()
                tasks.create_task(watch(child), name=f"relay-{child.name}")
            clerking = tasks.create_task(clerk(url, [p.stem for p in configs]), name="demo-clerk")
            print(
                f"\nwarelink demo is up: {len(configs)} sites, dashboard at {url}/"
                f"\n  API: {url}/docs   gateways: {url}/api/v1/gateways"
                f"\n  Ctrl-C stops everything; state is kept in {directory} and the database.\n",
                flush=True,
            )
            try:
                await asyncio.sleep(duration if duration > 0 else float("inf"))
            finally:
                stopping = True
                clerking.cancel()
                for group in (edges, sims, [hub]):
                    await asyncio.gather(*(child.stop() for child in group))
    except* RuntimeError as failure:
        print(f"warelink demo: {failure.exceptions[0]}", file=sys.stderr)
        failed = True
    return 1 if failed else 0


def main(args: argparse.Namespace) -> int:
    async def guarded() -> int:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await run_demo(args.dir, args.sites, args.duration)
        except asyncio.CancelledError:
            return 0

    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return asyncio.run(guarded())
