"""``warelink demo``: the hub, and per simulated site its devices and its gateway.

Each part runs as its own process, exactly as it would be deployed (``hub serve``,
``sim run``, ``edge run``), with its output prefixed by its name. Ctrl-C or SIGTERM
stops the gateways first, then the simulators, then the hub, within ``STOP_S``; no part
outlives the demo, even when the demo is killed by SIGKILL (see ``Child``). State lives
in ``--dir`` (the gateways' outboxes and the site configs) and in the hub's database, so
a restart picks up where the last run stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import signal
import socket
import sys
import traceback
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import tomli_w

from warelink.edge.config import load_site_config
from warelink.edge.device_config import SerialDevice, TcpDevice
from warelink.edge.drivers.modbus import ModbusLinkConfig
from warelink.edge.drivers.vda5050_agv import Vda5050AgvConfig
from warelink.hub.settings import HubSettings
from warelink.protocol.gs1 import check_digit
from warelink.sim import demo_masterdata
from warelink.sim.modbus_devices import make_slaves

SITE_NAMES = ["north", "south", "east", "west", "central", "harbour", "airport", "rail"]


def site_document(site: str, dev: Path, mqtt_url: str) -> dict[str, Any]:
    """A simulated site: docks with scales, scanners and an RFID portal, a parcel dock
    with a BLE scale and a BLE handheld scanner (reached through the simulator's virtual
    controller over TCP), a label printer, a Modbus conveyor (TCP) and an RS-485 bus (a
    floor scale and a legacy tugger), and a VDA 5050 AGV on the site's broker. Ports are
    picked once, when the file is written."""
    registers = {
        kind: slave.register_map()
        for kind, slave in zip(
            ("scale", "conveyor", "agv"),
            make_slaves(random.Random(0), ["scale", "conveyor", "agv"]),
            strict=True,
        )
    }
    scale_map = {r["name"]: r for r in registers["scale"]}
    rs485 = {"transport": "rtu", "serial_port": str(dev / "rs485-1"), "baudrate": 19200,
             "parity": "N", "stopbits": 2}  # fmt: skip
    nodes = [
        ("DOCK-1", 0.0, 0.0), ("DOCK-2", 0.0, 8.0), ("A-01", 12.0, 0.0), ("A-02", 12.0, 8.0),
        ("SHIP", 20.0, 4.0),
    ]  # fmt: skip
    devices: list[dict[str, Any]] = []
    for dock in (1, 2):
        devices += [
            {"id": f"dock-scale-{dock}", "kind": "mtsics_scale",
             "port": str(dev / f"dock-scale-{dock}"), "location": f"DOCK-{dock}"},
            {"id": f"dock-scanner-{dock}", "kind": "line_scanner",
             "port": str(dev / f"dock-scanner-{dock}"), "purpose": "receive",
             "location": f"DOCK-{dock}"},
        ]  # fmt: skip
    devices += [
        {"id": "dock-3-ble-scale", "kind": "ble_scale", "address": "C0:FF:EE:00:03:01",
         "name": "WS-DOCK3", "location": "DOCK-3", "scan_timeout_s": 5.0},
        {"id": "dock-3-ble-scanner", "kind": "ble_scanner", "address": "C0:FF:EE:00:03:02",
         "name": "BS-DOCK3", "purpose": "receive", "location": "DOCK-3",
         "scan_timeout_s": 5.0},
    ]  # fmt: skip
    devices += [
        {"id": "dock-printer-1", "kind": "zpl_printer", "host": "127.0.0.1",
         "port": free_port(), "location": "DOCK-1"},
        {"id": "dock-1-portal", "kind": "llrp_reader", "host": "127.0.0.1", "port": free_port(),
         "antennas": {"1": "DOCK-1-IN", "2": "DOCK-1-OUT"}, "location": "DOCK-1",
         "portal": {"receive_zone": "DOCK-1-IN", "ship_zone": "DOCK-1-OUT",
                    "location": "DOCK-1"}},
        {"id": "conveyor-1", "kind": "modbus_device", "role": "conveyor", "transport": "tcp",
         "host": "127.0.0.1", "port": free_port(), "unit_id": 2, "poll_interval_s": 1.0,
         "registers": registers["conveyor"]},
        {"id": "floor-scale-1", "kind": "modbus_scale", "unit_id": 1, "location": "PACK-1",
         "weight": scale_map["weight"], "stable": scale_map["stable"],
         "zero": scale_map["zero"], **rs485},
        {"id": "tugger-1", "kind": "modbus_device", "role": "agv", "unit_id": 3,
         "poll_interval_s": 1.0, "registers": registers["agv"], **rs485},
        {"id": "agv-1", "kind": "vda5050_agv", "manufacturer": "WARELINK",
         "serial_number": f"{site}-01", "broker_url": mqtt_url, "state_interval_s": 10.0,
         "graph": {"map_id": f"{site}-floor",
                   "nodes": [{"id": f"N-{code}", "x": x, "y": y, "location": code}
                             for code, x, y in nodes],
                   "edges": [{"start": f"N-{a}", "end": f"N-{b}"} for a, b in
                             (("DOCK-1", "A-01"), ("DOCK-2", "A-02"), ("A-01", "A-02"),
                              ("A-01", "SHIP"), ("A-02", "SHIP"))]}},
    ]  # fmt: skip
    return {
        "gateway": {
            "id": f"gw-{site}",
            "site": site,
            "data_dir": f"{site}/gateway",
            "handheld_api": f"127.0.0.1:{free_port()}",
            "ble": {"hci_transport": f"tcp-client:127.0.0.1:{free_port()}"},
        },
        "devices": devices,
    }


def site_configs(directory: Path, count: int, mqtt_url: str) -> list[Path]:
    """The demo's site configs, written on first use and kept (so state persists)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in SITE_NAMES[:count]:
        path = directory / f"{name}.toml"
        if not path.exists():
            dev = (directory / name / "dev").resolve()
            header = (
                "# A simulated site for `warelink demo`; `warelink sim run` makes its devices.\n"
            )
            path.write_text(header + tomli_w.dumps(site_document(name, dev, mqtt_url)))
        load_site_config(path)  # fail early, with the file and key, if someone edited it badly
        paths.append(path)
    return paths


DEMO_PORTS = range(20000, 32000)
"""Below Linux's ephemeral range (32768-60999): a port the kernel hands out for outgoing
connections could be taken by any client between writing a site config and the demo
binding it, and the site configs (with their ports) are kept for the next run."""


def free_port() -> int:
    """A port free now, outside the ephemeral range."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.choice(DEMO_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {DEMO_PORTS.start}-{DEMO_PORTS.stop - 1}")


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) == 0


class Child:
    """A part of the demo in a process of its own, as deployed (``warelink hub serve``…).

    It runs in a session (so a process group) of its own: Ctrl-C in the terminal reaches
    the demo alone, which stops the parts in order, and a stop signals the whole group.
    It is tethered to the demo (``warelink.sim.tether``): if the demo ends without
    stopping it (SIGKILL, a crash), it stops by itself.
    """

    def __init__(self, name: str, args: list[str]) -> None:
        self.name = name
        self.args = args
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "warelink.sim.tether", str(os.getpid()), *self.args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def signal(self, sig: signal.Signals) -> None:
        """``sig`` to the child's process group: the child and anything it started."""
        if self.process is not None and self.running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    async def relay(self) -> int:
        """Copy the child's output, prefixed; returns its exit code when it ends."""
        assert self.process is not None and self.process.stdout is not None
        prefix = f"{self.name:<12}| ".encode()
        async for line in self.process.stdout:
            sys.stdout.buffer.write(prefix + line)
            sys.stdout.flush()
        return await self.process.wait()

    async def stop(self, deadline: float) -> None:
        """SIGTERM (a clean stop), and SIGKILL if it still runs at ``deadline``."""
        if self.process is None or not self.running:
            return
        self.signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                await self.process.wait()
        if self.running:
            print(f"warelink demo: {self.name} did not stop in time: killed", file=sys.stderr)
            self.signal(signal.SIGKILL)
            await self.process.wait()


STOP_S = 4.5
"""A stop takes this long at most: the gateways get SIGTERM and up to 2 s, then the
simulators up to 1.5 s, then the hub the rest; whatever still runs at its time is killed
(a gateway's outbox is durable: SIGKILL loses nothing). Each takes about 1 s."""
STOP_ORDER = (("edge", 2.0), ("sim", 1.5), ("hub", STOP_S))


class Parts:
    """The demo's child processes, and the one way the demo ends: ``request_stop``.

    A signal (SIGINT, SIGTERM, SIGHUP), a part that exits by itself, or the clerk failing
    cancels the demo's main task once; its ``finally`` stops every part started so far,
    in ``STOP_ORDER``, within ``STOP_S``. A second signal during the stop kills them now.
    """

    def __init__(self, main: asyncio.Task[Any]) -> None:
        self.main = main
        self.children: dict[str, list[Child]] = {kind: [] for kind, _ in STOP_ORDER}
        self.relays: list[asyncio.Task[int]] = []
        self.stop_requested = False
        self.stopping = False
        self.failure: str | None = None

    async def start(self, kind: str, child: Child) -> None:
        await child.start()
        self.children[kind].append(child)
        relay = asyncio.create_task(child.relay(), name=f"relay-{child.name}")
        relay.add_done_callback(lambda _: self.ended(child))
        self.relays.append(relay)

    def ended(self, child: Child) -> None:
        if not self.stopping:
            code = child.process.returncode if child.process is not None else None
            self.request_stop(f"{child.name} exited with {code}")

    def clerk_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            traceback.print_exception(exc)
            self.request_stop(f"the clerk failed: {exc!r}")

    def request_stop(self, failure: str | None = None) -> None:
        if self.stop_requested:
            if failure is None and self.stopping:  # asked again (a second Ctrl-C): no waiting
                print("warelink demo: asked again: killing what is left", file=sys.stderr)
                self.kill()
            elif failure is None:  # the first request has not been taken yet: again
                self.main.cancel()
            return
        self.stop_requested = True
        self.failure = failure
        self.main.cancel()

    def kill(self) -> None:
        for group in self.children.values():
            for child in group:
                child.signal(signal.SIGKILL)

    async def stop(self) -> None:
        """Stop every part, in order, each kind by its deadline (see ``STOP_ORDER``)."""
        self.stop_requested = self.stopping = True
        if any(child.running for group in self.children.values() for child in group):
            print("\nwarelink demo: stopping (Ctrl-C again to kill at once)", flush=True)
        loop = asyncio.get_running_loop()
        end = loop.time() + STOP_S
        try:
            for kind, share in STOP_ORDER:
                deadline = min(loop.time() + share, end)
                await asyncio.gather(*(child.stop(deadline) for child in self.children[kind]))
            if self.relays:  # the last of their output
                await asyncio.wait(self.relays, timeout=1)
        finally:
            self.kill()  # none left, unless this stop itself was cut short


async def devices_ready(configs: list[Path], timeout: float = 20) -> None:
    """Until the simulators have made every device the configs declare (ptys, ports)."""
    paths: list[Path] = []
    addresses: list[tuple[str, int]] = []
    for config in (load_site_config(path) for path in configs):
        hci = config.gateway.ble.hci_transport
        if hci is not None and hci.startswith("tcp-client:"):  # the virtual BLE controller
            host, _, port = hci.removeprefix("tcp-client:").rpartition(":")
            addresses.append((host, int(port)))
        for device in config.devices:
            if isinstance(device, SerialDevice):
                paths.append(Path(device.port))
            elif isinstance(device, ModbusLinkConfig):
                if device.serial_port:
                    paths.append(Path(device.serial_port))
                elif device.host and device.port:
                    addresses.append((device.host, device.port))
            elif isinstance(device, TcpDevice):
                addresses.append((device.host, device.port))
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while not all(path.exists() for path in paths) or not all(
                [await port_open(host, port) for host, port in addresses]
            ):
                await asyncio.sleep(0.2)


async def port_open(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


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


async def clerk(url: str, key: str, configs: list[Path], interval_s: float = 15.0) -> None:
    """The floor's office, through the hub's command API: now and then a pallet label for
    the latest receipt at a dock, and a transport order for the site's AGV that puts that
    pallet away into a rack (each pallet once)."""
    rng = random.Random(1)
    sites = [load_site_config(path) for path in configs]
    agvs = {
        config.gateway.site: (device.id, device.floor_graph())
        for config in sites
        for device in config.devices
        if isinstance(device, Vda5050AgvConfig)
    }
    n = 0
    failing = False
    moving: set[tuple[str, str, str]] = set()  # dock pallets already given to an AGV
    headers = {"X-API-Key": key}
    async with httpx.AsyncClient(base_url=url, timeout=10, headers=headers) as http:
        while True:
            await asyncio.sleep(interval_s)
            site = sites[n % len(sites)].gateway.site
            n += 1
            try:
                stock = await http.get(f"/api/v1/sites/{site}/stock")
                stock.raise_for_status()
                if failing:
                    print("demo clerk: the hub answers again", flush=True)
                    failing = False
            except httpx.HTTPError as exc:  # the hub restarting: said once, tried again later
                if not failing:
                    print(f"demo clerk: the hub did not answer ({exc}); trying again", flush=True)
                    failing = True
                continue
            with contextlib.suppress(httpx.HTTPError):
                lines = stock.json()["lines"]
                dock = [line for line in lines if line["location"] == "DOCK-1"
                        and not line["serial"]  # pallets, not RFID-tagged single items
                        and (line["sku"], line["lot"], line["lpn"]) not in moving]  # fmt: skip
                if not dock:
                    continue
                line = dock[-1]
                quantity = Decimal(line["quantity"])  # the hub writes quantities as text
                await http.post(
                    f"/api/v1/sites/{site}/devices/dock-printer-1/commands",
                    json={"action": "print_sscc_label", "expires_in_s": 120,
                          "args": {"sscc": sscc_for(site, n), "gtin": line["sku"],
                                   "lot": line["lot"], "quantity": int(quantity) or 1,
                                   "ship_to": f"Customer {n % 7 + 1}"}},
                )  # fmt: skip
                if site in agvs and quantity >= 1:  # the AGV puts the pallet away
                    agv, graph = agvs[site]
                    racks = sorted(code for code in graph.locations if code.startswith("A-"))
                    args = {"order_id": f"{site}-{n}", "from": "DOCK-1",
                            "to": rng.choice(racks), "gtin": line["sku"],
                            "lot": line["lot"] or None, "lpn": line["lpn"] or None,
                            "quantity": int(quantity)}  # fmt: skip
                    moving.add((line["sku"], line["lot"], line["lpn"]))
                    await http.post(
                        f"/api/v1/sites/{site}/devices/{agv}/commands",
                        json={"action": "transport", "expires_in_s": 300, "args": args},
                    )


def demo_key(directory: Path) -> str:
    """The demo's admin API key, kept in its directory so every run uses the same one."""
    path = directory / "admin.key"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(f"wlk_demo{secrets.token_hex(4)}_{secrets.token_urlsafe(24)}\n")
        path.chmod(0o600)
    return path.read_text().strip()


def sscc_for(site: str, n: int) -> str:
    body = f"0{95060000:08d}{(abs(hash(site)) + n) % 10**8:08d}"[:17]
    return body + str(check_digit(body))


async def run_demo(directory: Path, sites: int, duration: float) -> int:
    main = asyncio.current_task()
    assert main is not None
    parts = Parts(main)
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:  # SIGTERM (systemd, a container, CI) and SIGHUP as Ctrl-C
        loop.add_signal_handler(sig, parts.request_stop)
    settings = HubSettings()
    if port_in_use(settings.http_host, settings.http_port):
        raise SystemExit(
            f"warelink demo: {settings.http} is already in use; "
            "set WARELINK_HTTP=host:port to serve the hub elsewhere"
        )
    url = f"http://{settings.http}"
    configs = site_configs(directory, sites, str(settings.mqtt_url))
    key = settings.bootstrap_api_key or demo_key(directory)
    os.environ["WARELINK_BOOTSTRAP_API_KEY"] = key  # the hub child makes it an admin key
    clerking: asyncio.Task[None] | None = None
    try:
        hub = Child("hub", ["hub", "serve"])
        await parts.start("hub", hub)
        await wait_ready(url, hub)
        async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}) as office:
            await demo_masterdata.seed(office, [load_site_config(p).gateway.site
                                                for p in configs])  # fmt: skip
        for i, path in enumerate(configs):
            args = ["sim", "run", "--config", str(path), "--seed", str(i + 1)]
            await parts.start("sim", Child(f"sim {path.stem}", args))
        await devices_ready(configs)  # gateways find their devices at once, no false alarm
        for path in configs:
            await parts.start("edge", Child(f"edge {path.stem}", ["edge", "run", "--config",
                                                                  str(path)]))  # fmt: skip
        clerking = asyncio.create_task(clerk(url, key, configs), name="demo-clerk")
        clerking.add_done_callback(parts.clerk_ended)
        print(
            f"\nwarelink demo is up: {len(configs)} sites, dashboard at {url}/#key={key}"
            f"\n  API: {url}/docs (Authorize with the API key {key})"
            f"\n  Ctrl-C stops everything; state is kept in {directory} and the database.\n",
            flush=True,
        )
        await asyncio.sleep(duration if duration > 0 else float("inf"))
    except asyncio.CancelledError:
        if not parts.stop_requested:
            raise  # not ours to take
        while main.cancelling():
            main.uncancel()
    finally:  # whatever ends the demo, a crash too, no part of it outlives it
        if clerking is not None:
            clerking.cancel()
        await parts.stop()
    if parts.failure is not None:
        print(f"warelink demo: {parts.failure}", file=sys.stderr)
        return 1
    return 0


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def main(args: argparse.Namespace) -> int:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        return asyncio.run(run_demo(args.dir, args.sites, args.duration))
    except KeyboardInterrupt:  # Ctrl-C before the demo took over the signals: no part yet
        return 130
